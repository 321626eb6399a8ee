"""Max-pooling over spike trains that keeps the ANN's max exactly: the leading-count rule.

A max-pool after a spiking layer sees binary spikes ``s_i(t)`` of the window's neurons i, not
their levels. Pooling each step's spikes (what ``SeqToANNContainer(nn.MaxPool2d)`` does) counts a
spike whenever *any* neuron of the window fires, so the output count is ``|{t: max_i s_i(t) = 1}|``,
which overcounts as soon as two neurons fire at different steps.

**The leading-count rule.** Let ``C_i(t) = s_i(1) + ... + s_i(t)`` be neuron i's cumulative spike
count (``C_i(0) = 0``) and ``m(t) = max_i C_i(t)`` the window's leading count. Emit

    o(t) = m(t) - m(t - 1).

*Claim 1: o(t) is a spike, 0 or 1.* Each ``C_i`` is non-decreasing, so ``m`` is too and
``o(t) >= 0``. Let j lead at t (``m(t) = C_j(t)``); then
``m(t) - m(t-1) <= C_j(t) - C_j(t-1) = s_j(t) <= 1``.

*Claim 2: the output count is the window's largest count.* The sum telescopes:
``o(1) + ... + o(T) = m(T) - m(0) = max_i C_i(T) = max_i N_i``.

Both hold for any spike trains, so the rule is exact in count in both current modes. In
``current="expected"`` at T = L every ``N_i`` equals the ANN's level ``M_i`` (the QVM theorem), so the
output count is ``max_i M_i``, the ANN's max-pool of the levels, and the next layer's expected
current is exactly the ANN's. With a constant current a neuron's cumulative count is also monotone
in that current at every step, so in expected mode the output train is the spike train of the
window's strongest neuron. In ``current="instant"`` the counts ``N_i`` themselves differ from
``M_i`` (the paper's unevenness error), and the max-pool passes ``max_i N_i`` on: exact with respect
to its input, approximate with respect to the ANN.
(`benchmarks/maxpool_instant_error.py` measures it: `benchmarks/RESULTS.md`.)

Spikes scaled by a non-negative per-channel factor (θ-valued spikes) pool the same way: a window
lies within one channel, and a common factor ``a >= 0`` commutes with max and cumulative sums.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _compat
from .checks import check_bool, check_step_mode, step_forward

__all__ = ["SpikingMaxPool", "ConvertedMaxPool", "spiking_max_pool_seq", "spiking_max_pool_seq_ref"]

_MAX_POOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}


def _pool_fn(pool: nn.Module):
    for cls, fn in _MAX_POOLS.items():
        if type(pool) is cls:
            if pool.return_indices:
                raise ValueError("pool must not return indices (return_indices=True): the "
                                 "leading-count rule emits spikes, not argmax positions")
            return lambda x: fn(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                pool.ceil_mode)
    raise TypeError(f"pool must be an nn.MaxPool1d, nn.MaxPool2d or nn.MaxPool3d, "
                    f"got {type(pool).__name__}")


def spiking_max_pool_seq(x_seq: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """The leading-count rule over a whole sequence, vectorized over T.

    Args:
        x_seq: spikes ``[T, N, C, *]`` (0/1, or scaled by a non-negative per-channel factor).
        pool: the ``nn.MaxPool{1,2,3}d`` whose window, stride, padding, dilation and ceil mode apply.
    Returns:
        spikes ``[T, N, C, *out]``, ``out[t] = m(t) - m(t-1)`` with ``m(t)`` the window max of the
        cumulative counts.
    """
    fn = _pool_fn(pool)
    T = x_seq.shape[0]
    lead = fn(torch.cumsum(x_seq, 0).flatten(0, 1))
    lead = lead.view(T, x_seq.shape[1], *lead.shape[1:])
    return torch.diff(lead, dim=0, prepend=torch.zeros_like(lead[:1]))


def spiking_max_pool_seq_ref(x_seq: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Reference twin of :func:`spiking_max_pool_seq`: the rule step by step, as a streaming
    node computes it (same arguments, same result)."""
    fn = _pool_fn(pool)
    count = torch.zeros_like(x_seq[0])
    lead_prev = None
    out = []
    for t in range(x_seq.shape[0]):
        count = count + x_seq[t]
        lead = fn(count)
        out.append(lead if lead_prev is None else lead - lead_prev)
        lead_prev = lead
    return torch.stack(out)


