"""The compiled CPU kernels (sj_qvm/ops/_cpu.c) against their torch twins, bit for bit, and proof
that they ran (a call counter), so that a silent fallback to torch cannot pass."""
import contextlib
import itertools

import pytest
import torch

from sj_qvm import QuantReLU, QVMIFNode
from sj_qvm.functional import if_multi_step_ref
from sj_qvm.ops import native
from sj_qvm.ops.if_loop import if_multi_step_inference, if_multi_step_torch
from sj_qvm.ops.quant_relu.torch import quant_relu_levels

needs_native = pytest.mark.skipif(
    not native.available(),
    reason=f"sj_qvm.ops._cpu is not built ({native.IMPORT_ERROR}) or SJ_QVM_NO_NATIVE is set")


# Every test here runs with threads taking 32768-element shares (see conftest).
pytestmark = pytest.mark.usefixtures("small_shares")


native_off = native.disabled


def calls(name):
    return native.CALLS[name]


def boundary_currents(T, theta, n_random, dtype, C=1):
    """q with z = T*q/theta at every k/2 in [-1, T+2], plus random q, as ``[n, C]``."""
    z = torch.arange(-2, 2 * (T + 2) + 1, dtype=dtype) / 2
    q = torch.cat([z * theta / T, (torch.rand(n_random, dtype=dtype) * 1.4 - 0.2) * theta])
    return q.unsqueeze(1).repeat(1, C)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_if_kernel_equals_torch_loop_and_reference(dtype, current):
    small = itertools.product((1, 2, 3, 4, 7, 16), (False, True), (0.0, 0.5, 1.0), (37,))
    big = [(3, False, 0.5, 22000), (16, True, 1.0, 22000)]  # 66k neurons: 2 threads' shares
    for T, strict, v0, n_random in itertools.chain(small, big):
        theta = 0.75
        q = boundary_currents(T, theta, n_random, dtype, C=3)
        # Steps that differ (instant sees them one by one; expected averages them).
        x_seq = q.unsqueeze(0) + torch.randn(T, *q.shape, dtype=dtype) * 0.1 * theta
        for seq in (x_seq, q.unsqueeze(0).expand(T, *q.shape), q.unsqueeze(0).repeat(T, 1, 1)):
            before = calls("if_forward")
            s, v, vs = if_multi_step_inference(seq, v0 * theta, theta, strict, current,
                                               store_v_seq=True)
            assert calls("if_forward") == before + 1
            s_t, v_t, vs_t = if_multi_step_torch(seq, v0 * theta, theta, strict, current,
                                                 store_v_seq=True)
            assert torch.equal(s, s_t) and torch.equal(v, v_t) and torch.equal(vs, vs_t)
            if n_random < 100:
                s_r, v_r, _ = if_multi_step_ref(seq, v0 * theta, theta, strict, current)
                assert torch.equal(s, s_r) and torch.equal(v, v_r)
        assert s.dtype == dtype and s.shape == x_seq.shape


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_if_kernel_tensor_thresholds_and_v0(dtype):
    x = torch.rand(4, 5, 3, 7, 9, dtype=dtype)  # [T, B, C, H, W], odd sizes
    per_channel = torch.tensor([0.3, 0.6, 1.1], dtype=dtype).view(3, 1, 1)
    per_neuron = torch.rand(3, 7, 9, dtype=dtype) + 0.2
    scalar = torch.tensor(0.7, dtype=dtype)
    v0 = torch.rand(5, 3, 7, 9, dtype=dtype) * 0.5
    for th, current in itertools.product((per_channel, per_neuron, scalar), ("instant", "expected")):
        before = calls("if_forward")
        out = if_multi_step_inference(x, v0, th, False, current, store_v_seq=True)
        assert calls("if_forward") == before + 1
        ref = if_multi_step_torch(x, v0, th, False, current, store_v_seq=True)
        assert all(torch.equal(a, b) for a, b in zip(out, ref))
        assert out[0].sum() > 0


