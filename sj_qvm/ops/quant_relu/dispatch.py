"""Which path runs QuantReLU, and why (the rule of :mod:`sj_qvm.ops.paths`): ``"torch"`` (the
in-place chain and hand-written backward of :mod:`.torch`), ``"cpu"`` (the compiled kernels of
:mod:`.cpu`). There is no CUDA kernel: ``"cupy"`` raises, and ``"auto"`` runs torch on CUDA.

The ``"cpu"`` path is checked against :func:`.reference.quant_relu_ref` the first time it meets a
new combination (device, dtype, rounding, scalar or per-channel gamma, forward or backward) on
``x: [2, 3, 16]``: row 0 at z = x L / gamma = k and k + ½ and 0 (L = 4), row 1 random with NaN,
+inf and -inf (forward only: the reference's autograd chain has no gradient there to compare
with); the activation and dL/dx bit for bit, dL/dgamma to 1e-4 (float64: 1e-9).
"""
from __future__ import annotations

from numbers import Real
from typing import Optional

import torch

from .. import native, paths, verify
from ..if_loop.check import TOLERANCE, Z
from .torch import quant_relu_path
from .reference import quant_relu_ref

OP = "quant_relu"
BackendUnavailable = paths.BackendUnavailable


def cpu_reason(x: torch.Tensor, gamma, needs_grad: bool) -> Optional[str]:
    """Why the compiled kernels cannot take this call (``None``: they can)."""
    why = native.input_reason(x, "quant_relu_backward" if needs_grad else "quant_relu")
    if why is not None:
        return why
    if isinstance(gamma, torch.Tensor):
        if gamma.dtype != x.dtype or gamma.device != x.device:
            return (f"gamma is {gamma.dtype} on {gamma.device}, the input {x.dtype} on "
                    f"{x.device} (the kernels read gamma in the input's dtype)")
    elif not isinstance(gamma, Real):
        return f"gamma must be a float or a tensor, got {type(gamma).__name__}"
    return None


def _form(gamma) -> str:
    return "tensor" if isinstance(gamma, torch.Tensor) and gamma.numel() > 1 else "scalar"


def select(requested: str, x: torch.Tensor, gamma, levels: int, rounding: str,
           needs_grad: bool) -> tuple[str, str]:
    """``(path, reason)`` for :func:`.torch.quant_relu_path` on ``x: [B, *]``."""
    key = (OP, "backward" if needs_grad else "forward", str(x.device), x.dtype, rounding,
           _form(gamma))

    def cpu_path():
        return (cpu_reason(x, gamma, needs_grad)
                or verify.check("cpu", key, lambda: _check(key)))

    def cupy_path():
        return "quant_relu has no CUDA kernel (backend='torch' or 'auto' run it on CUDA)"

    return paths.select(OP, requested, x, {"cpu": cpu_path, "cupy": cupy_path},
                        warn_cuda=False)


def case(dtype: torch.dtype, gamma_form: str, device="cpu"):
    """``(x [2, 3, 16], gamma, upstream gradient)``, L = 4 (see the module docstring)."""
    g = torch.Generator().manual_seed(0)
    gamma = (torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1) if gamma_form == "tensor"
             else torch.tensor(2.0)).double()
    x = torch.empty(2, 3, 16, dtype=torch.float64)
    x[0] = torch.tensor(Z, dtype=torch.float64) * gamma.reshape(-1, 1) / 4
    x[1] = (torch.rand(3, 16, generator=g, dtype=torch.float64) * 2 - 0.5) * gamma.reshape(-1, 1)
    x[1, :, -3:] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    up = torch.randn(2, 3, 16, generator=g, dtype=torch.float64)
    return x.to(dtype).to(device), gamma.to(dtype).to(device), up.to(dtype).to(device)


def _check(key) -> None:
    _, direction, device, dtype, rounding, form = key
    x, gamma, up = case(dtype, form, device)
    training = direction == "backward"
    if training:
        x = x.nan_to_num(0.0, 0.0, 0.0)
    results = []
    for fn in (lambda a, b: quant_relu_path(a, b, 4, rounding, "cpu"),
               lambda a, b: quant_relu_ref(a, b, 4, rounding)):
        xi, gi = x.clone().requires_grad_(training), gamma.clone().requires_grad_(training)
        out = fn(xi, gi)
        grads = torch.autograd.grad((out * up).sum(), (xi, gi)) if training else ()
        results.append((out.detach(),) + tuple(grads))
    names = ("the activation", "dL/dx", "dL/dgamma")
    for i, (got, want) in enumerate(zip(*results)):
        verify.compare(f"{names[i]} ({direction} check)", got, want,
                       TOLERANCE[dtype] if i == 2 else 0.0)


__all__ = ["select", "cpu_reason", "case", "BackendUnavailable"]
