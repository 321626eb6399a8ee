"""The sinabs layers a QVM network becomes (imported only when sinabs is installed).

sinabs's ``IAFSqueeze`` with ``MembraneSubtract`` is the soft-reset IF neuron; two things it does
not have are added here, each in sinabs's own extension points:

* :class:`QVMIAFSqueeze` starts every sequence at V0 (``v_init``), not at 0: a fresh state, a
  ``reset_states()`` and a new batch size all begin at V0. Its state takes V0's dtype.
* :class:`QVMSpike` / :class:`QVMStrictSpike`: one spike per step on ``v >= threshold`` or
  ``v > threshold`` (what ``v_init="ceil"`` needs), in the state's dtype. sinabs's
  ``SingleSpike`` fires on ``>=`` only and returns float32 spikes; ``MultiSpike`` fires
  ``floor(v / threshold)`` spikes at once.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from sinabs.activation import MembraneSubtract
from sinabs.activation.spike_generation import BackwardClass
from sinabs.layers import IAFSqueeze

__all__ = ["QVMSpike", "QVMStrictSpike", "QVMIAFSqueeze"]


class QVMSpike(BackwardClass, torch.autograd.Function):
    """sinabs ``spike_fn``: at most one spike per step, ``v_mem >= spike_threshold``."""

    required_states = ["v_mem"]

    @staticmethod
    def fire(v_mem: torch.Tensor, spike_threshold) -> torch.Tensor:
        return v_mem >= spike_threshold

    @classmethod
    def forward(cls, ctx, v_mem, spike_threshold, surrogate_grad_fn):
        ctx.save_for_backward(v_mem.clone())
        ctx.spike_threshold = spike_threshold
        ctx.surrogate_grad_fn = surrogate_grad_fn
        return cls.fire(v_mem, spike_threshold).to(v_mem.dtype)


class QVMStrictSpike(QVMSpike):
    """sinabs ``spike_fn``: at most one spike per step, ``v_mem > spike_threshold`` (ceil)."""

    @staticmethod
    def fire(v_mem: torch.Tensor, spike_threshold) -> torch.Tensor:
        return v_mem > spike_threshold


class QVMIAFSqueeze(IAFSqueeze):
    """``IAFSqueeze`` (input ``[B*T, *]``, batch-major) whose state starts at ``v_init`` (V0, a
    float or a tensor that broadcasts over one sample ``[C, *]``)."""

    def __init__(self, v_init=0.0, **kwargs):
        kwargs.setdefault("reset_fn", MembraneSubtract())
        super().__init__(**kwargs)
        # A parameter, not a buffer: sinabs treats every buffer as a state to reset to 0.
        self.v_init = nn.Parameter(torch.as_tensor(v_init).clone(), requires_grad=False)

    def init_state_with_shape(self, shape, randomize: bool = False) -> None:
        for name, buffer in self.named_buffers():
            self.register_buffer(name, torch.zeros(shape, dtype=self.v_init.dtype,
                                                   device=buffer.device))
        self.reset_states(randomize=randomize)

    def reset_states(self, randomize: bool = False, value_ranges=None):
        super().reset_states(randomize, value_ranges)
        if not randomize and self.is_state_initialised():
            self.v_mem.data.copy_(self.v_init.to(self.v_mem).expand_as(self.v_mem))

    def handle_state_batch_size_mismatch(self, new_batch_size: int):
        """A new batch size is a new sequence: it starts at V0 (sinabs would resample states)."""
        self.init_state_with_shape((new_batch_size, *self.v_mem.shape[1:]))

    @property
    def _param_dict(self) -> dict:
        d = super()._param_dict
        d.update(v_init=self.v_init.detach())
        return d
