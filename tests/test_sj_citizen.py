"""QVMIFNode is a SpikingJelly neuron wherever SJ looks for one (both hosts): ``BaseNode``
instances, SJ's monitors, ``reset_net`` / ``set_step_mode`` / ``detach_net``, SJ 2.x's
``to_functional_forward`` and ``op_counter`` (its SynOp counter and energy profiler against
:func:`sj_qvm.analysis.conversion_report`)."""
import pytest
import torch
import torch.nn as nn

from nets import build
from sj_qvm import QVMIFNode, convert
from sj_qvm import _compat
from sj_qvm._compat import functional, layer, monitor, neuron
from sj_qvm.analysis import conversion_report

op_counter = _compat.op_counter
needs_op_counter = pytest.mark.skipif(op_counter is None, reason="SJ 0.0.0.0.14 has no op_counter")


def sj_net(v_init="round", theta=None):
    """An SJ-style multi-step net with per-channel theta and a matched V0."""
    torch.manual_seed(0)
    theta = torch.tensor([0.5, 0.7, 0.9, 1.1]) if theta is None else theta
    return nn.Sequential(
        layer.Conv2d(1, 4, 3, step_mode="m"),
        QVMIFNode(theta, v_init, step_mode="m"),
        layer.Flatten(step_mode="m"), layer.Linear(4 * 4 * 4, 3, step_mode="m"),
        QVMIFNode(0.8, v_init, step_mode="m"))


def test_isinstance_base_node_on_this_host():
    assert isinstance(QVMIFNode(), neuron.BaseNode)
    assert isinstance(QVMIFNode(torch.tensor([1.0, 2.0]), "ceil"), neuron.BaseNode)


@pytest.mark.skipif(monitor is None, reason="this SpikingJelly's monitor needs tensorboard "
                    "(pip install tensorboard)")
def test_output_monitor_by_base_node_records_every_qvm_node():
    net = sj_net()
    mon = monitor.OutputMonitor(net, neuron.BaseNode)
    x = torch.rand(4, 2, 1, 6, 6) * 2
    with torch.no_grad():
        y = net(x)
    assert len(mon.records) == 2 and mon.monitored_layers == ["1", "4"]
    assert torch.equal(mon.records[1], y) and mon.records[0].shape == (4, 2, 4, 4, 4)
    mon.remove_hooks()


def test_reset_net_restores_v0_and_the_run_repeats():
    net = sj_net("ceil")
    x = torch.rand(4, 2, 1, 6, 6) * 2
    with torch.no_grad():
        y1 = net(x)
        functional.reset_net(net)
        assert all(m.v == 0.0 and not isinstance(m.v, torch.Tensor) for m in net
                   if isinstance(m, QVMIFNode))
        y2 = net(x)
        y3 = net(x)  # no reset: the state carries over, so the spikes differ
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_set_step_mode_single_step_loop_equals_multi_step():
    net = sj_net("round")
    x = torch.rand(4, 2, 1, 6, 6) * 2
    with torch.no_grad():
        functional.reset_net(net)
        y_m = net(x)
        functional.set_step_mode(net, "s")
        assert all(m.step_mode == "s" for m in net)
        functional.reset_net(net)
        y_s = torch.stack([net(x[t]) for t in range(x.shape[0])])
    assert torch.equal(y_m, y_s)


def test_detach_net_cuts_the_state_from_the_graph():
    net = sj_net("floor")
    x = (torch.rand(4, 2, 1, 6, 6) * 2).requires_grad_()
    functional.reset_net(net)
    net(x).sum().backward()
    nodes = [m for m in net if isinstance(m, QVMIFNode)]
    assert all(m.v.grad_fn is not None for m in nodes)
    functional.detach_net(net)
    assert all(m.v.grad_fn is None and not m.v.requires_grad for m in nodes)
    net(x[:2]).sum().backward()  # TBPTT: the next chunk runs on from the detached state


