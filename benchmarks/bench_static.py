"""The static-image pipeline's speed (issue 14): data loader, QAT training step, SNN evaluation.

    python benchmarks/bench_static.py [--rounds 5] [--batch 64] [--images 1024]

Runs itself twice, with the default glibc allocator and with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000``, and prints for each:

* the training loader of examples/cifar (CIFAR-100 pickles in the real layout written to a temporary
  folder; RandomCrop, flip, AutoAugment, ToTensor, Normalize, Cutout) in images/s, for 0 workers and
  for the default ``--workers``, and as a multiple of the QAT step's images/s (> 1: it keeps up);
* a QAT training step (forward, backward, SGD step, threshold clamp) of ResNet-20 (width 16, L = 8,
  32x32, the Table 2 net) as a multiple of its ReLU twin's (the floor);
* SNN evaluation at T = 4 and 8 (expected current per sample, instant current, and SpikingJelly's
  converter run for T single steps) as a multiple of the ReLU ANN's forward on the same batch.

Every group is timed interleaved in one process (each round runs each case once, in turn); the
figures are medians.
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_inference import relu_twin  # noqa: E402
from harness import NO_MMAP, interleaved  # noqa: E402
from sj_qvm import convert  # noqa: E402
from sj_qvm._compat import functional, sj_convert  # noqa: E402
from sj_qvm.app.static.data import (CIFAR100_SPEC, default_workers, loader_options,  # noqa: E402
                                    train_transform)
from sj_qvm.image_models import resnet20  # noqa: E402
from sj_qvm.qat import clamp_thresholds  # noqa: E402

L = 8


def write_cifar100(root: Path, n: int) -> None:
    """A CIFAR-100 release of ``n`` random training (and 10 test) images in the real layout."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, k in (("train", n), ("test", 10)):
        (base / name).write_bytes(pickle.dumps({b"fine_labels": rng.integers(0, 100, k).tolist(),
                                                b"data": rng.integers(0, 256, (k, 3072),
                                                                      dtype=np.uint8)}, 2))
    (base / "meta").write_bytes(pickle.dumps(
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, 2))


def loader_rate(root: Path, workers: int, batch: int) -> float:
    """Training images per second of one full pass (workers started before the clock)."""
    ds = CIFAR100_SPEC.make(root, True, train_transform(CIFAR100_SPEC, 32, 16))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                                         **loader_options(workers, torch.device("cpu")))
    it = iter(loader)
    next(it)  # workers up, first batch out
    t, seen = time.perf_counter(), 0
    for x, _ in it:
        seen += len(x)
    return seen / (time.perf_counter() - t)


def train_steps(batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    qat = resnet20(num_classes=100, levels=L, width=16)
    relu = relu_twin(qat)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))

    def step(model, clamp):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()

        def run():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if clamp:
                clamp_thresholds(model)
        return run
    return interleaved({"ReLU twin": step(relu, False), "QAT (QuantReLU)": step(qat, True)},
                       rounds, grad=True)


def snn_eval(batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    qat = resnet20(num_classes=100, levels=L, width=16, threshold=1.0).eval()
    relu = relu_twin(qat).eval()
    x = torch.randn(batch, 3, 32, 32)
    cases = {"ANN (ReLU)": lambda: relu(x), "QAT ANN (QuantReLU)": lambda: qat(x)}
    for T in (4, 8):
        x_seq = x.unsqueeze(0).expand(T, *x.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sj = sj_convert(relu, [(x, torch.zeros(batch, dtype=torch.long))],
                            mode="99.9%").eval()
        for current in ("expected", "instant"):
            snn = convert(qat, T, current, warn=False)
            cases[f"sj_qvm {current}, T={T}"] = (lambda s, xs: lambda: (functional.reset_net(s),
                                                                       s(xs)))(snn, x_seq)

        def sj_run(s=sj, T=T):
            functional.reset_net(s)
            out = 0
            for _ in range(T):
                out = out + s(x)
            return out
        cases[f"SJ converter, T={T}"] = sj_run
    return interleaved(cases, rounds)


def child(args) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    steps = train_steps(args.batch, args.rounds)
    step_rate = args.batch / steps["QAT (QuantReLU)"]
    print(f"QAT training step, ResNet-20 w16 L={L}, batch {args.batch}, 32x32:")
    for k, v in steps.items():
        print(f"  {k:<22} {1e3 * v:8.1f} ms  x{v / steps['ReLU twin']:.2f} of the ReLU twin")
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar100(Path(tmp), args.images)
        print(f"training loader (CIFAR-100 layout, A.4 augmentation), {args.images} images:")
        for w in sorted({0, default_workers()}):
            r = loader_rate(Path(tmp), w, args.batch)
            print(f"  --workers {w}: {r:8.0f} images/s  x{r / step_rate:.2f} of the QAT step's "
                  f"{step_rate:.0f} images/s")
    ev = snn_eval(args.batch, args.rounds)
    print(f"evaluation, batch {args.batch} (multiple of the ReLU ANN's forward):")
    for k, v in ev.items():
        print(f"  {k:<24} {1e3 * v:8.1f} ms  x{v / ev['ANN (ReLU)']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--one-allocator", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_allocator:
        child(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")
    for label, extra in (("default allocator", {}), ("MALLOC_MMAP_MAX_=0 "
                                                     "MALLOC_TRIM_THRESHOLD_=1000000000000", NO_MMAP)):
        print(f"\n== {label} ==", flush=True)
        subprocess.run([sys.executable, *sys.argv, "--one-allocator"],
                       env={**os.environ, **extra}, check=True)


if __name__ == "__main__":
    main()
