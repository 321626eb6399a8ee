"""The compiled CPU kernels on torch's OpenMP pool against a pthread per share (ops/native.pool),
measured interleaved in one process.

    python benchmarks/bench_pool.py [--shape 4 32 64 32 32] [--repeats 15] [--threads 2]

Each case runs a torch op first (a ``clone`` of the input), as a conv runs before a neuron in a
network, so that torch's OpenMP workers spin after it; then ``QVMIFNode`` in both currents, with
the shares on the pool and on pthreads, no grad and with a backward. Prints median ms and
pthreads / pool (> 1: the pool is faster), once per allocator setting.
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sj_qvm import QVMIFNode  # noqa: E402
from sj_qvm._compat import functional  # noqa: E402
from sj_qvm.ops import native  # noqa: E402
from harness import interleaved, neuron_run  # noqa: E402


def child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not native.available() or native.pool(1) != 1:
        print("JSON " + json.dumps({"skipped": "the extension is not built with OpenMP"}))
        return
    x = torch.rand(*args.shape) * 0.8
    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)
    cases = {}
    for current in ("instant", "expected"):
        for mode, label in ((1, "pool"), (0, "pthreads")):
            node = QVMIFNode(1.0, 0.0, current=current, step_mode="m")

            def forward(node=node, mode=mode):
                x.clone()  # the torch op before the neuron
                native.pool(mode)
                functional.reset_net(node)
                with torch.no_grad():
                    node(x)

            def train(node=node, mode=mode):
                x.clone()
                native.pool(mode)
                functional.reset_net(node)
                xg.grad = None
                (node(xg) * g).sum().backward()
            cases[f"forward {current}, {label}"] = forward
            cases[f"forward+backward {current}, {label}"] = train
    cases["clone"] = lambda: x.clone()
    times = interleaved(cases, args.repeats, grad=True)
    native.pool(1)
    print("JSON " + json.dumps({k: 1e3 * v for k, v in times.items()}
                               | {"machine": f"{list(x.shape)} float32, torch {torch.__version__}, "
                                             f"{args.threads} threads, load "
                                             f"{os.getloadavg()[0]:.1f}"}))


def main() -> None:
    out = neuron_run(__doc__, __file__, child)
    if out is None:  # this was the child
        return
    for label, rows in out.items():
        if "skipped" in rows:
            print(f"=== {label}: skipped, {rows['skipped']}")
            continue
        print(f"\n=== {label}: {rows.pop('machine')}")
        print(f"{'case':<40}{'pool ms':>9}{'pthr ms':>9}{'pthr/pool':>10}")
        for case in ("forward instant", "forward expected", "forward+backward instant",
                     "forward+backward expected"):
            a, b = rows[f"{case}, pool"], rows[f"{case}, pthreads"]
            print(f"{case:<40}{a:9.2f}{b:9.2f}{b / a:10.2f}")
        print(f"{'clone':<40}{rows['clone']:9.2f}")
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
