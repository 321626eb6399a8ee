"""QuantReLU: the ANN side of QVM (eq. 4 of the paper).

    a = gamma / L * clip(Q(x * L / gamma), 0, L),    Q in {floor, round, ceil}

``round`` is round-half-**up**, ``floor(z + 1/2)``; ``torch.round`` rounds halves to even and
would disagree with a V0 = theta/2 neuron at z = 0.5, 2.5, ...
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .ops import paths
from .ops.quant_relu import quant_relu_levels, quant_relu_path
from .ops.quant_relu import dispatch as _dispatch
from .ops.quant_relu.torch import needs_grad
from .checks import ROUNDINGS, check_levels, check_positive_finite, check_rounding
from .ops.quant_relu.reference import quantize_level, quant_relu_levels_ref

__all__ = ["QuantReLU", "ROUNDINGS", "quantize_level", "channel_view", "check_levels",
           "check_rounding", "check_positive_finite"]


def channel_view(p: torch.Tensor, ndim: int, channel_dim: int = 1) -> torch.Tensor:
    """Reshape a scalar or per-channel ``[C]`` tensor so it broadcasts over ``[B, C, *]``."""
    if p.ndim == 0:
        return p
    shape = [1] * ndim
    shape[channel_dim] = p.numel()
    return p.view(shape)


class QuantReLU(nn.Module):
    """Quantized clip activation with a trainable threshold gamma (QCFS-style training).

    Args:
        levels: L >= 1, the number of quantization steps; the SNN runs T = L time-steps.
        rounding: Q, one of ``"floor"``, ``"round"`` (half-up) or ``"ceil"``; the converter gives
            the matching neuron V0 = 0, theta/2 or theta.
        threshold: gamma > 0, a float (one learnable scalar) or a 1-D sequence/tensor of per-channel
            values (channel = dim 1 of the input).
        backend: ``"auto"`` (the compiled CPU kernels where they can run, else torch, with one
            logged reason), ``"torch"`` (pure PyTorch) or ``"cpu"`` (raises where the kernels
            cannot run); ``"cupy"`` raises (there is no CUDA kernel). ``self.last_dispatch`` is
            ``(path, reason)`` of the last forward (:mod:`sj_qvm.ops.paths`).

    Shapes: ``x: [B, *]`` -> ``a: [B, *]`` with ``a in {gamma/L * M : M = 0..L}``.

    Training uses a straight-through estimator on Q only: where ``0 < Q(z) < L`` the gradient
    w.r.t. x is 1 and gamma gets ``M/L - x/gamma``; at the top level (and above) x gets 0 and gamma
    1; at level 0 (and below) both get 0 (as in QCFS, Bu et al. 2022). It
    runs as one autograd function with a hand-written backward; without autograd (``no_grad``, or
    nothing requiring grad, as in eval) as one in-place expression with no STE term
    (:mod:`sj_qvm.ops.quant_relu`, tested against the autograd-op chain in its ``reference``).

    Non-finite inputs: ``+inf`` (and a z = x*L/gamma that overflows) gives the top level L, as the
    IF neuron saturates at one spike per step; ``-inf`` gives 0. **NaN gives level 0**, with zero
    gradient: the IF neuron never fires on a NaN current (``NaN >= theta`` is false), so the ANN
    maps NaN to 0 too and the pair stays exact.

    Threshold initialisation: gamma is the largest activation the layer can output. Start it near a
    high percentile of the pre-activations (``sj_qvm.quantize`` calibrates it from data). Too small a
    gamma saturates most neurons and its gradient (+1 from every clipped neuron minus the rest) can
    drive it to zero or below, after which the layer is dead; too large a gamma wastes levels and
    zeroes small activations. Use a smaller learning rate or no weight decay for gamma if it drifts.
    """

    def __init__(self, levels: int, rounding: str = "round", threshold: float = 4.0,
                 backend: str = "auto"):
        super().__init__()
        self.levels = check_levels(levels)
        self.rounding = check_rounding(rounding)
        self.threshold = nn.Parameter(check_positive_finite(threshold, "threshold").clone())
        self.backend = paths.check_backend(backend)
        self.last_dispatch = None

    def gamma(self, ndim: int) -> torch.Tensor:
        """The threshold gamma, broadcastable over an input of ``ndim`` dims."""
        return channel_view(self.threshold, ndim)

    def level(self, x: torch.Tensor) -> torch.Tensor:
        """The integer level ``M = clip(Q(x*L/gamma), 0, L)`` as a float tensor (STE gradient)."""
        gamma = self.gamma(x.ndim)
        if torch.is_grad_enabled() and (x.requires_grad or gamma.requires_grad):
            return quant_relu_levels_ref(x, gamma, self.levels, self.rounding)
        return quant_relu_levels(x, gamma, self.levels, self.rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(x.ndim)
        self.last_dispatch = _dispatch.select(getattr(self, "backend", "auto"), x, gamma,
                                              self.levels, self.rounding, needs_grad(x, gamma))
        return quant_relu_path(x, gamma, self.levels, self.rounding, self.last_dispatch[0])

    def extra_repr(self) -> str:
        t = self.threshold
        th = f"{t.item():.4g}" if t.ndim == 0 else f"per-channel[{t.numel()}]"
        return f"levels={self.levels}, rounding={self.rounding!r}, threshold={th}"
