"""The no-grad multi-step IF loop as one compiled CPU kernel (:mod:`sj_qvm.ops.native`).

One pass: it reads each input step once (in expected mode it averages them first, in blocks that
stay in cache), writes each spike once and keeps V in cache over the T steps. An input broadcast
over T (stride 0 on dim 0, what ``convert``'s per-sample schedule passes) is read once. Same
predicate and arithmetic as :mod:`.inference`'s torch loop, so spikes, V_T and v_seq are
bit-identical to it (and to :func:`sj_qvm.functional.if_multi_step_ref`).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional

import torch

from .. import buffers, native
from ..kernel_args import Param, param

__all__ = ["if_multi_step_cpu", "spike_rate"]


def layout_reason(x_seq: torch.Tensor, kernel: str = "if_forward") -> Optional[str]:
    """Why the compiled kernel cannot read ``x_seq: [T, N, *]`` (``None``: it can): the
    extension, a CPU float32/float64 tensor, each step one contiguous block."""
    why = native.input_reason(x_seq, kernel)
    if why is not None:
        return why
    if x_seq.ndim < 2 or x_seq.shape[0] == 0:
        return f"x_seq must be [T, N, *] with T >= 1, got shape {tuple(x_seq.shape)}"
    n = math.prod(x_seq.shape[1:])
    if n and (not x_seq[0].is_contiguous()
              or (x_seq.shape[0] > 1 and x_seq.stride(0) not in (0, n))):
        return (f"x_seq's steps are not one contiguous block each (strides {x_seq.stride()}); "
                "pass x_seq.contiguous()")
    return None


def param_reason(p, like: torch.Tensor, name: str, same_dtype: bool = True) -> Optional[str]:
    """Why the kernels cannot read ``p`` (theta or V0) beside the input ``like``."""
    if isinstance(p, torch.Tensor) and ((same_dtype and p.dtype != like.dtype)
                                        or p.device != like.device):
        return (f"{name} is {p.dtype} on {p.device}, the input {like.dtype} on {like.device} "
                "(the compiled kernels read both in the input's dtype)")
    if not isinstance(p, (torch.Tensor, Real)):
        return f"{name} must be a float or a tensor, got {type(p).__name__}"
    return None


def call_reason(x_seq: torch.Tensor, v_init, v_threshold, kernel: str = "if_forward"):
    """Why the kernel cannot take this call (``None``: it can). A CPU ``v_init`` of another
    dtype is taken (the state buffer is filled from it in Python)."""
    return (layout_reason(x_seq, kernel) or param_reason(v_threshold, x_seq, "v_threshold")
            or param_reason(v_init, x_seq, "v_init", same_dtype=False))


def if_multi_step_cpu(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                      current: str = "instant", store_v_seq: bool = False) -> Optional[tuple]:
    """``(spike_seq [T, N, *], v [N, *], v_seq or None)``, or ``None`` when the kernel cannot take
    this call (:func:`call_reason` says why)."""
    if call_reason(x_seq, v_init, v_threshold) is not None:
        return None
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    n = math.prod(shape)
    th = param(v_threshold, shape, x_seq.dtype)
    v, v0 = _state(v_init, shape, x_seq.dtype)
    spike_seq = buffers.empty(x_seq.shape, x_seq.dtype)
    v_seq = buffers.empty(x_seq.shape, x_seq.dtype) if store_v_seq else None
    native.call("if_forward", x_seq.data_ptr(), x_seq.stride(0) if T > 1 else n,
                spike_seq.data_ptr(), v.data_ptr(), *v0,
                0 if v_seq is None else v_seq.data_ptr(), 0,
                *th.args(), n, T, int(bool(strict)),
                int(current == "expected"), native.DTYPES[x_seq.dtype], native.threads())
    del th, v0  # kept alive through the call
    return spike_seq, v, v_seq


def _state(v_init, shape, dtype):
    """``(v, v0)``: the ``[N, *]`` state buffer the kernel runs in place, and the kernel's V_0
    arguments ``(fill, *Param)``. The kernel writes V_0 into each block of v itself (no pass of
    its own over v) wherever it can read ``v_init`` (:func:`..kernel_args.param`); otherwise v is
    filled here."""
    v = torch.empty(shape, dtype=dtype)
    p = param(v_init, shape, dtype)
    if p is None:
        v.copy_(torch.as_tensor(v_init, dtype=dtype).expand_as(v))
        return v, _V0Args(0, Param(None, 0, 0.0))
    return v, _V0Args(1, p)


class _V0Args(tuple):
    """``(fill, addr, value, div, mod)`` that keeps V_0's buffer alive while it is held."""

    def __new__(cls, fill: int, p: Param):
        self = super().__new__(cls, (fill,) + p.args())
        self.keep = p.tensor
        return self


def spike_rate(spike_seq: torch.Tensor, v_threshold, compiled: bool = True) -> torch.Tensor:
    """``N * theta / T`` with ``N = spike_seq.sum(0)``, ``T = spike_seq.shape[0]``:
    ``[T, N, *] -> [N, *]``, the mean current a per-sample layer passes on; ``v_threshold`` a float or a tensor broadcastable to ``[N, *]``.
    Computed as ``spike_seq.sum(0) * theta / T`` (in that order, so that N == M gives the ANN's
    ``M * gamma / L`` bit for bit), in one compiled pass where it can and ``compiled`` (the
    node's loop ran the ``cpu`` path), else in torch."""
    shape = spike_seq.shape[1:]
    ok = (compiled and native.takes(spike_seq, "spike_rate") and spike_seq.is_contiguous()
          and spike_seq.numel() > 0)
    p = param(v_threshold, shape, spike_seq.dtype) if ok else None
    if p is None:
        return spike_seq.sum(0) * v_threshold / spike_seq.shape[0]
    out = torch.empty(shape, dtype=spike_seq.dtype)
    native.call("spike_rate", spike_seq.data_ptr(), out.data_ptr(), math.prod(shape),
                spike_seq.shape[0], *p.args(), native.DTYPES[spike_seq.dtype],
                native.threads())
    del p
    return out
