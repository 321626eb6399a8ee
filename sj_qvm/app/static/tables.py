"""A static run's tables and ablation plot, laid out like the paper's.

* Tables 1 / 2: one row per method, the ANN's accuracy, then the SNN's at each T. This run gives
  two rows (expected and instant current, matched V0); the paper's own QVM row is printed beside
  it when the run reproduces a setting the paper reports (:data:`PAPER_ROWS`).
* Table 4: the ANN's rounding Q and accuracy, then one row per V0 in {0, theta/2, theta}, per
  current mode.
* Figure 4: accuracy over T for each V0, the ANN as a grey dashed line, T = L as a red line; one
  panel per current mode.
"""
from __future__ import annotations

from ...plots import pyplot

__all__ = ["PAPER_ROWS", "V0_LABELS", "markdown", "plot_v0_ablation"]

V0_LABELS = {"floor": "0", "round": "θ/2", "ceil": "θ"}
#: (dataset, arch) -> (table, the L its QVM row states, ANN %, {T: SNN %}), copied from the paper.
PAPER_ROWS = {
    ("cifar100", "vgg16"): ("Table 2", 8, 77.01, {1: 45.48, 2: 69.84, 4: 76.20, 8: 77.02,
                                                  16: 77.29, 32: 77.14}),
    ("cifar100", "resnet20"): ("Table 2", 8, 68.25, {1: 11.39, 2: 43.81, 4: 64.57, 8: 68.24,
                                                     16: 68.41, 32: 68.70}),
    ("cifar100", "resnet18"): ("Table 2", 8, 78.88, {1: 59.16, 2: 75.61, 4: 78.87, 8: 79.42,
                                                     16: 79.55, 32: 79.48}),
    ("imagenet", "vgg16"): ("Table 1", 16, 74.39, {4: 71.20, 8: 73.77, 16: 74.30, 32: 74.30}),
    ("imagenet", "resnet34"): ("Table 1", 8, 74.32, {4: 67.28, 8: 74.74, 16: 72.98, 32: 73.47}),
}


def _arch_key(arch: str) -> str:
    return arch[3:].replace("_bn", "") if arch.startswith("tv_") else arch


def _cells(accs: dict, Ts, mark=None) -> str:
    return " | ".join((f"{100 * accs[str(T)]:.2f}" if str(T) in accs else "–")
                      + ("*" if T == mark else "") for T in Ts)


def markdown(res: dict) -> str:
    """The run's Tables 1/2 and 4 as Markdown (``res`` as in ``results.json``)."""
    L, q = res["levels"], res["rounding"]
    Ts = sorted(int(T) for T in res["snn_accuracy"]["expected"])
    head = "| Model | Method | ANN | " + " | ".join(f"T={T}" for T in Ts) + " |"
    rule = "|" + "---|" * (3 + len(Ts))
    model = res["arch"]
    ann = f"{100 * res['ann_accuracy']:.2f}"
    table = "Table 1" if res["dataset"] == "imagenet" else "Table 2"
    lines = [f"## {table} layout: {res['dataset']}, {res['test_samples']} test images", "",
             head, rule]
    for c in ("expected", "instant"):
        lines.append(f"| {model} | QVM (L={L}, {q}, {c} current) | {ann} | "
                     + _cells(res["snn_accuracy"][c], Ts, L) + " |")
    paper = PAPER_ROWS.get((res["dataset"], _arch_key(model)))
    if paper is not None:
        name, pL, pann, pacc = paper
        lines.append(f"| {model} | paper's QVM (L={pL}), {name} | {pann:.2f} | "
                     + " | ".join(f"{pacc[T]:.2f}" if T in pacc else "–" for T in Ts) + " |")
    lines += ["", f"\\* T = L. Neurons with N != M at T = L (expected current, float64): "
              f"{res['mismatched_neurons']} of {res['report_neurons']} (float32: "
              f"{res['mismatched_neurons_float32']})."]
    abl = res["v0_ablation"]
    v0s = list(abl["expected"])
    if len(v0s) > 1:
        for c in ("expected", "instant"):
            lines += ["", f"## Table 4 layout: V0 ablation, {c} current", "",
                      "| ANN Q | ANN Acc. (%) | V0 | " + " | ".join(f"T={T}" for T in Ts) + " |",
                      "|" + "---|" * (3 + len(Ts))]
            for k, v in enumerate(v0s):
                first = f"| {q} | {ann} |" if k == 0 else "| | |"
                lines.append(f"{first} {V0_LABELS[v]} | "
                             + _cells(abl[c][v], Ts, L if v == q else None) + " |")
        lines += ["", "\\* the matched V0 at T = L (Theorem 3: exact in expected mode)."]
    return "\n".join(lines) + "\n"


def plot_v0_ablation(res: dict, path, title: str = "") -> None:
    """Figure 4's layout for one rounding: accuracy over T per V0, one panel per current."""
    abl = res["v0_ablation"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=130, sharey=True)
    L = res["levels"]
    for ax, c in zip(axes, ("expected", "instant")):
        for v, accs in abl[c].items():
            Ts = sorted(int(T) for T in accs)
            ax.plot(Ts, [100 * accs[str(T)] for T in Ts], marker="o", ms=3,
                    label=f"V0 = {V0_LABELS[v]}" + (" (matched)" if v == res["rounding"] else ""))
        ax.axhline(100 * res["ann_accuracy"], color="grey", ls="--", lw=1.2, label="ANN")
        ax.axvline(L, color="red", lw=1.0, alpha=0.7, label=f"T = L = {L}")
        ax.set_xscale("log", base=2)
        Ts = sorted(int(T) for T in next(iter(abl[c].values())))
        ax.set_xticks(Ts)
        ax.set_xticklabels([str(T) for T in Ts])
        ax.set_xlabel("time-steps T")
        ax.set_title(f"{c} current, Q = {res['rounding']}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SNN accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
