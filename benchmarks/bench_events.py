"""Event pipeline speed against SpikingJelly, in one run.

1. read_aedat31 vs SpikingJelly's load_aedat_v3 on a >= 1M-event AEDAT 3.1 file written to a
   temporary folder (outputs checked equal).
2. events_to_frames vs SpikingJelly's integrate_events_by_fixed_frames_number, both splits,
   T = 4 and 16, on one DVSGesture-sized sample (outputs checked identical). Timed in alternating
   pairs (the ratio is the median of per-pair ratios, robust to this machine's drift), for the C
   counter (with the threads events_to_frames picks, and with one) and for the numpy path it
   falls back to without a compiler.
3. Frames per second of a full DVSGesture-shaped preprocessing run (synthetic release: read,
   slice, cache events, integrate, cache frames), with worker processes.
4. With --recording FILE: item 2 on a real DVS128 recording as well.

Items 1 and 2 also print a floor, what any reader or integrator must at least do: for the reader
a read and copy of the file's bytes, for the integrator one read of the x, y and p columns. The whole run is made twice, interleaved in one parent: with the
default allocator and with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000`` (fresh
>= 32 MiB allocations are slow on some VMs); each block of output names its setting.

Usage: python benchmarks/bench_events.py [--events 1000000] [--repeats 5] [--recording FILE ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sj_qvm.datasets import DVSGesture, events_to_frames, read_aedat2, read_aedat31
from sj_qvm.datasets import frames as frames_module
from sj_qvm.datasets.aedat import EVENT_DTYPE, write_aedat31
from sj_qvm.datasets.synthetic import write_dvs_gesture


def sj_functions():
    """SpikingJelly's reader and integrator, through the tests' one import fallback."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import sj_reference  # noqa: PLC0415 -- tests/ joins the path only here
    found = (sj_reference.function("load_aedat_v3"),
             sj_reference.function("integrate_events_by_fixed_frames_number"))
    if None in found:
        raise SystemExit("bench_events compares against SpikingJelly's dataset functions, which "
                         "this SpikingJelly does not have")
    return found


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


WIDTH, HEIGHT, _ = DVSGesture.sensor_size
ALLOCATORS = {"default allocator": {},
              "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000":
                  {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000"}}


def gesture_like_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, n * 6, n))  # ~170k events/s, as DVS128 Gesture
    events["x"] = rng.integers(0, WIDTH, n)
    events["y"] = rng.integers(0, HEIGHT, n)
    events["p"] = rng.integers(0, 2, n)
    return events


