"""How far the spiking max-pool is from the ANN in instant mode (it is exact in expected mode).

    python benchmarks/maxpool_instant_error.py [--levels 4] [--epochs 15]

Trains a small conv-BN-QuantReLU-MaxPool CNN (QAT) on scikit-learn's real digits (upsampled to
16x16), converts it, and at T = L reports, for each max-pool: the share of its input neurons whose
spike count N differs from the ANN level M, the share of its outputs whose count differs from the
ANN's max(M) with the leading-count rule, and the same with a per-step max of the spikes (what
SeqToANNContainer(nn.MaxPool2d) computes); plus ANN and SNN accuracy in both current modes.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sj_qvm import QuantReLU, _compat, convert  # noqa: E402
from sj_qvm.app.digits import load_digits_tensors  # noqa: E402
from sj_qvm.neuron import QVMIFNode  # noqa: E402
from sj_qvm.pool import spiking_max_pool_seq  # noqa: E402
from sj_qvm.qat import fit  # noqa: E402


def net(L: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         QuantReLU(L, "round", [2.0] * 16), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                         QuantReLU(L, "round", [2.0] * 32), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 16, 10))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--epochs", type=int, default=15)
    a = p.parse_args()
    torch.manual_seed(0)
    xtr, ytr, xte, yte = load_digits_tensors()
    up = lambda x: F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    xtr, xte = up(xtr), up(xte)
    ann = net(a.levels)
    opt = torch.optim.Adam(ann.parameters(), lr=3e-3)
    idx = lambda e: torch.randperm(len(xtr), generator=torch.Generator().manual_seed(e))
    batches = lambda e: [(xtr[i], ytr[i]) for i in idx(e).split(64)]
    fit(ann, opt, batches, a.epochs, progress=False)
    ann.eval()
    T = a.levels
    x_seq = xte.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    with torch.no_grad():
        ann_acc = (ann(xte).argmax(1) == yte).float().mean().item()
        M = {}
        hooks = [m.register_forward_hook(lambda m, i, o, k=k: M.__setitem__(k, o * T / m.threshold.view(1, -1, 1, 1)))
                 for k, m in enumerate(q for q in ann.modules() if isinstance(q, QuantReLU))]
        ann(xte)
        for h in hooks:
            h.remove()
        print(f"digits 16x16, L = T = {T}, {a.epochs} epochs QAT; ANN {100 * ann_acc:.2f}%")
        for current in ("expected", "instant"):
            snn = convert(ann, current=current, schedule="per_step", fold_theta=False)
            spikes = {}
            nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
            hs = [n.register_forward_hook(lambda m, i, o, k=k: spikes.__setitem__(k, o)) for k, n in enumerate(nodes)]
            _compat.reset_net(snn)
            acc = (snn(x_seq).mean(0).argmax(1) == yte).float().mean().item()
            for h in hs:
                h.remove()
            print(f"\n{current} current: SNN {100 * acc:.2f}%")
            for k in sorted(spikes):
                s, m_ann = spikes[k], M[k].round()
                N = s.sum(0)
                lead = spiking_max_pool_seq(s, nn.MaxPool2d(2)).sum(0)
                naive = F.max_pool2d(s.flatten(0, 1), 2).view(T, *lead.shape).sum(0)
                want = F.max_pool2d(m_ann, 2)
                print(f"  pool {k + 1}: inputs N != M {100 * (N != m_ann).float().mean():.2f}%; "
                      f"outputs != max(M): leading-count {100 * (lead != want).float().mean():.2f}%, "
                      f"per-step max {100 * (naive != want).float().mean():.2f}% "
                      f"(mean |error| {(lead - want).abs().mean():.3f} vs {(naive - want).abs().mean():.3f} spikes)")


if __name__ == "__main__":
    main()
