"""The fx graph of an ANN: tracing with QVM's leaves, where a node came from, which nodes are
ReLUs, graph surgery (BatchNorm folding, module swaps, fresh module names).

Every module that rewrites or inspects a traced ANN (:mod:`sj_qvm.convert`,
:mod:`sj_qvm.analysis`, :mod:`sj_qvm.mapping`, :mod:`sj_qvm.interop`) takes these from here.
"""
from __future__ import annotations

import os
import re
import traceback

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from . import _compat
from .neuron import QVMIFNode
from .quant import QuantReLU

__all__ = ["ConversionError", "QVMTracer", "trace", "check_model", "qualify", "set_submodule",
           "fold_batchnorm", "is_relu", "unique_name", "RELU_FUNCTIONS", "RELU_METHODS"]

#: The functional and method spellings of ReLU that a traced graph can hold.
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)
RELU_METHODS = ("relu", "relu_")


class ConversionError(ValueError):
    """The ANN holds an op with no exact spiking equivalent."""


class QVMTracer(fx.Tracer):
    """``torch.fx`` tracer that keeps ``QuantReLU``, ``QVMIFNode`` and SJ modules as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (QuantReLU, QVMIFNode)) or _compat.is_spikingjelly_module(m):
            return True
        return super().is_leaf_module(m, qualname)

    def create_proxy(self, *args, **kwargs):
        # Each node's source stack, for error messages. fx's own ``record_stack_traces`` costs
        # ~40 ms a node on torch 2.14 (a CapturedTraceback summary, filtered); this a fraction.
        proxy = super().create_proxy(*args, **kwargs)
        if "stack_trace" not in proxy.node.meta:
            proxy.node.meta["stack_trace"] = "".join(traceback.format_list(
                traceback.extract_stack()[:-1]))
        return proxy


def check_model(model, name: str = "ann") -> None:
    """A module with real tensors, or a TypeError/ValueError saying what it is instead."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module (the trained ANN), got "
                        f"{type(model).__name__} {model!r:.80}")
    meta = next((n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta),
                None)
    if meta is not None:
        raise ValueError(f"{name} has tensors on the meta device (first: '{meta}'): it holds no "
                         "weights to convert. Materialise it first, e.g. "
                         "ann.to_empty(device='cpu') and then ann.load_state_dict(...)")


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _user_frame(frames) -> str:
    """``file:line in fn: code`` of the innermost ``(file, line, fn, code)`` outside torch itself.

    The fx stack of a node runs from the user's ``forward`` line into torch's own frames (on
    torch 2.14 the user's frame is the first, older versions record only user frames), and a
    tracing error's traceback ends in torch's; the user's line is the last frame outside torch.
    """
    user = [f for f in frames if not os.path.abspath(f[0]).startswith(_TORCH_DIR)]
    if not user:
        return ""
    file, line, fn, code = user[-1]
    return f"{file}:{line} in {fn}" + (f": {code.strip()}" if code and code.strip() else "")


_STACK_FRAME = re.compile(r'\s*File "(.+)", line (\d+), in (.+)')


def _stack_frames(stack: str):
    """``(file, line, fn, code)`` tuples of a formatted stack summary (fx's ``stack_trace``)."""
    lines, frames = stack.splitlines(), []
    for i, line in enumerate(lines):
        m = _STACK_FRAME.fullmatch(line)
        if m:
            nxt = lines[i + 1] if i + 1 < len(lines) and not _STACK_FRAME.fullmatch(lines[i + 1]) \
                else ""
            frames.append((m.group(1), int(m.group(2)), m.group(3), nxt))
    return frames


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` with :class:`QVMTracer`; explain why if that is impossible."""
    check_model(model, "model")
    tracer = QVMTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; all mean the same here
        tb = traceback.extract_tb(e.__traceback__)
        where = _user_frame([(f.filename, f.lineno, f.name, f.line) for f in tb])
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}"
            + (f" at {where}" if where else "") + f": {e}. QVM conversion needs a graph without "
            "data-dependent Python control flow.") from e
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def qualify(gm: fx.GraphModule, node: fx.Node) -> str:
    """``graph node 'name' (file:line in fn: code)``, the user's source line of ``node``."""
    where = _user_frame(_stack_frames(node.meta.get("stack_trace") or ""))
    return f"graph node '{node.name}'" + (f" ({where})" if where else "")


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """Fold every BatchNorm whose input is a conv/linear used by nothing else into that layer."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif isinstance(layer, nn.Linear) and layer.out_features == bn.num_features:
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        set_submodule(gm, prev.target, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()


def set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)



def is_relu(node: fx.Node, modules: dict) -> bool:
    """Whether ``node`` is a plain ReLU: an ``nn.ReLU`` module (exactly; subclasses and QuantReLU
    are not), ``F.relu`` / ``torch.relu`` or ``x.relu()``. ``modules``: ``dict(gm.named_modules())``."""
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    return node.op == "call_method" and node.target in RELU_METHODS


def unique_name(root: nn.Module, base: str) -> str:
    """``base``, or ``base_k`` with the smallest k >= 1, naming no module or attribute of ``root``."""
    names = dict(root.named_modules())
    name, k = base, 0
    while name in names or hasattr(root, name):
        k += 1
        name = f"{base}_{k}"
    return name
