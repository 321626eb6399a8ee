"""The CUDA kernels on a GPU against the torch path (skipped without CUDA and CuPy).

The reference is ``if_multi_step_ref`` run on the CPU copy of the input (the definition) and the
same reference on the CUDA tensors: bit-identical for every T, since
``functional.expected_current`` divides by a 0-dim tensor T (not a Python int, which CUDA's div
kernel would turn into a multiplication by 1/T).
"""
import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
pytest.importorskip("cupy")

from cuda_host import subnormal_case  # noqa: E402
from sj_qvm import QVMIFNode  # noqa: E402
from sj_qvm._compat import functional, surrogate  # noqa: E402
from sj_qvm.functional import if_multi_step_ref, matched_v0  # noqa: E402
from sj_qvm.ops.if_loop import backend  # noqa: E402
from sj_qvm.ops.if_loop import if_rate_cupy  # noqa: E402
from sj_qvm.ops.if_loop.autograd import if_multi_step_cupy  # noqa: E402
from sj_qvm.ops.if_loop.cupy import LAUNCHES  # noqa: E402

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
    assert backend.device_reason(DEV) is None  # the first run (a training step) agreed


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
    assert backend.device_reason(DEV) is None  # the device's first run, before counting
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
    from sj_qvm.ops.if_loop import if_constant_cupy, if_rate_cupy  # noqa: PLC0415
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


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
def test_subnormal_theta_and_x_are_exact(current, v_init):
    """CuPy compiles with -ftz=true; the forward's PTX keeps subnormals, so subnormal theta, q and
    states give the CPU reference's spikes, v and v_seq bit for bit (the levels of z, too), and
    x = 2e-39 under theta = 3e-39 does not fire at step 1 (h_1 = -1e-39, not a flushed -0)."""
    T = 4
    x, theta, z = subnormal_case(T, DEV)
    v0, strict = matched_v0(v_init, theta)
    got = if_multi_step_cupy(x, v0, theta, strict, current, store_v_seq=True)
    want = if_multi_step_ref(x.cpu(), v0, theta, strict, current, store_v_seq=True)
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    level = {"floor": torch.floor(z), "round": torch.floor(z + 0.5), "ceil": torch.ceil(z)}[v_init]
    counts = got[0].sum(0)[0].cpu()
    assert torch.equal(counts[:-2], level.clamp(0, T)) and (counts[-2:] == 0).all()
    tiny = torch.full((T, 1, 8), 2e-39)
    spikes = if_multi_step_cupy(tiny.to(DEV), 0.0, 3e-39, False, current)[0].cpu()
    assert torch.equal(spikes, if_multi_step_ref(tiny, 0.0, 3e-39, False, current)[0])
    assert spikes[:, 0, 0].tolist() == [0, 1, 1, 0]
    theta_t = torch.full((3, 1), theta, device=DEV)  # a tensor theta, and the count kernel
    rate, v = if_rate_cupy(x[0], T, v0, theta_t[:1], strict)
    assert torch.equal((rate * T / theta).round().cpu(), counts.expand(2, -1))


