"""The heart of QVM: N == M per neuron at T = L with the expected current, boundaries included."""
import itertools

import pytest
import torch
import torch.nn as nn

from nets import build
from sj_qvm import QuantReLU, QVMIFNode, convert
from sj_qvm.analysis import compare_levels
from sj_qvm.ops import native

ROUNDINGS = ("floor", "round", "ceil")
# Every backend that runs here ("auto" is "cpu" on CPU tensors where the kernels are built).
BACKENDS = ["torch", pytest.param("cpu", marks=pytest.mark.skipif(
    not native.available(), reason=f"the compiled CPU kernels: {native.unavailable_reason()}"))]
LEVELS = (1, 2, 4, 8, 16)


def mismatches(ann, snn, x, x_seq=None):
    rows = compare_levels(ann, snn, x, x_seq)
    return sum(r.mismatched for r in rows), sum(r.neuron_evaluations for r in rows)


def _active_levels(ann, x):
    from sj_qvm.analysis import ann_levels
    return torch.cat([M.flatten() for _, M in ann_levels(ann, x)]).unique().numel()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("schedule", ["per_sample", "per_step"])
@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_n_equals_m_float64(arch, rounding, schedule, backend):
    # The torch path up to L = 4 (every rule and level boundary already), to keep the suite fast.
    for L in LEVELS if backend != "torch" else LEVELS[:3]:
        ann, x = build(arch, L, rounding)
        snn = convert(ann, schedule=schedule, backend=backend)
        assert snn.time_steps == L
        bad, total = mismatches(ann, snn, x)
        assert bad == 0, f"{arch} {rounding} L={L}: {bad}/{total} neurons with N != M"
        # Not vacuous: the input drives the neurons over (nearly) all levels 0..L.
        assert _active_levels(ann, x) >= min(L + 1, 4)
        with torch.no_grad():
            from spikingjelly.activation_based import functional
            functional.reset_net(snn)
            logits = snn(x.unsqueeze(0).repeat(L, *[1] * x.ndim)).mean(0)
            torch.testing.assert_close(logits, ann(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", ["per_sample", "per_step"])
def test_n_equals_m_float32_rate(schedule):
    """float32 synaptic sums round differently in the ANN and the SNN; the rate stays tiny."""
    bad = total = 0
    for arch, rounding, L in itertools.product(["mlp", "cnn", "resnet"], ROUNDINGS, LEVELS):
        ann, x = build(arch, L, rounding, dtype=torch.float32)
        x = torch.cat([x] * 4)
        b, t = mismatches(ann, convert(ann, schedule=schedule), x)
        bad, total = bad + b, total + t
    rate = bad / total
    print(f"float32 N != M, {schedule}: {bad} of {total} neurons (rate {rate:.2e})")
    assert total > 1_000_000
    assert rate <= 1e-6


def boundary_net(L, rounding, theta):
    """Two identity layers: z1 = x*L/theta exactly, and z2 = M1 (an integer) exactly."""
    n = 8 * L + 8
    lin1, lin2 = nn.Linear(n, n), nn.Linear(n, n)
    for lin in (lin1, lin2):
        lin.weight.data = torch.eye(n, dtype=torch.float64)
        lin.bias.data.zero_()
    return nn.Sequential(lin1, QuantReLU(L, rounding, theta), lin2,
                         QuantReLU(L, rounding, theta)).double().eval(), n


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("L", LEVELS)
@pytest.mark.parametrize("theta", [1.0, 0.75, 2.5])
def test_boundaries_z_integer_half_and_zero(rounding, L, theta, backend):
    ann, n = boundary_net(L, rounding, theta)
    # z = j/2 for j = -4 .. 2L+..: every integer k and k + 1/2 in [-2, L+2), exactly representable.
    z = (torch.arange(n, dtype=torch.float64) - 4) / 2
    x = (z * theta / L).unsqueeze(0)
    assert torch.equal(x[0] * L / theta, z)
    zero = torch.zeros(1, n, dtype=torch.float64)
    for inp, schedule in itertools.product((x, zero), ("per_sample", "per_step")):
        bad, _ = mismatches(ann, convert(ann, schedule=schedule, backend=backend), inp)
        assert bad == 0
    # The levels really are the half-up / floor / ceil of the constructed z.
    expected = {"floor": torch.floor(z), "round": torch.floor(z + 0.5), "ceil": torch.ceil(z)}[rounding]
    assert torch.equal(ann[1].level(x)[0], expected.clamp(0, L))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_neuron_alone_at_every_boundary(rounding, backend):
    for L, theta in itertools.product(LEVELS, [1.0, 0.375, 3.0]):
        z = torch.arange(-2 * L, 2 * (L + 2) + 1, dtype=torch.float64) / 2
        q = z * theta / L
        M = QuantReLU(L, rounding, theta).level(q)
        node = QVMIFNode(theta, rounding, current="expected", step_mode="m", backend=backend)
        N = node(q.expand(L, -1).contiguous()).sum(0)
        assert torch.equal(N, M), (L, theta)
        assert node.last_dispatch[0] == backend
        assert torch.equal(N, M.to(torch.float32).double())


def test_round_is_half_up_not_torch_round():
    z = torch.tensor([0.5, 1.5, 2.5, 3.5])
    assert torch.equal(QuantReLU(4, "round", 4.0).level(z), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert not torch.equal(torch.round(z), torch.tensor([1.0, 2.0, 3.0, 4.0]))  # half to even
    node = QVMIFNode(4.0, "round", current="expected", step_mode="m")
    assert torch.equal(node(z.expand(4, -1).contiguous()).sum(0), torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_ceil_needs_the_strict_rule():
    """A V0 = theta neuron that fires on U >= theta computes floor(z) + 1, not ceil(z), at integers."""
    L, theta = 4, 1.0
    z = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.25, 2.75], dtype=torch.float64)
    q = (z * theta / L).expand(L, -1).contiguous()
    M = QuantReLU(L, "ceil", theta).level(z * theta / L)
    strict = QVMIFNode(theta, "ceil", current="expected", step_mode="m")(q).sum(0)
    naive = QVMIFNode(theta, theta, current="expected", step_mode="m")(q).sum(0)  # V0 = theta, >=
    assert torch.equal(strict, M)
    assert torch.equal(naive[:4], torch.floor(z[:4]) + 1)
    assert torch.equal(naive[4:], M[4:])


@pytest.mark.parametrize("rounding,wrong_v0", [("floor", "round"), ("round", "floor"),
                                                ("round", "ceil"), ("ceil", "floor"),
                                                ("ceil", "round"), ("floor", "ceil")])
def test_converse_mismatched_v0_breaks_exactness(rounding, wrong_v0):
    ann, x = build("cnn", 4, rounding)
    for schedule in ("per_sample", "per_step"):
        snn = convert(ann, schedule=schedule)
        for _, m in snn.named_modules():
            if isinstance(m, QVMIFNode):
                m.v_init = wrong_v0
        bad, _ = mismatches(ann, snn, x)
        assert bad > 0


def _snn_output(snn, x, T):
    """The converted net's output on ``x`` repeated over T steps, averaged over T: ``[B, K]``."""
    from sj_qvm._compat import functional
    functional.reset_net(snn)
    with torch.no_grad():
        return snn(x.unsqueeze(0).repeat(T, *[1] * x.ndim)).mean(0)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_converse_t_not_l_breaks_exactness(rounding):
    """On one fixed batch the net's output equals the ANN's at T = L and differs at T != L."""
    ann, x = build("cnn", 4, rounding)
    with torch.no_grad():
        want = ann(x)
    torch.testing.assert_close(_snn_output(convert(ann), x, 4), want, rtol=1e-12, atol=1e-12)
    for T in (2, 3, 5, 8):
        with pytest.warns(UserWarning, match="T = L"):
            snn = convert(ann, time_steps=T)
        diff = (_snn_output(snn, x, T) - want).abs().max().item()
        assert diff > 1e-3 * want.abs().max().item(), (T, diff)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_instant_mode_runs_with_unevenness_error(rounding):
    """Instant current at T = L leaves an unevenness error (eq. 5) past the first layer."""
    ann, x = build("resnet", 4, rounding)
    rows = compare_levels(ann, convert(ann, current="instant"), x)
    # The first spiking layer sees a constant input, so it is exact in either mode.
    assert rows[0].mismatched == 0
    assert sum(r.mismatched for r in rows[1:]) > 0
    assert max(r.unevenness_error for r in rows) > 0
    exact = compare_levels(ann, convert(ann, current="expected"), x)
    assert sum(r.unevenness_error for r in exact) == 0
