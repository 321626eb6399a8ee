"""Threshold calibration: the MSE search, percentiles per channel, layer-by-layer, bias correction."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import sj_qvm
from sj_qvm import QuantReLU
from sj_qvm.interop import calibration as cal
from sj_qvm.interop.quantize import quantize_graph
from sj_qvm.interop.thresholds import Pool, sorted_rows, sorted_rows_reference

ROUNDINGS = ("floor", "round", "ceil")


def loader(n=96, bs=32, shape=(8,), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=bs)


def quant_modules(m):
    return [q for q in m.modules() if isinstance(q, QuantReLU)]


def direct_error(x: torch.Tensor, gamma: float, L: int, rounding: str) -> float:
    """sum (a_gamma(x) - relu(x))^2 with the QuantReLU itself."""
    q = QuantReLU(L, rounding, gamma).double()
    with torch.no_grad():
        return ((q(x) - torch.relu(x)) ** 2).sum().item()


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("L", [1, 2, 4, 8])
def test_closed_form_error_equals_the_quantrelu_error_boundaries_included(rounding, L):
    g = torch.Generator().manual_seed(L)
    gamma = 1.5
    # Samples on every boundary k*gamma/L and (k+1/2)*gamma/L, zero, and random values.
    edges = torch.arange(0, 2 * L + 3, dtype=torch.float64) * gamma / (2 * L)
    x = torch.cat([edges, torch.zeros(5, dtype=torch.float64),
                   torch.rand(200, generator=g, dtype=torch.float64) * 2 * gamma])
    xs = x.clamp(min=0).sort().values.view(1, -1)
    closed = cal.quantization_error(xs, torch.tensor([[gamma]], dtype=torch.float64), L,
                                    rounding).item() + (xs ** 2).sum().item()
    assert closed == pytest.approx(direct_error(x, gamma, L, rounding), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("L", [2, 4])
def test_mse_gamma_matches_a_brute_force_search_and_beats_the_percentile(rounding, L):
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(3, 400, generator=g, dtype=torch.float64) *
                   torch.tensor([[0.5], [1.0], [3.0]], dtype=torch.float64))
    got = cal.mse_gamma(x, L, rounding)
    for c in range(3):
        grid = np.linspace(1e-3, x[c].max().item(), 4000)
        brute = min(direct_error(x[c], gam, L, rounding) for gam in grid)
        mine = direct_error(x[c], got[c].item(), L, rounding)
        assert mine <= brute * (1 + 1e-3) + 1e-12
        p999 = np.percentile(x[c].numpy(), 99.9)
        assert mine < direct_error(x[c], p999, L, rounding)


def test_percentile_per_channel_equals_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(4, 333, generator=g, dtype=torch.float64))
    got = cal.percentile_gamma(x, 97.5)
    want = [np.percentile(x[c].numpy(), 97.5) for c in range(4)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)


def two_layer_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(5 * 16, 3)).eval()


def test_channel_wise_gives_one_gamma_per_channel_and_is_deterministic():
    net, data = two_layer_cnn(), loader(shape=(2, 4, 4))
    q1 = sj_qvm.quantize(net, 4, dataloader=data, progress=False)
    q2 = sj_qvm.quantize(net, 4, dataloader=data, progress=False)
    g1 = [m.threshold.detach() for m in quant_modules(q1)]
    assert [tuple(t.shape) for t in g1] == [(6,), (5,)]
    assert all(torch.equal(a, b.threshold.detach()) for a, b in zip(g1, quant_modules(q2)))
    per_layer = sj_qvm.quantize(net, 4, dataloader=data, channel_wise=False, progress=False)
    assert all(m.threshold.ndim == 0 for m in quant_modules(per_layer))


def activations_after(qann, data, k):
    """The inputs of the k-th QuantReLU of ``qann`` over ``data``, as the model computes them."""
    seen = []
    h = quant_modules(qann)[k].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        for x, _ in data:
            qann(x)
    h.remove()
    return torch.cat(seen)


@pytest.mark.parametrize("method", ["mse", "percentile"])
def test_layer_by_layer_fits_the_quantized_inputs_a_later_layer_sees(method):
    net, data = two_layer_cnn(), loader(shape=(2, 4, 4))
    seq = sj_qvm.quantize(net, 2, dataloader=data, method=method, progress=False,
                          reconstruct_steps=0)
    flat = sj_qvm.quantize(net, 2, dataloader=data, method=method, sequential=False,
                           progress=False, reconstruct_steps=0)
    g_seq, g_flat = ([m.threshold.detach() for m in quant_modules(q)] for q in (seq, flat))
    assert torch.equal(g_seq[0], g_flat[0])          # the first layer sees the same inputs
    assert not torch.allclose(g_seq[1], g_flat[1])   # the second does not
    # By hand: layer 2's gamma is computed from what quantized layer 1 feeds it.
    x2 = activations_after(seq, data, 1)
    v = torch.relu(x2).movedim(1, 0).reshape(5, -1).double()
    want = cal.mse_gamma(v, 2, "round") if method == "mse" else cal.percentile_gamma(v, 99.9)
    torch.testing.assert_close(g_seq[1], want.to(g_seq[1].dtype))


def test_bias_correction_restores_the_float_mean_of_each_layers_input():
    net, data = two_layer_cnn(), loader(n=256, shape=(2, 4, 4))
    # Bias correction by itself: reconstruction, which runs after it, moves the thresholds on.
    kw = dict(dataloader=data, progress=False, reconstruct_steps=0)
    plain = sj_qvm.quantize(net, 2, bias_correction=False, **kw)
    fixed = sj_qvm.quantize(net, 2, **kw)  # on by default
    explicit = sj_qvm.quantize(net, 2, bias_correction=True, **kw)
    assert all(torch.equal(a.threshold, b.threshold)
               for a, b in zip(quant_modules(explicit), quant_modules(fixed), strict=True))
    with torch.no_grad():
        h = torch.cat([net[:4](x) for x, _ in data])          # float input of the 2nd ReLU
        out = torch.cat([net(x) for x, _ in data])
    mean = lambda t: t.movedim(1, 0).reshape(t.shape[1], -1).mean(1)
    err_plain = (mean(activations_after(plain, data, 1)) - mean(h)).abs().max()
    err_fixed = (mean(activations_after(fixed, data, 1)) - mean(h)).abs().max()
    assert err_fixed < 1e-5 < err_plain
    with torch.no_grad():
        out_fixed = torch.cat([fixed(x) for x, _ in data])
    torch.testing.assert_close(out_fixed.mean(0), out.mean(0), atol=1e-5, rtol=0)
    assert sum(p.numel() for p in net.parameters()) <= sum(p.numel() for p in
                                                           fixed.parameters())
    assert torch.equal(net[0].bias, two_layer_cnn()[0].bias)  # the ANN is left untouched


def test_pool_stays_bounded_and_deterministic():
    def fill():
        pool = Pool(max_samples=3000, channel_wise=True)
        g = torch.Generator().manual_seed(1)
        for i in range(10):
            pool.add(torch.randn(50, 3, 4, generator=g), i)  # 200 positions x 3 channels
        return pool
    a, b = fill(), fill()
    assert a.cols * 3 <= 3000 and a.per_batch < 250 and torch.equal(a.values(), b.values())
    assert a.count == 10 * 200                       # the mean counts every position
    assert cal.percentile_gamma(a.values(), 90).tolist() == pytest.approx([1.28] * 3, abs=0.15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fast_row_sort_equals_its_torch_twin(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4099, generator=g).to(dtype).relu()   # ties at 0, an odd length
    x[1, 7:40] = 0.5                                          # a run of equal values
    strided = torch.randn(4099, 5, generator=g).to(dtype).T  # a non-contiguous view
    for v in (x, strided, x[:, :1], x[:0]):
        got = sorted_rows(v)
        assert got.dtype == v.dtype and torch.equal(got, sorted_rows_reference(v))


def test_pool_mean_is_the_float64_mean_of_every_position():
    g = torch.Generator().manual_seed(3)
    xs = [torch.rand(7, 3, 33, 65, generator=g) * 100 for _ in range(3)]
    pool = Pool(max_samples=0, channel_wise=True)
    for i, x in enumerate(xs):
        pool.add(x, i)
    exact = torch.cat([x.double().movedim(1, 0).reshape(3, -1) for x in xs], 1).mean(1)
    assert pool.mean().dtype == torch.float64
    assert torch.allclose(pool.mean(), exact, rtol=1e-6, atol=0)


def test_dead_channel_gets_the_median_and_a_dead_layer_raises():
    x = torch.relu(torch.randn(3, 100, dtype=torch.float64))
    x[1] = 0
    pool = Pool(1 << 20, True)
    pool.add(x.T.contiguous(), 0)  # [B=100, C=3]
    gamma = cal._choose(pool, QuantReLU(4, "round", 1.0), "q", "mse", 99.9, None)
    assert gamma[1] == gamma[[0, 2]].median() and (gamma > 0).all()
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
        net[0].bias.fill_(-1.0)
    data = DataLoader(TensorDataset(torch.rand(16, 4)), batch_size=8)  # inputs >= 0: all dead
    for method in cal.METHODS:
        with pytest.raises(ValueError, match="only zeros"):
            sj_qvm.quantize(net, 4, dataloader=data, method=method, progress=False)


def test_bad_arguments_name_the_allowed_values():
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"method must be one of \('mse', 'percentile', 'max'\)"):
        sj_qvm.quantize(net, 4, dataloader=loader(), method="kl")
    with pytest.raises(TypeError, match="channel_wise must be True or False"):
        sj_qvm.quantize(net, 4, dataloader=loader(), channel_wise=1)
    with pytest.raises(TypeError, match="sequential must be True or False"):
        sj_qvm.quantize(net, 4, dataloader=loader(), sequential="no")
    with pytest.raises(TypeError, match=r"bias_correction must be None \(automatic\), True or"):
        sj_qvm.quantize(net, 4, dataloader=loader(), bias_correction="yes")
    with pytest.raises(ValueError, match="needs sequential=True"):
        sj_qvm.quantize(net, 4, dataloader=loader(), bias_correction=True, sequential=False)
    with pytest.raises(TypeError, match=r"percentile must be a number in \(0, 100\]"):
        sj_qvm.quantize(net, 4, dataloader=loader(), percentile="99.9")
    for bad in (0, 100.5, float("nan")):
        with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
            sj_qvm.quantize(net, 4, dataloader=loader(), percentile=bad)
    with pytest.raises(TypeError, match="replace_maxpool must be True or False"):
        sj_qvm.quantize(net, 4, dataloader=loader(), replace_maxpool="yes")
    with pytest.raises(ValueError, match="max_samples must be an int >= 1"):
        cal.calibrate(sj_qvm.quantize(net, 4, dataloader=loader(), progress=False), loader(),
                      max_samples=0)
    for bad, err in ((-1, ValueError), (2.0, TypeError), ("3", TypeError)):
        with pytest.raises(err, match="reconstruct_steps must be an int >= 0"):
            sj_qvm.quantize(net, 4, dataloader=loader(), reconstruct_steps=bad)
        with pytest.raises(err, match="reconstruct_steps must be an int >= 0"):
            sj_qvm.Converter(reconstruct_steps=bad)
    with pytest.raises(ValueError, match="cache_bytes must be an int >= 0"):
        cal.calibrate(sj_qvm.quantize(net, 4, dataloader=loader(), progress=False), loader(),
                      cache_bytes=-1)
    with pytest.raises(ValueError, match="epochs must be an int >= 0"):
        sj_qvm.finetune(net, loader(), epochs=-1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        sj_qvm.finetune(net, loader(), lr=0.0)
    with pytest.raises(ValueError, match="yielded no batch"):
        sj_qvm.quantize(net, 4, dataloader=[], progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        sj_qvm.Converter(method="entropy")
    with pytest.warns(UserWarning, match="without a dataloader"):
        q = sj_qvm.quantize(net, 4)
    assert all(m.threshold.item() == 1.0 for m in quant_modules(q))


class _Branchy(nn.Module):
    """conv-BN-ReLU, a second conv-ReLU, a skip that crosses the second layer's cut, linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1, self.r1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.c2, self.r2 = nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()
        self.c3, self.r3 = nn.Conv2d(6, 4, 1), nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.r1(self.bn1(self.c1(x)))
        y = self.r2(self.c2(h)) + h
        return self.fc(self.r3(self.c3(y)).mean((2, 3)))


