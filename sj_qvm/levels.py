"""The N-vs-M measurement (eq. 5) and the rule "exact at T = L".

:func:`measure_layer` is the one measurement of a spiking layer against its ANN layer: how many
(sample, neuron) pairs fire a spike count N other than the ANN's level M, and the mean unevenness
error theta/T * |M - N|. :func:`compare_levels` applies it to a converted pair layer by layer, and
:func:`sj_qvm.analysis.conversion_report` builds its rows from it. :func:`is_exact` is the one
home of the rule that decides whether a conversion is exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
import torch.nn as nn

from . import _compat
from .checks import check_int, check_levels
from .neuron import QVMIFNode
from .quant import QuantReLU, channel_view

__all__ = ["ann_levels", "snn_spike_counts", "LayerMatch", "measure_layer", "compare_levels",
           "call_names", "is_exact"]


def _record(model: nn.Module, kind, fn, run) -> list:
    rows, handles = [], []
    for name, m in model.named_modules():
        if isinstance(m, kind):
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: rows.append((name, fn(mod, inp[0], out)))))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return rows


def ann_levels(ann: nn.Module, x: torch.Tensor) -> List[tuple]:
    """``[(name, M)]`` in call order: each QuantReLU's integer level ``M: [B, *]`` for input ``x``."""
    return _record(ann, QuantReLU, lambda m, inp, out: m.level(inp), lambda: ann(x))


def snn_spike_counts(snn: nn.Module, x_seq: torch.Tensor) -> List[tuple]:
    """``[(name, N)]`` in call order: each QVMIFNode's spike count ``N: [B, *]`` for ``x_seq: [T, B, *]``.

    Resets the network before the run.
    """
    def run():
        _compat.reset_net(snn)
        snn(x_seq)
    return _record(snn, QVMIFNode, lambda m, inp, out: out.sum(0), run)


@dataclass
class LayerMatch:
    """One spiking layer measured against its ANN layer over a batch (eq. 5).

    ``name``: the layer's module path in the user's ANN (``"features.3"``, ``"block.act"``; a
    module called twice gets ``" (call 2)"``). ``neurons_per_sample``: the layer's size.
    ``samples``: the batch size B. ``mismatched``: the (sample, neuron) pairs whose spike count N
    differs from the target level, out of :attr:`neuron_evaluations` = samples x
    neurons_per_sample. ``unevenness_error``: the mean over those pairs of theta/T * |M - N|.
    """

    name: str
    neurons_per_sample: int
    samples: int
    mismatched: int
    unevenness_error: float

    @property
    def neuron_evaluations(self) -> int:
        """samples x neurons_per_sample: the denominator of :attr:`mismatched`."""
        return self.samples * self.neurons_per_sample

    def to_dict(self) -> dict:
        """The fields and :attr:`neuron_evaluations`, JSON-ready."""
        return {**asdict(self), "neuron_evaluations": self.neuron_evaluations}


def _theta_view(theta, like: torch.Tensor) -> torch.Tensor:
    """theta (a float or a per-channel ``[C]`` tensor, channel = dim 1) broadcasting over ``like``."""
    th = torch.as_tensor(theta, dtype=like.dtype, device=like.device)
    return channel_view(th, like.ndim)


