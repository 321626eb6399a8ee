"""What every benchmark shares: interleaved timing, and running itself once per allocator setting.

This VM makes fresh allocations of 32 MiB or more slow (first-touch page faults), so each figure is
measured twice, in a child process with the default allocator and in one with glibc kept from
returning memory (:data:`NO_MMAP`), and no claim rests on page faults.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

NO_MMAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000"}
ALLOCATORS = (("default allocator", {}), ("MALLOC_MMAP_MAX_=0", NO_MMAP))


def interleaved(cases: dict, rounds: int, grad: bool = False) -> dict:
    """Median seconds of each case (a callable); every round runs each case once, in turn, after
    one warm-up call each."""
    times = {k: [] for k in cases}
    with torch.set_grad_enabled(grad):
        for f in cases.values():
            f()
        for _ in range(rounds):
            for k, f in cases.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def run_children(script: str, flags: list) -> dict:
    """Run ``script --child FLAGS`` under each allocator setting; ``{label: the JSON the child
    printed on its line starting with "JSON "}``."""
    out = {}
    for label, extra in ALLOCATORS:
        res = subprocess.run([sys.executable, os.path.abspath(script), "--child"] + flags,
                             env=dict(os.environ, **extra), capture_output=True, text=True,
                             check=True).stdout
        out[label] = json.loads(next(l for l in res.splitlines() if l.startswith("JSON "))[5:])
    return out


def neuron_run(doc: str, script: str, child):
    """The neuron benchmarks' command line (``--shape``, ``--repeats``, ``--threads``; ``doc``'s
    first line describes it): as a child, ``child(args)`` and ``None``; otherwise
    :func:`run_children` of ``script`` with the same flags, and its result."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--shape", type=int, nargs="+", default=[4, 32, 64, 32, 32])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return None
    return run_children(script, ["--shape", *map(str, args.shape), "--repeats",
                                 str(args.repeats), "--threads", str(args.threads)])
