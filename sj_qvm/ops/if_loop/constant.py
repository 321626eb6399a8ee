"""The CUDA kernels on one constant current (the per-sample schedule's input form): ``q: [B, *]``
in, the same current at each of T steps.

* :func:`if_constant_cupy`: ``[T, B, *]`` spikes out (``F_CONSTANT``: the kernel reads q at every
  step, no ``[T, B, *]`` input is built); autograd as :func:`.autograd.if_multi_step_cupy`.
* :func:`if_count_cupy`: only the counts N and V_T out; :func:`if_rate_cupy`: ``N * theta / T``
  and V_T out (``qvm_if_count``, if_rate.cuh): for
  a layer whose spike train nobody reads, as :func:`.cpu.if_rate_cpu` on the CPU. No autograd.

Both equal the torch reference on q repeated over T bit for bit (fp32), in either current: the
T-mean of T equal steps is the step itself.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...checks import check_int
from . import launch
from .autograd import _split, if_multi_step_cupy


def _check(q, time_steps) -> int:
    T = check_int(time_steps, "time_steps", minimum=1)
    if not isinstance(q, Tensor) or q.ndim < 1:
        raise ValueError(f"q must be a tensor [B, *], got "
                         f"{tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__}")
    return T


def if_constant_cupy(q: Tensor, time_steps: int, v_init, v_threshold, strict: bool = False,
                     surrogate_function=None, detach_reset: bool = False,
                     store_v_seq: bool = False, spike_dtype: Optional[torch.dtype] = None):
    """T soft-reset IF steps on one constant current, in one kernel launch: ``q: [B, *]`` in,
    ``(spike_seq [T, B, *], v [B, *] fp32, v_seq [T, B, *] fp32 or None)`` out.

    :func:`.autograd.if_multi_step_cupy` on ``q.unsqueeze(0).expand(T, ...)``, which is the view
    the per-sample schedule hands a node (that function takes such a view the same way).
    Arguments as there; ``time_steps`` T >= 1.
    """
    T = _check(q, time_steps)
    return if_multi_step_cupy(q.contiguous().unsqueeze(0).expand(T, *q.shape), v_init,
                              v_threshold, strict, "expected", surrogate_function, detach_reset,
                              store_v_seq, spike_dtype)


def if_count_cupy(q: Tensor, time_steps: int, v_init, v_threshold, strict: bool = False,
                  name: str = "if_count_cupy"):
    """``(N [B, *] fp32, V_T [B, *] fp32)``: the spike counts of T steps on ``q: [B, *]`` and
    the final membrane potential, without the spike train. No gradient: raises when autograd
    would need one."""
    T = _check(q, time_steps)
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


__all__ = ["if_constant_cupy", "if_count_cupy", "if_rate_cupy"]
