"""The conversion report: per spiking layer, levels M vs spike counts N (eq. 5), firing rates,
synaptic operations and an energy estimate, as a table and a PNG. The N-vs-M comparison itself
is :mod:`sj_qvm.levels`, the accuracy sweep over T :mod:`sj_qvm.accuracy`; both are re-exported
here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn

from . import _compat
from .accuracy import accuracy_vs_time_steps, plot_accuracy_vs_time_steps  # noqa: F401
from .levels import LayerMatch, ann_levels, compare_levels, snn_spike_counts  # noqa: F401
from .neuron import QVMIFNode
from .plots import CURRENT_STYLE, pyplot
from .quant import QuantReLU, channel_view

__all__ = ["ann_levels", "snn_spike_counts", "LayerMatch", "compare_levels",
           "accuracy_vs_time_steps", "plot_accuracy_vs_time_steps", "conversion_report",
           "ConversionReport", "LayerReport", "ENERGY_CONVENTION"]


ENERGY_CONVENTION = (
    "45 nm, 32-bit float: {mac} pJ per multiply-accumulate (MAC), {ac} pJ per accumulate (AC) "
    '(M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014). '
    "ANN: every synaptic MAC. SNN: one AC per synaptic operation (a spike reaching a synapse), "
    "except the first synaptic layer, whose input is analog: its MACs are counted once per "
    "inference for a static input (repeated over T) and T times for a frame sequence. Memory "
    "traffic and neuron updates are not counted.")


@dataclass
class LayerReport:
    """One spiking layer of a converted pair; counts are per input sample.

    ``neurons``: the layer's size. ``mismatched``: (sample, neuron) pairs of the batch whose
    spike count N differs from the ANN's level M (at T = L; at other T, from the count an ideal
    T-step neuron would fire, round-half-up(a*T/theta)). ``unevenness_error``: the mean of
    |a - theta/T * N| over the batch, which is theta/T * |M - N| (eq. 5) at T = L, gamma = theta.
    ``firing_rate``: spikes / (neurons * T). ``sops``: spikes x fan-out, the synaptic operations
    the layer's spikes drive over T steps. ``ann_macs``: the MACs the same synapses cost the ANN.
    """

    name: str
    neurons: int
    mismatched: int
    unevenness_error: float
    firing_rate: float
    sops: float
    ann_macs: float


@dataclass
class ConversionReport:
    """What :func:`conversion_report` returns: rows per spiking layer for each current mode run."""

    time_steps: int
    batch_size: int
    static_input: bool
    current: str                      # the mode the SNN was given in
    rows_by_current: dict             # {current: [LayerReport]}
    first_layer_macs: float           # per sample, the synaptic layer(s) fed by the input
    exact_levels: bool = True         # every ANN layer is a QuantReLU with L = T
    e_mac_pj: float = _compat.E_MAC_PJ
    e_ac_pj: float = _compat.E_AC_PJ

    @property
    def rows(self) -> List[LayerReport]:
        """The rows for the SNN's own current mode."""
        return self.rows_by_current[self.current]

    def energy(self, current: Optional[str] = None) -> dict:
        """Per-sample energy estimate in pJ (see :data:`ENERGY_CONVENTION`)."""
        rows = self.rows_by_current[current or self.current]
        first = self.first_layer_macs * (1 if self.static_input else self.time_steps)
        ann_macs = self.first_layer_macs + sum(r.ann_macs for r in rows)
        sops = sum(r.sops for r in rows)
        ann = ann_macs * self.e_mac_pj
        snn = first * self.e_mac_pj + sops * self.e_ac_pj
        return {"ann_macs": ann_macs, "snn_first_layer_macs": first, "snn_sops": sops,
                "ann_pj": ann, "snn_pj": snn, "snn_over_ann": snn / ann if ann else float("nan"),
                "convention": ENERGY_CONVENTION.format(mac=self.e_mac_pj, ac=self.e_ac_pj)}

    def to_markdown(self) -> str:
        out = [f"T = {self.time_steps}, batch of {self.batch_size} "
               f"({'static input repeated over T' if self.static_input else 'frame sequence'}); "
               "counts per sample", ""]
        for current, rows in self.rows_by_current.items():
            mark = " (the SNN's mode)" if current == self.current and \
                len(self.rows_by_current) > 1 else ""
            err = "mean θ/T·\\|M−N\\| (eq. 5)" if self.exact_levels else \
                "mean \\|a − θ/T·N\\|"
            out += [f"**{current} current**{mark}", "",
                    f"| layer | neurons | N ≠ M | {err} | firing rate | SOPs | ANN MACs |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                out.append(f"| {r.name} | {r.neurons} | {r.mismatched} of "
                           f"{r.neurons * self.batch_size} | {r.unevenness_error:.4g} | "
                           f"{r.firing_rate:.4f} | {r.sops:.4g} | {r.ann_macs:.4g} |")
            e = self.energy(current)
            out += ["", f"energy per sample: ANN {e['ann_pj'] / 1e6:.4g} µJ "
                        f"({e['ann_macs']:.4g} MACs), SNN {e['snn_pj'] / 1e6:.4g} µJ "
                        f"({e['snn_first_layer_macs']:.4g} first-layer MACs + "
                        f"{e['snn_sops']:.4g} SOPs), SNN/ANN = {e['snn_over_ann']:.3f}", ""]
        out.append("Energy convention: " + ENERGY_CONVENTION.format(mac=self.e_mac_pj,
                                                                     ac=self.e_ac_pj))
        return "\n".join(out)

    def plot(self, path: str, title: Optional[str] = None) -> None:
        """Per-layer mean unevenness error, one bar per current mode side by side (Figure 3 style)."""
        plt = pyplot()
        currents = list(self.rows_by_current)
        names = [r.name for r in self.rows_by_current[currents[0]]]
        n = len(names)
        fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * n + 2.5), 3.6), dpi=150)
        width = 0.8 / len(currents)
        for k, current in enumerate(currents):
            vals = [r.unevenness_error for r in self.rows_by_current[current]]
            xs = [i + (k - (len(currents) - 1) / 2) * width for i in range(n)]
            style = CURRENT_STYLE.get(current, dict(color=None, label=current))
            ax.bar(xs, vals, width, color=style["color"], label=style["label"])
            for x, v in zip(xs, vals):
                ax.annotate(f"{v:.2g}", (x, v), ha="center", va="bottom", fontsize=6,
                            xytext=(0, 1), textcoords="offset points")
        ax.set_xticks(range(n))
        ax.set_xticklabels([f"{i + 1}" for i in range(n)])
        ax.set_xlabel("spiking layer")
        ax.set_ylabel("mean unevenness error  θ/T·|M−N|" if self.exact_levels
                      else "mean error  |a − θ/T·N|")
        ax.set_title(title or f"per-layer unevenness error, T = {self.time_steps}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _activation_sites(ann: nn.Module, x: torch.Tensor) -> list:
    """``[(name, a, M or None, levels or None)]`` for each QuantReLU / ReLU call of ``ann(x)``."""
    from .graph import trace
    from .interop.quantize import _is_relu
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
            elif _is_relu(node, modules):
                sites.append((node.target if node.op == "call_module" else node.name, out,
                              None, None))
            return out

    with torch.no_grad():
        Recorder(gm).run(x)
    return sites


def _is_multi_step(snn: nn.Module, nodes) -> bool:
    from .convert import QVMNetwork
    return isinstance(snn, QVMNetwork) or all(getattr(m, "step_mode", "s") == "m" for m in nodes)


def _run_snn(snn: nn.Module, x_seq: torch.Tensor, nodes, multi: bool) -> list:
    """Spikes ``[T, B, *]`` of each node (in ``nodes`` order) for ``x_seq``; resets first."""
    from collections import defaultdict
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
        time_steps: T for a static batch; defaults to ``snn.time_steps`` (a QVMNetwork's L).
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
    from .convert import QVMNetwork
    from .functional import expected_current
    from .interop.mapping import spiking_sites
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
        T = time_steps if time_steps is not None else getattr(snn, "time_steps", None)
        if T is None:
            raise ValueError("pass time_steps: the SNN does not say how many steps it runs")
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

    names = []
    for aname, *_ in acts:
        names.append(aname if aname not in names else f"{aname} (call {names.count(aname) + 1})")
    for current, spikes in list(rows_by_current.items()):
        rows = []
        for k, ((aname, a, M, L), (sname, node, theta), s) in enumerate(zip(acts, sites, spikes)):
            N = s.sum(0)
            th = theta if not isinstance(theta, torch.Tensor) else \
                channel_view(theta.to(a.dtype), a.ndim)
            phi = th / T * N.to(a.dtype)
            exact_pair = M is not None and L == T
            target = M if exact_pair else torch.clamp(
                torch.floor(torch.clamp(a, min=0) * T / th + 0.5), 0, T)
            err = (th / T * (M - N).abs()) if exact_pair else (a - phi).abs()
            spikes_per_sample = s.sum().item() / B
            rows.append(LayerReport(
                name=names[k], neurons=sizes[k], mismatched=int((target != N).sum()),
                unevenness_error=float(err.double().mean()),
                firing_rate=spikes_per_sample / (sizes[k] * T),
                sops=spikes_per_sample * share[k] / sizes[k], ann_macs=share[k]))
        rows_by_current[current] = rows
    return ConversionReport(time_steps=T, batch_size=B, static_input=not sequence, current=own,
                            rows_by_current=rows_by_current, first_layer_macs=first,
                            exact_levels=all(M is not None and L == T for _, _, M, L in acts))
