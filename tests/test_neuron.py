"""QVMIFNode: a drop-in SpikingJelly IF node with soft reset and a matched V0."""
import pytest
import torch
import torch.nn as nn

from sj_qvm import QVMIFNode
from sj_qvm._compat import IFNode, SeqToANNContainer, functional, surrogate
from sj_qvm.functional import if_multi_step_ref, if_step
from sj_qvm.ops.if_loop import if_multi_step_inference

V_INITS = ["floor", "round", "ceil", 0.3, torch.tensor([0.0, 0.2, 0.4]), ]


def _seq(T=5, B=4, C=3, H=2, dtype=torch.float32):
    return torch.rand(T, B, C, H, H, dtype=dtype) * 1.2 - 0.1


@pytest.mark.parametrize("v_init", V_INITS)
@pytest.mark.parametrize("theta", [0.7, torch.tensor([0.5, 0.9, 1.3])])
def test_single_step_equals_multi_step(v_init, theta):
    x_seq = _seq()
    m = QVMIFNode(theta, v_init, step_mode="m", store_v_seq=True)
    s = QVMIFNode(theta, v_init, step_mode="s")
    out_m = m(x_seq)
    out_s = torch.stack([s(x) for x in x_seq])
    assert torch.equal(out_m, out_s)
    assert torch.equal(m.v, s.v)
    assert torch.equal(m.v_seq[-1], m.v)
    assert set(out_m.unique().tolist()) <= {0.0, 1.0}
    assert 0 < out_m.mean() < 1


@pytest.mark.parametrize("v_init", V_INITS)
@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_inference_path_is_bit_identical_to_reference(v_init, current, dtype):
    x_seq = _seq(dtype=dtype)
    node = QVMIFNode(0.6, v_init, current=current, step_mode="m", store_v_seq=True)
    with torch.no_grad():
        fast = node(x_seq)
    v0 = QVMIFNode(0.6, v_init).initial_v(x_seq[0])
    ref, v, v_seq = if_multi_step_ref(x_seq, v0, 0.6, node.strict, current, store_v_seq=True)
    assert fast.dtype == dtype
    assert torch.equal(fast, ref) and torch.equal(node.v, v) and torch.equal(node.v_seq, v_seq)
    fast2, v2, _ = if_multi_step_inference(x_seq, v0, 0.6, node.strict, current)
    assert torch.equal(fast2, ref) and torch.equal(v2, v)


def test_matches_spikingjelly_ifnode_forward_and_backward():
    """v_init=0 is exactly SJ's IFNode(v_reset=None), gradients included."""
    x_seq = _seq().requires_grad_()
    g = torch.randn_like(x_seq)
    ours = QVMIFNode(0.8, 0.0, step_mode="m", surrogate_function=surrogate.ATan())
    sj = IFNode(v_threshold=0.8, v_reset=None, step_mode="m", surrogate_function=surrogate.ATan())
    out = ours(x_seq)
    (out * g).sum().backward()
    grad_ours = x_seq.grad.clone()
    x_seq.grad = None
    ref = sj(x_seq)
    (ref * g).sum().backward()
    assert torch.equal(out, ref)
    torch.testing.assert_close(grad_ours, x_seq.grad)
    assert grad_ours.abs().sum() > 0


def _ref_grads(node, x_seq, g, params=()):
    """Spikes and the gradients of (x_seq, *params) under ``(spikes * g).sum()`` from the reference."""
    xs = x_seq.detach().clone().requires_grad_()
    th = node.v_threshold
    th = th.view(1, -1, *[1] * (x_seq.ndim - 3)) if isinstance(th, torch.Tensor) else th
    v0 = node.initial_v(xs[0]) if isinstance(node.v_init, str) else node.v_init
    if isinstance(v0, torch.Tensor) and v0.ndim == 1:
        v0 = v0.view(1, -1, *[1] * (x_seq.ndim - 3))
    s, _, _ = if_multi_step_ref(xs, v0, th, node.strict, node.current, node.surrogate_function,
                                node.detach_reset)
    return s, torch.autograd.grad((s * g).sum(), (xs, *params))


