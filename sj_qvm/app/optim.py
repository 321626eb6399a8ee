"""What both training pipelines (DVS and static images) build from their parsed arguments: the
optimizer, its cosine schedule (fresh or continued on ``--resume``), and the settings as plain
types for the checkpoint.

On ``--resume`` the optimizer's state (momentum, Adam's moments) and the schedule come from the
checkpoint. When ``--epochs``, ``--lr`` or ``--weight-decay`` differ from the checkpoint's run,
the new values apply, and :func:`continue_schedule` says so: the cosine schedule is rebuilt over
the new ``--epochs`` from the new ``--lr``, continuing at the restored epoch, as if the run had been
started with these settings (the epochs already trained keep the rates they had). PyTorch's
restored ``CosineAnnealingLR`` would keep its old ``T_max`` instead, and past it train at lr 0.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn as nn

__all__ = ["make_optimizer", "make_scheduler", "cosine_lr", "continue_schedule", "plain_args"]


def make_optimizer(args, model: nn.Module) -> torch.optim.Optimizer:
    """``--optimizer sgd`` (momentum 0.9, the paper's) or ``adam``, with ``--lr`` and
    ``--weight-decay``."""
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                               weight_decay=args.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def make_scheduler(args, optimizer: torch.optim.Optimizer, last_epoch: int = -1):
    """The cosine schedule over ``--epochs`` (stepped once per epoch, down to 0 at the end).
    ``last_epoch`` is the last epoch already trained (counted from 0; -1 for a fresh run)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, args.epochs),
                                                      last_epoch=last_epoch)


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """The rate of epoch ``epoch`` (from 0) on the cosine schedule from ``base_lr`` over
    ``epochs``: ``base_lr * (1 + cos(pi * epoch / epochs)) / 2``."""
    return base_lr * (1 + math.cos(math.pi * epoch / max(1, epochs))) / 2


def continue_schedule(args, optimizer: torch.optim.Optimizer, scheduler, saved: Mapping,
                      start: int) -> tuple:
    """After a checkpoint was restored into ``optimizer`` and ``scheduler``: apply this run's
    ``--lr``, ``--weight-decay`` and ``--epochs`` where they differ from the checkpoint's ``saved``
    args. Returns ``(scheduler, note)``: the schedule to train with (the restored one when nothing
    changed, so a plain resume repeats an uninterrupted run exactly), and a line saying what
    changed and the rate epoch ``start + 1`` trains at (None when nothing changed).
    """
    changed = [k for k in ("epochs", "lr", "weight_decay") if saved.get(k) != getattr(args, k)]
    if not changed:
        return scheduler, None
    for group in optimizer.param_groups:
        group["weight_decay"] = args.weight_decay
        group["initial_lr"] = args.lr
    was = ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (the checkpoint's: "
                    f"{saved.get(k)})" for k in changed)
    if start >= args.epochs:
        return scheduler, (f"{was}: the checkpoint has trained {start} epoch(s), so nothing is "
                           "left to train")
    if "epochs" in changed or "lr" in changed:
        for group in optimizer.param_groups:  # the rate of epoch `start`, in closed form
            group["lr"] = cosine_lr(args.lr, start, args.epochs)
        scheduler = make_scheduler(args, optimizer, last_epoch=start - 1)  # keeps that rate
    lr = optimizer.param_groups[0]["lr"]
    return scheduler, (f"{was}: applied; the cosine schedule runs over {args.epochs} epochs from "
                       f"lr {args.lr:g}, and epoch {start + 1} trains at lr {lr:.4g}")


def plain_args(args, **extra) -> dict:
    """The run's settings (``vars(args)`` and ``extra``) with paths as ``str``."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in (vars(args) | extra).items()}
