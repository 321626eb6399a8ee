"""The CUDA kernels' edges on a GPU (skipped without CUDA and CuPy): Parameter theta and V0,
devices (a CPU 0-dim theta, cuda:1), CUDA-graph capture and replay, offset views and the kernel
width they get, offsets past 2^31 elements, and subnormal theta and x under CuPy's -ftz.
"""
import pytest
import torch

from cuda_host import GPU_ONLY, subnormal_case
from sj_qvm import QVMIFNode
from sj_qvm._compat import functional, surrogate
from sj_qvm.functional import if_multi_step_ref, matched_v0
from sj_qvm.ops.if_rate import if_rate_cupy
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy
from sj_qvm.ops.if_loop.cupy import LAUNCHES

pytestmark = GPU_ONLY
DEV = torch.device("cuda")
ROUNDINGS = ("floor", "round", "ceil")


def _cpu(t):
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


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
