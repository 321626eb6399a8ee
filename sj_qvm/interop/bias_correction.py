"""Bias correction's two decisions: which layer's bias takes a site's correction, and adding it.

Sequential calibration (:mod:`.calibration`) moves each QuantReLU's per-channel input mean back
to the float ANN's by adding the difference to the bias of the layer that feeds it, and does the
same for the network output.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn

__all__ = ["producer", "add_bias"]


def producer(model: nn.Module, name: Optional[str]) -> Optional[nn.Module]:
    """The conv / linear / affine BatchNorm feeding QuantReLU ``name`` (or the output if None)
    and nothing else, whose bias can take a per-channel correction."""
    if not isinstance(model, fx.GraphModule):
        return None
    mods = dict(model.named_modules())
    for n in model.graph.nodes:
        if name is None and n.op == "output":
            src = n.args[0]
        elif name is not None and n.op == "call_module" and n.target == name:
            src = n.args[0]
        else:
            continue
        if isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1:
            m = mods[src.target]
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                return m
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                return m
        return None
    return None


def add_bias(layer: nn.Module, delta: torch.Tensor) -> None:
    """Add ``delta: [C]`` to ``layer``'s bias in place (a zero bias is created if it has none)."""
    with torch.no_grad():
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(delta.numel(), dtype=layer.weight.dtype,
                                                  device=layer.weight.device))
        layer.bias.add_(delta.to(layer.bias))
