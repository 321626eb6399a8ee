"""Which path runs the multi-step IF loop, and why: ``backend = "auto" | "torch" | "cpu" |
"cupy"`` (the rule of :mod:`sj_qvm.ops.paths`).

* ``"torch"``: :mod:`.torch`, :func:`.torch.if_multi_step_torch` without autograd, the loop with
  a hand-written backward under autograd (pure PyTorch, any device and dtype).
* ``"cpu"``: the compiled CPU kernels, :mod:`.cpu` (float32/float64 CPU tensors; under autograd
  SJ's ``Sigmoid`` or ``ATan`` surrogate).
* ``"cupy"``: the fused CUDA kernels, :func:`.cupy.if_multi_step_cupy` (fp32/fp16/bf16 CUDA
  tensors; the state is fp32).

:func:`if_multi_step` picks the path per call (``backend=``); :func:`if_multi_step_inference`
(no grad) and :func:`if_multi_step_bptt` (autograd) are ``"auto"`` on a CPU input and ``"torch"``
on any other.

Each compiled path is checked against :func:`sj_qvm.functional.if_multi_step_ref` the first time
it meets a new combination (:mod:`.check`, :mod:`sj_qvm.ops.verify`); a combination that fails
is off for the process. Run one call before capturing a CUDA graph.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ...checks import check_current
from .. import paths, verify
from . import cpu, surrogates
from .cupy import HAS_CUSTOM_OP, if_multi_step_cupy
from .launch import DTYPE_TAGS
from .torch import _check_surrogate, as_tensor, if_multi_step_bptt_torch, if_multi_step_torch

BACKENDS = paths.BACKENDS
BackendUnavailable = paths.BackendUnavailable
OP = "if_loop"

_cupy_status: Optional[tuple[bool, str]] = None
_device_status: dict = {}  # (device type, index) -> why the CUDA module cannot load there


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
    """Why ``if_loop.cu`` cannot be loaded on ``device`` (``None``: it can); the first call per
    CUDA device builds and loads it there. Inside CUDA graph capture nothing is built."""
    if device.type != "cuda":
        return None
    index = torch.cuda.current_device() if device.index is None else device.index
    key = (device.type, index)
    if key not in _device_status:
        if torch.cuda.is_current_stream_capturing():
            return (f"if_loop.cu is not loaded on {device} yet and a CUDA graph is being "
                    "captured; run one call before capture (a warm-up)")
        try:
            from .cupy import module  # noqa: PLC0415
            module(index)
            _device_status[key] = None
        except Exception as e:  # noqa: BLE001 -- compile errors, driver errors
            _device_status[key] = f"if_loop.cu failed to build on {device}: {e}"
    return _device_status[key]


def input_reason(x_seq: torch.Tensor, surrogate_function, needs_grad: bool) -> Optional[str]:
    """Why the CUDA kernels cannot take this input (``None``: they can), before any device is
    tried."""
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
    """Why the CUDA kernels cannot run this call: :func:`input_reason`, then
    :func:`device_reason`."""
    return (input_reason(x_seq, surrogate_function, needs_grad)
            or device_reason(x_seq.device))


def cpu_reason(x_seq, v_init, v_threshold, surrogate_function, needs_grad) -> Optional[str]:
    """Why the compiled CPU kernels cannot run this call (``None``: they can)."""
    if needs_grad:
        return cpu.bptt_call_reason(x_seq, v_init, v_threshold, surrogate_function)
    return cpu.call_reason(x_seq, v_init, v_threshold)


def _surrogate_key(surrogate_function):
    try:
        return surrogates.snippet(surrogate_function)
    except surrogates.UnsupportedSurrogate:
        return type(surrogate_function).__name__


def form(p) -> str:
    """``"tensor"`` for a tensor of more than one value, else ``"scalar"``."""
    return "tensor" if isinstance(p, torch.Tensor) and p.numel() > 1 else "scalar"


def select(requested: str, x_seq: torch.Tensor, v_init, v_threshold, *, strict: bool = False,
           current: str = "instant", surrogate_function=None, detach_reset: bool = False,
           needs_grad: bool = False, rounding: Optional[str] = None) -> tuple[str, str]:
    """``(path, reason)`` for this call; ``v_init`` and ``v_threshold`` as the path will get
    them (their form decides the combination a first-use check covers). ``rounding``: the
    firing rule's name (``"floor"``, ``"round"``, ``"ceil"``), ``None`` for another V0."""
    def checked(path: str) -> Optional[str]:
        from . import check  # noqa: PLC0415 -- it imports this module
        c = check.Combination(
            "backward" if needs_grad else "forward", str(x_seq.device), x_seq.dtype, current,
            rounding or ("ceil" if strict else "v0"), form(v_threshold), form(v_init),
            _surrogate_key(surrogate_function) if needs_grad else None, bool(detach_reset))
        return verify.check(path, c.key(), lambda: check.run(path, c))

    def cpu_path():
        return (cpu_reason(x_seq, v_init, v_threshold, surrogate_function, needs_grad)
                or checked("cpu"))

    def cupy_path():
        return unavailable_reason(x_seq, surrogate_function, needs_grad) or checked("cupy")

    return paths.select(OP, requested, x_seq, {"cpu": cpu_path, "cupy": cupy_path})


