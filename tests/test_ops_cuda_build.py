"""The CUDA kernels without a GPU: they compile (nvcc for sm_80/sm_90, NVRTC with CuPy's options),
and their arithmetic, built for the host from the same ``if_loop.cuh``, equals the torch reference.

The host build (tests/if_loop_host.cpp, g++) runs each kernel's per-thread body for every thread
in turn. It is registered as the CPU runner of ``sj_qvm.ops.if_loop.launch``, so these tests go
through the same custom ops, argument preparation, autograd formula and ``torch.compile`` path as
the GPU does; only CuPy's launch and the fp16 hardware conversions differ.
"""
import ctypes
import glob
import inspect
import os
import re
import subprocess

import pytest
import torch

from cuda_host import NVCC, OPS_DIR, host, subnormal_case  # noqa: F401 -- the fixture
from sj_qvm._compat import surrogate
from sj_qvm.functional import if_multi_step_ref, matched_v0
from sj_qvm.ops import kernel_args
from sj_qvm.ops.if_loop import cupy as cupy_mod
from sj_qvm.ops.if_loop import launch
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy

KERNELS = sorted(
    [f"qvm_if_forward_{d}_{s}_v{v}" for d, w in (("f32", 4), ("f16", 8), ("bf16", 8))
     for s in ("same", "u8") for v in (1, w)]
    + [f"qvm_if_backward_{d}_v{v}" for d in ("f32", "f16", "bf16") for v in (1, 4)]
    + [f"qvm_if_count_{d}_v{v}" for d, w in (("f32", 4), ("f16", 8), ("bf16", 8)) for v in (1, w)])


# ---- compilation ------------------------------------------------------------------------------
@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_nvcc_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    cmd = [NVCC, "-c", os.path.join(OPS_DIR, "if_loop.cu"), "-o", str(tmp_path / "if_loop.o"),
           "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-Werror", "all-warnings", "-Xptxas", "-v"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for arch in ("sm_80", "sm_90"):
        compiled = re.findall(rf"Compiling entry function '(\w+)' for '{arch}'", r.stderr)
        assert sorted(compiled) == KERNELS
    spills = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores", r.stderr)
    assert len(spills) == 2 * len(KERNELS) and all(s == ("0", "0") for s in spills), r.stderr


def _libnvrtc():
    import torch as _t
    site = os.path.dirname(os.path.dirname(_t.__file__))
    cands = sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*"))
                   + glob.glob("/usr/local/cuda/lib64/libnvrtc.so*"))
    cands = [c for c in cands if "builtins" not in c and ".alt." not in c]
    return cands[0] if cands else None


def _nvrtc_ptx(options, src=None):
    """PTX of ``src`` (default: ``if_loop.cu``) compiled by NVRTC with ``options`` (asserts that
    it compiles)."""
    nvrtc = ctypes.CDLL(_libnvrtc())
    prog = ctypes.c_void_p()
    src = cupy_mod.SOURCE.read_bytes() if src is None else src
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"if_loop.cu", 0, None, None) == 0
    opts = [o.encode() for o in options]
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert rc == 0, log.value.decode()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def _entries(ptx):
    """``{kernel name: its PTX body}``."""
    parts = re.split(r"\.visible \.entry (\w+)\(", ptx)[1:]
    return dict(zip(parts[::2], parts[1::2]))


@pytest.mark.skipif(_libnvrtc() is None, reason="libnvrtc not found")
def test_nvrtc_compiles_the_source_with_the_options_cupy_gives_it():
    """What cupy.RawModule does on the GPU machine: NVRTC, no CUDA headers, our options and then
    CuPy's, -ftz=true among them. The forward and count kernels still compute exactly (no .ftz
    instruction: subnormals are kept, as on the CPU), and the expected current's mean divides
    IEEE-exactly (div.rn.f32); the backward's arithmetic is CuPy's -ftz (div.rn.ftz.f32)."""
    entries = _entries(_nvrtc_ptx(cupy_mod.cupy_nvrtc_options("compute_90")))
    assert sorted(entries) == KERNELS
    for name, body in entries.items():
        if "backward" in name:
            assert "setp.ge.f32" in body and "setp.gt.f32" in body  # the firing rule, exact
            assert ".ftz.f32" in body  # the rest as CuPy compiles it
        else:
            assert "div.rn.f32" in body and "add.rn.f32" in body and "sub.rn.f32" in body
            assert not re.search(r"\.ftz\b", body), name


