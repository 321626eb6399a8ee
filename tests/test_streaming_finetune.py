"""The kept streaming remedy: the SNN fine-tuned in the instant current by surrogate BPTT
(:func:`sj_qvm.streaming_finetune.finetune_instant`) and read with the delayed readout
(:func:`sj_qvm.streaming.delayed_readout`).

Gradients: StreamedLogits' gradients (weights, biases, a learned V0, the input) equal those of a
hand-written twin on the reference IF loop (``if_multi_step_ref``), under a random upstream
gradient. Converse, measured on a tiny emulated release: without the fine-tune the instant
current's loss on the sequences it streams is higher, summed over T = 4, 8, 16 and at its worst
T (held-out accuracy is measured on the full release, ``benchmarks/streaming_remedies.py``). The
pipeline flag adds the row and leaves the expected current exact (its refusal for a held
--input: tests/test_streaming.py).
"""
import json

import pytest
import torch
import torch.nn as nn

from sj_qvm import QuantReLU, _compat, convert
from sj_qvm.app import pipeline
from sj_qvm.app.registry import EMULATED_DIGITS
from sj_qvm.app.streaming import FINETUNED, finetune_time_steps, multi_t_batches
from sj_qvm.datasets.frames_dataset import Frames, to_time_major
from sj_qvm.functional import if_multi_step_ref
from sj_qvm.interop.reconstruction import output_kl
from sj_qvm.models import build_model
from sj_qvm.qat import fit
from sj_qvm.streaming import READOUT_DELAY, delayed_readout
from sj_qvm.streaming_finetune import StreamedLogits, finetune_instant, learnable_v_init


def _small_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4),
                        QuantReLU(4, "round", [1.0, 0.8, 1.2, 0.6]), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def _sparse_frames(T=6, B=5, seed=0):
    """Event-like frames ``[B, T, 2, 8, 8]``: mostly zero, a few pixels with a few counts."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, T, 2, 8, 8, generator=g) < 0.2).float()
    return x * torch.randint(1, 4, x.shape, generator=g).float()


def _reference_logits(snn, frames):
    """The converted small net's forward written out on the reference IF loop: conv, IF (its
    node's V0, theta and surrogate), pool, linear (theta folded into it), mean over T."""
    B, T = frames.shape[:2]
    conv, act, lin = snn.body.get_submodule("0"), snn.body.get_submodule("2"), \
        snn.body.get_submodule("5")
    node = act.node
    q = conv(frames.transpose(0, 1).flatten(0, 1)).view(T, B, 4, 8, 8)
    theta = torch.as_tensor(node.v_threshold).view(1, 4, 1, 1)
    v0 = node.v_init.view(1, 4, 1, 1) if isinstance(node.v_init, torch.Tensor) else theta / 2
    s = if_multi_step_ref(q, v0, theta, surrogate_function=node.surrogate_function)[0]
    y = lin(nn.functional.avg_pool2d(s.flatten(0, 1), 2).flatten(1))
    return y.view(T, B, -1).mean(0)


