"""Quantization-aware training: the one QAT loop (:func:`fit`) and the threshold rule it applies.

Every QAT run in sj-qvm goes through :func:`fit`: the DVS pipeline, the digits job and
:func:`sj_qvm.finetune`. After each optimizer step every QuantReLU threshold gamma is clamped to
``gamma >= MIN_THRESHOLD`` (:func:`clamp_thresholds`). A gamma pushed to zero or below by a large
step (its gradient is +1 from every clipped neuron) kills the layer for good, and ``convert`` then
refuses the model.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from .checks import check_bool, check_int, check_positive
from .quant import QuantReLU

__all__ = ["MIN_THRESHOLD", "clamp_thresholds", "fit"]

#: The smallest threshold gamma a QAT step may leave.
MIN_THRESHOLD = 1e-3


def clamp_thresholds(model: nn.Module, min_threshold: float = MIN_THRESHOLD) -> None:
    """Clamp every QuantReLU threshold of ``model`` to ``>= min_threshold``, in place.

    Call it after each ``optimizer.step()``. A NaN threshold (a diverged step) is set to
    ``min_threshold`` as well. No host-device synchronisation.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuantReLU):
                th = m.threshold
                # ``~(th >= min)`` and not ``th < min``: NaN compares false both ways.
                th.masked_fill_(~(th >= min_threshold), min_threshold)


def _correct(out: torch.Tensor, y: torch.Tensor) -> Optional[torch.Tensor]:
    """Correct top-1 predictions of an ``[B, classes]`` output for ``[B]`` labels, else None."""
    if out.ndim == 2 and y.ndim == 1 and not y.is_floating_point():
        return (out.argmax(1) == y).sum()
    return None


def fit(model: nn.Module, optimizer: torch.optim.Optimizer,
        batches: Union[Iterable, Callable[[int], Iterable]], epochs: int, *,
        scheduler=None, loss_fn: Optional[Callable] = None, start_epoch: int = 0,
        prepare: Optional[Callable] = None, device: Optional[torch.device] = None,
        amp: Optional[bool] = None, min_threshold: float = MIN_THRESHOLD,
        on_step: Optional[Callable[[dict], None]] = None,
        on_epoch: Optional[Callable[[dict], None]] = None,
        progress: bool = True, desc: str = "QAT") -> list:
    """Train ``model`` for epochs ``start_epoch .. epochs - 1`` in place; returns each epoch's metrics.

    One step: ``out = model(prepare(x))`` (under bfloat16 autocast when ``amp``), ``loss =
    loss_fn(out, y)`` (``out.float()`` under AMP), backward, ``optimizer.step()``, then
    :func:`clamp_thresholds`. ``scheduler.step()`` follows each epoch.

    Args:
        model: the QuantReLU network, or its ``DistributedDataParallel`` wrapper (the clamp reaches
            the wrapped module's thresholds). Put in train mode at each epoch's start.
        batches: ``(x [B, *], y [B, ...])`` pairs: an iterable (a DataLoader) read once per epoch,
            or ``batches(epoch) -> iterable`` (epoch counted from 0), for per-epoch seeding. A
            loader's ``sampler.set_epoch(epoch)`` (``DistributedSampler``) is called each epoch.
        loss_fn: ``loss_fn(out, y) -> scalar``; cross-entropy by default.
        prepare: maps a batch's input on ``device`` to the model's input (e.g. event frames
            ``[B, T, C, H, W]`` to their mean ``[B, C, H, W]``); identity by default.
        device: where batches go; the device of ``model``'s first parameter by default.
        amp: bfloat16 autocast; by default on when ``device`` is CUDA.
        on_step: called after each step with ``{"epoch", "step", "loss"}`` (this process's batch).
        on_epoch: called on every process after each epoch (after ``scheduler.step()``) with
            ``{"epoch" (from 1), "train_loss", "train_acc", "samples", "lr", "seconds"}`` (``lr``:
            the first parameter group's learning rate during the epoch, before the scheduler's
            step); under
            ``torch.distributed`` the loss, accuracy and samples are over all processes.
            ``train_acc`` is None when the outputs are not ``[B, classes]`` for ``[B]`` labels.
        progress: a tqdm bar per epoch with the running loss (rank 0 only), cleared when done.
    """
    epochs = check_int(epochs, "epochs", minimum=0)
    start_epoch = check_int(start_epoch, "start_epoch", minimum=0)
    min_threshold = check_positive(min_threshold, "min_threshold")
    progress = check_bool(progress, "progress")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else check_bool(amp, "amp")
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    from tqdm.auto import tqdm
    history = []
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        loader = batches(epoch) if callable(batches) else batches
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # a DistributedSampler reshuffles per epoch
            sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]  # what this epoch trains at (logged below)
        loss_sum, correct_sum, seen, has_acc = 0.0, 0, 0, True
        bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                   disable=not progress or rank != 0)
        for step, batch in enumerate(bar):
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError(f"fit needs (input, target) batches, got {type(batch).__name__}")
            x, y = batch[0].to(device), batch[1].to(device)
            n = len(x)
            if prepare is not None:
                x = prepare(x)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
                loss = loss_fn(out.float() if amp else out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clamp_thresholds(model, min_threshold)
            loss_value = loss.item()
            correct = _correct(out.detach(), y)
            has_acc = has_acc and correct is not None
            loss_sum, seen = loss_sum + loss_value * n, seen + n
            correct_sum += int(correct) if correct is not None else 0
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            if on_step is not None:
                on_step({"epoch": epoch + 1, "step": step + 1, "loss": loss_value})
        if scheduler is not None:
            scheduler.step()
        if distributed:  # metrics over all processes
            sums = torch.tensor([loss_sum, correct_sum, seen], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            loss_sum, correct_sum, seen = sums.tolist()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1.0, seen),
               "train_acc": correct_sum / max(1.0, seen) if has_acc else None,
               "samples": int(seen), "lr": lr,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return history
