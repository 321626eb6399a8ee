"""The IF loop's ``"cpu"`` path: the compiled CPU kernels (:mod:`sj_qvm.ops.native`,
``sj_qvm/ops/_cpu.c``).

No grad, :func:`if_multi_step_cpu`: one pass. It reads each input step once (in expected mode it
averages them first, in blocks that stay in cache), writes each spike once and keeps V in cache
over the T steps. An input broadcast over T (stride 0 on dim 0, what ``convert``'s per-sample
schedule passes) is read once. Same predicate and arithmetic as :mod:`.torch`'s loop, so spikes,
V_T and v_seq are bit-identical to it (and to :func:`sj_qvm.functional.if_multi_step_ref`).

Training, :func:`if_multi_step_bptt_cpu`: the BPTT loop of :mod:`.torch` in one pass
forward (spikes and V_T) and one pass backward, for SpikingJelly's ``Sigmoid`` and ``ATan``
surrogates (the table of :mod:`.surrogates`, shared with the CUDA kernels). Spikes and V are
bit-identical to :mod:`.torch`; gradients equal it up to rounding (the surrogate is evaluated in
C, as in the CUDA kernel).

The backward needs h_t = U_t - theta. Up to ``RECOMPUTE_MAX_T`` steps the forward writes no h:
it saves the input and V_0, and the backward recomputes h_t block by block with the forward's
own loop (the same bits), so training writes and holds one ``[T, N, *]`` tensor less per layer
and reads the input where it read h. Above it, the forward stores h as ``[T, N, *]``.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional

import torch

from .. import buffers, native, verify
from . import surrogates
from .torch import _reduce_to
from ..kernel_args import IFLoopArgs, IFRateArgs, param

__all__ = ["if_multi_step_cpu", "if_multi_step_bptt_cpu", "spike_rate"]


def layout_reason(x_seq: torch.Tensor, kernel: str = "if_forward") -> Optional[str]:
    """Why the compiled kernel cannot read ``x_seq: [T, N, *]`` (``None``: it can): the
    extension, a CPU float32/float64 tensor, each step one contiguous block."""
    why = native.input_reason(x_seq, kernel)
    if why is not None:
        return why
    if x_seq.ndim < 2 or x_seq.shape[0] == 0:
        return f"x_seq must be [T, N, *] with T >= 1, got shape {tuple(x_seq.shape)}"
    n = math.prod(x_seq.shape[1:])
    if n and (not x_seq[0].is_contiguous()
              or (x_seq.shape[0] > 1 and x_seq.stride(0) not in (0, n))):
        return (f"x_seq's steps are not one contiguous block each (strides {x_seq.stride()}); "
                "pass x_seq.contiguous()")
    return None


def param_reason(p, like: torch.Tensor, name: str, same_dtype: bool = True) -> Optional[str]:
    """Why the kernels cannot read ``p`` (theta or V0) beside the input ``like``."""
    if isinstance(p, torch.Tensor) and ((same_dtype and p.dtype != like.dtype)
                                        or p.device != like.device):
        return (f"{name} is {p.dtype} on {p.device}, the input {like.dtype} on {like.device} "
                "(the compiled kernels read both in the input's dtype)")
    if not isinstance(p, (torch.Tensor, Real)):
        return f"{name} must be a float or a tensor, got {type(p).__name__}"
    return None


def call_reason(x_seq: torch.Tensor, v_init, v_threshold, kernel: str = "if_forward"):
    """Why the kernel cannot take this call (``None``: it can). A CPU ``v_init`` of another
    dtype is taken (the state buffer is filled from it in Python)."""
    return (layout_reason(x_seq, kernel) or param_reason(v_threshold, x_seq, "v_threshold")
            or param_reason(v_init, x_seq, "v_init", same_dtype=False))


def if_multi_step_cpu(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                      current: str = "instant", store_v_seq: bool = False) -> Optional[tuple]:
    """``(spike_seq [T, N, *], v [N, *], v_seq or None)``, or ``None`` when the kernel cannot take
    this call (:func:`call_reason` says why)."""
    if call_reason(x_seq, v_init, v_threshold) is not None:
        return None
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    n = math.prod(shape)
    v, v0 = state(v_init, shape, x_seq.dtype)
    args = IFLoopArgs(n, T, x_seq.stride(0) if T > 1 else n, param(v_threshold, shape, x_seq.dtype),
                      bool(strict), current == "expected", native.DTYPES[x_seq.dtype],
                      native.threads(), v0)
    spike_seq = buffers.empty(x_seq.shape, x_seq.dtype)
    v_seq = buffers.empty(x_seq.shape, x_seq.dtype) if store_v_seq else None
    native.call("if_forward", *args.forward(x_seq, spike_seq, v, v_seq))
    return spike_seq, v, v_seq


def state(v_init, shape, dtype):
    """``(v, v0)``: the ``[N, *]`` state buffer the kernel runs in place, and V_0 as the kernel
    writes it into each block of v itself (no pass of its own over v), a
    :class:`..kernel_args.Param`, wherever it can read ``v_init``; otherwise v is filled here and
    ``v0`` is ``None``."""
    v = torch.empty(shape, dtype=dtype)
    p = param(v_init, shape, dtype)
    if p is None:
        v.copy_(torch.as_tensor(v_init, dtype=dtype).expand_as(v))
    return v, p


def spike_rate(spike_seq: torch.Tensor, v_threshold, compiled: bool = True) -> torch.Tensor:
    """``N * theta / T`` with ``N = spike_seq.sum(0)``, ``T = spike_seq.shape[0]``:
    ``[T, N, *] -> [N, *]``, the mean current a per-sample layer passes on; ``v_threshold`` a float or a tensor broadcastable to ``[N, *]``.
    Computed as ``spike_seq.sum(0) * theta / T`` (in that order, so that N == M gives the ANN's
    ``M * gamma / L`` bit for bit), in one compiled pass where it can and ``compiled`` (the
    node's loop ran the ``cpu`` path), else in torch."""
    shape = spike_seq.shape[1:]
    ok = (compiled and native.takes(spike_seq, "spike_rate") and spike_seq.is_contiguous()
          and spike_seq.numel() > 0)
    p = param(v_threshold, shape, spike_seq.dtype) if ok else None
    if p is None:
        return spike_seq.sum(0) * v_threshold / spike_seq.shape[0]
    out = torch.empty(shape, dtype=spike_seq.dtype)
    args = IFRateArgs(math.prod(shape), spike_seq.shape[0], p, native.DTYPES[spike_seq.dtype],
                      native.threads())
    native.call("spike_rate", *args.spike_rate(spike_seq, out))
    return out


def recompute_max_t() -> int:
    """The largest T whose backward recomputes h instead of reading it (the kernel's bound)."""
    return getattr(native._module, "RECOMPUTE_MAX_T", 0)


class _IFLoopCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v_init, v_threshold, strict, expected, sg, detach_reset, store_v_seq,
                theta_param):
        T, shape = x_seq.shape[0], x_seq.shape[1:]
        n = math.prod(shape)
        recompute = T <= recompute_max_t()
        v0 = v_init.detach().expand(shape).contiguous()
        v = v0.clone()
        spike = buffers.empty(x_seq.shape, x_seq.dtype)
        h = None if recompute else buffers.empty(x_seq.shape, x_seq.dtype)
        v_seq = buffers.empty(x_seq.shape, x_seq.dtype) if store_v_seq else None
        args = IFLoopArgs(n, T, x_seq.stride(0) if T > 1 else n, theta_param, strict, expected,
                          native.DTYPES[x_seq.dtype], native.threads())  # v holds V_0 already
        native.call("if_forward", *args.forward(x_seq, spike, v, v_seq, h))
        if recompute:  # the backward recomputes h from x_seq and V_0
            ctx.save_for_backward(x_seq, v0, v_init, v_threshold)
        else:
            ctx.save_for_backward(h, None, v_init, v_threshold)
        ctx.args = (args, sg, detach_reset, recompute)
        ctx.set_materialize_grads(False)  # an output nobody reads costs no zero tensor
        return spike, v, v_seq

    @staticmethod
    def backward(ctx, g_spike, g_v, g_vseq):
        h_or_x, v0, v_init, theta = ctx.saved_tensors
        args, sg, detach_reset, recompute = ctx.args
        shape = h_or_x.shape[1:]
        h, x = (None, h_or_x) if recompute else (h_or_x, None)
        g_spike = None if g_spike is None else g_spike.contiguous()
        g_v = None if g_v is None else g_v.contiguous()
        g_vseq = None if g_vseq is None else g_vseq.contiguous()
        dtype = h_or_x.dtype
        g_x = buffers.empty(h_or_x.shape, dtype)
        g_v0 = torch.empty(shape, dtype=dtype) if ctx.needs_input_grad[1] else None
        g_th = torch.empty(shape, dtype=dtype) if ctx.needs_input_grad[2] else None
        args.threads = native.threads()  # the setting now, as at every call (args is this call's)
        native.call("if_backward", *args.backward(h, x, v0, g_spike, g_v, g_vseq, g_x, g_v0,
                                                  g_th, sg, detach_reset))
        g_x = verify.tamper("if_loop", "backward", g_x)
        return (g_x, None if g_v0 is None else _reduce_to(g_v0, v_init),
                None if g_th is None else _reduce_to(g_th, theta), None, None, None, None, None,
                None)


