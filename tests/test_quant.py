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