@pytest.mark.skipif(_libnvrtc() is None, reason="libnvrtc not found")
def test_cupy_ftz_wins_over_ours():
    """The converse: plain C arithmetic under CuPy's options flushes, even after our own
    -ftz=false (NVRTC keeps the last value), which is why if_float.cuh writes PTX."""
    plain = b'extern "C" __global__ void k(float* a) { a[0] = (a[1] - a[2]) / a[3]; }'
    ptx = _nvrtc_ptx(("-ftz=false",) + cupy_mod.cupy_nvrtc_options("compute_90"), plain)
    assert "sub.ftz.f32" in ptx and "div.rn.ftz.f32" in ptx


# ---- 16-bit conversions -----------------------------------------------------------------------
def test_half_and_bf16_conversions_match_torch(host):
    lib = host.lib
    for name in ("qvm_half_to_float", "qvm_bf16_to_float"):
        getattr(lib, name).restype = ctypes.c_float
    for name in ("qvm_float_to_half", "qvm_float_to_bf16"):
        getattr(lib, name).restype = ctypes.c_ushort
        getattr(lib, name).argtypes = [ctypes.c_float]
    bits = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16)
    for to_float, dtype in (("qvm_half_to_float", torch.float16),
                            ("qvm_bf16_to_float", torch.bfloat16)):
        want = bits.view(dtype).float()
        got = torch.tensor([getattr(lib, to_float)(ctypes.c_ushort(b)) for b in range(65536)])
        same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
        assert same.all()
    g = torch.Generator().manual_seed(0)
    floats = torch.cat([
        torch.randn(3000, generator=g) * 10.0 ** torch.randint(-9, 6, (3000,), generator=g),
        torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e30, -1e30, float("inf"),
                      2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -14, 1.0 + 2.0 ** -11,
                      1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8])])
    for from_float, dtype in (("qvm_float_to_half", torch.float16),
                              ("qvm_float_to_bf16", torch.bfloat16)):
        want = floats.to(dtype).view(torch.int16).to(torch.int32) & 0xFFFF
        got = torch.tensor([getattr(lib, from_float)(float(f)) for f in floats])
        assert torch.equal(got.to(torch.int32), want)


# ---- forward: bit-identical to the reference --------------------------------------------------
ROUNDINGS = ("floor", "round", "ceil")


def _v0(v_init, theta):
    return matched_v0(v_init, theta)[0]


def _boundary_seq(T, B, C, theta):
    """Static input with z = T q / theta at 0, every k and k + 1/2 up to T + 1 (all exact)."""
    z = torch.arange(0, 2 * T + 3, dtype=torch.float32) / 2  # 0, 0.5, ..., T + 1
    th = theta if isinstance(theta, float) else theta.view(1, C, 1)
    q = z.view(1, 1, -1) * th / T
    return q.expand(T, B, C, z.numel()).contiguous(), z


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_forward_at_the_boundaries_is_exact_and_qvm(host, current, v_init, per_channel):
    T, B, C = 4, 2, 3
    theta = torch.tensor([0.5, 0.75, 1.0]) if per_channel else 1.0
    x, z = _boundary_seq(T, B, C, theta)
    th = theta.view(C, 1) if per_channel else theta
    strict = matched_v0(v_init, 1.0)[1]
    got = if_multi_step_cupy(x, _v0(v_init, th), th, strict, current, store_v_seq=True)
    want = if_multi_step_ref(x, _v0(v_init, th), th, strict, current, store_v_seq=True)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    level = {"floor": torch.floor(z), "round": torch.floor(z + 0.5), "ceil": torch.ceil(z)}[v_init]
    assert torch.equal(got[0].sum(0), level.clamp(0, T).expand(B, C, -1))


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
def test_nan_never_fires_and_infinities_saturate_as_the_reference(host, current, v_init):
    """+inf -> T spikes, -inf -> 0, NaN -> 0 (also for the expected mean: no inf - inf)."""
    T = 4
    x = torch.full((T, 1, 8), 0.6)
    x[:, 0, 0], x[:, 0, 1], x[:, 0, 2] = float("nan"), float("inf"), float("-inf")
    x[2, 0, 4] = float("inf")
    strict = matched_v0(v_init, 1.0)[1]
    got = if_multi_step_cupy(x, _v0(v_init, 1.0), 1.0, strict, current)
    want = if_multi_step_ref(x, _v0(v_init, 1.0), 1.0, strict, current)
    assert torch.equal(got[0], want[0])
    n = got[0].sum(0)[0]
    assert n[0] == 0 and n[1] == T and n[2] == 0


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("n_last", [8, 7])  # N = 72: 4 neurons per thread; N = 63: one
def test_forward_random_inputs_bit_identical(host, current, v_init, n_last):
    x = torch.rand(5, 3, 3, n_last) * 1.4 - 0.2  # T = 5: the mean's division is inexact
    theta = torch.tensor([0.4, 0.9, 1.3]).view(3, 1)
    strict = matched_v0(v_init, 1.0)[1]
    host.launches.clear()
    got = if_multi_step_cupy(x, _v0(v_init, theta), theta, strict, current, store_v_seq=True)
    want = if_multi_step_ref(x, _v0(v_init, theta), theta, strict, current, store_v_seq=True)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert host.launches == [f"qvm_if_forward_f32_same_v{4 if n_last == 8 else 1}"]
    assert 0.1 < got[0].mean() < 0.9


