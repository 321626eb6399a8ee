"""Every op package has one file per path, with the same names (reference, torch, cpu, cupy where
the op has a CUDA kernel, dispatch), and every path has its reference twin's signature; the rate
op's paths equal its twin bit for bit at the boundary currents z = k, k + 1/2 and 0."""
import importlib
import inspect
import itertools

import pytest
import torch

from sj_qvm.ops import native
from sj_qvm.ops.if_loop.check import Z

PACKAGES = {  # op -> (reference twin, the paths' functions with its signature)
    "if_loop": ("reference.if_multi_step_ref",
                ["torch.if_multi_step_torch", "torch.if_multi_step_bptt_torch",
                 "cupy.if_multi_step_cupy", "dispatch.if_multi_step_inference",
                 "dispatch.if_multi_step_bptt"]),
    "if_rate": ("reference.if_rate_ref", ["torch.if_rate_torch"]),
    "quant_relu": ("reference.quant_relu_ref", ["torch.quant_relu"]),
}


def _get(op: str, dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f"sj_qvm.ops.{op}.{module}"), name)


@pytest.mark.parametrize("op", sorted(PACKAGES))
def test_each_op_package_has_the_same_files_and_twin_signatures(op):
    for path in ("reference", "torch", "cpu", "dispatch"):
        importlib.import_module(f"sj_qvm.ops.{op}.{path}")
    ref, fast = PACKAGES[op]
    want = list(inspect.signature(_get(op, ref)).parameters)
    for f in fast:
        got = list(inspect.signature(_get(op, f)).parameters)
        assert got[:len(want)] == want, f  # the cupy path adds spike_dtype at the end


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("strict", [False, True])
def test_rate_paths_equal_the_rate_twin_at_the_boundaries(dtype, strict):
    from sj_qvm.ops.if_rate import if_rate_cpu, if_rate_ref, if_rate_torch
    for T, per_channel in itertools.product((1, 3, 4), (False, True)):
        theta = (torch.tensor([0.5, 0.75, 1.5], dtype=dtype).view(3, 1) if per_channel
                 else torch.tensor(0.75, dtype=dtype))
        q = (torch.tensor(Z, dtype=dtype) * theta / T).expand(3, len(Z)).contiguous()
        th = theta if per_channel else theta.item()
        v0 = 0.5 * th
        want = if_rate_ref(q, T, v0, th, strict)
        paths = [if_rate_torch(q, T, v0, th, strict)]
        if native.available():
            paths.append(if_rate_cpu(q, T, v0, th, strict))
        for got in paths:
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # the converse: another V0 gives another rate, so the comparison is not vacuous
    assert not torch.equal(if_rate_torch(q, T, 0.0, th, strict)[0], want[0])