def test_a_0dim_cpu_theta_is_moved_and_other_devices_are_refused():
    x = torch.rand(4, 3, 3, 8, device=DEV)
    got = if_multi_step_cupy(x, torch.tensor(0.25), torch.tensor(0.7))  # as torch's own ops
    want = if_multi_step_ref(x, 0.25, 0.7)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(ValueError, match="v_threshold is on cpu but the input is on cuda"):
        if_multi_step_cupy(x, 0.0, torch.ones(3, 1))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_tensors_on_cuda1_with_cuda0_current():
    """The module loads on cuda:1 (not on the current cuda:0), the kernels run there on its
    current stream, forward and backward; theta on cuda:0 is refused."""
    dev1 = torch.device("cuda:1")
    torch.cuda.set_device(0)
    x = (torch.rand(5, 4, 3, 8, device=dev1) * 1.2).requires_grad_()
    theta = torch.nn.Parameter(torch.tensor([0.5, 0.7, 0.9], device=dev1).view(3, 1))
    out = if_multi_step_cupy(x, 0.5 * theta, theta, False, "expected", surrogate.ATan(),
                             store_v_seq=True)
    g = [torch.randn_like(o) for o in out]
    grads = torch.autograd.grad(sum((o * gi).sum() for o, gi in zip(out, g)), (x, theta))
    xc, thc = _cpu(x).requires_grad_(), _cpu(theta).requires_grad_()
    ref = if_multi_step_ref(xc, 0.5 * thc, thc, False, "expected", surrogate.ATan(),
                            store_v_seq=True)
    ref_grads = torch.autograd.grad(sum((o * gi.cpu()).sum() for o, gi in zip(ref, g)), (xc, thc))
    assert torch.cuda.current_device() == 0 and out[0].device == dev1
    for a, b in zip(out, ref):
        assert torch.equal(a.cpu(), b.detach())
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="v_threshold is on cuda:0 but the input is on cuda:1"):
        if_multi_step_cupy(x.detach(), 0.0, torch.ones(3, 1, device="cuda:0"))


def test_cuda_graph_capture_and_replay():
    """After a warm-up (which loads the module and tries the device), a node's forward and a
    training step of the op are captured in CUDA graphs; each replay on new data in the static
    input equals the reference."""
    theta = torch.tensor([0.5, 0.7, 0.9], device=DEV)
    node = QVMIFNode(theta, "round", step_mode="m", backend="cupy").to(DEV)
    static_x = torch.rand(4, 8, 3, 7, 7, device=DEV)
    static_g = torch.randn_like(static_x)
    sg = surrogate.ATan()
    x_req = static_x.clone().requires_grad_()

    def train_step():
        out = if_multi_step_cupy(x_req, 0.1, 0.7, False, "instant", sg)[0]
        return torch.autograd.grad((out * static_g).sum(), x_req)[0]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the warm-up, as torch.cuda.graph's documentation asks
        for _ in range(2):
            functional.reset_net(node)
            with torch.no_grad():
                node(static_x)
            train_step()
    torch.cuda.current_stream().wait_stream(side)
    forward_graph, train_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    functional.reset_net(node)
    with torch.no_grad(), torch.cuda.graph(forward_graph):
        static_out = node(static_x)
    assert node.last_dispatch[0] == "cupy"
    with torch.cuda.graph(train_graph):
        static_gx = train_step()
    th = theta.view(3, 1, 1)
    for _ in range(3):
        with torch.no_grad():
            static_x.copy_(torch.rand_like(static_x) * 1.2)
            x_req.copy_(static_x)
        forward_graph.replay()
        train_graph.replay()
        torch.cuda.synchronize()
        want = if_multi_step_ref(static_x, 0.5 * th, th, False, "instant")[0]
        assert torch.equal(static_out, want)
        xr = static_x.clone().requires_grad_()
        ref = if_multi_step_ref(xr, 0.1, 0.7, False, "instant", sg)[0]
        (want_gx,) = torch.autograd.grad((ref * static_g).sum(), xr)
        torch.testing.assert_close(static_gx, want_gx, rtol=1e-5, atol=1e-5)


def test_parameter_theta_and_v0_in_no_grad_inference():
    """theta and V0 as nn.Parameters (they require grad) under no_grad: the kernels run on the
    Parameters' memory, as the node holds them, and equal the reference."""
    theta = torch.nn.Parameter(torch.tensor([0.5, 0.7, 0.9], device=DEV).view(3, 1, 1))
    v0 = torch.nn.Parameter(0.5 * theta.detach().clone())
    x = torch.rand(4, 8, 3, 7, 7, device=DEV)
    with torch.no_grad():
        got = if_multi_step_cupy(x, v0, theta, False, "expected", store_v_seq=True)
        want = if_multi_step_ref(x, v0, theta, False, "expected", store_v_seq=True)
        node = QVMIFNode(torch.nn.Parameter(theta.detach().view(3).clone()), "round",
                         step_mode="m", backend="cupy")
        out = node(x)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert torch.equal(out, if_multi_step_ref(x, v0, theta, False, "instant")[0])


