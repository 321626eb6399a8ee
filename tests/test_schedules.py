"""convert's two schedules: per_sample (synaptic layers once per sample on the mean input) against
the time-folded per_step reference twin, on every test net, plus the argument's checks."""
import itertools

import pytest
import torch
import torch.nn as nn

from nets import ARCHS, build, run_recorded
from sj_qvm import QuantReLU, QVMIFNode, convert
from sj_qvm.analysis import ann_levels, compare_levels, conversion_report
from sj_qvm.convert import SCHEDULES
from sj_qvm.functional import if_multi_step_ref

ROUNDINGS = ("floor", "round", "ceil")


def run_recording(snn, x_seq):
    """``(y_seq, [spikes [T, B, *] per node], [v per node])``."""
    nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
    y, (spikes,) = run_recorded(snn, x_seq, nodes)
    return y, spikes, [m.v.clone() for m in nodes]

def repeat(x, T):
    return x.unsqueeze(0).repeat(T, *[1] * x.ndim)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_schedules_agree_on_spikes_logits_and_levels(arch, rounding):
    for L in (1, 2, 4, 8):
        ann, x = build(arch, L, rounding)
        fast, ref = convert(ann), convert(ann, schedule="per_step")
        assert fast.schedule == "per_sample" and ref.schedule == "per_step"
        for x_seq in (repeat(x, L), torch.rand(L, *x.shape, dtype=x.dtype) * 2 - 0.5):
            y_fast, s_fast, v_fast = run_recording(fast, x_seq)
            y_ref, s_ref, v_ref = run_recording(ref, x_seq)
            assert y_fast.shape == y_ref.shape == (L, x.shape[0], 10)
            assert len(s_fast) == len(s_ref) >= 2
            for a, b in zip(s_fast, s_ref):
                assert a.shape == b.shape and torch.equal(a, b), (arch, rounding, L)
            for a, b in zip(v_fast, v_ref):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
            torch.testing.assert_close(y_fast.mean(0), y_ref.mean(0), rtol=1e-12, atol=1e-12)
            # The per-sample output is the expected output at every step.
            assert all(torch.equal(y_fast[t], y_fast[0]) for t in range(L))
            x_ann = x_seq.mean(0)
            for snn in (fast, ref):
                rows = compare_levels(ann, snn, x_ann, x_seq)
                assert sum(r.mismatched for r in rows) == 0
        # N == M makes every activation the ANN's bit for bit: M * gamma / L is computed alike.
        with torch.no_grad():
            assert torch.equal(run_recording(fast, repeat(x, L))[0][0], ann(x))


def test_per_sample_runs_each_synaptic_layer_once_on_the_batch():
    ann, x = build("resnet", 4, "round")
    calls = {}
    for schedule in SCHEDULES:
        snn = convert(ann, schedule=schedule)
        seen = []
        convs = [m for m in snn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(i[0].shape[0]))
                 for m in convs]
        run_recording(snn, repeat(x, 4))
        for h in hooks:
            h.remove()
        calls[schedule] = seen
    assert len(calls["per_sample"]) == len(calls["per_step"])  # each layer called once either way
    assert set(calls["per_sample"]) == {32}  # on [B, *] ...
    assert set(calls["per_step"]) == {4 * 32}  # ... not on [T*B, *]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_broadcast_spike_train_equals_the_step_loop_at_boundaries(dtype, rounding):
    """The node on q broadcast over T (what per_sample feeds it) gives the reference loop's
    spikes, V_T and v_seq on T real copies of q, at z = 0, k and k + 1/2."""
    for T, theta in itertools.product((1, 2, 3, 4, 7, 16), (1.0, 0.375, 3.0)):
        z = torch.arange(-2 * T, 2 * (T + 2) + 1, dtype=dtype) / 2
        q = (z * theta / T).reshape(1, -1, 1).repeat(2, 1, 3)  # [B, C, *] with C = len(z)
        node = QVMIFNode(theta, rounding, current="expected", step_mode="m", store_v_seq=True)
        s = node(q.unsqueeze(0).expand(T, *q.shape))
        v0 = node._v0_for(q)
        s_ref, v_ref, vs_ref = if_multi_step_ref(q.unsqueeze(0).repeat(T, 1, 1, 1), v0, theta,
                                                 node.strict, "expected", store_v_seq=True)
        assert torch.equal(s, s_ref) and torch.equal(node.v, v_ref)
        assert torch.equal(node.v_seq, vs_ref)
        # And the instant-current loop on the same constant input, step by step.
        s_inst, _, _ = if_multi_step_ref(q.unsqueeze(0).repeat(T, 1, 1, 1), v0, theta,
                                         node.strict, "instant")
        assert torch.equal(s, s_inst)


