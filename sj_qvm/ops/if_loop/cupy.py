"""The IF loop's ``"cupy"`` path: the kernels of ``if_loop.cu`` through CuPy, on PyTorch's current
stream, without copies.

* :func:`if_multi_step_cupy`: the fast twin of :func:`sj_qvm.functional.if_multi_step_ref`, as
  ``torch.library`` custom ops with fake and autograd registrations:

  - ``sj_qvm::if_loop_forward``: training forward; also returns ``h_seq`` (h_t = U_t - theta,
    fp32) for the backward op. Its autograd formula calls ``sj_qvm::if_loop_backward``.
  - ``sj_qvm::if_loop_inference``: stores nothing for backward; spikes optionally bool/uint8.

  The fake registrations give ``torch.compile`` the output shapes without running anything. Same
  signature as the twin and, for fp32 inputs, bit-identical spikes and v. Its state is fp32 for
  every input dtype, so ``v`` and ``v_seq`` are fp32; for fp16/bf16 inputs it equals the
  reference run on the input cast to fp32 (not the reference run in fp16/bf16).
* :func:`if_constant_cupy`: the same on one constant current (the per-sample schedule's input
  form): ``q: [B, *]`` in, the same current at each of T steps, ``[T, B, *]`` spikes out
  (``F_CONSTANT``: the kernel reads q at every step, no ``[T, B, *]`` input is built); it equals
  the reference on q repeated over T bit for bit (fp32), in either current (the T-mean of T equal
  steps is the step itself). The counts-only form is the rate op's, :mod:`sj_qvm.ops.if_rate.cupy`.
* :class:`CupyRunner`: the launcher :mod:`.launch` hands CUDA tensors to. CuPy is imported on
  first use, never at ``import sj_qvm``. The source is compiled once per device into a cached
  ``cupy.RawModule`` (NVRTC; CuPy also keeps the binary in its on-disk cache). Tensors reach the
  kernels as their ``data_ptr()`` (zero-copy), after :func:`.launch.array` checked them.
  ``LAUNCHES`` counts launches per kernel name, so tests can prove that the kernel ran. A launch
  can be captured in a CUDA graph once that kernel has run on that device (one call before
  capture: a warm-up, which compiles and loads the module); a first run inside a capture is
  refused.
"""
# No ``from __future__ import annotations``: torch.library.custom_op reads the annotations below
# as the ops' schema.
import collections
import hashlib
import math
from numbers import Real
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ...checks import check_current, check_int
from . import launch, surrogates

SOURCE = Path(__file__).with_name("if_loop.cu")
# What if_loop.cu includes:
HEADERS = tuple(SOURCE.with_name(h) for h in ("if_loop.cuh", "if_float.cuh", "if_rate.cuh",
                                             "qvm_enums.h"))
BLOCK = 256

#: kernel name -> number of launches in this process (the sentinel for tests).
LAUNCHES: collections.Counter = collections.Counter()

_modules: dict = {}  # device index -> cupy.RawModule
_functions: dict = {}  # (device index, kernel name) -> cupy.RawKernel
_streams: dict = {}  # (device index, stream handle) -> cupy.cuda.ExternalStream


def import_cupy():
    """The ``cupy`` module (raises ``ImportError`` when it is not installed)."""
    import cupy  # noqa: PLC0415 -- lazy on purpose
    return cupy


def compile_options() -> tuple[str, ...]:
    """NVRTC options for ``if_loop.cu``: the headers' folder, and the headers' hash.

    CuPy's compile cache keys on the source text and options only, so the hash makes an edited
    ``if_loop.cuh`` or ``if_rate.cuh`` a cache miss.
    """
    digest = hashlib.sha1(b"".join(h.read_bytes() for h in HEADERS)).hexdigest()[:12]
    return (f"-I{SOURCE.parent}", f"-DQVM_HEADER_SHA1=0x{digest}")


