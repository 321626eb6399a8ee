"""The compiled BPTT backward that recomputes h_t = U_t - theta from the saved input and V_0
(ops/if_loop/cpu.py) against the same kernel reading the h the forward stored: the same
gradients bit for bit, under random upstream gradients, boundaries included."""
import itertools

import pytest
import torch

from sj_qvm._compat import surrogate
from sj_qvm.ops import native
from sj_qvm.ops.if_loop import cpu
from sj_qvm.ops.if_loop import if_multi_step_bptt

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"sj_qvm.ops._cpu not built: {native.IMPORT_ERROR}")


def _run(x, theta, v0, strict, current, sg, detach, seed=0):
    """Outputs and the gradients of x, theta, V_0 under a random loss on spikes, V_T and v_seq;
    an ``x`` broadcast over T (stride 0) is passed on as such, its one step the leaf."""
    broadcast = x.stride(0) == 0
    xs, th, v = (t.clone().requires_grad_() for t in (x[0] if broadcast else x, theta, v0))
    src = xs.expand(*x.shape) if broadcast else xs
    assert (src.stride(0) == 0) == broadcast
    s, vT, vseq = if_multi_step_bptt(src, v, th, strict, current, sg, detach, True)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=gen)).sum()
               for o in (s, vT, vseq))
    loss.backward()
    return [o.detach() for o in (s, vT, vseq)] + [xs.grad, th.grad, v.grad]


def _boundary_input(T, dtype, broadcast):
    """[T, 4, 3, 5] currents with z = x / theta at k and k + 1/2 for theta 0.5 (exact in binary),
    zeros, and random values; or one [4, 3, 5] current broadcast over T (stride 0)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(T, 4, 3, 5, generator=gen, dtype=torch.float64) * 1.5
    x[:, 0, 0] = 0.5      # z = 1 exactly
    x[:, 0, 1] = 0.25     # z = 1/2
    x[:, 1, 0] = 0.0
    x = x.to(dtype)
    return x[:1].expand(T, *x.shape[1:]) if broadcast else x


@pytest.mark.parametrize("current", ["instant", "expected"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("broadcast", [False, True])
def test_recomputed_h_gives_the_stored_h_gradients_bit_for_bit(current, dtype, broadcast,
                                                               monkeypatch):
    T = 4
    x = _boundary_input(T, dtype, broadcast)
    v0 = torch.full((4, 3, 5), 0.25, dtype=dtype)  # V_0 = theta / 2 for theta 0.5
    for strict, detach, per_channel, sg in itertools.product(
            (False, True), (False, True), (False, True), (surrogate.Sigmoid(), surrogate.ATan())):
        theta = (torch.tensor([0.5, 0.75, 1.0], dtype=dtype).view(3, 1) if per_channel
                 else torch.tensor(0.5, dtype=dtype))
        before = native.CALLS["if_backward"]
        got = _run(x, theta, v0, strict, current, sg, detach)
        with monkeypatch.context() as m:
            m.setattr(cpu, "recompute_max_t", lambda: 0)  # the forward stores h
            ref = _run(x, theta, v0, strict, current, sg, detach)
        assert native.CALLS["if_backward"] == before + 2
        for a, b in zip(got, ref, strict=True):
            assert torch.equal(a, b)
        assert got[3].abs().sum() > 0 and got[4].abs().sum() > 0


def test_the_forward_saves_the_input_not_an_h_sequence():
    x = torch.rand(4, 2, 8, requires_grad=True)
    s, _, _ = if_multi_step_bptt(x, torch.zeros(2, 8), torch.tensor(0.5), False, "instant",
                                 surrogate.Sigmoid(), False, False)
    saved = s.grad_fn.saved_tensors
    assert saved[0].data_ptr() == x.data_ptr() and saved[0].shape == x.shape
    assert not any(t is not None and t.shape == x.shape and t.data_ptr() != x.data_ptr()
                   for t in saved)


def test_an_input_changed_in_place_after_the_forward_is_refused():
    x = torch.rand(4, 2, 8, requires_grad=True)
    y = x * 1.0
    s, _, _ = if_multi_step_bptt(y, torch.zeros(2, 8), torch.tensor(0.5), False, "instant",
                                 surrogate.Sigmoid(), False, False)
    with torch.no_grad():
        y.add_(1.0)  # h recomputed from it would be wrong: autograd must refuse
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


@pytest.mark.parametrize("T", [cpu.recompute_max_t(), cpu.recompute_max_t() + 1])
def test_the_longest_recomputed_and_the_shortest_stored_sequence_match_the_torch_loop(T):
    """At the kernel's bound the blocks are 8 neurons (20 here: two whole and one part); one
    step more and the forward stores h. Both give the torch loop's gradients."""
    x = torch.rand(T, 20, dtype=torch.float64) * 0.1
    v0, theta = torch.zeros(20, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    got = _run(x, theta, v0, False, "instant", surrogate.ATan(), False)
    with native.disabled():
        ref = _run(x, theta, v0, False, "instant", surrogate.ATan(), False)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_the_kernel_refuses_a_recompute_without_its_input():
    g = torch.zeros(4, 8)
    with pytest.raises(ValueError, match="without h it needs x"):
        native._module.if_backward(0, 0, 8, 0, 0, 0, 0, g.data_ptr(), 0, 0, 0, 0.5, 1, 1, 8, 4,
                                   0, 0, 0, 0, 4.0, 0.0, 0, 1)
