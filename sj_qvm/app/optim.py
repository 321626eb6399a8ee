"""What both training pipelines (DVS and static images) build from their parsed arguments: the
optimizer, and the settings as plain types for the checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["make_optimizer", "plain_args"]


def make_optimizer(args, model: nn.Module) -> torch.optim.Optimizer:
    """``--optimizer sgd`` (momentum 0.9, the paper's) or ``adam``, with ``--lr`` and
    ``--weight-decay``."""
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                               weight_decay=args.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def plain_args(args, **extra) -> dict:
    """The run's settings (``vars(args)`` and ``extra``) with paths as ``str``."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in (vars(args) | extra).items()}