@needs_native
def test_if_kernel_falls_back_on_what_it_cannot_read():
    x = torch.rand(4, 6, 8)
    for seq, th in ((x.transpose(1, 2), 0.5),                      # a step is not contiguous
                    (x.half(), 0.5),                               # fp16
                    (x, torch.tensor([0.5] * 8, dtype=torch.float64))):  # theta of another dtype
        before = calls("if_forward")
        out = if_multi_step_inference(seq, 0.0, th, False, "expected")
        assert calls("if_forward") == before
        assert torch.equal(out[0], if_multi_step_torch(seq, 0.0, th, False, "expected")[0])


@needs_native
def test_node_runs_the_kernel_and_matches_with_it_off():
    x = torch.rand(4, 8, 3, 5, 5)
    for current in ("instant", "expected"):
        node = QVMIFNode(torch.tensor([0.4, 0.8, 1.2]), "round", current=current, step_mode="m",
                         store_v_seq=True)
        before = calls("if_forward")
        with torch.no_grad():
            s = node(x)
        assert calls("if_forward") == before + 1
        v, v_seq = node.v, node.v_seq
        node.reset()
        with native_off(), torch.no_grad():
            assert torch.equal(node(x), s) and torch.equal(node.v, v)
            assert torch.equal(node.v_seq, v_seq)
        assert calls("if_forward") == before + 1


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_quant_relu_kernel_equals_the_torch_chain(dtype, rounding):
    for L, gamma in ((1, 1.0), (4, 2.0), (8, 0.75), (16, 3.0)):
        z = torch.arange(-4, 2 * (L + 2) + 1, dtype=dtype) / 2
        special = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e38, -3e38, -0.0],
                               dtype=dtype)
        flat = torch.cat([z * gamma / L, special, torch.randn(66001, dtype=dtype) * gamma])
        for act, x in ((QuantReLU(L, rounding, gamma).to(dtype), flat),
                       (QuantReLU(L, rounding, [gamma, gamma / 2, 2 * gamma]).to(dtype),
                        flat[: 3 * 7 * (flat.numel() // 21)].view(-1, 3, 7))):
            before = calls("quant_relu")
            with torch.no_grad():
                y = act(x)
            assert calls("quant_relu") == before + 1
            with native_off(), torch.no_grad():
                y_t = act(x)
                lv = quant_relu_levels(x, act.gamma(x.ndim), L, rounding)
            assert calls("quant_relu") == before + 1
            assert torch.equal(y, y_t)
            assert torch.equal(y, lv * act.gamma(x.ndim) / L)
            assert not torch.isnan(y).any()


@needs_native
def test_quant_relu_training_forward_uses_the_kernel_too():
    act = QuantReLU(4, "round", 1.5)
    x = torch.randn(3, 1000, requires_grad=True)
    before = calls("quant_relu")
    y = act(x)
    assert calls("quant_relu") == before + 1 and y.requires_grad
    with native_off():
        assert torch.equal(act(x), y)


def test_torch_fallbacks_alone_stay_exact():
    """With the kernels off (as on an install without a C compiler) the paths still agree."""
    x = torch.rand(4, 6, 3, 5, dtype=torch.float64)
    with native_off():
        assert not native.available()
        for current in ("instant", "expected"):
            out = if_multi_step_inference(x, 0.25, 0.5, True, current, store_v_seq=True)
            ref = if_multi_step_ref(x, 0.25, 0.5, True, current, store_v_seq=True)
            assert all(torch.equal(a, b) for a, b in zip(out, ref))
        act = QuantReLU(4, "ceil", 0.5).double()
        with torch.no_grad():
            assert torch.equal(act(x), torch.clamp(torch.ceil(x * 4 / 0.5), 0, 4) * 0.5 / 4)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spike_rate_kernel_equals_sum_times_theta_over_t(dtype):
    from sj_qvm.ops.if_loop.cpu import spike_rate
    for T, shape in ((1, (5, 3, 4)), (4, (7, 3, 9)), (16, (40000, 3))):
        s = (torch.rand(T, *shape) < 0.4).to(dtype)
        for th in (0.75, torch.tensor([0.3, 0.6, 1.1], dtype=dtype).view(3, 1)
                   if len(shape) == 3 else torch.tensor([0.3, 0.6, 1.1], dtype=dtype)):
            before = calls("spike_rate")
            out = spike_rate(s, th)
            assert calls("spike_rate") == before + 1
            assert torch.equal(out, s.sum(0) * th / T)
            with native_off():
                assert torch.equal(spike_rate(s, th), out)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("strict", [False, True])
def test_if_rate_kernel_equals_the_loop_then_the_rate(dtype, strict):
    from sj_qvm.ops.if_loop.cpu import spike_rate
    from sj_qvm.ops.if_rate import if_rate_cpu
    for T, theta in itertools.product((1, 2, 3, 4, 16), (0.75, 2.0)):
        q = boundary_currents(T, theta, 30001, dtype, C=3)
        for th in (theta, torch.tensor([theta, theta / 3, 1.5 * theta], dtype=dtype)):
            v0 = 0.5 * (th if isinstance(th, float) else th)
            before = calls("if_rate")
            rate, v = if_rate_cpu(q, T, v0, th, strict)
            assert calls("if_rate") == before + 1
            s_ref, v_ref, _ = if_multi_step_ref(q.unsqueeze(0).repeat(T, 1, 1), v0, th, strict,
                                                "expected")
            assert torch.equal(v, v_ref)
            assert torch.equal(rate, spike_rate(s_ref, th))


@needs_native
def test_unobserved_per_sample_layers_count_without_the_train():
    """No hooks: the network counts spikes in the kernel and gives the same logits and V_T as
    when a hook makes every node write its spike train."""
    import sys
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from nets import build
    from sj_qvm import convert
    from sj_qvm._compat import functional
    for arch in ("cnn", "resnet"):
        ann, x = build(arch, 4, "round", dtype=torch.float32)
        snn = convert(ann)
        nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
        x_seq = x.unsqueeze(0).repeat(4, *[1] * x.ndim)
        before = calls("if_rate"), calls("if_forward")
        functional.reset_net(snn)
        with torch.no_grad():
            fast = snn(x_seq)
        assert calls("if_rate") == before[0] + len(nodes) and calls("if_forward") == before[1]
        assert all(m.last_dispatch[0] == "cpu" and "counts only" in m.last_dispatch[1]
                   for m in nodes)
        v_fast = [m.v.clone() for m in nodes]
        hooks = [m.register_forward_hook(lambda *a: None) for m in nodes]
        functional.reset_net(snn)
        with torch.no_grad():
            observed = snn(x_seq)
        for h in hooks:
            h.remove()
        assert calls("if_forward") == before[1] + len(nodes)
        assert torch.equal(fast, observed)
        assert all(torch.equal(a, m.v) for a, m in zip(v_fast, nodes))
        torch.testing.assert_close(fast.mean(0), ann(x), rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("surrogate", ["Sigmoid", "ATan"])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_bptt_kernels_match_the_torch_bptt_under_a_random_gradient(surrogate, current):
    from sj_qvm._compat import surrogate as sj_surrogate
    from sj_qvm.ops.if_loop import if_multi_step_bptt
    sg = getattr(sj_surrogate, surrogate)()
    for strict, detach, per_channel in itertools.product((False, True), (False, True),
                                                         (False, True)):
        torch.manual_seed(1)
        x = torch.rand(5, 4, 3, 6, 7, dtype=torch.float64)  # [T, B, C, H, W]
        theta = (torch.tensor([0.4, 0.8, 1.2], dtype=torch.float64).view(3, 1, 1)
                 if per_channel else torch.tensor(0.7, dtype=torch.float64))
        v0 = torch.rand(4, 3, 6, 7, dtype=torch.float64) * 0.3
        g_s, g_v, g_vs = torch.randn_like(x), torch.randn_like(v0), torch.randn_like(x)
        grads, outs = [], []
        for off in (False, True):
            xs, th, v = (t.clone().requires_grad_() for t in (x, theta, v0))
            before = calls("if_backward")
            ctx = native_off() if off else contextlib.nullcontext()
            with ctx:
                s, vT, vseq = if_multi_step_bptt(xs, v, th, strict, current, sg, detach, True)
                ((s * g_s).sum() + (vT * g_v).sum() + (vseq * g_vs).sum()).backward()
            assert calls("if_backward") == before + (0 if off else 1)
            outs.append((s, vT, vseq))
            grads.append((xs.grad, th.grad, v.grad))
        for a, b in zip(*outs):
            assert torch.equal(a, b)
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        assert grads[0][0].abs().sum() > 0


@needs_native
def test_qvm_node_trains_through_the_kernels_in_float32():
    x = torch.rand(4, 8, 3, 5, 5, requires_grad=True)
    node = QVMIFNode(torch.nn.Parameter(torch.tensor([0.4, 0.8, 1.2])), "round", step_mode="m")
    before = calls("if_backward")
    (node(x) * torch.randn(4, 8, 3, 5, 5)).sum().backward()
    assert calls("if_backward") == before + 1
    gx, gth = x.grad.clone(), node.v_threshold.grad.clone()
    g = torch.randn(4, 8, 3, 5, 5)
    results = []
    for off in (False, True):
        x.grad = None
        node.v_threshold.grad = None
        node.reset()
        with native_off() if off else contextlib.nullcontext():
            (node(x) * g).sum().backward()
        results.append((x.grad.clone(), node.v_threshold.grad.clone()))
    (gx_n, gth_n), (gx_t, gth_t) = results
    torch.testing.assert_close(gx_n, gx_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gth_n, gth_t, rtol=1e-4, atol=1e-5)
    assert gx.shape == gx_n.shape and gth.shape == (3,)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_quant_relu_backward_kernel_equals_the_torch_backward(dtype, rounding):
    for L, gamma in ((1, 1.0), (4, 2.0), (8, 0.75), (5, 3.0)):
        z = torch.arange(-4, 2 * (L + 2) + 1, dtype=dtype) / 2
        flat = torch.cat([z * gamma / L, torch.tensor([float("nan"), float("inf"), -float("inf"),
                                                       3e38], dtype=dtype),
                          torch.randn(3 * 7 * 300, dtype=dtype) * gamma])
        x = flat[: 21 * (flat.numel() // 21)].view(-1, 3, 7)
        g = torch.randn_like(x)
        for threshold in (gamma, [gamma, gamma / 2, 2 * gamma]):
            grads = []
            for off in (False, True):
                act = QuantReLU(L, rounding, threshold).to(dtype)
                xg = x.clone().requires_grad_()
                before = calls("quant_relu_backward")
                with native_off() if off else contextlib.nullcontext():
                    act(xg).backward(g)
                assert calls("quant_relu_backward") == before + (0 if off else 1)
                grads.append((xg.grad, act.threshold.grad))
            (gx, gg), (gx_t, gg_t) = grads
            assert torch.equal(gx, gx_t)
            torch.testing.assert_close(gg, gg_t, rtol=1e-5, atol=1e-5)
            assert torch.isfinite(gg).all()


@needs_native
def test_min_share_is_checked_and_restored_by_the_fixture(small_shares):
    assert native.min_share() == small_shares == 32768
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="min_share must be an int >= 1 or None"):
            native.min_share(bad)
    assert native.min_share() == 32768