@pytest.mark.parametrize("v_init", ["floor", "round", "ceil"])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_surrogate_gradient_equals_the_reference(v_init, current):
    x_seq = _seq(dtype=torch.float64).requires_grad_()
    node = QVMIFNode(0.5, v_init, current=current, step_mode="m")
    out = node(x_seq)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), x_seq)
    ref, (want,) = _ref_grads(node, x_seq, g)
    assert torch.equal(out, ref)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    assert want.abs().sum() > 0
    if current == "expected":  # every step sees the mean: d/dx_t is the same for all t
        torch.testing.assert_close(grad, grad[:1].expand_as(grad))


def test_strict_rule_gradient_is_the_surrogate_derivative():
    h = torch.linspace(-1, 1, 11, requires_grad=True)
    sg = surrogate.Sigmoid()
    from sj_qvm.functional import fire
    (g_strict,) = torch.autograd.grad(fire(h, True, sg).sum(), h)
    (g_plain,) = torch.autograd.grad(fire(h, False, sg).sum(), h)
    torch.testing.assert_close(g_strict, g_plain)
    assert torch.equal(fire(h.detach(), True, sg), (h > 0).float())


def test_learnable_v0_and_threshold_get_the_reference_gradients():
    v0 = nn.Parameter(torch.full((3,), 0.25, dtype=torch.float64))
    theta = nn.Parameter(torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64))
    node = QVMIFNode(theta, v0, step_mode="m")
    assert {n for n, _ in node.named_parameters()} == {"_theta", "_v0"}
    x_seq = _seq(dtype=torch.float64).requires_grad_()
    out = node(x_seq)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), (x_seq, theta, v0))
    _, want = _ref_grads(node, x_seq, g, (theta, v0))
    for a, b in zip(got, want):
        assert a.shape == b.shape and b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_reset_restores_v0_when_batch_size_changes():
    node = QVMIFNode(1.0, "round", step_mode="m")
    node(_seq(B=4))
    functional.reset_net(node)
    x = torch.zeros(1, 7, 3, 2, 2)
    node(x)  # V0 = theta/2 with zero input: no spike, V stays at theta/2
    assert torch.equal(node.v, torch.full((7, 3, 2, 2), 0.5))
    tensor_v0 = QVMIFNode(1.0, torch.tensor([0.1, 0.2, 0.3]), step_mode="m")
    tensor_v0(_seq(B=4))
    functional.reset_net(tensor_v0)
    tensor_v0(torch.zeros(1, 9, 3, 2, 2))
    assert torch.equal(tensor_v0.v[:, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]).expand(9, 3))


def test_new_v_init_takes_effect_at_next_reset():
    node = QVMIFNode(1.0, "floor", step_mode="m")
    x = torch.full((1, 2, 3), 0.6)
    assert node(x).sum() == 0
    node.v_init = "ceil"
    assert torch.equal(node.v, torch.full((2, 3), 0.6))  # unchanged until reset
    functional.reset_net(node)
    assert node(x).sum() == 6  # V0 = 1: 1.6 > 1 fires
    assert node.v_init == "ceil" and node.strict


def test_shape_change_without_reset_is_an_error():
    node = QVMIFNode(step_mode="s")
    node(torch.rand(4, 3))
    with pytest.raises(ValueError, match="reset_net"):
        node(torch.rand(5, 3))


def test_inside_spikingjelly_models():
    """Works with reset_net, set_step_mode and SeqToANNContainer in an ordinary SJ model."""
    torch.manual_seed(0)
    net = nn.Sequential(SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)),
                        QVMIFNode(0.5, "round"),
                        SeqToANNContainer(nn.Flatten(), nn.Linear(4 * 8 * 8, 3)))
    functional.set_step_mode(net, "m")
    assert net[1].step_mode == "m"
    x_seq = torch.rand(4, 2, 2, 8, 8)
    out = net(x_seq)
    assert out.shape == (4, 2, 3)
    functional.reset_net(net)
    again = net(x_seq)
    assert torch.equal(out, again)
    (out * torch.randn_like(out)).sum().backward()
    assert net[0][0].weight.grad.abs().sum() > 0
    # Single-step drive of the same node gives the same spikes.
    functional.set_step_mode(net[1], "s")
    functional.reset_net(net)
    feats = net[0](x_seq)
    single = torch.stack([net[1](f) for f in feats])
    functional.set_step_mode(net[1], "m")
    functional.reset_net(net)
    assert torch.equal(single, net[1](feats))


