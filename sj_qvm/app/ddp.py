"""torch.distributed for the training pipeline: set up from torchrun's environment, barrier, end."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["setup_distributed", "barrier", "teardown"]


def setup_distributed() -> tuple:
    """``(rank, world_size)``; joins the process group when torchrun set ``WORLD_SIZE > 1``
    (NCCL on CUDA, else gloo) and picks this process's GPU from ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    """Leave the process group, if there is one."""
    if dist.is_initialized():
        dist.destroy_process_group()
