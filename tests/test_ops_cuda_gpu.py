"""The CUDA kernels on a GPU against the torch path (skipped without CUDA and CuPy).

The reference is ``if_multi_step_ref`` run on the CPU copy of the input (the definition) and the
same reference on the CUDA tensors: bit-identical for every T, since
``functional.expected_current`` divides by a 0-dim tensor T (not a Python int, which CUDA's div
kernel would turn into a multiplication by 1/T).
"""
import pytest
import torch

from cuda_host import GPU_ONLY
from sj_qvm import QVMIFNode
from sj_qvm._compat import functional, surrogate
from sj_qvm.functional import if_multi_step_ref, matched_v0
from sj_qvm.ops import verify
from sj_qvm.ops.if_loop import dispatch as backend
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy
from sj_qvm.ops.if_loop.cupy import LAUNCHES

pytestmark = GPU_ONLY
DEV = torch.device("cuda")
ROUNDINGS = ("floor", "round", "ceil")


def _v0(v_init, theta):
    return matched_v0(v_init, theta)[0]


def _cpu(t):
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def test_kernels_are_available_here():
    ok, why = backend.cupy_status()
    assert ok, why
    x = torch.rand(2, 4, device=DEV)
    assert backend.unavailable_reason(x, surrogate.Sigmoid(), True) is None
    assert backend.device_reason(DEV) is None  # if_loop.cu builds and loads here
    node = QVMIFNode(0.7, "round", step_mode="m", backend="cupy")
    node(torch.rand(4, 2, 3, device=DEV, requires_grad=True)).sum().backward()
    assert not any(verify.status().values())  # the first-use checks agreed


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("shape", [(8, 16, 3, 32, 32), (5, 7, 3, 11, 13), (1, 4, 3, 8, 8)],
                         ids=["T8-vec", "T5-oddN", "T1"])
def test_forward_fp32_bit_identical(current, v_init, shape):
    x = torch.rand(shape, device=DEV) * 1.4 - 0.2
    theta = torch.tensor([0.4, 0.9, 1.3], device=DEV).view(3, 1, 1)
    strict = matched_v0(v_init, theta)[1]
    before = sum(LAUNCHES.values())
    got = if_multi_step_cupy(x, _v0(v_init, theta), theta, strict, current, store_v_seq=True)
    assert sum(LAUNCHES.values()) == before + 1  # the kernel ran
    want = if_multi_step_ref(x.cpu(), _v0(v_init, theta.cpu()), theta.cpu(), strict, current,
                             store_v_seq=True)
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    on_gpu = if_multi_step_ref(x, _v0(v_init, theta), theta, strict, current, store_v_seq=True)
    for a, b in zip(got, on_gpu):
        assert torch.equal(a, b)


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("sg", [surrogate.Sigmoid(), surrogate.ATan()], ids=["Sigmoid", "ATan"])
@pytest.mark.parametrize("detach", [False, True])
def test_gradients_fp32(current, v_init, sg, detach):
    shape = (6, 5, 3, 9, 7)  # odd N
    x = (torch.rand(shape, device=DEV) * 1.4 - 0.2).requires_grad_()
    theta = torch.tensor([0.4, 0.9, 1.3], device=DEV).view(3, 1, 1).requires_grad_()
    v0 = _v0(v_init, theta.detach()) * torch.ones_like(theta)
    v0 = v0.clone().requires_grad_()
    strict = matched_v0(v_init, 1.0)[1]
    outs = if_multi_step_cupy(x, v0, theta, strict, current, sg, detach, True)
    gs = [torch.randn_like(o) for o in outs]
    grads = torch.autograd.grad(sum((o * g).sum() for o, g in zip(outs, gs)), (x, v0, theta))
    xc, v0c, thc = (_cpu(t).requires_grad_() for t in (x, v0, theta))
    ref = if_multi_step_ref(xc, v0c, thc, strict, current, sg, detach, True)
    ref_grads = torch.autograd.grad(sum((o * g.cpu()).sum() for o, g in zip(ref, gs)),
                                    (xc, v0c, thc))
    assert torch.equal(outs[0].cpu(), ref[0].detach())
    for a, b in zip(grads, ref_grads):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_half_dtypes(dtype, tol, current):
    x = (torch.rand(8, 16, 3, 16, 16, device=DEV) * 1.4 - 0.2).to(dtype)
    theta = torch.tensor([0.4, 0.9, 1.3], device=DEV).view(3, 1, 1)
    spike, v, _ = if_multi_step_cupy(x, 0.5 * theta, theta, False, current)
    want = if_multi_step_ref(x.float().cpu(), 0.5 * theta.cpu(), theta.cpu(), False, current)
    assert spike.dtype == dtype and v.dtype == torch.float32
    assert torch.equal(spike.float().cpu(), want[0]) and torch.equal(v.cpu(), want[1])
    low = if_multi_step_ref(x, (0.5 * theta).to(dtype), theta.to(dtype), False, current)
    assert (low[0] != spike).float().mean() < 0.05  # the 16-bit torch path keeps V in 16 bits
    xg = x.clone().requires_grad_()
    out = if_multi_step_cupy(xg, 0.0, 0.7, False, current, surrogate.Sigmoid())[0]
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad((out * g).sum(), xg)
    xr = x.float().requires_grad_()
    ref = if_multi_step_ref(xr, 0.0, 0.7, False, current, surrogate.Sigmoid())[0]
    (gr,) = torch.autograd.grad((ref * g.float()).sum(), xr)
    assert gx.dtype == dtype
    torch.testing.assert_close(gx.float(), gr, rtol=tol, atol=tol)


