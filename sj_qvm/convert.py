"""ANN with QuantReLU activations -> SpikingJelly multi-step SNN (Algorithm 1 of the paper).

The SNN runs the ANN's own graph (traced with ``torch.fx``, BatchNorm folded) on time-folded tensors
``[T*B, *]``: every synaptic op (conv, linear, pooling, ``+``, ``cat``, reshape) is linear and acts on
each step alike. Each ``QuantReLU`` becomes a :class:`SpikingActivation`, which unfolds ``[T, B, *]``,
runs a multi-step :class:`~sj_qvm.neuron.QVMIFNode` (theta = gamma, V0 matched to the rounding), and
passes on ``theta * s_t``, the current ``q = W s theta`` of eq. 1 for the next layer.
"""
from __future__ import annotations

import copy
import operator
import os
import re
import traceback
import warnings
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from . import _compat
from .functional import CURRENTS
from .neuron import QVMIFNode
from .quant import QuantReLU, channel_view, check_levels

__all__ = ["convert", "QVMNetwork", "SpikingActivation", "trace", "ConversionError"]


class ConversionError(ValueError):
    """The ANN holds an op with no exact spiking equivalent."""


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

_MODULE_HINTS = {
    nn.MaxPool1d: "replace MaxPool1d by AvgPool1d before training",
    nn.MaxPool2d: "replace MaxPool2d by AvgPool2d before training",
    nn.MaxPool3d: "replace MaxPool3d by AvgPool3d before training",
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
    F.max_pool1d: "replace max-pooling by average pooling before training",
    F.max_pool2d: "replace max-pooling by average pooling before training",
    F.adaptive_max_pool2d: "replace max-pooling by average pooling before training",
}
_GENERIC_HINT = ("it has no exact spiking equivalent; QVM supports conv, linear, batch-norm, "
                 "average pooling, flatten/reshape, dropout, residual '+', torch.cat and QuantReLU")


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


def _check_model(model, name: str = "ann") -> None:
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
    _check_model(model, "model")
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


def _qualify(gm: fx.GraphModule, node: fx.Node) -> str:
    """``graph node 'name' (file:line in fn: code)``, the user's source line of ``node``."""
    where = _user_frame(_stack_frames(node.meta.get("stack_trace") or ""))
    return f"graph node '{node.name}'" + (f" ({where})" if where else "")


def _fold_batchnorm(gm: fx.GraphModule) -> None:
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
        _set_submodule(gm, prev.target, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _is_constant_scaling(node: fx.Node) -> bool:
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    return len(tensors) <= 1


def _check_node(gm: fx.GraphModule, node: fx.Node, modules: dict) -> None:
    where = _qualify(gm, node)
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, QuantReLU) or isinstance(m, _LINEAR_MODULES):
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


