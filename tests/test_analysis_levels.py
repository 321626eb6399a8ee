"""The one N-vs-M measurement (eq. 5) and the rule "exact at T = L": per-channel theta by hand,
counts with their denominators, compare_levels and conversion_report agreeing row for row."""
import pytest
import torch
import torch.nn as nn

import sj_qvm
from nets import build
from sj_qvm import QuantReLU
from sj_qvm.analysis import LayerReport, compare_levels, conversion_report
from sj_qvm.levels import LayerMatch, call_names, is_exact, measure_layer


def two_channel_net():
    """x[2] -> identity -> QuantReLU(L=2, floor, theta = [1, 3]) -> y[2]."""
    ann = nn.Sequential(nn.Linear(2, 2, bias=False), QuantReLU(2, "floor", [1.0, 3.0])).double()
    with torch.no_grad():
        ann[0].weight.copy_(torch.eye(2, dtype=torch.float64))
    return ann.eval()


def test_per_channel_theta_eq5_by_hand():
    """Two samples, T = L = 2, instant current, theta = [1, 3] (floor: V0 = 0, fire at V >= theta).

    Sample 1: frames [1, 0] then [-1, 0]; the ANN sees the mean [0, 0], M = [0, 0]. Channel 0
    integrates 1 >= 1 at t = 1 and fires, N = 1 (off by one); channel 1 never fires, N = 0.
    Sample 2: frames [.5, 1.5] twice; M = floor(2 * [.5, 1.5] / [1, 3]) = [1, 1]; channel 0
    reaches 1 at t = 2, channel 1 reaches 3 at t = 2: N = [1, 1].
    Eq. 5 per neuron, theta_c / T * |M - N|: [1/2, 0, 0, 0], mean 1/8. (A shared theta.mean() = 2
    would give 1/4.) One (sample, neuron) pair of 2 x 2 mismatches.
    """
    ann = two_channel_net()
    frames = torch.tensor([[[1.0, 0.0], [0.5, 1.5]], [[-1.0, 0.0], [0.5, 1.5]]],
                          dtype=torch.float64)  # [T=2, B=2, 2]
    snn = sj_qvm.convert(ann, current="instant")
    (row,) = compare_levels(ann, snn, frames.mean(0), frames)
    assert row == LayerMatch(name="1", neurons_per_sample=2, samples=2, mismatched=1,
                             unevenness_error=0.125)
    assert row.neuron_evaluations == 4
    rep = conversion_report(ann, snn, frames, sequence=True)
    (ins,) = rep.rows_by_current["instant"]
    assert isinstance(ins, LayerReport) and isinstance(ins, LayerMatch)
    assert (ins.name, ins.neurons_per_sample, ins.samples, ins.mismatched,
            ins.neuron_evaluations) == ("1", 2, 2, 1, 4)
    assert ins.unevenness_error == pytest.approx(0.125, rel=1e-12)
    (exp,) = rep.rows_by_current["expected"]
    assert exp.mismatched == 0 and exp.unevenness_error == 0.0