def bench_reader(folder: Path, n: int, repeats: int, load_aedat_v3) -> None:
    events = gesture_like_events(n)
    path = folder / "big.aedat"
    write_aedat31(path, events, packet_events=4096)
    ours = read_aedat31(path)
    theirs = load_aedat_v3(str(path))
    assert np.array_equal(ours, events) and all(np.array_equal(ours[k], theirs[k]) for k in "txyp")
    raw = path.read_bytes()
    fast = median_seconds(lambda: read_aedat31(path), repeats)
    slow = median_seconds(lambda: load_aedat_v3(str(path)), max(1, repeats // 2))
    floor = median_seconds(lambda: np.frombuffer(path.read_bytes(), np.uint8).copy(), repeats)
    print(f"read_aedat31      {n:>9,} events  {fast * 1e3:8.1f} ms   "
          f"SJ load_aedat_v3 {slow * 1e3:8.1f} ms   ratio {slow / fast:6.1f}x   "
          f"floor (read + copy {len(raw) / 1e6:.0f} MB) {floor * 1e3:6.1f} ms = ours / floor {fast / floor:5.2f}x")


def paired_seconds(ours, theirs, repeats: int) -> tuple[float, float, float]:
    """Median seconds of each, and the median of per-pair ratios theirs / ours, alternating order."""
    ours(), theirs()
    fast, slow, ratios = [], [], []
    for repeat in range(repeats):
        pair = {}
        for function in (ours, theirs) if repeat % 2 == 0 else (theirs, ours):
            start = time.perf_counter()
            function()
            pair[function] = time.perf_counter() - start
        fast.append(pair[ours])
        slow.append(pair[theirs])
        ratios.append(pair[theirs] / pair[ours])
    return statistics.median(fast), statistics.median(slow), statistics.median(ratios)


def numpy_events_to_frames(*args):
    native, frames_module._native = frames_module._native, None
    try:
        return events_to_frames(*args)
    finally:
        frames_module._native = native


def one_thread_events_to_frames(*args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return events_to_frames(*args)
    finally:
        torch.set_num_threads(threads)


def read_columns_once(events: np.ndarray) -> int:
    """The floor of integration: one read of the x, y and p columns, which any counter needs."""
    return int(events["x"].sum()) + int(events["y"].sum()) + int(events["p"].sum())


def read_recording(path: Path) -> np.ndarray:
    """A real recording, by its format line: AEDAT 3.1 (DVS128 Gesture) or 2.0 (DVS128, jAER)."""
    with open(path, "rb") as file:
        version = file.readline()
    return read_aedat31(path) if version.startswith(b"#!AER-DAT3") else read_aedat2(path)


def bench_frames(events: np.ndarray, repeats: int, integrate, label: str = "") -> None:
    n = len(events)
    columns = {k: events[k] for k in "txyp"}
    paths = [("numpy", numpy_events_to_frames)]
    if frames_module.NATIVE:
        threads = max(1, min(torch.get_num_threads(), 16, n // frames_module._EVENTS_PER_THREAD))
        paths.insert(0, (f"C x{threads}", events_to_frames))
        if threads > 1:
            paths.insert(1, ("C x1", one_thread_events_to_frames))
    for split_by in ("number", "time"):
        for frames_number in (4, 16):
            reference = integrate(columns, split_by, frames_number, HEIGHT, WIDTH)
            for name, function in paths:
                assert np.array_equal(function(events, frames_number, split_by), reference)
                fast, slow, ratio = paired_seconds(
                    lambda: function(events, frames_number, split_by),
                    lambda: integrate(columns, split_by, frames_number, HEIGHT, WIDTH),
                    repeats,
                )
                _, floor, over_floor = paired_seconds(lambda: function(events, frames_number, split_by),
                                                      lambda: read_columns_once(events), repeats)
                print(f"events_to_frames  {n:>9,} events  split_by={split_by:6s} T={frames_number:<3d}"
                      f"{name:6s} {fast * 1e3:7.2f} ms   SJ {slow * 1e3:7.2f} ms   ratio {ratio:5.2f}x   "
                      f"floor (read x, y, p) {floor * 1e3:6.2f} ms = ours / floor {1 / over_floor:5.2f}x{label}")


def bench_preprocessing(folder: Path, workers: int) -> None:
    start = time.perf_counter()
    root = write_dvs_gesture(folder / "release", users=tuple(range(1, 9)) + (24, 25),
                             lightings=("fluorescent", "led", "natural"), events_per_sample=20_000)
    written = time.perf_counter() - start
    start = time.perf_counter()
    train = DVSGesture(root, train=True, frames_number=16, num_workers=workers)
    test = DVSGesture(root, train=False, frames_number=16, num_workers=workers)
    seconds = time.perf_counter() - start
    samples = len(train) + len(test)
    frames = samples * 16
    megabytes = sum(p.stat().st_size for p in (root / "DvsGesture").glob("*.aedat")) / 1e6
    print(f"preprocessing     {samples} samples ({megabytes:.0f} MB AEDAT 3.1, written in {written:.1f} s), "
          f"T=16, {workers} workers: {seconds:.2f} s = {frames / seconds:,.0f} frames/s "
          f"({samples / seconds:.0f} samples/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--frame-events", type=int, default=300_000, help="events in one sample")
    parser.add_argument("--repeats", type=int, default=5, help="reader repeats")
    parser.add_argument("--frame-repeats", type=int, default=40, help="events_to_frames timing pairs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--recording", type=Path, action="append", default=[],
                        help="a real DVS128 AEDAT 2.0 or 3.1 file to time events_to_frames on too (repeatable)")
    parser.add_argument("--one-allocator", action="store_true",
                        help="run once under the current environment (what the two child runs do)")
    args = parser.parse_args()
    if not args.one_allocator:
        for setting, variables in ALLOCATORS.items():
            print(f"== {setting}", flush=True)
            subprocess.run([sys.executable, *sys.argv, "--one-allocator"], env={**os.environ, **variables},
                           check=True)
        return
    load_aedat_v3, integrate = sj_functions()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_reader(folder, args.events, args.repeats, load_aedat_v3)
        bench_frames(gesture_like_events(args.frame_events, seed=1), args.frame_repeats, integrate)
        bench_frames(gesture_like_events(args.events, seed=1), args.frame_repeats, integrate)
        for recording in args.recording:
            bench_frames(read_recording(recording), args.frame_repeats, integrate, f"   {recording.name}")
        bench_preprocessing(folder, args.workers)


if __name__ == "__main__":
    main()
