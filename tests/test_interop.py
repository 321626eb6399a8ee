"""quantize / calibrate / finetune / Converter / QVMRecipe / to_qvm / to_spikingjelly, on the host SJ."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sj_qvm
from sj_qvm import QuantReLU, QVMIFNode, _compat
from sj_qvm.analysis import compare_levels
from sj_qvm.convert import ConversionError, QVMNetwork
from sj_qvm import mapping

SJ2 = _compat.FXConversionRecipe is not None


def run(snn, x, T):
    _compat.reset_net(snn)
    with torch.no_grad():
        return snn(x.unsqueeze(0).expand(T, *x.shape).contiguous())


def run_single_step(net, x, T):
    _compat.reset_net(net)
    with torch.no_grad():
        return torch.stack([net(x) for _ in range(T)])


class FunctionalNet(nn.Module):
    """ReLUs as a reused module, F.relu, torch.relu and a .relu() method; one MaxPool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6 * 16, 24), nn.Linear(24, 16), nn.Linear(16, 10)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.conv(x))))
        x = torch.relu(self.fc1(x.flatten(1)))
        x = self.act(self.fc2(x)).relu()
        return self.fc3(self.act(x))


def loader(n=48, bs=16, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]


def quant_modules(m):
    return [q for q in m.modules() if isinstance(q, QuantReLU)]


# -- quantize ---------------------------------------------------------------------------------
def test_quantize_replaces_functional_relus_and_reused_modules():
    net = FunctionalNet().eval()
    q = sj_qvm.quantize(net, 4, replace_maxpool=True)
    # F.relu, torch.relu, act (twice: two call sites), .relu(): 5 activations, none left.
    assert len(quant_modules(q)) == 5
    ops = [(n.op, n.target) for n in q.graph.nodes]
    assert not any(t in (F.relu, torch.relu) or t == "relu" for _, t in ops)
    assert not any(isinstance(m, nn.ReLU) for m in q.modules())
    # The original is untouched and still computes with float ReLUs.
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    # Converting the result works and is exact (N == M).
    snn = sj_qvm.convert(q.double())
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    rows = compare_levels(q, snn, x)
    assert len(rows) == 5 and sum(r.mismatched for r in rows) == 0


def test_maxpool_is_kept_and_converts_exactly_or_becomes_avgpool():
    net = FunctionalNet().eval()
    q = sj_qvm.quantize(net, 4)
    pools = [m for m in q.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == 1 and isinstance(pools[0], nn.MaxPool2d)
    x = torch.rand(5, 1, 8, 8)
    rows = compare_levels(q, sj_qvm.convert(q), x)
    assert sum(r.mismatched for r in rows) == 0
    q = sj_qvm.quantize(net, 4, replace_maxpool=True)
    pools = [m for m in q.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == 1 and isinstance(pools[0], nn.AvgPool2d)
    x = torch.rand(2, 6, 4, 4)
    torch.testing.assert_close(pools[0](x), F.avg_pool2d(x, 2))


def test_functional_maxpool_becomes_a_module_or_avgpool():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2, 2).flatten(1))

    net = Net().eval()
    q = sj_qvm.quantize(net, 2)
    assert F.max_pool2d not in [n.target for n in q.graph.nodes]
    pools = [m for m in q.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 1 and pools[0].kernel_size == 2 and pools[0].stride == 2
    x = torch.rand(3, 1, 4, 4)
    act = quant_modules(q)[0]
    want = q.fc(F.max_pool2d(act(q.conv(x)), 2, 2).flatten(1))
    torch.testing.assert_close(q(x), want, rtol=0, atol=0)
    q = sj_qvm.quantize(Net(), 2, replace_maxpool=True)
    assert F.avg_pool2d in [n.target for n in q.graph.nodes]
    assert F.max_pool2d not in [n.target for n in q.graph.nodes]


def test_adaptive_maxpool_and_indices_raise_with_hint():
    for pool in (nn.AdaptiveMaxPool2d(1), nn.MaxPool2d(2, return_indices=True)):
        net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), pool)
        with pytest.raises(ConversionError, match="replace_maxpool=True"):
            sj_qvm.quantize(net, 4)


