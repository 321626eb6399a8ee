"""SpikingJelly 2.x recipes: to_qvm on channel-wise and LTB outputs, and sj_qvm.neuron_factory."""
import warnings

import pytest
import torch
import torch.nn as nn

import sj_qvm
from sj_qvm import QVMIFNode, _compat
from sj_qvm.analysis import conversion_report
from sj_qvm import mapping

pytestmark = pytest.mark.skipif(_compat.FXConversionRecipe is None,
                                reason="SpikingJelly 0.0.0.0.14 has no conversion recipes")


def ann_and_data():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 16, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    g = torch.Generator().manual_seed(0)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
    x = torch.rand(64, 1, 8, 8, generator=g)
    return ann, [(x[i:i + 32], torch.zeros(32, dtype=torch.long)) for i in (0, 32)], x


def convert_sj(ann, recipe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _compat.SJConverter(recipe=recipe).convert(ann)


def run_single_step(net, x, T):
    _compat.reset_net(net)
    with torch.no_grad():
        return torch.stack([net(x) for _ in range(T)])


def recipes(data):
    A = _compat.ann2snn
    return {
        "channel-wise": A.RateCodingRecipe(dataloader=data, mode="99.9%", channel_wise=True),
        "channel-wise half threshold": A.RateCodingRecipe(dataloader=data, mode="99.9%",
                                                          channel_wise=True, half_threshold=True),
        "LTB": A.LocalThresholdBalancingRecipe(dataloader=data),
    }


@pytest.mark.parametrize("name", ["channel-wise", "channel-wise half threshold", "LTB"])
def test_to_qvm_keeps_per_channel_theta_and_lowers_the_output_error(name):
    ann, data, x = ann_and_data()
    snn = convert_sj(ann, recipes(data)[name])
    hosts = mapping.spiking_sites(snn)
    assert len(hosts) == 3
    # The threshold in ANN units is the recipe's per-channel scale: scaler1's, the one it emits.
    scales = [m.scale.detach().flatten() for n, m in snn.named_modules() if n.endswith("scaler1")]
    for (_, _, theta), scale in zip(hosts, scales):
        assert isinstance(theta, torch.Tensor) and theta.numel() == scale.numel() > 1
        torch.testing.assert_close(theta.float(), scale.float(), rtol=1e-6, atol=0)
    q = sj_qvm.to_qvm(snn, "round")
    nodes = [m for m in q.modules() if isinstance(m, QVMIFNode)]
    assert len(nodes) == 3
    for node, (_, _, theta) in zip(nodes, hosts):
        torch.testing.assert_close(node.v_threshold.double(), theta.double(), rtol=1e-6, atol=0)
        assert node.v_init == "round"
    with torch.no_grad():
        y = ann(x)
    for T in (4, 8):
        err = lambda net: (run_single_step(net, x, T).mean(0) - y).abs().mean().item()
        if name == "channel-wise":  # V0 = 0 -> theta/2 lowers the error while streaming...
            assert err(q) < 0.75 * err(snn), (name, T)
        else:  # ...which the half-threshold nodes already start at: the same network
            torch.testing.assert_close(run_single_step(q, x, T), run_single_step(snn, x, T))
    # The expected current removes the unevenness on top: fewer neurons with N != M (the level
    # the ReLU ANN's input would give at this theta and T), in multi-step mode.
    _compat.set_step_mode(snn, "m")
    qe = sj_qvm.to_qvm(snn, "round", current="expected")
    for T in (4, 8):
        host = conversion_report(ann, snn, x, time_steps=T).rows_by_current["instant"]
        ours = conversion_report(ann, qe, x, time_steps=T).rows_by_current["expected"]
        assert ours[0].mismatched == 0
        assert sum(r.mismatched for r in ours) < 0.85 * sum(r.mismatched for r in host), name


def test_half_threshold_nodes_round_trip_without_loss():
    ann, data, x = ann_and_data()
    snn = convert_sj(ann, recipes(data)["LTB"]).double()
    x = x.double()
    q = sj_qvm.to_qvm(snn, "round")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # V0 = theta/2 is kept: HalfThresholdIFNode again
        back = sj_qvm.to_spikingjelly(q)
    assert all(type(m) is _compat.HalfThresholdIFNode for _, m, _ in mapping.spiking_sites(back))
    torch.testing.assert_close(run_single_step(back, x, 6), run_single_step(q, x, 6))
    torch.testing.assert_close(run_single_step(back, x, 6), run_single_step(snn, x, 6))


@pytest.mark.parametrize("channel_wise", [False, True])
def test_neuron_factory_builds_matched_qvm_nodes(channel_wise):
    ann, data, x = ann_and_data()
    A = _compat.ann2snn
    kw = dict(dataloader=data, mode="99.9%", channel_wise=channel_wise)
    ours = convert_sj(ann, A.RateCodingRecipe(neuron_factory=sj_qvm.neuron_factory("round"), **kw))
    nodes = [m for m in ours.modules() if isinstance(m, QVMIFNode)]
    assert len(nodes) == 3 and all(n.v_init == "round" and n.current == "instant" for n in nodes)
    # The same network as SJ's own recipe after to_qvm: same thresholds in ANN units, same output.
    theirs = sj_qvm.to_qvm(convert_sj(ann, A.RateCodingRecipe(**kw)), "round")
    for (_, _, a), (_, _, b) in zip(mapping.spiking_sites(ours), mapping.spiking_sites(theirs)):
        torch.testing.assert_close(torch.as_tensor(a).double(), torch.as_tensor(b).double(),
                                   rtol=1e-6, atol=0)
    torch.testing.assert_close(run_single_step(ours, x, 4), run_single_step(theirs, x, 4),
                               rtol=1e-5, atol=1e-5)


def test_neuron_factory_checks_its_arguments_at_once():
    with pytest.raises(ValueError, match="rounding must be one of"):
        sj_qvm.neuron_factory("nearest")
    with pytest.raises(ValueError, match="current"):
        sj_qvm.neuron_factory("round", current="mean")
    with pytest.raises(ValueError, match="sets v_threshold"):
        sj_qvm.neuron_factory("round", v_threshold=2.0)
    node = sj_qvm.neuron_factory("floor", detach_reset=True)(0.25)
    assert node.v_threshold == 0.25 and node.v_init == "floor" and node.detach_reset


def test_qvm_recipe_and_converter_take_the_calibration_arguments():
    ann, data, x = ann_and_data()
    A = _compat.ann2snn
    recipe = sj_qvm.QVMRecipe(levels=4, dataloader=data, method="mse", channel_wise=True,
                              progress=False)
    snn = A.Converter(recipe=recipe).convert(ann)
    direct = sj_qvm.quantize(ann, 4, dataloader=data, progress=False)
    thetas = [m.node.v_threshold for _, m in snn.spiking_layers()]
    gammas = [m.threshold.detach() for m in direct.modules() if isinstance(m, sj_qvm.QuantReLU)]
    assert len(thetas) == 3 and all(t.numel() > 1 for t in thetas)
    for t, g in zip(thetas, gammas):
        torch.testing.assert_close(t, g)
    conv = sj_qvm.Converter(dataloader=data, levels=4, method="percentile", channel_wise=False,
                            progress=False)
    conv(ann)
    assert all(m.threshold.ndim == 0 for m in conv.qann.modules()
               if isinstance(m, sj_qvm.QuantReLU))
    for bad, match in ((dict(time_steps=0), "time_steps"), (dict(time_steps="4"), "time_steps"),
                       (dict(finetune_epochs=-1), "finetune_epochs"),
                       (dict(finetune_lr=-1e-3), "finetune_lr"),
                       (dict(channel_wise="yes"), "channel_wise")):
        with pytest.raises((ValueError, TypeError), match=match):
            sj_qvm.Converter(dataloader=data, **bad)


def test_qvm_recipe_without_a_dataloader_warns():
    ann = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="without a dataloader"):
        snn = _compat.SJConverter(recipe=sj_qvm.QVMRecipe(levels=4, progress=False)).convert(ann)
    assert [m.node.v_threshold for _, m in snn.spiking_layers()] == [1.0]


