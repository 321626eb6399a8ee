"""A DVS128 emulator: an image moved on a virtual screen in front of a DVS pixel model.

CIFAR10-DVS was recorded by showing each CIFAR-10 image, upscaled, on an LCD monitor and moving it
in a repeated closed-loop smooth (RCLS) movement in front of a DVS128 (Li et al. 2017, "CIFAR10-DVS:
An Event-Stream Dataset for Object Classification", Front. Neurosci. 11:309). :func:`emulate_dvs`
does the same in software: the screen and its path are in :mod:`._dvs_screen`, the pixel (log
intensity, a reference level per pixel, ON/OFF thresholds with per-pixel mismatch, refractory
period, ESIM's interpolated multi-crossing events) in :mod:`._dvs_pixel`; leak events, shot noise
and timestamp jitter are added here.

Defaults (:class:`DVSSettings`) and where they come from:

- ``duration_us = 1_300_000``: the mean recording length ``t[-1] - t[0]`` of the real release,
  1,298,444 µs over its 10,000 recordings (jackd/stsc, ``examples/cifar10-dvs/dataset-info.py``);
  SpikingJelly's author gives the range 1,149,758 .. 1,459,301 µs (fangwei123456/spikingjelly
  issue #122).
- events per sample: the same source counts 205,071 events per recording on average. The
  thresholds and the movement's amplitude are fitted so that 32x32 crops of real photographs (as
  CIFAR-10 images are; scikit-learn's two sample photographs) give about as many
  (``benchmarks/bench_emulator.py`` prints the figure).
- ON/OFF ratio: no published figure was found. Closed loops move every edge forth and back, so
  the emulator gives about as many ON as OFF events with equal thresholds (the benchmark prints
  the measured ratio).
- the remaining values (threshold mismatch 0.03, refractory period 0.5 ms, leak and shot-noise
  rates 0.1 Hz per pixel, jitter 100 µs, the monitor's gamma 2.2 and black level 1%) are
  plausible choices of the kind ESIM and v2e expose, not fitted to the release.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ._dvs_pixel import PixelState, crossing_runs, enforce_refractory, expand_runs
from ._dvs_screen import make_canvas, rcls_path, render
from .aedat import DVS128_SENSOR_SIZE, EVENT_DTYPE

__all__ = ["DVSSettings", "emulate_dvs", "check_image", "MAX_STEPS", "MAX_IMAGE_SIDE"]

_WIDTH, _HEIGHT = DVS128_SENSOR_SIZE[:2]
_PIXELS = _WIDTH * _HEIGHT
MAX_STEPS = 100_000
"""The most sub-steps (``duration_us / time_step_us``) one emulation may take."""
MAX_IMAGE_SIDE = 8192
"""The largest image side accepted."""
_MIN_THRESHOLD = 0.01  # a mismatched threshold is clipped here, so none is <= 0
_CHUNK_STEPS = 32      # sub-steps rendered at once: [32, 128, 128] float32 is 2 MiB
_REFERENCE_MARGIN = 1e-3  # the initial reference lies strictly inside (L - C_on, L + C_off)

# (lower, upper, integer?) of every setting; None: unbounded on that side.
_RANGES = {
    "duration_us": (1_000, 60_000_000, True),
    "time_step_us": (10, 1_000_000, True),
    "screen_px": (1, 128, True),
    "amplitude_px": (0.0, 16.0, False),
    "directions": (1, 16, True),
    "loops": (1, 100, True),
    "threshold_on": (_MIN_THRESHOLD, 10.0, False),
    "threshold_off": (_MIN_THRESHOLD, 10.0, False),
    "threshold_sigma": (0.0, 1.0, False),
    "refractory_us": (0, 1_000_000, True),
    "leak_rate_hz": (0.0, 100.0, False),
    "shot_noise_rate_hz": (0.0, 100.0, False),
    "jitter_us": (0.0, 100_000.0, False),
    "black_level": (1e-4, 0.5, False),
    "gamma": (0.1, 5.0, False),
    "background": (0.0, 1.0, False),
    "max_events": (1, 100_000_000, True),
}


@dataclass(frozen=True)
class DVSSettings:
    """Settings of :func:`emulate_dvs`; each is checked at construction (``ValueError`` or
    ``TypeError`` naming it and its allowed range).

    Recording: ``duration_us`` (µs), sampled every ``time_step_us`` (at most :data:`MAX_STEPS`
    sub-steps; brightness is interpolated linearly in between). Screen: the image's longer side
    spans ``screen_px`` sensor pixels, shown with luminance ``black_level + (1 - black_level) *
    value ** gamma`` on a ``background`` surround (a pixel value in [0, 1]). Movement:
    ``loops`` closed loops of out-and-back strokes of ``amplitude_px`` pixels in ``directions``
    directions (0: a static screen). Pixel: contrast thresholds ``threshold_on`` /
    ``threshold_off`` (log intensity) with per-pixel Gaussian mismatch ``threshold_sigma``,
    ``refractory_us``. Noise: leak events (``leak_rate_hz`` ON events per second in a static
    pixel, from a reference that drifts down), shot noise (``shot_noise_rate_hz`` per pixel,
    either polarity) and Gaussian timestamp jitter ``jitter_us``. ``max_events`` bounds the
    output; more raises ``ValueError`` before the events are allocated.
    """
    duration_us: int = 1_300_000
    time_step_us: int = 20_000
    screen_px: int = 100
    amplitude_px: float = 5.0
    directions: int = 4
    loops: int = 1
    threshold_on: float = 0.15
    threshold_off: float = 0.15
    threshold_sigma: float = 0.03
    refractory_us: int = 500
    leak_rate_hz: float = 0.1
    shot_noise_rate_hz: float = 0.1
    jitter_us: float = 100.0
    black_level: float = 0.01
    gamma: float = 2.2
    background: float = 0.0
    max_events: int = 10_000_000

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_setting(field.name, getattr(self, field.name))
        if self.time_step_us > self.duration_us:
            raise ValueError(f"time_step_us must be <= duration_us = {self.duration_us}, "
                             f"got {self.time_step_us}")
        if self.steps > MAX_STEPS:
            raise ValueError(f"duration_us / time_step_us must be <= {MAX_STEPS} sub-steps, got "
                             f"{self.duration_us} / {self.time_step_us} = {self.steps}; raise "
                             f"time_step_us")

    @property
    def steps(self) -> int:
        """The number of sub-steps, ``ceil(duration_us / time_step_us)``."""
        return -(-self.duration_us // self.time_step_us)


def _check_setting(name: str, value) -> None:
    lo, hi, integer = _RANGES[name]
    kind = "an int" if integer else "a number"
    want = f"{kind} in [{lo}, {hi}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral if integer else Real):
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    if not (lo <= value <= hi):  # also False for NaN
        raise ValueError(f"{name} must be {want}, got {value!r}")


def check_image(image) -> np.ndarray:
    """``image`` as float64 ``[H, W]`` in [0, 1]: a 2-D uint8 array (scaled by 1/255) or a
    floating one with values in [0, 1]. Anything else raises ``TypeError`` (dtype) or
    ``ValueError`` (shape, size, NaN or values out of range), naming ``image``."""
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise TypeError(f"image must be a uint8 array (0..255) or a floating one (0..1), got dtype "
                        f"{array.dtype}; scale other integers to [0, 1] first")
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D [H, W] (gray; convert colour to luminance first), "
                         f"got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ValueError(f"image must not be empty, got shape {tuple(array.shape)}")
    if max(array.shape) > MAX_IMAGE_SIDE:
        raise ValueError(f"image sides must be <= {MAX_IMAGE_SIDE}, got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array / 255.0
    array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise ValueError(f"image must be finite, got {int(bad.sum())} NaN or infinite values "
                         f"(the first at [{y}, {x}])")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"a floating image must lie in [0, 1], got values in [{low}, {high}]")
    return array


def _check_seed(seed):
    values = seed if isinstance(seed, (tuple, list)) else (seed,)
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral) or value < 0:
            raise TypeError(f"seed must be an int >= 0 or a tuple of them, got {seed!r}")
    return seed


def emulate_dvs(image, *, seed=0, **settings) -> np.ndarray:
    """Emulate a DVS128 recording of ``image`` moving on a screen, as CIFAR10-DVS was recorded.

    ``image``: ``[H, W]`` uint8 or floating in [0, 1] (gray). ``seed``: an int >= 0 (or a tuple
    of them); the same seed and settings give the same events. ``settings``: the fields of
    :class:`DVSSettings`.

    Returns a structured array ``[N]`` of :data:`~sj_qvm.datasets.EVENT_DTYPE` (``t`` µs in
    ``[0, duration_us)``, ``x``/``y`` in the 128x128 sensor with ``y`` the image's row direction,
    ``p`` 1 for ON), sorted by ``t``, as tonic's transforms take it.
    """
    s = DVSSettings(**settings)
    picture = check_image(image)
    rng = np.random.default_rng(_check_seed(seed))
    canvas = make_canvas(picture, s.screen_px, s.black_level, s.gamma, s.background, s.amplitude_px)
    c_on = np.maximum(s.threshold_on + s.threshold_sigma * rng.standard_normal(_PIXELS), _MIN_THRESHOLD)
    c_off = np.maximum(s.threshold_off + s.threshold_sigma * rng.standard_normal(_PIXELS), _MIN_THRESHOLD)
    drift = s.leak_rate_hz * 1e-6 * c_on  # log units per µs: the reference leaks down by this

    times = np.minimum(np.arange(s.steps + 1, dtype=np.float64) * s.time_step_us, s.duration_us)
    dx, dy = rcls_path(times, s.duration_us, s.amplitude_px, s.directions, s.loops)
    frames = np.empty((_CHUNK_STEPS, _HEIGHT, _WIDTH), dtype=np.float32)
    first = np.log(render(canvas, dx[0], dy[0], frames[0])).reshape(-1).astype(np.float64)
    inside = np.clip(rng.random(_PIXELS), _REFERENCE_MARGIN, 1.0 - _REFERENCE_MARGIN)
    state = PixelState(first - c_on + (c_on + c_off) * inside, np.full(_PIXELS, -np.inf), first, 0.0)

    n_noise = int(rng.poisson(s.shot_noise_rate_hz * _PIXELS * s.duration_us * 1e-6))
    if n_noise > s.max_events:
        raise ValueError(f"the shot noise alone exceeds max_events = {s.max_events} ({n_noise} events)")
    runs = _signal_runs(state, canvas, frames, times, dx, dy, c_on, c_off, drift, s, s.max_events - n_noise)
    address, t = expand_runs(runs)
    noise = rng.integers(0, 2 * _PIXELS, n_noise).astype(np.uint16)  # pixel << 1 | p
    address = np.concatenate([address, noise])
    t = np.concatenate([np.floor(t).astype(np.int64), rng.integers(0, s.duration_us, n_noise)])
    chosen = None
    if n_noise and s.refractory_us:
        chosen = _refractory_with_noise(address, t, noise, s.refractory_us)
        t = t[chosen]
    if s.jitter_us:
        t += np.rint(rng.standard_normal(len(t), dtype=np.float32) * np.float32(s.jitter_us)).astype(np.int64)
    np.clip(t, 0, s.duration_us - 1, out=t)
    order = sort_by_time(t)
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["t"] = t[order]
    address = address[order if chosen is None else chosen[order]]
    pixel = address >> 1
    events["x"] = pixel % _WIDTH
    events["y"] = pixel // _WIDTH
    events["p"] = address & 1
    return events


def _signal_runs(state, canvas, frames, times, dx, dy, c_on, c_off, drift, s, budget):
    """The pixel model's events over all sub-steps, as runs (see :func:`crossing_runs`).

    Sub-steps are rendered ``_CHUNK_STEPS`` at a time; only the pixels whose log intensity over
    the chunk leaves the band ``(r - C_off, r + C_on)`` around their reference can fire in it,
    and only those go through :func:`crossing_runs` (the rest keep their reference).
    """
    runs = []
    for lo in range(1, s.steps + 1, _CHUNK_STEPS):
        hi = min(lo + _CHUNK_STEPS, s.steps + 1)
        block = frames[:hi - lo]
        for j, k in enumerate(range(lo, hi)):
            render(canvas, dx[k], dy[k], block[j])
        log_i = np.log(block, out=block).reshape(hi - lo, _PIXELS)
        # The drift only grows, so these bound the chunk's leak-adjusted log intensity.
        top = log_i.max(axis=0) + times[hi - 1] * drift
        bottom = log_i.min(axis=0) + times[lo] * drift
        ref = state.reference
        active = np.flatnonzero((top - ref >= c_on) | (bottom - ref <= -c_off))
        last = log_i[-1] + times[hi - 1] * drift
        if active.size:
            sub = PixelState(ref[active], state.last_event_us[active], state.sample[active], state.time_us)
            chunk = log_i[:, active] + times[lo:hi, None] * drift[active]
            local, start, step, count = crossing_runs(sub, chunk, times[lo:hi], c_on[active],
                                                      c_off[active], s.refractory_us, budget)
            ref[active], state.last_event_us[active] = sub.reference, sub.last_event_us
            budget -= int(count.sum())
            address = (active[local >> 1] << 1 | (local & 1)).astype(np.uint16)
            runs.append((address, start, step, count))
        state.sample, state.time_us = last, float(times[hi - 1])
    if not runs:
        return np.zeros(0, np.uint16), np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return tuple(np.concatenate(parts) for parts in zip(*runs))


def _refractory_with_noise(address, t, noise, refractory_us):
    """The indices of the events kept when the dead time is applied to the pixels that got shot
    noise (the other pixels' events obey it already), the others first in their order."""
    hit = np.zeros(_PIXELS, dtype=bool)
    hit[noise >> 1] = True
    mixed = hit[address >> 1]
    inside = np.flatnonzero(mixed)
    kept = inside[enforce_refractory(address[inside] >> 1, t[inside], refractory_us)]
    return np.concatenate([np.flatnonzero(~mixed), kept])


def sort_by_time(t: np.ndarray) -> np.ndarray:
    """The stable order of ``t`` (int64, ``0 <= t < 2**32``): two radix passes over 16-bit
    halves (numpy's stable sort of 16-bit keys is a radix sort), several times faster than a
    comparison sort of the int64 keys."""
    low = np.argsort((t & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((t[low] >> 16).astype(np.uint16), kind="stable")]
