"""What crosses into the compiled CPU kernels, built in one place.

A parameter (θ, γ or V0) reaches every kernel in one form, :class:`Param`: a scalar ``value``
where ``addr`` is 0, else the element ``(i / div) % mod`` of a contiguous buffer for the flat
neuron index i (:func:`sj_qvm.ops.if_loop.launch.index_form`: a per-channel ``[C, 1, ...]`` or a
per-neuron tensor without copying it). :func:`param` is the one function that builds it, for
the IF loop's θ and V0 (``if_loop/cpu.py``, ``if_rate/cpu.py``) and QuantReLU's γ
(``quant_relu/cpu.py``); the ids that travel beside it are named in ``if_loop/qvm_enums.h``
(:mod:`.enums`).
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Optional

import torch

from .if_loop.launch import index_form


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


__all__ = ["Param", "param"]