def test_per_channel_threshold_both_schedules():
    ann = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4),
                        QuantReLU(4, "round", [0.5, 1.0, 1.5, 2.0]),
                        nn.Flatten(), nn.Linear(4 * 25, 3)).double().eval()
    x = torch.rand(8, 2, 5, 5, dtype=torch.float64) * 3
    ys = [run_recording(convert(ann, schedule=s), repeat(x, 4)) for s in SCHEDULES]
    assert torch.equal(ys[0][1][0], ys[1][1][0])
    torch.testing.assert_close(ys[0][0].mean(0), ann(x), rtol=0, atol=1e-12)
    (_, M), = ann_levels(ann, x)
    assert torch.equal(ys[0][1][0].sum(0), M)


def test_conversion_report_is_the_same_for_both_schedules():
    ann, x = build("resnet", 4, "floor")
    reports = [conversion_report(ann, convert(ann, schedule=s), x) for s in SCHEDULES]
    for cur in ("instant", "expected"):
        a, b = (r.rows_by_current[cur] for r in reports)
        assert [(r.name, r.neurons_per_sample, r.mismatched, r.firing_rate) for r in a] == \
               [(r.name, r.neurons_per_sample, r.mismatched, r.firing_rate) for r in b]
        for ra, rb in zip(a, b):
            assert ra.sops == pytest.approx(rb.sops) and ra.ann_macs == pytest.approx(rb.ann_macs)
    assert sum(r.mismatched for r in reports[0].rows_by_current["expected"]) == 0
    assert sum(r.mismatched for r in reports[0].rows_by_current["instant"]) > 0  # not vacuous


def test_other_time_steps_agree_too():
    """T != L is not exact, but both schedules still compute the same expected-current SNN."""
    ann, x = build("cnn", 4, "round")
    for T in (2, 8):
        outs = [run_recording(convert(ann, T, warn=False, schedule=s), repeat(x, T))
                for s in SCHEDULES]
        assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))


def test_schedule_argument_is_checked():
    ann = nn.Sequential(nn.Linear(4, 4), QuantReLU(4))
    with pytest.raises(ValueError, match=r"schedule must be one of \('per_sample', 'per_step'\)"):
        convert(ann, schedule="fast")
    with pytest.raises(ValueError, match="schedule must be one of"):
        convert(ann, schedule=1)
    with pytest.raises(ValueError, match="per_sample' needs current='expected'"):
        convert(ann, current="instant", schedule="per_sample")
    assert convert(ann, current="instant").schedule == "per_step"
    assert convert(ann).schedule == "per_sample"


def test_instant_nodes_in_a_per_sample_network_run_per_step():
    """Switching the nodes to instant (as conversion_report does) falls back to per_step."""
    ann, x = build("cnn", 4, "ceil")
    fast, ref = convert(ann), convert(ann, current="instant")
    for m in fast.modules():
        if isinstance(m, QVMIFNode):
            m.current = "instant"
    x_seq = torch.rand(4, *x.shape, dtype=x.dtype)
    a, b = run_recording(fast, x_seq), run_recording(ref, x_seq)
    assert torch.equal(a[0], b[0]) and all(torch.equal(p, q) for p, q in zip(a[1], b[1]))
