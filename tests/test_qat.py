"""The one QAT loop (sj_qvm.qat.fit) and its threshold rule: gamma stays >= MIN_THRESHOLD after
each step; the loop equals a hand-written loop; the hooks see the metrics; every job uses it."""
import pytest
import torch
import torch.nn as nn

from sj_qvm import QuantReLU, convert, finetune, qat
from sj_qvm.app import digits
from sj_qvm.qat import MIN_THRESHOLD, clamp_thresholds, fit


def _gammas(model):
    return [m.threshold.detach().clone() for m in model.modules() if isinstance(m, QuantReLU)]


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), QuantReLU(4, "round", 1.0), nn.Linear(5, 2))


def _data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


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


def _push_gamma_negative(monkeypatch=None):
    """One SGD step whose gradient on gamma is strongly positive: every neuron clipped at gamma
    (large inputs) and a loss that grows with the output."""
    model = nn.Sequential(QuantReLU(4, "round", 1.0))
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    x = torch.full((4, 3), 5.0)
    fit(model, opt, [(x, torch.zeros(4))], 1, loss_fn=lambda out, y: out.sum(), progress=False)
    return model[0].threshold.detach()


def test_a_step_that_would_push_gamma_negative_leaves_min_threshold(monkeypatch):
    assert torch.equal(_push_gamma_negative(), torch.tensor(MIN_THRESHOLD))
    monkeypatch.setattr(qat, "clamp_thresholds", lambda model, min_threshold: None)
    assert _push_gamma_negative().item() < 0  # the converse: without the clamp it goes negative


def test_fit_equals_a_hand_loop_and_the_hooks_see_the_metrics():
    x, y = _data()
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    hand = _tiny()
    opt = torch.optim.SGD(hand.parameters(), lr=0.5, momentum=0.9)
    losses, correct = [], 0
    for xb, yb in batches:  # 2 steps
        out = hand(xb)
        loss = nn.functional.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        clamp_thresholds(hand)
        losses.append(loss.item())
        correct += (out.argmax(1) == yb).sum().item()

    model = _tiny()
    steps, epochs = [], []
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), batches, 1,
                  on_step=steps.append, on_epoch=epochs.append, progress=False)
    a, b = hand.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s["step"] for s in steps] == [1, 2] and [s["loss"] for s in steps] == losses
    (row,) = epochs
    assert history == epochs and row["epoch"] == 1 and row["samples"] == 8
    assert row["train_loss"] == pytest.approx(sum(losses) / 2)
    assert row["train_acc"] == correct / 8 and row["lr"] == 0.5 and row["seconds"] >= 0


def test_fit_per_epoch_batches_start_epoch_scheduler_and_prepare():
    x, y = _data()
    seen_epochs, prepared = [], []
    model = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)

    def batches(epoch):
        seen_epochs.append(epoch)
        return [(x, y)]

    def prepare(inp):
        prepared.append(inp.shape)
        return inp * 1.0
    rows = fit(model, opt, batches, 4, scheduler=sched, start_epoch=2, prepare=prepare,
               progress=False)
    assert seen_epochs == [2, 3] and [r["epoch"] for r in rows] == [3, 4]
    assert prepared == [x.shape, x.shape]
    # Each row logs the lr its epoch trained at; the scheduler steps after each epoch.
    assert [r["lr"] for r in rows] == [0.1, 0.05] and opt.param_groups[0]["lr"] == 0.025
    assert fit(model, opt, batches, 0, progress=False) == []  # zero epochs: nothing happens


def test_fit_sets_a_distributed_samplers_epoch():
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    x, y = _data()
    ds = TensorDataset(x, y)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    model = _tiny()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(ds, 4, sampler=sampler), 3,
        progress=False)
    assert sampler.epoch == 2


def test_fit_refuses_bad_arguments_and_batches():
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs must be an int >= 0, got -1"):
        fit(model, opt, [], -1)
    with pytest.raises(ValueError, match="start_epoch"):
        fit(model, opt, [], 1, start_epoch=-1)
    with pytest.raises(ValueError, match="min_threshold"):
        fit(model, opt, [], 1, min_threshold=0.0)
    with pytest.raises(TypeError, match=r"fit needs \(input, target\) batches"):
        fit(model, opt, [torch.zeros(2, 3)], 1, progress=False)


