"""Figure 5 from several runs' ``results.json``: SNN accuracy over T at a fixed L, one panel per
L, one line per model (expected current, matched V0 by default), T = L as a red line.

    python -m sj_qvm.app.static.figure5 runs/*/results.json --out figure5.png [--current instant]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ...checks import CURRENTS, check_current
from ...plots import pyplot
from ..arguments import Parser, fail

__all__ = ["load_results", "plot_figure5", "main"]


def load_results(paths) -> list:
    """The runs at ``paths`` as dicts; a file that is not a run's ``results.json`` raises
    ValueError naming it."""
    runs = []
    for p in map(Path, paths):
        try:
            res = json.loads(p.read_text(encoding="utf-8"))
            ok = isinstance(res, dict) and isinstance(res.get("levels"), int) and all(
                isinstance(res.get("snn_accuracy", {}).get(c), dict) for c in CURRENTS)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{p}: not readable as a run's results.json ({e})") from None
        if not ok:
            raise ValueError(f"{p}: not a static run's results.json (needs 'levels' and "
                             "'snn_accuracy' per current)")
        runs.append(res)
    if not runs:
        raise ValueError("no results.json given")
    return runs


def plot_figure5(runs: list, path, current: str = "expected"):
    """One panel per L (sorted), one line per run: ``100 * accuracy`` over T. Returns the Axes."""
    check_current(current)
    plt = pyplot()
    levels = sorted({r["levels"] for r in runs})
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.4), dpi=130,
                             sharey=True, squeeze=False)
    for ax, L, letter in zip(axes[0], levels, "abcdefghij"):
        Ts_all = set()
        for r in (r for r in runs if r["levels"] == L):
            accs = r["snn_accuracy"][current]
            Ts = sorted(int(T) for T in accs)
            Ts_all.update(Ts)
            ax.plot(Ts, [100 * accs[str(T)] for T in Ts], marker="o", ms=3,
                    label=f"{r.get('arch', '?')} ({r.get('dataset', '?')})")
        ax.axvline(L, color="red", lw=1.0, alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(Ts_all))
        ax.set_xticklabels([str(T) for T in sorted(Ts_all)])
        ax.set_xlabel("time-steps T")
        ax.set_title(f"({letter}) L = {L}, {current} current", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("SNN accuracy (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return list(axes[0])


def main(argv=None) -> int:
    p = Parser(prog="python -m sj_qvm.app.static.figure5", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results.json files of static runs")
    p.add_argument("--out", type=Path, default=Path("figure5.png"), help="the PNG to write")
    p.add_argument("--current", choices=CURRENTS, default="expected", help="which current mode")
    args = p.parse_args(argv)
    try:
        plot_figure5(load_results(args.results), args.out, args.current)
    except ValueError as e:
        return fail(e, p.prog)
    print(f"written:\n  {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
