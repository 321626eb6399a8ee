"""The reference twin of :func:`.fused.quant_relu`: a straight-through estimator built from
autograd ops (QCFS-style). ``gamma`` is a scalar or already viewed to broadcast over ``x``.

    z = x * L / gamma;   M = clip(Q(z) + (z - z.detach()), 0, L);   a = M * gamma / L

The forward value of ``z - z.detach()`` is exactly 0 for finite z; for an infinite z it is
``inf - inf = NaN``, so that term is taken as 0 there, and a NaN level is taken as 0 (the IF
neuron never fires on NaN). For finite inputs this is the formulation QuantReLU always used.
"""
from __future__ import annotations

import torch

from ...checks import check_rounding

_Q = {"floor": torch.floor, "round": lambda z: torch.floor(z + 0.5), "ceil": torch.ceil}


def quantize_level(z: torch.Tensor, rounding: str) -> torch.Tensor:
    """Q(z) for Q in {floor, round (half-up), ceil}; no clipping, no gradient."""
    return _Q[check_rounding(rounding)](z)


def quant_relu_levels_ref(x: torch.Tensor, gamma, levels: int, rounding: str) -> torch.Tensor:
    """The level ``M: [B, *]`` (float, x's dtype) with the straight-through gradient."""
    z = x * levels / gamma
    zd = z.detach()
    m = quantize_level(zd, rounding) + torch.nan_to_num(z - zd, nan=0.0, posinf=0.0, neginf=0.0)
    m = torch.clamp(m, 0, levels)
    return torch.where(torch.isnan(m), torch.zeros((), dtype=m.dtype, device=m.device), m)


def quant_relu_ref(x: torch.Tensor, gamma, levels: int, rounding: str) -> torch.Tensor:
    """``x: [B, *]`` -> ``a = M * gamma / L``, same shape."""
    return quant_relu_levels_ref(x, gamma, levels, rounding) * gamma / levels
