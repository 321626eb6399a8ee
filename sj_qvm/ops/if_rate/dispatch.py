"""Which path counts a constant current's spikes (the rule of :mod:`sj_qvm.ops.paths`), each
compiled path checked on first use against the torch twin (:mod:`sj_qvm.ops.verify`) on the
boundary currents q = z θ / T, z = k and k + ½ and 0 (:mod:`sj_qvm.ops.if_loop.check`)."""
from __future__ import annotations

import torch

from .. import paths, verify
from ..if_loop import check, cpu
from ..if_loop import dispatch as loop
from .cpu import if_rate_cpu
from .cupy import if_count_cupy
from .torch import if_rate_torch

OP = "if_rate"


def _cpu_reason(q, v_init, v_threshold):
    return cpu.call_reason(q.unsqueeze(0), v_init, v_threshold, "if_rate")


def _cupy_reason(q):
    return loop.unavailable_reason(q, None, False)


def select(requested: str, q: torch.Tensor, v_init, v_threshold, *, strict: bool = False,
           rounding=None) -> tuple[str, str]:
    """``(path, reason)`` for :func:`run` on ``q: [N, *]`` (the check covers T = 1 and 4)."""
    c = check.Combination("forward", str(q.device), q.dtype, "expected",
                          rounding or ("ceil" if strict else "v0"), loop.form(v_threshold),
                          loop.form(v_init))
    key = (OP,) + c.key()[1:]

    def cpu_path():
        return (_cpu_reason(q, v_init, v_threshold)
                or verify.check("cpu", key, lambda: _check("cpu", c)))

    def cupy_path():
        return _cupy_reason(q) or verify.check("cupy", key, lambda: _check("cupy", c))

    return paths.select(OP, requested, q, {"cpu": cpu_path, "cupy": cupy_path})


def run(path: str, q: torch.Tensor, time_steps: int, v_init, v_threshold, strict: bool = False):
    """``(N * theta / T [N, *] in q's dtype, V_T [N, *])`` on ``path`` (V_T fp32 on cupy)."""
    if path == "torch":
        return if_rate_torch(q, time_steps, v_init, v_threshold, strict)
    if path == "cpu":
        res = if_rate_cpu(q, time_steps, v_init, v_threshold, strict)
        if res is None:
            raise paths.BackendUnavailable(f"{OP} backend='cpu' cannot run: "
                                           f"{_cpu_reason(q, v_init, v_threshold)}")
        out, v = res
    elif path == "cupy":
        counts, v = if_count_cupy(q, time_steps, v_init, v_threshold, strict)
        th = v_threshold.to(q.dtype) if isinstance(v_threshold, torch.Tensor) else v_threshold
        out = counts.to(q.dtype) * th / time_steps
    else:
        raise ValueError(f"path must be one of ('torch', 'cpu', 'cupy'), got {path!r}")
    return verify.tamper(OP, "forward", out), v


def if_rate(q: torch.Tensor, time_steps: int, v_init, v_threshold, strict: bool = False, *,
            backend: str = "auto"):
    """:func:`select`, then :func:`run`: ``(rate, V_T, (path, reason))``. No autograd."""
    chosen = select(backend, q, v_init, v_threshold, strict=strict)
    return (*run(chosen[0], q, time_steps, v_init, v_threshold, strict), chosen)


def _check(path: str, c) -> None:
    x, v0, theta, strict, _ = check.case(c)
    q = x[0] if path != "cupy" else x[0].float()
    for T in (1, 4):  # T = 1 and the case's T: the rate's division and its accumulation
        got = run(path, q, T, v0, theta, strict)
        want = run("torch", q.float() if path == "cupy" else q, T, v0, theta, strict)
        verify.compare(f"the rate at T={T}", got[0].to(want[0].dtype), want[0])
        verify.compare(f"V_T at T={T}", got[1].to(want[1].dtype), want[1])
