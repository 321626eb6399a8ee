"""Backends that say what they are (sj_qvm.ops.paths): "torch" never calls compiled code, "cpu"
never runs torch in its place, "auto" logs each fallback reason once, and last_dispatch names the
path that really ran, on QVMIFNode, QuantReLU and convert(..., backend=)."""
import logging

import pytest
import torch

from nets import build
from sj_qvm import QuantReLU, QVMIFNode, convert
from sj_qvm._compat import functional, surrogate
from sj_qvm.ops import diagnose, native, paths, settings
from sj_qvm.ops.if_loop import dispatch

needs_native = pytest.mark.skipif(not native.available(),
                                  reason=f"sj_qvm.ops._cpu not built: {native.IMPORT_ERROR}")


def total_calls() -> int:
    return sum(native.CALLS.values())


@pytest.fixture
def fresh_log(monkeypatch):
    monkeypatch.setattr(paths, "_logged", set())


def _run_all(backend):
    """A node's inference and training step, a QuantReLU's forward and backward, and a converted
    network (both schedules) on ``backend``; returns the outputs."""
    torch.manual_seed(0)  # each run sees the same inputs and networks
    x = torch.rand(4, 2, 3, 8) * 1.2
    node = QVMIFNode(torch.tensor([0.5, 0.9, 1.3]), "round", step_mode="m", backend=backend)
    out = [node(x)]
    functional.reset_net(node)
    xg = x.clone().requires_grad_()
    s = node(xg)
    out += [s, torch.autograd.grad((s * torch.randn_like(s)).sum() + node.v.sum(), xg)[0]]
    act = QuantReLU(4, "round", [0.5, 1.0, 2.0], backend=backend)
    xa = (torch.rand(2, 3, 5) * 3 - 0.5).requires_grad_()
    a = act(xa)
    out += [a, torch.autograd.grad((a * torch.randn_like(a)).sum(), (xa, act.threshold))]
    ann, xs = build("cnn", 4, "round", dtype=torch.float32)
    for schedule in ("per_sample", "per_step"):
        snn = convert(ann, schedule=schedule, backend=backend)
        with torch.no_grad():
            out.append(snn(xs.unsqueeze(0).repeat(4, *[1] * xs.ndim)))
    return out, node, act, snn


@needs_native
def test_torch_calls_no_compiled_code_and_cpu_gives_the_same_results():
    before = total_calls()
    want, node, act, snn = _run_all("torch")
    assert total_calls() == before  # not one compiled kernel ran
    assert node.last_dispatch[0] == act.last_dispatch[0] == "torch"
    assert all(m.last_dispatch[0] == "torch" for m in snn.modules() if isinstance(m, QVMIFNode))
    got, node, act, snn = _run_all("cpu")
    assert total_calls() > before
    assert node.last_dispatch[0] == act.last_dispatch[0] == "cpu"
    assert all(m.last_dispatch[0] == "cpu" for m in snn.modules() if isinstance(m, QVMIFNode))
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_cpu_raises_when_the_extension_is_missing_or_off(monkeypatch):
    x = torch.rand(4, 2, 3)
    with native.disabled():
        for make in (lambda: QVMIFNode(step_mode="m", backend="cpu"),
                     lambda: QuantReLU(4, backend="cpu")):
            before = total_calls()
            with pytest.raises(paths.BackendUnavailable, match="backend='cpu' cannot run: the "
                               "compiled CPU kernels are switched off"):
                make()(x)
            assert total_calls() == before
    monkeypatch.setattr(native, "_module", None)
    with pytest.raises(paths.BackendUnavailable, match="compiled CPU kernels are not loaded"):
        QVMIFNode(step_mode="m", backend="cpu")(x)
    node = QVMIFNode(step_mode="m")  # auto runs torch, and says why
    node(x)
    assert node.last_dispatch[0] == "torch" and "not loaded" in node.last_dispatch[1]


