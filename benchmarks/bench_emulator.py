"""The DVS emulator (`sj_qvm.datasets.emulate_dvs`): events/s, and its statistics beside CIFAR10-DVS's.

Two image sets: 32x32 gray crops of scikit-learn's two sample photographs (real photographs at
CIFAR-10's size, the set the defaults are fitted on), and scikit-learn's 8x8 digits. For each it
prints the events per recording (mean, min, max), the ON fraction, the recording length
``t[-1] - t[0]``, and the emulation speed in events/s: in this process (wall clock, the median of
``--rounds``; also per second of this process's CPU time, less disturbed by other jobs on a
shared machine), and with ``--workers`` processes emulating a batch at once (wall clock, total events
over total time), next to CIFAR10-DVS's published figures (205,071 events and 1,298,444 µs per
recording on average; no ON/OFF figure was found). Each figure is measured with the default
allocator and with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000``.

``--release DIR`` also times the pipeline's emulated digits release (``EMULATED_DIGITS``: 2,000
recordings with ``EMULATED_SETTINGS``, in ``--workers`` processes) and the integration of all of
them into T = 4 frames, written under DIR (which must not exist).

    PYTHONPATH=. python benchmarks/bench_emulator.py [--images 20] [--workers 2] [--release DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run_children  # noqa: E402

PUBLISHED = {"events": 205_071, "length_us": 1_298_444}


def photo_crops(n: int, seed: int = 0) -> list:
    """``n`` 32x32 gray crops (96x96 pixels averaged 3x3) of scikit-learn's sample photographs."""
    from sklearn.datasets import load_sample_images
    photos = [image.mean(axis=2) / 255.0 for image in load_sample_images().images]
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(n):
        photo = photos[k % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
        crops.append(photo[y:y + 96, x:x + 96].reshape(32, 3, 32, 3).mean(axis=(1, 3)))
    return crops


def digit_images(n: int) -> list:
    from sj_qvm.datasets.image_sources import load_digit_images
    return list(load_digit_images()[0][:n])


def _emulate(image, seed, settings):
    from sj_qvm.datasets import emulate_dvs
    events = emulate_dvs(image, seed=seed, **settings)
    return len(events), int(events["p"].sum()), int(events["t"][-1] - events["t"][0]) if len(events) else 0


def measure(images: list, settings: dict, rounds: int, workers: int) -> dict:
    stats = [_emulate(image, i, settings) for i, image in enumerate(images)]
    counts = np.array([s[0] for s in stats])
    walls, cpus = [], []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        for i, image in enumerate(images):
            _emulate(image, i, settings)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_emulate, images[:workers], range(workers), [settings] * workers))  # warm up
        start = time.perf_counter()
        list(pool.map(_emulate, images, range(len(images)), [settings] * len(images)))
        parallel = time.perf_counter() - start
    return {"events": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max()),
            "on": sum(s[1] for s in stats) / max(1, counts.sum()),
            "length_us": float(np.mean([s[2] for s in stats])),
            "one_process": counts.sum() / statistics.median(walls),
            "per_cpu_second": counts.sum() / statistics.median(cpus),
            "ms_per_image": 1e3 * statistics.median(walls) / len(images),
            "parallel": counts.sum() / parallel}


def child(args) -> None:
    from sj_qvm.app.registry import EMULATED_SETTINGS
    out = {"photos, defaults": measure(photo_crops(args.images), {}, args.rounds, args.workers),
           "digits, defaults": measure(digit_images(args.images), {}, args.rounds, args.workers),
           "digits, EMULATED_SETTINGS": measure(digit_images(args.images), EMULATED_SETTINGS,
                                                args.rounds, args.workers)}
    print("JSON " + json.dumps(out))


def release(root: Path, workers: int) -> None:
    from sj_qvm.app.registry import EMULATED_DIGITS
    from sj_qvm.datasets import CIFAR10DVS
    if root.exists():
        raise SystemExit(f"{root} exists; give a new folder")
    start = time.perf_counter()
    EMULATED_DIGITS.write_synthetic(root, False, 0)
    written = time.perf_counter() - start
    files = list(root.rglob("*.aedat"))
    size = sum(f.stat().st_size for f in files)
    start = time.perf_counter()
    lengths = [len(CIFAR10DVS(root, train=train, frames_number=4, num_workers=workers))
               for train in (True, False)]
    framed = time.perf_counter() - start
    print(f"emulated digits release: {len(files)} recordings ({lengths[0]} train, {lengths[1]} test), "
          f"{(size - 0) / 8 / len(files):,.0f} events each on average (8 bytes per event), "
          f"{size / 2**20:.0f} MiB; written in {written:.1f} s with {workers} workers, integrated "
          f"into T = 4 frames in {framed:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20, help="images per set")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds in one process")
    p.add_argument("--workers", type=int, default=2, help="processes for the parallel figure")
    p.add_argument("--release", type=Path, help="also time the emulated digits release, here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results = run_children(__file__, ["--images", str(args.images), "--rounds", str(args.rounds),
                                      "--workers", str(args.workers)])
    print(f"CIFAR10-DVS (published): {PUBLISHED['events']:,} events, length "
          f"{PUBLISHED['length_us']:,} µs per recording; ON fraction: no figure found")
    for allocator, sets in results.items():
        print(f"\n{allocator}")
        print(f"{'images, settings':<28}{'events (min..max)':>26}{'ON':>7}{'length µs':>11}"
              f"{'1 process':>13}{'per CPU s':>13}{'ms/image':>10}{f'{args.workers} processes':>15}")
        for name, r in sets.items():
            print(f"{name:<28}{r['events']:>12,.0f} ({r['min']:,}..{r['max']:,})"
                  f"{r['on']:>7.3f}{r['length_us']:>11,.0f}{r['one_process'] / 1e6:>9.2f} M/s"
                  f"{r['per_cpu_second'] / 1e6:>9.2f} M/s"
                  f"{r['ms_per_image']:>10.1f}{r['parallel'] / 1e6:>11.2f} M/s")
    if args.release is not None:
        release(args.release, args.workers)


if __name__ == "__main__":
    main()
