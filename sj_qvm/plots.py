"""The figures: accuracy over T (the paper's Figures 4 and 5) and the conversion report's
per-layer unevenness error (Figure 3 style), in one shared look, on a headless matplotlib.

Each function draws on ``ax`` when given one (and saves nothing), else on a figure of its own
saved as a PNG at ``path``; it returns the Axes, so callers and tests can read what was drawn.
Legends sit outside the axes, where they hide no data.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["CURRENT_STYLE", "pyplot", "plot_accuracy_vs_time_steps", "plot_conversion_report",
           "plot_confusion"]

CURRENT_STYLE = {"instant": dict(color="#4daf4a", marker="s", label="instant current"),
                  "instant_calibrated": dict(color="#377eb8", marker="^",
                                             label="instant, first layer's V0 fitted"),
                  "expected": dict(color="#ff7f00", marker="o", label="expected current (QVM)")}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _legend_outside(ax) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _finish(plt, fig, path) -> None:
    # bbox_inches="tight" grows the PNG to hold the legend outside the axes.
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy_vs_time_steps(result: dict, path: Optional[str] = None,
                                levels: Optional[int] = None, title: Optional[str] = None,
                                ax=None):
    """Accuracy over T: one line per current mode, the ANN's accuracy as a grey dashed line and
    T = L (``levels``) as a red vertical line; T on a log2 axis.

    ``result``: ``{"ann": acc, "snn": {current: {T: acc}}}`` with accuracies in [0, 1], what
    :func:`sj_qvm.analysis.accuracy_vs_time_steps` returns.
    """
    if ax is None and path is None:
        raise ValueError("plot_accuracy_vs_time_steps needs path (a PNG to write) or ax")
    if not result.get("snn"):
        raise ValueError("result['snn'] holds no SNN accuracy to plot")
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    Ts_all = sorted({T for accs in result["snn"].values() for T in accs})
    for current, accs in result["snn"].items():
        Ts = sorted(accs)
        style = dict(CURRENT_STYLE.get(current, dict(label=current)))
        ax.plot(Ts, [100 * accs[T] for T in Ts], lw=1.8, ms=4, **style)
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
    _legend_outside(ax)
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        _finish(plt, fig, path)
    return ax


def plot_conversion_report(report, path: Optional[str] = None, title: Optional[str] = None,
                           ax=None):
    """Per-layer mean unevenness error of a :class:`~sj_qvm.analysis.ConversionReport`, one bar
    per current mode side by side, each layer labelled by its module path in the ANN."""
    if ax is None and path is None:
        raise ValueError("plot_conversion_report needs path (a PNG to write) or ax")
    plt = pyplot()
    currents = list(report.rows_by_current)
    names = [r.name for r in report.rows_by_current[currents[0]]]
    n = len(names)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(5.5, 0.7 * n + 3.5), 3.6), dpi=150)
    width = 0.8 / len(currents)
    for k, current in enumerate(currents):
        vals = [r.unevenness_error for r in report.rows_by_current[current]]
        xs = [i + (k - (len(currents) - 1) / 2) * width for i in range(n)]
        style = CURRENT_STYLE.get(current, dict(color=None, label=current))
        ax.bar(xs, vals, width, color=style["color"], label=style["label"])
        for x, v in zip(xs, vals):
            ax.annotate(f"{v:.2g}", (x, v), ha="center", va="bottom", fontsize=6,
                        xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=30 if max(map(len, names), default=0) > 6 else 0,
                       ha="right" if max(map(len, names), default=0) > 6 else "center",
                       fontsize=7)
    ax.set_xlabel("spiking layer (module in the ANN)")
    ax.set_ylabel("mean unevenness error  θ/T·|M−N|" if report.exact_levels
                  else "mean error  |a − θ/T·N|")
    ax.set_title(title or f"per-layer unevenness error, T = {report.time_steps}", fontsize=9)
    _legend_outside(ax)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    if own:
        _finish(plt, fig, path)
    return ax


def plot_confusion(confusion, path: Optional[str] = None, classes=None,
                   title: Optional[str] = None, ax=None):
    """A confusion matrix ``[K, K]`` (row = true class, column = predicted), each cell shaded by
    its share of the row and labelled with its count; ``classes``: K names for the axes."""
    import numpy as np
    if ax is None and path is None:
        raise ValueError("plot_confusion needs path (a PNG to write) or ax")
    c = np.asarray(confusion)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be a square matrix [K, K], got shape {c.shape}")
    k = c.shape[0]
    names = [str(n) for n in classes] if classes else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"classes must name the {k} classes, got {len(names)} names")
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(2.0 + 0.45 * k, 1.6 + 0.45 * k), dpi=150)
    share = c / np.maximum(1, c.sum(1, keepdims=True))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if c[i, j]:
                ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(c) / max(1, c.sum())
    ax.set_title(f"{title + ': ' if title else ''}accuracy {100 * acc:.1f}%", fontsize=9)
    if own:
        _finish(plt, fig, path)
    return ax
