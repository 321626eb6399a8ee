"""The one rule every op's dispatch follows: ``backend = "auto" | "torch" | "cpu" | "cupy"``.

* ``"torch"``: the op's pure PyTorch path (any device and dtype); it never calls compiled code.
* ``"cpu"``: the compiled C kernels (``sj_qvm/ops/_cpu.c``); raises :class:`BackendUnavailable`
  naming the reason when they cannot run this input (not built, switched off, a CUDA tensor, a
  dtype they lack, failed their first-use check). It never runs torch in their place.
* ``"cupy"``: the CUDA kernels (through CuPy); raises likewise.
* ``"auto"``: the compiled path for the input's device (``"cupy"`` for a CUDA tensor, ``"cpu"``
  otherwise) when it can run, else ``"torch"``, logging each distinct reason once on the logger
  ``sj_qvm`` (WARNING for a CUDA input, INFO for a CPU one).

Each op's ``select`` returns ``(path, reason)``; the node or module that ran it keeps that pair as
``last_dispatch``, and :func:`sj_qvm.ops.diagnose` gathers the rest.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from ..checks import check_choice

BACKENDS = ("auto", "torch", "cpu", "cupy")
logger = logging.getLogger("sj_qvm")
_logged: set = set()


class BackendUnavailable(RuntimeError):
    """An explicit ``backend="cpu"`` or ``"cupy"`` that cannot run this call."""


def check_backend(value) -> str:
    return check_choice(value, BACKENDS, "backend")


def native_path(x: torch.Tensor) -> str:
    """The compiled path ``"auto"`` tries for ``x``: ``"cupy"`` for a CUDA tensor, else
    ``"cpu"``."""
    return "cupy" if x.is_cuda else "cpu"


def select(op: str, requested: str, x: torch.Tensor,
           why_not: dict[str, Callable[[], Optional[str]]],
           warn_cuda: bool = True) -> tuple[str, str]:
    """``(path, reason)`` for ``op`` on input ``x``; ``why_not[path]()`` says why a compiled path
    cannot run (``None``: it can; it may run the path's first-use check). See the module
    docstring for the rule; ``warn_cuda=False`` logs a CUDA input's fallback at INFO (an op
    with no CUDA kernel)."""
    if requested == "torch":
        return "torch", "backend='torch' was asked for"
    path = native_path(x) if requested == "auto" else check_backend(requested)
    reason = why_not[path]()
    if reason is None:
        return path, f"backend={requested!r}: the {path} kernels run this input"
    if requested != "auto":
        raise BackendUnavailable(f"{op} backend={requested!r} cannot run: {reason}")
    if (op, reason) not in _logged:
        _logged.add((op, reason))
        logger.log(logging.WARNING if x.is_cuda and warn_cuda else logging.INFO,
                   "%s backend='auto' falls back to torch: %s", op, reason)
    return "torch", f"backend='auto' fell back: {reason}"


def logged() -> list:
    """The ``(op, reason)`` pairs logged so far (once each)."""
    return sorted(_logged)


__all__ = ["BACKENDS", "BackendUnavailable", "check_backend", "native_path", "select", "logged"]
