"""Per-channel thresholds: N == M per neuron at T = L with theta and V0 differing per channel."""
import itertools

import pytest
import torch
import torch.nn as nn

from nets import build
from sj_qvm import QuantReLU, QVMIFNode, convert
from sj_qvm.analysis import compare_levels, conversion_report

ROUNDINGS = ("floor", "round", "ceil")
LEVELS = (1, 2, 4, 8, 16)
THETAS = (1.0, 0.75, 2.5, 0.5)  # z * theta / L is exact in float64 for these and L = 2^k


def mismatches(ann, snn, x):
    rows = compare_levels(ann, snn, x)
    return sum(r.mismatched for r in rows), sum(r.neuron_evaluations for r in rows)


def per_channel(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Every QuantReLU gets one threshold per channel (dim 1 of its input), spread over [0.5, 2)."""
    g = torch.Generator().manual_seed(seed)
    channels = {}

    def hook(m, inp, out):
        channels.setdefault(m, inp[0].shape[1])
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, QuantReLU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for m, c in channels.items():
        m.threshold = nn.Parameter((0.5 + 1.5 * torch.rand(c, generator=g)).to(x.dtype))
    return model


def channel_boundary_net(L, rounding, dtype=torch.float64):
    """A 1x1 identity conv into a per-channel QuantReLU, then a second identity layer.

    Channel c has theta_c = THETAS[c % 4]; the input puts z = x * L / theta_c on every integer k
    and every k + 1/2 in [-2, L + 2) exactly, at every position of every channel.
    """
    C = 8
    theta = torch.tensor([THETAS[c % 4] for c in range(C)], dtype=dtype)
    conv1, conv2 = nn.Conv2d(C, C, 1), nn.Conv2d(C, C, 1)
    for conv in (conv1, conv2):
        conv.weight.data = torch.eye(C, dtype=dtype).view(C, C, 1, 1)
        conv.bias.data.zero_()
    ann = nn.Sequential(conv1, QuantReLU(L, rounding, theta), conv2,
                        QuantReLU(L, rounding, theta.flip(0))).to(dtype).eval()
    z = (torch.arange(2 * L + 8, dtype=dtype) - 4) / 2                  # [P]
    x = (z.view(1, 1, -1, 1) * theta.view(1, C, 1, 1) / L).expand(1, C, z.numel(), 1)
    assert torch.equal(x * L / theta.view(1, C, 1, 1), z.view(1, 1, -1, 1).expand_as(x))
    return ann, x.contiguous()


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("L", LEVELS)
def test_per_channel_boundaries_z_integer_half_and_zero(rounding, L):
    ann, x = channel_boundary_net(L, rounding)
    snn = convert(ann)
    nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
    assert all(isinstance(n.v_threshold, torch.Tensor) and n.v_threshold.numel() == 8
               for n in nodes)
    for inp in (x, torch.zeros_like(x)):
        bad, total = mismatches(ann, snn, inp)
        assert bad == 0 and total == 2 * inp.numel()


@pytest.mark.parametrize("rounding,frac", [("floor", 0.0), ("round", 0.5)])
def test_per_channel_v0_of_another_channel_breaks_exactness(rounding, frac):
    """V0 = frac * theta_c as a per-channel tensor is exact; the converse, V0 from the wrong
    channel's theta, gives N != M."""
    ann, x = channel_boundary_net(4, rounding)
    snn = convert(ann)
    node = next(m for m in snn.modules() if isinstance(m, QVMIFNode))
    theta = node.v_threshold.clone()
    node.v_init = frac * theta
    assert mismatches(ann, snn, x)[0] == 0
    node.v_init = (frac if frac else 0.25) * theta.roll(1)
    assert mismatches(ann, snn, x)[0] > 0


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_per_channel_nets_float64_exact(arch, rounding):
    for L in (2, 4, 8):
        ann, x = build(arch, L, rounding)
        ann = per_channel(ann, x).eval()
        bad, total = mismatches(ann, convert(ann), x)
        assert bad == 0 and total > 0, f"{arch} {rounding} L={L}: {bad}/{total}"


def test_per_channel_float32_rate():
    bad = total = 0
    for arch, rounding, L in itertools.product(["mlp", "cnn", "resnet"], ROUNDINGS, (2, 8)):
        ann, x = build(arch, L, rounding, dtype=torch.float32)
        ann = per_channel(ann, x).eval()
        b, t = mismatches(ann, convert(ann), torch.cat([x] * 2))
        bad, total = bad + b, total + t
    print(f"per-channel float32 N != M: {bad} of {total} neurons")
    assert total > 200_000 and bad / total <= 1e-6


def test_conversion_report_uses_each_channels_theta():
    """eq. 5 per neuron: theta_c / T * |M - N| with the neuron's own channel theta."""
    L = 4
    ann, x = channel_boundary_net(L, "round")
    snn = convert(ann, current="instant")
    rows = compare_levels(ann, snn, x)
    rep = conversion_report(ann, snn, x)
    for row, lr in zip(rows, rep.rows):
        assert lr.unevenness_error == pytest.approx(row.unevenness_error, rel=1e-9)
    # By hand for the first layer: one channel's error counted with its own theta.
    from sj_qvm.analysis import ann_levels, snn_spike_counts
    (_, M), *_ = ann_levels(ann, x)
    (_, N), *_ = snn_spike_counts(snn, x.unsqueeze(0).expand(L, *x.shape).contiguous())
    theta = ann[1].threshold.detach().view(1, -1, 1, 1)
    want = (theta / L * (M - N).abs()).mean().item()
    assert rows[0].unevenness_error == pytest.approx(want, rel=1e-9)
