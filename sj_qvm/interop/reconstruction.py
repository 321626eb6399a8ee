"""Output reconstruction: a short, label-free distillation of the calibrated thresholds towards the
float ANN's output.

Calibration fits each QuantReLU's gamma to its own activation (:mod:`.thresholds`); what the user
needs is the network's output. Reconstruction then takes ``steps`` Adam steps on ``log gamma`` (all
layers at once, every channel), minimising the KL divergence between the float ANN's output
distribution and the quantized ANN's,

    loss = KL(softmax(f(x)) || softmax(q(x))),   softmax over dim 1 of the output ``[B, K, *]``,

over the first ``steps`` calibration batches. Only the thresholds move: weights, BatchNorm and the
bias corrections stay as calibration left them, so the SNN stays the exact twin of the result.
Gradients reach gamma through QuantReLU's straight-through estimator (QCFS). Working in
``log gamma`` makes the step relative (``RECONSTRUCT_LR`` = 2% per step at most), whatever the
activation's scale.

It is the threshold half of block reconstruction (BRECQ, QDrop) on the whole network at once; in
``benchmarks/bench_conversion.py`` it is what lifts L = 2 above SpikingJelly's
LocalThresholdBalancingRecipe at T = 2 (mean over six trained ANNs each; see
``benchmarks/RESULTS.md``), and it is neutral at L = 4.

The float targets come from calibration's first pass, which runs the float ANN (every QuantReLU
passing ``relu(x)`` on) over the loader anyway: it keeps the first batches' inputs and outputs
(:class:`Targets`), and reconstruction distils on those, so it runs no float forward of its own
and any loader works, shuffling or not. Where they were not kept (over the memory bound), the
float teacher is a copy of the model taken before calibration changed any bias, run on each
loader batch as the student is.
"""
from __future__ import annotations

import copy
import math
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..quant import QuantReLU

__all__ = ["RECONSTRUCT_LR", "Targets", "distillation", "float_teacher", "default_steps", "reconstructable",
           "output_kl", "reconstruct"]

RECONSTRUCT_LR = 0.02


