"""The shared QAT rule: every QuantReLU threshold gamma stays >= MIN_THRESHOLD after each step."""
import torch
import torch.nn as nn

from sj_qvm import QuantReLU, convert, digits
from sj_qvm.qat import MIN_THRESHOLD, clamp_thresholds


def _gammas(model):
    return [m.threshold.detach().clone() for m in model.modules() if isinstance(m, QuantReLU)]


def test_clamp_sets_negative_zero_tiny_and_nan_thresholds_and_keeps_the_rest():
    model = nn.Sequential(nn.Linear(2, 4), QuantReLU(4, "round", [0.5, 1.0, 2.0, 3.0]),
                          nn.Linear(4, 2), QuantReLU(4, "floor", 1.0))
    with torch.no_grad():
        model[1].threshold.copy_(torch.tensor([-1.0, 0.0, float("nan"), 0.7]))
        model[3].threshold.fill_(MIN_THRESHOLD / 10)
    grad_before = model[1].threshold.requires_grad
    clamp_thresholds(model)
    a, b = _gammas(model)
    assert torch.equal(a, torch.tensor([MIN_THRESHOLD, MIN_THRESHOLD, MIN_THRESHOLD, 0.7]))
    assert torch.equal(b, torch.tensor(MIN_THRESHOLD))
    assert model[1].threshold.requires_grad == grad_before
    convert(model)  # a clamped model converts


def test_digits_qat_with_a_large_step_keeps_gamma_positive(monkeypatch):
    """lr = 1 drives the second layer's gamma below zero without the clamp (the converse below)."""
    x, y, _, _ = digits.load_digits_tensors(0)

    def train():
        torch.manual_seed(0)
        return _gammas(digits.train_qat(digits.digits_cnn(4), x[:256], y[:256], epochs=2, lr=1.0,
                                        progress=False))
    clamped = train()
    assert all((g >= MIN_THRESHOLD).all() for g in clamped)
    assert any((g == MIN_THRESHOLD).any() for g in clamped)  # the clamp engaged
    monkeypatch.setattr(digits, "clamp_thresholds", lambda model: None)
    assert any((g <= 0).any() for g in train())