def _branchy():
    torch.manual_seed(3)
    net = _Branchy()
    with torch.no_grad():  # a BatchNorm with real statistics
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("kw", [dict(), dict(bias_correction=False), dict(method="percentile"),
                                dict(channel_wise=False)])
def test_resumed_passes_give_the_same_thresholds_and_biases_as_full_recomputation(kw):
    """The cached path (each pass resumes at the previous layer's cut) against its reference
    twin, every pass from the input (cache_bytes=0), and a budget too small to cache it all.
    Without reconstruction, so that the conv calls counted are the calibration passes'; with it
    (the default), the results agree bit for bit too."""
    net = _branchy()
    data = loader(n=40, bs=8, shape=(2, 6, 6), seed=5)
    full = []
    for cache_bytes in (1 << 30, 0):
        q = quantize_graph(net, 2)
        cal.calibrate(q, data, progress=False, cache_bytes=cache_bytes, **kw)
        full.append(q.state_dict())
    assert all(torch.equal(full[0][k], full[1][k]) for k in full[0])
    kw = dict(kw, reconstruct_steps=0)
    results, conv1_calls = [], []
    for cache_bytes in (1 << 30, 0, 3000):
        q = quantize_graph(net, 2)
        calls = []
        q.c1.register_forward_hook(lambda *a: calls.append(1))
        gammas = cal.calibrate(q, data, progress=False, cache_bytes=cache_bytes, **kw)
        results.append((gammas, q.state_dict()))
        conv1_calls.append(len(calls))
    (g0, sd0) = results[0]
    assert sorted(g0) == ["r1", "r2", "r3"]
    for g, sd in results[1:]:
        assert all(torch.equal(g0[k], g[k]) for k in g0)
        assert sd0.keys() == sd.keys() and all(torch.equal(sd0[k], sd[k]) for k in sd0)
    # The cached path computes the first conv once per batch; the twin once per pass.
    n_batches = 5
    assert conv1_calls[0] == n_batches
    assert conv1_calls[1] > 2 * n_batches and conv1_calls[2] > conv1_calls[0]


