"""The kernels' first run on a device, against their reference twin on that device.

:func:`run` takes one training step (forward and backward; theta and V0 per channel and
requiring grad, as ``QVMIFNode`` learns them) and one inference with bool spikes through
:func:`.autograd.if_multi_step_cupy`, and the same through
:func:`sj_qvm.functional.if_multi_step_ref`; it raises when a launch raises or a result differs
(spikes and V bit for bit, gradients to 1e-4). :mod:`.backend` runs it once per device before
``"auto"`` trusts the kernels there.
"""
from __future__ import annotations

import torch

from ..._compat import surrogate
from ...functional import if_multi_step_ref
from .autograd import if_multi_step_cupy


def _same(what: str, got: torch.Tensor, want: torch.Tensor, exact: bool) -> None:
    ok = torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    if not ok:
        raise RuntimeError(f"{what} differs from the reference on {got.device}")


def run(device: torch.device) -> None:
    """One training step and one inference on ``device``; raises on a failure (see above)."""
    sg = surrogate.Sigmoid()
    with torch.inference_mode(False), torch.enable_grad():  # whatever mode the caller is in
        g = torch.Generator().manual_seed(0)  # a CPU generator: the device's RNG is left alone
        x0 = (torch.rand(5, 2, 3, 8, generator=g) * 1.4 - 0.2).to(device)
        up = torch.randn(5, 2, 3, 8, generator=g).to(device)
        theta0 = torch.tensor([0.4, 0.9, 1.3]).view(3, 1).to(device)
        results = []
        for fn in (if_multi_step_cupy, if_multi_step_ref):
            x = x0.clone().requires_grad_()
            theta = theta0.clone().requires_grad_()
            v0 = (0.5 * theta0).requires_grad_()
            spike, v, _ = fn(x, v0, theta, False, "instant", sg)
            grads = torch.autograd.grad((spike * up).sum() + v.sum(), (x, v0, theta))
            results.append((spike.detach(), v.detach()) + grads)
        for what, a, b, exact in zip(("spikes", "V", "dL/dx", "dL/dV0", "dL/dtheta"),
                                     results[0], results[1], (True, True, False, False, False)):
            _same(f"the training step's {what}", a, b, exact)
    with torch.no_grad():
        spike, v, _ = if_multi_step_cupy(x0, 0.0, theta0, True, "expected", spike_dtype=torch.bool)
        want_spike, want_v, _ = if_multi_step_ref(x0, 0.0, theta0, True, "expected")
    _same("the inference's spikes", spike, want_spike.bool(), True)
    _same("the inference's V", v, want_v, True)


__all__ = ["run"]
