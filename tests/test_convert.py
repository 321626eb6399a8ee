"""sj_qvm.convert: graph coverage, BatchNorm folding, errors that name the op, the ANN left alone."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nets import build, cnn
from sj_qvm import QuantReLU, QVMIFNode, convert
from sj_qvm._compat import functional
from sj_qvm.analysis import compare_levels
from sj_qvm.convert import ConversionError, QVMNetwork, SpikingActivation


def run(snn, x, T):
    functional.reset_net(snn)
    with torch.no_grad():
        return snn(x.unsqueeze(0).repeat(T, *[1] * x.ndim))


def test_structure_thresholds_and_v0():
    ann = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), QuantReLU(4, "ceil", 2.5),
                        nn.Flatten(), nn.Linear(4 * 36, 8), QuantReLU(4, "round", [1.0] * 8),
                        nn.Linear(8, 3))
    snn = convert(ann, current="instant")
    nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
    assert len(nodes) == 2
    assert nodes[0].v_threshold == 2.5 and nodes[0].v_init == "ceil" and nodes[0].strict
    assert torch.equal(nodes[1].v_threshold, torch.ones(8)) and nodes[1].v_init == "round"
    assert all(n.current == "instant" and n.step_mode == "m" for n in nodes)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in snn.modules())  # folded
    out = run(snn, torch.rand(5, 2, 8, 8), 4)
    assert out.shape == (4, 5, 3)


def test_ann_left_untouched():
    ann = cnn(4, "round").train()
    before = copy.deepcopy(ann.state_dict())
    snn = convert(ann)
    assert ann.training
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in ann.modules()) == 2
    assert any(isinstance(m, QuantReLU) for m in ann.modules())
    assert not any(isinstance(m, QuantReLU) for m in snn.modules())


def test_logits_equal_ann_and_any_t_runs():
    ann, x = build("resnet", 4, "round")
    snn = convert(ann)
    torch.testing.assert_close(run(snn, x, 4).mean(0), ann(x), rtol=1e-12, atol=1e-12)
    for T in (1, 2, 8, 16):
        assert run(snn, x, T).shape == (T, 32, 10)


def test_frame_sequence_input_expected_mode_sees_the_mean():
    """A [T, B, *] frame sequence: in expected mode the first layer receives the ANN's input (the mean)."""
    ann, x = build("cnn", 4, "floor")
    frames = torch.rand(4, *x.shape, dtype=x.dtype)
    rows = compare_levels(ann, convert(ann), frames.mean(0), frames)
    assert sum(r.mismatched for r in rows) == 0


def test_levels_must_agree_unless_time_steps_given():
    ann = nn.Sequential(nn.Linear(4, 4), QuantReLU(4), nn.Linear(4, 4), QuantReLU(8))
    with pytest.raises(ValueError, match="levels differ"):
        convert(ann)
    with pytest.warns(UserWarning, match="T = L"):
        snn = convert(ann, time_steps=8)
    assert snn.levels is None  # no T is exact when the layers' L differ
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert convert(ann, time_steps=8, warn=False).levels is None


