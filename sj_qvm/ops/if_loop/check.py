"""The IF loop's first-use check (:mod:`sj_qvm.ops.verify`): a compiled path against
:func:`sj_qvm.functional.if_multi_step_ref` on a small deterministic input.

The input ``x: [T=4, 2, C=3, 8]``: batch row 0 holds a constant current q = z θ / T with z = k
and k + ½ for k = -1 .. 5, z = 0 and z = ¼, ¾ (exact in every dtype the kernels take, so the
spike at each boundary is decided by the firing rule alone); row 1 random currents (a CPU
generator with a fixed seed). θ is scalar (0.75) or per-channel ([0.5, 1, 1.5]) as the call's,
V0 the rule's (``floor`` 0, ``round`` θ/2, ``ceil`` θ with ``U > θ``, another V0 ¼ θ) in the
call's form. Forward: spikes, V_T and every V_t bit for bit. Backward: also dL/dx, dL/dV0,
dL/dθ under a random upstream gradient, to 1e-4 (float64: 1e-9; float16/bfloat16: 2e-2).
The CUDA kernels keep fp32 state, so their reference runs on the input upcast to fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..._compat import surrogate
from ...functional import if_multi_step_ref, matched_v0
from .. import verify

Z = [-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Combination:
    """What a kernel's code path depends on; one first-use check each."""
    direction: str          # "forward" (no autograd) or "backward" (a training step)
    device: str
    dtype: torch.dtype
    current: str            # "instant" or "expected"
    rounding: str           # "floor", "round", "ceil" or "v0" (another V0)
    theta: str              # "scalar" or "tensor"
    v0: str                 # "scalar" or "tensor"
    surrogate: Optional[tuple] = None  # (id, p0, p1) under autograd
    detach_reset: bool = False

    def key(self) -> tuple:
        return ("if_loop", self.direction, self.device, self.dtype, self.current, self.rounding,
                self.theta, self.v0, self.surrogate, self.detach_reset)


def _surrogate(snippet):
    """An SJ surrogate with the snippet's parameters (Sigmoid: alpha = p0; ATan: alpha = 2 p0)."""
    from . import surrogates  # noqa: PLC0415
    if not isinstance(snippet, tuple) or snippet[0] == surrogates.SG_SIGMOID:
        return surrogate.Sigmoid(alpha=snippet[1] if isinstance(snippet, tuple) else 4.0)
    return surrogate.ATan(alpha=2 * snippet[1])


def case(c: Combination):
    """``(x [4, 2, 3, 8], v_init, v_threshold, strict, upstream gradients)`` on c's device."""
    device, T = torch.device(c.device), 4
    g = torch.Generator().manual_seed(0)  # a CPU generator: the device's RNG is left alone
    theta = (torch.tensor([0.5, 1.0, 1.5]).view(3, 1) if c.theta == "tensor"
             else torch.tensor(0.75))
    z = torch.tensor([Z[0:8], Z[8:16], Z[4:12]], dtype=torch.float64)  # [C, 8]
    x = torch.empty(T, 2, 3, 8, dtype=torch.float64)
    x[:, 0] = (z * theta.double() / T).expand(T, 3, 8)
    x[:, 1] = (torch.rand(T, 3, 8, generator=g, dtype=torch.float64) * 1.4 - 0.2) * theta
    if c.rounding == "v0":
        v0, strict = 0.25 * theta, False
    else:
        v0, strict = matched_v0(c.rounding, theta)
    kind = torch.float32 if c.device.startswith("cuda") or c.dtype != torch.float64 else c.dtype
    v0 = torch.as_tensor(v0).to(kind)
    theta = theta.to(kind)
    if c.v0 == "tensor" and v0.numel() == 1:
        v0 = v0.reshape(()).expand(3, 1).clone()
    elif c.v0 == "scalar" and v0.numel() > 1:
        v0 = v0.flatten()[1]
    ups = [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((T, 2, 3, 8), (2, 3, 8),
                                                                       (T, 2, 3, 8))]
    to = lambda t: t.to(device)  # noqa: E731
    return (to(x.to(c.dtype)), to(v0) if c.v0 == "tensor" else v0.item(),
            to(theta) if c.theta == "tensor" else theta.item(), strict, [to(u) for u in ups])


def run(path: str, c: Combination) -> None:
    """Run ``path`` and the reference on :func:`case`; raises
    :class:`sj_qvm.ops.verify.Mismatch` (or the path's own error) on a difference."""
    from .dispatch import run as run_path  # noqa: PLC0415 -- it imports this module
    x, v0, theta, strict, ups = case(c)
    training = c.direction == "backward"
    sg = _surrogate(c.surrogate) if training else None
    results = []
    for fn in ("path", "reference"):
        xi = x.detach().float() if fn == "reference" and path == "cupy" else x.detach().clone()
        p = [t.detach().clone() if isinstance(t, torch.Tensor) else t for t in (v0, theta)]
        leaves, names = [], ["spikes", "V_T", "V_t"]
        if training:
            xi.requires_grad_()
            leaves = [xi] + [t.requires_grad_() for t in p if isinstance(t, torch.Tensor)]
            names += ["dL/dx"] + [f"dL/d{n}" for n, t in zip(("V0", "theta"), p)
                                  if isinstance(t, torch.Tensor)]
        args = (xi, p[0], p[1], strict, c.current, sg, c.detach_reset, True)
        if fn == "path":
            spike, v, v_seq = run_path(path, *args, needs_grad=training)
        else:
            spike, v, v_seq = if_multi_step_ref(*args)
        out = [spike.detach(), v.detach(), v_seq.detach()]
        if training:
            loss = sum((o.double() * u.to(o.device)).sum() for o, u in zip((spike, v, v_seq), ups))
            out += list(torch.autograd.grad(loss, leaves))
        results.append(out)
    tol = TOLERANCE.get(c.dtype, 1e-4)
    for i, (got, want) in enumerate(zip(*results)):
        verify.compare(f"{names[i]} ({c.direction} check)", got.to(want.dtype), want,
                       0.0 if i < 3 else tol)


__all__ = ["Combination", "case", "run"]