class SpikingMaxPool(_compat.MemoryModule):
    """A SpikingJelly-style stateful max-pool over spikes (the leading-count rule, module docstring).

    Args:
        pool: the ANN's ``nn.MaxPool1d/2d/3d`` (its settings are used; it holds no weights).
        step_mode: ``"s"`` (input ``[N, C, *]`` per step, state kept between calls until
            ``functional.reset_net``) or ``"m"`` (input ``[T, N, C, *]``).

    State: ``count`` (the cumulative spike count of every input neuron, ``[N, C, *]``) and
    ``lead`` (the window maxima of ``count`` at the last step, ``[N, C, *out]``).
    """

    def __init__(self, pool: nn.Module, step_mode: str = "s"):
        super().__init__()
        _pool_fn(pool)
        self.pool = pool
        self.step_mode = check_step_mode(step_mode)
        self.register_memory("count", 0.0)
        self.register_memory("lead", 0.0)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: spikes ``[N, C, *]`` -> spikes ``[N, C, *out]``."""
        self.count = self.count + x
        lead = _pool_fn(self.pool)(self.count)
        out = lead - self.lead
        self.lead = lead
        return out

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """T steps at once: ``[T, N, C, *]`` -> ``[T, N, C, *out]``, continuing from the state."""
        if isinstance(self.count, float) and self.count == 0.0:
            out = spiking_max_pool_seq(x_seq, self.pool)
            self.count = x_seq.sum(0)
            self.lead = _pool_fn(self.pool)(self.count)
            return out
        return torch.stack([self.single_step_forward(x) for x in x_seq])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return step_forward(self, x)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode!r}"


class ConvertedMaxPool(nn.Module):
    """A max-pool inside a converted network. :class:`sj_qvm.convert.QVMNetwork` sets
    ``time_steps``, ``per_sample`` and ``expected`` (whether its neurons integrate the expected
    current) before each forward, as for its spiking layers.

    * per-sample schedule: ``[B, *]`` (each neuron's rate ``N*theta/T``, or a mean current) ->
      the pool of it. At T = L in expected mode ``N == M``, so this is the ANN's max-pool exactly.
    * per-step schedule, ``[T*B, *]`` time-folded:

      - ``on_spikes=True`` (the pool reads a spiking layer's output): the leading-count rule,
        :func:`spiking_max_pool_seq`: binary spikes whose count is the window's max count, in
        both current modes (exact with respect to the ANN in expected mode at T = L; in instant
        mode the input counts carry the unevenness error, and the pool passes their max on);
      - ``on_spikes=False`` (the pool reads analog currents, before a neuron), expected current:
        the pool of the T-mean, repeated over T. The next neuron integrates the T-mean of its
        input, and the mean of this output is the pool of the mean: exact at T = L.
      - ``on_spikes=False``, instant current: each step's currents pooled on their own (what a
        streaming network can do; approximate, as instant mode is).
    """

    def __init__(self, pool: nn.Module, on_spikes: bool):
        super().__init__()
        _pool_fn(pool)
        self.pool = pool
        self.on_spikes = check_bool(on_spikes, "on_spikes")
        self.time_steps = 1
        self.per_sample = False
        self.expected = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, *]`` (per sample) or ``[T*B, *]`` (per step) -> the pooled tensor, same layout."""
        fn = _pool_fn(self.pool)
        if self.per_sample:
            return fn(x)
        T = self.time_steps
        x_seq = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        if self.on_spikes:
            return spiking_max_pool_seq(x_seq, self.pool).flatten(0, 1)
        if self.expected:
            y = fn(x_seq.mean(0))
            return y.unsqueeze(0).expand(T, *y.shape).flatten(0, 1)
        return fn(x)

    def extra_repr(self) -> str:
        return f"on_spikes={self.on_spikes}"