def measure_layer(name: str, N: torch.Tensor, theta, time_steps: int,
                  M: Optional[torch.Tensor] = None,
                  a: Optional[torch.Tensor] = None) -> LayerMatch:
    """Eq. 5 for one layer: its spike counts ``N: [B, *]`` against the ANN's levels.

    Args:
        N: spike counts over ``time_steps`` T steps, ``[B, *]`` (channel = dim 1).
        theta: the layer's threshold in ANN units, a float or a per-channel ``[C]`` tensor.
        M: the ANN's integer levels ``[B, *]`` where the ANN layer is a QuantReLU with L = T;
            then the error is theta/T * |M - N| and the target count is M.
        a: otherwise the ANN's activation ``[B, *]``; the target count is the one an ideal
            T-step neuron fires, round-half-up(a*T/theta) clipped to [0, T], and the error
            |a - theta/T * N| (which is theta/T * |M - N| at T = L, gamma = theta).
    """
    T = check_levels(time_steps, "time_steps")
    if (M is None) == (a is None):
        raise ValueError("measure_layer needs exactly one of M (the ANN's levels) and a "
                         "(the ANN's activation)")
    ref = M if M is not None else a
    if ref.shape != N.shape or N.ndim < 1:
        raise ValueError(f"layer '{name}': the ANN gives shape {tuple(ref.shape)} but the SNN's "
                         f"spike counts have shape {tuple(N.shape)}; they must be the same [B, *]")
    if M is not None:
        target = M
        err = _theta_view(theta, N.double()) / T * (M.double() - N.double()).abs()
    else:
        th = _theta_view(theta, a)
        target = torch.clamp(torch.floor(torch.clamp(a, min=0) * T / th + 0.5), 0, T)
        err = (a.double() - _theta_view(theta, a.double()) / T * N.double()).abs()
    return LayerMatch(name=name, neurons_per_sample=N[0].numel(), samples=N.shape[0],
                      mismatched=int((target != N).sum()),
                      unevenness_error=float(err.mean()) if err.numel() else 0.0)


def call_names(names: List[str]) -> List[str]:
    """Module paths in call order; the k-th call of a reused module gets ``" (call k)"``."""
    out: List[str] = []
    for name in names:
        k = names[:len(out)].count(name)
        out.append(name if k == 0 else f"{name} (call {k + 1})")
    return out


def compare_levels(ann: nn.Module, snn: nn.Module, x: torch.Tensor,
                   x_seq: Optional[torch.Tensor] = None) -> List[LayerMatch]:
    """Pair the ANN's levels with the SNN's spike counts layer by layer (:func:`measure_layer`).

    Args:
        x: the ANN's input ``[B, *]``.
        x_seq: the SNN's input ``[T, B, *]``; defaults to ``x`` repeated ``snn.levels`` (L) times.
    """
    if x_seq is None:
        T = getattr(snn, "levels", None)
        if T is None:
            raise ValueError("pass x_seq: the SNN does not say at which T = L it is exact")
        x_seq = x.unsqueeze(0).expand(T, *x.shape).contiguous()
    T = x_seq.shape[0]
    levels = ann_levels(ann, x)
    counts = snn_spike_counts(snn, x_seq)
    if len(levels) != len(counts):
        raise ValueError(f"the ANN ran {len(levels)} QuantReLU calls but the SNN {len(counts)} "
                         "spiking layers; they are not a converted pair")
    thetas = {n: m.v_threshold for n, m in snn.named_modules() if isinstance(m, QVMIFNode)}
    names = call_names([name for name, _ in levels])
    return [measure_layer(name, N, thetas[sname], T, M=M)
            for name, (_, M), (sname, N) in zip(names, levels, counts)]


def is_exact(mismatched: int, ann_accuracy: float, snn_accuracy: float) -> bool:
    """The one rule of "the SNN is exact at T = L".

    Measured at T = L in expected mode on the same samples for both networks: no (sample,
    neuron) pair fires a spike count N other than the ANN's level M (``mismatched == 0``, e.g.
    the sum of :attr:`LayerMatch.mismatched` over the layers) AND the SNN's accuracy equals the
    ANN's exactly. Either alone is not enough: equal accuracy can hide mismatched neurons, and
    N == M in float32 can still leave a logit a rounding apart.
    """
    check_int(mismatched, "mismatched", minimum=0)
    for name, acc in (("ann_accuracy", ann_accuracy), ("snn_accuracy", snn_accuracy)):
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {acc!r}")
    return mismatched == 0 and snn_accuracy == ann_accuracy
