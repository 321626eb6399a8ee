"""Appendix A.1 / Figure 6 of the QVM paper: how the temporal distribution of input spikes changes
the conversion error of one IF layer, simulated with ``sj_qvm.QVMIFNode``.

Setup (paper): one layer of 1000 neurons, theta^{l-1} = 1.5, theta^l = 2.0, T = L = 8, weights
U(-1, 1), seed 48, 1000 trials. Each trial draws input spike counts N^{l-1} in {0..T}, so that
the ANN's input a^{l-1} = theta^{l-1}/T * N^{l-1} equals the SNN's rate phi^{l-1} exactly, and:

* ANN: a^l = gamma/L * clip(Q(W a^{l-1} * L/gamma), 0, L), gamma = theta^l;
* SNN, four input scenarios, all through the same soft-reset IF neuron with V0 matched to Q:
  random spike timing; uniformly spaced spikes; the ANN's output a^l as a constant current;
  the constant expected current W phi^{l-1} (eq. 9).

Printed: the mean absolute error |a^l - phi^l| (mean +- std over trials) and Pearson's R between
a^l and phi^l for each scenario. Saved: scatter plots (top) and error histograms (bottom).

The paper leaves some details open; our choices: the layer maps ``--inputs`` (default 1000)
presynaptic neurons to 1000 neurons; N^{l-1} is uniform on {0..T}; "uniformly spaced" puts the
k-th of N spikes at step floor(k*T/N); Q = round (V0 = theta/2; ``--rounding``); R is computed
over all neurons of all trials pooled.

    python examples/paper/temporal_distribution.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from sj_qvm import QVMIFNode, QuantReLU

SCENARIOS = ("random", "uniform", "ann_input", "expected")
TITLES = {"random": "random spike timing", "uniform": "uniformly spaced spikes",
          "ann_input": "ANN output as input", "expected": "constant expected current"}
PAPER = {"random": (0.1430, 0.971), "uniform": (0.0912, 0.944), "ann_input": (0.0, 1.0),
         "expected": (0.0, 1.0)}


def spike_trains(counts: torch.Tensor, T: int, kind: str, g: torch.Generator) -> torch.Tensor:
    """``[T, n]`` binary trains with ``counts[i]`` spikes each, placed at random or evenly."""
    n = counts.numel()
    if kind == "random":
        # rank T random keys per neuron; the N smallest mark the spike times
        ranks = torch.rand(T, n, generator=g).argsort(0).argsort(0)
        return (ranks < counts.unsqueeze(0)).to(torch.float64)
    k = torch.arange(T, dtype=torch.float64).unsqueeze(1)  # spike index k = 0..T-1
    pos = torch.floor(k * T / counts.clamp(min=1).unsqueeze(0)).long()  # [T, n]
    valid = k < counts.unsqueeze(0)
    s = torch.zeros(T, n, dtype=torch.float64)
    s.scatter_add_(0, torch.where(valid, pos, torch.zeros_like(pos)), valid.to(torch.float64))
    if not torch.equal(s.sum(0), counts.to(s.dtype)) or s.max() > 1:
        raise AssertionError("uniform spike placement lost or doubled a spike")
    return s


def run(neurons: int = 1000, inputs: int = 1000, trials: int = 1000, T: int = 8,
        theta_in: float = 1.5, theta: float = 2.0, rounding: str = "round", seed: int = 48):
    """``{scenario: {"ann": a [trials*neurons], "snn": phi, "mae": [trials], "r": R}}``."""
    g = torch.Generator().manual_seed(seed)
    quant = QuantReLU(T, rounding, theta).double()
    out = {s: {"ann": [], "snn": [], "mae": []} for s in SCENARIOS}
    with torch.no_grad():
        for _ in range(trials):
            W = torch.rand(neurons, inputs, generator=g, dtype=torch.float64) * 2 - 1
            n_in = torch.randint(0, T + 1, (inputs,), generator=g).to(torch.float64)
            a_in = theta_in / T * n_in                      # = phi^{l-1}
            a = quant(W @ a_in)                              # ANN output a^l
            trains = {"random": spike_trains(n_in, T, "random", g),
                      "uniform": spike_trains(n_in, T, "uniform", g)}
            for s in SCENARIOS:
                if s in trains:
                    q_seq, current = theta_in * trains[s] @ W.T, "instant"   # [T, neurons]
                elif s == "ann_input":
                    q_seq, current = a.expand(T, -1), "instant"
                else:  # the same random spikes, averaged over T by the node (eq. 9)
                    q_seq, current = theta_in * trains["random"] @ W.T, "expected"
                node = QVMIFNode(v_threshold=theta, v_init=rounding, current=current,
                                 step_mode="m")
                phi = theta / T * node(q_seq.unsqueeze(1)).sum(0).squeeze(0)
                out[s]["ann"].append(a)
                out[s]["snn"].append(phi)
                out[s]["mae"].append((a - phi).abs().mean().item())
    for s in SCENARIOS:
        a, phi = torch.cat(out[s]["ann"]), torch.cat(out[s]["snn"])
        out[s].update(ann=a, snn=phi, mae=torch.tensor(out[s]["mae"]),
                      r=torch.corrcoef(torch.stack([a, phi]))[0, 1].item())
    return out


def plot(res: dict, path: str, theta: float = 2.0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(13, 6), dpi=130)
    for j, s in enumerate(SCENARIOS):
        a, phi, mae = res[s]["ann"], res[s]["snn"], res[s]["mae"]
        keep = torch.arange(0, a.numel(), max(1, a.numel() // 20000))  # plot a subsample
        ax = axes[0, j]
        ax.scatter(a[keep], phi[keep], s=3, alpha=0.15, color="#1f77b4", rasterized=True)
        ax.plot([0, theta], [0, theta], color="red", lw=0.8)
        ax.set_title(f"({'abcd'[j]}) {TITLES[s]}\nR = {res[s]['r']:.4f}", fontsize=9)
        ax.set_xlabel("ANN activation $a^l$")
        ax.set_ylabel("SNN scaled rate $\\phi^l$")
        ax.set_xlim(-0.05, theta + 0.05)
        ax.set_ylim(-0.05, theta + 0.05)
        ax = axes[1, j]
        err = (a - phi).abs()
        ax.hist(err.numpy(), bins=40, range=(0, max(0.5, err.max().item())), color="#ff7f0e")
        ax.set_yscale("log")
        ax.set_title(f"({'efgh'[j]}) |error|: {mae.mean():.4f} ± {mae.std():.4f}", fontsize=9)
        ax.set_xlabel("$|a^l - \\phi^l|$")
        ax.set_ylabel("neurons")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 trials of 200 neurons (tests)")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--inputs", type=int, default=1000, help="presynaptic neurons (default 1000)")
    p.add_argument("--rounding", choices=("floor", "round", "ceil"), default="round")
    p.add_argument("--seed", type=int, default=48)
    p.add_argument("--out", default=".", help="folder for temporal_distribution.png")
    args = p.parse_args(argv)
    neurons = 200 if args.quick else 1000
    trials = args.trials or (20 if args.quick else 1000)
    inputs = min(args.inputs, 200) if args.quick else args.inputs
    res = run(neurons, inputs, trials, rounding=args.rounding, seed=args.seed)
    print(f"A.1: {neurons} neurons, {inputs} inputs, {trials} trials, T = 8, theta = 1.5 -> 2.0, "
          f"Q = {args.rounding}, seed {args.seed}")
    print(f"{'scenario':<28}{'mean |error|':>22}{'R':>9}   paper: error / R")
    for s in SCENARIOS:
        m = res[s]["mae"]
        pe, pr = PAPER[s]
        print(f"{TITLES[s]:<28}{m.mean():>12.4f} ± {m.std():.4f}{res[s]['r']:>9.4f}   "
              f"{pe:.4f} / {pr:.3f}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "temporal_distribution.png")
    plot(res, path)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
