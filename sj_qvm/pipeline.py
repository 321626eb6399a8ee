"""The DVS pipeline shared by examples/dvs_gesture and examples/cifar10_dvs: QAT, convert, evaluate.

This file holds the command line and the training loop; the data is in :mod:`.pipeline_data`,
the evaluation and report in :mod:`.pipeline_eval`, checkpoints in :mod:`.checkpoint` and the
output folder's policy (fresh, ``--resume``, ``--overwrite``; ``log.jsonl``) in :mod:`.run_folder`.

Every epoch's randomness is a function of (seed, epoch), so a resumed run repeats exactly what an
uninterrupted one does. Every QuantReLU threshold is kept > 0 after each step
(:func:`sj_qvm.qat.clamp_thresholds`). A conversion failure after training keeps the trained
checkpoint and says how to convert it again.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from .checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint
from .convert import ConversionError
from .models import ARCHS, build_model
from .pipeline_data import CIFAR10_DVS, DVS_GESTURE, DatasetSpec, Frames, augment
from .pipeline_eval import check_exact, convert_and_report, evaluate_ann, format_summary
from .qat import clamp_thresholds
from .run_folder import CHECKPOINT, LOG, append_log, check_fresh, prepare, truncate_log

__all__ = ["DatasetSpec", "DVS_GESTURE", "CIFAR10_DVS", "Frames", "augment", "build_parser", "run",
           "main", "CheckpointError", "load_checkpoint", "save_checkpoint", "format_summary",
           "check_exact"]

#: Settings a resumed run must share with its checkpoint (they change the model, data or optimizer).
RESUME_FLAGS = ("arch", "width", "levels", "rounding", "layer_thresholds", "size", "frames",
                "optimizer")


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
    p.add_argument("--layer-thresholds", action="store_true",
                   help="one threshold gamma per layer instead of one per channel (the default)")
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
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt "
                       "(log.jsonl is cut back to the checkpoint's epoch); without a checkpoint "
                       "it says so and starts from epoch 1")
    again.add_argument("--overwrite", action="store_true", help="delete the run already in OUT "
                       "and start afresh (without --resume or --overwrite, an OUT that holds a "
                       "run is refused)")
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
    if any(T < 1 for T in args.eval_time_steps):
        raise SystemExit(f"--eval-time-steps must all be >= 1, got {args.eval_time_steps}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise SystemExit(f"--lr must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise SystemExit(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
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


def _plain_args(args, root: Path) -> dict:
    """The run's settings as plain types (paths as str), for the checkpoint."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | \
        {"root": str(root)}


def run(args, spec: DatasetSpec) -> dict:
    """Train (or resume), convert, evaluate and report; returns the results dict (rank 0)."""
    from tqdm.auto import tqdm
    args = _resolve(args, spec)
    out = Path(args.out)
    check_fresh(out, args.resume, args.overwrite)  # every rank, before anything is written
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    # Verified before any data is read, so a bad checkpoint stops the run at once.
    ckpt = load_checkpoint(ckpt_path) if args.resume and ckpt_path.exists() else None
    rank, world = _setup_distributed()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    if rank == 0:
        prepare(out, args.resume, args.overwrite)
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
                        rounding=args.rounding, width=args.width,
                        channel_wise=not args.layer_thresholds).to(device)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                              weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    start = 0
    if args.resume:
        if ckpt is not None:
            flags = {k: getattr(args, k) for k in RESUME_FLAGS}
            start = restore(ckpt, ckpt_path, model, opt, sched, flags) + 1
            if rank == 0:
                print(f"resumed from {ckpt_path} after epoch {start}")
        elif rank == 0:
            print(f"--resume: no checkpoint at {ckpt_path}; starting from epoch 1",
                  file=sys.stderr)
        if rank == 0:
            truncate_log(log_path, start)
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
    for epoch in range(start, args.epochs):
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
            clamp_thresholds(model)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        sched.step()
        if rank == 0:
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen),
                   "train_acc": correct / max(1, seen),
                   "test_acc": evaluate_ann(model, test_loader, device),
                   "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            print(json.dumps(row), flush=True)
            # Log first, checkpoint second: a kill in between is undone by truncate_log on resume.
            append_log(log_path, row)
            save_checkpoint({"epoch": epoch, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "args": _plain_args(args, root)}, ckpt_path)
        if dist.is_initialized():
            dist.barrier()
    if rank != 0:
        dist.destroy_process_group()
        return {}
    try:
        results = convert_and_report(model.eval(), args, spec, root, test_ds, device)
    except ConversionError as e:
        raise ConversionError(
            f"training finished and the trained model is saved in {ckpt_path}, but converting it "
            f"failed: {e}. Fix the cause, then rerun with --resume: it converts the saved model "
            "without training again.") from e
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return results


def main(spec: DatasetSpec, argv=None, prog: Optional[str] = None) -> int:
    args = build_parser(spec, prog).parse_args(argv)
    try:
        res = run(args, spec)
    except (FileNotFoundError, FileExistsError, CheckpointError, ConversionError) as e:
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
