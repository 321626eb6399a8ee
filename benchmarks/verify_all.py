"""Run the compiled kernels' first-use check (sj_qvm.ops.verify) on every combination, and time it.

    python benchmarks/verify_all.py [--json out.json] [--repeats 5]

Combinations: the IF loop (forward and backward: dtype, current, firing rule, scalar or
per-channel θ and V0, Sigmoid and ATan under autograd), the rate kernel (per-sample layers) and
QuantReLU (forward and backward: dtype, rounding, scalar or per-channel γ), on the CPU build where
it is built and on the CUDA kernels where CuPy sees a GPU. Each check runs ``--repeats`` times
(the first verdict is kept; the time is the median), so the figure is the per-combination cost a
user pays once. Prints one line per path and a summary; ``--json`` writes every verdict and time.
Exit status 1 when a combination fails.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sj_qvm._compat import surrogate  # noqa: E402
from sj_qvm.ops import native, verify  # noqa: E402
from sj_qvm.ops.if_loop import check, dispatch, surrogates  # noqa: E402
from sj_qvm.ops.if_rate import dispatch as rate  # noqa: E402
from sj_qvm.ops.quant_relu import dispatch as quant  # noqa: E402

DTYPES = {"cpu": (torch.float32, torch.float64),
          "cupy": (torch.float32, torch.float16, torch.bfloat16)}


def combinations(path: str, device: str):
    sgs = [surrogates.snippet(surrogate.Sigmoid()), surrogates.snippet(surrogate.ATan())]
    for dtype, current, rule, form in itertools.product(
            DTYPES[path], ("instant", "expected"), ("floor", "round", "ceil", "v0"),
            ("scalar", "tensor")):
        c = check.Combination("forward", device, dtype, current, rule, form, form)
        yield c.key(), (lambda c=c: check.run(path, c))
        for sg in sgs:
            c = check.Combination("backward", device, dtype, current, rule, form, form, sg)
            yield c.key(), (lambda c=c: check.run(path, c))
        if current == "expected":
            c = check.Combination("forward", device, dtype, current, rule, form, form)
            yield ("if_rate",) + c.key()[1:], (lambda c=c: rate._check(path, c))
    if path == "cpu":
        for dtype, rounding, form, direction in itertools.product(
                DTYPES[path], ("floor", "round", "ceil"), ("scalar", "tensor"),
                ("forward", "backward")):
            key = ("quant_relu", direction, device, dtype, rounding, form)
            yield key, (lambda key=key: quant._check(key))


def run_path(path: str, device: str, repeats: int) -> list:
    rows = []
    for key, fn in combinations(path, device):
        times, verdict = [], None
        for i in range(repeats):
            verify._status.pop((path,) + key, None)
            start = time.perf_counter()
            why = verify.check(path, key, fn)
            times.append(time.perf_counter() - start)
            verdict = why if i == 0 else verdict
        rows.append({"path": path, "combination": verify.describe(key), "ok": verdict is None,
                     "why": verdict, "ms": 1e3 * statistics.median(times)})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows, skipped = [], {}
    if native.available():
        rows += run_path("cpu", "cpu", args.repeats)
    else:
        skipped["cpu"] = native.unavailable_reason()
    why = dispatch.unavailable_reason(torch.empty(1, device="cuda"), None, False) \
        if torch.cuda.is_available() else "no CUDA device"
    if why is None:
        rows += run_path("cupy", f"cuda:{torch.cuda.current_device()}", args.repeats)
    else:
        skipped["cupy"] = why
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    summary = {"device": device, "torch": torch.__version__, "skipped": skipped, "paths": {}}
    for path in ("cpu", "cupy"):
        mine = [r for r in rows if r["path"] == path]
        if mine:
            ms = [r["ms"] for r in mine]
            summary["paths"][path] = {
                "combinations": len(mine), "failed": sum(not r["ok"] for r in mine),
                "median_ms": statistics.median(ms), "max_ms": max(ms),
                "max_combination": max(mine, key=lambda r: r["ms"])["combination"]}
            print(f"{path}: {len(mine)} combinations, {summary['paths'][path]['failed']} failed; "
                  f"check time median {statistics.median(ms):.2f} ms, max {max(ms):.2f} ms "
                  f"({summary['paths'][path]['max_combination']})")
    for path, reason in skipped.items():
        print(f"{path}: not run: {reason}")
    for r in rows:
        if not r["ok"]:
            print(f"FAILED {r['path']} {r['combination']}: {r['why']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)
    return 1 if any(not r["ok"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
