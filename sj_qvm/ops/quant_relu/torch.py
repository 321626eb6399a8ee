"""QuantReLU's ``"torch"`` path, and the autograd function that the ``"cpu"`` path's kernels
(:mod:`.cpu`) run in; :mod:`.reference` is their twin.

* No autograd needed (``torch.no_grad``, or nothing requires grad): one temporary, written in
  place, ``z = x*L; z /= gamma; Q; clip; NaN -> 0; z *= gamma; z /= L``, the same operations in
  the same order as the reference, so the values are bit-identical (and no STE term). On the
  ``"cpu"`` path the compiled kernel of :mod:`.cpu` does all of it in one pass (the same
  operations again); on ``"torch"`` the in-place torch chain.
* Autograd: one ``autograd.Function``. Forward as above; it saves only ``x``. Backward, with the
  STE mask ``in = [0 < Q(z) < L]`` (what ``torch.clamp``'s gradient passes in the reference: the
  clip's ends count as outside; False for NaN)::

      dL/dx     = g * in
      dL/dgamma = sum over the broadcast dims of g * (M/L - in * x/gamma)

  (1 at and above the top level, ``M/L - x/gamma`` inside, 0 at and below level 0; QCFS).
  On the ``"cpu"`` path the compiled kernel computes both in one pass, summing gamma's terms
  per gamma value in float64; on ``"torch"`` the torch ops below.

``gamma`` is a Python float, a 0-dim tensor or a per-channel tensor already viewed to broadcast
over ``x: [B, C, *]``; ``levels`` is L; ``path`` is ``"torch"`` or ``"cpu"``, which
:mod:`.dispatch` chooses (the ``"cpu"`` path raises where its kernel cannot take the call).
"""
from __future__ import annotations

import torch

from .. import verify
from .cpu import quant_relu_backward_cpu, quant_relu_cpu
from ...checks import check_rounding


def _levels_inplace(z: torch.Tensor, levels: int, rounding: str) -> torch.Tensor:
    """``clip(Q(z), 0, L)`` in place, NaN -> 0."""
    if check_rounding(rounding) == "floor":
        z.floor_()
    elif rounding == "round":
        z.add_(0.5).floor_()
    else:
        z.ceil_()
    return z.clamp_(0, levels).nan_to_num_(nan=0.0)


@torch.no_grad()
def quant_relu_levels(x: torch.Tensor, gamma, levels: int, rounding: str) -> torch.Tensor:
    """The level ``M = clip(Q(x*L/gamma), 0, L)`` (x's dtype), no gradient."""
    z = torch.mul(x, levels)
    z.div_(gamma)
    return _levels_inplace(z, levels, rounding)


def _refused(what: str):
    from .dispatch import BackendUnavailable  # noqa: PLC0415
    return BackendUnavailable(f"quant_relu backend='cpu' cannot run: the compiled {what} "
                              "cannot take this call")


@torch.no_grad()
def _forward(x, gamma, levels, rounding, path="torch"):
    if path == "cpu":  # one pass
        out = quant_relu_cpu(x, gamma, levels, rounding)
        if out is None:
            raise _refused("kernel")
        return verify.tamper("quant_relu", "forward", out)
    return quant_relu_levels(x, gamma, levels, rounding).mul_(gamma).div_(levels)


def _reduce_to(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.ndim == 0:
        return g.sum()
    return g.sum_to_size(like.shape)


class _QuantReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, levels, rounding, path):
        ctx.levels, ctx.rounding, ctx.path = levels, rounding, path
        ctx.save_for_backward(x, gamma)
        return _forward(x, gamma, levels, rounding, path)

    @staticmethod
    def backward(ctx, g):
        x, gamma = ctx.saved_tensors
        L = ctx.levels
        if ctx.path == "cpu":  # one pass
            out = quant_relu_backward_cpu(x, g, gamma, L, ctx.rounding, ctx.needs_input_grad[0],
                                          ctx.needs_input_grad[1])
            if out is None:
                raise _refused("backward kernel")
            g_x, g_gamma = out
            return verify.tamper("quant_relu", "backward", g_x), g_gamma, None, None, None
        with torch.no_grad():
            z = torch.mul(x, L)
            z.div_(gamma)
            q = z  # Q(z), unclipped
            if ctx.rounding == "floor":
                q.floor_()
            elif ctx.rounding == "round":
                q.add_(0.5).floor_()
            else:
                q.ceil_()
            inside = (q > 0).logical_and_(q < L)
            g_x = g * inside if ctx.needs_input_grad[0] else None
            g_gamma = None
            if ctx.needs_input_grad[1]:
                # M/L - in * x/gamma: (clip(q)/L) where outside, (q/L - x/gamma) inside.
                # (x/gamma where inside, else 0: a mask product would turn x = -inf into NaN.)
                m = q.clamp_(0, L).nan_to_num_(nan=0.0).div_(L)
                m.sub_(torch.div(x, gamma).masked_fill_(inside.logical_not(), 0))
                g_gamma = _reduce_to(m.mul_(g), gamma)
        return g_x, g_gamma, None, None, None


def needs_grad(x: torch.Tensor, gamma) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or (isinstance(gamma, torch.Tensor)
                                                            and gamma.requires_grad))


def quant_relu_path(x: torch.Tensor, gamma, levels: int, rounding: str,
                    path: str = "torch") -> torch.Tensor:
    """``x: [B, *]`` -> ``a = gamma/L * clip(Q(x*L/gamma), 0, L)``, same shape and dtype, on
    ``path``. Takes the no-grad form when autograd is off or neither ``x`` nor ``gamma``
    requires grad."""
    if not needs_grad(x, gamma):
        return _forward(x, gamma, levels, rounding, path)
    return _QuantReLU.apply(x, gamma, levels, rounding, path)


def quant_relu(x: torch.Tensor, gamma, levels: int, rounding: str,
               backend: str = "auto") -> torch.Tensor:
    """:func:`quant_relu_path` on the path :func:`.dispatch.select` chooses for ``backend``."""
    from .dispatch import select  # noqa: PLC0415 -- it imports this module
    path, _ = select(backend, x, gamma, levels, rounding, needs_grad(x, gamma))
    return quant_relu_path(x, gamma, levels, rounding, path)
