"""The kernels' custom ops (opcheck, torch.compile), QVMIFNode on the kernel path and the backend
dispatch, without a GPU: the host build of the kernels (tests/cuda_host.py) stands in for CUDA."""
import logging
import math
import os
import subprocess
import sys

import pytest
import torch

from cuda_host import HERE, host  # noqa: F401 -- the fixture
from sj_qvm import QVMIFNode
from sj_qvm._compat import functional, surrogate
from sj_qvm.ops import diagnose, native, paths, verify
from sj_qvm.ops.if_loop import check, dispatch, launch, surrogates
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy


# ---- custom ops: registrations and torch.compile ----------------------------------------------
def test_opcheck(host):
    x = torch.rand(3, 2, 8) * 1.2
    theta = torch.tensor([0.5, 0.7]).view(2, 1)
    args = (x.requires_grad_(), theta.requires_grad_(), 0.0, None, 0.2, False, True, True,
            surrogates.SG_ATAN, 1.0, math.pi, False)
    torch.library.opcheck(torch.ops.sj_qvm.if_loop_forward.default, args)
    torch.library.opcheck(torch.ops.sj_qvm.if_loop_inference.default,
                          (x.detach(), None, 0.6, None, 0.0, True, False, False, torch.bool))


def test_torch_compile_matches_eager(host):
    def step(x, theta):
        spike, v, _ = if_multi_step_cupy(x, 0.5 * theta, theta, False, "expected",
                                         surrogate.Sigmoid())
        return spike.sum(0) + v

    x = torch.rand(4, 3, 2, 8).requires_grad_()
    theta = torch.tensor([0.5, 0.7]).view(2, 1).requires_grad_()
    g = torch.randn(3, 2, 8)
    out = step(x, theta)
    eager = (out,) + torch.autograd.grad((out * g).sum(), (x, theta))
    compiled_fn = torch.compile(step, backend="aot_eager", fullgraph=True)
    out = compiled_fn(x, theta)
    compiled = (out,) + torch.autograd.grad((out * g).sum(), (x, theta))
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


# ---- QVMIFNode on the kernel path (host build standing in for CUDA) ---------------------------
@pytest.fixture
def kernels_on_cpu(host, monkeypatch):
    """Let QVMIFNode's dispatch send CPU tensors to the kernel path (the host build)."""
    monkeypatch.setattr(dispatch, "unavailable_reason", lambda *a: None)
    return host


@pytest.mark.parametrize("v_init", ["floor", "round", "ceil", 0.3,
                                    torch.tensor([0.0, 0.2, 0.4]), torch.rand(3, 2, 2)])
@pytest.mark.parametrize("theta", [0.7, torch.tensor([0.5, 0.9, 1.3])])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_node_kernel_path_equals_torch_path(kernels_on_cpu, v_init, theta, current):
    fast = QVMIFNode(theta, v_init, current=current, step_mode="m", store_v_seq=True,
                     backend="cupy")
    slow = QVMIFNode(theta, v_init, current=current, step_mode="m", store_v_seq=True,
                     backend="torch")
    for batch in (4, 4, 3):  # the second call continues the state; then a new batch size
        if fast.v is not None and isinstance(fast.v, torch.Tensor) and fast.v.shape[0] != batch:
            functional.reset_net(fast)
            functional.reset_net(slow)
        x = torch.rand(5, batch, 3, 2, 2) * 1.2 - 0.1
        kernels_on_cpu.launches.clear()
        with torch.no_grad():
            a, b = fast(x), slow(x)
        assert kernels_on_cpu.launches and fast.last_dispatch[0] == "cupy"
        assert slow.last_dispatch[0] == "torch"
        assert torch.equal(a, b) and torch.equal(fast.v, slow.v)
        assert torch.equal(fast.v_seq, slow.v_seq)


