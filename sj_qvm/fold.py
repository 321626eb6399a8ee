"""Folding each spiking layer's threshold θ into the synaptic layers it feeds (per-step schedule).

A spiking layer's output is ``θ * s_t`` with binary spikes ``s_t``. Every op between two neurons
is linear, so θ can travel along the graph as a pending scale σ (a float, or a per-channel ``[C]``
tensor on dim 1, value = ``σ * carried``) until a conv or linear layer absorbs it into its weight:
``W (σ s) = (W σ) s``, with ``W σ`` scaling the weight's input channels. Layers then exchange
binary spikes ``{0, 1}``, as hardware does, and the per-step multiply ``spikes * theta`` is gone.

Each edge is decided on its own. σ passes through ops that act on every channel alike (identity,
average and max pooling, zero padding, flatten, reshape, scaling by a number; a per-channel σ only
through those that keep dim 1 the channel, and through ``flatten(1)`` into a linear layer). A
``+`` or ``cat`` passes σ when its operands carry the same σ. Any other ``+`` becomes one
:class:`ScaledAdd`, ``a + θ * s`` in one pass (a residual shortcut meeting an analog current; of
two sources with different θ, one is multiplied first). Anywhere else (a neuron, the output, an
op not listed) the edge gets a :class:`ThetaScale`, the multiply the unfolded network does, so
every value that leaves the folded region is the unfolded one. θ > 0, so max-pooling commutes
with it.

The products ``W * θ`` are those the unfolded network forms (``W * (θ * 1)``); only the order in
which a kernel rounds its sums may differ, as between any two conv algorithms.
"""
from __future__ import annotations

import copy
import operator
from numbers import Real
from typing import NamedTuple, Optional, Union

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import unique_name
from .pool import ConvertedMaxPool
from .quant import channel_view

__all__ = ["ThetaScale", "ScaledAdd", "fold_theta"]


class ThetaScale(nn.Module):
    """The multiply of an edge that cannot take θ: ``x [N, C, *] -> theta * x``.

    ``theta``: a float, or a per-channel ``[C]`` tensor on dim 1; ``flat=True``: x is a
    channel-major flattening ``[N, C*K]`` of ``[N, C, *]`` and each channel's θ covers its K
    features.
    """

    def __init__(self, theta: Union[float, torch.Tensor], flat: bool = False):
        super().__init__()
        if isinstance(theta, torch.Tensor):
            self.register_buffer("theta", theta.detach().clone())
        else:
            self.theta = float(theta)
        self.flat = bool(flat)

    def _factor(self, x: torch.Tensor):
        th = self.theta
        if not isinstance(th, torch.Tensor):
            return th
        th = th.to(x.dtype)
        if self.flat:
            th = th.repeat_interleave(x.shape[1] // th.numel())
        return channel_view(th, x.ndim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._factor(x)

    def extra_repr(self) -> str:
        th = self.theta
        return f"theta={th if not isinstance(th, torch.Tensor) else list(th.shape)}, flat={self.flat}"


class ScaledAdd(ThetaScale):
    """A ``+`` whose operand ``s`` carries θ, in one pass: ``(a, s) -> a + theta * s``, both
    ``[N, C, *]``. ``theta * s`` is exact for spikes s in {0, 1}, so the sum rounds as the
    unfolded ``a + (theta * s)`` does."""

    def forward(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        th = self._factor(s)
        return torch.add(a, s, alpha=th) if isinstance(th, float) else torch.addcmul(a, s, th)


class _Scale(NamedTuple):
    theta: Union[float, torch.Tensor]  # float, or [C] per channel on dim 1
    flat: bool = False  # per-channel theta over a channel-major flattening [N, C*K]

    @property
    def scalar(self) -> bool:
        return not isinstance(self.theta, torch.Tensor)

    def same(self, other: "_Scale") -> bool:
        if self.scalar or other.scalar:
            return self.scalar and other.scalar and self.theta == other.theta
        return self.flat == other.flat and torch.equal(self.theta, other.theta)


_ELEMENTWISE_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)  # eval: identity
_CHANNEL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.ZeroPad2d)
_CHANNEL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                      F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.getitem}
_SHAPE_METHODS = {"view", "reshape", "squeeze", "unsqueeze", "permute", "transpose", "view_as",
                  "reshape_as", "flatten"}
_ADDS = {operator.add, torch.add}
_ADD_METHODS = {"add", "__add__", "__radd__"}
_READS_SHAPE = {"size", "dim"}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _nodes_in(args) -> list:
    out = []
    for a in args:
        if isinstance(a, fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_nodes_in(a))
        elif isinstance(a, dict):
            out.extend(_nodes_in(a.values()))
    return out