def test_non_contiguous_input_and_byte_spikes():
    base = torch.rand(4, 6, 3, 10, 10, device=DEV)
    x = base.transpose(3, 4)[:, ::2]  # strided, not contiguous
    assert not x.is_contiguous()
    got = if_multi_step_cupy(x, 0.1, 0.6)
    want = if_multi_step_ref(x, 0.1, 0.6)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    spike = if_multi_step_cupy(x, 0.1, 0.6, spike_dtype=torch.bool)[0]
    assert spike.dtype == torch.bool and torch.equal(spike, want[0].bool())


def test_node_batch_size_changes_and_sentinel():
    node = QVMIFNode(torch.tensor([0.5, 0.7, 0.9]), "round", step_mode="m", backend="cupy")
    node.to(DEV)
    ref = QVMIFNode(torch.tensor([0.5, 0.7, 0.9]), "round", step_mode="m", backend="torch")
    ref.to(DEV)
    assert backend.device_reason(DEV) is None
    node(torch.rand(4, 2, 3, 7, 7, device=DEV))  # the first-use check, before counting
    for batch in (8, 3, 5):
        functional.reset_net(node)
        functional.reset_net(ref)
        x = torch.rand(4, batch, 3, 7, 7, device=DEV)
        before = sum(LAUNCHES.values())
        with torch.no_grad():
            out = node(x)
            out2 = node(x)  # continues from the state
            want = ref(x)
            want2 = ref(x)
        assert sum(LAUNCHES.values()) == before + 2  # the kernel ran, twice
        assert node.last_dispatch[0] == "cupy" and ref.last_dispatch[0] == "torch"
        assert torch.equal(out, want) and torch.equal(out2, want2) and torch.equal(node.v, ref.v)