def test_resumed_passes_match_the_thresholds_of_the_reference_on_a_fixed_model():
    """Fixed model and data: the cached default equals the twin bit for bit, and its thresholds
    are the ones a direct MSE search over the twin's recorded activations gives (so the twin is
    no copy of a wrong answer)."""
    net = _branchy()
    data = loader(n=40, bs=8, shape=(2, 6, 6), seed=6)
    kw = dict(progress=False, bias_correction=False, reconstruct_steps=0)
    q = sj_qvm.quantize(net, 4, dataloader=data, **kw)
    twin = quantize_graph(net, 4)
    g_twin = cal.calibrate(twin, data, cache_bytes=0, **kw)
    for name, g in g_twin.items():
        assert torch.equal(getattr(q, name).threshold.detach(), g.to(torch.float32))
    # r1 sees the float input: its gamma is the MSE optimum of relu(bn1(c1(x))) over all samples.
    with torch.no_grad():
        a = torch.cat([torch.relu(net.bn1(net.c1(x))) for x, _ in data])
    direct = cal.mse_gamma(a.movedim(1, 0).reshape(6, -1).double(), 4, "round")
    assert torch.allclose(g_twin["r1"].double(), direct, rtol=0, atol=1e-6)


def _nan_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


CALIBRATIONS = {  # the plain pass, the traced one that resumes at cuts, and one pass for all
    "module": lambda net: (nn.Sequential(*(QuantReLU(4) if isinstance(m, nn.ReLU) else m
                                           for m in net)), {}),
    "traced": lambda net: (quantize_graph(net, 4), {}),
    "one pass": lambda net: (quantize_graph(net, 4), {"sequential": False}),
}


