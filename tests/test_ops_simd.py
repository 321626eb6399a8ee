"""The compiled CPU kernels' two vector builds (baseline SSE2 and AVX2, sj_qvm/ops/_cpu_kernels.h)
give the same bits, and QuantReLU's backward kernel sums dL/dgamma right: per gamma value, over
several threads' shares, and for a gamma that only broadcasts element by element."""
import contextlib

import pytest
import torch

from sj_qvm import QuantReLU
from sj_qvm.ops import native
from sj_qvm.ops.if_loop.cpu import if_multi_step_cpu, spike_rate
from sj_qvm.ops.if_rate import if_rate_cpu
from sj_qvm.ops.quant_relu import quant_relu, quant_relu_ref

from native_settings import both_ways

needs_native = pytest.mark.skipif(
    not native.available(),
    reason=f"sj_qvm.ops._cpu is not built ({native.IMPORT_ERROR}) or SJ_QVM_NO_NATIVE is set")


# Every test here runs with threads taking 32768-element shares (see conftest).
pytestmark = pytest.mark.usefixtures("small_shares")


native_off = native.disabled


def both_builds(fn):
    """``fn()`` under the baseline and the AVX2 build; skips where the CPU has no AVX2."""
    return both_ways(native.simd, fn, "this CPU has no AVX2: only the baseline build runs")


def boundary_x(L, gamma, dtype, n_random):
    """z = x*L/gamma at every k/2 in [-2, L+2], NaN, +-inf, an overflowing z, random x."""
    z = torch.arange(-4, 2 * (L + 2) + 1, dtype=dtype) / 2
    odd = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e38, -0.0], dtype=dtype)
    return torch.cat([z * gamma / L, odd, torch.randn(n_random, dtype=dtype) * gamma])


