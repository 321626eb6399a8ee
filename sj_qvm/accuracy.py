"""Accuracy over T: the ANN and its converted SNN in both current modes (Figures 4 and 5)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import _compat
from .convert import convert
from .plots import CURRENT_STYLE, pyplot
from .quant import QuantReLU

__all__ = ["accuracy_vs_time_steps", "plot_accuracy_vs_time_steps"]


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
    from tqdm.auto import tqdm

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


def plot_accuracy_vs_time_steps(result: dict, path: str, levels: Optional[int] = None,
                                title: Optional[str] = None, ax=None):
    """Accuracy over T in the style of the paper's Figures 4 and 5, saved as a PNG at ``path``.

    One line per current mode, the ANN's accuracy as a grey dashed line and T = L (``levels``) as
    a red vertical line; T on a log2 axis. ``result`` is what :func:`accuracy_vs_time_steps`
    returns. With ``ax`` (a matplotlib Axes) it draws there and saves nothing.
    """
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=150)
    for current, accs in result["snn"].items():
        Ts = sorted(accs)
        style = dict(CURRENT_STYLE.get(current, dict(label=current)))
        ax.plot(Ts, [100 * accs[T] for T in Ts], lw=1.8, ms=4, **style)
        Ts_all = Ts
    ax.axhline(100 * result["ann"], color="grey", ls="--", lw=1.2,
               label=f"ANN {100 * result['ann']:.2f}%")
    if levels is not None:
        ax.axvline(levels, color="red", lw=1.0, alpha=0.7, label=f"T = L = {levels}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts_all)
    ax.set_xticklabels([str(T) for T in Ts_all])
    ax.set_xlabel("time-steps T")
    ax.set_ylabel("SNN accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return ax


# -- conversion report -----------------------------------------------------------------------
#: The energy convention of :meth:`ConversionReport.energy`.