def test_if_step_is_the_module_step():
    x, v = torch.rand(6), torch.rand(6)
    node = QVMIFNode(0.5, 0.0)
    node.v = v.clone()
    s = node(x)
    s_ref, v_ref = if_step(x, v, 0.5)
    assert torch.equal(s, s_ref) and torch.equal(node.v, v_ref)


@pytest.mark.parametrize("kwargs,match", [
    (dict(v_init="half"), "v_init must be one of"),
    (dict(current="mean"), "current must be one of"),
    (dict(current="expected"), "step_mode='m'"),
    (dict(step_mode="x"), "step_mode must be one of"),
    (dict(v_threshold=0.0), "v_threshold must be > 0"),
    (dict(v_threshold=-1.0), "v_threshold must be > 0"),
    (dict(v_threshold=float("inf")), "v_threshold must be finite"),
    (dict(v_threshold=float("nan")), "v_threshold must be finite"),
    (dict(v_threshold=torch.tensor([1.0, -1.0])), "v_threshold must be > 0"),
    (dict(v_init=float("nan")), "v_init must be finite"),
])
def test_bad_arguments_rejected_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QVMIFNode(**kwargs)


def test_bad_types_and_inputs():
    with pytest.raises(TypeError, match="v_init"):
        QVMIFNode(v_init=[0.1])
    with pytest.raises(TypeError, match="v_threshold"):
        QVMIFNode(v_threshold="1")
    with pytest.raises(ValueError, match="at least 2 dims"):
        QVMIFNode(step_mode="m")(torch.rand(5))
    node = QVMIFNode(step_mode="m", current="expected")
    functional.set_step_mode(node, "s")
    with pytest.raises(ValueError, match="step_mode='m'"):
        node(torch.rand(3))
    with pytest.raises(ValueError, match="channels"):
        QVMIFNode(torch.tensor([1.0, 2.0]))(torch.rand(4, 3))


# -- issue 11: non-finite currents and argument checks ----------------------------------------
NAN, INF = float("nan"), float("inf")


def _paths(node_kwargs, x_seq):
    """Spikes of the inference loop, the BPTT loop, single-step (instant only) and the reference."""
    out = {}
    with torch.no_grad():
        out["inference"] = QVMIFNode(**node_kwargs, step_mode="m")(x_seq)
    out["bptt"] = QVMIFNode(**node_kwargs, step_mode="m")(x_seq.clone().requires_grad_()).detach()
    if node_kwargs["current"] == "instant":
        s = QVMIFNode(**node_kwargs, step_mode="s")
        out["single"] = torch.stack([s(x) for x in x_seq])
    node = QVMIFNode(**node_kwargs, step_mode="m")
    out["ref"] = if_multi_step_ref(x_seq, node.initial_v(x_seq[0]), node.v_threshold, node.strict,
                                   node_kwargs["current"])[0]
    return out


@pytest.mark.parametrize("v_init", ["floor", "round", "ceil", 0.3])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_nan_never_fires_and_infinities_saturate(v_init, current):
    """NaN -> 0 spikes (QuantReLU: level 0); +inf -> T spikes, -inf -> 0 (QuantReLU: L, 0)."""
    T = 4
    # neurons: NaN, +inf, -inf, NaN in step 1 only, +inf in step 2 only, a finite control
    x = torch.full((T, 1, 6), 0.6)
    x[:, 0, 0], x[:, 0, 1], x[:, 0, 2] = NAN, INF, -INF
    x[1, 0, 3], x[2, 0, 4] = NAN, INF
    for name, spikes in _paths(dict(v_threshold=1.0, v_init=v_init, current=current), x).items():
        n = spikes.sum(0)[0]
        assert n[0] == 0 and n[1] == T and n[2] == 0, (name, n)
        if current == "expected":  # the mean is NaN / +inf
            assert n[3] == 0 and n[4] == T, (name, n)
        else:  # silent from the NaN step on; firing from the +inf step on
            assert spikes[1:, 0, 3].sum() == 0 and spikes[2:, 0, 4].sum() == 2, (name, spikes)
        assert 0 < n[5] < T  # the finite control fires normally
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_nan_state_stops_firing_until_reset():
    node = QVMIFNode(1.0, "floor", step_mode="s")
    assert node(torch.tensor([NAN])).item() == 0 and torch.isnan(node.v).all()
    assert node(torch.tensor([5.0])).item() == 0  # NaN + 5 is NaN: no spike
    functional.reset_net(node)
    assert node(torch.tensor([5.0])).item() == 1


