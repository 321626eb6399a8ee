import pytest
import torch

from sj_qvm import QuantReLU


@pytest.mark.parametrize("rounding,q", [("floor", torch.floor), ("ceil", torch.ceil),
                                        ("round", lambda z: torch.floor(z + 0.5))])
def test_formula(rounding, q):
    x = torch.linspace(-2, 6, 97, dtype=torch.float64)
    act = QuantReLU(4, rounding, 3.0).double()
    expected = 3.0 / 4 * torch.clamp(q(x * 4 / 3.0), 0, 4)
    assert torch.equal(act(x), expected)
    assert len(act(x).unique()) == 5


def test_ste_gradients_for_x_and_threshold():
    x = torch.tensor([-1.0, 0.3, 1.7, 2.9, 5.0], requires_grad=True)
    act = QuantReLU(4, "round", 2.0)
    act(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0]))  # 1 inside [0, gamma)
    M = torch.tensor([0.0, 1.0, 3.0, 4.0, 4.0])
    inside = torch.tensor([False, True, True, False, False])
    expected = (M / 4 - x.detach() / 2.0) * inside + (M == 4).float()
    torch.testing.assert_close(act.threshold.grad, expected.sum())


def test_per_channel_threshold():
    act = QuantReLU(2, "floor", [1.0, 2.0])
    x = torch.full((1, 2, 3, 3), 1.0)
    y = act(x)
    assert torch.equal(y[0, 0], torch.full((3, 3), 1.0)) and torch.equal(y[0, 1], torch.full((3, 3), 1.0))
    assert act.threshold.shape == (2,)
    assert torch.equal(act(torch.full((1, 2, 3, 3), 0.9))[0, 1], torch.zeros(3, 3))


def test_default_rounding_is_round_as_everywhere_else():
    """QuantReLU's default rounding is the one quantize, Converter, to_qvm and neuron_factory use."""
    import inspect

    import sj_qvm
    assert QuantReLU(4).rounding == "round"
    for fn in (sj_qvm.quantize, sj_qvm.Converter, sj_qvm.to_qvm, sj_qvm.neuron_factory):
        assert inspect.signature(fn).parameters["rounding"].default == "round", fn
    z = torch.tensor([0.5, 1.5, 2.49, 2.5])  # gamma = L: z = x; half-up at k + 1/2
    assert torch.equal(QuantReLU(4, threshold=4.0).level(z), torch.tensor([1.0, 2.0, 2.0, 3.0]))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(levels=0), ValueError, "levels must be an int >= 1"),
    (dict(levels=2.0), TypeError, "levels must be an int"),
    (dict(levels=4, rounding="nearest"), ValueError, r"rounding must be one of \('floor', 'round', 'ceil'\)"),
    (dict(levels=4, threshold=0.0), ValueError, "threshold must be > 0"),
    (dict(levels=4, threshold=-2.0), ValueError, "threshold must be > 0"),
    (dict(levels=4, threshold=float("inf")), ValueError, "threshold must be finite"),
    (dict(levels=4, threshold=float("nan")), ValueError, "threshold must be finite"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        QuantReLU(**kwargs)


# -- the fused paths against the straight-through chain QuantReLU always used ------------------
from sj_qvm import QVMIFNode  # noqa: E402
from sj_qvm.ops.quant_relu import quant_relu_ref  # noqa: E402

ROUNDINGS = ("floor", "round", "ceil")
Q = {"floor": torch.floor, "round": lambda z: torch.floor(z + 0.5), "ceil": torch.ceil}


def old_ste(x, act):
    """QuantReLU's forward before the fused paths, verbatim in substance (finite inputs only)."""
    gamma = act.gamma(x.ndim)
    z = x * act.levels / gamma
    m = Q[act.rounding](z.detach()) + (z - z.detach())
    return torch.clamp(m, 0, act.levels) * gamma / act.levels


def boundary_inputs(L, gamma, dtype, n_random=200):
    """z = x*L/gamma at every k/2 in [-2, L+2] (exact integers, halves, 0, L) plus random x."""
    z = torch.arange(-4, 2 * (L + 2) + 1, dtype=dtype) / 2
    return torch.cat([z * gamma / L, torch.randn(n_random, dtype=dtype) * gamma])


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("L,gamma", [(1, 1.0), (4, 2.0), (8, 0.75), (16, 3.0)])
def test_fused_forward_and_backward_match_the_ste_chain(rounding, dtype, L, gamma):
    act = QuantReLU(L, rounding, gamma).to(dtype)
    ref = QuantReLU(L, rounding, gamma).to(dtype)
    x = boundary_inputs(L, gamma, dtype)
    assert x[4] == 0 and torch.equal(x[6] * L / gamma, torch.ones((), dtype=dtype))  # z = 0, 1
    with torch.no_grad():
        y_fast = act(x)
        assert y_fast.grad_fn is None
        assert torch.equal(y_fast, old_ste(x, ref))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = act(xa), old_ste(xb, ref)
    assert type(ya.grad_fn).__name__ == "_QuantReLUBackward"  # the hand-written backward ran
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(act.threshold.grad, ref.threshold.grad, rtol=1e-5, atol=1e-5)
    assert (xa.grad == 0).any() and (act.threshold.grad != 0)
    if L > 1:  # (at L = 1 no level lies strictly inside the clip: x gets no gradient)
        assert (xa.grad != 0).any()


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_fused_per_channel_gamma_matches_the_ste_chain(rounding):
    gamma = [0.5, 1.0, 2.5]
    act, ref = QuantReLU(4, rounding, gamma).double(), QuantReLU(4, rounding, gamma).double()
    x = (torch.randn(5, 3, 4, 6, dtype=torch.float64) * 2).requires_grad_()
    # Put exact boundaries z = k, k + 1/2 into each channel.
    with torch.no_grad():
        for c, gc in enumerate(gamma):
            x[0, c].view(-1)[:12] = (torch.arange(-2, 10, dtype=torch.float64) / 2) * gc / 4
    x2 = x.detach().clone().requires_grad_()
    ya, yb = act(x), old_ste(x2, ref)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-12)
    assert act.threshold.grad.shape == (3,)
    torch.testing.assert_close(act.threshold.grad, ref.threshold.grad, rtol=1e-10, atol=1e-10)
    # Only gamma requires grad (x a plain tensor): the function still gives gamma its gradient.
    act.threshold.grad = None
    act(x.detach()).backward(g)
    torch.testing.assert_close(act.threshold.grad, ref.threshold.grad, rtol=1e-10, atol=1e-10)


