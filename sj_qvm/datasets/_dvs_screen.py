"""The virtual screen of the DVS emulator: an image shown on a monitor and moved in front of the sensor.

An image ``[h, w]`` (values in [0, 1]) is resampled onto a square screen of ``screen_px`` sensor
pixels (bicubic when enlarging, area-averaging when shrinking; the aspect ratio is kept), shown
with the monitor's transfer curve (luminance ``black + (1 - black) * value ** gamma``) and
centred in the 128x128 field on a ``background`` surround. The screen then moves along a
repeated closed-loop smooth path (:func:`rcls_path`), and :func:`render` gives the luminance each
sensor pixel sees at a displacement: the canvas sampled bilinearly, i.e. averaged over the pixel's
footprint as the optics would.
"""
from __future__ import annotations

import math

import numpy as np

from .aedat import DVS128_SENSOR_SIZE

__all__ = ["Canvas", "make_canvas", "rcls_path", "render"]

_WIDTH, _HEIGHT = DVS128_SENSOR_SIZE[:2]


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5), the usual "bicubic"."""
    x = np.abs(x)
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``W [n_out, n_in]`` with ``out = W @ in`` along one axis: bicubic for ``n_out >= n_in``
    (edges replicated), the mean over each output pixel's footprint otherwise."""
    rows = np.arange(n_out)
    weights = np.zeros((n_out, n_in))
    if n_out >= n_in:
        src = (rows + 0.5) * (n_in / n_out) - 0.5
        base = np.floor(src).astype(np.int64)
        for tap in range(-1, 3):  # the kernel's four taps
            np.add.at(weights, (rows, np.clip(base + tap, 0, n_in - 1)), _keys_cubic(src - base - tap))
        return weights
    edges = np.arange(n_out + 1) * (n_in / n_out)  # output pixel i covers [edges[i], edges[i+1])
    cells = np.arange(n_in)
    overlap = np.minimum(edges[1:, None], cells[None, :] + 1) - np.maximum(edges[:-1, None], cells[None, :])
    weights = np.clip(overlap, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


class Canvas:
    """The luminance the sensor can see, padded by ``margin`` pixels on every side.

    ``luminance``: float32 ``[128 + 2 margin, 128 + 2 margin]``, indexed ``[y, x]``; sensor pixel
    ``(x, y)`` at displacement 0 sees ``luminance[y + margin, x + margin]``.
    """

    def __init__(self, luminance: np.ndarray, margin: int):
        self.luminance = luminance
        self.margin = margin


def make_canvas(image: np.ndarray, screen_px: int, black_level: float, gamma: float,
                background: float, amplitude_px: float) -> Canvas:
    """The screen showing ``image`` ``[h, w]`` (float in [0, 1]), centred in the sensor's field."""
    h, w = image.shape
    scale = screen_px / max(h, w)
    hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
    shown = _resample_matrix(h, hs) @ image @ _resample_matrix(w, ws).T
    margin = math.ceil(amplitude_px) + 2
    canvas = np.full((_HEIGHT + 2 * margin, _WIDTH + 2 * margin), float(background))
    top, left = margin + (_HEIGHT - hs) // 2, margin + (_WIDTH - ws) // 2
    canvas[top:top + hs, left:left + ws] = np.clip(shown, 0.0, 1.0)
    return Canvas((black_level + (1.0 - black_level) * canvas ** gamma).astype(np.float32), margin)


def rcls_path(times_us: np.ndarray, duration_us: int, amplitude_px: float, directions: int,
              loops: int) -> tuple[np.ndarray, np.ndarray]:
    """The screen's displacement ``(dx, dy)`` in sensor pixels at ``times_us`` ``[K]``.

    A repeated closed-loop smooth movement: ``loops`` times over ``duration_us``, the screen
    moves out and back along ``directions`` directions in turn (angles ``pi * i / directions``:
    0, 45, 90 and 135 degrees for 4), each stroke ``amplitude_px * (1 - cos(2 pi s)) / 2`` for
    its phase ``s`` in [0, 1], so it starts and ends at rest at the origin.
    """
    strokes = loops * directions
    phase = np.clip(np.asarray(times_us, dtype=np.float64) / duration_us, 0.0, 1.0) * strokes
    stroke = np.minimum(np.floor(phase), strokes - 1)
    s = phase - stroke
    angle = np.pi * (stroke % directions) / directions
    reach = amplitude_px * 0.5 * (1.0 - np.cos(2.0 * np.pi * s))
    return reach * np.cos(angle), reach * np.sin(angle)


def render(canvas: Canvas, dx: float, dy: float, out: np.ndarray) -> np.ndarray:
    """Write into ``out`` ``[128, 128]`` (indexed ``[y, x]``) the luminance each sensor pixel sees
    with the screen displaced by ``(dx, dy)``: the canvas at ``(x - dx, y - dy)``, bilinearly."""
    ox, oy = canvas.margin - dx, canvas.margin - dy
    ix, iy = math.floor(ox), math.floor(oy)
    fx, fy = np.float32(ox - ix), np.float32(oy - iy)
    lum = canvas.luminance
    rows = lum[iy:iy + _HEIGHT + 1, ix:ix + _WIDTH] * (1 - fx)
    rows += fx * lum[iy:iy + _HEIGHT + 1, ix + 1:ix + _WIDTH + 1]
    np.multiply(rows[:-1], 1 - fy, out=out)
    out += fy * rows[1:]
    return out
