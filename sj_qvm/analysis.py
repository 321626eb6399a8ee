"""Per-layer comparison of an ANN's integer levels M with its SNN's spike counts N (eq. 5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn

from . import _compat
from .neuron import QVMIFNode
from .quant import QuantReLU

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
        theta = thetas[sname]
        theta = theta if isinstance(theta, float) else theta.mean().item()
        diff = (M - N).abs()
        rows.append(LayerMatch(name, M.numel(), int((diff != 0).sum()),
                               float(theta / T * diff.double().mean())))
    return rows


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def accuracy_vs_time_steps(ann: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                           time_steps=(1, 2, 4, 8, 16), currents=("instant", "expected"),
                           batch_size: int = 256, progress: bool = True) -> dict:
    """ANN accuracy and converted-SNN accuracy for each T and current mode.

    Args:
        inputs: the ANN's inputs ``[B, *]``; the SNN sees them repeated over T.
        targets: class indices ``[B]``.
    Returns:
        ``{"ann": acc, "snn": {current: {T: acc}}}`` with accuracies in [0, 1].
    """
    from tqdm.auto import tqdm

    from .convert import convert
    ann = ann.eval()
    with torch.no_grad():
        pred = torch.cat([ann(inputs[s]).argmax(1) for s in _batches(len(inputs), batch_size)])
    result = {"ann": (pred == targets).double().mean().item(), "snn": {}}
    jobs = [(c, T) for c in currents for T in time_steps]
    L = sorted({m.levels for m in ann.modules() if isinstance(m, QuantReLU)})
    for current, T in tqdm(jobs, desc="SNN accuracy", disable=not progress, leave=False):
        import warnings
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*differs from the QuantReLU levels.*")
            snn = convert(ann, time_steps=T if [T] != L else None, current=current)
        correct = 0
        with torch.no_grad():
            for s in _batches(len(inputs), batch_size):
                _compat.reset_net(snn)
                x = inputs[s]
                out = snn(x.unsqueeze(0).expand(T, *x.shape)).mean(0)
                correct += (out.argmax(1) == targets[s]).sum().item()
        result["snn"].setdefault(current, {})[T] = correct / len(inputs)
    return result