def test_node_learns_theta_and_v0_like_torch():
    x = torch.rand(4, 8, 3, 8, 8, device=DEV) * 1.2
    g = torch.randn_like(x)
    grads = {}
    for name in ("cupy", "torch"):
        theta = torch.nn.Parameter(torch.tensor([0.5, 0.6, 0.7], device=DEV))
        v0 = torch.nn.Parameter(torch.full((3,), 0.25, device=DEV))
        node = QVMIFNode(theta, v0, step_mode="m", surrogate_function=surrogate.ATan(),
                         backend=name)
        xg = x.clone().requires_grad_()
        (node(xg) * g).sum().backward()
        assert node.last_dispatch[0] == name
        grads[name] = (xg.grad, theta.grad, v0.grad)
    for a, b in zip(grads["cupy"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_runs_on_the_current_torch_stream():
    x = torch.rand(8, 64, 3, 32, 32, device=DEV)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y = x * 2 - 0.5  # queued on s: the kernel must run after it, on s
        got = if_multi_step_cupy(y, 0.0, 0.8)
    s.synchronize()
    want = if_multi_step_ref(x * 2 - 0.5, 0.0, 0.8)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_large_n_many_blocks():
    x = torch.rand(4, (1 << 20) + 3, device=DEV)  # 1M + 3 neurons
    got = if_multi_step_cupy(x, 0.5, 1.0, current="expected")
    want = if_multi_step_ref(x, 0.5, 1.0, current="expected")  # T = 4: exact on the GPU too
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_torch_compile_matches_eager():
    def step(x, theta):
        spike, v, _ = if_multi_step_cupy(x, 0.5 * theta, theta, False, "expected",
                                         surrogate.Sigmoid())
        return spike.mean(0) * 2 + v

    x = (torch.rand(4, 8, 3, 16, 16, device=DEV)).requires_grad_()
    theta = torch.tensor([0.5, 0.7, 0.9], device=DEV).view(3, 1, 1).requires_grad_()
    g = torch.randn(8, 3, 16, 16, device=DEV)
    out = step(x, theta)
    eager = (out,) + torch.autograd.grad((out * g).sum(), (x, theta))
    before = sum(LAUNCHES.values())
    compiled_fn = torch.compile(step, fullgraph=True)
    out = compiled_fn(x, theta)
    compiled = (out,) + torch.autograd.grad((out * g).sum(), (x, theta))
    assert sum(LAUNCHES.values()) >= before + 2  # forward and backward kernels ran compiled
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-6, atol=1e-6)
    for a, b in zip(compiled[1:], eager[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("v_init", ROUNDINGS)
def test_constant_current_form_bit_identical(v_init):
    """``if_constant_cupy``: one [B, *] current in, [T, B, *] spikes out, equal to the reference on
    the current repeated over T (both currents), and to the broadcast view through a node."""
    from sj_qvm.ops.if_loop import if_constant_cupy  # noqa: PLC0415
    T = 4
    z = torch.arange(-2, 2 * T + 3, dtype=torch.float32) / 2
    q = torch.cat([z, torch.rand(300) * T * 1.4 - 0.2]).view(1, 1, -1) / T
    q = q.expand(8, 3, -1).contiguous().to(DEV)
    theta = torch.tensor([0.4, 0.9, 1.3], device=DEV).view(3, 1)
    q = q * theta
    v0, strict = matched_v0(v_init, theta)
    before = LAUNCHES["qvm_if_forward_f32_same_v4"] + LAUNCHES["qvm_if_forward_f32_same_v1"]
    got = if_constant_cupy(q, T, v0, theta, strict, store_v_seq=True)
    assert LAUNCHES["qvm_if_forward_f32_same_v4"] + LAUNCHES["qvm_if_forward_f32_same_v1"] == before + 1
    for current in ("expected", "instant"):
        want = if_multi_step_ref(_cpu(q).unsqueeze(0).repeat(T, 1, 1, 1), _cpu(v0), _cpu(theta),
                                 strict, current, store_v_seq=True)
        for a, b in zip(got, want):
            assert torch.equal(a.cpu(), b)


def test_rate_kernel_equals_the_per_sample_rate():
    """``if_rate_cupy`` (counts only) against the rate of the spike train on the same device."""
    from sj_qvm.ops.if_loop import if_constant_cupy  # noqa: PLC0415
    from sj_qvm.ops.if_rate import if_rate_cupy  # noqa: PLC0415
    T = 5
    q = (torch.rand(16, 3, 40, device=DEV) * 1.4 - 0.2)
    theta = torch.tensor([0.4, 0.9, 1.3], device=DEV).view(3, 1)
    rate, v = if_rate_cupy(q, T, 0.5 * theta, theta, False)
    spikes, v_train, _ = if_constant_cupy(q, T, 0.5 * theta, theta, False)
    assert torch.equal(rate, spikes.sum(0) * theta / T) and torch.equal(v, v_train)


def test_a_converted_network_counts_on_the_gpu_and_equals_the_quantized_ann():
    """Expected mode, per-sample schedule, nothing observing the trains: every spiking layer runs
    the count kernel, and the logits are the quantized ANN's (N == M)."""
    import torch.nn as nn  # noqa: PLC0415

    import sj_qvm  # noqa: PLC0415
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5)).eval()
    x = torch.rand(32, 2, 6, 6)
    qann = sj_qvm.quantize(ann, 4, dataloader=[x], progress=False).to(DEV)
    snn = sj_qvm.convert(qann, 4, current="expected", warn=False).to(DEV)
    xd = x.to(DEV)
    with torch.no_grad():
        got = snn(xd.unsqueeze(0).expand(4, *xd.shape)).mean(0)
        want = qann(xd)
    nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
    assert all(n.last_dispatch == ("cupy", "per-sample layer, spike train unobserved: counts only")
               for n in nodes)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
