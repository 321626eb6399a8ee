"""QVMIFNode vs SpikingJelly's IFNode(v_reset=None), multi-step, measured side by side in one process.

    python benchmarks/bench_neuron.py [--shape 4 32 64 32 32] [--repeats 15] [--threads 2]

Runs itself twice, with the default glibc allocator and with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000`` (no fresh page faults per >= 32 MiB
allocation), and prints for each the median time of SJ's node and of ours in both currents, with
the compiled CPU kernel (``sj_qvm.ops._cpu``) and with its torch fallback, the ratio SJ / ours
(> 1: ours is faster) and ours / a ``clone`` of the input (the memory bound). Training is timed
twice: a loss on the spikes, and one on the spikes and ``v_seq`` (``store_v_seq=True``).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sj_qvm import QVMIFNode  # noqa: E402
from sj_qvm._compat import SJ_VERSION, IFNode, functional  # noqa: E402
from sj_qvm.ops import native  # noqa: E402
from harness import neuron_run  # noqa: E402



def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


class Fallback:
    """Run a node with the compiled kernels switched off."""

    def __init__(self, node):
        self.node = node

    def __call__(self, x):
        with native.disabled():
            return self.node(x)


def child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(*args.shape) * 0.8
    nodes = {"SJ IFNode": IFNode(v_threshold=1.0, v_reset=None, step_mode="m")}
    for current in ("instant", "expected"):
        node = QVMIFNode(1.0, 0.0, current=current, step_mode="m")
        nodes[f"QVM {current}"] = node
        nodes[f"QVM {current} (torch fallback)"] = Fallback(node)
    # With store_v_seq and a loss on v_seq too (its gradient flows back through every V_t).
    nodes["SJ IFNode +v_seq"] = IFNode(v_threshold=1.0, v_reset=None, step_mode="m",
                                       store_v_seq=True)
    vseq_node = QVMIFNode(1.0, 0.0, step_mode="m", store_v_seq=True)
    nodes["QVM instant +v_seq"] = vseq_node
    nodes["QVM instant +v_seq (torch fallback)"] = Fallback(vseq_node)

    def forward(node):
        def run():
            functional.reset_net(getattr(node, "node", node))
            with torch.no_grad():
                node(x)
        return run

    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)

    def train_step(node):
        def run():
            module = getattr(node, "node", node)
            functional.reset_net(module)
            xg.grad = None
            loss = (node(xg) * g).sum()
            if getattr(module, "store_v_seq", False):
                loss = loss + (module.v_seq * g).sum()
            loss.backward()
        return run

    rows = {}
    # Interleave them so that machine noise hits all alike.
    for case, make, names in (("forward (no_grad)", forward, [k for k in nodes if "v_seq" not in k]),
                              ("forward+backward", train_step,
                               ["SJ IFNode", "QVM instant", "QVM expected"]),
                              ("forward+backward, loss on v_seq too", train_step,
                               ["SJ IFNode +v_seq", "QVM instant +v_seq",
                                "QVM instant +v_seq (torch fallback)"])):
        runs = {k: make(nodes[k]) for k in names} | {"clone": lambda: x.clone()}
        times = {k: [] for k in runs}
        for f in runs.values():
            f()
        for _ in range(args.repeats):
            for k, f in runs.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        rows[case] = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    rows["machine"] = (f"input {list(x.shape)} float32; torch {torch.__version__}, spikingjelly "
                       f"{SJ_VERSION}, {torch.get_num_threads()} threads, "
                       f"{platform.processor() or platform.machine()}, native kernels "
                       f"{'on' if native.available() else 'off'}, load {os.getloadavg()[0]:.1f}")
    print("JSON " + json.dumps(rows))


def main() -> None:
    out = neuron_run(__doc__, __file__, child)
    if out is None:  # this was the child
        return
    for label, rows in out.items():
        print(f"\n=== {label}: {rows['machine']}")
        for case in ("forward (no_grad)", "forward+backward", "forward+backward, loss on v_seq too"):
            r = rows[case]
            sj, clone = next(v for k, v in r.items() if k.startswith("SJ")), r["clone"]
            print(f"{case:<38}{'ms':>9}{'SJ/this':>9}{'x clone':>9}")
            for k, v in r.items():
                print(f"  {k:<36}{v:9.2f}{sj / v:9.2f}{v / clone:9.2f}")
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
