"""Threshold searches over a bounded sample of activations: the per-channel MSE-optimal gamma
(closed form from sorted samples), percentiles, and the sample pool they read.

``E(gamma) = sum_x (a_gamma(x) - relu(x))^2`` with ``a_gamma`` the QuantReLU of eq. 4;
:func:`mse_gamma` evaluates ``E`` from the sorted samples (prefix sums) on a grid of gamma in
``(0, max]`` refined around its best points, so it costs a sort, not a pass per gamma.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

__all__ = ["Pool", "mse_gamma", "percentile_gamma", "quantization_error", "sorted_rows",
           "sorted_rows_reference"]

_GRID, _TOP, _REFINE = 256, 4, 64


class Pool:
    """A bounded sample of one activation ``x: [B, C, *]``: kept values ``[C, S]`` (the same S
    positions in every channel) and the per-channel mean of ``x`` over all positions, for bias
    correction. ``channel_wise=False`` pools the C rows into one when read."""

    def __init__(self, max_samples: int, channel_wise: bool):
        # max_samples = 0 keeps only the channel means.
        self.max_samples, self.channel_wise = max_samples, channel_wise
        self.chunks: List[torch.Tensor] = []
        self.cols = 0
        self.per_batch: Optional[int] = None
        self.sum: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, x: torch.Tensor, batch_index: int) -> None:
        x = x.detach()
        # [B, C, S]; position p of a channel is (p // S, p % S), the order of
        # x.movedim(1, 0).reshape(C, -1), read without copying x.
        x3 = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim >= 2 else x.reshape(1, 1, -1)
        B, rows, S = x3.shape
        # Per channel: a float32 sum over each sample's positions (a float64 reduction of
        # [B, C, S] is ten times slower), the B partial sums added in float64.
        wide = torch.float64 if x3.dtype == torch.float64 else torch.float32
        s = x3.sum(2, dtype=wide).to(torch.float64).sum(0).cpu()
        self.sum = s if self.sum is None else self.sum + s
        self.count += B * S
        if self.max_samples == 0:
            return
        budget = max(1, self.max_samples // rows)
        if self.per_batch is None:
            self.per_batch = max(1, budget // 4)
        if B * S > self.per_batch:
            g = torch.Generator().manual_seed(batch_index)
            p = torch.randint(B * S, (self.per_batch,), generator=g, device="cpu").to(x.device)
            v = x3[p // S, :, p % S].T                                       # [C, per_batch]
        else:
            v = x3.movedim(1, 0).reshape(rows, -1)
        self.chunks.append(v.to(torch.float32).cpu())
        self.cols += v.shape[1]
        while self.cols > budget:
            self.chunks = [c[:, ::2] for c in self.chunks]
            self.cols = sum(c.shape[1] for c in self.chunks)
            self.per_batch = max(1, self.per_batch // 2)

    @property
    def finite(self) -> bool:
        """False once a value added was NaN or +-inf (the running sums are then not finite)."""
        return self.sum is None or bool(torch.isfinite(self.sum).all())

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    def values(self, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``relu`` of the kept values after adding ``shift: [C]``: ``[C, S]`` float64 per channel,
        ``[1, C*S]`` per layer."""
        if not self.chunks:
            raise ValueError("no calibration activations were recorded")
        v = torch.cat(self.chunks, 1).to(torch.float64)
        if shift is not None:
            v = v + shift.view(-1, 1)
        v = v.clamp_(min=0)
        return v if self.channel_wise else v.reshape(1, -1)


