"""The hand-written BPTT loops (torch and compiled) against their reference twin (plain autograd),
under random upstream gradients on every output: spikes, V_T and v_seq."""
import contextlib
import itertools

import pytest
import torch
import torch.nn as nn

from sj_qvm import QVMIFNode
from sj_qvm._compat import surrogate
from sj_qvm.functional import if_multi_step_ref
from sj_qvm.ops import native
from sj_qvm.ops.if_loop import if_multi_step_bptt

CASES = list(itertools.product(["instant", "expected"], [False, True], [False, True],
                               ["scalar", "channel"]))
# "torch": the loop of bptt.py; "compiled": the kernels of bptt_cpu.py (skipped where not built).
PATHS = ["torch", pytest.param("compiled", marks=pytest.mark.skipif(
    not native.available(), reason=f"sj_qvm.ops._cpu not built: {native.IMPORT_ERROR}"))]


@contextlib.contextmanager
def path(name):
    before = native.CALLS["if_backward"]
    with contextlib.nullcontext() if name == "compiled" else native.disabled():
        yield
    assert (native.CALLS["if_backward"] > before) == (name == "compiled")  # the path really ran


def _loss(s, v, vseq, seed):
    gen = torch.Generator().manual_seed(seed)
    g = [torch.randn(t.shape, dtype=t.dtype, generator=gen) for t in (s, v, vseq)]
    return (s * g[0]).sum() + (v * g[1]).sum() + (vseq * g[2]).sum()


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("current,strict,detach_reset,shape", CASES)
@pytest.mark.parametrize("sg", [surrogate.Sigmoid(), surrogate.ATan()])
def test_bptt_equals_reference(current, strict, detach_reset, shape, sg, name):
    torch.manual_seed(0)
    T, N, C = 5, 3, 4
    x = (torch.rand(T, N, C, 2, dtype=torch.float64) * 1.4 - 0.2)
    if shape == "scalar":
        theta0, v00 = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    else:
        theta0 = torch.tensor([0.5, 0.6, 0.8, 1.0], dtype=torch.float64).view(1, C, 1)
        v00 = torch.rand(1, C, 1, dtype=torch.float64) * 0.5
    outs = []
    for fn in (if_multi_step_ref, if_multi_step_bptt):
        xs = x.clone().requires_grad_()
        th = nn.Parameter(theta0.clone())
        v0 = nn.Parameter(v00.clone())
        with path(name) if fn is if_multi_step_bptt else contextlib.nullcontext():
            s, v, vseq = fn(xs, v0, th, strict, current, sg, detach_reset, True)
            _loss(s, v, vseq, 1).backward()
        outs.append((s.detach(), v.detach(), vseq.detach(), xs.grad, th.grad, v0.grad))
    (s1, v1, q1, gx1, gt1, gv1), (s2, v2, q2, gx2, gt2, gv2) = outs
    assert torch.equal(s1, s2) and torch.equal(v1, v2) and torch.equal(q1, q2)
    assert 0 < s1.mean() < 1
    for a, b in ((gx1, gx2), (gt1, gt2), (gv1, gv2)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
        assert a.abs().sum() > 0


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_a_loss_on_v_seq_alone_gets_the_reference_gradient(name, current):
    """A loss on ``v_seq`` only: the gradient through V_t, which a non-differentiable ``v_seq``
    (the old CPU paths) dropped to None."""
    torch.manual_seed(3)
    x = torch.rand(6, 2, 3, dtype=torch.float64) * 1.2 - 0.1
    g = torch.randn_like(x)
    grads = []
    for fn in (if_multi_step_ref, if_multi_step_bptt):
        xs = x.clone().requires_grad_()
        with path(name) if fn is if_multi_step_bptt else contextlib.nullcontext():
            _, _, vseq = fn(xs, 0.25, 0.5, False, current, surrogate.ATan(), False, True)
            (gx,) = torch.autograd.grad((vseq * g).sum(), xs)
        grads.append(gx)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("name", PATHS)
def test_node_v_seq_carries_the_gradient(name):
    """Through QVMIFNode: a loss on spikes, node.v and node.v_seq equals the reference's."""
    torch.manual_seed(4)
    x = torch.rand(4, 3, 2, 5, dtype=torch.float64)
    theta = torch.tensor([0.4, 0.9], dtype=torch.float64)
    results = []
    for use_ref in (True, False):
        xs = x.clone().requires_grad_()
        node = QVMIFNode(nn.Parameter(theta.clone()), "round", step_mode="m", store_v_seq=True)
        if use_ref:
            s, v, vseq = if_multi_step_ref(xs, node.initial_v(xs[0]), theta.view(2, 1),
                                           node.strict, "instant", node.surrogate_function,
                                           False, True)
            gx = torch.autograd.grad(_loss(s, v, vseq, 5), xs)
        else:
            with path(name):
                s = node(xs)
                gx = torch.autograd.grad(_loss(s, node.v, node.v_seq, 5), xs)
        results.append(gx[0])
    torch.testing.assert_close(results[1], results[0], rtol=1e-10, atol=1e-12)


def test_bptt_needs_a_surrogate():
    with pytest.raises(ValueError, match="surrogate_function"):
        if_multi_step_bptt(torch.rand(2, 3), 0.0, 1.0)