def run(path: str, x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
        current: str = "instant", surrogate_function=None, detach_reset: bool = False,
        store_v_seq: bool = False, needs_grad: bool = False):
    """The loop on ``path``: ``x_seq: [T, N, *]`` -> ``(spike_seq [T, N, *], V_T [N, *], v_seq
    [T, N, *] or None)``. Under autograd (``needs_grad``) ``v_init`` and ``v_threshold`` may
    require grad and get gradients."""
    check_current(current)
    if path == "torch":
        if needs_grad:
            return if_multi_step_bptt_torch(x_seq, v_init, v_threshold, strict, current,
                                            surrogate_function, detach_reset, store_v_seq)
        return if_multi_step_torch(x_seq, v_init, v_threshold, strict, current,
                                   store_v_seq=store_v_seq)
    if path == "cupy":
        out = if_multi_step_cupy(x_seq, v_init, v_threshold, strict, current,
                                 surrogate_function if needs_grad else None, detach_reset,
                                 store_v_seq)
    elif path == "cpu":
        if needs_grad:
            out = cpu.if_multi_step_bptt_cpu(x_seq, as_tensor(v_init, x_seq),
                                             as_tensor(v_threshold, x_seq), strict, current,
                                             surrogate_function, detach_reset, store_v_seq)
        else:
            out = cpu.if_multi_step_cpu(x_seq, v_init, v_threshold, strict, current, store_v_seq)
        if out is None:
            why = cpu_reason(x_seq, v_init, v_threshold, surrogate_function, needs_grad)
            raise BackendUnavailable(f"{OP} backend='cpu' cannot run: {why}")
    else:
        raise ValueError(f"path must be one of ('torch', 'cpu', 'cupy'), got {path!r}")
    return (verify.tamper(OP, "forward", out[0]),) + tuple(out[1:])


def if_multi_step(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                  current: str = "instant", surrogate_function=None, detach_reset: bool = False,
                  store_v_seq: bool = False, *, backend: str = "auto"):
    """:func:`select` then :func:`run`: ``(spike_seq, V_T, v_seq or None, (path, reason))``.
    Autograd is needed when it is on and ``x_seq``, ``v_init`` or ``v_threshold`` requires
    grad (then ``surrogate_function`` is required)."""
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (x_seq, v_init, v_threshold))
    if needs_grad and surrogate_function is None:
        raise ValueError("surrogate_function is required for BPTT")
    chosen = select(backend, x_seq, v_init, v_threshold, strict=strict, current=current,
                    surrogate_function=surrogate_function, detach_reset=detach_reset,
                    needs_grad=needs_grad)
    out = run(chosen[0], x_seq, v_init, v_threshold, strict, current, surrogate_function,
              detach_reset, store_v_seq, needs_grad)
    return (*out, chosen)


@torch.no_grad()
def if_multi_step_inference(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                            current: str = "instant", surrogate_function: Optional[Callable] = None,
                            detach_reset: bool = False, store_v_seq: bool = False):
    """``x_seq: [T, N, *]`` -> ``(spike_seq [T, N, *], v [N, *], v_seq [T, N, *] or None)``,
    without autograd: the compiled kernel of :mod:`.cpu` where it takes a CPU input, else
    :func:`.torch.if_multi_step_torch` (bit-identical results). The twin's signature;
    ``surrogate_function`` and ``detach_reset`` are accepted and ignored."""
    check_current(current)
    _check_surrogate(surrogate_function)
    path, _ = select("auto" if not x_seq.is_cuda else "torch", x_seq, v_init, v_threshold,
                     strict=strict, current=current)
    return run(path, x_seq, v_init, v_threshold, strict, current, store_v_seq=store_v_seq)


def if_multi_step_bptt(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                       current: str = "instant", surrogate_function: Optional[Callable] = None,
                       detach_reset: bool = False, store_v_seq: bool = False):
    """``x_seq: [T, N, *]`` -> ``(spike_seq [T, N, *], v [N, *], v_seq [T, N, *] or None)``.

    ``v_init`` and ``v_threshold`` are floats or tensors broadcastable to ``[N, *]``; tensors that
    require grad get gradients. Needs a surrogate: use the inference path when no grad is needed.
    On CPU float32/float64 with SJ's Sigmoid or ATan the compiled kernels of :mod:`.cpu` where
    they are built, else :func:`.torch.if_multi_step_bptt_torch`.
    """
    check_current(current)
    if surrogate_function is None:
        raise ValueError("surrogate_function is required for BPTT")
    v_init, v_threshold = as_tensor(v_init, x_seq), as_tensor(v_threshold, x_seq)
    path, _ = select("auto" if not x_seq.is_cuda else "torch", x_seq, v_init, v_threshold,
                     strict=strict, current=current, surrogate_function=surrogate_function,
                     detach_reset=detach_reset, needs_grad=True)
    return run(path, x_seq, v_init, v_threshold, strict, current, surrogate_function,
               detach_reset, store_v_seq, needs_grad=True)
