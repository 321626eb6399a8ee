"""Streaming event frames through a converted SNN: the first layer's V0 fitted to the instant
current (:func:`calibrate_instant`), and the delayed readout (:func:`delayed_readout`).

A converted network's first spiking layer receives the raw frame current ``q_t = W x_t + b``. On
event frames ``x_t`` (sparse counts, most pixels 0 in any one frame) that current swings between
large positive and negative values from step to step, around a small mean. An IF neuron in the
instant current cannot take back a spike it fired on a positive swing, so it rectifies the
swings: its spike count N exceeds the level M the expected current gives, and the excess grows
with T (the frames grow sparser and, scaled to keep their mean, swing further).
:func:`calibrate_instant` removes that excess on average: it lowers or raises each channel's
initial membrane potential V0 until the channel's mean instant spike count over some training
sequences equals its mean expected-current count. Later layers receive spikes, not analog frames;
fitting their V0 as well lost accuracy on the synthetic releases (``benchmarks/RESULTS.md``), so
only the first layer is fitted by default.

The charge a streamed sample leaves in the later layers reaches the output some steps after the
frame that caused it, so the first outputs of a sequence read a net that has seen little of it.
:func:`delayed_readout` averages the output over the last steps only.
"""
from __future__ import annotations

import torch

from . import _compat
from .checks import check_int
from .convert import QVMNetwork

__all__ = ["READOUT_DELAY", "calibrate_instant", "channel_spike_counts", "delayed_readout"]

#: The delayed readout's default: the output is read from step floor(T / 2) on (the second half).
READOUT_DELAY = 0.5


def delayed_readout(y_seq: torch.Tensor, delay: float = READOUT_DELAY) -> torch.Tensor:
    """The logits of an output sequence ``y_seq: [T, B, *]`` read late: ``[B, *]``, the mean of
    ``y_seq[t]`` over the steps ``t >= floor(delay * T)`` (``delay`` in [0, 1); 0 is the plain
    mean over all T steps; at T = 1 it is always the one step)."""
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay < 1:
        raise ValueError(f"delay must be a number in [0, 1), got {delay!r}")
    if not isinstance(y_seq, torch.Tensor) or y_seq.ndim < 2 or y_seq.shape[0] == 0:
        raise ValueError(f"y_seq must be [T, B, *] with T >= 1, got "
                         f"{getattr(y_seq, 'shape', type(y_seq))}")
    return y_seq[int(delay * y_seq.shape[0]):].mean(0)


def channel_spike_counts(snn: QVMNetwork, x_seq: torch.Tensor, layer: int) -> torch.Tensor:
    """Mean spike count per channel ``[C]`` of spiking layer ``layer`` (graph order) for the input
    ``x_seq: [T, B, *]``: its spikes ``[T, B, C, *]`` summed over T, averaged over every other dim.
    Resets the network before and after."""
    node = snn.spiking_layers()[layer][1].node
    seen = []
    hook = node.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            _compat.reset_net(snn)
            snn(x_seq)
    finally:
        hook.remove()
        _compat.reset_net(snn)
    counts = seen[0].sum(0)  # [B, C, *]
    return counts.transpose(0, 1).reshape(counts.shape[1], -1).double().mean(1)


def _set_currents(snn: QVMNetwork, current: str) -> None:
    for _, act in snn.spiking_layers():
        act.node.current = current


def calibrate_instant(snn: QVMNetwork, x_seq: torch.Tensor, layers: int = 1,
                      iters: int = 16) -> QVMNetwork:
    """Fit the per-channel V0 of the first ``layers`` spiking layers to the instant current (in
    place).

    For each fitted layer l (in graph order, each with the earlier ones already fitted) and each
    channel c, V0_c is found by bisection on ``[-2 theta_c, theta_c]`` so that the channel's mean
    spike count over ``x_seq`` in the instant current equals the one the expected current gives
    (the ANN's mean level at T = L): ``mean N_c(V0_c) = mean M_c``. A neuron's count never
    decreases as V0 rises, so the bisection converges; after ``iters`` halvings V0_c is within
    ``3 theta_c / 2**iters`` of the crossing. The fitted V0 are tensors on the nodes' ``v_init``
    (fire on ``U >= theta``), used from the next reset; θ and the weights are untouched. The
    expected current is exact only with the matched V0: convert again for it, or set ``v_init``
    back to the rounding's name.

    Args:
        snn: a converted :class:`~sj_qvm.convert.QVMNetwork`; it runs in the instant current
            afterwards (its nodes' ``current``), whatever it ran before.
        x_seq: training frame sequences ``[T, B, *]`` at the T the network will stream (a few dozen
            samples; never the test set): the fitted V0 hold for that T.
        layers: how many spiking layers, from the input, to fit (1 <= layers <= their number).
        iters: bisection steps (>= 1).
    Returns:
        ``snn``.
    """
    if not isinstance(snn, QVMNetwork):
        raise TypeError(f"calibrate_instant needs a converted QVMNetwork (sj_qvm.convert), got "
                        f"{type(snn).__name__}")
    acts = [act for _, act in snn.spiking_layers()]
    check_int(layers, "layers", minimum=1)
    if layers > len(acts):
        raise ValueError(f"layers={layers} but the network has {len(acts)} spiking layers")
    check_int(iters, "iters", minimum=1)
    if not isinstance(x_seq, torch.Tensor) or x_seq.ndim < 3 or x_seq.numel() == 0:
        raise ValueError("x_seq must be a non-empty frame sequence [T, B, *], got "
                         f"{getattr(x_seq, 'shape', type(x_seq))}")
    for l in range(layers):
        node = acts[l].node
        _set_currents(snn, "expected")
        target = channel_spike_counts(snn, x_seq, l)
        _set_currents(snn, "instant")
        theta = torch.as_tensor(node.v_threshold, dtype=torch.float64).flatten()
        theta = theta.expand(target.numel()) if theta.numel() == 1 else theta
        lo, hi = -2.0 * theta, theta.clone()
        for _ in range(iters):
            mid = (lo + hi) / 2
            node.v_init = mid.to(x_seq.dtype)
            over = channel_spike_counts(snn, x_seq, l) > target
            hi, lo = torch.where(over, mid, hi), torch.where(over, lo, mid)
        node.v_init = ((lo + hi) / 2).to(x_seq.dtype)
    _set_currents(snn, "instant")
    _compat.reset_net(snn)
    return snn
