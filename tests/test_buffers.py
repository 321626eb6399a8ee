"""Kernel output buffers: huge-page advice on large CPU buffers changes no value and no shape."""
import contextlib
import sys

import pytest
import torch

from sj_qvm import QVMIFNode
from sj_qvm._compat import functional
from sj_qvm.ops import buffers, native


def test_a_small_buffer_is_left_alone():
    t = buffers.empty((4, 8), torch.float32)
    assert t.shape == (4, 8) and t.dtype == torch.float32
    assert buffers.advise_huge(t) is False  # below HUGE_BYTES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
def test_a_large_buffer_is_advised_and_holds_what_is_written():
    n = buffers.HUGE_BYTES // 4 + 1000
    t = buffers.empty((n,), torch.float32)
    assert t.numel() == n
    t.copy_(torch.arange(n, dtype=torch.float32))
    assert t[-1].item() == n - 1 and t[0].item() == 0
    # The advice is taken wherever the kernel offers THP at all (always or madvise mode).
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        pytest.skip("no THP settings here")
    if "[never]" not in mode:
        assert buffers.advise_huge(t) is True


@pytest.mark.skipif(not native.available(), reason="compiled CPU kernels not built")
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_a_node_on_a_large_input_gives_the_same_spikes_and_gradients_as_the_reference(current):
    """[4, 8, 16, 128, 64] float32 = 32 MiB: spikes, h and g_x all go through advised buffers."""
    torch.manual_seed(0)
    x = (torch.rand(4, 8, 16, 128, 64) * 1.2).requires_grad_()
    g = torch.randn_like(x)
    outs = []
    for enabled in (True, False):
        node = QVMIFNode(1.0, 0.0, current=current, step_mode="m")
        x.grad = None
        before = native.CALLS["if_backward"]
        with contextlib.nullcontext() if enabled else native.disabled():
            s = node(x)
            (s * g).sum().backward()
        assert (native.CALLS["if_backward"] > before) == enabled  # the compiled path ran
        outs.append((s.detach(), x.grad.clone(), node.v.detach()))
        functional.reset_net(node)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][2], outs[1][2])
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-6)