def _is_flatten1(node: fx.Node, modules: dict) -> bool:
    """Whether ``node`` flattens ``[N, C, *]`` to ``[N, C*K]`` channel-major (dims 1..-1)."""
    if node.op == "call_module":
        m = modules[node.target]
        return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1
    if node.target in (torch.flatten, "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target in ("view", "reshape") and len(node.args) == 3:
        n0, x = node.args[1], node.args[0]  # x.view(x.size(0), -1)
        return (node.args[2] == -1 and isinstance(n0, fx.Node) and n0.op == "call_method"
                and n0.target == "size" and n0.args == (x, 0))
    return False


def _channel_dims_only(node: fx.Node) -> bool:
    """Whether a ``mean``/``sum`` method reduces only dims >= 2 (dim 1 stays the channel)."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = dims if isinstance(dims, (list, tuple)) else (dims,)
    return all(isinstance(d, int) and d >= 2 for d in dims)


def _through(node: fx.Node, sc: _Scale, modules: dict) -> Optional[_Scale]:
    """The scale of ``node``'s output when its one tensor input carries ``sc``; None: no rule."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, _ELEMENTWISE_MODULES):
            return sc
        if isinstance(m, (*_CHANNEL_MODULES, ConvertedMaxPool)):
            return None if sc.flat else sc
        if _is_flatten1(node, modules):
            return sc if sc.scalar else (None if sc.flat else _Scale(sc.theta, True))
        return sc if sc.scalar and isinstance(m, (nn.Flatten, nn.Unflatten)) else None
    fn = node.target
    if node.op == "call_function":
        if fn is F.dropout:
            return sc
        if fn in _CHANNEL_FUNCTIONS:
            return None if sc.flat else sc
        if fn is F.pad:
            value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
            return sc if mode == "constant" and not value and not sc.flat else None
        if fn in (operator.mul, torch.mul, operator.truediv, torch.div, operator.neg):
            others = node.args[1:] if fn is not operator.neg else ()
            return sc if all(isinstance(a, Real) for a in others) and not node.kwargs else None
    if node.op == "call_method":
        if fn == "contiguous":
            return sc
        if fn in ("mean", "sum"):
            return sc if sc.scalar or (not sc.flat and _channel_dims_only(node)) else None
        if fn in ("mul", "div", "__mul__", "__rmul__", "__truediv__"):
            others = node.args[1:]
            return sc if all(isinstance(a, Real) for a in others) and not node.kwargs else None
    if node.op in ("call_function", "call_method") and (fn in _SHAPE_FUNCTIONS
                                                          or fn in _SHAPE_METHODS):
        if _is_flatten1(node, modules):
            return sc if sc.scalar else (None if sc.flat else _Scale(sc.theta, True))
        return sc if sc.scalar else None
    return None


def _weight_scale(layer: nn.Module, sc: _Scale) -> Optional[torch.Tensor]:
    """The factor that scales ``layer.weight`` to absorb ``sc``, or None when it cannot."""
    w = layer.weight
    if sc.scalar:
        return torch.tensor(sc.theta, dtype=w.dtype, device=w.device)
    th = sc.theta.to(dtype=w.dtype, device=w.device)
    if isinstance(layer, _CONVS):
        if sc.flat or th.numel() != layer.in_channels:
            return None
        g, per = layer.groups, layer.in_channels // layer.groups
        rows = th.view(g, per).repeat_interleave(layer.out_channels // g, dim=0)  # [O, I/g]
        return rows.view(*rows.shape, *[1] * (w.ndim - 2))
    if isinstance(layer, nn.Linear) and sc.flat and layer.in_features % th.numel() == 0:
        return th.repeat_interleave(layer.in_features // th.numel()).view(1, -1)
    return None


def fold_theta(gm: fx.GraphModule, is_spiking) -> int:
    """Fold every spiking layer's θ into the conv/linear layers it reaches (module docstring).

    ``is_spiking(module)`` says which modules are spiking layers; each one gets ``binary = True``
    (it then returns its spikes, not ``theta * spikes``) and must hold ``node.v_threshold``.
    Edges that cannot take θ get a :class:`ThetaScale`. Returns the number of weights scaled.
    Conv/linear modules called at several places are copied first, so each call site owns its
    weights.
    """
    modules = dict(gm.named_modules())
    calls: dict = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    scale: dict = {}
    scaled_edges: dict = {}
    folded = 0

    def materialize(src: fx.Node, user: fx.Node) -> None:
        if src not in scaled_edges:
            sc = scale[src]
            name = unique_name(gm, f"{src.name}_theta")
            gm.add_module(name, ThetaScale(sc.theta, sc.flat))
            with gm.graph.inserting_after(src):
                scaled_edges[src] = gm.graph.call_module(name, (src,))
        user.replace_input_with(src, scaled_edges[src])

    two_d = set()  # nodes known to be [N, F]: a per-channel theta there is per feature
    for node in list(gm.graph.nodes):
        ins = [a for a in dict.fromkeys(_nodes_in((node.args, node.kwargs))) if a in scale]
        mod = modules.get(node.target) if node.op == "call_module" else None
        src0 = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op.startswith("call_") and _is_flatten1(node, modules) or (
                src0 in two_d and mod is not None
                and (isinstance(mod, (nn.Linear, nn.Identity)) or is_spiking(mod))):
            two_d.add(node)
        if mod is not None and is_spiking(mod):
            for src in ins:
                materialize(src, node)
            th = mod.node.v_threshold
            th = th.detach().clone() if isinstance(th, torch.Tensor) and th.ndim else float(th)
            mod.binary, mod.folded_theta = True, th
            # on [N, F] a per-channel theta is the K = 1 case of a channel-major flattening
            scale[node] = _Scale(th, flat=not isinstance(th, float) and node in two_d)
            continue
        if not ins:
            continue
        if node.op == "call_method" and node.target in _READS_SHAPE or (
                node.op == "call_function" and node.target is getattr):
            continue  # reads the shape only, which folding keeps
        out = None
        if len(ins) == 1 and node.args and node.args[0] is ins[0]:
            sc = scale[ins[0]]
            w = _weight_scale(mod, sc) if isinstance(mod, (*_CONVS, nn.Linear)) else None
            if w is not None:
                if calls[node.target] > 1:
                    name = unique_name(gm, node.target.replace(".", "_") + "_folded")
                    gm.add_module(name, copy.deepcopy(mod))
                    calls[node.target] -= 1
                    node.target, mod = name, gm.get_submodule(name)
                    modules[name], calls[name] = mod, 1
                with torch.no_grad():
                    mod.weight.mul_(w)
                folded += 1
                continue
            out = _through(node, sc, modules)
        elif _is_merge(node, ins):
            out = _merged(node, [scale[a] for a in ins])
        if out is not None:
            scale[node] = out
            continue
        if _is_add(node):  # a + theta_b * b in one pass (a's theta, if any, multiplied first)
            a, b = node.args if node.args[1] in scale else node.args[::-1]
            if a in scale:
                materialize(a, node)
                a = scaled_edges[a]
            sc, name = scale[b], unique_name(gm, f"{b.name}_theta_add")
            gm.add_module(name, ScaledAdd(sc.theta, sc.flat))
            with gm.graph.inserting_before(node):
                fused = gm.graph.call_module(name, (a, b))
            fused.meta = dict(node.meta)
            node.replace_all_uses_with(fused)
            gm.graph.erase_node(node)
            continue
        for src in ins:
            materialize(src, node)
    gm.graph.lint()
    gm.recompile()
    return folded


def _is_add(node: fx.Node) -> bool:
    """A ``+`` of two tensor nodes, no ``alpha``."""
    return ((node.op == "call_function" and node.target in _ADDS)
            or (node.op == "call_method" and node.target in _ADD_METHODS)) and (
        len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args))


def _is_merge(node: fx.Node, ins: list) -> bool:
    """A ``+`` of two tensors or a ``cat``, with every tensor operand carrying a scale."""
    tensors = _nodes_in((node.args, node.kwargs))
    if set(tensors) != set(ins):
        return False
    if node.op == "call_function" and node.target in _ADDS:
        return len(node.args) == 2 and not node.kwargs
    if node.op == "call_method" and node.target in _ADD_METHODS:
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_function" and node.target in (torch.cat, torch.concat)


def _merged(node: fx.Node, scales: list) -> Optional[_Scale]:
    first = scales[0]
    if node.target in (torch.cat, torch.concat):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if all(s.scalar for s in scales):
            return first if all(first.same(s) for s in scales) else None
        if dim == 1 and not any(s.scalar or s.flat for s in scales):
            return _Scale(torch.cat([s.theta for s in scales]))
        return None
    return first if all(first.same(s) for s in scales) else None
