"""The DVS pixel of the emulator (after ESIM, Rebecq et al. 2018, and v2e, Hu et al. 2021).

Each pixel keeps a reference level ``r`` of log intensity. When the log intensity ``L`` rises to
``r + C_on`` it emits an ON event and ``r`` steps up by ``C_on``; when it falls to ``r - C_off``,
an OFF event and ``r`` steps down by ``C_off``. ``L`` is sampled at the emulator's sub-steps and
taken as linear in time between them; a change that crosses several levels in one sub-step gives
one event per level, at the time ``L`` crosses it (as ESIM interpolates). After an event the
pixel is blind for ``refractory_us``: a crossing within that time moves the reference but emits
nothing (non-paralysable dead time), so per pixel events are at least ``refractory_us`` apart.

:func:`crossings` is vectorized over pixels (one pass per sub-step over all pixels, then only the
pixels that fire); :func:`crossings_ref` is its reference twin, a plain loop over pixels, sub-steps
and levels with the same signature, for the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PixelState", "crossing_runs", "expand_runs", "crossings", "crossings_ref", "enforce_refractory"]

EPS_US = 1e-6
"""Margin (µs) on the refractory test, larger than the rounding of event times: events kept are
more than ``refractory_us`` apart, and still at least that after flooring to integer µs."""


@dataclass
class PixelState:
    """What each pixel remembers between sub-steps; arrays ``[P]`` float64."""
    reference: np.ndarray
    last_event_us: np.ndarray  # -inf before the first event
    sample: np.ndarray         # the last log-intensity sample,
    time_us: float             # taken at this time

    def copy(self) -> "PixelState":
        return PixelState(self.reference.copy(), self.last_event_us.copy(), self.sample.copy(),
                          self.time_us)


def _too_many(total: int, max_events: int) -> ValueError:
    return ValueError(f"the emulation would emit more than max_events = {max_events} events "
                      f"(at least {total}); raise max_events or the contrast thresholds, or "
                      f"shorten duration_us")


def crossings(state: PixelState, log_i: np.ndarray, times_us: np.ndarray, c_on: np.ndarray,
              c_off: np.ndarray, refractory_us: float, max_events: int):
    """Events of the pixels over the samples ``log_i`` ``[K, P]`` taken at ``times_us`` ``[K]``.

    ``c_on``, ``c_off``: ``[P]`` thresholds (> 0). ``state`` (the sample before ``log_i[0]``) is
    updated in place. Returns ``(address [N] uint16, t [N] float64 µs)`` with ``address = pixel
    << 1 | p`` (``p`` 1 for ON), sub-step by sub-step (unsorted within one); raises ``ValueError``
    where ``N > max_events``, before allocating them. ``P <= 2**15``.
    """
    return expand_runs(crossing_runs(state, log_i, times_us, c_on, c_off, refractory_us, max_events))


def crossing_runs(state: PixelState, log_i: np.ndarray, times_us: np.ndarray, c_on: np.ndarray,
                  c_off: np.ndarray, refractory_us: float, max_events: int):
    """:func:`crossings` before expansion: ``(address [R] uint16, start [R], step [R], count
    [R])``, run ``i`` standing for ``count[i]`` events of ``address[i]`` at ``start[i] + j
    step[i]``, ``j < count[i]``."""
    ref, last = state.reference, state.last_event_us
    prev, t_prev = state.sample, state.time_us
    runs = []
    total = 0
    for k in range(log_i.shape[0]):
        cur, t_cur = log_i[k], float(times_us[k])
        d = cur - ref
        fire = np.flatnonzero((d >= c_on) | (d <= -c_off))
        if fire.size:
            dk = d[fire]
            on = dk > 0
            c = np.where(on, c_on[fire], c_off[fire])
            n = np.floor(np.abs(dk) / c)
            l0 = prev[fire]
            slope = np.abs(cur[fire] - l0) / (t_cur - t_prev)  # log units per µs, > 0
            gap = c / slope                                    # µs between two crossings
            first = np.where(on, t_prev + (ref[fire] + c - l0) / slope,
                             t_prev + (l0 - ref[fire] + c) / slope)
            wait = np.ceil((last[fire] + refractory_us + EPS_US - first) / gap)
            j0 = np.maximum(wait, 0.0)                          # first level kept (0-based)
            stride = np.maximum(np.ceil((refractory_us + EPS_US) / gap), 1.0)
            kept = np.where(j0 < n, np.floor((n - 1 - j0) / stride) + 1, 0.0)
            ref[fire] += np.where(on, n, -n) * c
            emits = kept > 0
            start, step = first + j0 * gap, stride * gap
            last[fire] = np.where(emits, start + (kept - 1) * step, last[fire])
            total += int(kept.sum())
            if total > max_events:
                raise _too_many(total, max_events)
            address = (fire[emits] << 1 | on[emits]).astype(np.uint16)
            runs.append((address, start[emits], step[emits], kept[emits].astype(np.int64)))
        prev, t_prev = cur, t_cur
    state.sample, state.time_us = prev.copy(), t_prev
    if not runs:
        return np.zeros(0, np.uint16), np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return tuple(np.concatenate(parts) for parts in zip(*runs))


def expand_runs(runs):
    """The events ``(address [N] uint16, t [N] float64)`` of :func:`crossing_runs`' runs."""
    address, start, step, count = runs
    offsets = np.cumsum(count) - count
    index = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(offsets, count)
    return np.repeat(address, count), np.repeat(start, count) + index * np.repeat(step, count)