def float_teacher(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose QuantReLUs pass ``relu(x)`` on: the float ANN, in eval mode."""
    teacher = copy.deepcopy(model).eval()
    for m in teacher.modules():
        if isinstance(m, QuantReLU):
            m.forward = torch.relu  # an instance attribute shadows the class's forward
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def default_steps(batches: int) -> int:
    """The automatic number of steps: a quarter of the calibration batches, at least one."""
    return max(1, math.ceil(batches / 4))


def reconstructable(output) -> bool:
    """True if ``output`` is a floating tensor ``[B, K, *]`` with K >= 2 (a distribution over dim 1)."""
    return isinstance(output, torch.Tensor) and output.is_floating_point() and \
        output.ndim >= 2 and output.shape[1] >= 2


class Targets:
    """Inputs and float-ANN outputs of the first calibration batches, for :func:`reconstruct`:
    at most ``limit`` batches (None: any number), and at most ``max_bytes`` in all. A batch that
    would pass the byte bound empties it: reconstruction then runs the float teacher instead."""

    def __init__(self, limit: Optional[int], max_bytes: int):
        self.limit, self.max_bytes = limit, max_bytes
        self.pairs: List[tuple] = []   # [(input, float output)]
        self.size = 0
        self.overflowed = False

    def add(self, x: torch.Tensor, output: torch.Tensor) -> None:
        if self.overflowed or (self.limit is not None and len(self.pairs) >= self.limit):
            return
        self.size += x.numel() * x.element_size() + output.numel() * output.element_size()
        if self.size > self.max_bytes:
            self.pairs, self.overflowed = [], True
            return
        # A copy: a loader may refill the tensor it yielded with the next batch.
        self.pairs.append((x.detach().clone(), output))

    def first(self, steps: int, batches: int) -> Optional[List[tuple]]:
        """The pairs of the first ``min(steps, batches)`` batches; None if they were not kept."""
        n = min(steps, batches)
        return None if self.overflowed or len(self.pairs) < n else self.pairs[:n]


def output_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) over dim 1 of outputs ``[B, K, *]``, summed and
    divided by B, in float32; ``teacher`` is an output computed without gradient."""
    t = teacher.float().log_softmax(1)
    s = student.float().log_softmax(1)
    return F.kl_div(s, t, log_target=True, reduction="sum") / student.shape[0]


def distillation(teacher: nn.Module, base, teacher_input=None) -> tuple:
    """``(prepare, loss)`` for :func:`sj_qvm.qat.fit`: ``prepare`` keeps each batch's input ``x``
    as fit hands it to the model, and ``loss(out, y) = base(out, y) + output_kl(out,
    teacher(teacher_input(x)))``, the teacher run without gradient (``teacher_input`` None: ``x``
    itself). The caller puts the teacher in eval mode."""
    batch = {}

    def prepare(x):
        batch["x"] = x
        return x

    def loss(out, y):
        with torch.no_grad():
            x = batch["x"]
            target = teacher(x if teacher_input is None else teacher_input(x))
        return base(out, y) + output_kl(out, target)
    return prepare, loss


def _cycle(dataloader, steps: int):
    """The first ``steps`` batches of ``dataloader``, starting it again as often as needed."""
    given = 0
    while given < steps:
        empty = True
        for batch in dataloader:
            empty = False
            yield batch
            given += 1
            if given == steps:
                return
        if empty:
            raise ValueError("the calibration dataloader yielded no batch; pass a loader with at "
                             "least one batch of inputs")


def reconstruct(model: nn.Module, teacher: Optional[nn.Module], dataloader, steps: int,
                progress: bool = True, lr: float = RECONSTRUCT_LR,
                targets: Optional[List[tuple]] = None) -> List[float]:
    """Move every QuantReLU threshold of ``model`` (in place) by ``steps`` Adam steps on
    ``log gamma`` towards ``teacher``'s output (see the module docstring); the loss per step.

    ``dataloader`` gives its first ``steps`` batches (the input as
    :func:`~sj_qvm.interop.calibration.batch_input` finds it), read again from the start if it has
    fewer. ``targets`` (``[(input, teacher output)]``, e.g. :meth:`Targets.first`) replaces both:
    step i distils on pair ``i % len(targets)``, and ``teacher`` is not run (it may be None).
    ``model`` is left in eval mode with every parameter's ``requires_grad`` as it was.
    A loss that is not finite raises ValueError before that step changes any threshold."""
    from .calibration import batch_input  # calibration imports this module
    mods = [m for m in model.modules() if isinstance(m, QuantReLU)]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    log_gamma = [m.threshold.detach().double().log().clone().requires_grad_(True) for m in mods]
    opt = torch.optim.Adam(log_gamma, lr=lr)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    losses: List[float] = []
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for m in mods:
            m.threshold.requires_grad_(True)
        bar = tqdm(total=steps, desc="calibration: output reconstruction", disable=not progress,
                   leave=False)
        with torch.enable_grad():
            for batch in _cycle(dataloader if targets is None else targets, steps):
                if targets is None:
                    x = batch_input(batch).to(device)
                    with torch.no_grad():
                        target = teacher(x)
                else:
                    x, target = batch
                loss = output_kl(model(x), target)
                if not torch.isfinite(loss):
                    raise ValueError(f"output reconstruction: the loss is {loss.item()} at step "
                                     f"{len(losses) + 1}; the float or quantized ANN gives "
                                     "non-finite outputs on the calibration data. Check the "
                                     "data, or pass reconstruct_steps=0")
                for m in mods:
                    m.threshold.grad = None
                loss.backward()
                for m, s in zip(mods, log_gamma):
                    # d loss / d log gamma = gamma * d loss / d gamma
                    g = m.threshold.grad
                    s.grad = (torch.zeros_like(s) if g is None else g.double()) * s.detach().exp()
                opt.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for m, s in zip(mods, log_gamma):
                        m.threshold.copy_(s.exp().to(m.threshold))
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(kl=f"{losses[-1]:.4f}")
        bar.close()
    finally:
        for m in mods:
            m.threshold.grad = None
        for p, flag in flags:
            p.requires_grad_(flag)
    return losses