@pytest.mark.parametrize("v0", [
    0.25,
    torch.tensor(0.25),                         # scalar tensor
    torch.tensor([0.1, 0.2, 0.3, 0.4]).view(4, 1),  # per channel
    torch.rand(4, 6),                           # per neuron, shared over the batch
    torch.rand(3, 4, 6),                        # a full state
    torch.rand(3, 1, 6),                        # broadcast in the middle: materialized
])
def test_every_v0_form(host, v0):
    x = torch.rand(4, 3, 4, 6)
    got = if_multi_step_cupy(x, v0, 0.8)
    want = if_multi_step_ref(x, v0, 0.8)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_index_form():
    shape = torch.Size([3, 4, 5])
    t, div, mod = kernel_args.index_form(torch.arange(4.0).view(4, 1), shape)
    assert (div, mod) == (5, 4) and t.shape == (4,)
    t, div, mod = kernel_args.index_form(torch.arange(20.0).view(4, 5), shape)
    assert (div, mod) == (1, 20)
    t, div, mod = kernel_args.index_form(torch.tensor(2.0), shape)
    assert (div, mod) == (1, 1)
    t, div, mod = kernel_args.index_form(torch.ones(3, 1, 5), shape)
    assert (div, mod) == (1, 60) and t.numel() == 60
    with pytest.raises(ValueError, match="broadcast"):
        kernel_args.index_form(torch.ones(2), shape)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_half_inputs_equal_the_fp32_reference_on_the_upcast_input(host, dtype, current):
    x = (torch.rand(6, 2, 3, 8) * 1.4 - 0.2).to(dtype)
    theta = torch.tensor([0.4, 0.7, 0.9]).view(3, 1)
    spike, v, v_seq = if_multi_step_cupy(x, 0.5 * theta, theta, False, current, store_v_seq=True)
    want = if_multi_step_ref(x.float(), 0.5 * theta, theta, False, current, store_v_seq=True)
    assert spike.dtype == dtype and v.dtype == torch.float32 and v_seq.dtype == torch.float32
    assert torch.equal(spike.float(), want[0]) and torch.equal(v, want[1])
    assert torch.equal(v_seq, want[2])
    # Against the reference run in the 16-bit dtype itself, only close: it keeps V in 16 bits,
    # so a few spikes move (and V with them, by theta).
    low = if_multi_step_ref(x, (0.5 * theta).to(dtype), theta.to(dtype), False, current)
    assert (low[0] != spike).float().mean() < 0.05
    assert ((low[1].float() - v).abs() > 0.05).float().mean() < 0.1


@pytest.mark.parametrize("spike_dtype", [torch.bool, torch.uint8])
def test_byte_spikes(host, spike_dtype):
    x = torch.rand(4, 5, 8)
    spike, v, _ = if_multi_step_cupy(x, 0.0, 0.6, spike_dtype=spike_dtype)
    want = if_multi_step_ref(x, 0.0, 0.6)
    assert spike.dtype == spike_dtype and torch.equal(spike.float(), want[0])
    assert torch.equal(v, want[1])
    x.requires_grad_()
    with pytest.raises(ValueError, match="no gradient"):
        if_multi_step_cupy(x, 0.0, 0.6, surrogate_function=surrogate.Sigmoid(),
                           spike_dtype=spike_dtype)


# ---- backward: the gradients of x, V0 and theta -----------------------------------------------
def _grads(fn, x, v0, theta, strict, current, sg, detach, seed=1):
    spike, v, v_seq = fn(x, v0, theta, strict, current, sg, detach, True)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in (spike, v, v_seq))
    return (spike, v) + torch.autograd.grad(loss, (x, v0, theta))


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
@pytest.mark.parametrize("sg", [surrogate.Sigmoid(), surrogate.ATan(alpha=3.0)],
                         ids=["Sigmoid", "ATan"])
