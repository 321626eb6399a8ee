"""The fused CUDA IF loop against the memory bound, our torch path and SpikingJelly's IFNode.

    python benchmarks/bench_cuda.py [--n 1M 16M 256M] [--t 4 8] [--dtype float32 bfloat16]
                                    [--case forward forward+backward] [--repeats 10]

One JSON line per case (input ``[T, N]``, v_init = 0, scalar theta, current="instant"):

* ``gbps``: bytes the kernels must move (each input read once, each output written once) over
  the median time. forward (inference): x in, spikes out, v out. forward+backward: x in; spikes,
  h (fp32) and v out; then grad_spikes and h in, grad_x out.
* ``ratio_copy``: gbps over a device-to-device ``copy_`` of a tensor the size of x (bytes read
  plus written) on the same GPU.
* ``ratio_torch``: our torch path's time (``QVMIFNode(backend="torch")``) over the kernels'.
* ``ratio_sj``: ``IFNode(v_reset=None, step_mode="m")`` of the installed SpikingJelly over ours.

Targets (issue "CuPy kernels"): forward ratio_copy >= 0.85 at large N, ratio_sj >= 2,
ratio_torch >= 4. Times are CUDA-event medians after warm-up; what a row could not measure (out of
memory, a launch error) is ``null``, with the error under ``errors`` in that row, and the run goes
on. Without CUDA it says so on stderr and exits 0.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys

import torch

SIZES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_n(text: str) -> int:
    text = text.strip().upper()
    return int(text[:-1]) * SIZES[text[-1]] if text[-1] in SIZES else int(text)


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def guarded(fn, repeats, errors: dict, what: str):
    """Median ms, or None when the call raises (out of memory, a launch error): the error goes
    into ``errors[what]`` for this row, and the run goes on to the next row."""
    try:
        return median_ms(fn, repeats)
    except Exception as e:  # noqa: BLE001 -- reported in the row, whatever it is
        errors[what] = f"{type(e).__name__}: {e}"
        return None
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def runner(node, x, g, case, functional):
    """One call of ``node`` on ``x`` (and its backward with upstream ``g``)."""
    if case == "forward":
        def run():
            functional.reset_net(node)
            with torch.no_grad():
                node(x)
    else:
        def run():
            functional.reset_net(node)
            x.grad = None
            node(x).backward(g)
    return run


def bytes_moved(case: str, T: int, N: int, size: int) -> int:
    if case == "forward":
        return T * N * 2 * size + 4 * N
    return T * N * (size + size + 4) + 4 * N + T * N * (size + 4 + size)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", nargs="+", default=["1M", "4M", "16M", "64M", "256M"])
    p.add_argument("--t", nargs="+", type=int, default=[4, 8])
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--case", nargs="+", default=["forward", "forward+backward"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true", help="time only the kernels and copy")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device here; nothing to measure "
              "(run it on a GPU machine, see benchmarks/gpu_check.sh)", file=sys.stderr)
        return 0
    from sj_qvm import QVMIFNode
    from sj_qvm._compat import SJ_VERSION, IFNode, functional
    from sj_qvm.ops.if_loop import dispatch
    from sj_qvm.ops.if_loop.cupy import LAUNCHES
    ok, why = dispatch.cupy_status()
    if not ok:
        print(f"bench_cuda: the kernels cannot run here: {why}", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    meta = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
            "cupy": why.split()[-1], "spikingjelly": SJ_VERSION}
    torch.manual_seed(0)
    for case in args.case:
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            size = torch.empty((), dtype=dtype).element_size()
            for T in args.t:
                for n_text in args.n:
                    N = parse_n(n_text)
                    row = dict(case=case, dtype=dtype_name, T=T, N=N, **meta)
                    try:
                        x = (torch.rand(T, N, device=dev) * 0.8).to(dtype)
                        g = torch.randn(T, N, device=dev).to(dtype)
                    except torch.cuda.OutOfMemoryError:
                        print(json.dumps(row | {"errors": {"inputs": "out of memory"}}),
                              flush=True)
                        continue
                    if case != "forward":
                        x.requires_grad_()
                    errors: dict = {}
                    ours = QVMIFNode(1.0, 0.0, step_mode="m", backend="cupy")
                    before = sum(LAUNCHES.values())
                    ms = guarded(runner(ours, x, g, case, functional), args.repeats, errors,
                                 "kernels")
                    if ms is not None and sum(LAUNCHES.values()) == before:
                        ms, errors["kernels"] = None, "the kernels did not run"
                    dst = torch.empty_like(x, requires_grad=False)
                    src = x.detach()
                    copy_ms = guarded(lambda d=dst, s=src: d.copy_(s), args.repeats, errors,
                                      "copy")
                    del dst
                    moved = bytes_moved(case, T, N, size)
                    copy_gbps = 2 * T * N * size / copy_ms / 1e6 if copy_ms else None
                    gbps = moved / ms / 1e6 if ms else None
                    row |= dict(ms=ms, bytes=moved, gbps=gbps, copy_gbps=copy_gbps,
                                ratio_copy=gbps / copy_gbps if gbps and copy_gbps else None)
                    if not args.no_baselines:
                        torch_node = QVMIFNode(1.0, 0.0, step_mode="m", backend="torch")
                        torch_ms = guarded(runner(torch_node, x, g, case, functional),
                                           max(3, args.repeats // 3), errors, "torch")
                        sj_ms = guarded(runner(IFNode(v_threshold=1.0, v_reset=None,
                                                      step_mode="m"), x, g, case, functional),
                                        max(3, args.repeats // 3), errors, "sj")
                        row |= dict(torch_ms=torch_ms, sj_ms=sj_ms,
                                    ratio_torch=torch_ms / ms if torch_ms and ms else None,
                                    ratio_sj=sj_ms / ms if sj_ms and ms else None)
                    if errors:
                        row["errors"] = errors
                    print(json.dumps(row), flush=True)
                    del x, g
                    gc.collect()
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
