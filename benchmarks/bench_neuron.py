"""QVMIFNode vs SpikingJelly's IFNode(v_reset=None), multi-step, measured side by side in one process.

    python benchmarks/bench_neuron.py [--shape 4 32 64 32 32] [--repeats 15]

Prints the median time of each and the ratio SJ / ours (> 1: ours is faster).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from sj_qvm import QVMIFNode
from sj_qvm._compat import SJ_VERSION, IFNode, functional


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs="+", default=[4, 32, 64, 32, 32])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.rand(*args.shape) * 0.8
    ours = QVMIFNode(1.0, 0.0, current="instant", step_mode="m")
    sj = IFNode(v_threshold=1.0, v_reset=None, step_mode="m")

    def forward(node):
        def run():
            functional.reset_net(node)
            with torch.no_grad():
                node(x)
        return run

    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)

    def train_step(node):
        def run():
            functional.reset_net(node)
            xg.grad = None
            (node(xg) * g).sum().backward()
        return run

    rows = {}
    # Interleave the two so that machine noise hits both alike.
    for case, make in (("forward (no_grad)", forward), ("forward+backward", train_step)):
        a, b = [], []
        for _ in range(3):
            a.append(median_ms(make(sj), max(1, args.repeats // 3)))
            b.append(median_ms(make(ours), max(1, args.repeats // 3)))
        rows[case] = (statistics.median(a), statistics.median(b))
    clone_ms = median_ms(lambda: x.clone(), args.repeats)
    print(f"input {list(x.shape)} float32; torch {torch.__version__}, spikingjelly {SJ_VERSION}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'case':<20}{'SJ IFNode ms':>14}{'QVMIFNode ms':>14}{'SJ/ours':>10}")
    for case, (sj_ms, our_ms) in rows.items():
        print(f"{case:<20}{sj_ms:14.2f}{our_ms:14.2f}{sj_ms / our_ms:10.2f}x")
    print(f"plain x.clone(): {clone_ms:.2f} ms (the memory bound)")
    print(json.dumps({k: {"sj_ms": v[0], "ours_ms": v[1], "ratio": v[0] / v[1]}
                      for k, v in rows.items()} | {"clone_ms": clone_ms}))


if __name__ == "__main__":
    main()
