"""SpikingJelly IF nodes <-> QVM nodes, driven by one mapping table (both directions), and
:func:`spiking_sites`, every spiking node of an SNN with its threshold in ANN units (which
:func:`sj_qvm.analysis.conversion_report` reads).

SpikingJelly's converters leave a ``(scaler0, IFNode, scaler1)`` triple where the ANN had a ReLU
(0.0.0.0.14: ``VoltageScaler(1/s), IFNode(theta=1), VoltageScaler(s)`` under ``snn tailor``;
2.x ``RateCodingRecipe``: ``scaler0, if_node, scaler1`` under ``spiking_<k>``; 2.x's
channel-wise ``RateCodingRecipe`` and ``LocalThresholdBalancingRecipe``: ``ChannelVoltageScaler``\\ s
with one scale per channel around an ``IFNode`` or a ``HalfThresholdIFNode``, which starts at
V0 = theta/2). The IF node then fires when the input current, in ANN units, has summed to
``s``: its threshold in ANN units is ``theta / scaler0.scale``. :func:`to_qvm` folds scaler0 into the node (scaler0 becomes 1 and the
:class:`~sj_qvm.QVMIFNode` gets that threshold), so ``v_threshold`` reads in the ANN's units as it
does after :func:`sj_qvm.convert`; :func:`to_spikingjelly` unfolds it again.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.fx as fx
import torch.nn as nn

from . import _compat
from .checks import check_current, check_rounding
from .functional import matched_v0
from .graph import check_model, set_submodule, unique_name
from .neuron import QVMIFNode

__all__ = ["NodeMapping", "MAPPING", "to_qvm", "to_spikingjelly", "spiking_sites"]


@dataclass(frozen=True)
class NodeMapping:
    """One host node class and its QVM counterpart.

    ``shared`` names the constructor arguments both take with the same meaning; they are copied
    as they are. The threshold is carried in ANN units (see the module docstring). ``v_init`` is
    the QVM V0 the host node has built in (``"floor"``: 0, ``"round"``: theta/2): a QVM node with
    that V0 goes back to this host class, any other V0 is lost. The host's reset must be soft.
    """

    host: type
    plugin: type
    shared: Tuple[str, ...]
    host_fixed: Tuple[Tuple[str, object], ...]  # what a host node must have, and gets back
    v_init: str = "floor"


_SHARED = ("surrogate_function", "detach_reset", "step_mode", "store_v_seq")
MAPPING: Tuple[NodeMapping, ...] = (
    NodeMapping(host=_compat.IFNode, plugin=QVMIFNode, shared=_SHARED,
                host_fixed=(("v_reset", None),)),
) + ((NodeMapping(host=_compat.HalfThresholdIFNode, plugin=QVMIFNode, shared=_SHARED,
                  host_fixed=(), v_init="round"),) if _compat.HalfThresholdIFNode else ())


def _v0_lost(m: QVMIFNode, row: NodeMapping) -> bool:
    """Whether the host node of ``row`` cannot start where ``m`` starts (its V0)."""
    if isinstance(m.v_init, str):
        return m.v_init != row.v_init
    v0, strict = matched_v0(row.v_init, m.v_threshold)  # what the host row's node starts at
    if strict or not isinstance(m.v_init, (int, float)) or isinstance(m.v_init, bool):
        return True
    return not (isinstance(v0, float) and m.v_init == v0) and not (row.v_init == "floor"
                                                                   and m.v_init == 0.0)


def _mapping_for(m: nn.Module, side: str) -> Optional[NodeMapping]:
    """The row for a host node (``side="host"``), or the host row a QVM node goes back to."""
    rows = [row for row in MAPPING if type(m) is getattr(row, side)]
    if side == "plugin" and rows:
        return next((row for row in rows if not _v0_lost(m, row)), rows[0])
    return rows[0] if rows else None


def _scaler_before(gm: Optional[fx.GraphModule], name: str) -> Optional[str]:
    """The target of the SJ voltage scaler feeding node module ``name`` alone, if any."""
    if gm is None or not _compat.VOLTAGE_SCALERS:
        return None
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == name and node.args:
            prev = node.args[0]
            if (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and isinstance(gm.get_submodule(prev.target), _compat.VOLTAGE_SCALERS)):
                return prev.target
    return None


def _scale_of(scaler: nn.Module) -> torch.Tensor:
    return scaler.scale.detach().to(torch.float64)


def _as_threshold(t: torch.Tensor):
    return t.item() if t.numel() == 1 else t.flatten().to(torch.get_default_dtype())


def _check_channel_dim(scaler: nn.Module, name: str) -> None:
    if scaler.scale.numel() > 1 and getattr(scaler, "channel_dim", 1) != 1:
        raise ValueError(f"scaler '{name}' scales channel dim {scaler.channel_dim}; QVMIFNode "
                         "takes per-channel thresholds on dim 1 only")


def spiking_sites(snn: nn.Module):
    """``[(name, node, theta)]``: every spiking node of ``snn`` with its threshold in ANN units.

    ``theta`` is a float or a per-channel tensor; for a host node behind a voltage scaler it is
    ``v_threshold / scaler0.scale``.
    """
    gm = snn if isinstance(snn, fx.GraphModule) else getattr(snn, "body", None)
    gm = gm if isinstance(gm, fx.GraphModule) else None
    prefix = "body." if gm is not None and gm is not snn else ""
    sites = []
    for name, m in snn.named_modules():
        if isinstance(m, QVMIFNode) or _mapping_for(m, "host") is not None:
            th = m.v_threshold
            th = torch.as_tensor(th, dtype=torch.float64) if not isinstance(th, torch.Tensor) \
                else th.detach().to(torch.float64)
            inner = name[len(prefix):] if name.startswith(prefix) else name
            s0 = _scaler_before(gm, inner)
            if s0 is not None:
                th = th / _scale_of(gm.get_submodule(s0))
            sites.append((name, m, _as_threshold(th)))
    return sites


def to_qvm(sj_snn: nn.Module, rounding: str = "round", current: str = "instant") -> nn.Module:
    """A copy of a SpikingJelly-converted SNN with every IF node swapped for a :class:`QVMIFNode`.

    Accepts what SJ's own converters return: 0.0.0.0.14's ``(VoltageScaler, IFNode,
    VoltageScaler)`` triples, 2.x's ``RateCodingRecipe`` output (layer-wise, or channel-wise
    with ``ChannelVoltageScaler``\\ s and ``HalfThresholdIFNode``\\ s) and 2.x's
    ``LocalThresholdBalancingRecipe`` output, or any module holding soft-reset ``IFNode``\\ s.
    Per-channel scales become per-channel thresholds. Each node's threshold theta is taken from
    its scaler (in ANN units, see the module docstring) and its V0 is matched to ``rounding``:
    0 (``"floor"``), theta/2 (``"round"``) or theta (``"ceil"``).

    Args:
        current: ``"instant"`` (what SJ's nodes do; works in single-step mode) or ``"expected"``
            (needs the network in multi-step mode: ``functional.set_step_mode(snn, "m")`` on SJ
            2.x, whose converted layers accept ``[T, B, *]``).
    Returns:
        The new network; the host's ``invalidate_reset_cache`` has been called on it.
    """
    check_rounding(rounding)
    check_current(current)
    check_model(sj_snn, "sj_snn")
    snn = copy.deepcopy(sj_snn)
    gm = snn if isinstance(snn, fx.GraphModule) else None
    swapped = 0
    for name, m in list(snn.named_modules()):
        row = _mapping_for(m, "host")
        if row is None:
            continue
        for attr, want in row.host_fixed:
            if getattr(m, attr, want) != want:
                raise ValueError(f"'{name}' is an {type(m).__name__} with {attr}="
                                 f"{getattr(m, attr)!r}; QVM needs {attr}={want!r} (soft reset)")
        shared = {a: getattr(m, a) for a in row.shared if hasattr(m, a)}
        if current == "expected" and shared.get("step_mode", "s") != "m":
            raise ValueError(f"'{name}' is in single-step mode; current='expected' needs the whole "
                             "network in multi-step mode (functional.set_step_mode(snn, 'm') on "
                             "SpikingJelly 2.x) or current='instant'")
        th = torch.as_tensor(m.v_threshold, dtype=torch.float64)
        s0 = _scaler_before(gm, name)
        if s0 is not None:
            scaler = gm.get_submodule(s0)
            _check_channel_dim(scaler, s0)
            th = th / _scale_of(scaler)
            with torch.no_grad():
                scaler.scale.fill_(1.0)
        node = row.plugin(v_threshold=_as_threshold(th), v_init=rounding, current=current,
                          **shared)
        set_submodule(snn, name, node)
        swapped += 1
    if swapped == 0:
        raise ValueError(f"{type(sj_snn).__name__} holds no SpikingJelly IFNode to swap")
    _compat.invalidate_reset_cache(snn)
    return snn


def to_spikingjelly(snn: nn.Module, backend: Optional[str] = None) -> nn.Module:
    """A copy of ``snn`` with every :class:`QVMIFNode` swapped back for a SpikingJelly IF node.

    A node with V0 = theta/2 (``v_init="round"``) becomes SJ 2.x's ``HalfThresholdIFNode``, one
    with V0 = 0 an ``IFNode``; any other V0 and the expected-current mode are lost, with a warning
    (SJ nodes see each step's own input). Where a node sits behind a SJ voltage scaler (after :func:`to_qvm`), the
    scaler takes the threshold back and the node gets theta = 1, as SJ's converters build it.
    A :class:`~sj_qvm.convert.QVMNetwork` (the output of :func:`sj_qvm.convert`) becomes its
    body in SJ's converted layout: every spiking layer a single-step IF node followed by a
    voltage scaler that multiplies its spikes by theta, to be fed the input at every step
    (``sum(net(x) for _ in range(T)) / T``, as SJ's converted networks are run). Where θ is
    folded into the next layers' weights (``QVMNetwork.theta_folded``) the node's binary spikes
    go on as they are, with no scaler behind it.
    A node with per-channel thresholds and no scaler (:func:`sj_qvm.convert` with
    ``channel_wise=True``) gets a ``ChannelVoltageScaler(1 / theta)`` in front of an IF node with
    theta = 1, as SJ 2.x's channel-wise recipes build it (SJ 0.0.0.0.14 has none: ValueError).
    ``backend`` is passed to the node on SpikingJelly 0.0.0.0.14 and dropped on 2.x, which removed it.
    """
    check_model(snn, "snn")
    step_mode = None
    out = _sj_layout(snn)
    if out is not snn:  # a QVMNetwork's body: SJ's single-step layout, fed x at every step
        step_mode = "s"
    else:
        out = copy.deepcopy(snn)
    gm = out if isinstance(out, fx.GraphModule) else getattr(out, "body", None)
    gm = gm if isinstance(gm, fx.GraphModule) else None
    prefix = "body." if gm is not None and gm is not out else ""
    lost = []
    for name, m in list(out.named_modules()):
        row = _mapping_for(m, "plugin")
        if row is None:
            continue
        if m.current != "instant" or _v0_lost(m, row):
            lost.append(name)
        shared = {a: getattr(m, a) for a in row.shared if hasattr(m, a)}
        if step_mode is not None:
            shared["step_mode"] = step_mode
        th = torch.as_tensor(m.v_threshold, dtype=torch.float64)
        inner = name[len(prefix):] if prefix and name.startswith(prefix) else name
        s0 = _scaler_before(gm, inner)
        if s0 is not None:
            scaler = gm.get_submodule(s0)
            if th.numel() != scaler.scale.numel():
                raise ValueError(f"'{name}' has {th.numel()} threshold(s) but its scaler '{s0}' "
                                 f"{scaler.scale.numel()} scale(s)")
            with torch.no_grad():
                scaler.scale.copy_((1.0 / th).reshape(scaler.scale.shape))
            th = torch.tensor(1.0, dtype=torch.float64)
        node = _compat.make_if_node(row.host, v_threshold=1.0 if th.numel() != 1 else th.item(),
                                    backend=backend, **dict(row.host_fixed), **shared)
        if th.numel() != 1:
            node = _scaled_node(out, gm, name, inner, node, th, shared.get("step_mode", "s"),
                                _threshold_tensor(m).dtype)
        set_submodule(out, name, node)
    if lost:
        warnings.warn(f"to_spikingjelly: {len(lost)} node(s) lose their QVM V0 and/or expected "
                      f"current ({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}); SJ's "
                      "IF nodes start at V0 = 0 (IFNode) or theta/2 (HalfThresholdIFNode) and see "
                      "each step's own input, so the SNN is no longer exact", stacklevel=2)
    _compat.invalidate_reset_cache(out)
    return out


def _scaled_node(out: nn.Module, gm: Optional[fx.GraphModule], name: str, inner: str,
                 node: nn.Module, theta: torch.Tensor, step_mode: str,
                 dtype: torch.dtype) -> nn.Module:
    """Carry the per-channel ``theta: [C]`` of node ``name`` as SJ 2.x's recipes do: a
    ``ChannelVoltageScaler(1 / theta)`` on channel dim 1 feeding an IF node with threshold 1
    (which starts at 0, or at 1/2 for a HalfThresholdIFNode: V0 / theta as before). The scaler
    goes into the graph in front of every call of the node, or, without a graph, the two into an
    ``nn.Sequential`` that takes the node's place. Returns what goes at ``name``."""
    cls = next((c for c in _compat.VOLTAGE_SCALERS if c.__name__ == "ChannelVoltageScaler"),
               None)
    if cls is None:
        raise ValueError(_NO_CHANNEL_SCALER.format(name=name))
    scaler = cls((1.0 / theta).flatten().to(dtype), channel_dim=1, step_mode=step_mode)
    calls = [] if gm is None else [n for n in gm.graph.nodes
                                   if n.op == "call_module" and n.target == inner]
    if not calls:
        return nn.Sequential(scaler, node)
    target = unique_name(gm, inner.replace(".", "_") + "_scaler0")
    gm.add_submodule(target, scaler)
    for n in calls:
        with gm.graph.inserting_before(n):
            scaled = gm.graph.call_module(target, (n.args[0],))
        n.args = (scaled,) + tuple(n.args[1:])
    gm.recompile()
    return node


def _sj_layout(snn: nn.Module) -> nn.Module:
    """``snn`` itself, or for a QVMNetwork a copy of its body in which every SpikingActivation
    (``[T*B, *] -> theta * s``) is its node followed by a voltage scaler by theta."""
    from .convert import QVMNetwork, SpikingActivation  # convert imports this module
    from .pool import ConvertedMaxPool
    if not isinstance(snn, QVMNetwork):
        return snn
    body = copy.deepcopy(snn.body)
    mods = dict(body.named_modules())
    for name, m in mods.items():
        if isinstance(m, ConvertedMaxPool):
            raise ValueError(f"'{name}' is an exact spiking max-pool, which SpikingJelly has no "
                             "module for; quantize with replace_maxpool=True (average pooling) "
                             "to export this network to SpikingJelly")
    folded = getattr(snn, "theta_folded", False)  # theta already in the next layers' weights
    for node in list(body.graph.nodes):
        if node.op != "call_module" or not isinstance(mods[node.target], SpikingActivation):
            continue
        act = mods[node.target]
        if folded:  # the layer emits binary spikes, as an SJ node does
            set_submodule(body, node.target, act.node)
            continue
        theta = _threshold_tensor(act.node)
        if theta.numel() == 1:
            scaler = _compat.make_voltage_scaler(_compat.VOLTAGE_SCALERS[0], theta.item(),
                                                 step_mode="s")
            scaler.scale = theta.reshape(())  # in the node's dtype, not the default one
        else:
            cls = next((c for c in _compat.VOLTAGE_SCALERS
                        if c.__name__ == "ChannelVoltageScaler"), None)
            if cls is None:
                raise ValueError(_NO_CHANNEL_SCALER.format(name=node.target))
            scaler = _compat.make_voltage_scaler(cls, theta.flatten(), channel_dim=1,
                                                 step_mode="s")
        set_submodule(body, node.target, act.node)
        target = unique_name(body, node.target.replace(".", "_") + "_scaler1")
        body.add_submodule(target, scaler)
        with body.graph.inserting_after(node):
            scaled = body.graph.call_module(target, (node,))
        node.replace_all_uses_with(scaled, delete_user_cb=lambda user: user is not scaled)
    body.graph.lint()
    body.recompile()
    return body


def _threshold_tensor(m: QVMIFNode) -> torch.Tensor:
    """``m.v_threshold`` as a tensor, in its own dtype (a float: the default dtype)."""
    th = m.v_threshold
    return th.detach().clone() if isinstance(th, torch.Tensor) else torch.tensor(float(th))


_NO_CHANNEL_SCALER = ("'{name}' has per-channel thresholds; SpikingJelly " + _compat.SJ_VERSION
                      + " has no ChannelVoltageScaler to carry them (its IFNode takes one float "
                      "threshold): quantize with channel_wise=False or keep the QVMIFNodes")
