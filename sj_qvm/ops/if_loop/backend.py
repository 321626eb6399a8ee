"""Which path runs the multi-step IF loop, and why: ``backend = "auto" | "torch" | "cupy"``.

* ``"torch"``: the reference (with autograd) or the in-place inference loop.
* ``"cupy"``: the fused kernels; raises :class:`BackendUnavailable` with the reason when they
  cannot run this input.
* ``"auto"``: the kernels when they can run, else torch, logging each distinct reason once
  (logger ``sj_qvm``; WARNING for a CUDA input, DEBUG for a CPU input, where torch is the plan).
  "Can run" includes the kernels' first run on the device (:func:`device_reason`): a build or
  launch that raises there, or a result that differs from the reference, makes ``"auto"`` fall
  back and ``"cupy"`` raise, with that error as the reason. Run one call before capturing a
  CUDA graph.

:func:`diagnose` says which path a node took last and why, and whether CuPy works here.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from . import surrogates
from .autograd import HAS_CUSTOM_OP
from .launch import DTYPE_TAGS

BACKENDS = ("auto", "torch", "cupy")
logger = logging.getLogger("sj_qvm")

_logged: set = set()
_cupy_status: Optional[tuple[bool, str]] = None
_device_status: dict = {}  # (device type, index) -> why the kernels cannot run there, or None


class BackendUnavailable(RuntimeError):
    """An explicit ``backend="cupy"`` that cannot run."""


def cupy_status() -> tuple[bool, str]:
    """``(True, "cupy <version>")`` when CuPy imports and sees a GPU, else ``(False, reason)``."""
    global _cupy_status
    if _cupy_status is None:
        try:
            from .cupy import import_cupy  # noqa: PLC0415
            cupy = import_cupy()
            count = cupy.cuda.runtime.getDeviceCount()
            _cupy_status = ((True, f"cupy {cupy.__version__}") if count > 0
                            else (False, "CuPy sees no CUDA device"))
        except ImportError as e:
            _cupy_status = (False, f"CuPy is not installed ({e}); pip install cupy-cuda13x")
        except Exception as e:  # noqa: BLE001 -- a broken CUDA setup has many faces
            _cupy_status = (False, f"CuPy cannot reach CUDA: {type(e).__name__}: {e}")
    return _cupy_status


def device_reason(device: torch.device) -> Optional[str]:
    """Why the kernels cannot run on ``device`` (``None``: they can). The first call per device
    builds and loads ``if_loop.cu`` there and runs :func:`.trial.run` (a training step and an
    inference against the reference); a build error, a launch that raises or a result that
    differs is the reason, kept for the process. Inside CUDA graph capture nothing is tried (a
    build or a synchronizing comparison would break the capture): warm up before capturing."""
    index = device.index
    if index is None and device.type == "cuda":
        index = torch.cuda.current_device()
    key = (device.type, index)
    if key not in _device_status:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return (f"the kernels are untried on {device} and a CUDA graph is being captured; "
                    "run one call before capture (a warm-up)")
        try:
            if device.type == "cuda":
                from .cupy import module  # noqa: PLC0415
                module(index)
        except Exception as e:  # noqa: BLE001 -- compile errors, driver errors
            _device_status[key] = f"if_loop.cu failed to build on {device}: {e}"
            return _device_status[key]
        try:
            from . import trial  # noqa: PLC0415
            trial.run(torch.device(device.type, index))
            _device_status[key] = None
        except Exception as e:  # noqa: BLE001 -- a launch error has many faces
            _device_status[key] = (f"the kernels' first run on {device} failed: "
                                   f"{type(e).__name__}: {e}")
    return _device_status[key]


def input_reason(x_seq: torch.Tensor, surrogate_function, needs_grad: bool) -> Optional[str]:
    """Why the kernels cannot take this input here, before any device is tried (``None``:
    they can)."""
    if not x_seq.is_cuda:
        return f"input is on {x_seq.device.type}, the kernels need a CUDA tensor"
    if x_seq.dtype not in DTYPE_TAGS:
        return f"dtype {x_seq.dtype} (the kernels take float32, float16, bfloat16)"
    if not HAS_CUSTOM_OP:
        return f"torch {torch.__version__} lacks torch.library.custom_op (needs >= 2.4)"
    if needs_grad:
        reason = surrogates.unsupported_reason(surrogate_function)
        if reason is not None:
            return reason
    ok, why = cupy_status()
    return None if ok else why


def unavailable_reason(x_seq: torch.Tensor, surrogate_function, needs_grad: bool) -> Optional[str]:
    """Why the kernels cannot run this call (``None``: they can): :func:`input_reason`, then
    :func:`device_reason`."""
    return (input_reason(x_seq, surrogate_function, needs_grad)
            or device_reason(x_seq.device))


def select(requested: str, x_seq: torch.Tensor, surrogate_function,
           needs_grad: bool) -> tuple[str, str]:
    """``(path, reason)`` with path ``"cupy"`` or ``"torch"``; see the module docstring."""
    if requested == "torch":
        return "torch", "backend='torch' was asked for"
    reason = unavailable_reason(x_seq, surrogate_function, needs_grad)
    if reason is None:
        return "cupy", f"backend={requested!r} and the kernels run on {x_seq.device}"
    if requested == "cupy":
        raise BackendUnavailable(f"backend='cupy' cannot run: {reason}")
    if reason not in _logged:
        _logged.add(reason)
        level = logging.WARNING if x_seq.is_cuda else logging.DEBUG
        logger.log(level, "QVMIFNode backend='auto' falls back to torch: %s", reason)
    return "torch", f"backend='auto' fell back: {reason}"


def diagnose(node=None) -> dict:
    """``{"cupy": (ok, why), "last": (path, reason) of node's last multi-step call or None}``."""
    return {"cupy": cupy_status(), "last": getattr(node, "last_dispatch", None)}
