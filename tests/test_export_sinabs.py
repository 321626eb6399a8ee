"""sj_qvm.export.to_sinabs: the sinabs network fires the QVM SNN's spikes, spike for spike, in the
per-step schedule (instant and expected current), float64; and the converse: without V0, with a
hard reset, several spikes a step or the non-strict rule for ceil, it does not. Runs where sinabs
is installed (pip install 'sj-qvm[sinabs]'); test_export_dynapcnn checks the ImportError without
it."""
import pytest
import torch
import torch.nn as nn

from nets import build
from sj_qvm import QuantReLU, convert
from sj_qvm._compat import functional
from sj_qvm.graph import ConversionError


sinabs = pytest.importorskip("sinabs")
from sinabs.activation import MembraneReset, MultiSpike  # noqa: E402

from sj_qvm.export import to_sinabs  # noqa: E402
from sj_qvm.export.sinabs_layers import QVMIAFSqueeze, QVMSpike  # noqa: E402

ROUNDINGS = ("floor", "round", "ceil")


def qvm_spikes(snn, x_seq):
    """``(y_seq [T, B, *], [spikes [T, B, *] per spiking layer])`` of the per-step QVM SNN."""
    rec = []
    hooks = [m.register_forward_hook(lambda mod, i, o: rec.append(o.detach()))
             for _, m in snn.spiking_layers()]
    try:
        with torch.no_grad():
            functional.reset_net(snn)
            y = snn(x_seq)
    finally:
        for h in hooks:
            h.remove()
    T, B = x_seq.shape[:2]
    return y, [s.reshape(T, B, *s.shape[1:]) for s in rec]


def sinabs_spikes(net, x_seq):
    """The same from the sinabs network, whose layout is ``[B*T, *]`` batch-major."""
    T, B = x_seq.shape[:2]
    rec = []
    hooks = [m.register_forward_hook(lambda mod, i, o: rec.append(o.detach()))
             for m in net if isinstance(m, QVMIAFSqueeze)]
    try:
        with torch.no_grad():
            sinabs.reset_states(net)
            y = net(x_seq.transpose(0, 1).flatten(0, 1))
    finally:
        for h in hooks:
            h.remove()
    unfold = lambda t: t.reshape(B, T, *t.shape[1:]).transpose(0, 1)
    return unfold(y), [unfold(s) for s in rec]


def mismatches(snn, net, x_seq):
    y, s = qvm_spikes(snn, x_seq)
    y2, s2 = sinabs_spikes(net, x_seq)
    assert len(s) == len(s2) and all(a.shape == b.shape for a, b in zip(s, s2))
    return sum(int((a != b).sum()) for a, b in zip(s, s2)), torch.equal(y, y2), s


def repeat(x, T):
    return x.unsqueeze(0).expand(T, *x.shape).contiguous()


@pytest.mark.parametrize("arch,threshold", [("mlp", 1.0), ("cnn", 0.5), ("cnn", 0.7)])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("L", [1, 2, 4, 8])
def test_spike_for_spike_on_the_test_nets(arch, threshold, rounding, current, L):
    """θ = 1 and 0.5 fold into the weights (threshold 1); θ = 0.7 stays the threshold."""
    torch.manual_seed(L)
    ann, x = build(arch, L, rounding, threshold=threshold)
    x = x[:8]
    snn = convert(ann, current=current, schedule="per_step")
    net = to_sinabs(snn, input_shape=tuple(x.shape[1:]))
    iafs = [m for m in net if isinstance(m, QVMIAFSqueeze)]
    thetas = [float(m.node.v_threshold) for _, m in snn.spiking_layers()]
    want = thetas if threshold == 0.7 else [1.0] * len(thetas)
    assert [float(m.spike_threshold) for m in iafs] == want
    bad, same_out, s = mismatches(snn, net, repeat(x, L))
    assert bad == 0 and same_out
    assert 0 < float(s[0].mean()) < 1  # the layers do fire, and not everywhere


def boundary_net(L, rounding, theta):
    """An identity first layer: the pre-activation is the input itself, so z = x * L / theta."""
    n = theta.numel()
    ann = nn.Sequential(nn.Linear(n, n), QuantReLU(L, rounding, theta), nn.Linear(n, 3),
                        QuantReLU(L, rounding, 1.0), nn.Linear(3, 2)).double().eval()
    with torch.no_grad():
        ann[0].weight.copy_(torch.eye(n))
        ann[0].bias.zero_()
    return ann


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("L", [1, 2, 4, 8])
def test_spike_for_spike_at_the_boundaries_z_k_and_k_half(rounding, current, L):
    theta = torch.tensor([0.5, 0.75, 1.0, 3.0], dtype=torch.float64)  # per-channel, mixed
    z = torch.arange(0, 2 * L + 2, dtype=torch.float64) / 2  # k and k + 1/2, 0 .. L + 1/2
    x = (z.view(-1, 1) * theta / L)  # [2L+2, 4]: every channel at every boundary
    snn = convert(boundary_net(L, rounding, theta), current=current, schedule="per_step")
    net = to_sinabs(snn)
    bad, same_out, s = mismatches(snn, net, repeat(x, L))
    assert bad == 0 and same_out
    counts = s[0].sum(0)
    assert torch.equal(counts[:, 2], {"floor": z.floor(), "round": (z + 0.5).floor(),
                                      "ceil": z.ceil()}[rounding].clamp(0, L))