@needs_native
def test_cpu_raises_on_an_input_its_kernels_cannot_take():
    node = QVMIFNode(step_mode="m", backend="cpu")
    with pytest.raises(paths.BackendUnavailable, match="dtype torch.float16"):
        node(torch.rand(4, 2, 3, dtype=torch.float16))
    functional.reset_net(node)
    with pytest.raises(paths.BackendUnavailable, match="not one contiguous block"):
        node(torch.rand(4, 3, 2).transpose(1, 2))
    with pytest.raises(paths.BackendUnavailable, match="PiecewiseQuadratic has no CUDA snippet"):
        QVMIFNode(step_mode="m", backend="cpu", surrogate_function=surrogate.PiecewiseQuadratic())(
            torch.rand(4, 2, 3, requires_grad=True))
    with pytest.raises(paths.BackendUnavailable, match="quant_relu has no CUDA kernel"):
        QuantReLU(4, backend="cupy")(torch.rand(2, 3))


@needs_native
def test_auto_logs_each_fallback_reason_once_and_last_dispatch_is_true(fresh_log, caplog):
    node = QVMIFNode(step_mode="m")
    with caplog.at_level(logging.DEBUG, logger="sj_qvm"):
        for _ in range(3):
            functional.reset_net(node)
            node(torch.rand(4, 3, 2).transpose(1, 2))  # strided steps: torch
            assert node.last_dispatch[0] == "torch"
            assert "not one contiguous block" in node.last_dispatch[1]
            functional.reset_net(node)
            node(torch.rand(4, 2, 3, dtype=torch.float16))  # a dtype without a kernel
            assert node.last_dispatch[0] == "torch" and "float16" in node.last_dispatch[1]
            functional.reset_net(node)
            before = total_calls()
            node(torch.rand(4, 2, 3))
            assert node.last_dispatch[0] == "cpu" and total_calls() == before + 1
    fallbacks = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(fallbacks) == 2 and len(set(fallbacks)) == 2
    assert all(r.levelno == logging.INFO for r in caplog.records if "falls back" in r.getMessage())


def test_backend_is_checked_everywhere():
    for make in (lambda: QVMIFNode(backend="native"), lambda: QuantReLU(4, backend="native"),
                 lambda: convert(build("cnn", 4, "round")[0], backend="native")):
        with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'cpu', "
                                             r"'cupy'\), got 'native'"):
            make()


@needs_native
def test_diagnose_shows_settings_builds_checks_and_last_paths(capsys):
    node = QVMIFNode(0.5, "floor", step_mode="m")
    node(torch.rand(4, 2, 3))
    act = QuantReLU(4, backend="torch")
    act(torch.rand(2, 3))
    with settings.configured(max_threads=1):
        info = diagnose(node, act)
        assert info["settings"]["max_threads"] == 1 and native.threads() == 1
        assert info["settings"]["changed by"]["max_threads"] == "configure()"
    printed = capsys.readouterr().out
    assert info["cpu"]["built"] and info["cpu"]["simd"] in ("avx2", "sse2")
    assert info["cpu"]["pool_at_import"] == native.POOL_AT_IMPORT
    assert info["last"]["0:QVMIFNode"] == ("auto", node.last_dispatch)
    assert info["last"]["1:QuantReLU"] == ("torch", act.last_dispatch)
    assert "if_loop, forward, cpu, torch.float32, instant, floor" in printed
    assert "trusted" in printed and "backend='torch' was asked for" in printed
    assert isinstance(info["cupy"]["works"], bool) and info["cupy"]["why"]


def test_settings_are_checked_and_restored():
    before = settings.get()
    with pytest.raises(ValueError, match="verify must name paths among"):
        settings.configure(verify=("triton",))
    with pytest.raises(ValueError, match="max_threads must be an int >= 1 and <= 64"):
        settings.configure(max_threads=65)
    with pytest.raises(ValueError, match="SJ_QVM_VERIFY='gpu'"):
        settings._env_verify("gpu")
    assert settings._env_verify("0") == () and settings._env_verify("cupy") == ("cupy",)
    with settings.configured(native=False, verify=()):
        assert not native.available() and not settings.verifies("cpu")
    assert settings.get() == before


def test_the_twin_wrappers_keep_their_dispatch():
    """if_multi_step(..., backend=) returns the path it ran; torch on any device."""
    x = torch.rand(4, 2, 3)
    *out, chosen = dispatch.if_multi_step(x, 0.0, 0.5, backend="torch")
    assert chosen[0] == "torch"
    if native.available():
        *out2, chosen = dispatch.if_multi_step(x, 0.0, 0.5, backend="cpu")
        assert chosen[0] == "cpu" and all(torch.equal(a, b) for a, b in zip(out[:2], out2[:2]))