@pytest.mark.parametrize("how", CALIBRATIONS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_input_is_named_with_layer_and_batch(how, bad):
    model, kw = CALIBRATIONS[how](_nan_net())
    x = torch.randn(64, 8)
    x[37, 2] = bad                                   # batch 2 of 16
    data = DataLoader(TensorDataset(x), batch_size=16)
    with pytest.raises(ValueError, match=r"^QuantReLU '1' got NaN/inf during calibration at batch 2 "
                                         r"\(.* of 96 values\): the input holds NaN/inf "
                                         r"\(.* of 128 values of batch 2\)$"):
        cal.calibrate(model, data, progress=False, **kw)


@pytest.mark.parametrize("how", CALIBRATIONS)
def test_nonfinite_weights_are_named(how):
    net = _nan_net()
    with torch.no_grad():
        net[2].weight[1, 4] = float("nan")
    model, kw = CALIBRATIONS[how](net)
    data = loader(n=32, bs=16)
    with pytest.raises(ValueError, match=r"^QuantReLU '3' got NaN/inf during calibration at batch 0 "
                                         r"\(16 NaN and 0 inf of 80 values\): the weights hold "
                                         r"NaN/inf: '2\.weight' \(1 NaN and 0 inf of 30 values\)$"):
        cal.calibrate(model, data, progress=False, **kw)
    net = _nan_net()                                 # after the last QuantReLU: the output
    with torch.no_grad():
        net[4].bias[0] = float("inf")
    model, kw = CALIBRATIONS[how](net)
    with pytest.raises(ValueError, match=r"^the network output got NaN/inf .* at batch 0 .*"
                                         r"'4\.bias' \(0 NaN and 1 inf of 3 values\)$"):
        cal.calibrate(model, data, progress=False, **kw)


def test_overflow_from_finite_input_and_weights_is_named():
    net = _nan_net()
    with torch.no_grad():
        net[0].weight.fill_(3e38)
    model, _ = CALIBRATIONS["traced"](net)
    with pytest.raises(ValueError, match=r"^QuantReLU '1' got NaN/inf .* at batch 0 .*: the weights "
                                         r"and the input are finite: the values overflowed"):
        cal.calibrate(model, loader(n=32, bs=16), progress=False)
