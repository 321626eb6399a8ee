"""θ folded into the next synaptic layers (per-step schedule) against the unfolded reference twin:
same spikes, logits and N == M on every test net, binary spikes between layers, a ThetaScale only
on the edges that cannot take θ (a '+' of sources with different θ), and the argument's checks."""
import itertools
import warnings

import pytest
import torch
import torch.nn as nn

from nets import ARCHS, build, run_recorded
from sj_qvm import QuantReLU, QVMIFNode, convert, to_spikingjelly
from sj_qvm import _compat
from sj_qvm._compat import functional
from sj_qvm.analysis import compare_levels, conversion_report
from sj_qvm.convert import SpikingActivation
from sj_qvm.fold import ScaledAdd, ThetaScale
from test_per_channel import per_channel

ROUNDINGS = ("floor", "round", "ceil")


def run(snn, x_seq):
    """``(y_seq, [node spikes [T, B, *]], [SpikingActivation outputs [T*B, *]])``."""
    nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
    y, (spikes, outs) = run_recorded(snn, x_seq, nodes, [m for _, m in snn.spiking_layers()])
    return y, spikes, outs

def pair(ann, current="expected", **kw):
    return (convert(ann, current=current, schedule="per_step", **kw),
            convert(ann, current=current, schedule="per_step", fold_theta=False, **kw))


def assert_twins_agree(ann, x, current, L):
    folded, ref = pair(ann, current)
    assert folded.theta_folded and not ref.theta_folded
    for x_seq in (x.unsqueeze(0).repeat(L, *[1] * x.ndim),
                  torch.rand(L, *x.shape, dtype=x.dtype) * 2 - 0.5):
        y_f, s_f, o_f = run(folded, x_seq)
        y_r, s_r, o_r = run(ref, x_seq)
        assert len(s_f) == len(s_r) >= 2
        for a, b in zip(s_f, s_r):
            assert torch.equal(a, b)
        torch.testing.assert_close(y_f, y_r, rtol=1e-12, atol=1e-12)
        for o, m in zip(o_f, [m for _, m in folded.spiking_layers()]):
            assert m.binary and ((o == 0) | (o == 1)).all()  # layers exchange binary spikes
        if current == "expected":
            for snn in (folded, ref):
                rows = compare_levels(ann, snn, x_seq.mean(0), x_seq)
                assert sum(r.mismatched for r in rows) == 0 and sum(r.neuron_evaluations
                                                                     for r in rows) > 0
    return folded, ref


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("current", ["expected", "instant"])
def test_folded_equals_unfolded_on_every_test_net(arch, rounding, current):
    for L in (1, 2, 4):
        ann, x = build(arch, L, rounding, threshold=0.7)
        folded, ref = assert_twins_agree(ann, x, current, L)
        # not vacuous: the reference passes theta-valued spikes, the folded net none
        _, _, o_r = run(ref, x.unsqueeze(0).repeat(L, *[1] * x.ndim))
        assert any(((o != 0) & (o != 1)).any() for o in o_r)
        assert all(not m.binary for _, m in ref.spiking_layers())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_per_channel_theta_folds_per_input_channel(arch):
    ann, x = build(arch, 4, "round")
    per_channel(ann, x)
    folded, _ = assert_twins_agree(ann, x, "expected", 4)
    scales = [m for m in folded.body.modules() if isinstance(m, ThetaScale)]
    if arch != "resnet":  # the residual '+' meets an analog current, the view a per-channel theta
        assert scales == []


def test_grouped_conv_and_flatten_into_linear_fold_per_channel():
    torch.manual_seed(0)
    C = 6
    ann = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), QuantReLU(4, "floor", torch.rand(C) + 0.5),
                        nn.Conv2d(C, 4, 3, padding=1, groups=2), QuantReLU(4, "floor", 1.3),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 16, 5)).double().eval()
    x = torch.rand(8, 3, 8, 8, dtype=torch.float64) * 2 - 0.5
    folded, _ = assert_twins_agree(ann, x, "expected", 4)
    assert not any(isinstance(m, ThetaScale) for m in folded.body.modules())
    w_ann, w_snn = ann[2].weight, folded.body.get_submodule("2").weight
    theta = ann[1].threshold.detach().view(2, 3).repeat_interleave(2, dim=0)  # [O, I/g]
    assert torch.equal(w_snn, w_ann * theta.view(4, 3, 1, 1))


def scaled_sources(snn) -> set:
    """The graph nodes whose output gets a ThetaScale."""
    return {n.args[0].name for n in snn.body.graph.nodes if n.op == "call_module"
            and type(snn.body.get_submodule(n.target)) is ThetaScale}


def fused_adds(snn) -> list:
    """``(a, s)`` node names of every ScaledAdd ``a + theta * s``."""
    return [tuple(a.name for a in n.args) for n in snn.body.graph.nodes if n.op == "call_module"
            and isinstance(snn.body.get_submodule(n.target), ScaledAdd)]


class TwoSources(nn.Module):
    """``act3(conv_b(a) + a)``: a residual '+' of two spike sources, thresholds ``ta`` and ``tb``."""

    def __init__(self, ta, tb):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.act_a, self.act_b = QuantReLU(4, "round", ta), QuantReLU(4, "round", tb)
        self.act3, self.fc = QuantReLU(4, "round", 1.0), nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        a = self.act_a(self.conv_a(x))
        b = self.act_b(self.conv_b(a))
        return self.fc(torch.flatten(self.act3(b + a), 1))