def test_store_v_seq_is_a_memory_on_both_hosts():
    node = QVMIFNode(0.5, "round", step_mode="m", store_v_seq=True)
    assert list(node._memories) == ["v", "v_seq"]
    with torch.no_grad():
        node(torch.rand(3, 2, 4))
    assert node.v_seq.shape == (3, 2, 4)
    functional.reset_net(node)
    assert node.v_seq is None
    late = QVMIFNode(0.5, step_mode="m")
    late.store_v_seq = True
    with torch.no_grad():
        late(torch.rand(3, 2, 4))
    assert late.v_seq.shape == (3, 2, 4)
    with pytest.raises(TypeError, match="store_v_seq must be True or False"):
        late.store_v_seq = 1


@pytest.mark.skipif(not hasattr(_compat.base, "to_functional_forward"),
                    reason="SJ 0.0.0.0.14 has no functional state transitions")
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_to_functional_forward_starts_from_v0(step_mode):
    theta = torch.tensor([0.5, 0.7, 0.9])
    node = QVMIFNode(theta, "ceil", step_mode=step_mode)
    x = torch.rand(4, 2, 3, 5) if step_mode == "m" else torch.rand(2, 3, 5)
    fn = _compat.base.to_functional_forward(node)
    with torch.no_grad():
        (s_fn,), (v_fn,) = fn((x,), (0.0,))
        functional.reset_net(node)
        s = node(x)
    assert torch.equal(s_fn, s) and torch.equal(v_fn, node.v)
    assert node.v is not v_fn
    with torch.no_grad():
        (s2,), _ = fn((x,), (v_fn,))  # a carried state is used as given
        assert torch.equal(s2, node(x))


def _report_and_counts(arch, current):
    ann, x = build(arch, 4, "round")
    x = x[:4]
    snn = convert(ann, current=current, schedule="per_step")  # theta folded: binary spikes
    rep = conversion_report(ann, snn, x)
    prof = op_counter.SimpleEnergyProfiler()
    prof.bind_model(snn)
    x_seq = x.unsqueeze(0).expand(4, *x.shape).contiguous()
    with torch.no_grad(), prof:
        functional.reset_net(snn)
        snn(x_seq)
    functional.reset_net(snn)
    return rep, prof.get_report(), x.shape[0], snn


@needs_op_counter
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_op_counter_synops_equal_conversion_report_on_an_mlp(current):
    """Every spike of a linear layer reaches all its out_features: SJ's SynOp and AC counters
    and the report's spikes x fan-out agree exactly; the energy profiler sees every QVM node's
    state."""
    rep, prof, B, snn = _report_and_counts("mlp", current)
    sops = sum(r.sops for r in rep.rows_by_current[current]) * B
    assert prof.counts["synop"] == pytest.approx(sops, rel=1e-12) and sops > 0
    assert prof.counts["ac"] == prof.counts["synop"]  # ACCounter: the same accumulates
    # the analog first layer: its MACs on each of the T = 4 steps (the report: once)
    assert prof.counts["mac"] == 4 * B * rep.first_layer_macs
    # each node's V [B, *] (float64) read and written once per step, T = 4
    state = sum(r.neurons_per_sample for r in rep.rows_by_current[current]) * B * 8 * 4
    assert prof.counts["neuron_state_read_bytes"] == state > 0


@needs_op_counter
def test_op_counter_on_a_cnn_counts_pooled_spikes_as_macs():
    """Both spiking layers of the CNN reach their next synapses through an average pool, whose
    output is analog: SJ counts 0 SynOps there and the MACs of those synapses on every step,
    T * B * (first layer + the report's ANN MACs)."""
    rep, prof, B, _ = _report_and_counts("cnn", "expected")
    rows = rep.rows_by_current["expected"]
    assert prof.counts["synop"] == 0 and sum(r.sops for r in rows) > 0
    assert prof.counts["mac"] == 4 * B * (rep.first_layer_macs + sum(r.ann_macs for r in rows))


@needs_op_counter
def test_op_counter_synops_on_a_resnet_are_below_the_mean_fan_out():
    """A padded conv's border neurons reach fewer synapses than the mean fan-out the report
    uses (and spikes through the average pool reach fc as analog values): fewer SynOps."""
    rep, prof, B, _ = _report_and_counts("resnet", "expected")
    sops = sum(r.sops for r in rep.rows_by_current["expected"]) * B
    assert 0.5 * sops < prof.counts["synop"] < sops
