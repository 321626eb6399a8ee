"""The IF loop's ``"torch"`` path: pure PyTorch, any device and dtype, never compiled code. Its
twin is :func:`sj_qvm.functional.if_multi_step_ref` (:mod:`.reference`); both functions here
have the twin's signature (a test compares the ``inspect.signature``\\ s) and bit-identical spikes
and V_T.

* :func:`if_multi_step_torch`: no grad; writes in place and stores nothing for backward.
  ``surrogate_function`` and ``detach_reset`` shape only the backward, so it accepts and ignores
  them. ``U >= theta`` is tested as ``U - theta >= 0`` in the reference, which IEEE subtraction
  makes the same predicate, and ``V - theta * s`` with ``s`` in {0, 1} is exact either way. It
  runs at 4-12x a plain ``clone`` of the input, the compiled kernel of :mod:`.cpu` at about 2x
  (benchmarks/RESULTS.md).
* :func:`if_multi_step_bptt_torch`: the loop with a hand-written BPTT backward (gradients equal
  the twin's up to summation order). It saves only ``h_t = U_t - theta`` and the spikes for
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


def _check_surrogate(surrogate_function) -> None:
    # A bool here is a caller still passing store_v_seq as the 6th positional argument.
    if surrogate_function is not None and not callable(surrogate_function):
        raise TypeError("surrogate_function must be None or a callable (SJ surrogate), got "
                        f"{type(surrogate_function).__name__} {surrogate_function!r}; pass "
                        "store_v_seq by keyword")


@torch.no_grad()
def if_multi_step_torch(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                        current: str = "instant", surrogate_function: Optional[Callable] = None,
                        detach_reset: bool = False, store_v_seq: bool = False):
    """The torch loop (any device and dtype): same signature and results."""
    check_current(current)
    _check_surrogate(surrogate_function)
    q = expected_current(x_seq) if current == "expected" else None
    v = torch.empty_like(x_seq[0])
    v.copy_(torch.as_tensor(v_init, dtype=v.dtype, device=v.device).expand_as(v))
    spike_seq = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq) if store_v_seq else None
    compare = torch.gt if strict else torch.ge
    scalar = not isinstance(v_threshold, torch.Tensor)
    for t in range(x_seq.shape[0]):
        v.add_(x_seq[t] if q is None else q)
        spike = compare(v, v_threshold)
        spike_seq[t].copy_(spike)
        if scalar:
            v.sub_(spike_seq[t], alpha=v_threshold)
        else:
            v.sub_(spike_seq[t] * v_threshold)
        if v_seq is not None:
            v_seq[t].copy_(v)
    return spike_seq, v, v_seq


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


def if_multi_step_bptt_torch(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                             current: str = "instant",
                             surrogate_function: Optional[Callable] = None,
                             detach_reset: bool = False, store_v_seq: bool = False):
    """The torch loop with the hand-written backward (any device and dtype): same signature
    and results as :func:`.dispatch.if_multi_step_bptt`."""
    check_current(current)
    if surrogate_function is None:
        raise ValueError("surrogate_function is required for BPTT")
    return _IFLoopBPTT.apply(x_seq, as_tensor(v_init, x_seq), as_tensor(v_threshold, x_seq),
                             strict, current, surrogate_function, detach_reset, store_v_seq)


def as_tensor(p, like: torch.Tensor) -> torch.Tensor:
    return p if isinstance(p, torch.Tensor) else torch.tensor(p, dtype=like.dtype,
                                                              device=like.device)