def test_per_channel_v0_or_theta_of_the_wrong_size_raises():
    x = torch.rand(1, 3, 2, 4)  # C = 3, W = 4
    for kwargs, name in ((dict(v_init=torch.arange(4.0)), "v_init"),
                         (dict(v_threshold=torch.arange(1.0, 5.0)), "v_threshold")):
        with pytest.raises(ValueError, match=rf"per-channel {name} has 4 channels.*has 3 \(dim 1"):
            QVMIFNode(**kwargs)(x)
        with pytest.raises(ValueError, match=rf"per-channel {name} has 4 channels"):
            QVMIFNode(**kwargs, step_mode="m")(x.unsqueeze(0))
    # the converse: a per-channel V0 of size C acts along channels, not along W
    v0 = torch.tensor([0.0, 0.5, 0.9])
    out = QVMIFNode(1.0, v0)(torch.full((1, 3, 2, 4), 0.3))
    assert torch.equal(out[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))
    # a per-neuron V0 must broadcast to the input
    QVMIFNode(1.0, torch.zeros(3, 2, 4))(x)
    with pytest.raises(ValueError, match=r"per-neuron v_init of shape \(3, 4\)"):
        QVMIFNode(1.0, torch.zeros(3, 4))(x)
    with pytest.raises(ValueError, match="v_threshold has 3 channels but per-channel v_init has 4"):
        QVMIFNode(torch.ones(3), torch.zeros(4))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(detach_reset="no"), TypeError, "detach_reset must be True or False, got str 'no'"),
    (dict(detach_reset=1), TypeError, "detach_reset must be True or False"),
    (dict(store_v_seq="yes"), TypeError, "store_v_seq must be True or False"),
    (dict(v_threshold=None), TypeError, "v_threshold must be a float > 0 or a 1-D per-channel"),
    (dict(v_init=None), TypeError, r"v_init must be one of \('floor', 'round', 'ceil'\)"),
    (dict(v_threshold=True), TypeError, "v_threshold must be"),
    (dict(surrogate_function="sigmoid"), TypeError, r"surrogate_function must be .*surrogate"
                                                    r"\.Sigmoid\(\).*got str 'sigmoid'"),
    (dict(surrogate_function=surrogate.Sigmoid), TypeError, "got the class Sigmoid"),
])
def test_bad_argument_types_rejected_at_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        QVMIFNode(**kwargs)


def test_assigning_none_later_is_rejected_and_keeps_the_old_value():
    node = QVMIFNode(0.5, "round")
    with pytest.raises(TypeError, match="v_threshold"):
        node.v_threshold = None
    with pytest.raises(TypeError, match="v_init"):
        node.v_init = None
    with pytest.raises(ValueError, match="v_threshold must be finite"):
        node.v_threshold = float("nan")
    with pytest.raises(ValueError, match="v_threshold must be > 0"):
        node.v_threshold = torch.tensor([1.0, -1.0])
    assert node.v_threshold == 0.5 and node.v_init == "round"
    node.v_init = 0.2
    with pytest.raises(ValueError, match="v_init must be finite"):
        node.v_init = torch.tensor([float("inf")])
    assert node.v_init == 0.2


@pytest.mark.parametrize("x_seq", [torch.rand(0, 2, 3), torch.rand(5)], ids=["T=0", "no T dim"])
def test_multi_step_input_must_be_t_n(x_seq):
    with pytest.raises(ValueError, match=r"x_seq: \[T, N, \*\] \(time-steps first, T >= 1"):
        QVMIFNode(step_mode="m")(x_seq)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_non_floating_input_is_refused_at_the_entry(dtype, step_mode):
    node = QVMIFNode(v_init="round", step_mode=step_mode)
    with pytest.raises(TypeError, match=rf"QVMIFNode input must be a floating tensor \(float32, "
                                        rf"float64, float16, bfloat16\), got {str(dtype)[6:]}"):
        node(torch.ones(3, 2, 4).to(dtype))
    assert not isinstance(node.v, torch.Tensor)      # nothing integrated
    for ok in (torch.float16, torch.bfloat16, torch.float64):
        assert node(torch.ones(3, 2, 4, dtype=ok)).dtype == ok
        functional.reset_net(node)