def crossings_ref(state: PixelState, log_i: np.ndarray, times_us: np.ndarray, c_on: np.ndarray,
                  c_off: np.ndarray, refractory_us: float, max_events: int):
    """Reference twin of :func:`crossings`: the same model, one pixel, sub-step and level at a
    time (slow; for tests on small inputs)."""
    addresses, times = [], []
    for i in range(log_i.shape[1]):
        ref, last = float(state.reference[i]), float(state.last_event_us[i])
        l0, t0 = float(state.sample[i]), state.time_us
        for k in range(log_i.shape[0]):
            l1, t1 = float(log_i[k, i]), float(times_us[k])
            while l1 - ref >= c_on[i] or l1 - ref <= -c_off[i]:
                up = l1 - ref >= c_on[i]
                level = ref + c_on[i] if up else ref - c_off[i]
                t = t0 + (level - l0) / (l1 - l0) * (t1 - t0)
                if t >= last + refractory_us + EPS_US:
                    addresses.append(i << 1 | int(up))
                    times.append(t)
                    last = t
                ref = level
            l0, t0 = l1, t1
        state.reference[i], state.last_event_us[i] = ref, last
    if len(times) > max_events:
        raise _too_many(len(times), max_events)
    state.sample, state.time_us = log_i[-1].astype(np.float64), float(times_us[-1])
    return np.asarray(addresses, np.uint16), np.asarray(times, np.float64)


def enforce_refractory(pixel: np.ndarray, t: np.ndarray, refractory_us: int) -> np.ndarray:
    """Indices of the events ``(pixel [N], t [N] int64)`` that a pixel with dead time
    ``refractory_us`` lets through (each pixel's first event, then every event at least
    ``refractory_us`` after the last one kept), in ``(pixel, t)`` order."""
    order = np.lexsort((t, pixel))
    if refractory_us <= 0 or len(order) < 2:
        return order
    while True:
        p, tt = pixel[order], t[order]
        close = np.flatnonzero((p[1:] == p[:-1]) & (tt[1:] - tt[:-1] < refractory_us)) + 1
        if not close.size:
            return order
        # Drop only the first violation of each run: the next event may be far enough from the
        # one kept before it once this one is gone.
        first = close[np.r_[True, close[1:] != close[:-1] + 1]]
        order = np.delete(order, first)
