"""conversion_report on a two-layer example checked by hand, on the test nets and on SJ's SNNs
(its figures: test_analysis_plots.py)."""
import warnings

import pytest
import torch
import torch.nn as nn

import sj_qvm
from sj_qvm import QuantReLU, _compat
from sj_qvm.analysis import conversion_report, _synapse_macs

def hand_net():
    """x[2] -> W1 -> QuantReLU(L=2, round, 1) -> W2 -> QuantReLU -> W3 -> y[1]; no biases."""
    ann = nn.Sequential(nn.Linear(2, 3, bias=False), QuantReLU(2, "round", 1.0),
                        nn.Linear(3, 2, bias=False), QuantReLU(2, "round", 1.0),
                        nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        ann[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        ann[2].weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        ann[4].weight.copy_(torch.tensor([[0.5, 0.5]]))  # analog weights: op_counter path on 2.x
    return ann.eval()


def test_two_layer_report_by_hand():
    """Frames x1 = [1, .5], x2 = [-1, .5]; the ANN sees their mean [0, .5]. T = L = 2, theta = 1.

    ANN: z1 = W1 [0, .5] = [0, .5, .5] -> M1 = floor(2 z1 + .5) = [0, 1, 1]; z2 = W2 a1 = [.5, .5]
    -> M2 = [1, 1].
    Expected current (V0 = .5): layer 1 gets [0, .5, .5] twice: neurons 2, 3 fire at t = 1 only,
    N1 = [0, 1, 1]; layer 2 gets W2 [0, 1, 1] = [1, 1] then [0, 0], mean [.5, .5]: N2 = [1, 1].
    Instant current: layer 1 gets [1, .5, 1.5] then [-1, .5, -.5]: U = [1.5, 1, 2] at t = 1, all
    fire, then [-.5, .5, .5]: N1 = [1, 1, 1], neuron 1 wrong. Layer 2 gets W2 [1, 1, 1] = [2, 1]
    then 0: U = [2.5, 1.5] fire, V = [1.5, .5], then U = [1.5, .5]: N2 = [2, 1], neuron 1 wrong.
    Fan-out: layer 1 drives Linear(3, 2): 6 MACs / 3 neurons = 2; layer 2 drives Linear(2, 1): 1.
    The first layer, Linear(2, 3), costs 6 MACs per step of analog input.
    """
    ann = hand_net()
    snn = sj_qvm.convert(ann)
    frames = torch.tensor([[[1.0, 0.5]], [[-1.0, 0.5]]])  # [T=2, B=1, 2]
    rep = conversion_report(ann, snn, frames, sequence=True)
    assert (rep.time_steps, rep.batch_size, rep.static_input) == (2, 1, False)
    assert rep.current == "expected" and list(rep.rows_by_current) == ["instant", "expected"]
    assert rep.first_layer_macs == 6

    exp, ins = rep.rows_by_current["expected"], rep.rows_by_current["instant"]
    assert [r.name for r in exp] == ["1", "3"]
    assert [r.neurons_per_sample for r in exp] == [3, 2]
    assert [r.ann_macs for r in exp] == [6, 2]
    # expected current: exact
    assert [r.mismatched for r in exp] == [0, 0]
    assert [r.unevenness_error for r in exp] == [0.0, 0.0]
    assert [r.firing_rate for r in exp] == pytest.approx([2 / 6, 2 / 4])
    assert [r.sops for r in exp] == pytest.approx([2 * 2, 2 * 1])
    # instant current: one neuron off by one spike in each layer; eq. 5: theta/T * |M - N|
    assert [r.mismatched for r in ins] == [1, 1]
    assert [r.unevenness_error for r in ins] == pytest.approx([(1 / 2) / 3, (1 / 2) / 2])
    assert [r.firing_rate for r in ins] == pytest.approx([3 / 6, 3 / 4])
    assert [r.sops for r in ins] == pytest.approx([3 * 2, 3 * 1])

    # Energy: ANN 14 MACs; SNN: the first layer's 6 MACs at each of T = 2 frames + SOPs.
    e = rep.energy()
    assert e["ann_macs"] == 14 and e["ann_pj"] == pytest.approx(14 * 4.6)
    assert e["snn_pj"] == pytest.approx(12 * 4.6 + 6 * 0.9)
    assert rep.energy("instant")["snn_pj"] == pytest.approx(12 * 4.6 + 9 * 0.9)
    assert "Horowitz" in e["convention"] and "ISSCC 2014" in e["convention"]

    # A static input is counted once for the first layer.
    static = conversion_report(ann, snn, frames.mean(0))
    assert static.static_input and static.energy()["snn_first_layer_macs"] == 6

    md = rep.to_markdown()
    assert md.count("\n| 1 | 3 | ") == 2 and "| 3 | 2 | 1 of 2 | 0.25 |" in md
    assert "expected current** (the SNN's mode)" in md


def test_report_on_test_nets_expected_is_exact_instant_is_not():
    from nets import build
    torch.manual_seed(0)
    ann, x = build("resnet", 4, "round", dtype=torch.float64)
    rep = conversion_report(ann, sj_qvm.convert(ann), x)
    exp, ins = rep.rows_by_current["expected"], rep.rows_by_current["instant"]
    assert len(exp) == 4 and exp[1].name == "block.act" and exp[2].name == "block.act (call 2)"
    assert all(r.mismatched == 0 and r.unevenness_error == 0 for r in exp)
    assert sum(r.mismatched for r in ins) > 0  # not vacuous
    # SOPs = spikes x mean fan-out = firing rate x T x the MACs the layer drives.
    assert [r.sops for r in exp] == pytest.approx([r.firing_rate * 4 * r.ann_macs for r in exp])
    e = rep.energy()
    assert e["snn_sops"] == pytest.approx(sum(r.sops for r in exp))
    assert e["ann_macs"] == pytest.approx(rep.first_layer_macs + sum(r.ann_macs for r in exp))


def test_mac_counts_match_the_layer_shapes():
    """On 2.x the MACs come from op_counter; they must equal the shape formula (0.14's path)."""
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    lin = nn.Linear(12, 5)
    x = torch.rand(3, 4, 5, 5)
    assert _synapse_macs(conv, x, conv(x)) == 3 * 6 * 25 * (4 // 2) * 9
    y = torch.rand(7, 12)
    assert _synapse_macs(lin, y, lin(y)) == 7 * 12 * 5
    if _compat.HAS_OP_COUNTER:
        assert _compat.op_counter_macs(conv, x) == 3 * 6 * 25 * 2 * 9


def test_report_on_an_sj_converted_network_and_after_to_qvm():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(64, 10)).eval()
    x = torch.rand(16, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = _compat.sj_convert(ann, [(x, None)], mode="99.9%")
    with pytest.raises(ValueError, match="time_steps"):
        conversion_report(ann, snn, x)
    sj = conversion_report(ann, snn, x, time_steps=4)
    qvm = conversion_report(ann, sj_qvm.to_qvm(snn, "round"), x, time_steps=4)
    assert list(sj.rows_by_current) == ["instant"] and not sj.exact_levels
    assert "\\|a − θ/T·N\\|" in sj.to_markdown()
    assert sj.rows[0].ann_macs == qvm.rows[0].ann_macs == 64 * 10
    assert sj.first_layer_macs == 4 * 64 * 9
    assert qvm.rows[0].unevenness_error < sj.rows[0].unevenness_error
    assert qvm.rows[0].mismatched < sj.rows[0].mismatched