def bptt_call_reason(x_seq, v_init, v_threshold, surrogate_function) -> Optional[str]:
    """Why the kernels cannot take this training call (``None``: they can): as
    :func:`call_reason`, and a surrogate in the table (:mod:`.surrogates`)."""
    why = (call_reason(x_seq, v_init, v_threshold, "if_backward")
           or param_reason(v_init, x_seq, "v_init"))
    if why is not None:
        return why
    if surrogate_function is None:
        return "the BPTT kernels need a surrogate function"
    return surrogates.unsupported_reason(surrogate_function)


def if_multi_step_bptt_cpu(x_seq, v_init: torch.Tensor, v_threshold: torch.Tensor, strict,
                           current, surrogate_function, detach_reset, store_v_seq):
    """As :func:`.dispatch.if_multi_step_bptt` (tensors ``v_init`` and ``v_threshold``), or ``None``
    when the kernels cannot take the call (:func:`bptt_call_reason` says why)."""
    if bptt_call_reason(x_seq, v_init, v_threshold, surrogate_function) is not None:
        return None
    shape = x_seq.shape[1:]
    sg = surrogates.snippet(surrogate_function)
    theta_param = param(v_threshold.detach() if v_threshold.ndim else v_threshold.item(),
                        shape, x_seq.dtype)
    return _IFLoopCPU.apply(x_seq, v_init, v_threshold, bool(strict), current == "expected", sg,
                            bool(detach_reset), bool(store_v_seq), theta_param)
