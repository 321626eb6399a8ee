"""QuantReLU's forward as one pass of the compiled CPU kernel (:mod:`sj_qvm.ops.native`); the
same operations in the same order as :func:`.torch._forward`, so bit-identical to it."""
from __future__ import annotations

from typing import Optional

import torch

from .. import native
from ..kernel_args import QuantArgs, param


def quant_relu_backward_cpu(x: torch.Tensor, g: torch.Tensor, gamma, levels: int, rounding: str,
                            need_x: bool, need_gamma: bool):
    """``(dL/dx [B, *] or None, dL/dgamma in gamma's shape or None)`` of the STE in one pass
    (the kernel sums gamma's terms per gamma value, in float64), or ``None`` when the kernel
    cannot take the call; see :mod:`.torch` for the formulas."""
    if (not native.takes(x, "quant_relu_backward") or x.numel() == 0 or g.dtype != x.dtype
            or g.shape != x.shape):
        return None
    if need_gamma and not isinstance(gamma, torch.Tensor):
        return None
    p = param(gamma, x.shape, x.dtype)
    if p is None:
        return None
    mod = p.mod
    xc, gc = x.contiguous(), g.contiguous()
    args = QuantArgs(xc.numel(), p, levels, rounding, native.DTYPES[x.dtype], native.threads())
    g_x = torch.empty_like(xc) if need_x else None
    acc = torch.zeros(args.threads, mod, dtype=torch.float64) if need_gamma else None
    native.call("quant_relu_backward", *args.backward(xc, gc, g_x, acc))
    g_gamma = None
    if acc is not None:
        total = acc.sum(0).to(x.dtype)
        if mod == gamma.numel():  # one column per gamma value, in gamma's order
            g_gamma = total.view(gamma.shape)
        else:  # gamma was expanded to one value per element of x
            g_gamma = total.view(x.shape).sum_to_size(gamma.shape)
    return g_x, g_gamma


def quant_relu_cpu(x: torch.Tensor, gamma, levels: int, rounding: str) -> Optional[torch.Tensor]:
    """``a = clip(Q(x*L/gamma), 0, L) * gamma / L`` (NaN -> 0), or ``None`` when the kernel cannot
    take this call (not built, switched off, not a CPU float32/float64 input, or a gamma of
    another dtype, whose type promotion the torch path must do)."""
    if not native.takes(x, "quant_relu") or x.numel() == 0:
        return None
    g = param(gamma, x.shape, x.dtype)
    if g is None:
        return None
    xc = x.contiguous()
    out = torch.empty_like(xc)
    args = QuantArgs(xc.numel(), g, levels, rounding, native.DTYPES[x.dtype], native.threads())
    native.call("quant_relu", *args.forward(xc, out))
    return out
