"""QuantReLU's forward as one pass of the compiled CPU kernel (:mod:`sj_qvm.ops.native`); the
same operations in the same order as :func:`.fused._forward`, so bit-identical to it."""
from __future__ import annotations

from numbers import Real
from typing import Optional

import torch

from .. import native
from ..if_loop.launch import index_form
from ...checks import ROUNDINGS


def _gamma_param(x: torch.Tensor, gamma):
    """``(keep-alive, addr, value, div, mod)`` for the kernels, or ``None``."""
    if isinstance(gamma, torch.Tensor):
        if gamma.dtype != x.dtype or gamma.device != x.device:
            return None
        g, div, mod = index_form(gamma.detach(), x.shape, x.dtype)
        if mod == 1:
            return None, 0, g.item(), 1, 1
        return g, g.data_ptr(), 0.0, div, mod
    if isinstance(gamma, Real):
        return None, 0, float(gamma), 1, 1
    return None


def quant_relu_backward_cpu(x: torch.Tensor, g: torch.Tensor, gamma, levels: int, rounding: str,
                            need_x: bool, need_gamma: bool):
    """``(dL/dx or None, per-element dL/dgamma terms [B, *] or None)`` of the STE, in one pass,
    or ``None`` when the kernel cannot take the call; see :mod:`.fused` for the formulas."""
    if (not native.takes(x, "quant_relu_backward") or x.numel() == 0 or g.dtype != x.dtype
            or g.shape != x.shape):
        return None
    p = _gamma_param(x, gamma)
    if p is None:
        return None
    keep, addr, value, div, mod = p
    xc, gc = x.contiguous(), g.contiguous()
    g_x = torch.empty_like(xc) if need_x else None
    g_g = torch.empty_like(xc) if need_gamma else None
    native.call("quant_relu_backward", xc.data_ptr(), gc.data_ptr(),
                0 if g_x is None else g_x.data_ptr(), 0 if g_g is None else g_g.data_ptr(),
                xc.numel(), native.DTYPES[x.dtype], addr, value, div, mod, levels,
                ROUNDINGS.index(rounding), native.threads())
    del keep
    return g_x, g_g


def quant_relu_cpu(x: torch.Tensor, gamma, levels: int, rounding: str) -> Optional[torch.Tensor]:
    """``a = clip(Q(x*L/gamma), 0, L) * gamma / L`` (NaN -> 0), or ``None`` when the kernel cannot
    take this call (not built, switched off, not a CPU float32/float64 input, or a gamma of
    another dtype, whose type promotion the torch path must do)."""
    if not native.takes(x, "quant_relu") or x.numel() == 0:
        return None
    if isinstance(gamma, torch.Tensor):
        if gamma.dtype != x.dtype or gamma.device != x.device:
            return None
        g, g_div, g_mod = index_form(gamma.detach(), x.shape, x.dtype)
        g_addr, g_value = g.data_ptr(), 0.0
        if g_mod == 1:  # one value: pass it as a scalar, so the loop runs unsegmented
            g, g_addr, g_value = None, 0, g.item()
    elif isinstance(gamma, Real):
        g, g_div, g_mod, g_addr, g_value = None, 1, 1, 0, float(gamma)
    else:
        return None
    xc = x.contiguous()
    out = torch.empty_like(xc)
    native.call("quant_relu", xc.data_ptr(), out.data_ptr(), xc.numel(), native.DTYPES[x.dtype],
                g_addr, g_value, g_div, g_mod, levels, ROUNDINGS.index(rounding), native.threads())
    del g  # kept alive through the call
    return out
