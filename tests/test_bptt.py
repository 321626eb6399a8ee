"""The hand-written BPTT loop against its reference twin (plain autograd), under random upstream grads."""
import itertools

import pytest
import torch
import torch.nn as nn

from sj_qvm._compat import surrogate
from sj_qvm.functional import if_multi_step_ref
from sj_qvm.ops.if_loop.bptt import if_multi_step_bptt

CASES = list(itertools.product(["instant", "expected"], [False, True], [False, True],
                               ["scalar", "channel"]))


@pytest.mark.parametrize("current,strict,detach_reset,shape", CASES)
@pytest.mark.parametrize("sg", [surrogate.Sigmoid(), surrogate.ATan()])
def test_bptt_equals_reference(current, strict, detach_reset, shape, sg):
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
        s, v, vseq = fn(xs, v0, th, strict, current, sg, detach_reset, True)
        g = torch.randn_like(s, generator=torch.Generator().manual_seed(1))
        gv = torch.randn_like(v, generator=torch.Generator().manual_seed(2))
        ((s * g).sum() + (v * gv).sum()).backward()
        outs.append((s.detach(), v.detach(), vseq.detach(), xs.grad, th.grad, v0.grad))
    (s1, v1, q1, gx1, gt1, gv1), (s2, v2, q2, gx2, gt2, gv2) = outs
    assert torch.equal(s1, s2) and torch.equal(v1, v2) and torch.equal(q1, q2)
    assert 0 < s1.mean() < 1
    for a, b in ((gx1, gx2), (gt1, gt2), (gv1, gv2)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
        assert a.abs().sum() > 0


def test_bptt_needs_a_surrogate():
    with pytest.raises(ValueError, match="surrogate_function"):
        if_multi_step_bptt(torch.rand(2, 3), 0.0, 1.0)