def test_simd_level_is_checked():
    if native._module is None:
        pytest.skip("the extension is not built")
    with pytest.raises(ValueError, match=r"level must be one of \(0, 1, None\), got 2"):
        native.simd(2)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_quant_relu_builds_agree_bit_for_bit(dtype, rounding):
    for L, gamma in ((4, 2.0), (5, 0.75)):
        flat = boundary_x(L, gamma, dtype, 3 * 7 * 211)
        x = flat[: 21 * (flat.numel() // 21)].view(-1, 3, 7)
        g = torch.randn_like(x)
        for threshold in (gamma, [gamma, gamma / 2, 2 * gamma]):
            def run():
                act = QuantReLU(L, rounding, threshold).to(dtype)
                before = native.CALLS["quant_relu_backward"]
                with torch.no_grad():
                    y0 = act(x)
                xg = x.clone().requires_grad_()
                y = act(xg)
                y.backward(g)
                assert native.CALLS["quant_relu_backward"] == before + 1
                return y0, y.detach(), xg.grad, act.threshold.grad
            base, avx = both_builds(run)
            for a, b in zip(base, avx):
                assert torch.equal(a, b)
            # and both are the twin's forward (the kernel runs the twin's operations)
            act = QuantReLU(L, rounding, threshold).to(dtype)
            ref = quant_relu_ref(x, act.gamma(x.ndim), L, rounding)
            assert torch.equal(base[0], ref) and torch.equal(base[1], ref)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_if_kernels_builds_agree_bit_for_bit(dtype):
    theta = torch.tensor([0.75, 1.0, 0.5], dtype=dtype).view(1, 3, 1)
    for T in (1, 4, 7):
        z = torch.arange(-2, 2 * (T + 2) + 1, dtype=dtype) / 2
        q = torch.cat([z / T, torch.rand(3 * 700, dtype=dtype) * 1.4 - 0.2])
        q = q[: 3 * (q.numel() // 3)].view(-1, 3, 1) * theta
        x_seq = q.unsqueeze(0) + torch.randn(T, *q.shape, dtype=dtype) * 0.1
        for strict in (False, True):
            def run():
                out = []
                for current in ("instant", "expected"):
                    out += list(if_multi_step_cpu(x_seq, 0.5 * theta, theta, strict, current,
                                                  store_v_seq=True))
                out += list(if_rate_cpu(q.contiguous(), T, 0.5 * theta, theta, strict))
                out.append(spike_rate(out[0], theta))
                return out
            base, avx = both_builds(run)
            for a, b in zip(base, avx):
                assert torch.equal(a, b)


@needs_native
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_gamma_gradient_summed_over_threads_shares(dtype, tol):
    """Over 2 * 32768 elements the kernel splits the work between threads: each adds its sums
    into its own row, and the rows are added. Against the torch backward, per-layer and
    per-channel gamma, under a random upstream gradient."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(20, 4, 40, 41, dtype=dtype) * 2  # 131200 elements
        x.view(-1)[:5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0, 1.0])
        g = torch.randn_like(x)
        for threshold in (1.5, [1.5, 0.5, 3.0, 2.0]):
            grads = []
            for off in (False, True):
                act = QuantReLU(4, "round", threshold).to(dtype)
                xg = x.clone().requires_grad_()
                before = native.CALLS["quant_relu_backward"]
                with native_off() if off else contextlib.nullcontext():
                    act(xg).backward(g)
                assert native.CALLS["quant_relu_backward"] == before + (0 if off else 1)
                grads.append((xg.grad, act.threshold.grad))
            (gx, gg), (gx_t, gg_t) = grads
            assert torch.equal(gx, gx_t)
            assert gg.shape == gg_t.shape and torch.isfinite(gg).all()
            torch.testing.assert_close(gg, gg_t, rtol=tol, atol=tol)
    finally:
        torch.set_num_threads(saved)


@needs_native
def test_gamma_broadcast_per_element_is_reduced_to_its_shape():
    """A gamma of shape [1, C, 1, W] is no run of contiguous dims: the kernel sees one value per
    element and its sums are reduced to gamma's shape afterwards."""
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64) * 2
    gamma = (torch.rand(1, 2, 1, 5, dtype=torch.float64) + 0.5).requires_grad_()
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    before = native.CALLS["quant_relu_backward"]
    quant_relu(xa, gamma, 4, "round").backward(g)
    assert native.CALLS["quant_relu_backward"] == before + 1
    ga = gamma.grad.clone()
    gamma.grad = None
    quant_relu_ref(xb, gamma, 4, "round").backward(g)
    assert ga.shape == (1, 2, 1, 5)
    # (the twin's dL/dx is g * (gamma/L) * (L/gamma), which rounds: equal up to that)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gamma.grad, rtol=1e-12, atol=1e-12)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bptt_kernel_builds_agree_bit_for_bit(dtype):
    """The BPTT backward (sigmoid from exp_poly in float, libm's exp in double; ATan) under a
    random upstream gradient on spikes, V_T and v_seq, every reset rule and firing rule; and a
    far-off h (|alpha h| > 80, where exp_poly clamps) gives the same gradients as libm's."""
    from sj_qvm._compat import surrogate
    from sj_qvm.ops.if_loop import if_multi_step_bptt
    T = 4
    x = torch.rand(T, 5, 3, 70, dtype=dtype) * 1.4 - 0.2
    x[:, 0, 0, :4] = torch.tensor([60.0, -60.0, 1e4, -1e4], dtype=dtype)  # h far from 0
    theta = torch.tensor([0.5, 1.0, 0.75], dtype=dtype).view(3, 1)
    g = [torch.randn(T, 5, 3, 70, dtype=dtype), torch.randn(5, 3, 70, dtype=dtype)]
    for sg, detach, strict in [(surrogate.Sigmoid(), False, False), (surrogate.Sigmoid(), True, True),
                               (surrogate.ATan(), False, True), (surrogate.ATan(), True, False)]:
        def run():
            xg = x.clone().requires_grad_()
            th = theta.clone().requires_grad_()
            before = native.CALLS["if_backward"]
            s, v, vs = if_multi_step_bptt(xg, 0.5 * theta, th, strict, "instant", sg, detach,
                                          True)
            ((s * g[0]).sum() + (v * g[1]).sum() + (vs * g[0].flip(0)).sum()).backward()
            assert native.CALLS["if_backward"] == before + 1
            return s.detach(), v.detach(), xg.grad, th.grad
        base, avx = both_builds(run)
        for a, b in zip(base, avx):
            assert torch.equal(a, b)
        with native_off():
            xg = x.clone().requires_grad_()
            th = theta.clone().requires_grad_()
            s, v, vs = if_multi_step_bptt(xg, 0.5 * theta, th, strict, "instant", sg, detach, True)
            ((s * g[0]).sum() + (v * g[1]).sum() + (vs * g[0].flip(0)).sum()).backward()
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(base[2], xg.grad, rtol=tol, atol=tol)
        torch.testing.assert_close(base[3], th.grad, rtol=10 * tol, atol=10 * tol)
