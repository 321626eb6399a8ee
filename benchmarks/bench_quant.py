"""QuantReLU against nn.ReLU: a QAT training step, eval inference, and the bare op (issue 15).

    python benchmarks/bench_quant.py [--rounds 9] [--threads 1]

Runs itself twice, with the default glibc allocator and with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000`` (fresh >= 32 MiB allocations are slow
page faults on some VMs), and prints for each, as medians of interleaved rounds in one process:

* a QAT training step (SGD, cross-entropy) of the DVS ``vgg`` (demo settings: width 8, 2x64x64,
  L = 4, per-channel gamma), batch 16: the ReLU twin, QuantReLU (the compiled kernels, AVX2
  build where the CPU has it), the same with the baseline SSE2 build, with the kernels off (the
  torch ops of ``ops/quant_relu/torch.py``), and the STE chain of autograd ops (the twin);
* eval inference, batch 64: the DVS ``vgg`` and SpikingJelly's sample MNIST CNN, each QuantReLU
  net against its ReLU twin;
* the bare op on ``[64, 8, 64, 64]`` float32 (per-channel gamma): forward (no grad) against
  ``torch.relu`` and a ``clone``, and backward against ReLU's ``threshold_backward``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import interleaved, run_children  # noqa: E402
from bench_inference import L, _ste_copy, machine, models, relu_twin, swap_activations  # noqa: E402
from sj_qvm.models import vgg  # noqa: E402
from sj_qvm.ops import native  # noqa: E402
from sj_qvm.ops.quant_relu import quant_relu  # noqa: E402


def with_build(f, simd=None, enabled=True):
    """``f`` run with the kernels' vector build ``simd`` (None: as is) or the kernels off."""
    def run():
        saved = native.simd() if simd is not None else None
        if simd is not None:
            native.simd(simd)
        try:
            with contextlib.nullcontext() if enabled else native.disabled():
                return f()
        finally:
            if saved is not None:
                native.simd(saved)
    return run


def train_cases() -> dict:
    torch.manual_seed(0)
    qat = vgg(levels=L, width=8).train()
    nets = {"ReLU twin": relu_twin(qat).train(), "QuantReLU": qat,
            "QuantReLU (STE chain, twin)": swap_activations(qat, _ste_copy).train()}
    x, y = torch.rand(16, 2, 64, 64) * 2, torch.randint(0, 11, (16,))
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-3) for k, n in nets.items()}

    def step(k):
        def run():
            opts[k].zero_grad()
            nn.functional.cross_entropy(nets[k](x), y).backward()
            opts[k].step()
        return run
    cases = {k: step(k) for k in nets}
    if native.available():
        cases["QuantReLU (baseline SSE2 build)"] = with_build(step("QuantReLU"), simd=0)
        cases["QuantReLU (kernels off: torch ops)"] = with_build(step("QuantReLU"), enabled=False)
    return cases


def eval_cases(batch: int) -> dict:
    cases = {}
    for name, (relu_ann, qat_ann, x) in models(batch).items():
        cases[f"{name}: ReLU twin"] = (lambda m, x: lambda: m(x))(relu_ann, x)
        cases[f"{name}: QuantReLU"] = (lambda m, x: lambda: m(x))(qat_ann, x)
    return cases


def op_cases() -> dict:
    x = torch.randn(64, 8, 64, 64) * 2
    gamma = (torch.rand(8) + 1).view(1, 8, 1, 1)
    g = torch.randn_like(x)
    xg, gg = x.clone().requires_grad_(), gamma.clone().requires_grad_()

    def backward(f):
        def run():
            xg.grad = gg.grad = None
            f().backward(g)
        return run
    fwd = {"forward: clone": lambda: x.clone(), "forward: torch.relu": lambda: torch.relu(x),
           "forward: QuantReLU": lambda: quant_relu(x, gamma, L, "round")}
    bwd = {"backward: threshold_backward (ReLU)":
           lambda: torch.ops.aten.threshold_backward(g, x, 0),
           "forward+backward: relu": backward(lambda: torch.relu(xg)),
           "forward+backward: QuantReLU (x and gamma)": backward(lambda: quant_relu(xg, gg, L, "round"))}
    return fwd, bwd


def child(args) -> None:
    torch.set_num_threads(args.threads)
    res = {"machine": machine(), "simd": native.simd() if native.available() else None}
    res["train"] = interleaved(train_cases(), args.rounds, grad=True)
    res["eval"] = interleaved(eval_cases(args.batch), args.rounds, grad=False)
    fwd, bwd = op_cases()
    res["op"] = interleaved(fwd, args.rounds, grad=False)
    res["op"].update(interleaved(bwd, args.rounds, grad=True))
    print("JSON " + json.dumps(res))


def report(label: str, res: dict) -> None:
    print(f"\n=== {label} ({res['machine']}, simd level {res['simd']})")
    tr = res["train"]
    print("\nQAT training step, DVS vgg, batch 16 (x the ReLU twin's):")
    for k, v in tr.items():
        print(f"  {k:<40}{1e3 * v:9.2f} ms {v / tr['ReLU twin']:6.2f}x")
    print("\nEval inference, batch 64 (x the ReLU twin's):")
    ev = res["eval"]
    for k, v in ev.items():
        twin = ev[k.rsplit(": ", 1)[0] + ": ReLU twin"]
        print(f"  {k:<48}{1e3 * v:9.2f} ms {v / twin:6.2f}x")
    op = res["op"]
    print("\nThe op, [64, 8, 64, 64] float32 (x torch.relu's forward | x clone's):")
    for k, v in op.items():
        print(f"  {k:<48}{1e3 * v:9.2f} ms {v / op['forward: torch.relu']:6.2f}x "
              f"{v / op['forward: clone']:6.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    flags = ["--rounds", str(args.rounds), "--batch", str(args.batch), "--threads",
             str(args.threads)]
    all_res = run_children(__file__, flags)
    for label, res in all_res.items():
        report(label, res)
    print("\nJSON " + json.dumps(all_res))


if __name__ == "__main__":
    main()
