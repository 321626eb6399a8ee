"""The N-vs-M comparison: each QuantReLU's level M beside its neuron layer's spike count N."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn

from . import _compat
from .neuron import QVMIFNode
from .quant import QuantReLU, channel_view

__all__ = ["ann_levels", "snn_spike_counts", "LayerMatch", "compare_levels"]


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
    name: str
    neurons: int
    mismatched: int
    unevenness_error: float  # mean of theta/T * |M - N| (eq. 5)


def compare_levels(ann: nn.Module, snn: nn.Module, x: torch.Tensor,
                   x_seq: Optional[torch.Tensor] = None) -> List[LayerMatch]:
    """Pair the ANN's levels with the SNN's spike counts layer by layer.

    Args:
        x: the ANN's input ``[B, *]``.
        x_seq: the SNN's input ``[T, B, *]``; defaults to ``x`` repeated ``snn.time_steps`` times.
    """
    if x_seq is None:
        T = getattr(snn, "time_steps")
        x_seq = x.unsqueeze(0).expand(T, *x.shape).contiguous()
    T = x_seq.shape[0]
    levels = ann_levels(ann, x)
    counts = snn_spike_counts(snn, x_seq)
    if len(levels) != len(counts):
        raise ValueError(f"the ANN ran {len(levels)} QuantReLU calls but the SNN {len(counts)} "
                         "spiking layers; they are not a converted pair")
    thetas = {n: m.v_threshold for n, m in snn.named_modules() if isinstance(m, QVMIFNode)}
    rows = []
    for (name, M), (sname, N) in zip(levels, counts):
        theta = torch.as_tensor(thetas[sname], dtype=torch.float64)
        diff = (M - N).abs().double()
        # eq. 5 per neuron, with each channel's own theta (channel = dim 1).
        xi = channel_view(theta, diff.ndim) / T * diff
        rows.append(LayerMatch(name, M.numel(), int((diff != 0).sum()), float(xi.mean())))
    return rows
