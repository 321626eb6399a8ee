"""Output reconstruction: the calibrated thresholds distilled towards the float ANN's output."""
import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import sj_qvm
from sj_qvm import QuantReLU
from sj_qvm.app.digits import load_digits_tensors
from sj_qvm.interop import calibration as cal
from sj_qvm.interop import reconstruction as rec
from sj_qvm.interop.quantize import quantize_graph


@functools.lru_cache(maxsize=1)
def _trained():
    """A small CNN trained for 3 epochs on scikit-learn's real digits: a confident classifier
    whose L = 2 quantization costs it visibly."""
    x, y, _, _ = load_digits_tensors(0)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.AvgPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(m(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval(), x[:512]


def net():
    return copy.deepcopy(_trained()[0])


def loader(n=512, bs=64, shuffle=False, seed=0):
    x = _trained()[1][:n]
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=bs,
                      shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def kl_to_float(ann, qann, data):
    with torch.no_grad():
        return sum(F.kl_div(qann(x).log_softmax(1), ann(x).log_softmax(1), log_target=True,
                            reduction="sum").item() for x, _ in data)


def thresholds(m):
    return [q.threshold.detach().clone() for q in m.modules() if isinstance(q, QuantReLU)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_reconstruction_lowers_the_output_divergence_and_moves_only_thresholds(shuffle):
    ann, data = net(), loader(shuffle=shuffle)
    before = sj_qvm.quantize(ann, 2, dataloader=data, progress=False, reconstruct_steps=0)
    after = sj_qvm.quantize(ann, 2, dataloader=data, progress=False, reconstruct_steps=8)
    ordered = loader()
    assert kl_to_float(ann, after, ordered) < 0.9 * kl_to_float(ann, before, ordered)
    sd0, sd1 = before.state_dict(), after.state_dict()
    moved = {k for k in sd0 if not torch.equal(sd0[k], sd1[k])}
    assert moved and all(k.endswith("threshold") for k in moved)
    assert not after.training
    assert all(p.requires_grad for p in after.parameters())
    assert all((g > 0).all() and torch.isfinite(g).all() for g in thresholds(after))


def test_the_default_runs_a_quarter_of_the_batches_and_is_deterministic():
    ann, data = net(), loader(n=384, bs=64)  # 6 batches -> 2 steps
    assert rec.default_steps(6) == 2 and rec.default_steps(1) == 1 and rec.default_steps(8) == 2
    auto = sj_qvm.quantize(ann, 2, dataloader=data, progress=False)
    two = sj_qvm.quantize(ann, 2, dataloader=data, progress=False, reconstruct_steps=2)
    again = sj_qvm.quantize(ann, 2, dataloader=data, progress=False)
    for a, b, c in zip(thresholds(auto), thresholds(two), thresholds(again), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    none = sj_qvm.quantize(ann, 2, dataloader=data, progress=False, reconstruct_steps=0)
    assert not all(torch.equal(a, b) for a, b in zip(thresholds(auto), thresholds(none)))


def test_one_step_is_an_adam_step_on_log_gamma_as_autograd_computes_it():
    """The fast path's chain rule (d/d log gamma = gamma * d/d gamma) against its twin: the
    threshold as exp(s) with autograd through exp."""
    ann, data = net(), loader(n=128, bs=64)
    q = quantize_graph(ann, 2)
    cal.calibrate(q, data, progress=False, reconstruct_steps=0)
    twin = copy.deepcopy(q)
    teacher = rec.float_teacher(q)
    losses = rec.reconstruct(q, teacher, data, steps=1, progress=False)
    x = next(iter(data))[0]
    mods = [m for m in twin.modules() if isinstance(m, QuantReLU)]
    s = [m.threshold.detach().double().log().requires_grad_(True) for m in mods]
    for m in mods:
        del m.threshold
    for m, si in zip(mods, s):
        m.threshold = si.exp().float()
    for p in twin.parameters():
        p.requires_grad_(False)
    out, target = twin(x), teacher(x)
    loss = F.kl_div(out.log_softmax(1), target.log_softmax(1), log_target=True,
                    reduction="sum") / x.shape[0]
    loss.backward()
    opt = torch.optim.Adam(s, lr=rec.RECONSTRUCT_LR)
    opt.step()
    assert losses[0] == pytest.approx(loss.item(), rel=1e-6)
    for got, si in zip(thresholds(q), s, strict=True):
        torch.testing.assert_close(got, si.detach().exp().float(), rtol=1e-6, atol=0)


def test_more_steps_than_batches_start_the_loader_again():
    ann, data = net(), loader(n=128, bs=64)  # 2 batches
    q = quantize_graph(ann, 2)
    cal.calibrate(q, data, progress=False, reconstruct_steps=0)
    losses = rec.reconstruct(q, rec.float_teacher(q), data, steps=5, progress=False)
    assert len(losses) == 5 and losses[-1] < losses[0]
    with pytest.raises(ValueError, match="yielded no batch"):
        rec.reconstruct(q, rec.float_teacher(q), [], steps=1, progress=False)


def test_the_teacher_is_the_float_ann_before_bias_correction():
    ann, data = net(), loader()
    q = quantize_graph(ann, 2)
    teacher = rec.float_teacher(q)
    x = next(iter(data))[0]
    with torch.no_grad():
        assert torch.equal(teacher(x), ann(x))
    assert not any(p.requires_grad for p in teacher.parameters())


def test_an_output_that_is_no_distribution_is_skipped_by_default_and_refused_when_asked():
    torch.manual_seed(0)
    reg = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Flatten(0))  # [B]
    x = torch.randn(64, 8)
    data = DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=16)
    auto = sj_qvm.quantize(reg, 2, dataloader=data, progress=False)
    off = sj_qvm.quantize(reg, 2, dataloader=data, progress=False, reconstruct_steps=0)
    assert all(torch.equal(a, b) for a, b in zip(thresholds(auto), thresholds(off)))
    with pytest.raises(ValueError, match=r"reconstruct_steps=3 needs a model whose output is a "
                                         r"floating \[B, K, \*\] tensor"):
        sj_qvm.quantize(reg, 2, dataloader=data, progress=False, reconstruct_steps=3)


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_the_reconstructed_ann_converts_exactly(rounding):
    ann, data = net(), loader()
    q = sj_qvm.quantize(ann, 2, rounding, dataloader=data, progress=False,
                        reconstruct_steps=6).double()
    snn = sj_qvm.convert(q, current="expected", warn=False)
    x = torch.cat([b[0] for b in data]).double()
    with torch.no_grad():
        out = snn(x.unsqueeze(0).expand(2, *x.shape).contiguous()).mean(0)
        torch.testing.assert_close(out, q(x), rtol=1e-12, atol=1e-12)


def test_a_non_finite_loss_raises_before_any_threshold_moves():
    ann, data = net(), loader(n=128, bs=64)
    q = quantize_graph(ann, 2)
    cal.calibrate(q, data, progress=False, reconstruct_steps=0)
    before = thresholds(q)
    bad = DataLoader(TensorDataset(torch.full((8, 1, 8, 8), float("inf")), torch.zeros(8)),
                     batch_size=8)
    with pytest.raises(ValueError, match=r"the loss is nan at step 1.*reconstruct_steps=0"):
        rec.reconstruct(q, rec.float_teacher(q), bad, steps=2, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, thresholds(q)))


def test_targets_keep_the_first_batches_within_the_bound_and_give_up_past_it():
    x, out = torch.ones(4, 3), torch.ones(4, 2)   # 48 + 32 bytes a batch
    t = rec.Targets(limit=2, max_bytes=1000)
    for i in range(5):
        t.add(x * i, out * i)
    assert len(t.pairs) == 2 and torch.equal(t.pairs[1][0], x)
    assert t.first(2, batches=5)[1][1].eq(1).all() and len(t.first(1, batches=5)) == 1
    assert t.first(3, batches=2) is not None and t.first(3, batches=5) is None
    small = rec.Targets(limit=None, max_bytes=200)
    for i in range(3):
        small.add(x, out)
    assert small.overflowed and small.pairs == [] and small.first(1, batches=3) is None


class _NoLen(torch.utils.data.IterableDataset):
    def __init__(self, x):
        self.x = x

    def __iter__(self):
        return iter((b, 0) for b in self.x.split(64))


@pytest.mark.parametrize("loader_kind", ["ordered", "no len", "small memory bound"])
def test_the_first_pass_outputs_stand_in_for_the_teacher(loader_kind, monkeypatch):
    """Reconstruction distils on the float outputs the first calibration pass computed: no float
    copy is run, and the thresholds equal those of the float teacher run on the loader (the
    fallback, taken when the outputs would pass the memory bound), bit for bit."""
    ann = net()
    copies = []
    real = cal.float_teacher
    monkeypatch.setattr(cal, "float_teacher", lambda m: copies.append(1) or real(m))
    data, kw = loader(n=384), {}
    if loader_kind == "no len":
        data = _NoLen(_trained()[1][:384])
    if loader_kind == "small memory bound":
        kw = dict(cache_bytes=10_000)  # less than one batch of inputs
    q = quantize_graph(ann, 2)
    cal.calibrate(q, data, progress=False, **kw)
    assert len(copies) == (1 if loader_kind == "small memory bound" else 0)
    # The reference: calibration without reconstruction, then the teacher on the loader.
    ref = quantize_graph(ann, 2)
    cal.calibrate(ref, loader(n=384), progress=False, reconstruct_steps=0)
    rec.reconstruct(ref, real(quantize_graph(ann, 2)), loader(n=384), rec.default_steps(6),
                    progress=False)
    for a, b in zip(thresholds(q), thresholds(ref), strict=True):
        assert torch.equal(a, b)


def test_a_loader_that_refills_one_buffer_gives_the_thresholds_of_a_plain_one():
    """A loader that yields one buffer, refilled for every batch: what calibration keeps of a
    batch (reconstruction's inputs, the values saved at a cut) must be copies."""
    x = _trained()[1][:256]

    class Refill:
        def __len__(self):
            return 4

        def __iter__(self):
            buf = torch.empty(64, *x.shape[1:])
            for b in x.split(64):
                buf.copy_(b)
                yield buf, torch.zeros(64)

    ann = net()
    got, ref = quantize_graph(ann, 2), quantize_graph(ann, 2)
    cal.calibrate(got, Refill(), progress=False)
    cal.calibrate(ref, loader(n=256), progress=False)
    for a, b in zip(thresholds(got), thresholds(ref), strict=True):
        assert torch.equal(a, b)
