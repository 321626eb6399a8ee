"""The DVS pipeline shared by examples/dvs_gesture and examples/cifar10_dvs: QAT, convert, evaluate.

The command line is in :mod:`.pipeline_args`, the datasets in :mod:`.registry`, the training loop
in :func:`sj_qvm.qat.fit` (which keeps every threshold gamma > 0), the evaluation and report files
in :mod:`.evaluate`, checkpoints in :mod:`.checkpoint` and the output folder's policy (fresh,
``--resume``, ``--overwrite``; ``log.jsonl``) in :mod:`.run_folder`.

Every epoch's randomness is a function of (seed, epoch), so a resumed run repeats exactly what an
uninterrupted one does. A conversion failure after training keeps the trained checkpoint and says
how to convert it again.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..convert import ConversionError
from ..datasets.frames_dataset import Frames
from ..datasets.representations import representation
from ..models import build_model
from ..qat import fit
from . import ddp
from .arguments import EXTRAS_HINT, fail
from .optim import continue_schedule, make_optimizer, make_scheduler, plain_args
from .checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint
from ..atomic import LinkError
from .evaluate import check_exact, convert_and_report, evaluate_ann, promises_exact
from .pipeline_args import RESUME_FLAGS, build_parser, parse_release
from .registry import CIFAR10_DVS, DVS_GESTURE, DatasetSpec
from .report import format_epoch, format_summary, format_written
from .run_folder import (CHECKPOINT, LOG, append_log, check_folder, check_fresh, prepare,
                         truncate_log, written_files)

__all__ = ["DatasetSpec", "DVS_GESTURE", "CIFAR10_DVS", "JOB", "build_parser", "run", "main"]

#: This job's name in :data:`.run_folder.RUN_FILES`.
JOB = "dvs"


def _release_root(args, spec: DatasetSpec, rank: int) -> Path:
    """``--root``, or the synthetic release (written once, by rank 0, idempotently)."""
    if args.root is not None:
        return Path(args.root)
    root = Path(args.cache_dir) / (spec.name + ("_tiny" if args.tiny else ""))
    if rank == 0:
        spec.write_synthetic(root, args.tiny, args.seed, progress=not args.quiet)
    ddp.barrier()
    return root


def run(args, spec: DatasetSpec) -> dict:
    """Train (or resume), convert, evaluate and report; returns the results dict (rank 0).

    ``args`` as :func:`.pipeline_args.parse` returns them (checked).
    """
    out = Path(args.out)
    check_fresh(out, JOB, args.resume, args.overwrite)  # every rank, before anything is written
    if args.root is None:
        check_folder(args.cache_dir, "--cache-dir")
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    # Verified before any data is read, so a bad checkpoint stops the run at once.
    ckpt = load_checkpoint(ckpt_path) if args.resume and ckpt_path.exists() else None
    rank, world = ddp.setup_distributed()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    if rank == 0:
        prepare(out, JOB, args.resume, args.overwrite)
    root = _release_root(args, spec, rank)
    # Rank 0 preprocesses into the cache first; the others then only read it.
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            train_base = spec.make(root, True, args.frames, progress=not args.quiet)
            test_base = spec.make(root, False, args.frames, progress=not args.quiet)
        ddp.barrier()
    train_ds = Frames(train_base, args.size, train=True, flip=spec.flip)
    test_ds = Frames(test_base, args.size)

    torch.manual_seed(args.seed)
    rep = representation(args.input)
    model = build_model(args.arch, in_channels=rep.channels(args.frames),
                        num_classes=spec.num_classes, levels=args.levels, rounding=args.rounding,
                        width=args.width, channel_wise=not args.layer_thresholds).to(device)
    opt = make_optimizer(args, model)
    sched = make_scheduler(args, opt)
    start = 0
    if args.resume:
        if ckpt is not None:
            flags = {k: getattr(args, k) for k in RESUME_FLAGS}
            start = restore(ckpt, ckpt_path, model, opt, sched, flags) + 1
            sched, note = continue_schedule(args, opt, sched, ckpt["args"], start)
            if rank == 0:
                print(f"resumed from {ckpt_path} after epoch {start}")
                if note:
                    print(note)
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

    def batches(epoch):
        torch.manual_seed(args.seed * 1000 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            train_ds, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
            generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))

    def end_of_epoch(row):
        if rank == 0:
            row = dict(row, test_acc=evaluate_ann(model, test_loader, device, rep))
            print(format_epoch(row, args.epochs), flush=True)
            # Log first, checkpoint second: a kill in between is undone by truncate_log on resume.
            append_log(log_path, row)
            save_checkpoint({"epoch": row["epoch"] - 1, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "args": plain_args(args, root=root)}, ckpt_path)
        ddp.barrier()

    fit(net, opt, batches, args.epochs, scheduler=sched, start_epoch=start, device=device,
        prepare=rep, amp=device.type == "cuda" and not args.no_amp,
        on_epoch=end_of_epoch, progress=not args.quiet, desc="epoch")
    if rank != 0:
        ddp.teardown()
        return {}
    try:
        results = convert_and_report(model.eval(), args, spec, root, test_ds, device)
    except ConversionError as e:
        if not ckpt_path.exists():
            raise
        raise ConversionError(
            f"training finished and the trained model is saved in {ckpt_path}, but converting it "
            f"failed: {e}. Fix the cause, then rerun with --resume: it converts the saved model "
            "without training again.") from e
    finally:
        ddp.teardown()
    print(format_summary(results))
    return results


def main(spec: DatasetSpec, argv=None, prog: Optional[str] = None) -> int:
    """The example's entry point: 0 when exact at T = L (or nothing is promised), 1 when not,
    2 for a usage or input error (one line on stderr)."""
    args, spec = parse_release(spec, argv, prog)
    try:
        res = run(args, spec)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, LinkError, CheckpointError,
            ConversionError) as e:
        return fail(e, prog or Path(sys.argv[0]).name)
    except ImportError as e:  # an optional dependency (matplotlib for the plots)
        return fail(f"{e}; {EXTRAS_HINT}", prog or Path(sys.argv[0]).name)
    if not res:
        return 0
    exact = check_exact(res)
    if exact and promises_exact(res):
        print(f"exact: SNN accuracy at T = L = {res['levels']} (expected current) equals the "
              "ANN's, and every neuron's spike count equals its ANN level")
    elif not exact:
        print(f"ERROR: not exact at T = L = {res['levels']} in expected mode: SNN "
              f"{res['snn_accuracy']['expected'][str(res['levels'])]:.4f} vs ANN "
              f"{res['ann_accuracy']:.4f}, {res['mismatched_neurons']} neurons with N != M",
              file=sys.stderr)
    print(format_written(written_files(args.out, JOB)))
    return 0 if exact else 1
