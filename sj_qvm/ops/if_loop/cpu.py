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

from .. import native
from .launch import index_form


def if_multi_step_cpu(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                      current: str = "instant", store_v_seq: bool = False) -> Optional[tuple]:
    """``(spike_seq [T, N, *], v [N, *], v_seq or None)``, or ``None`` when the kernel cannot take
    this call (not built or switched off, not CPU float32/float64, a step that is not one
    contiguous block, or a threshold of another dtype)."""
    if not native.takes(x_seq) or x_seq.ndim < 2 or x_seq.shape[0] == 0:
        return None
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    n = math.prod(shape)
    if n == 0 or not x_seq[0].is_contiguous() or (T > 1 and x_seq.stride(0) not in (0, n)):
        return None
    if isinstance(v_threshold, torch.Tensor):
        if v_threshold.dtype != x_seq.dtype or v_threshold.device != x_seq.device:
            return None
        th, th_div, th_mod = index_form(v_threshold, shape, x_seq.dtype)
        th_addr, th_value = th.data_ptr(), 0.0
    elif isinstance(v_threshold, Real):
        th, th_div, th_mod, th_addr, th_value = None, 1, 1, 0, float(v_threshold)
    else:
        return None
    v = torch.empty(shape, dtype=x_seq.dtype)
    v.copy_(torch.as_tensor(v_init, dtype=v.dtype).expand_as(v))
    spike_seq = torch.empty(x_seq.shape, dtype=x_seq.dtype)
    v_seq = torch.empty(x_seq.shape, dtype=x_seq.dtype) if store_v_seq else None
    native.call("if_forward", x_seq.data_ptr(), x_seq.stride(0) if T > 1 else n,
                spike_seq.data_ptr(), v.data_ptr(), 0 if v_seq is None else v_seq.data_ptr(),
                th_addr, th_value, th_div, th_mod, n, T, int(bool(strict)),
                int(current == "expected"), native.DTYPES[x_seq.dtype], native.threads())
    del th  # kept alive through the call
    return spike_seq, v, v_seq