class SpikingActivation(nn.Module):
    """A converted QuantReLU on time-folded tensors: ``[T*B, *] -> [T*B, *]``.

    Unfolds to ``[T, B, *]``, runs ``node`` (a multi-step :class:`QVMIFNode`) and returns the spikes
    scaled by theta, ``theta * s_t``, folded back. ``time_steps`` is set by :class:`QVMNetwork`.
    """

    def __init__(self, node: QVMIFNode):
        super().__init__()
        self.node = node
        self.time_steps = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.time_steps
        if self.node.step_mode != "m":  # e.g. after functional.set_step_mode(snn, "s")
            self.node.step_mode = "m"
        spikes = self.node(x.reshape(T, x.shape[0] // T, *x.shape[1:]))
        spikes = spikes.flatten(0, 1)
        th = self.node.v_threshold
        if isinstance(th, torch.Tensor):
            th = channel_view(th.to(spikes.dtype), spikes.ndim)
        return spikes * th


class QVMNetwork(nn.Module):
    """A converted SNN: ``x_seq: [T, B, *] -> y_seq: [T, B, *]``; the logits are ``y_seq.mean(0)``.

    Call ``spikingjelly.activation_based.functional.reset_net(snn)`` between input sequences, as
    for any SpikingJelly network. ``time_steps`` is the T the ANN was trained for (T = L); other T
    run too, without the exactness guarantee.
    """

    def __init__(self, body: fx.GraphModule, time_steps: int):
        super().__init__()
        self.body = body
        self.time_steps = time_steps
        self.step_mode = "m"

    def spiking_layers(self):
        """``(name, SpikingActivation)`` pairs in graph order."""
        return [(n, m) for n, m in self.body.named_modules() if isinstance(m, SpikingActivation)]

    def _input_ndim(self):
        """``(ndim, exact)`` that ``x_seq`` needs when the first op says: a conv needs its batched
        input's ndim plus T exactly, a linear layer at least ``[T, B, F]``; else ``(2, False)``."""
        for node in self.body.graph.nodes:
            if node.op != "placeholder":
                break
            for user in node.users:
                if user.op == "call_module":
                    m = self.body.get_submodule(user.target)
                    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                        return m.weight.ndim + 1, True  # weight [O, I, *k]; x_seq [T, B, C, *k]
                    if isinstance(m, nn.Linear):
                        return 3, False
            break
        return 2, False

    def forward(self, x_seq: torch.Tensor):
        want = "x_seq: [T, B, *] (time-steps first, T >= 1, then the ANN's input [B, *])"
        if not isinstance(x_seq, torch.Tensor) or x_seq.ndim < 2 or x_seq.shape[0] == 0:
            got = tuple(x_seq.shape) if isinstance(x_seq, torch.Tensor) else type(x_seq).__name__
            raise ValueError(f"QVMNetwork input must be {want}; got {got}")
        ndim, exact = self._input_ndim()
        if x_seq.ndim < ndim or (exact and x_seq.ndim != ndim):
            hint = (": it lacks the T dimension; a static input x runs as "
                    "x.unsqueeze(0).repeat(T, *[1] * x.ndim)" if x_seq.ndim == ndim - 1 else "")
            raise ValueError(f"QVMNetwork input must be {want}, {'' if exact else 'at least '}"
                             f"{ndim} dims for this network's first layer; got shape "
                             f"{tuple(x_seq.shape)}{hint}")
        T, B = x_seq.shape[:2]
        for _, m in self.spiking_layers():
            m.time_steps = T
        try:
            out = self.body(x_seq.flatten(0, 1))
        except RuntimeError as e:
            e.add_note(f"QVMNetwork's input x_seq had shape {tuple(x_seq.shape)}; it must be {want}")
            raise
        unfold = lambda y: y.reshape(T, B, *y.shape[1:]) if isinstance(y, torch.Tensor) else y
        if isinstance(out, (tuple, list)):
            return type(out)(unfold(y) for y in out)
        return unfold(out)


def _levels_of(ann: nn.Module) -> dict:
    return {name: m.levels for name, m in ann.named_modules() if isinstance(m, QuantReLU)}


def convert(ann: nn.Module, time_steps: Optional[int] = None, current: str = "expected", *,
            warn: bool = True) -> QVMNetwork:
    """Convert an ANN with :class:`~sj_qvm.QuantReLU` activations into a QVM SNN.

    Args:
        ann: the trained ANN (left untouched; a copy is converted in eval mode).
        time_steps: T; defaults to the ANN's ``levels`` L (which must then agree across layers).
        current: ``"expected"`` (each neuron receives the mean of its T inputs, exact at T = L) or
            ``"instant"`` (streaming; leaves an unevenness error).
        warn: warn when T differs from the levels (exactness needs T = L); sweeps over T that
            know this pass ``False``.
    Returns:
        :class:`QVMNetwork`, input ``[T, B, *]``, output ``[T, B, *]``. At T = L in expected mode
        every neuron's spike count equals the ANN's integer level and ``out.mean(0)`` equals the
        ANN's output (up to float rounding of the synaptic sums).
    Raises:
        ConversionError (a ValueError) naming the op and its place in the graph for any op with no
        exact spiking equivalent (MaxPool, plain ReLU, GELU, ...).
    """
    _check_model(ann)
    if current not in CURRENTS:
        raise ValueError(f"current must be one of {CURRENTS}, got {current!r}")
    levels = _levels_of(ann)
    if not levels:
        raise ConversionError("the ANN has no QuantReLU activation; train it with sj_qvm.QuantReLU "
                              "or run sj_qvm.quantize(ann) first")
    distinct = sorted(set(levels.values()))
    if time_steps is None:
        if len(distinct) > 1:
            raise ValueError(f"QuantReLU levels differ across layers ({levels}); pass time_steps "
                             "explicitly (exactness needs T = L in every layer)")
        time_steps = distinct[0]
    time_steps = check_levels(time_steps, "time_steps")
    if warn and any(L != time_steps for L in distinct):
        warnings.warn(f"time_steps={time_steps} differs from the QuantReLU levels {distinct}: "
                      "the SNN will not be exact (QVM needs T = L)", stacklevel=2)

    model = copy.deepcopy(ann).eval()
    gm = trace(model)
    _fold_batchnorm(gm)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        _check_node(gm, node, modules)
    calls: dict = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = modules[node.target]
        if isinstance(m, QuantReLU):
            # A QuantReLU called at several places (``self.relu`` reused) gets one stateful
            # neuron layer per call site.
            k = calls[node.target] = calls.get(node.target, -1) + 1
            if k:
                node.target = f"{node.target}_call{k}"
            gamma = m.threshold.detach()
            if not (torch.isfinite(gamma).all() and (gamma > 0).all()):
                raise ConversionError(f"QuantReLU '{node.target}' has threshold {gamma.tolist()}: "
                                      "it must be finite and > 0 (the layer is dead; see the "
                                      "threshold initialisation advice in QuantReLU)")
            theta = gamma.item() if gamma.ndim == 0 else gamma.clone()
            node_ = QVMIFNode(v_threshold=theta, v_init=m.rounding, current=current, step_mode="m")
            _set_submodule(gm, node.target, SpikingActivation(node_))
        elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
            _set_submodule(gm, node.target, nn.Identity())
    gm.recompile()
    snn = QVMNetwork(gm, time_steps).eval()
    _compat.invalidate_reset_cache(snn)
    return snn
