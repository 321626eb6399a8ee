"""Multi-step IF loop with a hand-written BPTT backward (torch ops, any device).

Same signature and results as :func:`sj_qvm.functional.if_multi_step_ref` (spikes and V_T bit-identical,
gradients equal up to summation order), but it saves only ``h_t = U_t - theta`` and the spikes for
backward instead of autograd's whole per-step graph. Backward, from t = T down to 1, with
``sg'_t`` the surrogate derivative at h_t and ``g_V`` the gradient flowing into V_t::

    g_V  += g_v_seq_t                    (V_t is also v_seq[t], when stored)
    g_h   = (g_s_t - theta * g_V * [not detach_reset]) * sg'_t
    g_U   = g_V + g_h                    (U_t = V_{t-1} + q_t;  h_t = U_t - theta)
    g_q_t = g_U;    g_V <- g_U;    g_theta -= g_h + g_V_t * s_t
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ...checks import check_current
from ...functional import expected_current, fire


def _reduce_to(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum ``g`` over the dims that ``like`` was broadcast along."""
    while g.ndim > like.ndim:
        g = g.sum(0)
    dims = tuple(i for i, n in enumerate(like.shape) if n == 1 and g.shape[i] != 1)
    return g.sum(dims, keepdim=True) if dims else g


class _IFLoopBPTT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v_init, v_threshold, strict, current, surrogate_function, detach_reset,
                store_v_seq):
        q = expected_current(x_seq) if current == "expected" else None
        v = (torch.zeros_like(x_seq[0]) + v_init).contiguous()
        h_seq = torch.empty_like(x_seq)
        spike_seq = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq) if store_v_seq else None
        for t in range(x_seq.shape[0]):
            v.add_(x_seq[t] if q is None else q)
            torch.sub(v, v_threshold, out=h_seq[t])
            spike_seq[t] = fire(h_seq[t], strict)
            v.sub_(spike_seq[t] * v_threshold)
            if v_seq is not None:
                v_seq[t] = v
        ctx.save_for_backward(h_seq, spike_seq, v_init, v_threshold)
        ctx.strict, ctx.current, ctx.sg, ctx.detach_reset = strict, current, surrogate_function, detach_reset
        ctx.set_materialize_grads(False)  # an output nobody reads costs no zero tensor
        return spike_seq, v, v_seq

    @staticmethod
    def backward(ctx, g_spike, g_v, g_vseq):
        h_seq, spike_seq, v_init, theta = ctx.saved_tensors
        T = h_seq.shape[0]
        scalar_theta = theta.ndim == 0 and not ctx.needs_input_grad[2]
        th = theta.item() if scalar_theta else theta
        gv = torch.zeros_like(h_seq[0]) if g_v is None else g_v.clone()
        g_x = torch.empty_like(h_seq)
        g_theta = torch.zeros_like(h_seq[0]) if ctx.needs_input_grad[2] else None
        for t in range(T - 1, -1, -1):
            if g_vseq is not None:  # not in place: gv may be g_x[t + 1]
                gv = gv + g_vseq[t]
            with torch.enable_grad():
                h = h_seq[t].detach().requires_grad_()
                s = fire(h, ctx.strict, ctx.sg)
            g_s = torch.zeros_like(gv) if g_spike is None else g_spike[t]
            if not ctx.detach_reset:
                g_s = torch.add(g_s, gv, alpha=-th) if scalar_theta else g_s - th * gv
            # sg'(h_t) * g_s, through the surrogate's own backward.
            (g_h,) = torch.autograd.grad(s, h, g_s)
            if g_theta is not None:
                g_theta -= g_h + gv * spike_seq[t]
            gv = torch.add(gv, g_h, out=g_x[t])
        if ctx.current == "expected":
            g_x = (g_x.sum(0) / T).expand_as(g_x).clone()
        g_v0 = _reduce_to(gv, v_init) if ctx.needs_input_grad[1] else None
        g_th = _reduce_to(g_theta, theta) if g_theta is not None else None
        return g_x, g_v0, g_th, None, None, None, None, None


def if_multi_step_bptt(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                       current: str = "instant", surrogate_function: Optional[Callable] = None,
                       detach_reset: bool = False, store_v_seq: bool = False):
    """``x_seq: [T, N, *]`` -> ``(spike_seq [T, N, *], v [N, *], v_seq [T, N, *] or None)``.

    ``v_init`` and ``v_threshold`` are floats or tensors broadcastable to ``[N, *]``; tensors that
    require grad get gradients. Needs a surrogate: use the inference path when no grad is needed.
    ``backend="auto"`` of :mod:`.dispatch`: on CPU float32/float64 with SJ's Sigmoid or ATan the
    compiled kernels of :mod:`.bptt_cpu` where they are built, else
    :func:`if_multi_step_bptt_torch`.
    """
    check_current(current)
    if surrogate_function is None:
        raise ValueError("surrogate_function is required for BPTT")
    from . import dispatch  # noqa: PLC0415 -- it imports this module
    v_init, v_threshold = dispatch.as_tensor(v_init, x_seq), dispatch.as_tensor(v_threshold, x_seq)
    path, _ = dispatch.select("auto" if not x_seq.is_cuda else "torch", x_seq, v_init,
                              v_threshold, strict=strict, current=current,
                              surrogate_function=surrogate_function, detach_reset=detach_reset,
                              needs_grad=True)
    return dispatch.run(path, x_seq, v_init, v_threshold, strict, current, surrogate_function,
                        detach_reset, store_v_seq, needs_grad=True)


def if_multi_step_bptt_torch(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                             current: str = "instant",
                             surrogate_function: Optional[Callable] = None,
                             detach_reset: bool = False, store_v_seq: bool = False):
    """The torch loop with the hand-written backward (any device and dtype): same signature
    and results as :func:`if_multi_step_bptt`."""
    check_current(current)
    if surrogate_function is None:
        raise ValueError("surrogate_function is required for BPTT")
    from .dispatch import as_tensor  # noqa: PLC0415
    return _IFLoopBPTT.apply(x_seq, as_tensor(v_init, x_seq), as_tensor(v_threshold, x_seq),
                             strict, current, surrogate_function, detach_reset, store_v_seq)