@pytest.mark.parametrize("learn_v0", [False, True])
@pytest.mark.parametrize("T", [1, 3, 6])
def test_gradients_equal_the_reference_loop_under_a_random_upstream_gradient(T, learn_v0):
    snn = convert(_small_net(), current="instant", warn=False)
    assert snn.theta_folded  # the node emits binary spikes; theta lives in the linear layer
    if learn_v0:
        learnable_v_init(snn, "round")
    for p in snn.parameters():
        p.requires_grad_(True)
    x = _sparse_frames(T).requires_grad_(True)
    out = StreamedLogits(snn)(x)
    ref = _reference_logits(snn, x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    params = [x] + list(snn.parameters())
    got = torch.autograd.grad(out, params, g)
    want = torch.autograd.grad(ref, params, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert got[1].abs().sum() > 0  # the conv weights do get a gradient through the spikes
    if learn_v0:
        v0 = snn.spiking_layers()[0][1].node.v_init
        assert isinstance(v0, nn.Parameter) and v0.shape == (4,)
        assert got[next(i for i, p in enumerate(params) if p is v0)].abs().sum() > 0


def test_delayed_readout_reads_the_later_steps():
    y = torch.arange(8.0).view(8, 1, 1).expand(8, 2, 3)
    assert torch.equal(delayed_readout(y), torch.full((2, 3), 5.5))  # steps 4..7
    assert torch.equal(delayed_readout(y, 0.0), y.mean(0))
    assert torch.equal(delayed_readout(y[:1]), y[0])  # T = 1: the one step
    assert torch.equal(delayed_readout(y[:3]), y[1:3].mean(0))  # floor(1.5) = 1
    assert READOUT_DELAY == 0.5
    for bad in (1.0, -0.1, float("nan"), "half", True):
        with pytest.raises(ValueError, match="delay"):
            delayed_readout(y, bad)
    with pytest.raises(ValueError, match=r"\[T, B, \*\]"):
        delayed_readout(torch.zeros(0, 2))


def test_bad_arguments_are_refused():
    net = _small_net()
    snn = convert(net, current="expected", warn=False)
    batches = [(_sparse_frames(), torch.zeros(5, dtype=torch.long))]
    with pytest.raises(TypeError, match="QVMNetwork"):
        finetune_instant(net, net, batches)
    with pytest.raises(TypeError, match="ann must be"):
        finetune_instant(snn, None, batches)
    with pytest.raises(ValueError, match="epochs"):
        finetune_instant(snn, net, batches, -1)
    with pytest.raises(ValueError, match="lr"):
        finetune_instant(snn, net, batches, lr=0.0)
    # A refused call loses nothing: the nodes keep the current they had.
    assert {act.node.current for _, act in snn.spiking_layers()} == {"expected"}
    with pytest.raises(ValueError, match=r"\[B, T, \*\]"):
        StreamedLogits(snn)(torch.zeros(5, 4))


def test_zero_epochs_leave_the_snn_as_converted():
    net = _small_net()
    snn = convert(net, current="instant", warn=False)
    before = {k: v.clone() for k, v in snn.state_dict().items()}
    finetune_instant(snn, net, [(_sparse_frames(), torch.zeros(5, dtype=torch.long))], 0,
                     progress=False)
    assert all(torch.equal(before[k], v) for k, v in snn.state_dict().items())
    assert not net.training  # the teacher's mode is restored


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_digits")
    EMULATED_DIGITS.write_synthetic(root, True, 0)
    return root


def _sequences(root, T, train):
    """``([T, B, 2, 32, 32], [B])``: a split of the tiny release integrated into T frames, scaled
    by T / 4 (no augmentation)."""
    ds = Frames(EMULATED_DIGITS.make(root, train, T), 32, scale=T / 4)
    x = to_time_major(torch.stack([ds[i][0] for i in range(len(ds))]))
    return x, torch.tensor([ds[i][1] for i in range(len(ds))])


def _objective(snn, ann, x, y):
    """What the fine-tune minimises on ``x [T, B, *]``: cross-entropy + KL to the ANN."""
    with torch.no_grad():
        out = StreamedLogits(snn)(x.transpose(0, 1))
        return (nn.functional.cross_entropy(out, y) + output_kl(out, ann(x.mean(0)))).item()


def test_converse_on_a_tiny_release_without_the_fine_tune_the_instant_current_is_worse(tiny_digits):
    """A small net QAT-trained on the tiny emulated digits release (90 training recordings), then
    fine-tuned in the instant current at T = 4, 8 and 16 on its (unaugmented) training sequences.
    Without the fine-tune the instant current's loss (cross-entropy + KL to the ANN) on those
    sequences, summed over the three T, is higher, and so is its worst T. (On
    10 test recordings the held-out accuracy moves by single samples either way; the held-out
    figures are measured on the full release by ``benchmarks/streaming_remedies.py``.)"""
    root = tiny_digits
    x4, y = _sequences(root, 4, True)
    torch.manual_seed(0)
    ann = build_model("vgg", in_channels=2, num_classes=10, levels=4, width=4)
    fit(ann, torch.optim.Adam(ann.parameters(), 0.01),
        [(x4.mean(0)[i:i + 30], y[i:i + 30]) for i in range(0, len(y), 30)], 20, progress=False)
    ann.eval()
    tuned = convert(ann, current="instant", warn=False)
    torch.manual_seed(0)
    batches = multi_t_batches(EMULATED_DIGITS, root, finetune_time_steps(4), 4, 32, 15,
                              augment=False)
    finetune_instant(tuned, ann, batches, 5, progress=False)
    plain = convert(ann, current="instant", warn=False)
    before, after = [], []
    for T in finetune_time_steps(4):
        x, y = _sequences(root, T, True)
        before.append(_objective(plain, ann, x, y))
        after.append(_objective(tuned, ann, x, y))
    # Over the T it streams (what the fine-tune minimises, one T per batch), and at its worst T
    # (without it the loss grows with T: the cliff).
    assert before[0] < before[1] < before[2]
    assert sum(after) < 0.8 * sum(before), (before, after)
    assert max(after) < 0.8 * max(before), (before, after)
    # The expected current is untouched by the fine-tune: a fresh conversion is exact at T = L.
    with torch.no_grad():
        torch.testing.assert_close(convert(ann)(x4).mean(0), ann(x4.mean(0)), rtol=1e-5,
                                   atol=1e-5)


def test_pipeline_flag_adds_the_finetuned_row(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--tiny", "--epochs", "1", "--arch", "vgg", "--width", "4", "--size", "32",
            "--batch-size", "16", "--optimizer", "adam", "--lr", "0.01", "--quiet",
            "--eval-time-steps", "2", "8", "--finetune-instant", "1",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert pipeline.main(EMULATED_DIGITS, argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["snn_accuracy"]) == {"instant", FINETUNED, "expected"}
    assert set(res["snn_accuracy"][FINETUNED]) == {"2", "4", "8"}
    assert res["snn_accuracy"]["expected"]["4"] == res["ann_accuracy"]  # exactness untouched
    assert res["mismatched_neurons"] == 0
    printed = capsys.readouterr().out
    assert "\n  instant, tuned " in printed and "\ninstant, tuned: the instant current" in printed
