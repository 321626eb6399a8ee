"""Accuracy over T: the ANN and its converted SNN in both current modes (Figures 4 and 5; the
figure itself is :func:`sj_qvm.plots.plot_accuracy_vs_time_steps`, re-exported here); which
classes a classifier confuses (:func:`confusion_matrix`, drawn by
:func:`sj_qvm.plots.plot_confusion`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import _compat
from .checks import check_bool, check_current, check_int, check_levels
from .convert import convert
from .plots import plot_accuracy_vs_time_steps
from .quant import QuantReLU

__all__ = ["accuracy_vs_time_steps", "plot_accuracy_vs_time_steps", "confusion_matrix",
           "pair_accuracy"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """``[classes, classes]`` int64 counts: row = true class, column = predicted class.

    ``pred`` and ``target``: class indices ``[N]`` in ``0 .. classes - 1``.
    """
    check_int(classes, "classes", minimum=1)
    pred, target = torch.as_tensor(pred).long().flatten(), torch.as_tensor(target).long().flatten()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must hold as many samples, got {len(pred)} and "
                         f"{len(target)}")
    for name, v in (("pred", pred), ("target", target)):
        if len(v) and (v.min() < 0 or v.max() >= classes):
            raise ValueError(f"{name} must lie in 0..{classes - 1}, got {v.min()}..{v.max()}")
    counts = torch.bincount(target * classes + pred, minlength=classes * classes)
    return counts.view(classes, classes)


def pair_accuracy(confusion, pair) -> float:
    """Accuracy on the samples of the classes ``pair = (a, b)`` alone: the fraction of them
    predicted as their own class (a confusion with any class counts as wrong); NaN without any."""
    c = torch.as_tensor(confusion)
    a, b = pair
    total = (c[a].sum() + c[b].sum()).item()
    return (c[a, a] + c[b, b]).item() / total if total else float("nan")


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def accuracy_vs_time_steps(ann: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                           time_steps=(1, 2, 4, 8, 16), currents=("instant", "expected"),
                           batch_size: int = 256, progress: bool = True,
                           plot: Optional[str] = None) -> dict:
    """ANN accuracy and converted-SNN accuracy for each T and current mode.

    Args:
        inputs: the ANN's inputs ``[B, *]``; the SNN sees them repeated over T.
        targets: class indices ``[B]``.
        plot: if given, a PNG path for :func:`plot_accuracy_vs_time_steps` (Figures 4 and 5).
    Returns:
        ``{"ann": acc, "snn": {current: {T: acc}}}`` with accuracies in [0, 1].
    """
    time_steps = [check_levels(T, "time_steps") for T in time_steps]
    currents = [check_current(c, "currents") for c in currents]
    check_int(batch_size, "batch_size", minimum=1)
    check_bool(progress, "progress")
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(f"inputs and targets must hold the same number (>= 1) of samples, got "
                         f"{len(inputs)} and {len(targets)}")
    ann = ann.eval()
    with torch.no_grad():
        pred = torch.cat([ann(inputs[s]).argmax(1) for s in _batches(len(inputs), batch_size)])
    result = {"ann": (pred == targets).double().mean().item(), "snn": {}}
    jobs = [(c, T) for c in currents for T in time_steps]
    L = sorted({m.levels for m in ann.modules() if isinstance(m, QuantReLU)})
    for current, T in tqdm(jobs, desc="SNN accuracy", disable=not progress, leave=False):
        snn = convert(ann, time_steps=T, current=current, warn=False)
        correct = 0
        with torch.no_grad():
            for s in _batches(len(inputs), batch_size):
                _compat.reset_net(snn)
                x = inputs[s]
                out = snn(x.unsqueeze(0).expand(T, *x.shape)).mean(0)
                correct += (out.argmax(1) == targets[s]).sum().item()
        result["snn"].setdefault(current, {})[T] = correct / len(inputs)
    if plot is not None:
        plot_accuracy_vs_time_steps(result, plot, levels=L[0] if len(L) == 1 else None)
    return result