def cupy_nvrtc_options(arch: str) -> tuple[str, ...]:
    """The NVRTC options ``cupy.RawModule`` compiles ``if_loop.cu`` with, for ``-arch=<arch>``
    (``sm_90`` for a cubin, as CuPy does where NVRTC knows the GPU, or ``compute_90`` for PTX).

    CuPy 13 and 14 append to :func:`compile_options` (``cupy/cuda/compiler.py``:
    ``_compile_with_cache_cuda`` adds ``-ftz=true``, ``_compile_using_nvrtc_no_warning`` the arch
    and ``--device-as-default-execution-space``), besides ``-I`` folders of its own and of the
    CUDA toolkit that ``if_loop.cu`` does not use. NVRTC keeps the last ``-ftz``, so ours could
    not undo it: ``if_float.cuh`` writes the forward's arithmetic in PTX without ``.ftz``.
    """
    return compile_options() + ("-ftz=true", f"-arch={arch}",
                                "--device-as-default-execution-space")


def module(device_index: int):
    """The compiled ``cupy.RawModule`` for one device, built on first use."""
    mod = _modules.get(device_index)
    if mod is None:
        cupy = import_cupy()
        with cupy.cuda.Device(device_index):
            mod = cupy.RawModule(code=SOURCE.read_text(), options=compile_options())
            mod.compile()  # compile now, so a failure surfaces here and not mid-forward
        _modules[device_index] = mod
    return mod


def _function(device_index: int, name: str):
    key = (device_index, name)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = module(device_index).get_function(name)
    return fn


def _stream(cupy, device_index: int, handle: int):
    key = (device_index, handle)
    s = _streams.get(key)
    if s is None:
        s = _streams[key] = cupy.cuda.ExternalStream(handle, device_index)
    return s


def _arg(a):
    if isinstance(a, torch.Tensor):  # checked by launch.array: dense, on the device, detached
        return np.uint64(a.data_ptr())
    if a is None:
        return np.uint64(0)  # a null pointer, never dereferenced (the flags say so)
    return a  # numpy scalars: np.float32, np.int64, np.int32


class CupyRunner:
    """Launch ``name`` over ``threads`` threads with kernel arguments ``args``."""

    def launch(self, name: str, threads: int, args: tuple, device: torch.device) -> None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        if (index, name) not in _functions and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"{name} has not run on cuda:{index} yet and a CUDA graph is being "
                               "captured; run one call before capture (a warm-up)")
        cupy = import_cupy()
        handle = torch.cuda.current_stream(index).cuda_stream
        with cupy.cuda.Device(index):
            fn = _function(index, name)  # CuPy loads the module on the current device
            with _stream(cupy, index, handle):
                fn((math.ceil(threads / BLOCK),), (BLOCK,), tuple(_arg(a) for a in args))
        LAUNCHES[name] += 1


HAS_CUSTOM_OP = hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_autograd")


def _fake_outputs(x_seq: Tensor, spike_dtype: torch.dtype, store_v_seq: bool, store_h: bool):
    seq = x_seq.new_empty(x_seq.shape, dtype=torch.float32)
    none = x_seq.new_empty((0,), dtype=torch.float32)
    return (x_seq.new_empty(x_seq.shape, dtype=spike_dtype),
            x_seq.new_empty(x_seq.shape[1:], dtype=torch.float32),
            seq if store_v_seq else none, seq.clone() if store_h else none.clone())