def test_network_stores_its_design_levels_and_takes_T_from_the_input():
    """``levels`` is the ANN's L whatever T convert was told; each forward runs its input's T."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(4, 6), QuantReLU(4, "round", 1.0), nn.Linear(6, 3)).eval()
    snn = convert(ann, time_steps=8, warn=False)
    assert snn.levels == 4 and snn.time_steps == 4  # time_steps: the read-only old name
    with pytest.raises(AttributeError):
        snn.time_steps = 8
    x = torch.rand(5, 4)
    for T in (2, 4, 6):
        out = run(snn, x, T)
        assert out.shape == (T, 5, 3)
        assert all(m.time_steps == T for _, m in snn.spiking_layers())
    functional.reset_net(snn)
    torch.testing.assert_close(snn(x.unsqueeze(0).repeat(4, 1, 1)).mean(0), ann(x))
    # The analysis default T is the design L: compare_levels needs no x_seq and is exact.
    assert sum(r.mismatched for r in compare_levels(ann, snn, x)) == 0
    with pytest.raises(ValueError, match="levels"):
        QVMNetwork(snn.body, 0)


def test_step_mode_is_multi_step_only_and_decided_once():
    ann, x = build("cnn", 4, "round")
    snn = convert(ann)
    a = run(snn, x, 4)
    assert snn.step_mode == "m" and all(m.step_mode == "m" for _, m in snn.spiking_layers())
    functional.set_step_mode(snn, "m")  # harmless
    with pytest.raises(ValueError, match="multi-step only"):
        functional.set_step_mode(snn, "s")
    with pytest.raises(ValueError, match="multi-step only"):
        functional.set_step_mode(snn.body, "s")
    # Refused before anything changed: every node is still multi-step and the output the same.
    assert all(m.node.step_mode == "m" for _, m in snn.spiking_layers())
    assert torch.equal(run(snn, x, 4), a)
    with pytest.raises(ValueError, match="step_mode must be one of"):
        snn.step_mode = "x"
    # A node switched by hand is refused at the next forward, not silently switched back.
    layer = snn.spiking_layers()[0][1]
    layer.node.step_mode = "s"
    with pytest.raises(ValueError, match="switched to step_mode='s'"):
        run(snn, x, 4)
    assert layer.node.step_mode == "s"
    layer.node.step_mode = "m"
    assert torch.equal(run(snn, x, 4), a)
    with pytest.raises(ValueError, match="multi-step QVMIFNode"):
        SpikingActivation(QVMIFNode(1.0, step_mode="s"))


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_time_steps_and_current(bad):
    ann = nn.Sequential(nn.Linear(4, 4), QuantReLU(4))
    with pytest.raises(ValueError, match="time_steps"):
        convert(ann, time_steps=bad)
    with pytest.raises(ValueError, match="current must be one of"):
        convert(ann, current="mean")


class FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.q = QuantReLU(4)

    def forward(self, x):
        return self.q(F.relu(self.fc(x)))


@pytest.mark.parametrize("ann,what,hint", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), QuantReLU(4), nn.AdaptiveMaxPool2d(1)), "AdaptiveMaxPool2d",
     "replace AdaptiveMaxPool2d by AdaptiveAvgPool2d before training"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), QuantReLU(4), nn.MaxPool2d(2, return_indices=True)),
     "MaxPool2d", "no exact spiking equivalent"),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), QuantReLU(4)), "ReLU", "QuantReLU"),
    (nn.Sequential(nn.Linear(4, 4), nn.GELU(), QuantReLU(4)), "GELU", "no exact spiking equivalent"),
    (FunctionalRelu(), "function 'relu'", "replace F.relu"),
])
def test_unsupported_ops_raise_with_name_place_and_hint(ann, what, hint):
    with pytest.raises(ConversionError) as e:
        convert(ann)
    msg = str(e.value)
    assert what in msg and hint in msg and "graph node" in msg


def test_no_quantrelu_and_dead_threshold():
    with pytest.raises(ConversionError, match="no QuantReLU"):
        convert(nn.Sequential(nn.Linear(2, 2)))
    ann = nn.Sequential(nn.Linear(2, 2), QuantReLU(4))
    ann[1].threshold.data.fill_(-0.5)
    with pytest.raises(ConversionError, match="must be finite and > 0"):
        convert(ann)


def test_shared_activation_module_gets_one_neuron_layer_per_call():
    ann, x = build("resnet", 4, "ceil")
    snn = convert(ann)
    names = [n for n, m in snn.named_modules() if isinstance(m, QVMIFNode)]
    assert len(names) == 4 and any("_call1" in n for n in names)
    assert sum(r.mismatched for r in compare_levels(ann, snn, x)) == 0


def test_scaling_by_constant_is_allowed_but_tensor_products_are_not():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.q = nn.Linear(4, 4), QuantReLU(4)

        def forward(self, x):
            return self.q(self.fc(x) * 0.5)

    class Gated(Scaled):
        def forward(self, x):
            return self.q(self.fc(x) * x)
    convert(Scaled())
    with pytest.raises(ConversionError, match="mul"):
        convert(Gated())


def test_reset_net_and_repeatability():
    ann, x = build("cnn", 4, "round")
    snn = convert(ann, current="instant")
    a = run(snn, x, 4)
    b = run(snn, x[:7], 4)
    assert torch.equal(a[:, :7], b)


class Conv1dNet(nn.Module):
    """Conv1d, torch.flatten, reshape and a channel cat: every supported graph op at once."""

    def __init__(self, L=4, rounding="floor"):
        super().__init__()
        self.c = nn.Conv1d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.q1 = QuantReLU(L, rounding, 1.0)
        self.pool = nn.AvgPool1d(2)
        self.fc = nn.Linear(24, 6)
        self.q2 = QuantReLU(L, rounding, 1.0)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y = self.pool(self.q1(self.bn(self.c(x))))
        y = torch.cat([y, y * 0.5], dim=1).reshape(x.shape[0], -1)
        return self.head(self.drop(self.q2(self.fc(torch.flatten(y, 1)))))


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_conv1d_flatten_reshape_cat(rounding):
    ann = Conv1dNet(4, rounding).double().eval()
    x = torch.rand(16, 2, 6, dtype=torch.float64) * 2
    snn = convert(ann)
    rows = compare_levels(ann, snn, x)
    assert sum(r.mismatched for r in rows) == 0 and len(rows) == 2
    torch.testing.assert_close(run(snn, x, 4).mean(0), ann(x), rtol=1e-12, atol=1e-12)


# -- issue 11: errors that name the user's line, and bad inputs -------------------------------
def _line_of(fn, text):
    """The absolute line number of ``text`` in ``fn``'s source."""
    import inspect
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_conversion_error_names_the_users_file_and_line():
    with pytest.raises(ConversionError) as e:
        convert(FunctionalRelu())
    line = _line_of(FunctionalRelu.forward, "F.relu(")
    assert f"test_convert.py:{line} in forward: return self.q(F.relu(self.fc(x)))" in str(e.value)
    assert "torch/fx" not in str(e.value) and "CapturedTraceback" not in str(e.value)


