"""What crosses into the compiled kernels (C and CUDA), built in one place.

One record per op carries every scalar a kernel takes, and its methods return the positional
tuple of the C entry point (``sj_qvm/ops/_cpu.c``, whose ``PyArg_ParseTuple`` formats they follow),
so no call site writes a positional list: :class:`IFLoopArgs` (``if_forward``, ``if_backward``),
:class:`IFRateArgs` (``if_rate``, ``spike_rate``), :class:`QuantArgs` (``quant_relu``,
``quant_relu_backward``). Buffers are passed to those methods as tensors (``None``: a null pointer,
which the kernel's flags or sizes say it never reads).

A parameter (θ, γ or V0) reaches every kernel, C or CUDA, in one form, :class:`Param`: a scalar
``value`` where there is no buffer, else the element ``(i / div) % mod`` of a contiguous buffer for
the flat neuron index i (:func:`index_form`: a per-channel ``[C, 1, ...]`` or a per-neuron tensor
without copying it). :func:`param` builds it for the C kernels (the IF loop's θ and V0 in
``if_loop/cpu.py`` and ``if_rate/cpu.py``, QuantReLU's γ in ``quant_relu/cpu.py``),
:func:`cuda_param` for the CUDA kernels (``if_loop/launch.py``, which passes it on with
:func:`~sj_qvm.ops.if_loop.launch.param_args`); the ids that travel beside it are named in
``if_loop/qvm_enums.h`` (:mod:`.enums`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Optional

import torch

from .enums import ROUNDING_IDS


def index_form(p: Optional[torch.Tensor], shape: torch.Size, dtype: torch.dtype = torch.float32):
    """``(contiguous 1-D tensor in dtype, div, mod)`` with ``p`` broadcast to ``shape`` at element
    ``(n / div) % mod`` of the flat index n; ``(None, 1, 1)`` for ``None``."""
    if p is None:
        return None, 1, 1
    padded = (1,) * (len(shape) - p.ndim) + tuple(p.shape)
    if p.ndim > len(shape) or any(a not in (1, b) for a, b in zip(padded, shape)):
        raise ValueError(f"a tensor of shape {tuple(p.shape)} does not broadcast to {tuple(shape)}")
    dims = [i for i, s in enumerate(padded) if s != 1]
    if not dims:
        return p.reshape(1).to(dtype).contiguous(), 1, 1
    i, j = dims[0], dims[-1] + 1
    if all(padded[k] == shape[k] for k in range(i, j)):
        return (p.to(dtype).contiguous().reshape(-1), math.prod(shape[j:]),
                math.prod(shape[i:j]))
    return p.expand(shape).to(dtype).contiguous().reshape(-1), 1, math.prod(shape)


@dataclass(frozen=True)
class Param:
    """A parameter as the kernels read it; ``tensor`` keeps the buffer alive through the call."""
    tensor: Optional[torch.Tensor]
    addr: int
    value: float
    div: int = 1
    mod: int = 1

    def args(self) -> tuple:
        """``(addr, value, div, mod)``: the four kernel arguments, in the kernels' order."""
        return self.addr, self.value, self.div, self.mod


def param(p, shape, dtype: torch.dtype) -> Optional[Param]:
    """``p`` (a float, or a CPU tensor of ``dtype`` that broadcasts to ``shape``) as a
    :class:`Param`; ``None`` where the kernels cannot read it (another dtype or device, or not a
    number). A tensor of one value travels as a scalar, so the loops run unsegmented."""
    if isinstance(p, torch.Tensor):
        if p.dtype != dtype or p.device.type != "cpu":
            return None
        t, div, mod = index_form(p.detach(), shape, dtype)
        if mod == 1:
            return Param(None, 0, t.item())
        return Param(t, t.data_ptr(), 0.0, div, mod)
    if isinstance(p, Real) and not isinstance(p, bool):
        return Param(None, 0, float(p))
    return None


def cuda_param(p: Optional[torch.Tensor], value: float, shape) -> Param:
    """θ or V0 as the CUDA kernels read it: ``p`` (a tensor already on the input's device, or
    ``None`` for the scalar ``value``) as an fp32 buffer in :func:`index_form`. The buffer's
    address is taken at launch, where :func:`sj_qvm.ops.if_loop.launch.array` checks it."""
    t, div, mod = index_form(p, shape)
    return Param(t, 0, value, div, mod)


