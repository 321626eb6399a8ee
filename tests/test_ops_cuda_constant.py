"""The CUDA kernels' constant-current form (``F_CONSTANT``): one ``[B, *]`` current in, ``[T, B, *]``
spikes out, as the per-sample schedule passes it; and the count-only kernel (``qvm_if_count``),
``N * theta / T`` out. Tested without a GPU through the host build of
``if_loop.cuh`` (tests/cuda_host.py), bit for bit against the torch reference on the current
repeated over T, at boundary inputs."""
import pytest
import torch

from cuda_host import host  # noqa: F401 -- the fixture
from sj_qvm._compat import surrogate
from sj_qvm.functional import if_multi_step_ref, matched_v0
from sj_qvm.ops.if_loop import if_constant_cupy, launch
from sj_qvm.ops.if_rate import if_rate_cupy
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy

ROUNDINGS = ("floor", "round", "ceil")


class Recording:
    """Wraps the host runner and keeps each launch's input and flags."""

    def __init__(self, runner):
        self.runner, self.calls = runner, []

    def launch(self, name, threads, args, device):
        if name.startswith(("qvm_if_forward", "qvm_if_count")):
            self.calls.append((name, tuple(args[0].shape), int(args[-1])))
        self.runner.launch(name, threads, args, device)


@pytest.fixture
def recording(host):  # noqa: F811
    rec = Recording(host)
    launch.register_runner("cpu", rec)
    yield rec
    launch.register_runner("cpu", host)


def boundary_current(T, B, theta, per_channel):
    """``q: [B, C, K]`` with z = T q / theta at -1, 0, every k and k + 1/2 up to T + 1, NaN and
    +-inf, and ``z`` itself."""
    z = torch.arange(-2, 2 * T + 3, dtype=torch.float32) / 2
    C = theta.numel() if per_channel else 3
    th = theta.view(1, C, 1) if per_channel else theta
    q = (z.view(1, 1, -1) * th / T).expand(B, C, z.numel()).clone()
    q[:, :, 0], q[:, :, 1] = float("nan"), float("inf")
    q[1, :, 2] = -float("inf")
    return q, z


@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("T", [1, 4, 5])
def test_constant_current_bit_for_bit_at_the_boundaries(recording, v_init, per_channel, T):
    theta = torch.tensor([0.5, 0.75, 1.0]) if per_channel else 1.0
    B = 2
    q, z = boundary_current(T, B, theta if per_channel else torch.tensor(1.0), per_channel)
    th = theta.view(3, 1) if per_channel else theta
    v0, strict = matched_v0(v_init, th)
    recording.calls.clear()
    got = if_constant_cupy(q, T, v0, th, strict, store_v_seq=True)
    (name, shape, flags), = recording.calls
    if T > 1:  # the kernel got the [B, C, K] current, not T copies
        assert shape == tuple(q.shape) and flags & launch.F_CONSTANT
    repeated = q.unsqueeze(0).repeat(T, 1, 1, 1)
    for current in ("expected", "instant"):
        want = if_multi_step_ref(repeated, v0, th, strict, current, store_v_seq=True)
        for a, b in zip(got, want):  # exact; NaN where the reference has NaN (V of a NaN input)
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    if T & (T - 1):  # T = 5: q = z * theta / T is inexact, the boundaries are not where z says
        return
    # and the counts are the ANN's levels: NaN 0, +inf T, -inf 0, z clipped to [0, T]
    level = {"floor": torch.floor(z), "round": torch.floor(z + 0.5), "ceil": torch.ceil(z)}[v_init]
    want_n = level.clamp(0, T).expand(B, 3, -1).clone()
    want_n[:, :, 0], want_n[:, :, 1], want_n[1, :, 2] = 0, T, 0
    assert torch.equal(got[0].sum(0), want_n)


def test_a_wrong_v0_breaks_the_levels(host):  # noqa: F811
    """The converse: with V0 = 0 (floor's) under round's rule, z = k + 1/2 rounds down."""
    T = 4
    q, z = boundary_current(T, 2, torch.tensor(1.0), False)
    right = if_constant_cupy(q, T, 0.5, 1.0, False)[0].sum(0)[0, 0, 3:]
    wrong = if_constant_cupy(q, T, 0.0, 1.0, False)[0].sum(0)[0, 0, 3:]
    z = z[3:]
    assert torch.equal(right, torch.floor(z + 0.5).clamp(0, T))
    assert torch.equal(wrong, torch.floor(z).clamp(0, T))
    half = (z - torch.floor(z) == 0.5) & (z < T)
    assert half.sum() >= 4 and (wrong[half] != right[half]).all()


