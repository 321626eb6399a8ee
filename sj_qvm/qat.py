"""Quantization-aware training rules shared by every QAT loop (the DVS pipeline, the digits job).

One rule lives here today: after each optimizer step every QuantReLU threshold gamma is clamped to
``gamma >= MIN_THRESHOLD``. A gamma pushed to zero or below by a large step (its gradient is +1
from every clipped neuron) kills the layer for good, and ``convert`` then refuses the model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .quant import QuantReLU

__all__ = ["MIN_THRESHOLD", "clamp_thresholds"]

#: The smallest threshold gamma a QAT step may leave (the value ``interop.finetune`` uses too).
MIN_THRESHOLD = 1e-3


def clamp_thresholds(model: nn.Module, min_threshold: float = MIN_THRESHOLD) -> None:
    """Clamp every QuantReLU threshold of ``model`` to ``>= min_threshold``, in place.

    Call it after each ``optimizer.step()``. A NaN threshold (a diverged step) is set to
    ``min_threshold`` as well. No host-device synchronisation.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuantReLU):
                th = m.threshold
                # ``~(th >= min)`` and not ``th < min``: NaN compares false both ways.
                th.masked_fill_(~(th >= min_threshold), min_threshold)
