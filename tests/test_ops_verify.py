"""Kernels verified on first use (sj_qvm.ops.verify): an error injected into a compiled path's
forward or backward is caught by its first-use check, which switches the combination off, warns
naming it and the largest difference, and runs the reference instead (nothing wrong is
returned); an explicit backend raises. The converse: a correct kernel is checked once, then
trusted."""
import time

import pytest
import torch

from sj_qvm import QuantReLU, QVMIFNode, convert
from sj_qvm._compat import functional
from sj_qvm.functional import if_multi_step_ref
from sj_qvm.ops import native, paths, settings, verify
from sj_qvm.ops.if_loop import check

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"sj_qvm.ops._cpu not built: {native.IMPORT_ERROR}")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Every test starts with nothing checked, nothing logged, and checks on."""
    monkeypatch.setattr(verify, "_status", {})
    monkeypatch.setattr(verify, "TIMINGS", {})
    monkeypatch.setattr(paths, "_logged", set())
    with settings.configured(verify=("cpu", "cupy")):
        yield


def flip_first(t):
    t = t.clone()
    t.view(-1)[0] += 1.0
    return t


def _node(backend="auto"):
    return QVMIFNode(torch.tensor([0.5, 0.9, 1.3]), "round", step_mode="m", backend=backend)


def test_an_injected_forward_error_is_caught_and_the_reference_runs():
    x = torch.rand(4, 2, 3, 8) * 1.2
    want = if_multi_step_ref(x, 0.5 * torch.tensor([0.5, 0.9, 1.3]).view(3, 1),
                             torch.tensor([0.5, 0.9, 1.3]).view(3, 1))[0]
    node = _node()
    with verify.inject("if_loop", "forward", flip_first), \
            pytest.warns(RuntimeWarning, match=r"cpu kernels failed their first-use check on "
                         r"cpu, if_loop, forward, cpu, torch.float32, instant, round, tensor, "
                         r"tensor: spikes \(forward check\) differs from the reference by up to 1"):
        got = node(x)
    assert torch.equal(got, want)  # nothing wrong returned
    assert node.last_dispatch[0] == "torch" and "first-use check" in node.last_dispatch[1]
    functional.reset_net(node)
    before = native.CALLS["if_forward"]
    assert torch.equal(node(x), want) and native.CALLS["if_forward"] == before  # stays off
    with pytest.raises(paths.BackendUnavailable, match="failed their first-use check"):
        _node("cpu")(x)


def test_an_injected_backward_error_is_caught_and_the_reference_trains():
    x = (torch.rand(4, 2, 3, 8) * 1.2).requires_grad_()
    g = torch.randn(4, 2, 3, 8)
    ref = _node("torch")
    (ref(x) * g).sum().backward()
    want = x.grad.clone()
    x.grad = None
    node = _node()
    with verify.inject("if_loop", "backward", flip_first), \
            pytest.warns(RuntimeWarning, match=r"if_loop, backward, cpu, torch.float32.*dL/dx "
                         r"\(backward check\) differs from the reference by up to 1"):
        (node(x) * g).sum().backward()
    assert torch.equal(x.grad, want) and node.last_dispatch[0] == "torch"
    with torch.no_grad():  # the forward combination is another one, and passes
        functional.reset_net(node)
        node(x)
    assert node.last_dispatch[0] == "cpu"


def test_the_rate_kernel_is_checked_too():
    from nets import build  # noqa: PLC0415
    ann, x = build("cnn", 4, "round", dtype=torch.float32)
    snn = convert(ann)
    x_seq = x.unsqueeze(0).repeat(4, *[1] * x.ndim)
    with torch.no_grad():
        want = convert(ann, backend="torch")(x_seq)
        with verify.inject("if_rate", "forward", flip_first), \
                pytest.warns(RuntimeWarning, match="if_rate, forward, cpu, torch.float32, "
                                                   "expected, round"):
            got = snn(x_seq)
    assert torch.equal(got, want)
    nodes = [m for m in snn.modules() if isinstance(m, QVMIFNode)]
    assert all("counts only" not in m.last_dispatch[1] for m in nodes)  # the train ran


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_quant_relu_errors_are_caught(direction):
    x = (torch.rand(2, 3, 5) * 3 - 0.5).requires_grad_(direction == "backward")
    ref = QuantReLU(4, "round", [0.5, 1.0, 2.0], backend="torch")
    act = QuantReLU(4, "round", [0.5, 1.0, 2.0])
    want = ref(x)
    training = torch.enable_grad() if direction == "backward" else torch.no_grad()
    with training, verify.inject("quant_relu", direction, flip_first), \
            pytest.warns(RuntimeWarning, match=f"quant_relu, {direction}, cpu, torch.float32, "
                                               "round, tensor"):
        got = act(x)
        if direction == "backward":
            g = torch.randn_like(got)
            grads = torch.autograd.grad((got * g).sum(), (x, act.threshold))
            assert all(torch.equal(a, b) for a, b in zip(
                grads, torch.autograd.grad((want * g).sum(), (x, ref.threshold))))
    assert torch.equal(got, want) and act.last_dispatch[0] == "torch"


def test_a_correct_kernel_is_checked_once_and_fast():
    """The converse: no injection, no warning; one check per combination, timed."""
    x = torch.rand(4, 2, 3, 8)
    for current in ("instant", "expected"):
        for rounding in ("floor", "round", "ceil"):
            node = QVMIFNode(0.75, rounding, current=current, step_mode="m")
            for _ in range(2):
                functional.reset_net(node)
                node(x)
                assert node.last_dispatch[0] == "cpu"
    assert len(verify.TIMINGS) == 6 and not any(verify.status().values())
    # A generous bound for a shared test machine; the measured cost is in benchmarks/RESULTS.md.
    assert max(verify.TIMINGS.values()) < 0.5


def test_checks_can_be_turned_off():
    with settings.configured(verify=()), verify.inject("if_loop", "forward", flip_first):
        node = _node()
        node(torch.rand(4, 2, 3, 8))
    assert node.last_dispatch[0] == "cpu" and verify.status() == {}  # trusted unchecked


def test_every_combination_passes_on_this_machine():
    """The check itself against the real kernels: every dtype, current, rule and form."""
    from sj_qvm.ops.if_loop import surrogates  # noqa: PLC0415
    from sj_qvm._compat import surrogate  # noqa: PLC0415
    start = time.perf_counter()
    n = 0
    for direction in ("forward", "backward"):
        for dtype in (torch.float32, torch.float64):
            for current in ("instant", "expected"):
                for rounding in ("floor", "round", "ceil", "v0"):
                    for form in ("scalar", "tensor"):
                        sg = surrogates.snippet(surrogate.ATan()) if direction == "backward" \
                            else None
                        c = check.Combination(direction, "cpu", dtype, current, rounding, form,
                                              form, sg)
                        assert verify.check("cpu", c.key(), lambda: check.run("cpu", c)) is None
                        n += 1
    assert n == 64 and time.perf_counter() - start < 30