@pytest.mark.parametrize("current", ["instant", "expected"])
def test_the_broadcast_view_takes_the_constant_form(recording, current):
    """``if_multi_step_cupy`` on ``q.unsqueeze(0).expand(T, ...)`` (what SpikingActivation passes a
    node) launches on the one row, with the same bits as on the materialized input."""
    T = 5
    q = torch.rand(3, 4, 8) * 1.4 - 0.2
    theta = torch.tensor([0.4, 0.7, 0.9, 1.3]).view(4, 1)
    recording.calls.clear()
    got = if_multi_step_cupy(q.unsqueeze(0).expand(T, *q.shape), 0.5 * theta, theta, False,
                             current, store_v_seq=True)
    copied = if_multi_step_cupy(q.unsqueeze(0).repeat(T, 1, 1, 1), 0.5 * theta, theta, False,
                                current, store_v_seq=True)
    (_, shape_a, flags_a), (_, shape_b, flags_b) = recording.calls
    assert shape_a == (3, 4, 8) and flags_a & launch.F_CONSTANT
    assert shape_b == (T, 3, 4, 8) and not flags_b & launch.F_CONSTANT
    assert recording.calls[0][0] == "qvm_if_forward_f32_same_v4"  # vector loads still apply
    for a, b in zip(got, copied):
        assert torch.equal(a, b)
    assert 0.1 < got[0].mean() < 0.9


@pytest.mark.parametrize("v_init", ROUNDINGS)
def test_constant_current_gradients_match_the_reference(host, v_init):  # noqa: F811
    """Training through the constant form: dL/dq sums the T steps' gradients (autograd's expand),
    as the reference on q broadcast over T, under a random upstream gradient."""
    T = 4
    q = (torch.rand(3, 4, 8) * 1.4 - 0.2).requires_grad_()
    theta = torch.tensor([0.4, 0.7, 0.9, 1.3]).view(4, 1).requires_grad_()
    v0 = (matched_v0(v_init, theta.detach())[0] + torch.zeros(4, 1)).requires_grad_()
    strict = matched_v0(v_init, 1.0)[1]
    sg = surrogate.Sigmoid()
    got = if_constant_cupy(q, T, v0, theta, strict, sg, store_v_seq=True)
    want = if_multi_step_ref(q.unsqueeze(0).expand(T, *q.shape), v0, theta, strict, "expected",
                             sg, store_v_seq=True)
    g = [torch.randn_like(o) for o in want]
    grads = [torch.autograd.grad(sum((o * gi).sum() for o, gi in zip(out, g)), (q, v0, theta))
             for out in (got, want)]
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for a, b in zip(*grads):
        assert a.shape == b.shape and b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_arguments_are_checked(host):  # noqa: F811
    q = torch.rand(2, 3)
    with pytest.raises(ValueError, match="time_steps must be an int >= 1"):
        if_constant_cupy(q, 0, 0.0, 1.0)
    with pytest.raises(TypeError, match="time_steps must be an int"):
        if_constant_cupy(q, 2.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"q must be a tensor \[B, \*\], got \(\)"):
        if_constant_cupy(torch.tensor(1.0), 4, 0.0, 1.0)


