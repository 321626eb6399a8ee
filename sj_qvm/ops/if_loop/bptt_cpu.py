"""The BPTT loop of :mod:`.bptt` in the compiled CPU kernels (:mod:`sj_qvm.ops.native`): one pass
forward (spikes, V_T and h_t = U_t - theta stored for backward) and one pass backward, for
SpikingJelly's ``Sigmoid`` and ``ATan`` surrogates (the table of :mod:`.surrogates`, shared with
the CUDA kernels). Spikes and V are bit-identical to :mod:`.bptt`; gradients equal it up to
rounding (the surrogate is evaluated in C, as in the CUDA kernel)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import buffers, native
from . import surrogates
from .bptt import _reduce_to
from .cpu import _param


def _addr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


class _IFLoopCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v_init, v_threshold, strict, expected, sg, detach_reset, store_v_seq,
                theta_param):
        T, shape = x_seq.shape[0], x_seq.shape[1:]
        n = math.prod(shape)
        keep, th_addr, th_value, th_div, th_mod = theta_param
        v = torch.empty(shape, dtype=x_seq.dtype)
        v.copy_(v_init.detach().expand_as(v))
        spike = buffers.empty(x_seq.shape, x_seq.dtype)
        h = buffers.empty(x_seq.shape, x_seq.dtype)
        v_seq = buffers.empty(x_seq.shape, x_seq.dtype) if store_v_seq else None
        native.call("if_forward", x_seq.data_ptr(), x_seq.stride(0) if T > 1 else n,
                    spike.data_ptr(), v.data_ptr(), _addr(v_seq), h.data_ptr(), th_addr,
                    th_value, th_div, th_mod, n, T, int(strict), int(expected),
                    native.DTYPES[x_seq.dtype], native.threads())
        ctx.save_for_backward(h, v_init, v_threshold)
        ctx.args = (strict, expected, sg, detach_reset, theta_param)
        ctx.set_materialize_grads(False)  # an output nobody reads costs no zero tensor
        return spike, v, v_seq

    @staticmethod
    def backward(ctx, g_spike, g_v, g_vseq):
        h, v_init, theta = ctx.saved_tensors
        strict, expected, (sg_id, p0, p1), detach_reset, (_, th_addr, th_value, th_div,
                                                          th_mod) = ctx.args
        T, shape = h.shape[0], h.shape[1:]
        n = math.prod(shape)
        g_spike = None if g_spike is None else g_spike.contiguous()
        g_v = None if g_v is None else g_v.contiguous()
        g_vseq = None if g_vseq is None else g_vseq.contiguous()
        g_x = buffers.empty(h.shape, h.dtype)
        g_v0 = torch.empty(shape, dtype=h.dtype) if ctx.needs_input_grad[1] else None
        g_th = torch.empty(shape, dtype=h.dtype) if ctx.needs_input_grad[2] else None
        native.call("if_backward", h.data_ptr(), _addr(g_spike), _addr(g_v), _addr(g_vseq),
                    g_x.data_ptr(),
                    _addr(g_v0), _addr(g_th), th_addr, th_value, th_div, th_mod, n, T,
                    int(strict), int(expected), int(detach_reset), sg_id, p0, p1,
                    native.DTYPES[h.dtype], native.threads())
        return (g_x, None if g_v0 is None else _reduce_to(g_v0, v_init),
                None if g_th is None else _reduce_to(g_th, theta), None, None, None, None, None,
                None)


def if_multi_step_bptt_cpu(x_seq, v_init: torch.Tensor, v_threshold: torch.Tensor, strict,
                           current, surrogate_function, detach_reset, store_v_seq):
    """As :func:`.bptt.if_multi_step_bptt` (tensors ``v_init`` and ``v_threshold``), or ``None``
    when the kernels cannot take the call (not built or off, not CPU float32/float64, a step
    that is not one contiguous block, a surrogate outside the table, or tensors of another
    dtype)."""
    if not native.takes(x_seq, "if_backward") or x_seq.ndim < 2 or x_seq.shape[0] == 0:
        return None
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    n = math.prod(shape)
    if n == 0 or not x_seq[0].is_contiguous() or (T > 1 and x_seq.stride(0) not in (0, n)):
        return None
    if v_init.dtype != x_seq.dtype or v_init.device != x_seq.device:
        return None
    try:
        sg = surrogates.snippet(surrogate_function)
    except surrogates.UnsupportedSurrogate:
        return None
    if sg[0] == surrogates.SG_NONE:
        return None
    theta_param = _param(v_threshold.detach() if v_threshold.ndim else v_threshold.item(),
                         shape, x_seq.dtype)
    if theta_param is None:
        return None
    return _IFLoopCPU.apply(x_seq, v_init, v_threshold, bool(strict), current == "expected", sg,
                            bool(detach_reset), bool(store_v_seq), theta_param)