def test_amp_runs_the_forward_in_bfloat16():
    x, y = _data()
    dtypes = []
    model = _tiny()
    model[2].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    rows = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], 1, amp=True,
               progress=False)
    assert dtypes == [torch.bfloat16] and rows[0]["train_loss"] > 0
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], 1, progress=False)
    assert dtypes[-1] == torch.float32  # off by default on the CPU


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
    monkeypatch.setattr(qat, "clamp_thresholds", lambda model, min_threshold: None)
    assert any((g <= 0).any() for g in train())


def test_digits_zero_epochs_leaves_the_initial_net():
    x, y, _, _ = digits.load_digits_tensors(0)
    model = digits.digits_cnn(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digits.train_qat(model, x[:64], y[:64], epochs=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_finetune_goes_through_fit_and_keeps_gamma_positive(monkeypatch):
    import importlib
    quantize_module = importlib.import_module("sj_qvm.interop.quantize")  # the module, not quantize()
    calls = []
    real = quantize_module.fit
    monkeypatch.setattr(quantize_module, "fit", lambda *a, **k: calls.append(k) or real(*a, **k))
    model = nn.Sequential(nn.Linear(3, 5), QuantReLU(4, "round", 1.0))
    with torch.no_grad():
        model[0].bias.fill_(50.0)  # every neuron clipped: d(out.sum())/d(gamma) = +1 each
    x, y = _data()
    # Adam moves gamma by about lr = 10 against its gradient: to -9 without the clamp.
    finetune(model, [(x, y)], epochs=2, lr=10.0, loss_fn=lambda out, t: out.sum(), progress=False)
    assert len(calls) == 1 and calls[0]["desc"] == "fine-tune"
    assert torch.equal(model[1].threshold.detach(), torch.tensor(MIN_THRESHOLD))
    assert not model.training


def test_finetune_with_a_teacher_is_a_step_on_cross_entropy_plus_the_teachers_kl():
    """The fast path's loss against a hand-written step (the twin): CE + KL(teacher || model)."""
    import copy

    import torch.nn.functional as F
    torch.manual_seed(3)
    teacher = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).train()
    t0 = copy.deepcopy(teacher.state_dict())
    x, y = _data()
    fast, twin = _tiny(), _tiny()
    finetune(fast, [(x, y)], epochs=1, lr=0.01, progress=False, teacher=teacher)
    opt = torch.optim.Adam(twin.parameters(), lr=0.01)
    twin.train()
    out = twin(x)
    with torch.no_grad():
        target = teacher.eval()(x)
    kl = F.kl_div(out.log_softmax(1), target.log_softmax(1), log_target=True,
                  reduction="sum") / len(x)
    (F.cross_entropy(out, y) + kl).backward()
    opt.step()
    clamp_thresholds(twin)
    for a, b in zip(fast.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    teacher.train()
    assert all(torch.equal(v, t0[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    finetune(_tiny(), [(x, y)], epochs=1, progress=False, teacher=teacher.train())
    assert teacher.training  # its mode is restored
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        finetune(_tiny(), [(x, y)], progress=False, teacher=lambda v: v)


def test_converter_distils_from_the_ann_it_quantized(monkeypatch):
    import importlib

    import sj_qvm
    converter = importlib.import_module("sj_qvm.interop.converter")
    seen = []
    real = converter.finetune
    monkeypatch.setattr(converter, "finetune",
                        lambda *a, **k: seen.append(k["teacher"]) or real(*a, **k))
    x, y = _data(n=16)
    data = [(x[:8], y[:8]), (x[8:], y[8:])]
    relu_net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    conv = sj_qvm.Converter(dataloader=data, levels=4, finetune_epochs=1, progress=False)
    conv(relu_net)
    conv(_tiny())  # a QuantReLU net: no float ANN to distil from
    assert seen == [relu_net, None]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_is_on_by_default_on_cuda_and_gamma_is_clamped_there():
    x, y = _data()
    dtypes = []
    model = _tiny().cuda()
    model[2].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.no_grad():
        model[1].threshold.fill_(-1.0)  # the clamp runs on the device too
    fit(model, torch.optim.SGD(model.parameters(), lr=0.0), [(x, y)], 1, progress=False)
    assert dtypes == [torch.bfloat16]
    assert model[1].threshold.item() == pytest.approx(MIN_THRESHOLD)
