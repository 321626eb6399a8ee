"""The DVS models convert exactly: every neuron's N == M at T = L in expected mode (float64)."""
import pytest
import torch

from sj_qvm import QuantReLU, convert
from sj_qvm.analysis import compare_levels
from sj_qvm.models import ARCHS, build_model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_dvs_models_convert_exactly(arch, rounding):
    torch.manual_seed(0)
    ann = build_model(arch, in_channels=2, num_classes=11, levels=4, rounding=rounding, width=4,
                      threshold=1.0).double().eval()
    for m in ann.modules():  # non-trivial BN statistics, so the folding is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.2, 0.2)
    frames = torch.rand(4, 3, 2, 32, 32, dtype=torch.float64) * 3
    snn = convert(ann)
    rows = compare_levels(ann, snn, frames.mean(0), frames)
    n_act = sum(isinstance(m, QuantReLU) for m in ann.modules())
    assert len(rows) == n_act and sum(r.mismatched for r in rows) == 0
    assert sum(r.neuron_evaluations for r in rows) > 0


def test_unknown_arch():
    with pytest.raises(ValueError, match="arch must be one of"):
        build_model("alexnet")
