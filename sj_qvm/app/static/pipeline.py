"""The static-image pipeline of ``examples/cifar`` and ``examples/imagenet``: QAT, convert, sweep.

Built on the DVS pipeline's blocks: the QAT loop :func:`sj_qvm.qat.fit` (AMP on CUDA, threshold
clamp, DDP-aware), :mod:`..ddp` (torchrun), :mod:`..checkpoint` (verified checkpoints) and
:mod:`..run_folder` (fresh / ``--resume`` / ``--overwrite``, ``log.jsonl``). The training data
order of each epoch is a function of (seed, epoch) through a ``DistributedSampler`` (also with one
process), so a resumed run reads the batches an uninterrupted one would; the augmentation draws of
persistent loader workers are not replayed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ...atomic import LinkError
from ...convert import ConversionError
from .. import ddp
from ..arguments import EXTRAS_HINT, fail
from ..checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint
from ..optim import continue_schedule, make_optimizer, make_scheduler, plain_args
from ..report import format_epoch, format_written
from ..run_folder import (CHECKPOINT, LOG, append_log, check_fresh, prepare, truncate_log,
                          written_files)
from .args import RESUME_FLAGS, parse
from .data import SPECS, StaticSpec, loader_options, eval_transform, train_transform
from .models import TV_ARCHS, build_network, calibration_loader, shape_thresholds
from .sweep import check_exact, evaluate_ann, write_results
from .tables import markdown

__all__ = ["JOB", "open_datasets", "run", "main"]

#: This job's name in :data:`..run_folder.RUN_FILES`.
JOB = "static"


def open_datasets(args, spec: StaticSpec):
    """``(train, test, calibration)`` datasets of ``(image [3, S, S], label)``; the calibration
    set is the training images under the test transform (None for an sj-qvm arch)."""
    S = args.image_size
    train = spec.make(args.root, True, train_transform(spec, S, args.cutout,
                                                       not args.no_autoaugment))
    test = spec.make(args.root, False, eval_transform(spec, S))
    calib = spec.make(args.root, True, eval_transform(spec, S)) if args.arch in TV_ARCHS else None
    if list(train.classes) != list(test.classes):
        raise ValueError(f"{args.root}: the training split has classes {train.classes[:5]}... "
                         f"({len(train.classes)}), the test split {test.classes[:5]}... "
                         f"({len(test.classes)}); both must list the same classes")
    sub = torch.utils.data.Subset
    if args.train_samples is not None:
        train = sub(train, range(min(args.train_samples, len(train))))
        calib = calib and sub(calib, range(min(args.train_samples, len(calib))))
    if args.test_samples is not None:
        test = sub(test, range(min(args.test_samples, len(test))))
    return train, test, calib


def num_classes(ds) -> int:
    """The classes of a dataset (through a ``Subset``): what its folder or meta file lists."""
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return len(ds.classes)


def run(args, spec: StaticSpec) -> dict:
    """Train (or resume), convert, sweep and write the run's files; the results dict (rank 0)."""
    out = Path(args.out)
    check_fresh(out, JOB, args.resume, args.overwrite)
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    ckpt = load_checkpoint(ckpt_path) if args.resume and ckpt_path.exists() else None
    # The data are opened before anything is written, so a wrong root leaves OUT as it was.
    train_ds, test_ds, calib_ds = open_datasets(args, spec)
    rank, world = ddp.setup_distributed()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    say = print if rank == 0 else (lambda *a, **k: None)
    if rank == 0:
        prepare(out, JOB, args.resume, args.overwrite)
    torch.manual_seed(args.seed)
    calib = None if ckpt is not None or calib_ds is None else calibration_loader(
        calib_ds, args.calibration_samples, args.batch_size, args.seed)
    model = build_network(args, num_classes(train_ds), spec.variant, calib, log=say)
    if ckpt is not None:
        shape_thresholds(model, ckpt["model"])
    model = model.to(device)
    opt = make_optimizer(args, model)
    sched = make_scheduler(args, opt)
    start = 0
    if args.resume:
        if ckpt is not None:
            start = restore(ckpt, ckpt_path, model, opt, sched,
                            {k: getattr(args, k) for k in RESUME_FLAGS}) + 1
            sched, note = continue_schedule(args, opt, sched, ckpt["args"], start)
            say(f"resumed from {ckpt_path} after epoch {start}")
            if note:
                say(note)
        elif rank == 0:
            print(f"--resume: no checkpoint at {ckpt_path}; starting from epoch 1", file=sys.stderr)
        if rank == 0:
            truncate_log(log_path, start)
    net = model
    if world > 1:
        if device.type == "cuda":
            net = model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # One loader for all epochs, so its workers persist; the sampler reshuffles per epoch
    # (fit calls set_epoch) from (seed, epoch) alone.
    sampler = torch.utils.data.distributed.DistributedSampler(
        train_ds, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    train_loader = torch.utils.data.DataLoader(
        train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=len(train_ds) >
        args.batch_size * world, **loader_options(args.workers, device))
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size,
                                              **loader_options(min(args.workers, 2), device))

    def end_of_epoch(row):
        if rank == 0:
            row = dict(row, test_acc=evaluate_ann(model, test_loader, device))
            print(format_epoch(row, args.epochs), flush=True)
            append_log(log_path, row)  # log first: truncate_log undoes a kill in between
            save_checkpoint({"epoch": row["epoch"] - 1, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "args": plain_args(args)}, ckpt_path)
        ddp.barrier()

    def torch_seeded(epoch):  # main-process augmentation (workers = 0) repeats per epoch too
        torch.manual_seed(args.seed * 1000 + epoch)
        return train_loader

    from ...qat import fit
    fit(net, opt, torch_seeded, args.epochs, scheduler=sched, start_epoch=start, device=device,
        amp=device.type == "cuda" and not args.no_amp, on_epoch=end_of_epoch,
        progress=not args.quiet, desc="epoch")
    if rank != 0:
        ddp.teardown()
        return {}
    try:
        results = write_results(model.eval(), args, spec, test_ds, device, not args.quiet)
    except ConversionError as e:
        if not ckpt_path.exists():
            raise
        raise ConversionError(f"training finished and the model is saved in {ckpt_path}, but "
                              f"converting it failed: {e}. Fix the cause, then rerun with "
                              "--resume: it converts the saved model without training again.") from e
    finally:
        ddp.teardown()
    print(markdown(results))
    return results