def _boundary_pair(rounding, L=4):
    theta = torch.tensor([0.5, 1.0], dtype=torch.float64)
    z = torch.arange(0, 2 * L + 2, dtype=torch.float64) / 2
    x = z.view(-1, 1) * theta / L
    snn = convert(boundary_net(L, rounding, theta), current="expected", schedule="per_step")
    return snn, to_sinabs(snn), repeat(x, L)


@pytest.mark.parametrize("rounding", ["round", "ceil"])
def test_dropping_v0_breaks_the_equality(rounding):
    snn, net, x_seq = _boundary_pair(rounding)
    assert mismatches(snn, net, x_seq)[0] == 0
    for m in net:
        if isinstance(m, QVMIAFSqueeze):
            m.v_init.data.zero_()
    assert mismatches(snn, net, x_seq)[0] > 0


def test_a_hard_reset_breaks_the_equality():
    snn, net, x_seq = _boundary_pair("round")
    for m in net:
        if isinstance(m, QVMIAFSqueeze):
            m.reset_fn = MembraneReset()
    assert mismatches(snn, net, x_seq)[0] > 0


def test_the_non_strict_rule_breaks_ceil_at_integer_z():
    snn, net, x_seq = _boundary_pair("ceil")
    for m in net:
        if isinstance(m, QVMIAFSqueeze):
            m.spike_fn = QVMSpike
    assert mismatches(snn, net, x_seq)[0] > 0


def test_several_spikes_a_step_break_the_equality():
    """sinabs's default MultiSpike fires floor(v / threshold) spikes at once (float32 here: its
    spikes are float32)."""
    ann = boundary_net(2, "round", torch.tensor([1.0, 1.0])).float()
    snn = convert(ann, current="instant", schedule="per_step")
    net = to_sinabs(snn)
    x_seq = torch.tensor([[[3.0, 0.25]], [[0.0, 0.25]]])  # 3 units at once in step 1
    assert mismatches(snn, net, x_seq)[0] == 0
    for m in net:
        if isinstance(m, QVMIAFSqueeze):
            m.spike_fn = MultiSpike
    assert mismatches(snn, net, x_seq)[0] > 0


def test_max_pool_on_the_input_is_exported_exactly():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4),
                        QuantReLU(4, "round", 0.5), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    ann.eval()
    x = torch.rand(8, 2, 8, 8, dtype=torch.float64) * 2
    for current in ("instant", "expected"):
        snn = convert(ann, current=current, schedule="per_step")
        bad, same_out, _ = mismatches(snn, to_sinabs(snn), repeat(x, 4))
        assert bad == 0 and same_out


class MaxOnSpikes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(2, 4, 3), QuantReLU(4, "round", 1.0)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(4 * 3 * 3, 2)

    def forward(self, x):
        y = self.pool(self.act(self.conv(x)))  # the line the error names
        return self.fc(y.flatten(1))


def test_unsupported_layers_raise_naming_the_users_line():
    snn = convert(build("resnet", 4, "round")[0], schedule="per_step")
    with pytest.raises(ConversionError, match=r"nets\.py:\d+ in forward.*residual"):
        to_sinabs(snn)
    snn = convert(MaxOnSpikes().eval(), schedule="per_step")
    with pytest.raises(ConversionError, match=r"test_export_sinabs\.py:\d+ in forward.*"
                                              r"max-pool on spikes.*overcounts"):
        to_sinabs(snn)
    ann = nn.Sequential(nn.Conv2d(1, 2, 3), QuantReLU(2, "floor", 1.0), nn.AvgPool2d(3),
                        nn.Flatten(), nn.Linear(2, 2)).eval()
    with pytest.raises(ConversionError, match=r"AvgPool2d.*no exact sum-pooling"):
        to_sinabs(convert(ann, schedule="per_step"))


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_spike_for_spike_on_the_dvs_demo_net(rounding, current):
    """The DVS demo's VGG (per-channel thresholds, not powers of two, kept as the thresholds)."""
    from sj_qvm.models import vgg
    torch.manual_seed(3)
    ann = vgg(levels=4, rounding=rounding, width=4).double().eval()
    g = torch.Generator().manual_seed(4)
    for m in ann.modules():
        if isinstance(m, QuantReLU):
            m.threshold.data.copy_(torch.rand(m.threshold.shape, generator=g,
                                              dtype=torch.float64) * 0.2 + 0.05)
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
    snn = convert(ann, current=current, schedule="per_step")
    net = to_sinabs(snn, input_shape=(2, 32, 32))
    x_seq = torch.randint(0, 3, (4, 4, 2, 32, 32), generator=g).double()  # event frames
    bad, same_out, s = mismatches(snn, net, x_seq)
    assert bad == 0 and same_out and all(0 < float(t.mean()) < 1 for t in s)


def test_a_per_sample_network_exports_its_per_step_twin():
    """convert's default (per-sample schedule, θ not folded) exports the per-step form."""
    ann, x = build("cnn", 4, "round", threshold=0.5)
    x = x[:8]
    net = to_sinabs(convert(ann), input_shape=(3, 8, 8))
    bad, same_out, _ = mismatches(convert(ann, schedule="per_step"), net, repeat(x, 4))
    assert bad == 0 and same_out