def test_reference_twin_is_the_ste_chain_on_finite_inputs():
    act = QuantReLU(4, "round", 2.0).double()
    x = boundary_inputs(4, 2.0, torch.float64)
    torch.testing.assert_close(quant_relu_ref(x, act.gamma(1), 4, "round"), old_ste(x, act),
                               rtol=0, atol=0)


def test_infinities_and_overflow_saturate_instead_of_nan():
    act = QuantReLU(16, "round", 1.0)
    x = torch.tensor([5.0, 3e38, float("inf"), -float("inf"), -3e38])
    assert torch.equal(act(x), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    with torch.no_grad():
        assert torch.equal(act(x), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    half = QuantReLU(16, "round", 1.0).half()
    out = half(torch.tensor([5000.0, -5000.0, 0.5], dtype=torch.float16))
    assert torch.equal(out, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float16))
    xg = x.clone().requires_grad_()
    act.threshold.grad = None
    act(xg).backward(torch.ones(5))
    assert torch.isfinite(xg.grad).all() and torch.equal(xg.grad, torch.zeros(5))
    assert act.threshold.grad.item() == 3.0  # 1 for each of the three saturated entries
    assert torch.equal(act.level(x), torch.tensor([16.0, 16.0, 16.0, 0.0, 0.0]))
    assert torch.equal(act.level(xg), torch.tensor([16.0, 16.0, 16.0, 0.0, 0.0]))


def test_nan_gives_level_zero_in_the_ann_and_no_spikes_in_the_snn():
    L, theta = 4, 1.5
    for rounding in ROUNDINGS:
        act = QuantReLU(L, rounding, theta)
        x = torch.tensor([float("nan"), 0.7, float("nan"), 2.0])
        assert torch.equal(act(x)[[0, 2]], torch.zeros(2))
        xg = x.clone().requires_grad_()
        act.threshold.grad = None
        act(xg).backward(torch.randn(4))
        assert xg.grad[0] == 0 and xg.grad[2] == 0 and torch.isfinite(act.threshold.grad)
        M = act.level(x)
        node = QVMIFNode(theta, rounding, current="expected", step_mode="m")
        N = node(x.expand(L, -1)).sum(0)
        assert torch.equal(N, M) and M[0] == 0
