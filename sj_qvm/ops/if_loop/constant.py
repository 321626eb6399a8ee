"""The CUDA kernels on one constant current (the per-sample schedule's input form): ``q: [B, *]``
in, the same current at each of T steps.

* :func:`if_constant_cupy`: ``[T, B, *]`` spikes out (``F_CONSTANT``: the kernel reads q at every
  step, no ``[T, B, *]`` input is built); autograd as :func:`.autograd.if_multi_step_cupy`.
* :func:`sj_qvm.ops.if_rate.cupy.if_count_cupy` and ``if_rate_cupy``: only the counts (or
  ``N * theta / T``) and V_T out (``qvm_if_count``, if_rate.cuh), the rate op's CUDA path.

Both equal the torch reference on q repeated over T bit for bit (fp32), in either current: the
T-mean of T equal steps is the step itself.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...checks import check_int
from .autograd import if_multi_step_cupy


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


__all__ = ["if_constant_cupy"]
