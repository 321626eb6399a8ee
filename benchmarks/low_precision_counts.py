"""How often spike counts N miss the ANN levels M at T = L in float32, float16 and bfloat16 (CPU).

    python benchmarks/low_precision_counts.py

On the test suite's nets (tests/nets.py: an MLP, a CNN with BatchNorm and average pooling, a
residual net; L = 1, 2, 4, 8, 16; floor / round / ceil; 128 inputs each, seed 0, as
tests/test_exactness.py's float32 test), each net is built in float32 and cast to the dtype,
then converted (expected current, matched V0). Per dtype and schedule it prints the
(sample, neuron) pairs, out of all, where
  N != M            the SNN's count differs from the ANN's level, both in that dtype;
  N != N(float32)   the count differs from the float32 SNN's count on the same input;
  N != M(float64)   the count differs from the exact level (the float64 ANN).
"""
from __future__ import annotations

import copy
import itertools
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from nets import build  # noqa: E402
from sj_qvm import convert  # noqa: E402
from sj_qvm.levels import ann_levels, snn_spike_counts  # noqa: E402

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CASES = list(itertools.product(["mlp", "cnn", "resnet"], ("floor", "round", "ceil"),
                               (1, 2, 4, 8, 16)))


def counts(ann, x, schedule):
    """``(M, N)``: the ANN's levels and the SNN's spike counts, every layer flattened."""
    snn = convert(ann, schedule=schedule)
    x_seq = x.unsqueeze(0).expand(snn.levels, *x.shape).contiguous()
    with torch.no_grad():
        M = torch.cat([m.flatten().double() for _, m in ann_levels(ann, x)])
        N = torch.cat([n.flatten().double() for _, n in snn_spike_counts(snn, x_seq)])
    return M, N


def measure(schedule: str):
    """``(total, {dtype: (N != M, N != N(float32), N != M(float64))})`` over every case."""
    torch.manual_seed(0)
    nets = []
    for arch, rounding, L in CASES:
        ann, x = build(arch, L, rounding, dtype=torch.float32)
        nets.append((ann, torch.cat([x] * 4)))
    tally = {d: [0, 0, 0] for d in DTYPES}
    total = 0
    for ann, x in nets:
        M64, _ = counts(copy.deepcopy(ann).double(), x.double(), schedule)
        N32 = None
        for d in DTYPES:
            M, N = counts(copy.deepcopy(ann).to(d), x.to(d), schedule)
            N32 = N if d == torch.float32 else N32
            for k, ref in enumerate((M, N32, M64)):
                tally[d][k] += int((N != ref).sum())
        total += M64.numel()
    return total, tally


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    for schedule in ("per_sample", "per_step"):
        total, tally = measure(schedule)
        for d, (vs_m, vs_32, vs_64) in tally.items():
            name = str(d).removeprefix("torch.")
            print(f"{schedule:10s} {name:8s} of {total:,} neurons: N != M {vs_m:,} "
                  f"({vs_m / total:.2e}), N != N(float32) {vs_32:,} ({vs_32 / total:.2e}), "
                  f"N != M(float64) {vs_64:,} ({vs_64 / total:.2e})")


if __name__ == "__main__":
    main()
