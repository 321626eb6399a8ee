"""The rate op on the CUDA kernel ``qvm_if_count`` (``if_loop/if_rate.cuh``, built with
``if_loop.cu``): T IF steps on one constant current ``q: [B, *]``, only the counts (or
``N * theta / T``) and V_T out. No autograd. Both equal the torch twin on q repeated over T bit for
bit (fp32)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..if_loop import launch
from ..if_loop.cupy import _split, check_constant

__all__ = ["if_count_cupy", "if_rate_cupy"]


def if_count_cupy(q: Tensor, time_steps: int, v_init, v_threshold, strict: bool = False,
                  name: str = "if_count_cupy"):
    """``(N [B, *] fp32, V_T [B, *] fp32)``: the spike counts of T steps on ``q: [B, *]`` and
    the final membrane potential, without the spike train. No gradient: raises when autograd
    would need one."""
    T = check_constant(q, time_steps)
    theta, theta_value = _split(v_threshold, "v_threshold", q.device)
    v0, v0_value = _split(v_init, "v_init", q.device)
    tensors = [t for t in (q, theta, v0) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError(f"{name} has no backward; use if_constant_cupy under autograd")
    return launch.count(q, theta, theta_value, v0, v0_value, bool(strict), True, T)


def if_rate_cupy(q: Tensor, time_steps: int, v_init, v_threshold, strict: bool = False):
    """``(N * theta / T [B, *] in q's dtype, V_T [B, *] fp32)`` for T steps on ``q: [B, *]``,
    without the spike train; ``N * theta / T`` is computed as ``spike_seq.sum(0) * theta / T``
    is (counts are exact integers), so it equals that of :func:`if_constant_cupy`'s spikes.
    No gradient: raises when autograd would need one."""
    counts, v = if_count_cupy(q, time_steps, v_init, v_threshold, strict, "if_rate_cupy")
    th = v_threshold.to(q.dtype) if isinstance(v_threshold, Tensor) else v_threshold
    return counts.to(q.dtype) * th / time_steps, v
