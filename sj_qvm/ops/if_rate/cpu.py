"""The rate op on the compiled CPU kernel ``if_rate`` (``sj_qvm/ops/_cpu.c``)."""
from __future__ import annotations

import torch

from .. import native
from ..if_loop.cpu import state
from ..kernel_args import IFRateArgs, param

__all__ = ["if_rate_cpu"]


def if_rate_cpu(q: torch.Tensor, time_steps: int, v_init, v_threshold, strict: bool = False):
    """T IF steps on the constant current ``q: [N, *]``, keeping only the counts:
    ``(N * theta / T [N, *], V_T [N, *])``, or ``None`` when the kernel cannot take the call.
    The signature of its twin :func:`.reference.if_rate_ref`.

    The same loop as :func:`sj_qvm.ops.if_loop.cpu.if_multi_step_cpu` on ``q`` broadcast over T, followed by
    :func:`sj_qvm.ops.if_loop.cpu.spike_rate`, without writing the ``[T, N, *]`` spike train (bit-identical results)."""
    if not native.takes(q, "if_rate") or q.ndim < 1 or q.numel() == 0 or not q.is_contiguous():
        return None
    shape = q.shape
    p = param(v_threshold, shape, q.dtype)
    if p is None:
        return None
    v, v0 = state(v_init, shape, q.dtype)
    args = IFRateArgs(q.numel(), int(time_steps), p, native.DTYPES[q.dtype], native.threads(),
                      bool(strict), v0)
    out = torch.empty(shape, dtype=q.dtype)
    native.call("if_rate", *args.if_rate(q, v, out))
    return out, v
