"""What a conversion report says: per spiking layer, its N-vs-M measurement (eq. 5) with every
count's denominator, firing rate, synaptic operations (SOPs) and MACs, and the energy estimate;
as a table (:meth:`ConversionReport.to_markdown`), a dict (:meth:`~ConversionReport.to_dict`)
and a PNG (:meth:`~ConversionReport.plot`). :func:`sj_qvm.analysis.conversion_report` measures it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from . import _compat
from .checks import check_current
from .levels import LayerMatch
from .plots import plot_conversion_report

__all__ = ["LayerReport", "ConversionReport", "ENERGY_CONVENTION", "energy_convention",
           "format_energy"]

#: How :meth:`ConversionReport.energy` counts; ``{mac}`` and ``{ac}`` are the energies per
#: operation, :data:`sj_qvm._compat.E_MAC_PJ` and :data:`sj_qvm._compat.E_AC_PJ` (their one
#: home, with their source :data:`sj_qvm._compat.ENERGY_SOURCE`).
ENERGY_CONVENTION = (
    "45 nm, 32-bit float: {mac} pJ per multiply-accumulate (MAC), {ac} pJ per accumulate (AC) "
    f"({_compat.ENERGY_SOURCE}). "
    "ANN: every synaptic MAC. SNN: one AC per synaptic operation (a spike reaching a synapse), "
    "except the first synaptic layer, whose input is analog: its MACs are counted once per "
    "inference for a static input (repeated over T) and T times for a frame sequence. Memory "
    "traffic and neuron updates are not counted.")


def energy_convention(e_mac_pj: float = _compat.E_MAC_PJ, e_ac_pj: float = _compat.E_AC_PJ) -> str:
    """:data:`ENERGY_CONVENTION` with the energies per operation filled in."""
    return ENERGY_CONVENTION.format(mac=e_mac_pj, ac=e_ac_pj)


def format_energy(e: dict) -> str:
    """The one-line energy summary of :meth:`ConversionReport.energy`'s dict ``e``, e.g.
    ``energy per sample, SNN / ANN: 0.123 (1.2 uJ vs 9.8 uJ; 45 nm, 0.9 pJ/AC, 4.6 pJ/MAC)``."""
    return (f"energy per sample, SNN / ANN: {e['snn_over_ann']:.3f} ({e['snn_pj'] / 1e6:.3g} uJ "
            f"vs {e['ann_pj'] / 1e6:.3g} uJ; 45 nm, {e['e_ac_pj']:g} pJ/AC, "
            f"{e['e_mac_pj']:g} pJ/MAC)")


@dataclass
class LayerReport(LayerMatch):
    """One spiking layer of a converted pair: its :class:`~sj_qvm.levels.LayerMatch` (the N-vs-M
    measurement, with its denominators) and what the layer costs, per input sample.

    ``mismatched`` is out of ``neuron_evaluations`` at T = L; at other T it counts the pairs
    whose N differs from the count an ideal T-step neuron fires, round-half-up(a*T/theta).
    ``firing_rate``: spikes / (neurons_per_sample * T). ``sops``: spikes x fan-out per sample,
    the synaptic operations the layer's spikes drive over T steps. ``ann_macs``: the MACs the
    same synapses cost the ANN per sample.
    """

    firing_rate: float = 0.0
    sops: float = 0.0
    ann_macs: float = 0.0


@dataclass
class ConversionReport:
    """What :func:`conversion_report` returns: rows per spiking layer for each current mode run.

    ``samples``: the batch size B every row was measured on. Layer names are module paths in the
    user's ANN, the same in :meth:`to_markdown`, :meth:`to_dict` and :meth:`plot`.
    """

    time_steps: int
    samples: int
    static_input: bool
    current: str                      # the mode the SNN was given in
    rows_by_current: dict             # {current: [LayerReport]}
    first_layer_macs: float           # per sample, the synaptic layer(s) fed by the input
    exact_levels: bool = True         # every ANN layer is a QuantReLU with L = T
    e_mac_pj: float = _compat.E_MAC_PJ
    e_ac_pj: float = _compat.E_AC_PJ

    @property
    def batch_size(self) -> int:
        """The old name of :attr:`samples`."""
        return self.samples

    @property
    def rows(self) -> List[LayerReport]:
        """The rows for the SNN's own current mode."""
        return self.rows_by_current[self.current]

    def _rows(self, current: Optional[str]) -> List[LayerReport]:
        current = self.current if current is None else check_current(current)
        if current not in self.rows_by_current:
            raise ValueError(f"current={current!r} was not run; this report holds "
                             f"{tuple(self.rows_by_current)}")
        return self.rows_by_current[current]

    def totals(self, current: Optional[str] = None) -> dict:
        """Counts over every layer, each with its denominator: ``neurons_per_sample`` (all
        layers), ``samples``, ``neuron_evaluations`` (= samples x neurons_per_sample) and
        ``mismatched`` (out of neuron_evaluations)."""
        rows = self._rows(current)
        return {"neurons_per_sample": sum(r.neurons_per_sample for r in rows),
                "samples": self.samples,
                "neuron_evaluations": sum(r.neuron_evaluations for r in rows),
                "mismatched": sum(r.mismatched for r in rows)}

    def energy(self, current: Optional[str] = None) -> dict:
        """Per-sample energy estimate in pJ (see :data:`ENERGY_CONVENTION`)."""
        rows = self._rows(current)
        first = self.first_layer_macs * (1 if self.static_input else self.time_steps)
        ann_macs = self.first_layer_macs + sum(r.ann_macs for r in rows)
        sops = sum(r.sops for r in rows)
        ann = ann_macs * self.e_mac_pj
        snn = first * self.e_mac_pj + sops * self.e_ac_pj
        return {"ann_macs": ann_macs, "snn_first_layer_macs": first, "snn_sops": sops,
                "ann_pj": ann, "snn_pj": snn, "snn_over_ann": snn / ann if ann else float("nan"),
                "e_mac_pj": self.e_mac_pj, "e_ac_pj": self.e_ac_pj,
                "convention": energy_convention(self.e_mac_pj, self.e_ac_pj)}

    def to_dict(self) -> dict:
        """Everything in the report as JSON-ready Python values, layers under their module paths."""
        return {"time_steps": self.time_steps, "samples": self.samples,
                "static_input": self.static_input, "current": self.current,
                "exact_levels": self.exact_levels, "first_layer_macs": self.first_layer_macs,
                "layers": {c: [r.to_dict() for r in rows]
                           for c, rows in self.rows_by_current.items()},
                "totals": {c: self.totals(c) for c in self.rows_by_current},
                "energy": {c: self.energy(c) for c in self.rows_by_current}}

    def to_markdown(self) -> str:
        out = [f"T = {self.time_steps}, {self.samples} samples "
               f"({'static input repeated over T' if self.static_input else 'frame sequence'}); "
               "N ≠ M counts (sample, neuron) pairs out of samples × neurons; SOPs and MACs per "
               "sample", ""]
        for current, rows in self.rows_by_current.items():
            mark = " (the SNN's mode)" if current == self.current and \
                len(self.rows_by_current) > 1 else ""
            err = "mean θ/T·\\|M−N\\| (eq. 5)" if self.exact_levels else \
                "mean \\|a − θ/T·N\\|"
            out += [f"**{current} current**{mark}", "",
                    f"| layer | neurons | N ≠ M | {err} | firing rate | SOPs | ANN MACs |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                out.append(f"| {r.name} | {r.neurons_per_sample} | {r.mismatched} of "
                           f"{r.neuron_evaluations} | {r.unevenness_error:.4g} | "
                           f"{r.firing_rate:.4f} | {r.sops:.4g} | {r.ann_macs:.4g} |")
            e = self.energy(current)
            out += ["", f"energy per sample: ANN {e['ann_pj'] / 1e6:.4g} µJ "
                        f"({e['ann_macs']:.4g} MACs), SNN {e['snn_pj'] / 1e6:.4g} µJ "
                        f"({e['snn_first_layer_macs']:.4g} first-layer MACs + "
                        f"{e['snn_sops']:.4g} SOPs), SNN/ANN = {e['snn_over_ann']:.3f}", ""]
        out.append("Energy convention: " + energy_convention(self.e_mac_pj, self.e_ac_pj))
        return "\n".join(out)

    def plot(self, path: Optional[str] = None, title: Optional[str] = None, ax=None):
        """Per-layer mean unevenness error, one bar per current mode side by side (Figure 3
        style), saved as a PNG at ``path`` (or drawn on ``ax``); returns the Axes. See
        :func:`sj_qvm.plots.plot_conversion_report`."""
        return plot_conversion_report(self, path, title, ax)
