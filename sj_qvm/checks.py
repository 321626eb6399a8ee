"""Argument checks: the one home of every allowed value and of the message a bad one gets.

Each ``check_*`` returns the value it accepts (normalised where that is unambiguous) and raises
``ValueError`` (or ``TypeError`` for a wrong type) whose message names the argument and the
allowed values. Constructors call these, so that bad input fails at construction, not mid-run.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Sequence

import torch

ROUNDINGS = ("floor", "round", "ceil")
"""Q in a = gamma/L * clip(Q(x*L/gamma), 0, L); ``round`` is round-half-up."""
CURRENTS = ("instant", "expected")
"""What an IF layer integrates: each step's input (``instant``) or its mean over T (eq. 9)."""
STEP_MODES = ("s", "m")
"""SpikingJelly's step modes: single-step ``[N, *]`` or multi-step ``[T, N, *]``."""

__all__ = ["ROUNDINGS", "CURRENTS", "STEP_MODES", "MAX_LEVELS", "check_choice", "check_rounding",
           "check_current", "check_step_mode", "check_levels", "check_int", "check_positive",
           "check_fraction", "check_bool", "check_positive_finite", "step_forward"]


def check_choice(value, allowed: Sequence[str], name: str) -> str:
    """``value`` if it is one of ``allowed`` (compared as a string), else ValueError."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_rounding(rounding, name: str = "rounding") -> str:
    return check_choice(rounding, ROUNDINGS, name)


def check_current(current, name: str = "current") -> str:
    return check_choice(current, CURRENTS, name)


def check_step_mode(step_mode, name: str = "step_mode") -> str:
    return check_choice(step_mode, STEP_MODES, name)


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An ``int`` (not a bool) within ``[minimum, maximum]`` (either bound may be None)."""
    lo = "" if minimum is None else f" >= {minimum}"
    hi = "" if maximum is None else f" <= {maximum}"
    want = f"an int{lo}{' and' if lo and hi else ''}{hi}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {want}, got {value}")
    return int(value)


MAX_LEVELS = 1 << 12
"""The largest L (and number of time-steps T) :func:`check_levels` accepts: 4096. The SNN runs
T = L steps, each a full pass over the network, and calibration searches ``[C, 256, L]`` float64
level tables (8 GiB at C = 256 and L = 4096); QVM's point is an exact SNN at a few steps."""


def check_levels(levels, name: str = "levels") -> int:
    """L, the number of quantization levels above 0 (or a number of time-steps T): an int in
    ``[1, MAX_LEVELS]``."""
    levels = check_int(levels, name, minimum=1)
    if levels > MAX_LEVELS:
        raise ValueError(f"{name} must be an int >= 1 and <= MAX_LEVELS = {MAX_LEVELS} (it drives "
                         f"T = L time-steps and the memory they take), got {levels}")
    return levels


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``)."""
    want = "a finite number " + (">= 0" if allow_zero else "> 0")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def check_fraction(value, name: str, low: float, high: float) -> float:
    """A finite real number in the half-open interval ``(low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in ({low}, {high}], got {type(value).__name__}")
    v = float(value)
    if not (low < v <= high):
        raise ValueError(f"{name} must be in ({low}, {high}], got {value!r}")
    return v


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_positive_finite(value, name: str) -> torch.Tensor:
    """``value`` (a real number, a sequence or a tensor) as a float tensor ``[]`` or ``[C]``,
    all entries finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (Real, Sequence, torch.Tensor)):
        raise TypeError(f"{name} must be a positive finite float or a 1-D tensor of them, "
                        f"got {type(value).__name__}")
    t = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value,
                        dtype=torch.get_default_dtype() if not isinstance(value, torch.Tensor)
                        or not value.is_floating_point() else value.dtype)
    if t.ndim > 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a scalar or a 1-D per-channel tensor, got shape {tuple(t.shape)}")
    if t.device.type == "meta":  # a shape-only tensor (e.g. a model built to size it) has no values
        return t
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not (t > 0).all():
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return t


def step_forward(module, x):
    """Run a SpikingJelly-style module in its ``step_mode``: ``single_step_forward(x)`` for
    ``"s"`` (``x: [N, *]``), ``multi_step_forward(x)`` for ``"m"`` (``x: [T, N, *]``); a mode set
    to anything else since construction raises, naming the allowed values."""
    if module.step_mode == "s":
        return module.single_step_forward(x)
    check_step_mode(module.step_mode)
    return module.multi_step_forward(x)


FLOAT_INPUT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_float_input(x: torch.Tensor, name: str = "QVMIFNode input") -> None:
    """The membrane integrates real currents: refuse integer, bool and complex input at the entry
    rather than deep in the IF loop (one comparison on the hot path)."""
    if x.dtype not in FLOAT_INPUT_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_INPUT_DTYPES)
        raise TypeError(f"{name} must be a floating tensor ({names}), got "
                        f"{str(x.dtype).removeprefix('torch.')}; convert it first, e.g. x.float()")
