"""Prepare the kernels' arguments, allocate their outputs and pick the kernel; a runner launches it.

The runner for CUDA tensors is :class:`.cupy.CupyRunner`. Other device types have none, except
what tests register with :func:`register_runner` (the host build of the same arithmetic), which
lets the custom ops, their autograd and ``torch.compile`` be tested on a machine without a GPU.
A runner gets each array as a detached, dense tensor on the launch's device, in the dtype the
kernel's name says (:func:`array` checks that once, here), and passes its ``data_ptr()``: no
autograd state crosses into a kernel.

Shapes: ``x_seq: [T, *S]`` with N = prod(S) neurons per step. A constant current broadcast over T
(``q.unsqueeze(0).expand(T, *S)``: step stride 0, as the per-sample schedule passes it) is
handed to the kernel as its one ``[*S]`` row (``F_CONSTANT``), not copied T times. theta and V0 are floats or tensors
broadcastable to ``S``; the kernel reads element ``(n / div) % mod`` of a tensor, which covers a
scalar (mod = 1), a per-channel ``[C, 1, ...]`` and a per-neuron tensor without copying it.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..enums import VALUES as _FLAGS
from ..kernel_args import Param, cuda_param, index_form

# The kernels' flag bits, read from qvm_enums.h.
F_STRICT, F_EXPECTED, F_STORE_V_SEQ, F_STORE_H, F_THETA_TENSOR, F_V0_TENSOR, F_CONSTANT = (
    _FLAGS[k] for k in ("F_STRICT", "F_EXPECTED", "F_STORE_V_SEQ", "F_STORE_H", "F_THETA_TENSOR",
                        "F_V0_TENSOR", "F_CONSTANT"))
B_GRAD_V, B_GRAD_V_SEQ, B_DETACH_RESET, B_NEED_V0, B_NEED_THETA = (
    _FLAGS[k] for k in ("B_GRAD_V", "B_GRAD_V_SEQ", "B_DETACH_RESET", "B_NEED_V0", "B_NEED_THETA"))

DTYPE_TAGS = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
BYTE_SPIKES = (torch.bool, torch.uint8)

_runners: dict = {}


def register_runner(device_type: str, runner) -> None:
    """Use ``runner.launch(name, threads, args, device)`` for tensors on ``device_type``."""
    _runners[device_type] = runner


def runner_for(device: torch.device):
    runner = _runners.get(device.type)
    if runner is None and device.type == "cuda":
        from .cupy import CupyRunner  # noqa: PLC0415 -- CuPy stays unimported until needed
        runner = _runners["cuda"] = CupyRunner()
    if runner is None:
        raise RuntimeError(f"the if_loop kernels have no runner for {device.type} tensors")
    return runner


def lanes(dtype: torch.dtype, n: int, *tensors) -> int:
    """Neurons per thread: 16 bytes of input when every row stays 32-byte aligned, else 1."""
    v = 16 // torch.empty((), dtype=dtype).element_size()
    if n % v or any(t is not None and t.numel() and t.data_ptr() % 32 for t in tensors):
        return 1
    return v


def array(t: Optional[torch.Tensor], dtype: torch.dtype, device: torch.device,
          what: str) -> Optional[torch.Tensor]:
    """``t`` as a kernel takes an array: detached (a bare pointer carries no autograd), after
    checking that it is on ``device``, in ``dtype`` and dense; ``None`` (a null pointer) stays."""
    if t is None:
        return None
    if t.device != device:
        raise ValueError(f"{what} is on {t.device}, the kernel runs on {device}")
    if t.dtype != dtype:
        raise TypeError(f"{what} must be {dtype} for this kernel, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{what} must be contiguous for the kernel, got strides {t.stride()}")
    return t.detach()


def param_args(p: Param, device: torch.device, what: str) -> tuple:
    """theta or V0 (:func:`..kernel_args.cuda_param`) as the kernels' four arguments
    ``(fp32 array or null, value, div, mod)``."""
    return (array(p.tensor, torch.float32, device, what), np.float32(p.value), np.int64(p.div),
            np.int64(p.mod))


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty((0,), dtype=torch.float32)


def is_constant(x_seq: torch.Tensor) -> bool:
    """Whether ``x_seq: [T, *S]`` is one contiguous ``[*S]`` current repeated over T (a view
    with step stride 0, T > 1): the kernels then read that row at every step."""
    return x_seq.shape[0] > 1 and x_seq.stride(0) == 0 and x_seq[0].is_contiguous()


def forward(x_seq: torch.Tensor, theta: Optional[torch.Tensor], theta_value: float,
            v0: Optional[torch.Tensor], v0_value: float, strict: bool, expected: bool,
            store_v_seq: bool, store_h: bool, spike_dtype: torch.dtype):
    """``(spike_seq [T, *S] spike_dtype, v [*S] fp32, v_seq [T, *S] fp32 or [0], h_seq likewise)``."""
    if x_seq.dtype not in DTYPE_TAGS:
        raise TypeError(f"if_loop kernels take float32, float16 or bfloat16, got {x_seq.dtype}")
    if spike_dtype not in BYTE_SPIKES and spike_dtype != x_seq.dtype:
        raise TypeError(f"spikes come out in the input dtype, bool or uint8, not {spike_dtype}")
    if x_seq.ndim < 2 or x_seq.shape[0] == 0:
        raise ValueError(f"x_seq must be [T, N, *] with T >= 1, got {tuple(x_seq.shape)}")
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    n = math.prod(shape)
    constant = is_constant(x_seq)
    x = x_seq[0] if constant else x_seq.contiguous()
    seq = x_seq.shape
    spike = torch.empty(seq, dtype=spike_dtype, device=x.device)
    v = torch.empty(shape, dtype=torch.float32, device=x.device)
    v_seq = torch.empty(seq, dtype=torch.float32, device=x.device) if store_v_seq else _empty(x)
    h_seq = torch.empty(seq, dtype=torch.float32, device=x.device) if store_h else _empty(x)
    th, vi = cuda_param(theta, theta_value, shape), cuda_param(v0, v0_value, shape)
    if n == 0:
        return spike, v, v_seq, h_seq
    flags = ((F_STRICT if strict else 0) | (F_EXPECTED if expected else 0)
             | (F_STORE_V_SEQ if store_v_seq else 0) | (F_STORE_H if store_h else 0)
             | (F_THETA_TENSOR if th.tensor is not None else 0)
             | (F_V0_TENSOR if vi.tensor is not None else 0) | (F_CONSTANT if constant else 0))
    vec = lanes(x.dtype, n, x, spike, v, v_seq, h_seq)
    kind = "u8" if spike_dtype in BYTE_SPIKES else "same"
    name = f"qvm_if_forward_{DTYPE_TAGS[x.dtype]}_{kind}_v{vec}"
    dev, f32 = x.device, torch.float32
    args = (array(x, x.dtype, dev, "x_seq"), spike, v, v_seq if store_v_seq else None,
            h_seq if store_h else None, *param_args(th, dev, "theta"),
            *param_args(vi, dev, "v_init"), np.int64(n), np.int32(T), np.int32(flags))
    runner_for(x.device).launch(name, n // vec, args, x.device)
    return spike, v, v_seq, h_seq


def count(q: torch.Tensor, theta: Optional[torch.Tensor], theta_value: float,
          v0: Optional[torch.Tensor], v0_value: float, strict: bool, expected: bool,
          time_steps: int):
    """``(N [*S] fp32, v [*S] fp32)``: the spike counts of T steps on the constant current
    ``q: [*S]`` and V_T, without the ``[T, *S]`` train (``qvm_if_count``, if_rate.cuh)."""
    if q.dtype not in DTYPE_TAGS:
        raise TypeError(f"if_loop kernels take float32, float16 or bfloat16, got {q.dtype}")
    shape = q.shape
    n = math.prod(shape)
    x = q.contiguous()
    counts = torch.empty(shape, dtype=torch.float32, device=x.device)
    v = torch.empty(shape, dtype=torch.float32, device=x.device)
    th, vi = cuda_param(theta, theta_value, shape), cuda_param(v0, v0_value, shape)
    if n == 0:
        return counts, v
    flags = ((F_STRICT if strict else 0) | (F_EXPECTED if expected else 0)
             | (F_THETA_TENSOR if th.tensor is not None else 0)
             | (F_V0_TENSOR if vi.tensor is not None else 0))
    vec = lanes(x.dtype, n, x, counts, v)
    dev, f32 = x.device, torch.float32
    args = (array(x, x.dtype, dev, "q"), counts, v, *param_args(th, dev, "theta"),
            *param_args(vi, dev, "v_init"), np.int64(n), np.int32(time_steps), np.int32(flags))
    runner_for(x.device).launch(f"qvm_if_count_{DTYPE_TAGS[x.dtype]}_v{vec}", n // vec, args,
                                x.device)
    return counts, v


def backward(grad_spike: Optional[torch.Tensor], grad_v: Optional[torch.Tensor],
             grad_v_seq: Optional[torch.Tensor], h_seq: torch.Tensor,
             theta: Optional[torch.Tensor], theta_value: float, strict: bool, expected: bool,
             surrogate_id: int, sg_p0: float, sg_p1: float, detach_reset: bool,
             need_v0: bool, need_theta: bool, x_dtype: torch.dtype):
    """``(grad_x [T, *S] x_dtype, dL/dV0 [*S] fp32 or [0], dL/dtheta [*S] fp32 or [0])``, per
    neuron; the caller sums them to the shapes of V0 and theta."""
    T, shape = h_seq.shape[0], h_seq.shape[1:]
    n = math.prod(shape)
    dev = h_seq.device
    grad_x = torch.empty(h_seq.shape, dtype=x_dtype, device=dev)
    g_v0 = torch.empty(shape, dtype=torch.float32, device=dev) if need_v0 else _empty(h_seq)
    g_th = torch.empty(shape, dtype=torch.float32, device=dev) if need_theta else _empty(h_seq)
    if n == 0:
        return grad_x, g_v0, g_th
    if grad_spike is None:
        grad_spike = torch.zeros(h_seq.shape, dtype=x_dtype, device=dev)
    grad_spike = grad_spike.to(x_dtype).contiguous()
    grad_v = None if grad_v is None else grad_v.to(torch.float32).contiguous()
    if grad_v_seq is not None and grad_v_seq.numel() == 0:
        grad_v_seq = None
    grad_v_seq = None if grad_v_seq is None else grad_v_seq.to(torch.float32).contiguous()
    th = cuda_param(theta, theta_value, shape)
    flags = ((F_STRICT if strict else 0) | (F_EXPECTED if expected else 0)
             | (F_THETA_TENSOR if th.tensor is not None else 0)
             | (B_GRAD_V if grad_v is not None else 0) | (B_GRAD_V_SEQ if grad_v_seq is not None else 0)
             | (B_DETACH_RESET if detach_reset else 0) | (B_NEED_V0 if need_v0 else 0)
             | (B_NEED_THETA if need_theta else 0))
    h = h_seq.contiguous()
    # 4 lanes for every dtype: 16-byte loads of the fp32 h_seq, and no spills on sm_80 with 8.
    vec = lanes(torch.float32, n, grad_spike, grad_v, grad_v_seq, h, grad_x, g_v0, g_th)
    name = f"qvm_if_backward_{DTYPE_TAGS[x_dtype]}_v{vec}"
    f32 = torch.float32
    args = (array(grad_spike, x_dtype, dev, "grad_spike"), array(grad_v, f32, dev, "grad_v"),
            array(grad_v_seq, f32, dev, "grad_v_seq"), array(h, f32, dev, "h_seq"), grad_x,
            g_v0 if need_v0 else None, g_th if need_theta else None,
            *param_args(th, dev, "theta"), np.int64(n), np.int32(T), np.int32(flags),
            np.int32(surrogate_id), np.float32(sg_p0), np.float32(sg_p1))
    runner_for(dev).launch(name, n // vec, args, dev)
    return grad_x, g_v0, g_th


__all__ = ["array", "forward", "backward", "count", "index_form", "is_constant", "lanes",
           "param_args", "register_runner", "runner_for"]
