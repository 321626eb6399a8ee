"""Input representations of event frames: what an ANN, and the SNN converted from it, reads of a
sample's T frames.

A sample is ``frames: [B, T, C, H, W]``, event counts (C = 2 polarities), T frames in time order
(:func:`~sj_qvm.datasets.events_to_frames`). A representation maps it to the ANN's input
``[B, C', H, W]``; every one here is linear in the frames. :data:`REPRESENTATIONS` is the one list
of their names; :func:`representation` parses a name (``"mean"``, ``"stack"``, ``"bins:2"``).

===========  ==============================================  ========  ==========================
name         ANN input                                       C'        the SNN's input current
===========  ==============================================  ========  ==========================
``mean``     ``frames.mean(1)``: the time-averaged frame     C         streams: frame t at step t
``stack``    the T frames side by side, ``[B, T*C, H, W]``    T*C       the stack, held constant
``bins:K``   K groups of T/K consecutive frames, each        K*C       the bins, held constant
             group's mean (``bins:1`` is ``mean``,
             ``bins:T`` is ``stack``)
===========  ==============================================  ========  ==========================

**Which stream.** ``mean`` streams: the SNN receives one frame per step, ``[T, B, C, H, W]``, so
it can run on a chip while the events arrive, and its expected current (the frames' mean, eq. 9)
is exactly the ANN's input. It also throws away the order of the frames: a movement and the same
movement played backwards give the same picture (DVS128 Gesture's clockwise and
counter-clockwise arm circles). ``stack`` and ``bins:K`` (K > 1) keep the order in the channels,
so the ANN can read it, but they need the whole recording first: the last frame's channels fill
only at its end. Their SNN receives the finished representation as a constant current for its
T' steps (a broadcast view, no copy); under the expected current its first layer then sees the
ANN's input exactly, so the SNN stays exact at T' = L, for any number T of recorded frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..checks import check_int
from .frames_dataset import to_time_major

__all__ = ["REPRESENTATIONS", "Representation", "representation", "mean_frame", "stack_frames",
           "bin_frames"]


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5:
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a tensor [B, T, C, H, W], got {got}")
    return frames


def mean_frame(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, H, W] -> [B, C, H, W]``: the time-averaged frame (the order is lost)."""
    return _check_frames(frames).mean(1)


def stack_frames(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, H, W] -> [B, T*C, H, W]``: channel ``t*C + c`` is frame t's polarity c."""
    return _check_frames(frames).flatten(1, 2)


def bin_frames(frames: torch.Tensor, bins: int) -> torch.Tensor:
    """``[B, T, C, H, W] -> [B, K*C, H, W]`` for ``K = bins`` dividing T: channel ``k*C + c`` is
    the mean of frames ``k*T/K .. (k+1)*T/K - 1``, polarity c. ``bins=1`` is :func:`mean_frame`
    and ``bins=T`` is :func:`stack_frames` (the same values)."""
    B, T, C, H, W = _check_frames(frames).shape
    _check_bins(bins, T)
    return frames.reshape(B, bins, T // bins, C, H, W).mean(2).flatten(1, 2)


def _check_bins(bins: int, T: int) -> None:
    check_int(bins, "bins", minimum=1)
    if T % bins:
        raise ValueError(f"bins:{bins} needs K to divide the number of frames T = {T}")


@dataclass(frozen=True)
class Representation:
    """A parsed representation name: :func:`representation` builds it.

    ``name`` is its spelling (``"bins:2"``); ``streams`` says whether the SNN receives one frame
    per step (see the module docstring). Call it on ``frames`` for the ANN's input;
    :meth:`snn_input` gives the SNN's, :meth:`channels` the ANN's input channels.
    """
    name: str
    streams: bool
    _apply: Callable[[torch.Tensor], torch.Tensor]
    _factor: Optional[int]  # C' = factor * C; None: T * C

    def channels(self, frames: int, polarities: int = 2) -> int:
        """C', the ANN's input channels, for samples of ``frames`` T frames of ``polarities`` C."""
        check_int(frames, "frames", minimum=1)
        if self.name.startswith("bins:"):
            _check_bins(self._factor, frames)
        return (frames if self._factor is None else self._factor) * polarities

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """The ANN's input ``[B, C', H, W]`` from ``frames: [B, T, C, H, W]``."""
        return self._apply(frames)

    def snn_input(self, frames: torch.Tensor, time_steps: Optional[int] = None) -> torch.Tensor:
        """The SNN's input current ``[T', B, *]`` from ``frames: [B, T, C, H, W]``.

        A streaming representation gives the T frames in time order (``time_steps`` must be None
        or T: to run it at another T', integrate the events into T' frames); the others give
        :meth:`__call__`'s tensor broadcast over ``time_steps`` steps (default T), a view whose
        mean over T' is that very tensor.
        """
        T = _check_frames(frames).shape[1]
        if self.streams:
            if time_steps is not None and time_steps != T:
                raise ValueError(f"{self.name!r} streams one frame per step: time_steps must be "
                                 f"the number of frames, {T}, got {time_steps}; integrate the "
                                 "events into that many frames instead")
            return to_time_major(frames)
        steps = T if time_steps is None else check_int(time_steps, "time_steps", minimum=1)
        x = self(frames)
        return x.unsqueeze(0).expand(steps, *x.shape)


#: The representation names, as ``--input`` takes them (``bins:K`` with K an int >= 1 dividing T).
REPRESENTATIONS = ("mean", "stack", "bins:K")


def representation(name: str, what: str = "input") -> Representation:
    """Parse a representation ``name`` (one of :data:`REPRESENTATIONS`); ValueError naming
    ``what`` and the allowed values otherwise. ``bins:K`` is checked against T where it is used
    (:meth:`Representation.channels`)."""
    if name == "mean":
        return Representation("mean", True, mean_frame, 1)
    if name == "stack":
        return Representation("stack", False, stack_frames, None)
    if isinstance(name, str) and name.startswith("bins:") and name[5:].isdigit() \
            and int(name[5:]) >= 1 and str(int(name[5:])) == name[5:]:
        k = int(name[5:])
        return Representation(name, k == 1, lambda frames: bin_frames(frames, k), k)
    raise ValueError(f"{what} must be one of {', '.join(REPRESENTATIONS)} (K an int >= 1 that "
                     f"divides the number of frames), got {name!r}")
