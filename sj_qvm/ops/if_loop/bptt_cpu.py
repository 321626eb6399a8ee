"""The BPTT loop of :mod:`.bptt` in the compiled CPU kernels (:mod:`sj_qvm.ops.native`): one pass
forward (spikes and V_T) and one pass backward, for SpikingJelly's ``Sigmoid`` and ``ATan``
surrogates (the table of :mod:`.surrogates`, shared with the CUDA kernels). Spikes and V are
bit-identical to :mod:`.bptt`; gradients equal it up to rounding (the surrogate is evaluated in
C, as in the CUDA kernel).

The backward needs h_t = U_t - theta. Up to ``RECOMPUTE_MAX_T`` steps the forward writes no h:
it saves the input and V_0, and the backward recomputes h_t block by block with the forward's
own loop (the same bits), so training writes and holds one ``[T, N, *]`` tensor less per layer
and reads the input where it read h. Above it, the forward stores h as ``[T, N, *]``."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import buffers, native
from .. import verify
from . import cpu, surrogates
from .bptt import _reduce_to
from ..kernel_args import param


def _addr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def recompute_max_t() -> int:
    """The largest T whose backward recomputes h instead of reading it (the kernel's bound)."""
    return getattr(native._module, "RECOMPUTE_MAX_T", 0)


class _IFLoopCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v_init, v_threshold, strict, expected, sg, detach_reset, store_v_seq,
                theta_param):
        T, shape = x_seq.shape[0], x_seq.shape[1:]
        n = math.prod(shape)
        th_args = theta_param.args()
        recompute = T <= recompute_max_t()
        v0 = v_init.detach().expand(shape).contiguous()
        v = v0.clone()
        spike = buffers.empty(x_seq.shape, x_seq.dtype)
        h = None if recompute else buffers.empty(x_seq.shape, x_seq.dtype)
        v_seq = buffers.empty(x_seq.shape, x_seq.dtype) if store_v_seq else None
        x_tstride = x_seq.stride(0) if T > 1 else n
        native.call("if_forward", x_seq.data_ptr(), x_tstride, spike.data_ptr(), v.data_ptr(),
                    0, 0, 0.0, 1, 1,  # v already holds V_0
                    _addr(v_seq), _addr(h), *th_args, n, T,
                    int(strict), int(expected), native.DTYPES[x_seq.dtype], native.threads())
        if recompute:  # the backward recomputes h from x_seq and V_0
            ctx.save_for_backward(x_seq, v0, v_init, v_threshold)
        else:
            ctx.save_for_backward(h, None, v_init, v_threshold)
        ctx.args = (strict, expected, sg, detach_reset, theta_param, recompute, x_tstride)
        ctx.set_materialize_grads(False)  # an output nobody reads costs no zero tensor
        return spike, v, v_seq

    @staticmethod
    def backward(ctx, g_spike, g_v, g_vseq):
        h_or_x, v0, v_init, theta = ctx.saved_tensors
        strict, expected, (sg_id, p0, p1), detach_reset, theta_param, recompute, x_tstride = \
            ctx.args
        T, shape = h_or_x.shape[0], h_or_x.shape[1:]
        n = math.prod(shape)
        h, x = (None, h_or_x) if recompute else (h_or_x, None)
        g_spike = None if g_spike is None else g_spike.contiguous()
        g_v = None if g_v is None else g_v.contiguous()
        g_vseq = None if g_vseq is None else g_vseq.contiguous()
        dtype = h_or_x.dtype
        g_x = buffers.empty(h_or_x.shape, dtype)
        g_v0 = torch.empty(shape, dtype=dtype) if ctx.needs_input_grad[1] else None
        g_th = torch.empty(shape, dtype=dtype) if ctx.needs_input_grad[2] else None
        native.call("if_backward", _addr(h), _addr(x), x_tstride, _addr(v0), _addr(g_spike),
                    _addr(g_v), _addr(g_vseq), g_x.data_ptr(), _addr(g_v0), _addr(g_th),
                    *theta_param.args(), n, T, int(strict), int(expected),
                    int(detach_reset), sg_id, p0, p1, native.DTYPES[dtype], native.threads())
        g_x = verify.tamper("if_loop", "backward", g_x)
        return (g_x, None if g_v0 is None else _reduce_to(g_v0, v_init),
                None if g_th is None else _reduce_to(g_th, theta), None, None, None, None, None,
                None)


def call_reason(x_seq, v_init, v_threshold, surrogate_function) -> Optional[str]:
    """Why the kernels cannot take this training call (``None``: they can): as
    :func:`.cpu.call_reason`, and a surrogate in the table (:mod:`.surrogates`)."""
    why = (cpu.call_reason(x_seq, v_init, v_threshold, "if_backward")
           or cpu.param_reason(v_init, x_seq, "v_init"))
    if why is not None:
        return why
    if surrogate_function is None:
        return "the BPTT kernels need a surrogate function"
    return surrogates.unsupported_reason(surrogate_function)


def if_multi_step_bptt_cpu(x_seq, v_init: torch.Tensor, v_threshold: torch.Tensor, strict,
                           current, surrogate_function, detach_reset, store_v_seq):
    """As :func:`.bptt.if_multi_step_bptt` (tensors ``v_init`` and ``v_threshold``), or ``None``
    when the kernels cannot take the call (:func:`call_reason` says why)."""
    if call_reason(x_seq, v_init, v_threshold, surrogate_function) is not None:
        return None
    shape = x_seq.shape[1:]
    sg = surrogates.snippet(surrogate_function)
    theta_param = param(v_threshold.detach() if v_threshold.ndim else v_threshold.item(),
                        shape, x_seq.dtype)
    return _IFLoopCPU.apply(x_seq, v_init, v_threshold, bool(strict), current == "expected", sg,
                            bool(detach_reset), bool(store_v_seq), theta_param)