def test_calibration_is_the_percentile_of_float_relu_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    data = loader(n=60, bs=20, shape=(8,))
    kw = dict(method="percentile", channel_wise=False, sequential=False, progress=False,
              reconstruct_steps=0)
    q = sj_qvm.quantize(net, 4, dataloader=data, percentile=99.0, **kw)
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        h1 = torch.relu(net[0](x))
        h2 = torch.relu(net[2](h1))  # the float ANN, not the quantized one
    want = [np.percentile(h.numpy(), 99.0) for h in (h1, h2)]
    got = [m.threshold.item() for m in quant_modules(q)]
    assert got == pytest.approx(want, rel=1e-6)
    # Deterministic: same ANN + loader -> bit-identical thresholds.
    q2 = sj_qvm.quantize(net, 4, dataloader=data, percentile=99.0, **kw)
    assert [m.threshold.item() for m in quant_modules(q2)] == got


def test_calibration_refuses_a_dead_layer():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
        net[0].bias.fill_(-1.0)
    with pytest.raises(ValueError, match="only zeros"):
        sj_qvm.quantize(net, 4, dataloader=loader(n=8, bs=8, shape=(4,)), progress=False)


def test_finetune_wins_back_ptq_accuracy():
    from sj_qvm.app.digits import load_digits_tensors
    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_tensors(0)
    x_tr, y_tr, x_te, y_te = x_tr.flatten(1), y_tr, x_te.flatten(1), y_te
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        loss = F.cross_entropy(net(x_tr), y_tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = lambda m: (m(x_te).argmax(1) == y_te).double().mean().item()
    train = [(x_tr[i:i + 64], y_tr[i:i + 64]) for i in range(0, len(x_tr), 64)]
    with torch.no_grad():
        float_acc = acc(net.eval())
        # v0.1's calibration: one percentile per layer, from the float ANN.
        qann = sj_qvm.quantize(net, 1, dataloader=train, method="percentile",
                               channel_wise=False, sequential=False, progress=False)
        ptq = acc(qann)
        default = acc(sj_qvm.quantize(net, 1, dataloader=train, progress=False))
    assert ptq < float_acc - 0.05  # L = 1 post-training quantization hurts...
    assert default > ptq  # (less with the per-channel MSE default)
    sj_qvm.finetune(qann, train, epochs=5, lr=1e-2, progress=False)
    with torch.no_grad():
        qat = acc(qann)
    assert qat - ptq > 0.5 * (float_acc - ptq)  # ...and a short fine-tune wins most of it back
    assert not qann.training


# -- Converter and QVMRecipe ------------------------------------------------------------------
def mnist_like_cnn():
    """The layer sequence of SJ's sample ``mnist_cnn.CNN``, for hosts that do not ship it."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(32, 32, 3, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(32, 32, 3, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Flatten(), nn.Linear(32, 10))


SAMPLES = dict(_compat.sample_models())
MODELS = [("mnist_cnn", (1, 28, 28)), ("cifar10_resnet18", (3, 32, 32))]


def make_model(name):
    if name in SAMPLES:
        return SAMPLES[name]()
    if name == "mnist_cnn":
        return mnist_like_cnn()
    pytest.skip(f"spikingjelly {_compat.SJ_VERSION} ships no {name} sample model")


@pytest.mark.parametrize("name,shape", MODELS)
def test_converter_on_sample_models_is_exact_at_t_equals_l(name, shape):
    L = 2
    ann = make_model(name).eval().double()
    data = [(torch.rand(2, *shape, dtype=torch.float64), torch.zeros(2))]
    conv = sj_qvm.Converter(dataloader=data, levels=L, progress=False)
    snn = conv(ann)
    assert isinstance(snn, QVMNetwork) and snn.levels == L
    x = torch.rand(2, *shape, dtype=torch.float64)
    rows = compare_levels(conv.qann, snn, x)
    assert sum(r.mismatched for r in rows) == 0 and sum(r.neuron_evaluations for r in rows) > 0
    torch.testing.assert_close(run(snn, x, L).mean(0), conv.qann(x), rtol=1e-12, atol=1e-12)
    # not vacuous: the ANN computes something
    assert conv.qann(x).abs().max() > 1e-3


@pytest.mark.skipif(not SJ2, reason="QVMRecipe needs SpikingJelly 2.x")
@pytest.mark.parametrize("name,shape", MODELS)
def test_qvm_recipe_on_sample_models(name, shape):
    L = 2
    ann = make_model(name).eval().double()
    data = [(torch.rand(2, *shape, dtype=torch.float64), torch.zeros(2))]
    recipe = sj_qvm.QVMRecipe(levels=L, dataloader=data, progress=False)
    snn = _compat.SJConverter(recipe=recipe).convert(ann)
    assert isinstance(snn, QVMNetwork)
    x = torch.rand(2, *shape, dtype=torch.float64)
    out = run(snn, x, L)
    assert out.shape[:2] == (L, 2)
    torch.testing.assert_close(out.mean(0), recipe.qann(x), rtol=1e-12, atol=1e-12)
    # Same ANN + calibration loader -> the same thresholds as sj_qvm.quantize.
    q = sj_qvm.quantize(ann, L, dataloader=data, progress=False)
    assert all(torch.equal(a.threshold, b.threshold)
               for a, b in zip(quant_modules(recipe.qann), quant_modules(q), strict=True))


@pytest.mark.skipif(SJ2, reason="the 0.0.0.0.14 placeholder")
def test_qvm_recipe_refuses_on_0_14():
    with pytest.raises(RuntimeError, match="sj_qvm.Converter"):
        sj_qvm.QVMRecipe(levels=4)


def test_converter_keeps_trained_quant_relus_and_fine_tunes():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), QuantReLU(4, "floor", 0.7),
                        nn.Linear(32, 10))
    snn = sj_qvm.Converter(levels=8)(ann)  # no dataloader: thresholds kept, levels from the ANN
    assert snn.levels == 4
    assert [m.node.v_threshold for _, m in snn.spiking_layers()] == [pytest.approx(0.7)]
    data = loader(n=32, bs=16)
    conv = sj_qvm.Converter(dataloader=data, levels=4, finetune_epochs=1, progress=False)
    before = ann[1].weight.detach().clone()
    conv(ann)
    assert not torch.equal(conv.qann[1].weight, before)   # fine-tuned copy...
    assert torch.equal(ann[1].weight, before)             # ...of an untouched ANN


# -- to_qvm / to_spikingjelly ----------------------------------------------------------------
def sj_pair(T=8):
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 32), nn.ReLU(),
                        nn.Linear(32, 10)).eval()
    data = loader(n=64, bs=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = _compat.sj_convert(ann, data, mode="99.9%")
    return ann, snn, torch.cat([b[0] for b in data])


def test_to_qvm_swaps_every_if_node_and_takes_theta_from_the_scalers():
    ann, snn, x = sj_pair()
    sites = mapping.spiking_sites(snn)
    assert len(sites) == 2 and all(type(m) is _compat.IFNode for _, m, _ in sites)
    q = sj_qvm.to_qvm(snn, "round")
    new = mapping.spiking_sites(q)
    assert [type(m) for _, m, _ in new] == [sj_qvm.QVMIFNode] * 2
    for (_, _, theta), (_, node, theta_q) in zip(sites, new):
        assert node.v_threshold == pytest.approx(theta, rel=1e-6) and node.v_init == "round"
        assert theta_q == pytest.approx(theta, rel=1e-6)
    assert all(type(m) is _compat.IFNode for _, m, _ in mapping.spiking_sites(snn))  # a copy


def test_to_qvm_lowers_the_output_error_against_the_ann():
    ann, snn, x = sj_pair()
    T = 8
    with torch.no_grad():
        y = ann(x)
    err = lambda net: (run_single_step(net, x, T).mean(0) - y).abs().mean().item()
    e_sj, e_qvm = err(snn), err(sj_qvm.to_qvm(snn, "round"))
    assert e_qvm < 0.75 * e_sj, (e_sj, e_qvm)


@pytest.mark.skipif(not SJ2, reason="multi-step converted layers need SpikingJelly 2.x")
def test_to_qvm_expected_current_on_a_multi_step_sj_network():
    ann, snn, x = sj_pair()
    with pytest.raises(ValueError, match="multi-step"):
        sj_qvm.to_qvm(snn, current="expected")
    _compat.set_step_mode(snn, "m")
    q = sj_qvm.to_qvm(snn, "round", current="expected")
    T = 8
    with torch.no_grad():
        y = ann(x)
    e_sj = (run(snn, x, T).mean(0) - y).abs().mean().item()
    e_qvm = (run(q, x, T).mean(0) - y).abs().mean().item()
    assert e_qvm < 0.75 * e_sj


def test_to_qvm_calls_invalidate_reset_cache(monkeypatch):
    _, snn, _ = sj_pair()
    seen = []
    monkeypatch.setattr(_compat, "invalidate_reset_cache", lambda net: seen.append(net))
    q = sj_qvm.to_qvm(snn, "ceil")
    with pytest.warns(UserWarning, match="V0"):
        back = sj_qvm.to_spikingjelly(q)
    assert seen == [q, back]


def test_round_trip_to_spikingjelly_restores_behaviour_and_warns_when_v0_is_lost():
    ann, snn, x = sj_pair()
    snn, x = snn.double(), x.double()
    ref = run_single_step(snn, x, 8)
    floor = sj_qvm.to_qvm(snn, "floor")   # V0 = 0: the same neuron as SJ's
    torch.testing.assert_close(run_single_step(floor, x, 8), ref, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = sj_qvm.to_spikingjelly(floor)  # nothing lost: no warning
    assert all(type(m) is _compat.IFNode and m.v_reset is None and m.v_threshold == 1.0
               for _, m, _ in mapping.spiking_sites(back))
    torch.testing.assert_close(run_single_step(back, x, 8), ref, rtol=1e-12, atol=1e-12)
    with pytest.warns(UserWarning, match="V0"):
        sj_qvm.to_spikingjelly(sj_qvm.to_qvm(snn, "ceil"))  # V0 = theta: no host node has it


def test_to_spikingjelly_on_a_qvm_network_and_the_backend_argument():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), QuantReLU(4, "round", 1.0), nn.Linear(8, 3))
    snn = sj_qvm.convert(ann)
    with pytest.warns(UserWarning, match="V0"):
        # backend= is what 0.14 code passes; SJ 2.0's IFNode no longer takes it.
        sj = sj_qvm.to_spikingjelly(snn, backend="torch")
    host = _compat.HalfThresholdIFNode or _compat.IFNode  # V0 = theta/2 kept where SJ has it
    nodes = [m for m in sj.modules() if type(m) is host]
    assert len(nodes) == 1 and nodes[0].v_threshold == 1.0
    assert (getattr(nodes[0], "backend", None) == "torch") == (_compat.SJ_MAJOR < 2)
    # SJ's single-step layout, fed x at every step: the QVM network's output with instant
    # current; and back, QVM nodes again with the same output.
    x = torch.rand(4, 1, 4, 4)
    inst = sj_qvm.convert(ann, current="instant")

    def run_qvm(net):
        _compat.reset_net(net)
        with torch.no_grad():
            return net(x.unsqueeze(0).expand(4, *x.shape).contiguous())
    want = run_qvm(inst)

    def run(net):
        _compat.reset_net(net)
        with torch.no_grad():
            return torch.stack([net(x) for _ in range(4)])
    q = sj_qvm.to_qvm(sj, "round")
    assert any(isinstance(m, QVMIFNode) for m in q.modules()) and torch.equal(run(q), want)
    if _compat.HalfThresholdIFNode is None:  # SJ 0.0.0.0.14's IFNode starts at V0 = 0 (warned)
        for m in inst.modules():
            if isinstance(m, QVMIFNode):
                m.v_init = 0.0
        want = run_qvm(inst)
    assert torch.equal(run(sj), want)


def test_one_mapping_table_drives_both_directions():
    """Every host row: host node -> QVM node -> the same host class, shared arguments intact."""
    assert _compat.IFNode in [r.host for r in mapping.MAPPING]
    assert (_compat.HalfThresholdIFNode in [r.host for r in mapping.MAPPING]) == SJ2
    for row in mapping.MAPPING:
        sj = row.host(**dict(row.host_fixed), detach_reset=True, step_mode="m", v_threshold=0.5)
        q = sj_qvm.to_qvm(nn.Sequential(sj), rounding=row.v_init, current="expected")[0]
        assert type(q) is row.plugin and q.v_init == row.v_init and q.v_threshold == 0.5
        assert all(getattr(q, a) == getattr(sj, a) for a in row.shared if a != "surrogate_function")
        q.current = "instant"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing lost on the way back
            back = sj_qvm.to_spikingjelly(nn.Sequential(q))[0]
        assert type(back) is row.host and back.v_threshold == 0.5
        assert all(getattr(back, a) == getattr(sj, a) for a in row.shared
                   if a != "surrogate_function")


def test_to_qvm_refuses_hard_reset_nodes():
    with pytest.raises(ValueError, match="soft reset"):
        sj_qvm.to_qvm(nn.Sequential(nn.Linear(2, 2), _compat.IFNode(v_reset=0.0)))


def test_to_qvm_and_to_spikingjelly_refuse_what_is_not_a_module():
    for fn, name in ((sj_qvm.to_qvm, "sj_snn"), (sj_qvm.to_spikingjelly, "snn")):
        with pytest.raises(TypeError, match=f"{name} must be a torch.nn.Module"):
            fn("net")