def test_numeric_half_threshold_v0_maps_to_half_threshold_node():
    """V0 given as the number theta/2 is the same start as v_init="round" (functional.matched_v0)."""
    net = nn.Sequential(nn.Linear(4, 4), QVMIFNode(v_threshold=2.0, v_init=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = sj_qvm.to_spikingjelly(net)
    assert type(back[1]) is _compat.HalfThresholdIFNode
    net = nn.Sequential(nn.Linear(4, 4), QVMIFNode(v_threshold=2.0, v_init=0.7))
    with pytest.warns(UserWarning):
        back = sj_qvm.to_spikingjelly(net)


def _qvm_network(channel_wise, current="instant", replace_maxpool=False, fold_theta=None):
    ann, data, x = ann_and_data()
    q = sj_qvm.quantize(ann, 4, dataloader=data, channel_wise=channel_wise, progress=False,
                        replace_maxpool=replace_maxpool).double()
    return q, sj_qvm.convert(q, 4, current=current, warn=False, fold_theta=fold_theta), x.double()


@pytest.mark.parametrize("fold_theta", [False, True])
@pytest.mark.parametrize("channel_wise", [True, False])
def test_to_spikingjelly_on_a_converted_network_carries_each_channels_theta(channel_wise, fold_theta):
    """sj_qvm.convert's QVMNetwork -> SJ's single-step layout: a ChannelVoltageScaler(1/theta)
    in front of an IF node with theta = 1 (per channel), a scaler by theta behind it (none where
    theta is folded into the next layer); fed x at every step it gives the QVMNetwork's output,
    float64, bit for bit."""
    q, snn, x = _qvm_network(channel_wise, fold_theta=fold_theta)
    assert snn.theta_folded == fold_theta
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # instant current and V0 = theta/2: nothing is lost
        back = sj_qvm.to_spikingjelly(snn)
    assert not any(isinstance(m, QVMIFNode) for m in back.modules())
    sites = mapping.spiking_sites(back)
    assert len(sites) == 3 and all(type(m) is _compat.HalfThresholdIFNode for _, m, _ in sites)
    scalers = [m for m in back.modules() if type(m).__name__ == "ChannelVoltageScaler"]
    assert len(scalers) == ((3 if fold_theta else 6) if channel_wise else 0)
    for (_, _, a), (_, _, b) in zip(mapping.spiking_sites(snn), sites):
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        assert a.numel() == (1 if not channel_wise else a.numel()) and a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-15, atol=0)
    T = 4
    _compat.reset_net(snn)
    with torch.no_grad():
        want = snn(x.unsqueeze(0).expand(T, *x.shape).contiguous())
    got = run_single_step(back, x, T)
    assert torch.equal(got, want)
    if channel_wise:  # the converse: one channel's scale off by 10% changes the output
        with torch.no_grad():
            scalers[0].scale[0] *= 1.1
        assert not torch.equal(run_single_step(back, x, T), want)


def test_to_spikingjelly_on_a_converted_network_warns_what_it_loses_and_refuses_max_pooling():
    _, snn, _ = _qvm_network(True, current="expected")
    with pytest.warns(UserWarning, match="expected"):
        sj_qvm.to_spikingjelly(snn)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64, 3))
    data = [(torch.rand(8, 1, 8, 8),)]
    snn = sj_qvm.convert(sj_qvm.quantize(ann, 2, dataloader=data, progress=False), 2, warn=False)
    with pytest.raises(ValueError, match="replace_maxpool=True"):
        sj_qvm.to_spikingjelly(snn)


def test_to_spikingjelly_wraps_a_per_channel_node_held_directly():
    theta = torch.tensor([0.5, 1.0, 2.0])
    net = nn.Sequential(nn.Linear(5, 3), QVMIFNode(v_threshold=theta, v_init="round"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = sj_qvm.to_spikingjelly(net)
    scaler, node = back[1]
    assert type(node) is _compat.HalfThresholdIFNode and node.v_threshold == 1.0
    torch.testing.assert_close(scaler.scale, 1 / theta)
    x = torch.randn(16, 5) * 2
    torch.testing.assert_close(run_single_step(back, x, 6), run_single_step(net, x, 6))
