"""Streaming event frames: a short fine-tune of a converted SNN in the instant current, by
surrogate-gradient BPTT through :class:`~sj_qvm.QVMIFNode`.

A converted network streams event frames badly because its spiking layers rectify currents that
swing in sign from step to step (:mod:`sj_qvm.streaming`): a neuron's spike count in the instant
current is ``N = clip(floor(max_t (V0 + sum_{s<=t} q_s) / theta), 0, T)``, the running maximum of
its charge, where the ANN (and the expected current) computes the final charge. No fixed V0
undoes that for every sequence. The fine-tune lets the weights (and optionally V0) absorb it:
starting from the converted net, a few epochs of backpropagation through time on training frame
sequences, each batch at a T drawn from ``time_steps`` with its events re-integrated into T
frames, so that the net learns the instant current at every T it will stream, not one.

The loss is cross-entropy plus the KL divergence from the ANN's output on the same sample's mean
frame (the ANN stays the teacher, so the fine-tune moves the SNN toward what was converted, not
away from it). Training goes through :func:`sj_qvm.qat.fit`, the one training loop.
"""
from __future__ import annotations

from typing import Callable, Iterable, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _compat
from .checks import check_bool, check_int, check_positive
from .convert import QVMNetwork
from .functional import matched_v0
from .interop.reconstruction import distillation
from .qat import fit

__all__ = ["StreamedLogits", "finetune_instant", "learnable_v_init"]


class StreamedLogits(nn.Module):
    """``frames: [B, T, *] -> logits [B, K]``: resets ``snn``, streams the T frames one per step
    (``snn(frames.transpose(0, 1))``, ``[T, B, K]``) and averages the output over the steps.
    Every node runs in the instant current. Holds ``snn`` (its parameters are this module's)."""

    def __init__(self, snn: QVMNetwork):
        super().__init__()
        if not isinstance(snn, QVMNetwork):
            raise TypeError(f"StreamedLogits needs a converted QVMNetwork (sj_qvm.convert), got "
                            f"{type(snn).__name__}")
        self.snn = snn
        for _, act in snn.spiking_layers():
            act.node.current = "instant"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim < 3:
            raise ValueError(f"frames must be [B, T, *], got {getattr(frames, 'shape', frames)}")
        _compat.reset_net(self.snn)
        return self.snn(frames.transpose(0, 1)).mean(0)


def learnable_v_init(snn: QVMNetwork, rounding: str) -> list:
    """Give every spiking layer a per-channel V0 ``[C]`` that BPTT learns, started at the V0
    matched to ``rounding`` (``theta / 2`` for ``"round"``); returns them (``nn.Parameter``s
    registered on the nodes). The nodes then fire on ``U >= theta`` (for ``"ceil"`` the strict
    rule is dropped: in the instant current a charge lands exactly on theta with probability
    zero)."""
    params = []
    for _, act in snn.spiking_layers():
        node = act.node
        theta = torch.as_tensor(node.v_threshold).detach().flatten()
        node.v_init = nn.Parameter(torch.as_tensor(matched_v0(rounding, theta)[0]).clone().float())
        params.append(node.v_init)  # a Parameter registers on the node (a tensor would be copied)
    return params


def finetune_instant(snn: QVMNetwork, ann: nn.Module,
                     batches: Union[Iterable, Callable[[int], Iterable]], epochs: int = 3, *,
                     lr: float = 1e-3, learn_v_init: bool = False, rounding: str = "round",
                     progress: bool = True) -> QVMNetwork:
    """Fine-tune ``snn`` in the instant current by surrogate BPTT, in place; returns it in eval
    mode, every node in the instant current.

    One step on a batch ``(frames [B, T, *], labels [B])`` (T may change from batch to batch):
    ``out = mean_t snn(frames)_t``, ``loss = cross_entropy(out, labels) + KL(softmax(ann(f)) ||
    softmax(out))`` with ``f = frames.mean(1)``, the ANN's input (frames scaled so that their
    mean over T is the ANN's input at every T, as the DVS pipeline does). Adam at ``lr`` (1e-3:
    3e-4 lost 0.5 to 3.5 points in ``benchmarks/RESULTS.md``); every weight and bias of ``snn``
    is trained, θ is not (it is folded into the next layer's weights).

    Args:
        snn: a converted :class:`~sj_qvm.convert.QVMNetwork` of ``ann``.
        ann: the teacher, run in eval mode without gradient (its mode is restored after).
        batches: an iterable of batches, or ``batches(epoch) -> iterable`` (per-epoch seeding).
        epochs: passes over ``batches`` (0 leaves ``snn`` as it was).
        learn_v_init: also learn a per-channel V0 per layer (:func:`learnable_v_init`, started at
            the V0 matched to ``rounding``).
        progress: tqdm bars with the running loss.
    """
    if not isinstance(ann, nn.Module):
        raise TypeError(f"ann must be the nn.Module snn was converted from, got "
                        f"{type(ann).__name__}")
    check_int(epochs, "epochs", minimum=0)
    check_positive(lr, "lr")
    check_bool(learn_v_init, "learn_v_init")
    check_bool(progress, "progress")
    model = StreamedLogits(snn)  # checks snn, then switches its nodes to the instant current
    if learn_v_init:
        learnable_v_init(snn, rounding)
    params = list(snn.parameters())
    for p in params:
        p.requires_grad_(True)  # convert leaves the folded biases frozen
    # The ANN reads the mean frame of the streamed sample [B, T, *].
    keep, loss = distillation(ann, F.cross_entropy, teacher_input=lambda frames: frames.mean(1))
    mode = ann.training
    ann.eval()
    try:
        fit(model, torch.optim.Adam(params, lr=lr), batches, epochs, loss_fn=loss, prepare=keep,
            amp=False, progress=progress, desc="instant fine-tune")
    finally:
        ann.train(mode)
    _compat.reset_net(snn)
    return snn.eval()