def sorted_rows_reference(x: torch.Tensor) -> torch.Tensor:
    """Each row of ``x: [C, S]`` in ascending order, ``[C, S]``: ``torch.sort``."""
    return x.sort(1).values


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """As :func:`sorted_rows_reference`; on the CPU it runs numpy's vectorised sort, several
    times faster than torch's there (a sort is the bulk of a calibration's threshold search).
    The sorted values are the same, whatever the algorithm."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.requires_grad:
        return sorted_rows_reference(x)
    return torch.from_numpy(np.sort(x.contiguous().numpy(), axis=1))


def _prefix_sums(xs: torch.Tensor) -> torch.Tensor:
    """``[C, S + 1]``: column j holds the sum of the first j values of each row of
    ``xs: [C, S]``."""
    return torch.cat([xs.new_zeros(xs.shape[0], 1), xs.cumsum(1)], 1)


def _level_counts(xs: torch.Tensor, gamma: torch.Tensor, levels: int, rounding: str,
                  p1: Optional[torch.Tensor] = None):
    """``(sum_x M(x) * x, sum_x M(x)^2)`` for sorted ``xs: [C, S]`` and ``gamma: [C, K]``;
    ``p1`` is ``_prefix_sums(xs)`` where the caller has it."""
    C, S = xs.shape
    delta = (gamma / levels).unsqueeze(-1)                                   # [C, K, 1]
    k = torch.arange(1, levels + 1, dtype=xs.dtype, device=xs.device)        # [L]
    offset = {"floor": 0.0, "round": -0.5, "ceil": -1.0}[rounding]
    bounds = (k + offset) * delta                                            # [C, K, L]
    # M(x) = #{k : x >= b_k} (floor, round half-up) or #{k : x > b_k} (ceil).
    below = torch.searchsorted(xs, bounds.reshape(C, -1), right=rounding == "ceil")
    below = below.reshape(bounds.shape)
    p1 = _prefix_sums(xs) if p1 is None else p1                              # [C, S + 1]
    tail = p1[:, -1:].unsqueeze(-1) - torch.gather(p1, 1, below.reshape(C, -1)).reshape(below.shape)
    sum_mx = tail.sum(-1)                                                    # [C, K]
    sum_m2 = ((2 * k - 1) * (S - below)).sum(-1)                             # [C, K]
    return sum_mx, sum_m2


def quantization_error(xs: torch.Tensor, gamma: torch.Tensor, levels: int, rounding: str,
                       p1: Optional[torch.Tensor] = None):
    """``E(gamma) - sum x^2`` for sorted ``xs: [C, S] >= 0`` and candidate ``gamma: [C, K]``
    (``p1``: the rows' prefix sums, computed here if not given)."""
    sum_mx, sum_m2 = _level_counts(xs, gamma, levels, rounding, p1)
    delta = gamma / levels
    return delta * delta * sum_m2 - 2 * delta * sum_mx


def mse_gamma(values: torch.Tensor, levels: int, rounding: str) -> torch.Tensor:
    """Per row of ``values: [C, S]`` (``relu`` outputs), the gamma minimising the quantization
    error, ``[C]`` float64; 0 where a row holds only zeros.

    ``E(gamma)`` is piecewise smooth with a kink wherever a level boundary crosses a sample, so
    the search keeps the ``_TOP`` best points of a ``_GRID``-point grid on ``(0, max]`` and
    searches ``_REFINE`` points around each.
    """
    xs = sorted_rows(values.to(torch.float32)).to(torch.float64)
    top, p1 = xs[:, -1:], _prefix_sums(xs)
    r = torch.arange(1, _GRID + 1, dtype=xs.dtype) / _GRID
    err = quantization_error(xs, top * r, levels, rounding, p1)
    best = err.topk(min(_TOP, _GRID), dim=1, largest=False).indices.to(xs.dtype) + 1  # [C, TOP]
    lo = (best - 1).clamp(min=0.25) / _GRID
    hi = (best + 1).clamp(max=_GRID) / _GRID
    t = torch.linspace(0, 1, _REFINE + 1, dtype=xs.dtype)
    fine = (lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * t).flatten(1)           # [C, TOP*R]
    cand = torch.cat([top * fine, top * best / _GRID], 1)
    pick = quantization_error(xs, cand, levels, rounding, p1).argmin(1, keepdim=True)
    return torch.gather(cand, 1, pick).squeeze(1)


def percentile_gamma(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per row of ``values: [C, S]``, its ``q``-th percentile (numpy's linear interpolation)."""
    xs = sorted_rows(values)
    pos = q / 100.0 * (xs.shape[1] - 1)
    lo = int(pos)
    hi = min(lo + 1, xs.shape[1] - 1)
    return xs[:, lo] + (xs[:, hi] - xs[:, lo]) * (pos - lo)