def test_node_kernel_path_trains_theta_and_v0(kernels_on_cpu):
    x_data = torch.rand(4, 2, 3, 2, 2) * 1.2
    g = torch.randn(4, 2, 3, 2, 2)
    grads = {}
    for name in ("cupy", "torch"):
        theta = torch.nn.Parameter(torch.tensor([0.5, 0.6, 0.7]))
        v0 = torch.nn.Parameter(torch.full((3,), 0.25))
        node = QVMIFNode(theta, v0, step_mode="m", surrogate_function=surrogate.ATan(),
                         backend=name)
        x = x_data.clone().requires_grad_()
        (node(x) * g).sum().backward()
        assert node.last_dispatch[0] == name
        grads[name] = (x.grad, theta.grad, v0.grad)
    for a, b in zip(grads["cupy"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("current", ["instant", "expected"])
def test_a_training_step_moves_theta_and_v0_like_torch(kernels_on_cpu, current):
    """theta and V0 as per-channel nn.Parameters: one SGD step under a random upstream gradient
    through the kernels (host build: forward and backward kernels ran) moves them as the torch
    path does; then no_grad inference, with the Parameters still requiring grad, agrees too."""
    gen = torch.Generator().manual_seed(3)
    x_data = torch.rand(5, 4, 3, 2, 4, generator=gen) * 1.2
    g = torch.randn(5, 4, 3, 2, 4, generator=gen)
    result = {}
    for name in ("cupy", "torch"):
        theta = torch.nn.Parameter(torch.tensor([0.5, 0.6, 0.7]))
        v0 = torch.nn.Parameter(torch.tensor([0.25, 0.3, 0.35]))
        node = QVMIFNode(theta, v0, current=current, step_mode="m",
                         surrogate_function=surrogate.ATan(), backend=name)
        assert {id(p) for p in node.parameters()} == {id(theta), id(v0)}
        opt = torch.optim.SGD(node.parameters(), lr=0.5)
        kernels_on_cpu.launches.clear()
        x = x_data.clone().requires_grad_()
        (node(x) * g).sum().backward()
        opt.step()
        functional.reset_net(node)
        with torch.no_grad():
            after = node(x_data)
        assert node.last_dispatch[0] == name
        ran = {n.split("_")[2] for n in kernels_on_cpu.launches}
        assert ran == ({"forward", "backward"} if name == "cupy" else set())
        result[name] = (x.grad, theta.grad, v0.grad, theta.detach(), v0.detach(), after)
    for a, b in zip(result["cupy"][:5], result["torch"][:5]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(result["cupy"][5], result["torch"][5])
    theta_grad, v0_grad = result["torch"][1:3]
    assert (theta_grad.abs() > 1e-3).all() and (v0_grad.abs() > 1e-3).all()  # both moved


# ---- dispatch without CUDA --------------------------------------------------------------------
def test_backend_argument_and_fallback(caplog, monkeypatch):
    node = QVMIFNode(step_mode="m")
    assert node.backend == "auto" and node.supported_backends == ("auto", "torch", "cpu", "cupy")
    with pytest.raises(ValueError, match="backend must be one of"):
        QVMIFNode(backend="triton")
    monkeypatch.setattr(paths, "_logged", set())
    with caplog.at_level(logging.DEBUG, logger="sj_qvm"), native.disabled():
        node(torch.rand(2, 3))
        functional.reset_net(node)
        node(torch.rand(2, 3))
    fallbacks = [r for r in caplog.records if "falls back" in r.getMessage()]
    assert len(fallbacks) == 1 and "switched off" in fallbacks[0].getMessage()
    assert node.last_dispatch[0] == "torch"
    info = diagnose(node, show=False)
    assert info["last"]["0:QVMIFNode"] == ("auto", node.last_dispatch)
    assert isinstance(info["cupy"]["works"], bool)
    node.backend = "cupy"
    functional.reset_net(node)
    with pytest.raises(dispatch.BackendUnavailable, match="cannot run: input is on cpu"):
        node(torch.rand(2, 3))


class RaisingRunner:
    """A launch that raises, as one does on a GPU the module has no binary for."""

    def launch(self, name, threads, args, device):
        raise RuntimeError("CUDA_ERROR_NO_BINARY_FOR_GPU (injected)")


class WrongRunner:
    """The host build, but the forward's spikes come out zero."""

    def __init__(self, host):
        self.host = host

    def launch(self, name, threads, args, device):
        self.host.launch(name, threads, args, device)
        if name.startswith("qvm_if_forward"):
            args[1].zero_()


@pytest.fixture
def tried_on_cpu(host, monkeypatch):
    """The dispatch as on a GPU, for CPU inputs: ``"auto"`` picks the CUDA path, the input checks
    pass, and the first-use check goes through whatever runner the test registers for "cpu"
    (the host build by default)."""
    monkeypatch.setattr(dispatch, "input_reason", lambda *a: None)
    monkeypatch.setattr(paths, "native_path", lambda x: "cupy")
    monkeypatch.setattr(verify, "_status", {})
    monkeypatch.setattr(paths, "_logged", set())
    yield host
    launch.register_runner("cpu", host)


@pytest.mark.parametrize("runner", [RaisingRunner, WrongRunner])
def test_auto_falls_back_when_the_first_use_check_fails_and_cupy_raises(tried_on_cpu, caplog,
                                                                         runner):
    launch.register_runner("cpu", runner(tried_on_cpu) if runner is WrongRunner else runner())
    x = torch.rand(4, 2, 3, 8) * 1.2
    want = QVMIFNode(0.7, "round", step_mode="m", backend="torch")(x)
    node = QVMIFNode(0.7, "round", step_mode="m")
    with caplog.at_level(logging.DEBUG, logger="sj_qvm"), \
            pytest.warns(RuntimeWarning, match="cupy kernels failed their first-use check"):
        for _ in range(2):
            functional.reset_net(node)
            assert torch.equal(node(x), want)
    why = ("RuntimeError: CUDA_ERROR_NO_BINARY_FOR_GPU (injected)" if runner is RaisingRunner
           else "spikes (forward check) differs from the reference by up to 1")
    assert node.last_dispatch[0] == "torch" and why in node.last_dispatch[1]
    assert "if_loop, forward, cpu, torch.float32, instant, round, scalar, scalar" in \
        node.last_dispatch[1]
    fallbacks = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(fallbacks) == 1 and why in fallbacks[0]  # one logged reason
    node.backend = "cupy"
    functional.reset_net(node)
    with pytest.raises(dispatch.BackendUnavailable, match="failed their first-use check"):
        node(x)


def test_auto_takes_the_kernels_after_their_first_use_check_agrees(tried_on_cpu):
    """The converse: with the host build as the runner, the check (a forward on the boundary
    case) passes, once; then the node runs the kernels."""
    tried_on_cpu.launches.clear()
    node = QVMIFNode(0.7, "round", step_mode="m")
    x = torch.rand(4, 2, 3, 8) * 1.2
    out = node(x)
    assert node.last_dispatch[0] == "cupy"
    assert tried_on_cpu.launches == ["qvm_if_forward_f32_same_v4"] * 2  # the check, the call
    functional.reset_net(node)
    assert torch.equal(node(x), out) and len(tried_on_cpu.launches) == 3  # checked once only
    c = check.Combination("backward", "cpu", torch.float32, "expected", "round", "tensor",
                          "tensor", surrogates.snippet(surrogate.Sigmoid()))
    with torch.inference_mode():  # the check works whatever mode the call comes in
        assert verify.check("cupy", c.key(), lambda: check.run("cupy", c)) is None


def test_nothing_is_tried_inside_cuda_graph_capture(monkeypatch):
    """An untried device during capture: the reason says to warm up, and is not kept (the
    first call after the capture tries the device); a kernel's first launch is refused."""
    monkeypatch.setattr(dispatch, "_device_status", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    reason = dispatch.device_reason(torch.device("cuda", 0))
    assert "CUDA graph is being captured; run one call before capture" in reason
    assert dispatch._device_status == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    reason = verify.check("cupy", ("if_loop", "forward", "cuda:0"), lambda: None)
    assert "not been checked" in reason and "CUDA graph is being captured" in reason
    assert ("cupy", "if_loop", "forward", "cuda:0") not in verify._status
    from sj_qvm.ops.if_loop.cupy import CupyRunner  # noqa: PLC0415 -- imports no CuPy
    with pytest.raises(RuntimeError, match="qvm_if_count_f32_v1 has not run on cuda:0 yet and "
                                           "a CUDA graph is being captured"):
        CupyRunner().launch("qvm_if_count_f32_v1", 1, (), torch.device("cuda", 0))


def test_unsupported_surrogate_is_a_reason():
    assert surrogates.snippet(surrogate.Sigmoid(alpha=5.0)) == (surrogates.SG_SIGMOID, 5.0, 0.0)
    sid, p0, p1 = surrogates.snippet(surrogate.ATan(alpha=2.0))
    assert (sid, p0) == (surrogates.SG_ATAN, 1.0) and p1 == pytest.approx(math.pi)
    reason = surrogates.unsupported_reason(surrogate.PiecewiseQuadratic())
    assert "PiecewiseQuadratic has no CUDA snippet" in reason
    x = torch.rand(2, 3, device="meta", requires_grad=True)
    assert dispatch.unavailable_reason(x, surrogate.Sigmoid(), True).startswith("input is on meta")


def test_import_does_not_import_cupy():
    code = "import sys, sj_qvm, sj_qvm.ops.if_loop; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True,
                   env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