def test_measure_layer_targets_and_errors():
    """With M: theta/T * |M - N|. With a: target round-half-up(a*T/theta) in [0, T], error
    |a - theta/T * N|; at T = L, gamma = theta both agree."""
    M = torch.tensor([[0, 1, 2, 2]])
    N = torch.tensor([[0, 2, 2, 0]])
    m = measure_layer("act", N, 2.0, 2, M=M)
    assert (m.mismatched, m.neuron_evaluations) == (2, 4)
    assert m.unevenness_error == pytest.approx((0 + 1 + 0 + 2) * 2.0 / 2 / 4)
    a = M.double() * 2.0 / 2  # the ANN's activation gamma/L * M with gamma = theta = 2
    assert measure_layer("act", N, 2.0, 2, a=a) == m
    # a above theta and below 0 clip to T and 0; a*T/theta = k + 0.5 rounds up, just below down.
    a = torch.tensor([[5.0, -1.0, 0.25, 0.24]], dtype=torch.float64)
    n = measure_layer("act", torch.tensor([[2, 0, 1, 0]]), 1.0, 2, a=a)
    assert n.mismatched == 0
    assert n.unevenness_error == pytest.approx((4.0 + 1.0 + 0.25 + 0.24) / 4)
    assert measure_layer("act", torch.tensor([[2, 0, 0, 1]]), 1.0, 2, a=a).mismatched == 2
    # Per-channel theta on the activation path: channel 1 (theta = 3) needs a = 1.5 for one
    # spike at T = 2, so a = 1.4 there targets round-half-up(0.93) = 1; N = 0 misses it.
    a = torch.tensor([[[0.5], [1.4]]], dtype=torch.float64)                 # [B=1, C=2, 1]
    pc = measure_layer("act", torch.tensor([[[1], [0]]]), torch.tensor([1.0, 3.0]), 2, a=a)
    assert (pc.mismatched, pc.neurons_per_sample, pc.neuron_evaluations) == (1, 2, 2)
    assert pc.unevenness_error == pytest.approx((0.0 + 1.4) / 2)
    assert pc.to_dict() == {"name": "act", "neurons_per_sample": 2, "samples": 1,
                            "mismatched": 1, "unevenness_error": pc.unevenness_error,
                            "neuron_evaluations": 2}
    with pytest.raises(ValueError, match="exactly one of M"):
        measure_layer("act", N, 2.0, 2)
    with pytest.raises(ValueError, match="exactly one of M"):
        measure_layer("act", N, 2.0, 2, M=M, a=a)
    with pytest.raises(ValueError, match="layer 'act'.*same"):
        measure_layer("act", N, 2.0, 2, M=M[:, :3])
    with pytest.raises(ValueError, match="time_steps"):
        measure_layer("act", N, 2.0, 0, M=M)


@pytest.mark.parametrize("current", ["instant", "expected"])
def test_compare_levels_is_conversion_reports_measurement(current):
    """The same pair, the same batch: every counted field agrees, and no count exceeds its
    denominator."""
    torch.manual_seed(0)
    ann, x = build("resnet", 4, "round", dtype=torch.float64)
    snn = sj_qvm.convert(ann, current=current)
    rows = compare_levels(ann, snn, x)
    rep = conversion_report(ann, snn, x)
    report_rows = rep.rows_by_current[current]
    assert [r.name for r in rows] == [r.name for r in report_rows]
    for a, b in zip(rows, report_rows, strict=True):
        assert (a.neurons_per_sample, a.samples, a.mismatched) == \
               (b.neurons_per_sample, b.samples, b.mismatched)
        assert a.unevenness_error == pytest.approx(b.unevenness_error, rel=1e-9, abs=1e-15)
        assert a.samples == len(x) and 0 <= a.mismatched <= a.neuron_evaluations
    totals = rep.totals(current)
    assert totals["samples"] == len(x)
    assert totals["neuron_evaluations"] == len(x) * totals["neurons_per_sample"]
    assert 0 <= totals["mismatched"] <= totals["neuron_evaluations"]
    if current == "instant":
        assert totals["mismatched"] > 0  # not vacuous
    else:
        assert totals["mismatched"] == 0


def test_call_names_number_repeated_calls():
    assert call_names(["a", "b", "a", "a"]) == ["a", "b", "a (call 2)", "a (call 3)"]


def test_is_exact_needs_both_halves():
    assert is_exact(0, 0.75, 0.75)
    assert not is_exact(1, 0.75, 0.75)         # equal accuracy hides a mismatched neuron
    assert not is_exact(0, 0.75, 0.74)         # N == M everywhere, yet a logit rounded apart
    with pytest.raises(ValueError, match="mismatched"):
        is_exact(-1, 0.5, 0.5)
    with pytest.raises(TypeError, match="mismatched"):
        is_exact(0.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="snn_accuracy must be a fraction"):
        is_exact(0, 0.5, 50.0)


def test_is_exact_on_a_converted_pair():
    """The rule applied as the app does: mismatches at T = L in expected mode, accuracies."""
    torch.manual_seed(0)
    ann, x = build("cnn", 4, "round", dtype=torch.float64)
    y = ann(x).argmax(1)
    res = sj_qvm.analysis.accuracy_vs_time_steps(ann, x, y, time_steps=(4,), progress=False)
    rep = conversion_report(ann, sj_qvm.convert(ann), x)
    assert is_exact(rep.totals("expected")["mismatched"], res["ann"], res["snn"]["expected"][4])
    assert not is_exact(rep.totals("instant")["mismatched"], res["ann"],
                        res["snn"]["instant"][4])
