"""Which ANN ops convert exactly: the linear ops a converted graph may hold between neurons, and
the hint an unsupported op's error gives. :func:`check_node` is the one check, used by
:func:`sj_qvm.convert.convert`.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import ConversionError, qualify
from .quant import QuantReLU

__all__ = ["check_node", "MAX_POOLS"]


# Linear ops that act on every time-step alike (module types, in eval mode).
_LINEAR_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.ZeroPad2d,
)
_LINEAR_FUNCTIONS = {
    operator.add, torch.add, operator.getitem, torch.cat, torch.concat, torch.flatten,
    torch.reshape, torch.squeeze, torch.unsqueeze, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.dropout, F.pad,
    getattr,
}
# Functions that are linear only when all but one operand are constants (scaling).
_SCALING_FUNCTIONS = {operator.mul, torch.mul, operator.truediv, torch.div, operator.neg}
_LINEAR_METHODS = {
    "view", "reshape", "flatten", "size", "contiguous", "squeeze", "unsqueeze", "mean", "sum",
    "add", "__add__", "__radd__", "view_as", "reshape_as", "permute", "transpose", "dim",
}
_SCALING_METHODS = {"mul", "div", "__mul__", "__rmul__", "__truediv__"}

MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)  # converted by sj_qvm.pool
_MAX_POOL_HINT = ("use an nn.MaxPool1d/2d/3d module (converted exactly) or average pooling, or "
                  "run sj_qvm.quantize(ann, replace_maxpool=True)")
_MODULE_HINTS = {
    nn.AdaptiveMaxPool2d: "replace AdaptiveMaxPool2d by AdaptiveAvgPool2d before training",
    nn.ReLU: "replace ReLU by sj_qvm.QuantReLU and train (or run sj_qvm.quantize(ann))",
    nn.ReLU6: "replace ReLU6 by sj_qvm.QuantReLU(threshold=6) and train",
    nn.LayerNorm: "LayerNorm normalises each sample by its own statistics, which no IF layer "
                  "computes; use BatchNorm",
}
_FUNCTION_HINTS = {
    F.relu: "replace F.relu by a sj_qvm.QuantReLU module and train (or run sj_qvm.quantize(ann))",
    torch.relu: "replace torch.relu by a sj_qvm.QuantReLU module and train (or run "
                "sj_qvm.quantize(ann))",
    F.max_pool1d: _MAX_POOL_HINT,
    F.max_pool2d: _MAX_POOL_HINT,
    F.max_pool3d: _MAX_POOL_HINT,
    F.adaptive_max_pool2d: "replace max-pooling by average pooling before training",
}
_GENERIC_HINT = ("it has no exact spiking equivalent; QVM supports conv, linear, batch-norm, "
                 "average and max pooling, flatten/reshape, dropout, residual '+', torch.cat and QuantReLU")


def _is_constant_scaling(node: fx.Node) -> bool:
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    return len(tensors) <= 1


def check_node(gm: fx.GraphModule, node: fx.Node, modules: dict) -> None:
    """Return if ``node`` converts exactly, else raise ConversionError naming it and a hint."""
    where = qualify(gm, node)
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, QuantReLU) or isinstance(m, _LINEAR_MODULES):
            return
        if type(m) in MAX_POOLS and not m.return_indices:
            return
        hint = next((h for t, h in _MODULE_HINTS.items() if isinstance(m, t)), _GENERIC_HINT)
        raise ConversionError(f"cannot convert module '{node.target}' ({type(m).__name__}) at "
                              f"{where}: {hint}")
    if node.op == "call_function":
        fn = node.target
        if fn in _LINEAR_FUNCTIONS or (fn in _SCALING_FUNCTIONS and _is_constant_scaling(node)):
            return
        name = getattr(fn, "__name__", repr(fn))
        raise ConversionError(f"cannot convert function '{name}' at {where}: "
                              f"{_FUNCTION_HINTS.get(fn, _GENERIC_HINT)}")
    if node.op == "call_method":
        if node.target in _LINEAR_METHODS or (node.target in _SCALING_METHODS
                                              and _is_constant_scaling(node)):
            return
        hint = ("replace it by a sj_qvm.QuantReLU module and train" if "relu" in node.target
                else _GENERIC_HINT)
        raise ConversionError(f"cannot convert method '.{node.target}()' at {where}: {hint}")