def _addr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _v0_args(v0: Optional[Param]) -> tuple:
    """V_0's five kernel arguments ``(fill, addr, value, div, mod)``: with ``fill`` 0 the kernel
    leaves the state buffer as it is (the caller wrote V_0 into it)."""
    return (0, 0, 0.0, 1, 1) if v0 is None else (1,) + v0.args()


@dataclass(slots=True)
class IFLoopArgs:
    """The multi-step IF loop's kernel arguments for ``x_seq: [T, N, *]``, ``n`` = prod(N, *)
    neurons per step. ``x_tstride``: the input's step stride, ``n`` or 0 (one step broadcast over
    T). ``v0``: where the kernel writes V_0 into the state itself; ``None``: the state buffer
    already holds it. ``dtype``: the kernels' id of the input dtype (``native.DTYPES``)."""
    n: int
    time_steps: int
    x_tstride: int
    theta: Param
    strict: bool
    expected: bool
    dtype: int
    threads: int
    v0: Optional[Param] = None

    def forward(self, x_seq, spike_seq, v, v_seq=None, h_seq=None) -> tuple:
        """``if_forward``'s arguments; it writes spikes, V_T into ``v`` (in place) and, where
        given, every V_t and h_t = U_t - theta."""
        return (x_seq.data_ptr(), self.x_tstride, spike_seq.data_ptr(), v.data_ptr(),
                *_v0_args(self.v0), _addr(v_seq), _addr(h_seq), *self.theta.args(), self.n,
                self.time_steps, int(self.strict), int(self.expected), self.dtype, self.threads)

    def backward(self, h_seq, x_seq, v0, g_spike, g_v, g_v_seq, g_x, g_v0, g_theta,
                 surrogate: tuple, detach_reset: bool) -> tuple:
        """``if_backward``'s arguments: ``h_seq`` stored by the forward, or ``x_seq`` and the
        ``[N, *]`` V_0 buffer ``v0`` to recompute it; ``surrogate`` is ``(id, p0, p1)``
        (:mod:`.if_loop.surrogates`)."""
        return (_addr(h_seq), _addr(x_seq), self.x_tstride, _addr(v0), _addr(g_spike), _addr(g_v),
                _addr(g_v_seq), g_x.data_ptr(), _addr(g_v0), _addr(g_theta), *self.theta.args(),
                self.n, self.time_steps, int(self.strict), int(self.expected), int(detach_reset),
                *surrogate, self.dtype, self.threads)


@dataclass(slots=True)
class IFRateArgs:
    """The rate op's kernel arguments: T steps of ``n`` neurons, ``N * theta / T`` out."""
    n: int
    time_steps: int
    theta: Param
    dtype: int
    threads: int
    strict: bool = False
    v0: Optional[Param] = None

    def if_rate(self, q, v, out) -> tuple:
        """``if_rate``'s arguments: T IF steps on the constant current ``q: [N, *]``."""
        return (q.data_ptr(), v.data_ptr(), *_v0_args(self.v0), out.data_ptr(),
                *self.theta.args(), self.n, self.time_steps, int(self.strict), self.dtype,
                self.threads)

    def spike_rate(self, spike_seq, out) -> tuple:
        """``spike_rate``'s arguments: the rate of a ``[T, N, *]`` spike train."""
        return (spike_seq.data_ptr(), out.data_ptr(), self.n, self.time_steps,
                *self.theta.args(), self.dtype, self.threads)


@dataclass(slots=True)
class QuantArgs:
    """QuantReLU's kernel arguments for ``n`` elements; ``rounding`` by name (its id is read from
    ``qvm_enums.h``)."""
    n: int
    gamma: Param
    levels: int
    rounding: str
    dtype: int
    threads: int

    def forward(self, x, out) -> tuple:
        """``quant_relu``'s arguments."""
        return (x.data_ptr(), out.data_ptr(), self.n, self.dtype, *self.gamma.args(), self.levels,
                ROUNDING_IDS[self.rounding], self.threads)

    def backward(self, x, g, g_x, g_gamma_acc) -> tuple:
        """``quant_relu_backward``'s arguments; ``g_gamma_acc: [threads, gamma.mod]`` float64."""
        return (x.data_ptr(), g.data_ptr(), _addr(g_x), _addr(g_gamma_acc), self.n, self.dtype,
                *self.gamma.args(), self.levels, ROUNDING_IDS[self.rounding], self.threads)


__all__ = ["Param", "param", "cuda_param", "index_form", "IFLoopArgs", "IFRateArgs", "QuantArgs"]