@pytest.mark.parametrize("current", ["expected", "instant"])
def test_residual_of_sources_with_different_theta_keeps_the_multiply_on_that_edge(current):
    torch.manual_seed(0)
    x = torch.rand(8, 3, 8, 8, dtype=torch.float64) * 2 - 0.5
    mixed = TwoSources(0.6, 0.9).double().eval()
    folded, _ = assert_twins_agree(mixed, x, current, 4)
    # one operand multiplied, the other's theta inside the add; nowhere else
    assert scaled_sources(folded) == {"act_b"}
    assert fused_adds(folded) == [("act_b_theta", "act_a")]
    theta_a = mixed.act_a.threshold.detach()
    assert torch.equal(folded.body.conv_b.weight, mixed.conv_b.weight * theta_a)  # a's other edge
    same = TwoSources(0.75, 0.75).double().eval()
    folded, _ = assert_twins_agree(same, x, current, 4)
    assert scaled_sources(folded) == {"add"}  # '+' passes theta on, to act3, which needs currents
    assert fused_adds(folded) == []


def test_a_residual_shortcut_adds_theta_times_spikes_in_one_pass():
    ann, x = build("resnet", 2, "round", threshold=0.7)
    folded, ref = assert_twins_agree(ann, x, "instant", 2)
    assert scaled_sources(folded) == set()
    assert fused_adds(folded) == [("block_conv2", "stem_2")]  # bn2(conv2(.)) + theta * x
    s = torch.randint(0, 2, (4, 8, 3, 3)).double()
    a = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    for th in (0.7, torch.rand(8, dtype=torch.float64) + 0.5):
        want = a + s * (th if isinstance(th, float) else th.view(1, 8, 1, 1))
        assert torch.equal(ScaledAdd(th)(a, s), want)  # bit for bit: theta * s is exact


def test_a_shared_layer_is_copied_per_call_site():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.a1, self.a2 = nn.Linear(6, 6), QuantReLU(2, "round", 0.5), \
                QuantReLU(2, "round", 2.0)

        def forward(self, x):
            return self.lin(self.a2(self.lin(self.a1(self.lin(x)))))
    torch.manual_seed(0)
    ann = Shared().double().eval()
    x = torch.rand(16, 6, dtype=torch.float64) * 2 - 0.5
    folded, _ = assert_twins_agree(ann, x, "expected", 2)
    lins = {n.target for n in folded.body.graph.nodes if n.op == "call_module"
            and isinstance(folded.body.get_submodule(n.target), nn.Linear)}
    assert len(lins) == 3
    assert torch.equal(folded.body.lin.weight, ann.lin.weight)  # the first call is not scaled


def test_reports_and_to_spikingjelly_read_theta_from_the_nodes():
    ann, x = build("resnet", 4, "round", threshold=0.7)
    folded, ref = pair(ann, "instant")
    a, b = conversion_report(ann, folded, x), conversion_report(ann, ref, x)
    for cur in ("instant", "expected"):
        ra, rb = a.rows_by_current[cur], b.rows_by_current[cur]
        assert [(r.name, r.mismatched, r.firing_rate) for r in ra] == \
               [(r.name, r.mismatched, r.firing_rate) for r in rb]
        for p, q in zip(ra, rb):
            assert p.sops == pytest.approx(q.sops)
            assert p.unevenness_error == pytest.approx(q.unevenness_error)
    assert sum(r.mismatched for r in a.rows_by_current["expected"]) == 0
    assert [m.node.v_threshold for _, m in folded.spiking_layers()] == [pytest.approx(0.7, rel=1e-7)] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sj_f, sj_r = to_spikingjelly(folded), to_spikingjelly(ref)
    outs = []
    for net in (sj_f, sj_r):  # SJ's single-step layout, fed x at every step
        functional.reset_net(net)
        with torch.no_grad():
            outs.append(torch.stack([net(x) for _ in range(4)]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    if _compat.HalfThresholdIFNode is None:  # SJ 0.0.0.0.14: the export starts at V0 = 0 (warned)
        for m in ref.modules():
            if isinstance(m, QVMIFNode):
                m.v_init = 0.0
    functional.reset_net(ref)
    with torch.no_grad():
        want = ref(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    torch.testing.assert_close(outs[0], want, rtol=1e-12, atol=1e-12)


def test_fold_theta_argument_is_checked():
    ann, _ = build("mlp", 4, "round")
    assert not convert(ann).theta_folded  # per_sample: N * theta / T in the ANN's order
    assert convert(ann, current="instant").theta_folded
    with pytest.raises(ValueError, match="fold_theta=True needs schedule='per_step'"):
        convert(ann, fold_theta=True)
    with pytest.raises((TypeError, ValueError), match="fold_theta"):
        convert(ann, schedule="per_step", fold_theta="yes")


def test_a_threshold_changed_after_folding_is_refused():
    ann, x = build("mlp", 4, "round")
    folded, ref = pair(ann)
    for snn in (folded, ref):
        snn.spiking_layers()[0][1].node.v_threshold = 0.5
    functional.reset_net(ref)
    ref(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))  # the reference multiplies by the new theta
    functional.reset_net(folded)
    with pytest.raises(ValueError, match="v_threshold changed from 1.0 to 0.5"):
        folded(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