WIDTH = {torch.float32: 4, torch.float16: 8, torch.bfloat16: 8}


@pytest.mark.parametrize("dtype", list(WIDTH), ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("offset", [0, 1, WIDTH[torch.float32] * 8])
def test_offset_views_pick_the_kernel_width_that_fits(dtype, offset):
    """x a contiguous view at ``offset`` elements into its storage: the vector kernel where the
    rows stay 32-byte aligned, the scalar one otherwise; both equal the reference, forward and
    backward (which kernels ran is asserted, by name)."""
    T, N = 4, 3 * 8 * 16
    base = (torch.rand(T * N + offset, device=DEV) * 1.4 - 0.2).to(dtype)
    x = base[offset:].view(T, 3, 8, 16)
    aligned = x.data_ptr() % 32 == 0
    tag = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    fwd = f"qvm_if_forward_{tag}_same_v{WIDTH[dtype] if aligned else 1}"
    bwd = f"qvm_if_backward_{tag}_v4"  # its arrays are all fresh (x is not among them)
    theta = torch.tensor([0.4, 0.9, 1.3], device=DEV).view(3, 1, 1)
    before = LAUNCHES.copy()
    xg = x.detach().requires_grad_()
    spike, v, _ = if_multi_step_cupy(xg, 0.5 * theta, theta, False, "instant", surrogate.ATan())
    g = torch.randn_like(spike)
    (gx,) = torch.autograd.grad((spike * g).sum(), xg)
    assert LAUNCHES[fwd] == before[fwd] + 1 and LAUNCHES[bwd] == before[bwd] + 1
    assert aligned == (offset != 1)  # an allocation is 512-byte aligned
    xr = x.float().detach().requires_grad_()
    ref = if_multi_step_ref(xr, 0.5 * theta, theta, False, "instant", surrogate.ATan())
    (gr,) = torch.autograd.grad((ref[0] * g.float()).sum(), xr)
    assert torch.equal(spike.float(), ref[0].detach()) and torch.equal(v, ref[1].detach())
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(gx.float(), gr, rtol=tol, atol=tol)


def test_offsets_past_2_to_the_31():
    """T * N > 2^31 elements (bf16 input, bool spikes: about 13 GB): the rows past element 2^31
    are read and written where they belong; the last 2^20 neurons of every step, against the
    reference on their slice (the neurons are independent)."""
    T, N = 3, (1 << 30) + 8
    free, _ = torch.cuda.mem_get_info()
    if free < 16 << 30:
        pytest.skip(f"needs about 16 GB of free GPU memory, {free >> 30} GB free")
    x = torch.rand(T, N, device=DEV, dtype=torch.bfloat16)
    assert x.numel() > 1 << 31
    before = LAUNCHES["qvm_if_forward_bf16_u8_v8"]
    with torch.no_grad():
        spike, v, _ = if_multi_step_cupy(x, 0.25, 0.6, spike_dtype=torch.bool)
    assert LAUNCHES["qvm_if_forward_bf16_u8_v8"] == before + 1
    tail = x[:, -(1 << 20):].float()
    want = if_multi_step_ref(tail, 0.25, 0.6)
    assert torch.equal(spike[:, -(1 << 20):], want[0].bool())
    assert torch.equal(v[-(1 << 20):], want[1])
    head = if_multi_step_ref(x[:, :4096].float(), 0.25, 0.6)
    assert torch.equal(spike[:, :4096], head[0].bool())
    del x, spike, v
    torch.cuda.empty_cache()
