"""The conversion report, measured: :func:`conversion_report` runs an ANN and its SNN on a batch
and counts, per spiking layer, levels M vs spike counts N (eq. 5), spikes, synaptic operations
(SOPs) and the MACs of the synapses they drive.

What the report holds and how it prints is :mod:`sj_qvm.report`; the N-vs-M measurement and the
rule "exact at T = L" are :mod:`sj_qvm.levels`, the accuracy sweep over T :mod:`sj_qvm.accuracy`,
the figures :mod:`sj_qvm.plots`. Their public names are re-exported here.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Optional

import torch
import torch.nn as nn

from . import _compat
from .accuracy import accuracy_vs_time_steps  # noqa: F401
from .checks import check_bool, check_levels
from .convert import QVMNetwork
from .functional import expected_current
from .graph import is_relu, trace
from .levels import (LayerMatch, ann_levels, call_names, compare_levels, is_exact,  # noqa: F401
                     measure_layer, snn_spike_counts)
from .mapping import spiking_sites
from .neuron import QVMIFNode
from .plots import plot_accuracy_vs_time_steps, plot_conversion_report  # noqa: F401
from .quant import QuantReLU
from .report import (ENERGY_CONVENTION, ConversionReport, LayerReport,  # noqa: F401
                     energy_convention, format_energy)

__all__ = ["ann_levels", "snn_spike_counts", "LayerMatch", "measure_layer", "compare_levels",
           "is_exact", "accuracy_vs_time_steps", "plot_accuracy_vs_time_steps",
           "conversion_report", "ConversionReport", "LayerReport", "ENERGY_CONVENTION",
           "energy_convention", "format_energy"]

def _activation_sites(ann: nn.Module, x: torch.Tensor) -> list:
    """``[(name, a, M or None, levels or None)]`` for each QuantReLU / ReLU call of ``ann(x)``."""
    gm = trace(ann)
    modules = dict(gm.named_modules())
    sites = []

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            if node.op == "call_module" and isinstance(modules[node.target], QuantReLU):
                m = modules[node.target]
                inp = self.env[node.args[0]]
                sites.append((node.target, out, m.level(inp), m.levels))
            elif is_relu(node, modules):
                sites.append((node.target if node.op == "call_module" else node.name, out,
                              None, None))
            return out

    with torch.no_grad():
        Recorder(gm).run(x)
    return sites


def _is_multi_step(snn: nn.Module, nodes) -> bool:
    return isinstance(snn, QVMNetwork) or all(getattr(m, "step_mode", "s") == "m" for m in nodes)


def _run_snn(snn: nn.Module, x_seq: torch.Tensor, nodes, multi: bool) -> list:
    """Spikes ``[T, B, *]`` of each node (in ``nodes`` order) for ``x_seq``; resets first."""
    record, hooks = defaultdict(list), []
    for k, m in enumerate(nodes):
        hooks.append(m.register_forward_hook(
            lambda mod, inp, out, k=k: record[k].append(out.detach())))
    try:
        with torch.no_grad():
            _compat.reset_net(snn)
            if multi:
                snn(x_seq)
            else:
                for t in range(x_seq.shape[0]):
                    snn(x_seq[t])
    finally:
        for h in hooks:
            h.remove()
    spikes = []
    for k, m in enumerate(nodes):
        if len(record[k]) != (1 if multi else x_seq.shape[0]):
            raise ValueError(f"spiking node {k} ran {len(record[k])} times; conversion_report "
                             "needs each spiking layer called once per step")
        spikes.append(record[k][0] if multi else torch.stack(record[k]))
    return spikes


def _synapse_macs(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call ``out = module(x)`` of a conv or linear layer."""
    w = module.weight
    binary = bool(((w == 0) | (w == 1)).all())
    if _compat.HAS_OP_COUNTER and not binary:
        # op_counter tells spikes from analog values by value; give it an analog stand-in.
        return _compat.op_counter_macs(module, torch.full_like(x, 0.5))
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    k = 1
    for s in module.kernel_size:
        k *= s
    return out.numel() * (module.in_channels // module.groups) * k


def _synaptic_graph(snn: nn.Module, site_names: list):
    """``(gm, prefix, {consumer target: [feeder]})``: which spiking layers (by index) or the
    input (``"input"``) drive each conv/linear layer, through linear routing ops only."""
    gm = snn if isinstance(snn, torch.fx.GraphModule) else getattr(snn, "body", None)
    if not isinstance(gm, torch.fx.GraphModule):
        raise ValueError(f"conversion_report needs an fx graph (a QVMNetwork or an SJ-converted "
                         f"GraphModule); got {type(snn).__name__}")
    prefix = "" if gm is snn else "body."
    modules = dict(gm.named_modules())
    site_of = {}
    for k, name in enumerate(site_names):
        inner = name[len(prefix):]
        for target in (inner, inner.rpartition(".")[0]):  # the node, or its SpikingActivation
            site_of.setdefault(target, k)
    feeders: dict = {}
    starts = [(n, "input") for n in gm.graph.nodes if n.op == "placeholder"]
    starts += [(n, site_of[n.target]) for n in gm.graph.nodes
               if n.op == "call_module" and n.target in site_of]
    for start, who in starts:
        stack, seen = list(start.users), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.op == "call_module" and node.target in site_of:
                continue
            if node.op == "call_module" and isinstance(modules[node.target],
                                                       (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                                        nn.Linear)):
                feeders.setdefault(node.target, [])
                if who not in feeders[node.target]:
                    feeders[node.target].append(who)
                continue
            stack.extend(node.users)
    return gm, prefix, feeders


def conversion_report(ann: nn.Module, snn: nn.Module, inputs: torch.Tensor,
                      time_steps: Optional[int] = None,
                      sequence: Optional[bool] = None) -> ConversionReport:
    """Why the SNN matches, or fails to match, its ANN: one row per spiking layer.

    Args:
        ann: the ANN, with QuantReLU activations (QVM) or plain ReLUs (SJ's converters).
        snn: its conversion: a :class:`~sj_qvm.convert.QVMNetwork`, or an fx graph from SJ's
            converter, with SJ ``IFNode``\\ s or (after :func:`sj_qvm.to_qvm`) QVM nodes.
        inputs: a batch of ANN inputs ``[B, *]``, repeated over T for the SNN, or a frame sequence
            ``[T, B, *]``, whose mean over T the ANN sees.
        time_steps: T for a static batch; defaults to ``snn.levels`` (a QVMNetwork's L).
        sequence: whether ``inputs`` is a frame sequence; by default it is when it has one more
            dim than the ANN's first convolution takes, and never for an ANN without one.
    Returns:
        :class:`ConversionReport`. A network of multi-step QVM nodes is run in both current
        modes (``rows_by_current["instant"]`` and ``["expected"]``); any other SNN in its own.
        Synaptic operations: a layer's spikes times its mean fan-out, the MACs of the conv/linear
        layers it drives (reached through pooling, reshaping, ``+`` and ``cat``) divided by its
        neuron count; a layer that shares a conv/linear with others (``cat``, residual ``+``)
        gets the share of its MACs in proportion to its neuron count. MACs come from SJ 2.x's
        ``op_counter.MACCounter`` where the host has it, else from the layer shapes.
    """
    if time_steps is not None:
        time_steps = check_levels(time_steps, "time_steps")
    if sequence is not None:
        check_bool(sequence, "sequence")
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or inputs.numel() == 0:
        raise ValueError("inputs must be a non-empty tensor [B, *] (a static batch) or [T, B, *] "
                         f"(a frame sequence), got {getattr(inputs, 'shape', type(inputs))}")
    if sequence is None:
        conv = next((m for m in ann.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d,
                                                               nn.Conv3d))), None)
        sequence = conv is not None and inputs.ndim == len(conv.kernel_size) + 3
    if sequence:
        T = inputs.shape[0]
        if time_steps is not None and time_steps != T:
            raise ValueError(f"time_steps={time_steps} but the frame sequence has {T} frames")
        x_seq, x = inputs, expected_current(inputs)
    else:
        T = time_steps if time_steps is not None else getattr(snn, "levels", None)
        if T is None:
            raise ValueError("pass time_steps: the SNN does not say at which T = L it is exact")
        x_seq, x = inputs.unsqueeze(0).expand(T, *inputs.shape).contiguous(), inputs
    B = x.shape[0]
    acts = _activation_sites(ann, x)
    sites = spiking_sites(snn)
    if len(acts) != len(sites):
        raise ValueError(f"the ANN has {len(acts)} ReLU/QuantReLU calls but the SNN "
                         f"{len(sites)} spiking layers; they are not a converted pair")
    nodes = [m for _, m, _ in sites]
    multi = _is_multi_step(snn, nodes)
    both = multi and all(isinstance(m, QVMIFNode) for m in nodes)
    own = nodes[0].current if isinstance(nodes[0], QVMIFNode) else "instant"
    currents = ("instant", "expected") if both else (own,)

    # Synaptic layers: which spiking layers feed them, and their MACs per sample (per step).
    gm, prefix, feeders = _synaptic_graph(snn, [n for n, _, _ in sites])
    calls, hooks = {}, []

    def keep_first_call(target):
        def hook(mod, inp, out):
            calls.setdefault(target, (mod, inp[0], out))
        return hook

    for target in feeders:
        hooks.append(gm.get_submodule(target).register_forward_hook(keep_first_call(target)))
    saved = [m.current for m in nodes] if both else None
    rows_by_current = {}
    try:
        for current in currents:
            if both:
                for m in nodes:
                    m.current = current
            spikes = _run_snn(snn, x_seq, nodes, multi)
            for h in hooks:
                h.remove()
            hooks = []
            rows_by_current[current] = spikes
    finally:
        for h in hooks:
            h.remove()
        if saved is not None:
            for m, c in zip(nodes, saved):
                m.current = c
        _compat.reset_net(snn)
    samples = T * B if (multi or isinstance(snn, QVMNetwork)) else B
    macs = {t: _synapse_macs(mod, inp, out) / samples for t, (mod, inp, out) in calls.items()}
    sizes = [acts[k][1][0].numel() for k in range(len(acts))]
    size_of = lambda who: x[0].numel() if who == "input" else sizes[who]
    share = {k: 0.0 for k in range(len(sites))}
    first = 0.0
    for target, who in feeders.items():
        total = sum(size_of(w) for w in who)
        for w in who:
            part = macs.get(target, 0.0) * size_of(w) / total
            if w == "input":
                first += part
            else:
                share[w] += part

    names = call_names([aname for aname, *_ in acts])
    for current, spikes in list(rows_by_current.items()):
        rows = []
        for k, ((_, a, M, L), (_, _, theta), s) in enumerate(zip(acts, sites, spikes)):
            N = s.sum(0)
            exact_pair = M is not None and L == T
            match = measure_layer(names[k], N.to(a.dtype), theta, T,
                                  **(dict(M=M) if exact_pair else dict(a=a)))
            spikes_per_sample = s.sum().item() / B
            rows.append(LayerReport(
                **asdict(match), firing_rate=spikes_per_sample / (sizes[k] * T),
                sops=spikes_per_sample * share[k] / sizes[k], ann_macs=share[k]))
        rows_by_current[current] = rows
    return ConversionReport(time_steps=T, samples=B, static_input=not sequence, current=own,
                            rows_by_current=rows_by_current, first_layer_macs=first,
                            exact_levels=all(M is not None and L == T for _, _, M, L in acts))