@pytest.mark.parametrize("detach", [False, True])
def test_gradients_match_the_reference(host, current, v_init, sg, detach):
    x = (torch.rand(5, 3, 4, 8) * 1.4 - 0.2).requires_grad_()
    theta = torch.tensor([0.4, 0.7, 0.9, 1.3]).view(4, 1).requires_grad_()
    v0 = (matched_v0(v_init, theta.detach())[0] + torch.zeros(4, 1)).requires_grad_()
    strict = matched_v0(v_init, 1.0)[1]
    got = _grads(if_multi_step_cupy, x, v0, theta, strict, current, sg, detach)
    want = _grads(if_multi_step_ref, x, v0, theta, strict, current, sg, detach)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for a, b in zip(got[2:], want[2:]):
        assert a.shape == b.shape and b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradients_at_boundary_inputs(host):
    """h = 0 exactly (z an integer): the surrogate's peak, for both firing rules."""
    x, _ = _boundary_seq(4, 2, 3, 1.0)
    x.requires_grad_()
    for strict in (False, True):
        v0 = torch.full((3, 1), 1.0 if strict else 0.0, requires_grad=True)
        theta = torch.ones(3, 1, requires_grad=True)
        got = _grads(if_multi_step_cupy, x, v0, theta, strict, "expected", surrogate.Sigmoid(),
                     False)
        want = _grads(if_multi_step_ref, x, v0, theta, strict, "expected", surrogate.Sigmoid(),
                      False)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gradients_are_close(host, dtype):
    x = (torch.rand(4, 2, 3, 8) * 1.4 - 0.2).to(dtype).requires_grad_()
    theta = torch.tensor([0.4, 0.7, 0.9]).view(3, 1).requires_grad_()
    v0 = torch.zeros(3, 1, requires_grad=True)
    sg = surrogate.Sigmoid()
    got = _grads(if_multi_step_cupy, x, v0, theta, False, "instant", sg, False)
    x32 = x.detach().float().requires_grad_()
    want = _grads(if_multi_step_ref, x32, v0, theta, False, "instant", sg, False)
    assert got[2].dtype == dtype
    # The spikes' upstream gradient is rounded to the 16-bit dtype (in torch too), then fp32.
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(got[2].float(), want[2], rtol=tol, atol=tol)
    torch.testing.assert_close(got[3], want[3], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got[4], want[4], rtol=1e-2, atol=1e-2)


def test_gradient_only_through_v_without_surrogate(host):
    x = torch.rand(3, 2, 8, requires_grad=True)
    got = if_multi_step_cupy(x, 0.0, 0.5)[1]
    want = if_multi_step_ref(x, 0.0, 0.5)[1]
    (ga,) = torch.autograd.grad(got.sum(), x)
    (gb,) = torch.autograd.grad(want.sum(), x)
    assert torch.equal(ga, gb)


# ---- subnormal currents, states and thresholds ------------------------------------------------
@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("v_init", ROUNDINGS)
def test_subnormal_theta_and_x_are_exact(host, current, v_init):
    """theta and q subnormal: spikes, v and v_seq bit-identical to the reference, and the counts
    the levels of z (floor / round / ceil); x = 2e-39 under theta = 3e-39 does not fire at the
    first step (h_1 = -1e-39, which a flush to -0 would make fire)."""
    T = 4
    x, theta, z = subnormal_case(T)
    v0, strict = matched_v0(v_init, theta)
    got = if_multi_step_cupy(x, v0, theta, strict, current, store_v_seq=True)
    want = if_multi_step_ref(x, v0, theta, strict, current, store_v_seq=True)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    level = {"floor": torch.floor(z), "round": torch.floor(z + 0.5), "ceil": torch.ceil(z)}[v_init]
    counts = got[0].sum(0)[0]
    assert torch.equal(counts[:-2], level.clamp(0, T)) and (counts[-2:] == 0).all()
    tiny = torch.full((T, 1, 8), 2e-39)
    spikes = if_multi_step_cupy(tiny, 0.0, 3e-39, False, current)[0]
    assert torch.equal(spikes, if_multi_step_ref(tiny, 0.0, 3e-39, False, current)[0])
    assert spikes[:, 0, 0].tolist() == [0, 1, 1, 0]  # h_1 = -1e-39: no spike at step 1


def test_cupy_nvrtc_options_are_what_the_installed_cupy_appends():
    """``cupy_nvrtc_options`` states CuPy's additions; check them against the installed CuPy's
    compiler source, where CuPy is installed (it imports without a GPU)."""
    compiler = pytest.importorskip("cupy.cuda.compiler")
    src = inspect.getsource(compiler)
    assert "options += ('-ftz=true',)" in src
    assert "options += ('--device-as-default-execution-space',)" in src
    assert {"-ftz=true", "--device-as-default-execution-space"} <= set(
        cupy_mod.cupy_nvrtc_options("sm_90"))
