"""Compiled kernels prove themselves before they are trusted.

The first time a compiled path (``"cpu"`` or ``"cupy"``) is chosen for a new *combination* (op,
device, dtype, current, rounding, scalar or per-channel θ, forward or backward: whatever the
kernel's code path depends on), :func:`check` runs it on a small deterministic input that holds
the boundary values z = k, k + ½ and 0 and compares it with the op's torch reference on the same
device (spikes and V bit for bit, gradients to a tolerance). Then:

* it agrees: the combination is trusted for the process (the check ran once, in about a
  millisecond on the CPU build: ``benchmarks/RESULTS.md``);
* it differs, or raises: the combination is switched off for the process, a ``RuntimeWarning``
  names it and the largest difference, and the caller runs the reference instead
  (``backend="auto"``) or raises (an explicit ``backend="cpu"`` / ``"cupy"``). Nothing wrong is
  returned.

Which paths are checked is :mod:`.settings`' ``verify`` (default both; ``SJ_QVM_VERIFY=0`` in the
environment or ``settings.configure(verify=())`` turns the checks off). :func:`inject` is the
test hook: it corrupts a compiled path's outputs (forward or backward), as a broken kernel
would, so that tests can watch the check catch it.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Callable, Optional

import torch

from . import native, settings

_status: dict = {}   # combination -> None (trusted) or why it failed
TIMINGS: dict = {}   # combination -> seconds its check took
_faults: dict = {}   # (op, direction) -> fn(tensor) -> tensor


class Mismatch(AssertionError):
    """A compiled path's result differs from the reference."""


def compare(what: str, got: Optional[torch.Tensor], want: Optional[torch.Tensor],
            tol: float = 0.0) -> None:
    """Raise :class:`Mismatch` naming ``what`` and the largest difference unless ``got`` equals
    ``want`` (``tol == 0``: bit for bit, NaN equal to NaN) or is within ``tol * (1 + |want|)``."""
    if got is None and want is None:
        return
    if got is None or want is None or got.shape != want.shape:
        raise Mismatch(f"{what}: got {None if got is None else tuple(got.shape)}, the reference "
                       f"{None if want is None else tuple(want.shape)}")
    got, want = got.detach(), want.detach()
    if torch.equal(got, want) or (tol > 0 and torch.allclose(got, want, rtol=tol, atol=tol,
                                                             equal_nan=True)):
        return  # the common case, without the arithmetic below
    a, b = got.double().cpu(), want.double().cpu()
    same_nan = torch.isnan(a) & torch.isnan(b)
    diff = (a - b).abs().masked_fill(same_nan | (a == b), 0.0).nan_to_num(nan=float("inf"))
    bound = tol * (1 + b.abs().nan_to_num(nan=0.0, posinf=0.0))
    if (diff > bound).any():
        raise Mismatch(f"{what} differs from the reference by up to {diff.max().item():.3g}")


def check(path: str, combination: tuple, run: Callable[[], None]) -> Optional[str]:
    """Why ``path`` must not run ``combination`` (``None``: it may). ``run()`` compares the
    path with the reference (raising on a difference); it runs once per combination, and only
    where :mod:`.settings` checks ``path``. Inside CUDA graph capture an unchecked combination
    is refused, and not remembered (a check would synchronize the stream)."""
    key = (path,) + combination
    if key in _status:
        return _status[key]
    if not settings.verifies(path):
        return None
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return (f"the {path} kernels have not been checked on {describe(key)} and a CUDA graph "
                "is being captured; run one call before capture (a warm-up)")
    start = time.perf_counter()
    try:
        with torch.inference_mode(False), torch.enable_grad(), native.uncounted():
            run()
        _status[key] = None
    except Exception as e:  # noqa: BLE001 -- a mismatch, a compile or launch error
        why = f"{type(e).__name__}: {e}" if not isinstance(e, Mismatch) else str(e)
        _status[key] = (f"the {path} kernels failed their first-use check on "
                        f"{describe(key)}: {why}")
        warnings.warn(f"{_status[key]}; they are off for this combination and the torch "
                      "reference runs instead", RuntimeWarning, stacklevel=2)
    TIMINGS[key] = time.perf_counter() - start
    return _status[key]


def describe(key: tuple) -> str:
    """The combination in words (unset entries left out)."""
    return ", ".join(str(k) for k in key if k is not None and k is not False)


def status() -> dict:
    """``{combination: None or failure}`` of every combination checked so far."""
    return {describe(k): v for k, v in _status.items()}


def forget() -> None:
    """Drop every verdict (the next call of each combination is checked again)."""
    _status.clear()
    TIMINGS.clear()


@contextlib.contextmanager
def inject(op: str, direction: str, fault: Callable[[torch.Tensor], torch.Tensor]):
    """Test hook: within the block, the compiled paths of ``op`` pass their first output of
    ``direction`` (``"forward"``: spikes or activations; ``"backward"``: the input's gradient)
    through ``fault``."""
    _faults[(op, direction)] = fault
    try:
        yield
    finally:
        _faults.pop((op, direction), None)


def tamper(op: str, direction: str, t):
    """``t`` through the injected fault of ``(op, direction)``, if any (see :func:`inject`)."""
    fault = _faults.get((op, direction))
    return t if fault is None or t is None else fault(t)


__all__ = ["check", "compare", "Mismatch", "status", "forget", "inject", "tamper", "TIMINGS"]
