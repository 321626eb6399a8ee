"""The DVS pipeline shared by examples/dvs_gesture and examples/cifar10_dvs: data, QAT, convert, evaluate.

Inputs. A sample is ``frames: [T, 2, H, W]`` event counts (SpikingJelly's integration, split by
event number). The ANN sees the time-averaged frame ``frames.mean(0)``; the SNN sees the T frames
as its input current sequence, so in expected mode its first layer receives exactly the ANN's
input. To run the SNN at another T', the events are integrated into T' frames and scaled by T'/T,
which keeps their mean (the expected current) equal to the ANN's input.

Augmentation (training only, the same for all T frames of a sample): a random translation of up to
1/8 of the frame size with zero fill, plus a random horizontal flip for CIFAR10-DVS (not for
gestures, whose classes include left/right pairs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from . import _compat
from .convert import convert
from .models import ARCHS, build_model

__all__ = ["DatasetSpec", "build_parser", "run", "main", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the file is left as it is."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    num_classes: int
    flip: bool
    make: Callable            # (root, train, frames_number) -> Dataset of (frames, label)
    write_synthetic: Callable  # (root, tiny: bool, seed) -> None; writes the release at root once
    paper_accuracy: float
    real_data_help: str


# -- distributed --------------------------------------------------------------------------------
def _setup_distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world


# -- data ---------------------------------------------------------------------------------------
class Frames(torch.utils.data.Dataset):
    """Wraps a dataset of ``(frames [T, 2, 128, 128], label)``: downsampling, scaling, augmentation.

    Items are ``(frames [T, 2, size, size] float32, label)``. Downsampling sums counts over
    ``k x k`` blocks, so ``frames.sum()`` is kept.
    """

    def __init__(self, base, size: int, scale: float = 1.0, train: bool = False, flip: bool = False):
        self.base, self.size, self.scale, self.train, self.flip = base, size, scale, train, flip
        self._cache: dict = {}

    def __len__(self):
        return len(self.base)

    def _load(self, i):
        if i not in self._cache:
            frames, label = self.base[i]
            frames = torch.as_tensor(frames, dtype=torch.float32)
            k = frames.shape[-1] // self.size
            if k > 1:
                frames = F.avg_pool2d(frames, k) * (k * k)
            self._cache[i] = (frames * self.scale, int(label))
        return self._cache[i]

    def __getitem__(self, i):
        frames, label = self._load(i)
        if self.train:
            frames = augment(frames, self.flip)
        return frames, label


def augment(frames: torch.Tensor, flip: bool) -> torch.Tensor:
    """Random translation (zero fill, up to size/8) and optional h-flip of ``[T, C, H, W]``."""
    H, W = frames.shape[-2:]
    m = max(1, H // 8)
    dy, dx = (int(v) for v in torch.randint(-m, m + 1, (2,)))
    out = torch.zeros_like(frames)
    ys, yd = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
    xs, xd = slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx))
    out[..., yd, xd] = frames[..., ys, xs]
    if flip and torch.rand(()) < 0.5:
        out = out.flip(-1)
    return out


def _to_time_major(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, *] -> [T, B, *]``."""
    return frames.transpose(0, 1).contiguous()


# -- checkpoints --------------------------------------------------------------------------------
def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, garbage, wrong pickle: all mean the same here
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); it was "
                              "left untouched. Delete it to start afresh, or restore a good copy.") from e
    if not isinstance(ckpt, dict) or not {"epoch", "model", "optimizer"} <= set(ckpt):
        raise CheckpointError(f"checkpoint {path} is not an sj-qvm training checkpoint (keys "
                              f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}); "
                              "it was left untouched")
    return ckpt


