"""The rate op's reference twin: :func:`sj_qvm.functional.if_multi_step_ref` on ``q`` repeated
over T (a real ``[T, N, *]`` copy, plain autograd ops), then ``spike_seq.sum(0) * theta / T``, the
order in which the ANN computes ``M * gamma / L``. Every path of this package has its signature and
equals it bit for bit (fp32 on CUDA)."""
from __future__ import annotations

import torch

from ...functional import if_multi_step_ref

__all__ = ["if_rate_ref"]


def if_rate_ref(q: torch.Tensor, time_steps: int, v_init, v_threshold, strict: bool = False):
    """``q: [N, *]`` for T steps -> ``(N * theta / T [N, *], V_T [N, *])``."""
    spikes, v, _ = if_multi_step_ref(q.unsqueeze(0).repeat(time_steps, *[1] * q.ndim), v_init,
                                     v_threshold, strict, "expected")
    return spikes.sum(0) * v_threshold / time_steps, v
