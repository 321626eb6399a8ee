"""The rate op's torch path (any device and dtype): the torch IF loop on ``q`` broadcast over T (a
view, no copy), then ``spike_seq.sum(0) * theta / T``, the order in which the ANN computes
``M * gamma / L``."""
from __future__ import annotations

import torch

from ..if_loop.torch import if_multi_step_torch

__all__ = ["if_rate_torch"]


def if_rate_torch(q: torch.Tensor, time_steps: int, v_init, v_threshold, strict: bool = False):
    """``q: [N, *]`` for T steps -> ``(N * theta / T [N, *], V_T [N, *])``."""
    spikes, v, _ = if_multi_step_torch(q.unsqueeze(0).expand(time_steps, *q.shape), v_init,
                                       v_threshold, strict, "expected")
    return spikes.sum(0) * v_threshold / time_steps, v