def main(specs: Sequence[StaticSpec], argv=None, prog: Optional[str] = None) -> int:
    """An example's entry point: 0 when exact at T = L (expected current, matched V0), 1 when
    not, 2 for a usage or input error (one line on stderr)."""
    prog = prog or Path(sys.argv[0]).name
    args = parse(specs, argv, prog)
    spec = SPECS[args.dataset]
    try:
        res = run(args, spec)
    except FileNotFoundError as e:
        return fail(f"{e} {spec.layout_help(args.root)}" if "Expected" not in str(e) else e, prog)
    except (ValueError, FileExistsError, NotADirectoryError, LinkError, CheckpointError,
            ConversionError) as e:
        return fail(e, prog)
    except ImportError as e:
        return fail(f"{e}; {EXTRAS_HINT}", prog)
    if not res:
        return 0
    exact = check_exact(res)
    L = res["levels"]
    if exact:
        print(f"exact: SNN accuracy at T = L = {L} (expected current, V0 matched to "
              f"{res['rounding']}) equals the ANN's, and every neuron's spike count equals its "
              "ANN level")
    else:
        print(f"ERROR: not exact at T = L = {L}: SNN {res['snn_accuracy']['expected'][str(L)]:.4f}"
              f" vs ANN {res['ann_accuracy']:.4f}, {res['mismatched_neurons']} neurons with "
              "N != M", file=sys.stderr)
    print(format_written(written_files(args.out, JOB)))
    return 0 if exact else 1