@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("T", [1, 4, 5])
def test_rate_kernel_equals_the_rate_of_the_spike_train(recording, v_init, per_channel, T):
    """``if_rate_cupy``: N * theta / T and V_T equal those of the spike train (and of the
    reference) bit for bit, at the boundaries; only the count kernel ran, no [T, B, *] output."""
    theta = torch.tensor([0.5, 0.75, 1.0]) if per_channel else 1.0
    q, z = boundary_current(T, 2, theta if per_channel else torch.tensor(1.0), per_channel)
    th = theta.view(3, 1) if per_channel else theta
    v0, strict = matched_v0(v_init, th)
    recording.calls.clear()
    rate, v = if_rate_cupy(q, T, v0, th, strict)
    assert [(n, s) for n, s, _ in recording.calls] == [("qvm_if_count_f32_v1", tuple(q.shape))]
    spikes, v_train, _ = if_constant_cupy(q, T, v0, th, strict)
    want_s, want_v, _ = if_multi_step_ref(q.unsqueeze(0).repeat(T, 1, 1, 1), v0, th, strict,
                                          "expected")
    assert torch.equal(spikes, want_s)
    want_rate = want_s.sum(0) * th / T
    assert rate.shape == q.shape and torch.equal(rate, want_rate)
    torch.testing.assert_close(v, v_train, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(v, want_v, rtol=0, atol=0, equal_nan=True)
    assert rate.max() > 0 and (rate == 0).any()


def test_rate_kernel_vector_lanes_and_a_wrong_v0(recording):
    """4 neurons per thread where N allows it; and the converse: V0 = 0 under round's rule
    loses the half-way levels."""
    T = 4
    q = torch.rand(3, 4, 8) * 1.4 - 0.2
    q.view(-1)[:9] = torch.arange(9) / 2 / T  # z = 0, 1/2, ..., 4
    theta = torch.ones(4, 1)
    recording.calls.clear()
    rate, _ = if_rate_cupy(q, T, 0.5 * theta, theta, False)
    assert recording.calls[0][0] == "qvm_if_count_f32_v4"
    want = if_multi_step_ref(q.unsqueeze(0).repeat(T, 1, 1, 1), 0.5 * theta, theta, False,
                             "expected")[0].sum(0) * theta / T
    assert torch.equal(rate, want)
    wrong, _ = if_rate_cupy(q, T, 0.0, theta, False)
    half = torch.tensor([1, 3, 5, 7])  # z = k + 1/2
    assert (wrong.view(-1)[half] < rate.view(-1)[half]).all()


def test_rate_kernel_refuses_autograd(host):  # noqa: F811
    q = torch.rand(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="if_rate_cupy has no backward"):
        if_rate_cupy(q, 4, 0.0, 1.0)
    with torch.no_grad():
        rate, _ = if_rate_cupy(q, 4, 0.0, 1.0)
    assert rate.shape == (2, 3) and rate.grad_fn is None
    with pytest.raises(ValueError, match="time_steps must be an int >= 1"):
        if_rate_cupy(q.detach(), 0, 0.0, 1.0)


def _qvm_pair(rounding):
    """A QuantReLU CNN with per-channel thresholds (L = 4) and its expected-mode SNN, float32."""
    import torch.nn as nn  # noqa: PLC0415

    import sj_qvm  # noqa: PLC0415
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), sj_qvm.QuantReLU(4, rounding, 1.0),
                        nn.Conv2d(4, 3, 3, padding=1), sj_qvm.QuantReLU(4, rounding, 1.0),
                        nn.Flatten(), nn.Linear(3 * 25, 5)).eval()
    with torch.no_grad():
        ann[1].threshold = nn.Parameter(torch.tensor([0.5, 0.75, 1.0, 1.25]))
        ann[3].threshold = nn.Parameter(torch.tensor([0.6, 0.9, 1.2]))
    return ann, sj_qvm.convert(ann, 4, current="expected", warn=False)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_a_per_sample_layer_counts_with_the_cuda_kernel_where_the_node_would_run_it(
        recording, monkeypatch, rounding):
    """The converted network's per-sample layers on the kernel path (the dispatch says "cupy", as
    it does on a GPU; the host build stands in for it): only ``qvm_if_count`` runs, no spike
    train, and the output is the quantized ANN's, as on the spike-train path."""
    from sj_qvm._compat import functional  # noqa: PLC0415
    from sj_qvm.ops.if_rate import dispatch as rate  # noqa: PLC0415
    ann, snn = _qvm_pair(rounding)
    x = torch.rand(6, 2, 5, 5) * 2 - 0.5
    with torch.no_grad():
        want = ann(x)
        reference = snn(x.unsqueeze(0).expand(4, *x.shape)).mean(0)
        functional.reset_net(snn)
        monkeypatch.setattr(rate, "select", lambda *a, **k: ("cupy", "faked for the host build"))
        recording.calls.clear()
        got = snn(x.unsqueeze(0).expand(4, *x.shape)).mean(0)
    assert [c[0].split("_v")[0] for c in recording.calls] == ["qvm_if_count_f32"] * 2
    nodes = [m for m in snn.modules() if type(m).__name__ == "QVMIFNode"]
    assert all(n.last_dispatch[0] == "cupy" and "counts only" in n.last_dispatch[1] for n in nodes)
    assert all(n.v.dtype == torch.float32 and n.v.shape[0] == 6 for n in nodes)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-6)
    # The converse: with the node's threshold halved behind the network's back, the counts change.
    functional.reset_net(snn)
    nodes[0].v_threshold = nodes[0].v_threshold * 0.5
    with torch.no_grad():
        wrong = snn(x.unsqueeze(0).expand(4, *x.shape)).mean(0)
    assert not torch.allclose(wrong, want, atol=1e-3)