def test_untraceable_model_names_the_users_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = QuantReLU(4)

        def forward(self, x):
            return self.q(x) if x.sum() > 0 else x
    with pytest.raises(ConversionError, match="torch.fx could not trace") as e:
        convert(Branchy())
    line = _line_of(Branchy.forward, "x.sum() > 0")
    assert f"test_convert.py:{line} in forward" in str(e.value)


@pytest.mark.parametrize("ann,exc,match", [
    (lambda x: x, TypeError, "ann must be a torch.nn.Module .*got function"),
    ("net", TypeError, "ann must be a torch.nn.Module .*got str"),
    (nn.Sequential(nn.Linear(4, 4), QuantReLU(4)).to("meta"), ValueError,
     "meta device \\(first: '0.weight'\\).*to_empty"),
])
def test_not_a_module_or_meta_device_is_a_clear_error(ann, exc, match):
    with pytest.raises(exc, match=match):
        convert(ann)


def test_network_input_must_be_t_b_and_says_so():
    ann = nn.Sequential(nn.Conv2d(2, 3, 3), QuantReLU(4, "round", 1.0), nn.Flatten(),
                        nn.Linear(3 * 36, 2))
    snn = convert(ann)
    x = torch.rand(5, 2, 8, 8)
    with pytest.raises(ValueError, match=r"\[T, B, \*\].*5 dims .*lacks the T dimension"):
        snn(x)
    with pytest.raises(ValueError, match=r"\[T, B, \*\] \(time-steps first, T >= 1"):
        snn(torch.rand(0, 5, 2, 8, 8))
    assert run(snn, x, 4).shape == (4, 5, 2)  # the converse: [T, B, C, H, W] runs
    mlp = convert(nn.Sequential(nn.Linear(4, 3), QuantReLU(4), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match=r"at least 3 dims .*lacks the T dimension"):
        mlp(torch.rand(5, 4))
