"""Input representations of event frames (sj_qvm.datasets.representations): their values, their
SNN input, exactness at T = L for the held ``stack``, and that only an ordered one reads the
order."""
import pytest
import torch
from torch import nn

from sj_qvm import QuantReLU, _compat, convert
from sj_qvm.datasets.representations import (REPRESENTATIONS, bin_frames, mean_frame,
                                              representation, stack_frames)
from sj_qvm.functional import expected_current
from sj_qvm.levels import compare_levels


def counts(B=3, T=4, H=8, seed=0, dtype=torch.float32):
    """``[B, T, 2, H, H]`` event counts."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6, (B, T, 2, H, H), generator=g).to(dtype)


def test_values_and_channel_order():
    f = counts()
    assert torch.equal(representation("mean")(f), f.mean(1)) and representation("mean").streams
    s = representation("stack")
    assert s(f).shape == (3, 8, 8, 8) and not s.streams and s.channels(4) == 8
    assert torch.equal(s(f)[:, 2 * 3 + 1], f[:, 3, 1])  # channel t*C + c is frame t, polarity c
    b = representation("bins:2")
    assert b.channels(4) == 4 and torch.equal(b(f)[:, 2], (f[:, 2, 0] + f[:, 3, 0]) / 2)
    # bins:1 is mean, bins:T is stack
    assert torch.equal(bin_frames(f, 1), mean_frame(f))
    assert torch.equal(bin_frames(f, 4), stack_frames(f))
    before = f.clone()
    for name in ("mean", "stack", "bins:2", "bins:4"):
        representation(name)(f)
    assert torch.equal(f, before)


@pytest.mark.parametrize("name", ["", "median", "bins", "bins:", "bins:0", "bins:-1", "bins:02",
                                  "bins:2.0", "Stack", None, 3])
def test_unknown_names_are_refused_naming_the_allowed_values(name):
    with pytest.raises(ValueError) as e:
        representation(name, "--input")
    assert str(e.value).startswith("--input must be one of mean, stack, bins:K")
    assert repr(name) in str(e.value)


def test_bins_must_divide_the_frames():
    with pytest.raises(ValueError, match="bins:3 needs K to divide the number of frames T = 4"):
        representation("bins:3").channels(4)
    with pytest.raises(ValueError, match="bins:3 needs K"):
        bin_frames(counts(), 3)
    with pytest.raises(ValueError, match=r"frames must be a tensor \[B, T, C, H, W\]"):
        stack_frames(torch.zeros(4, 2, 8, 8))


def test_snn_input_streams_mean_and_holds_the_others():
    f = counts()
    seq = representation("mean").snn_input(f)
    assert seq.shape == (4, 3, 2, 8, 8) and torch.equal(seq[2], f[:, 2])
    with pytest.raises(ValueError, match="streams one frame per step"):
        representation("mean").snn_input(f, 8)
    for name in ("stack", "bins:2"):
        rep = representation(name)
        for steps in (1, 4, 8):
            held = rep.snn_input(f, steps)
            assert held.shape == (steps, *rep(f).shape) and (steps == 1 or held.stride(0) == 0)
            assert torch.equal(expected_current(held), rep(f))


def small_net(in_channels, levels=4, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1), nn.BatchNorm2d(6),
        QuantReLU(levels, "round", [1.0] * 6),
        nn.AvgPool2d(2), nn.Conv2d(6, 8, 3, padding=1), QuantReLU(levels, "round", [1.5] * 8),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    with torch.no_grad():  # BatchNorm statistics of its own, as after training
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.eval()


def test_stack_is_exact_at_T_equal_L_float64_and_both_see_the_same_tensor():
    L = 4
    f = counts(B=6, T=4, dtype=torch.float64)
    rep = representation("stack")
    ann = small_net(rep.channels(4)).double()
    snn = convert(ann, time_steps=L)
    x, x_seq = rep(f), rep.snn_input(f, L)
    rows = compare_levels(ann, snn, x, x_seq)
    assert len(rows) == 2 and all(r.neuron_evaluations > 0 for r in rows)
    assert sum(r.mismatched for r in rows) == 0
    # The first layer of each sees the same 2T-channel tensor.
    seen = {}

    def hook(key):
        def keep(module, inp, out):
            seen.setdefault(key, inp[0].detach().clone())
        return keep
    h1 = ann[0].register_forward_hook(hook("ann"))
    first_conv = next(m for m in snn.modules() if isinstance(m, nn.Conv2d))
    h2 = first_conv.register_forward_hook(hook("snn"))
    _compat.reset_net(snn)
    with torch.no_grad():
        logits = ann(x)
        out = snn(x_seq).mean(0)
    h1.remove()
    h2.remove()
    assert seen["ann"].shape == (6, 8, 8, 8) and torch.equal(seen["ann"], seen["snn"])
    assert torch.allclose(out, logits, atol=1e-12)
    # The converse: the same net fed the stack over T = L steps but with a wrong V0 is not exact.
    wrong = convert(ann, time_steps=L)
    for node in (m for m in wrong.modules() if hasattr(m, "v_init")):
        node.v_init = "floor"
    assert sum(r.mismatched for r in compare_levels(ann, wrong, x, x_seq)) > 0


def moving_dots(n, T=4, H=8, seed=0):
    """``([n, T, 2, H, H], [n])``: one ON dot per frame crossing a row left to right (label 0) or
    right to left (label 1), at a random row and start; the mean frames of both labels alike."""
    g = torch.Generator().manual_seed(seed)
    f = torch.zeros(n, T, 2, H, H)
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        row = int(torch.randint(0, H, (1,), generator=g))
        x0 = int(torch.randint(0, H - T + 1, (1,), generator=g))
        for t in range(T):
            f[i, t, 0, row, x0 + (t if y[i] == 0 else T - 1 - t)] = 2.0
    return f, y


def test_reversing_the_frames_changes_the_stack_prediction_and_not_the_mean():
    """A net trained on the direction of a moving dot: with ``stack`` it reads the direction and
    its prediction follows the frames reversed; with ``mean`` it cannot, and reversing changes
    nothing."""
    f, y = moving_dots(256)
    test_f, test_y = moving_dots(64, seed=1)
    preds = {}
    for name in ("stack", "mean"):
        rep = representation(name)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(rep.channels(4), 8, 3, padding=1),
                            QuantReLU(4, "round", [1.0] * 8),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        opt = torch.optim.Adam(net.parameters(), 0.03)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(net(rep(f)), y).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            preds[name] = (net(rep(test_f)).argmax(1), net(rep(test_f.flip(1))).argmax(1))
    forward, backward = preds["stack"]
    assert (forward == test_y).float().mean() == 1.0
    assert torch.equal(backward, 1 - forward)  # every prediction follows the reversed order
    forward, backward = preds["mean"]
    assert torch.equal(forward, backward)
    assert (forward == test_y).float().mean() < 0.75  # the mean cannot tell them apart


def test_the_names_are_listed_once():
    assert REPRESENTATIONS == ("mean", "stack", "bins:K")
