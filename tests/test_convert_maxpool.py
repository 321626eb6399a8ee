"""Max-pooling converts exactly: N == M through spiking and analog max-pools, torchvision nets included."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sj_qvm
from sj_qvm import QuantReLU, _compat, convert
from sj_qvm.analysis import compare_levels
from sj_qvm.pool import ConvertedMaxPool

ROUNDINGS = ("floor", "round", "ceil")


def _nets(L, rounding):
    """A max-pool on spikes (after a QuantReLU), one on currents (before one), and a strided,
    padded one; float64 with thresholds that spread the levels."""
    g = torch.Generator().manual_seed(L)
    spiking = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), QuantReLU(L, rounding, 1.5),
                            nn.MaxPool2d(2), nn.Conv2d(6, 4, 3, padding=1),
                            QuantReLU(L, rounding, [1.0, 2.0, 0.5, 1.5]),
                            nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(16, 5))
    analog = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(6),
                           QuantReLU(L, rounding, 1.0), nn.Flatten(), nn.Linear(6 * 16, 5))
    for net in (spiking, analog):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.data = torch.randn(m.weight.shape, generator=g) * 0.6
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.3
    return spiking.double().eval(), analog.double().eval()


@pytest.mark.parametrize("schedule", ["per_sample", "per_step"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("L", [2, 4])
def test_maxpool_nets_exact(L, rounding, schedule):
    x = torch.rand(6, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    for ann in _nets(L, rounding):
        snn = convert(ann, schedule=schedule)
        rows = compare_levels(ann, snn, x)
        assert sum(r.mismatched for r in rows) == 0
        assert sum(r.neuron_evaluations for r in rows) > 0
        _compat.reset_net(snn)
        with torch.no_grad():
            logits = snn(x.unsqueeze(0).repeat(L, 1, 1, 1, 1)).mean(0)
            torch.testing.assert_close(logits, ann(x), rtol=1e-12, atol=1e-12)


def pooled_per_step(snn, x):
    """The outputs of every ConvertedMaxPool of ``snn`` on the static input ``x`` at T = 4."""
    pools = [m for m in snn.modules() if isinstance(m, ConvertedMaxPool)]
    assert [p.on_spikes for p in pools] == [True, True]
    seen = []
    hooks = [p.register_forward_hook(lambda m, i, o: seen.append(o.detach())) for p in pools]
    with torch.no_grad():
        snn(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    for h in hooks:
        h.remove()
    return seen


def test_pool_on_spikes_emits_spikes_per_step():
    ann, _ = _nets(4, "round")
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    # theta folded into the next layer (the per-step default): binary spikes in and out
    for out in pooled_per_step(convert(ann, schedule="per_step"), x):
        assert ((out == 0) | (out == 1)).all() and (out == 1).any()
    # the unfolded reference twin pools theta-valued spikes
    seen = pooled_per_step(convert(ann, schedule="per_step", fold_theta=False), x)
    assert torch.isin(seen[0], torch.tensor([0.0, 1.5], dtype=torch.float64)).all()  # theta * {0, 1}
    theta = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64).view(1, 4, 1, 1)
    assert ((seen[1] == 0) | (seen[1] == theta)).all()


def test_analog_pool_is_marked_and_instant_mode_runs():
    _, ann = _nets(4, "round")
    pools = [m for m in convert(ann).modules() if isinstance(m, ConvertedMaxPool)]
    assert [p.on_spikes for p in pools] == [False]
    snn = convert(ann, current="instant")
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        out = snn(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    assert out.shape == (4, 2, 5) and torch.isfinite(out).all()


def _loader(shape, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, generator=g),)]


def _small_vgg16_bn():
    """torchvision's vgg16_bn features (13 conv-BN-ReLU, 5 MaxPool2d) with a narrow classifier, so
    that the float64 test stays small; the classifier keeps its Linear-ReLU-Dropout structure."""
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.vgg16_bn(num_classes=10)
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Sequential(nn.Linear(512, 64), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return net


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "vgg16_bn"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_torchvision_models_quantize_and_convert_exactly(arch, rounding):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = _small_vgg16_bn() if arch == "vgg16_bn" else getattr(torchvision.models, arch)(num_classes=10)
    net = net.double().eval()
    side = 32 if arch == "vgg16_bn" else 16  # 5 pools for VGG; stem stride 2 + 3 strided stages
    data = [(x.double(),) for (x,) in _loader((3, side, side), n=4)]
    # one calibration pass (sequential=False) keeps the test fast; exactness holds for any gamma
    q = sj_qvm.quantize(net, 4, rounding, dataloader=data, progress=False, sequential=False)
    assert any(isinstance(m, nn.MaxPool2d) for m in q.modules())
    snn = convert(q)
    rows = compare_levels(q, snn, data[0][0][:4])
    assert sum(r.mismatched for r in rows) == 0
    assert len(rows) == sum(isinstance(m, QuantReLU) for m in q.modules())
    assert sum((r.neuron_evaluations - r.mismatched) for r in rows) > 0


def test_per_step_max_of_spikes_would_overcount():
    """The converse: an ANN max-pool applied to each step's spikes (no leading-count rule) breaks
    exactness in the same converted network."""
    ann, _ = _nets(4, "round")
    snn = convert(ann, schedule="per_step")
    for m in snn.modules():
        if isinstance(m, ConvertedMaxPool):
            m.forward = lambda x, m=m: F.max_pool2d(x, m.pool.kernel_size, m.pool.stride, m.pool.padding)
    x = torch.rand(32, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    rows = compare_levels(ann, snn, x)
    _compat.reset_net(snn)
    with torch.no_grad():
        err = (snn(x.unsqueeze(0).repeat(4, 1, 1, 1, 1)).mean(0) - ann(x)).abs().max().item()
    assert sum(r.mismatched for r in rows) > 0 or err > 1e-6
