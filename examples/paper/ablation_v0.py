"""The pattern of Table 4 / Figure 4 of the QVM paper (Appendix A.7, Section 6.2) on scikit-learn's
handwritten digits: 3 roundings x 3 initial membrane potentials x T in {1, 2, 4, 8, 16, 32}, in
both current modes.

For each rounding Q in {floor, round, ceil} a small CNN (``sj_qvm.app.digits.digits_cnn``) is trained
with QuantReLU(L, Q) (QAT), converted for every T, and its IF nodes are run with each
V0 in {0, theta/2, theta} (``QVMIFNode(v_init="floor"|"round"|"ceil")``; V0 = theta fires on
U > theta, the rule Q = ceil needs). Theorem 3: with the expected current, the matched V0 and
T = L, the SNN's accuracy equals the ANN's exactly (every spike count equals the ANN's level).
The paper's own run is ResNet-18 on CIFAR-100 with L = 8; this one takes a minute on a laptop.

    python examples/paper/ablation_v0.py [--quick] [--levels 8] [--epochs 30] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

from sj_qvm import convert
from sj_qvm._compat import reset_net
from sj_qvm.analysis import compare_levels, is_exact, plot_accuracy_vs_time_steps
from sj_qvm.app.digits import digits_cnn, load_digits_tensors, train_qat
from sj_qvm.neuron import QVMIFNode

ROUNDINGS = ("floor", "round", "ceil")
V0S = {"floor": "0", "round": "θ/2", "ceil": "θ"}  # v_init string -> V0
CURRENTS = ("instant", "expected")


def accuracy(snn, x, y, T, batch_size=512) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            reset_net(snn)
            out = snn(xb.unsqueeze(0).expand(T, *xb.shape)).mean(0)
            correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def set_v0(snn, v0: str) -> None:
    for m in snn.modules():
        if isinstance(m, QVMIFNode):
            m.v_init = v0


def run(levels=8, time_steps=(1, 2, 4, 8, 16, 32), epochs=30, width=16, seed=0,
        test_samples=None, progress=True) -> dict:
    """``{Q: {"ann": acc, "snn": {current: {V0: {T: acc}}}, "mismatched": {V0: n}, "neurons": n}}``."""
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_digits_tensors(seed)
    if test_samples is not None:
        x_te, y_te = x_te[:test_samples], y_te[:test_samples]
    res = {}
    for q in ROUNDINGS:
        torch.manual_seed(seed)
        ann = train_qat(digits_cnn(levels, q, width), x_tr, y_tr, epochs=epochs, seed=seed,
                        progress=progress)
        with torch.no_grad():
            ann_acc = (ann(x_te).argmax(1) == y_te).double().mean().item()
        entry = {"ann": ann_acc, "snn": {c: {v: {} for v in V0S} for c in CURRENTS},
                 "mismatched": {}}
        for current in CURRENTS:
            for T in time_steps:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*differs from the QuantReLU")
                    snn = convert(ann, time_steps=T, current=current)
                for v0 in V0S:
                    set_v0(snn, v0)
                    entry["snn"][current][v0][T] = accuracy(snn, x_te, y_te, T)
                    if current == "expected" and T == levels:
                        rows = compare_levels(ann, snn, x_te)
                        entry["mismatched"][v0] = sum(r.mismatched for r in rows)
                        entry["neurons"] = sum(r.neuron_evaluations for r in rows)
        res[q] = entry
    return res


def format_table(res: dict, levels: int) -> str:
    Ts = sorted(next(iter(res.values()))["snn"]["expected"]["floor"])
    lines = []
    for current in CURRENTS:
        lines += [f"\n{current} current (accuracy %, digits test set; L = {levels})",
                  f"{'Q':<6}{'ANN':>7}  {'V0':<4}" + "".join(f"{'T=' + str(T):>8}" for T in Ts)]
        for q, e in res.items():
            for k, v0 in enumerate(V0S):
                head = f"{q:<6}{100 * e['ann']:>7.2f}" if k == 0 else " " * 13
                accs = e["snn"][current][v0]
                cells = "".join(
                    f"{100 * accs[T]:>7.2f}{'*' if (v0 == q and T == levels) else ' '}"
                    for T in Ts)
                lines.append(f"{head}  {V0S[v0]:<4}{cells}")
    lines.append("\n* matched V0 at T = L")
    lines.append("neurons with N != M at T = L, expected current (of the test set's):")
    for q, e in res.items():
        lines.append(f"  Q = {q:<6}" + ", ".join(f"V0 = {V0S[v]}: {n}" for v, n in
                                                e["mismatched"].items()) + f"  (of {e['neurons']})")
    return "\n".join(lines)


def check_theorem_3(res: dict, levels: int) -> list:
    """The roundings Q that break Theorem 3: with the matched V0 and the expected current, the
    SNN is not exact at T = L (:func:`sj_qvm.analysis.is_exact`: no neuron with N != M and
    the ANN's accuracy). A sweep without T = L measures nothing and flags nothing."""
    return [q for q, e in res.items() if levels in e["snn"]["expected"][q]
            and not is_exact(e["mismatched"][q], e["ann"], e["snn"]["expected"][q][levels])]


def plot(res: dict, path: str, levels: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"floor": "#1f77b4", "round": "#2ca02c", "ceil": "#d62728"}
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.6), dpi=130, sharey=True)
    for i, current in enumerate(CURRENTS):
        for j, q in enumerate(ROUNDINGS):
            ax = axes[i, j]
            for v0 in V0S:
                one = {"ann": res[q]["ann"], "snn": {f"V0 = {V0S[v0]}": res[q]["snn"][current][v0]}}
                plot_accuracy_vs_time_steps(one, path, levels=None, ax=ax)
                ax.lines[-2].set_color(colors[v0])
            ax.axvline(levels, color="red", lw=1.0, alpha=0.7)
            ax.set_title(f"({'abc'[j]}) Q = {q}, {current} current", fontsize=9)
            _dedupe_legend(ax)
        ax = axes[i, 3]  # (d) optimal matching
        for q in ROUNDINGS:
            one = {"ann": res[q]["ann"], "snn": {f"Q = {q}, V0 = {V0S[q]}": res[q]["snn"][current][q]}}
            plot_accuracy_vs_time_steps(one, path, levels=None, ax=ax)
            ax.lines[-2].set_color(colors[q])
            ax.lines[-1].set_color(colors[q])
        ax.axvline(levels, color="red", lw=1.0, alpha=0.7)
        ax.set_title(f"(d) matched V0, {current} current", fontsize=9)
        _dedupe_legend(ax)
    fig.suptitle(f"digits CNN, L = {levels}: SNN accuracy over T (grey dashed: ANN; red: T = L)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _dedupe_legend(ax):
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, l) for h, l in zip(handles, labels) if not l.startswith("ANN")]
    ax.legend(*zip(*keep), fontsize=6, loc="best")  # where it hides the fewest points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="L = 4, T up to 8, 3 epochs, width 8, 200 test images (tests)")
    p.add_argument("--levels", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=".", help="folder for ablation_v0.png")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.quick:
        cfg = dict(levels=4, time_steps=(1, 2, 4, 8), epochs=3, width=8, test_samples=200)
    else:
        cfg = dict(levels=args.levels, epochs=args.epochs)
    res = run(seed=args.seed, progress=not args.quick, **cfg)
    L = cfg["levels"]
    print(format_table(res, L))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ablation_v0.png")
    plot(res, path, L)
    print(f"saved {path}; took {time.perf_counter() - start:.1f} s")
    bad = check_theorem_3(res, L)
    if bad:
        print(f"ERROR: matched V0 at T = L (expected current) is not exact for Q = {bad}",
              file=sys.stderr)
        return 1
    print("matched V0, expected current, T = L: SNN accuracy equals the ANN's for every Q")
    return 0


if __name__ == "__main__":
    sys.exit(main())
