"""The compiled IF kernels write V_0 into their state themselves (ops/if_loop/cpu.py ``state``):
every form V_0 takes gives the torch loop's spikes and V bit for bit, and the kernel, not a
torch pass, did the filling."""
import pytest
import torch

from sj_qvm.ops import native
from sj_qvm.ops.if_loop import cpu
from sj_qvm.ops.if_rate import if_rate_cpu
from sj_qvm.ops.if_loop.torch import if_multi_step_torch

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"sj_qvm.ops._cpu not built: {native.IMPORT_ERROR}")

SHAPE = (3, 4, 5, 7)  # [B, C, H, W]


def _forms(dtype):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, generator=g) * 0.9).to(dtype)  # noqa: E731
    return {"float": 0.25, "0-d tensor": torch.tensor(0.5, dtype=dtype),
            "per channel": r(4, 1, 1), "per column (runs of one)": r(7),
            "one per neuron (a previous state)": r(*SHAPE),
            "another dtype (filled in Python)": r(4, 1, 1).to(torch.float16)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_every_v0_form_gives_the_torch_loop_bit_for_bit(dtype, current, monkeypatch):
    x = (torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(1)) * 1.2).to(dtype)
    x[:, 0, 0] = 0.5  # boundaries: U reaches theta = 0.5 exactly with V_0 = 0
    fills = []
    real = cpu.native.call
    monkeypatch.setattr(cpu.native, "call",
                        lambda name, *a: fills.append(a[4]) or real(name, *a))
    for name, v0 in _forms(dtype).items():
        theta = torch.tensor([0.5, 0.75, 1.0, 0.5], dtype=dtype).view(4, 1, 1)
        s, v, _ = cpu.if_multi_step_cpu(x, v0, theta, current=current)
        v0_ref = v0.to(dtype) if isinstance(v0, torch.Tensor) else v0
        s_ref, v_ref, _ = if_multi_step_torch(x, v0_ref, theta, current=current)
        assert torch.equal(s, s_ref) and torch.equal(v, v_ref), name
        assert fills[-1] == (0 if "dtype" in name else 1), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_count_kernel_fills_v0_too(dtype):
    q = (torch.rand(*SHAPE, generator=torch.Generator().manual_seed(2)) * 1.2).to(dtype)
    theta = torch.tensor(0.5, dtype=dtype)
    for name, v0 in _forms(dtype).items():
        out, v = if_rate_cpu(q, 4, v0, theta, False)
        v0_ref = v0.to(dtype) if isinstance(v0, torch.Tensor) else v0
        s_ref, v_ref, _ = if_multi_step_torch(q.expand(4, *SHAPE), v0_ref, theta)
        assert torch.equal(out, s_ref.sum(0) * theta / 4) and torch.equal(v, v_ref), name