# -- the job ------------------------------------------------------------------------------------
def build_parser(spec: DatasetSpec, prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=f"QVM on {spec.title}: QAT an ANN on event frames, convert it to an "
        "SNN and evaluate it at T = 1, 2, 4, 8, 16 in both current modes.",
        epilog=spec.real_data_help, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="the real release (see below); without it an offline "
                   "synthetic release in the real file formats is written and used")
    p.add_argument("--synthetic", action="store_true", help="use the offline synthetic release "
                   "(the default when --root is not given)")
    p.add_argument("--tiny", action="store_true", help="a very small synthetic release (tests)")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/synthetic"),
                   help="where the synthetic release is written (default runs/synthetic)")
    p.add_argument("--out", type=Path, default=Path("runs") / spec.name, help="output folder")
    p.add_argument("--frames", type=int, default=4, help="T frames per sample (default 4)")
    p.add_argument("--levels", type=int, default=4, help="quantization levels L (default 4)")
    p.add_argument("--rounding", choices=("floor", "round", "ceil"), default="round")
    p.add_argument("--size", type=int, default=128, choices=(32, 64, 128),
                   help="frame size after sum-pooling (64 for CPU runs)")
    p.add_argument("--arch", choices=ARCHS, default="resnet18")
    p.add_argument("--width", type=int, default=None, help="base width (resnet18: 64, vgg: 16)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--paper", action="store_true", help="the paper's hyper-parameters: resnet18, "
                   "SGD lr 0.1, cosine, weight decay 5e-4, 300 epochs, T = L = 4")
    p.add_argument("--eval-time-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _resolve(args, spec: DatasetSpec):
    if args.paper:
        args.arch, args.optimizer, args.lr, args.weight_decay = "resnet18", "sgd", 0.1, 5e-4
        args.epochs, args.frames, args.levels = 300, 4, 4
    if args.width is None:
        args.width = 64 if args.arch == "resnet18" else 16
    for name in ("frames", "levels", "epochs", "batch_size", "width"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.frames != args.levels:
        warnings.warn(f"--frames {args.frames} != --levels {args.levels}: the SNN runs T = "
                      f"{args.frames} frames, and exactness needs T = L", stacklevel=2)
    return args


def _release_root(args, spec: DatasetSpec, rank: int) -> Path:
    """``--root``, or the synthetic release (written once, by rank 0, idempotently)."""
    if args.root is not None:
        return Path(args.root)
    root = Path(args.cache_dir) / (spec.name + ("_tiny" if args.tiny else ""))
    if rank == 0:
        spec.write_synthetic(root, args.tiny, args.seed)
    if dist.is_initialized():
        dist.barrier()
    return root


def _evaluate_ann(model, loader, device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for frames, y in loader:
            out = model(frames.to(device).mean(1))
            correct += (out.argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / max(1, total)


def _evaluate_snn(snn, loader, device) -> float:
    correct = total = 0
    with torch.no_grad():
        for frames, y in loader:
            _compat.reset_net(snn)
            out = snn(_to_time_major(frames.to(device))).mean(0)
            correct += (out.argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / max(1, total)


def run(args, spec: DatasetSpec) -> dict:
    """Train (or resume), convert, evaluate and report; returns the results dict (rank 0)."""
    from tqdm.auto import tqdm
    args = _resolve(args, spec)
    rank, world = _setup_distributed()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    root = _release_root(args, spec, rank)
    # Rank 0 preprocesses into the cache first; the others then only read it.
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            train_base = spec.make(root, True, args.frames)
            test_base = spec.make(root, False, args.frames)
        if dist.is_initialized():
            dist.barrier()
    train_ds = Frames(train_base, args.size, train=True, flip=spec.flip)
    test_ds = Frames(test_base, args.size)

    torch.manual_seed(args.seed)
    model = build_model(args.arch, in_channels=2, num_classes=spec.num_classes, levels=args.levels,
                        rounding=args.rounding, width=args.width).to(device)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                              weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    start = 0
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start = ckpt["epoch"] + 1
        if rank == 0:
            print(f"resumed from {ckpt_path} after epoch {ckpt['epoch'] + 1}")
    net = model
    if world > 1:
        if device.type == "cuda":  # batch statistics over all processes (CUDA only in torch)
            net = model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = (torch.utils.data.distributed.DistributedSampler(train_ds, world, rank, shuffle=True,
                                                               seed=args.seed) if world > 1 else None)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size)
    amp = device.type == "cuda" and not args.no_amp
    loss_fn = nn.CrossEntropyLoss()
    log_path = out / "log.jsonl"
    for epoch in range(start, args.epochs):
        # Every epoch's randomness (shuffle, augmentation, dropout) is a function of
        # (seed, epoch), so a resumed run repeats exactly what an uninterrupted one does.
        torch.manual_seed(args.seed * 1000 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
            generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        net.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False,
                   disable=args.quiet or rank != 0)
        for frames, y in bar:
            x, y = frames.to(device).mean(1), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(x)
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        sched.step()
        if rank == 0:
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen),
                   "train_acc": correct / max(1, seen), "test_acc": _evaluate_ann(model, test_loader, device),
                   "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            print(json.dumps(row), flush=True)
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            save_atomic({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "args": vars(args) | {"root": str(root)}},
                        ckpt_path)
        if dist.is_initialized():
            dist.barrier()
    if rank != 0:
        dist.destroy_process_group()
        return {}
    results = _convert_and_report(model.eval(), args, spec, root, test_ds, device)
    if dist.is_initialized():
        dist.destroy_process_group()
    return results


def _convert_and_report(ann, args, spec, root, test_ds, device) -> dict:
    from tqdm.auto import tqdm

    from . import analysis
    out = Path(args.out)
    L = args.levels
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size)
    ann_acc = _evaluate_ann(ann, test_loader, device)
    snn_acc: dict = {"instant": {}, "expected": {}}
    Ts = sorted(set(args.eval_time_steps) | {args.frames})
    for T in tqdm(Ts, desc="SNN over T", disable=args.quiet):
        if T == args.frames:
            ds = test_ds
        else:  # integrate the events into T frames, scaled so their mean is the ANN's input
            ds = Frames(spec.make(root, False, T), args.size, scale=T / args.frames)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size)
        for current in ("instant", "expected"):
            snn = convert(ann, time_steps=T, current=current, warn=False).to(device)
            snn_acc[current][T] = _evaluate_snn(snn, loader, device)

    # Per-layer report on (up to) 64 test samples at T = frames, instant and expected side by side.
    frames = torch.stack([test_ds[i][0] for i in range(min(64, len(test_ds)))]).to(device)
    snn = convert(ann, time_steps=args.frames, current="expected", warn=False).to(device)
    report = analysis.conversion_report(ann, snn, _to_time_major(frames), sequence=True)
    exp = report.rows_by_current["expected"]
    results = {
        "dataset": spec.name, "synthetic": args.root is None, "arch": args.arch, "width": args.width,
        "levels": L, "rounding": args.rounding, "frames": args.frames, "size": args.size,
        "epochs": args.epochs, "test_samples": len(test_ds),
        "ann_accuracy": ann_acc, "snn_accuracy": {c: {str(T): a for T, a in v.items()}
                                                  for c, v in snn_acc.items()},
        "mismatched_neurons": sum(r.mismatched for r in exp),
        "report_neurons": sum(r.neurons for r in exp) * report.batch_size,
        "energy": {c: report.energy(c) for c in report.rows_by_current},
        "report": {c: [dataclasses.asdict(r) for r in rows]
                   for c, rows in report.rows_by_current.items()},
    }
    with open(out / "results.json", "w") as f:
        json.dump(results, f, indent=2)
    (out / "conversion_report.md").write_text(report.to_markdown())
    title = f"{spec.title}{' (synthetic)' if args.root is None else ''}, L = {L}"
    report.plot(out / "conversion_report.png", title=f"{title}: per-layer unevenness error")
    analysis.plot_accuracy_vs_time_steps({"ann": ann_acc, "snn": snn_acc},
                                         out / "accuracy_vs_T.png", levels=L, title=title)
    print(format_summary(results))
    return results


def format_summary(res: dict) -> str:
    L = res["levels"]
    Ts = sorted(int(T) for T in res["snn_accuracy"]["expected"])
    lines = [f"{res['dataset']}{' (synthetic)' if res['synthetic'] else ''}: {res['arch']}, "
             f"L = {L}, {res['test_samples']} test samples",
             f"ANN accuracy            {100 * res['ann_accuracy']:6.2f}%",
             "SNN accuracy       " + "".join(f"{'T=' + str(T):>9}" for T in Ts)]
    for c in ("instant", "expected"):
        lines.append(f"  {c:<17}" + "".join(f"{100 * res['snn_accuracy'][c][str(T)]:8.2f}%" for T in Ts))
    lines.append(f"neurons with N != M at T = {res['frames']} (expected): {res['mismatched_neurons']} "
                 f"of {res['report_neurons']}")
    e = res["energy"]["expected"]
    lines.append(f"energy per sample, SNN / ANN: {e['snn_over_ann']:.3f} ({e['snn_pj'] / 1e6:.3g} uJ "
                 f"vs {e['ann_pj'] / 1e6:.3g} uJ; 45 nm, 0.9 pJ/AC, 4.6 pJ/MAC)")
    return "\n".join(lines)


def check_exact(res: dict) -> bool:
    """True when SNN accuracy at T = L (expected) equals the ANN's and no neuron mismatches."""
    if res["frames"] != res["levels"]:
        return True  # nothing promised
    snn = res["snn_accuracy"]["expected"][str(res["levels"])]
    return snn == res["ann_accuracy"] and res["mismatched_neurons"] == 0


def main(spec: DatasetSpec, argv=None, prog: Optional[str] = None) -> int:
    args = build_parser(spec, prog).parse_args(argv)
    try:
        res = run(args, spec)
    except (FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not res:
        return 0
    if check_exact(res):
        if res["frames"] == res["levels"]:
            print(f"exact: SNN accuracy at T = L = {res['levels']} (expected current) equals the "
                  "ANN's, and every neuron's spike count equals its ANN level")
        return 0
    print(f"ERROR: not exact at T = L = {res['levels']} in expected mode: SNN "
          f"{res['snn_accuracy']['expected'][str(res['levels'])]:.4f} vs ANN "
          f"{res['ann_accuracy']:.4f}, {res['mismatched_neurons']} neurons with N != M",
          file=sys.stderr)
    return 1


# -- the two datasets ---------------------------------------------------------------------------
def _gesture(root, train, frames_number):
    from .datasets import DVSGesture
    return DVSGesture(root, train=train, frames_number=frames_number, split_by="number")


def _write_once(root: Path, write) -> None:
    """Write a synthetic release once: a marker, renamed into place last, says it is complete."""
    marker = Path(root) / ".sj_qvm_complete"
    if marker.exists():
        return
    write()
    tmp = marker.with_name(f"{marker.name}.tmp-{os.getpid()}")
    tmp.write_text("complete\n")
    os.replace(tmp, marker)


def _gesture_synthetic(root, tiny, seed):
    from .datasets.synthetic import write_dvs_gesture
    if tiny:  # 22 train and 11 test samples
        kw = dict(users=(1, 2, 24), lightings=("fluorescent",), events_per_sample=3000)
    else:     # 132 train and 66 test samples
        kw = dict(users=(1, 2, 3, 4, 24, 25))
    _write_once(root, lambda: write_dvs_gesture(root, seed=seed, **kw))


def _cifar(root, train, frames_number):
    from .datasets import CIFAR10DVS
    return CIFAR10DVS(root, train=train, frames_number=frames_number, split_by="number")


def _cifar_synthetic(root, tiny, seed):
    from .datasets.synthetic import write_cifar10_dvs
    # "first900" keeps 90% of each class for training: 9/1 (tiny) or 36/4 files per class.
    kw = dict(samples_per_class=10, events_per_sample=3000) if tiny else dict(samples_per_class=40)
    _write_once(root, lambda: write_cifar10_dvs(root, seed=seed, **kw))


DVS_GESTURE = DatasetSpec(
    name="dvs_gesture", title="DVS128 Gesture", num_classes=11, flip=False, make=_gesture,
    write_synthetic=_gesture_synthetic, paper_accuracy=0.9375,
    real_data_help="Real data: download DvsGesture.tar.gz from IBM "
    "(https://research.ibm.com/interactive/dvsgesture/), unpack it so that ROOT/DvsGesture/ holds "
    "userNN_<light>.aedat, userNN_<light>_labels.csv, trials_to_train.txt and trials_to_test.txt, "
    "then pass --root ROOT. Paper setting: --paper (93.75% at T = 4, L = 4).")

CIFAR10_DVS = DatasetSpec(
    name="cifar10_dvs", title="CIFAR10-DVS", num_classes=10, flip=True, make=_cifar,
    write_synthetic=_cifar_synthetic, paper_accuracy=0.845,
    real_data_help="Real data: download the CIFAR10-DVS release from figshare "
    "(https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671), unpack the ten class archives "
    "so that ROOT/<class>/cifar10_<class>_<n>.aedat exist, then pass --root ROOT. "
    "Paper setting: --paper (84.50% at T = 4, L = 4).")
