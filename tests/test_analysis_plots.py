"""The report's layer names (module paths, the same in table, dict and plot) and what the two
figures draw, read back from the matplotlib objects."""
import json

import pytest
import torch
import torch.nn as nn

import sj_qvm
from sj_qvm import QuantReLU
from sj_qvm.analysis import accuracy_vs_time_steps, conversion_report, format_energy
from sj_qvm.plots import plot_accuracy_vs_time_steps

PNG = b"\x89PNG\r\n\x1a\n"


class Named(nn.Module):
    """Activations at ``features.1``, ``features.4`` and ``act2`` (called twice)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), QuantReLU(2, "round", 1.0),
                                      nn.AvgPool2d(2), nn.Conv2d(3, 4, 3, padding=1),
                                      QuantReLU(2, "round", 1.0))
        self.fc = nn.Linear(4 * 16, 8)
        self.act2 = QuantReLU(2, "round", 1.0)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.act2(self.fc(self.features(x).flatten(1)))
        return self.head(self.act2(self.fc2(y)))


NAMES = ["features.1", "features.4", "act2", "act2 (call 2)"]


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    ann = Named().eval()
    frames = torch.randn(2, 3, 1, 8, 8)  # [T = L = 2, B = 3, *]: the instant current varies
    return conversion_report(ann, sj_qvm.convert(ann), frames, sequence=True)


def test_layer_names_are_module_paths_everywhere(report, tmp_path):
    assert [r.name for r in report.rows] == NAMES
    md = report.to_markdown()
    for name in NAMES:
        assert md.count(f"\n| {name} | ") == 2  # one row per current mode
    d = json.loads(json.dumps(report.to_dict()))  # JSON-ready as it is
    for current in ("instant", "expected"):
        assert [r["name"] for r in d["layers"][current]] == NAMES
        for r in d["layers"][current]:
            assert r["neuron_evaluations"] == r["samples"] * r["neurons_per_sample"] == \
                3 * r["neurons_per_sample"]
            assert 0 <= r["mismatched"] <= r["neuron_evaluations"]
        assert d["totals"][current]["neuron_evaluations"] == \
            sum(r["neuron_evaluations"] for r in d["layers"][current])
    assert d["totals"]["expected"]["mismatched"] == 0
    ax = report.plot(str(tmp_path / "r.png"))
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES


def test_report_plot_content(report, tmp_path):
    path = tmp_path / "report.png"
    ax = report.plot(str(path), title="my title")
    assert path.read_bytes()[:8] == PNG
    assert ax.get_title() == "my title"
    assert ax.get_xlabel() == "spiking layer (module in the ANN)"
    assert ax.get_ylabel() == "mean unevenness error  θ/T·|M−N|"
    # One bar per (current, layer), heights the rows' errors, in the order of the legend.
    assert len(ax.containers) == 2 and len(ax.patches) == 2 * len(NAMES)
    for bars, current in zip(ax.containers, ("instant", "expected")):
        assert [b.get_height() for b in bars] == \
            pytest.approx([r.unevenness_error for r in report.rows_by_current[current]])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["instant current", "expected current (QVM)"]
    assert sum(b.get_height() for b in ax.containers[1]) == 0  # expected mode is exact
    assert sum(b.get_height() for b in ax.containers[0]) > 0   # instant is not (not vacuous)
    _assert_legend_hides_nothing(ax)


def _data_points(ax):
    """Display coordinates of every drawn data point: line vertices and bar tops."""
    pts = []
    for line in ax.lines:
        xs, ys = line.get_xdata(), line.get_ydata()
        if len(xs) == 2 and (xs[0] == xs[1] or ys[0] == ys[1]):
            continue  # axhline / axvline: reference lines span the axes by design
        pts += [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    for bar in ax.patches:
        pts.append(ax.transData.transform((bar.get_x() + bar.get_width() / 2, bar.get_height())))
    return pts


def _assert_legend_hides_nothing(ax):
    fig = ax.figure
    fig.canvas.draw()
    box = ax.get_legend().get_window_extent()
    axes_box = ax.get_window_extent()
    assert box.x0 >= axes_box.x1  # outside the axes, on the right
    pts = _data_points(ax)
    assert pts
    assert not any(box.contains(x, y) for x, y in pts)


def test_accuracy_plot_content_and_legend_placement(tmp_path):
    """The demo's table (issue 13): T = 1..16, L = 4, chance (9.09%) at T = 8 and 16, where the
    old lower-right legend inside the axes hid those points."""
    c = 1 / 11
    result = {"ann": 0.9848, "snn": {"instant": {1: c, 2: c, 4: 2 * c, 8: c, 16: c},
                                     "expected": {1: c, 2: c, 4: 0.9848, 8: c, 16: c}}}
    path = tmp_path / "acc.png"
    ax = plot_accuracy_vs_time_steps(result, str(path), levels=4, title="demo")
    assert path.read_bytes()[:8] == PNG
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == \
        ("time-steps T", "SNN accuracy (%)", "demo")
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    # two curves, the ANN line and T = L
    assert len(ax.lines) == 4
    curves = {line.get_label(): line for line in ax.lines}
    assert list(curves["expected current (QVM)"].get_ydata()) == \
        pytest.approx([100 * c, 100 * c, 98.48, 100 * c, 100 * c])
    assert list(curves["instant current"].get_xdata()) == [1, 2, 4, 8, 16]
    assert list(curves["T = L = 4"].get_xdata()) == [4, 4]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["instant current", "expected current (QVM)", "ANN 98.48%", "T = L = 4"]
    _assert_legend_hides_nothing(ax)
    # The converse: the old placement hides the T = 8 and 16 points, which the check catches.
    ax.legend(fontsize=7, loc="lower right")
    ax.figure.canvas.draw()
    box = ax.get_legend().get_window_extent()
    assert any(box.contains(x, y) for x, y in _data_points(ax))


def test_accuracy_sweep_writes_its_plot_with_the_ann_levels(tmp_path):
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), QuantReLU(2, "round", 1.0),
                        nn.Linear(16, 3)).eval()
    x = torch.rand(20, 1, 4, 4)
    y = ann(x).argmax(1)
    path = tmp_path / "acc.png"
    res = accuracy_vs_time_steps(ann, x, y, time_steps=(1, 2, 4), progress=False, plot=str(path))
    assert path.read_bytes()[:8] == PNG
    assert res["ann"] == 1.0 and res["snn"]["expected"][2] == 1.0
    assert set(res["snn"]) == {"instant", "expected"} and set(res["snn"]["instant"]) == {1, 2, 4}
    for bad, match in ((dict(time_steps=(0,)), "time_steps"), (dict(currents=("mean",)),
                                                                "currents"),
                       (dict(batch_size=0), "batch_size")):
        with pytest.raises(ValueError, match=match):
            accuracy_vs_time_steps(ann, x, y, progress=False, **bad)
    with pytest.raises(ValueError, match="same number"):
        accuracy_vs_time_steps(ann, x, y[:3], progress=False)
    with pytest.raises(ValueError, match="path"):
        plot_accuracy_vs_time_steps(res)


def test_energy_line_reads_the_one_set_of_constants(report):
    from sj_qvm import _compat
    e = report.energy()
    line = format_energy(e)
    assert line.startswith(f"energy per sample, SNN / ANN: {e['snn_over_ann']:.3f} (")
    assert f"{_compat.E_AC_PJ:g} pJ/AC" in line and f"{_compat.E_MAC_PJ:g} pJ/MAC" in line
    assert _compat.ENERGY_SOURCE in e["convention"]
    assert e["snn_pj"] == pytest.approx(e["snn_first_layer_macs"] * _compat.E_MAC_PJ
                                        + e["snn_sops"] * _compat.E_AC_PJ)