if HAS_CUSTOM_OP:
    @torch.library.custom_op("sj_qvm::if_loop_forward", mutates_args=())
    def if_loop_forward(x_seq: Tensor, theta: Optional[Tensor], theta_value: float,
                        v0: Optional[Tensor], v0_value: float, strict: bool, expected: bool,
                        store_v_seq: bool, surrogate_id: int, sg_p0: float, sg_p1: float,
                        detach_reset: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(spike_seq, v, v_seq or [0], h_seq)``; the surrogate arguments serve the backward."""
        return launch.forward(x_seq, theta, theta_value, v0, v0_value, strict, expected,
                              store_v_seq, True, x_seq.dtype)

    @if_loop_forward.register_fake
    def _(x_seq, theta, theta_value, v0, v0_value, strict, expected, store_v_seq, surrogate_id,
          sg_p0, sg_p1, detach_reset):
        return _fake_outputs(x_seq, x_seq.dtype, store_v_seq, True)

    @torch.library.custom_op("sj_qvm::if_loop_inference", mutates_args=())
    def if_loop_inference(x_seq: Tensor, theta: Optional[Tensor], theta_value: float,
                          v0: Optional[Tensor], v0_value: float, strict: bool, expected: bool,
                          store_v_seq: bool, spike_dtype: torch.dtype
                          ) -> tuple[Tensor, Tensor, Tensor]:
        """``(spike_seq, v, v_seq or [0])``, nothing kept for backward."""
        return launch.forward(x_seq, theta, theta_value, v0, v0_value, strict, expected,
                              store_v_seq, False, spike_dtype)[:3]

    @if_loop_inference.register_fake
    def _(x_seq, theta, theta_value, v0, v0_value, strict, expected, store_v_seq, spike_dtype):
        return _fake_outputs(x_seq, spike_dtype, store_v_seq, False)[:3]

    @torch.library.custom_op("sj_qvm::if_loop_backward", mutates_args=())
    def if_loop_backward(grad_spike: Optional[Tensor], grad_v: Optional[Tensor],
                         grad_v_seq: Optional[Tensor], h_seq: Tensor, theta: Optional[Tensor],
                         theta_value: float, strict: bool, expected: bool, surrogate_id: int,
                         sg_p0: float, sg_p1: float, detach_reset: bool, need_v0: bool,
                         need_theta: bool, x_dtype: torch.dtype
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """``(grad_x, dL/dV0 per neuron or [0], dL/dtheta per neuron or [0])``."""
        return launch.backward(grad_spike, grad_v, grad_v_seq, h_seq, theta, theta_value, strict,
                               expected, surrogate_id, sg_p0, sg_p1, detach_reset, need_v0,
                               need_theta, x_dtype)

    @if_loop_backward.register_fake
    def _(grad_spike, grad_v, grad_v_seq, h_seq, theta, theta_value, strict, expected,
          surrogate_id, sg_p0, sg_p1, detach_reset, need_v0, need_theta, x_dtype):
        per_neuron = h_seq.new_empty(h_seq.shape[1:], dtype=torch.float32)
        none = h_seq.new_empty((0,), dtype=torch.float32)
        return (h_seq.new_empty(h_seq.shape, dtype=x_dtype),
                per_neuron if need_v0 else none, per_neuron.clone() if need_theta else none.clone())

    def _setup_context(ctx, inputs, output):
        (x_seq, theta, theta_value, v0, v0_value, strict, expected, store_v_seq, surrogate_id,
         sg_p0, sg_p1, detach_reset) = inputs
        ctx.save_for_backward(output[3], theta)
        ctx.args = (theta_value, strict, expected, surrogate_id, sg_p0, sg_p1, detach_reset)
        ctx.x_dtype = x_seq.dtype
        ctx.theta_shape = None if theta is None else theta.shape
        ctx.v0_shape = None if v0 is None else v0.shape
        ctx.set_materialize_grads(False)  # unused outputs (h_seq above all) cost no zero tensors

    def _backward(ctx, g_spike, g_v, g_v_seq, g_h):
        h_seq, theta = ctx.saved_tensors
        theta_value, strict, expected, surrogate_id, sg_p0, sg_p1, detach_reset = ctx.args
        need_theta = ctx.theta_shape is not None and ctx.needs_input_grad[1]
        need_v0 = ctx.v0_shape is not None and ctx.needs_input_grad[3]
        grad_x, g_v0, g_th = torch.ops.sj_qvm.if_loop_backward(
            g_spike, g_v, g_v_seq, h_seq, theta, theta_value, strict, expected, surrogate_id,
            sg_p0, sg_p1, detach_reset, need_v0, need_theta, ctx.x_dtype)
        grad_theta = g_th.sum_to_size(ctx.theta_shape) if need_theta else None
        grad_v0 = g_v0.sum_to_size(ctx.v0_shape) if need_v0 else None
        return (grad_x, grad_theta, None, grad_v0, None, None, None, None, None, None, None, None)

    torch.library.register_autograd("sj_qvm::if_loop_forward", _backward,
                                    setup_context=_setup_context)


def _split(p, name: str, device: torch.device):
    """A float or fp32 tensor argument pair ``(tensor or None, value)``, the tensor on ``device``
    (the input's). As in torch's own ops, a 0-dim CPU tensor is moved there; a tensor on another
    device is refused (the kernels would get a pointer into another device's memory)."""
    if isinstance(p, Tensor):
        if p.device != device:
            if p.ndim != 0 or p.device.type != "cpu":
                raise ValueError(f"{name} is on {p.device} but the input is on {device}; move "
                                 f"it there (only a 0-dim CPU tensor is moved for you)")
            p = p.to(device)
        return p.to(torch.float32), 0.0
    if isinstance(p, Real) and not isinstance(p, bool) and math.isfinite(p):
        return None, float(p)
    raise TypeError(f"{name} must be a finite float or a tensor, got {p!r}")


def if_multi_step_cupy(x_seq: Tensor, v_init, v_threshold, strict: bool = False,
                       current: str = "instant", surrogate_function=None,
                       detach_reset: bool = False, store_v_seq: bool = False,
                       spike_dtype: Optional[torch.dtype] = None):
    """T soft-reset IF steps in one kernel launch (and one for the backward).

    Args:
        x_seq: input currents ``[T, N, *]`` on a CUDA device, fp32, fp16 or bf16.
        v_init: V0, a float or a tensor broadcastable to ``[N, *]`` (a previous state, too),
            on ``x_seq``'s device (a 0-dim CPU tensor is moved there).
        v_threshold: theta, a float or a tensor broadcastable to ``[N, *]``, likewise.
        surrogate_function: SJ ``Sigmoid`` or ``ATan`` (see :mod:`.surrogates`), or ``None``.
        spike_dtype: ``None`` (the input dtype), ``torch.bool`` or ``torch.uint8``; the
            latter two only without autograd.
    Returns:
        ``(spike_seq [T, N, *], v [N, *] fp32, v_seq [T, N, *] fp32 or None)``.
    """
    if not HAS_CUSTOM_OP:
        raise RuntimeError(f"the CuPy path needs torch.library.custom_op (torch >= 2.4), "
                           f"this is torch {torch.__version__}")
    check_current(current)
    theta, theta_value = _split(v_threshold, "v_threshold", x_seq.device)
    v0, v0_value = _split(v_init, "v_init", x_seq.device)
    expected = current == "expected"
    tensors = [t for t in (x_seq, theta, v0) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        if spike_dtype not in (None, x_seq.dtype):
            raise ValueError("bool/uint8 spikes carry no gradient; use spike_dtype=None with "
                             "autograd")
        sg_id, p0, p1 = surrogates.snippet(surrogate_function)
        spike, v, v_seq, _ = torch.ops.sj_qvm.if_loop_forward(
            x_seq, theta, theta_value, v0, v0_value, bool(strict), expected, bool(store_v_seq),
            sg_id, p0, p1, bool(detach_reset))
    else:
        spike, v, v_seq = torch.ops.sj_qvm.if_loop_inference(
            x_seq, theta, theta_value, v0, v0_value, bool(strict), expected, bool(store_v_seq),
            spike_dtype or x_seq.dtype)
    return spike, v, (v_seq if store_v_seq else None)


def check_constant(q, time_steps) -> int:
    """T >= 1, and q a tensor ``[B, *]``: the arguments of a constant-current kernel."""
    T = check_int(time_steps, "time_steps", minimum=1)
    if not isinstance(q, Tensor) or q.ndim < 1:
        raise ValueError(f"q must be a tensor [B, *], got "
                         f"{tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__}")
    return T


def if_constant_cupy(q: Tensor, time_steps: int, v_init, v_threshold, strict: bool = False,
                     surrogate_function=None, detach_reset: bool = False,
                     store_v_seq: bool = False, spike_dtype: Optional[torch.dtype] = None):
    """T soft-reset IF steps on one constant current, in one kernel launch: ``q: [B, *]`` in,
    ``(spike_seq [T, B, *], v [B, *] fp32, v_seq [T, B, *] fp32 or None)`` out.

    :func:`if_multi_step_cupy` on ``q.unsqueeze(0).expand(T, ...)``, which is the view
    the per-sample schedule hands a node (that function takes such a view the same way).
    Arguments as there; ``time_steps`` T >= 1.
    """
    T = check_constant(q, time_steps)
    return if_multi_step_cupy(q.contiguous().unsqueeze(0).expand(T, *q.shape), v_init,
                              v_threshold, strict, "expected", surrogate_function, detach_reset,
                              store_v_seq, spike_dtype)
