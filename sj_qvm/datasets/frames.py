"""Event-to-frame integration, identical to SpikingJelly's ``integrate_events_by_fixed_frames_number``.

SpikingJelly splits ``N`` events into ``T`` segments ``[j_l, j_r)`` and counts each segment's
events per (polarity, y, x):

- ``split_by="number"``: ``j_l = (N // T) * i``, ``j_r = j_l + N // T``, the last segment ends at N.
- ``split_by="time"``: ``dt = (t[-1] - t[0]) // T``; window ``i`` is ``t[0] + dt*i <= t < t[0] +
  dt*(i+1)``; ``j_l``/``j_r - 1`` are the first/last event index in the window, the last segment
  ends at N.

SpikingJelly raises ``IndexError`` when a time window holds no event (and so whenever
``t[-1] - t[0] < T``). Here an empty window gives a zero frame instead; for time-sorted events the
window's segment is then empty and the last frame starts at the first event at or after its
window start, so every event is still counted once.

Counting runs in the C extension ``_count`` (one pass over the events, read in place, split over
``sj_qvm.ops.settings.threads()`` threads, at most 16, for large recordings) when it was built at
install time, and otherwise in numpy; :data:`NATIVE` tells which. Both give the same frames, and
so does the reference twin :func:`events_to_frames_ref`.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ..checks import check_choice, check_int
from ..ops import settings
from .aedat import DVS128_SENSOR_SIZE

try:
    from . import _count as _native
except ImportError:  # installed without a C compiler
    _native = None

__all__ = [
    "SPLIT_BY", "FRAME_DTYPE", "NATIVE", "EVENT_FIELDS", "MAX_FRAMES_BYTES",
    "check_split_by", "check_sensor_size", "check_frame_args", "events_to_frames", "events_to_frames_ref",
]

SPLIT_BY = ("number", "time")
FRAME_DTYPE = np.dtype(np.uint32)
NATIVE = _native is not None
"""Whether :func:`events_to_frames` counts in the C extension (else in numpy)."""
_CHUNK = 1 << 17  # events per step: temporaries stay in cache
_EVENTS_PER_THREAD = 1 << 17  # each thread gets at least this many: starting one costs ~0.1 ms
_NATIVE_MAX_SIDE = 1 << 15
EVENT_FIELDS = ("t", "x", "y", "p")
MAX_FRAMES_BYTES = 16 << 30
"""The largest ``[T, 2, H, W]`` uint32 output :func:`events_to_frames` allocates (16 GiB); larger
settings are refused up front, before any memory is taken."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_split_by(split_by) -> str:
    return check_choice(split_by, SPLIT_BY, "split_by")


def check_sensor_size(sensor_size) -> tuple[int, int]:
    """``sensor_size = (W, H, P)`` (tonic's order: width, height, polarities) checked; returns
    ``size_hw = (H, W)``, the order of the frames' last two axes.

    Raises ``ValueError`` naming ``sensor_size`` unless it is three integers >= 1 (booleans are not
    sizes) with ``P == 2`` (a frame has one channel per polarity). A pair such as ``(H, W)`` is
    refused by name rather than read as something else.
    """
    try:
        sizes = tuple(sensor_size)
    except TypeError:
        sizes = None
    if sizes is not None and len(sizes) == 2:
        raise ValueError(
            f"sensor_size must be (W, H, P) = (width, height, polarities), as tonic states it, e.g. "
            f"{DVS128_SENSOR_SIZE}; got the pair {sensor_size!r}: give (width, height, 2)"
        )
    if sizes is None or len(sizes) != 3 or not all(_is_int(s) and s >= 1 for s in sizes):
        raise ValueError(
            f"sensor_size must be (W, H, P) = (width, height, polarities) with integers >= 1, "
            f"got {sensor_size!r}"
        )
    if sizes[2] != 2:
        raise ValueError(f"sensor_size must have P = 2 polarities (one frame channel each), got {sensor_size!r}")
    return int(sizes[1]), int(sizes[0])


def check_frame_args(frames_number, split_by, sensor_size) -> tuple[int, int]:
    """Validate the integration settings; return ``size_hw = (H, W)``.

    ``frames_number``: an int >= 1 (:func:`sj_qvm.checks.check_int`); ``split_by``: one of
    :data:`SPLIT_BY`; ``sensor_size``: ``(W, H, P)`` (:func:`check_sensor_size`). Raises
    ``ValueError`` (``TypeError`` for a ``frames_number`` that is not an int) naming the argument,
    also for settings whose output ``frames_number * 2 * H * W * 4`` bytes would exceed
    :data:`MAX_FRAMES_BYTES`.
    """
    check_int(frames_number, "frames_number", minimum=1)
    check_split_by(split_by)
    height, width = check_sensor_size(sensor_size)
    nbytes = int(frames_number) * 2 * height * width * FRAME_DTYPE.itemsize
    if nbytes > MAX_FRAMES_BYTES:
        raise ValueError(
            f"frames_number={frames_number} with sensor_size (W, H, P) = ({width}, {height}, 2) needs "
            f"[{frames_number}, 2, {height}, {width}] {FRAME_DTYPE} frames, {nbytes / 2**30:.1f} GiB; "
            f"the limit is MAX_FRAMES_BYTES = {MAX_FRAMES_BYTES / 2**30:.0f} GiB"
        )
    return height, width


def _columns(events) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``t`` (int64 or finite float), ``x``, ``y``, ``p`` of ``events``, each ``[N]``.

    Coordinates and polarity must be integers: an integer dtype, or a float column whose values
    are all integral (never truncated). Raises ``ValueError`` naming the field otherwise, for a
    missing field, a column that is not 1-D, and columns of different lengths.
    """
    columns = []
    for key in EVENT_FIELDS:
        try:
            column = np.asarray(events[key])
        except (KeyError, ValueError, IndexError, TypeError) as error:
            raise ValueError(
                f"events has no field {key!r}: expected a structured array or a mapping with the "
                f"fields {EVENT_FIELDS}"
            ) from error
        if column.ndim != 1:
            raise ValueError(f"events[{key!r}] must be 1-D [N], got shape {list(column.shape)}")
        columns.append(column)
    t, x, y, p = columns
    if not len(t) == len(x) == len(y) == len(p):
        raise ValueError(f"events fields differ in length: t {len(t)}, x {len(x)}, y {len(y)}, p {len(p)}")
    if t.dtype.kind in "iub":
        t = t.astype(np.int64, copy=False)
    elif t.dtype.kind == "f":
        if len(t) and not (np.isfinite(t.min()) and np.isfinite(t.max())):
            raise ValueError("events['t'] holds NaN or infinite timestamps")
    else:
        raise ValueError(f"events['t'] must be integer or float, got dtype {t.dtype}")
    for key, column, kinds in (("x", x, "iu"), ("y", y, "iu"), ("p", p, "biu")):
        if column.dtype.kind in kinds:
            continue
        if column.dtype.kind != "f":
            raise ValueError(f"events[{key!r}] must hold integers, got dtype {column.dtype}")
        if len(column) and not np.all(np.isfinite(column) & (column == np.floor(column))):
            bad = column[~(np.isfinite(column) & (column == np.floor(column)))][0]
            raise ValueError(f"events[{key!r}] must hold integers, got the {column.dtype} value {bad}")
    return t, x, y, p


def _is_sorted(t: np.ndarray) -> bool:
    for a in range(0, len(t) - 1, _CHUNK):  # cache-sized steps: no N-byte temporary
        b = min(a + _CHUNK, len(t) - 1)
        if not np.all(t[a + 1 : b + 1] >= t[a:b]):
            return False
    return True


def _segments(t: np.ndarray, split_by: str, frames_number: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment bounds ``(j_l, j_r)``, each ``[T]`` int64, for non-empty ``t``."""
    n = len(t)
    arange = np.arange(frames_number, dtype=np.int64)
    if split_by == "number":
        step = n // frames_number
        j_l = arange * step
        j_r = j_l + step
        j_r[-1] = n
        return j_l, j_r

    t = np.ascontiguousarray(t)  # one strided read here, not one per pass below
    dt = (t[-1] - t[0]) // frames_number
    if dt <= 0:  # every window is empty; as for any empty last window, the last frame takes all
        j_l = np.zeros(frames_number, dtype=np.int64)
        j_r = np.zeros(frames_number, dtype=np.int64)
        j_r[-1] = n
        return j_l, j_r
    t_l = np.array([dt * i + t[0] for i in range(frames_number)], dtype=t.dtype)
    t_r = t_l + dt
    if _is_sorted(t):
        j_l = np.searchsorted(t, t_l, side="left").astype(np.int64)
        j_r = np.searchsorted(t, t_r, side="left").astype(np.int64)
        empty = j_r <= j_l
        j_r[empty] = j_l[empty]
        j_r[-1] = n
        return j_l, j_r
    # Unsorted timestamps: SpikingJelly's first/last-index semantics, window by window.
    j_l = np.zeros(frames_number, dtype=np.int64)
    j_r = np.zeros(frames_number, dtype=np.int64)
    for i in range(frames_number):
        inside = np.flatnonzero((t >= t_l[i]) & (t < t_r[i]))
        if inside.size:
            j_l[i], j_r[i] = inside[0], inside[-1] + 1
    if j_r[-1] == 0:  # empty last window: keep the events after the last window start
        j_l[-1] = n
    j_r[-1] = n
    return j_l, j_r


def events_to_frames(
    events,
    frames_number: int,
    split_by: str = "number",
    sensor_size: tuple[int, int, int] = DVS128_SENSOR_SIZE,
) -> np.ndarray:
    """Count events into ``frames_number`` frames.

    ``events``: a structured array (or mapping) with fields ``t``, ``x``, ``y``, ``p``, shape
    ``[N]``; ``sensor_size = (W, H, P)`` as in tonic (default the DVS128's ``(128, 128, 2)``),
    with ``0 <= x < W``, ``0 <= y < H`` and ``P = 2``.

    Returns ``frames: [T, 2, H, W]`` of dtype :data:`FRAME_DTYPE` (uint32: exact for any
    recording, a quarter of SpikingJelly's float64), channel ``p != 0``,
    ``frames[i, c, y, x] = #{k in [j_l[i], j_r[i]) : (p_k != 0, y_k, x_k) = (c, y, x)}``.
    Equal to SpikingJelly's ``integrate_events_by_fixed_frames_number`` wherever that returns;
    zero frames for its empty-window ``IndexError``; all zeros for ``N = 0``. For time-sorted
    events (and always with ``split_by="number"``) ``frames.sum() == N``.

    Raises ``ValueError`` for bad settings (:func:`check_frame_args`: also an output over
    :data:`MAX_FRAMES_BYTES`), a missing field, NaN or infinite ``t``, non-integer ``x``/``y``/``p``
    (complex, or floats with a fraction: never truncated), or events outside ``sensor_size``
    (SpikingJelly fails on that too, with a reshape error).
    """
    height, width = check_frame_args(frames_number, split_by, sensor_size)  # size_hw
    t, x, y, p = _columns(events)
    if len(t) == 0:
        return np.zeros((frames_number, 2, height, width), dtype=FRAME_DTYPE)
    j_l, j_r = _segments(t, split_by, frames_number)
    frames = np.zeros((frames_number, 2, height, width), dtype=FRAME_DTYPE)
    if not _count_native(x, y, p, j_l, j_r, frames):
        _count_numpy(x, y, p, j_l, j_r, frames)
    return frames


def _count_native(x, y, p, j_l, j_r, frames: np.ndarray) -> bool:
    """Count with the C extension; ``False`` where it is not built, cannot read these columns or
    takes no sensor this large."""
    height, width = frames.shape[2:]
    if (
        _native is None
        or max(height, width) > _NATIVE_MAX_SIDE
        or not all(
            a.ndim == 1 and a.dtype.isnative and a.dtype.kind in kinds
            for a, kinds in ((x, "iu"), (y, "iu"), (p, "biu"))
        )
    ):
        return False
    threads = max(1, min(settings.threads(), 16, len(x) // _EVENTS_PER_THREAD))  # 16: _count.c
    bad = _native.count(x, y, p, j_l, j_r, height, width, frames.reshape(-1), threads)
    if bad >= 0:
        raise _outside_sensor(x, y, height, width)
    return True


def _count_numpy(x, y, p, j_l, j_r, frames: np.ndarray) -> None:
    """The numpy path: per segment, a pixel index in cache-sized runs, counted by bincount."""
    frames_number, _, height, width = frames.shape
    counts = frames.reshape(frames_number, -1)
    for i, (lo, hi) in enumerate(zip(j_l, j_r)):
        for a in range(int(lo), int(hi), _CHUNK):
            b = min(a + _CHUNK, int(hi))
            index = _pixel_index(x[a:b], y[a:b], p[a:b], height, width)
            counts[i] += _bincount(index, 2 * height * width).astype(FRAME_DTYPE, copy=False)


def _outside_sensor(x, y, height: int, width: int) -> ValueError:
    return ValueError(
        f"events have x in [{x.min()}, {x.max()}] and y in [{y.min()}, {y.max()}], "
        f"outside sensor_size (W, H, P) = ({width}, {height}, 2)"
    )


def _bincount(index: np.ndarray, bins: int) -> np.ndarray:
    """``np.bincount(index, minlength=bins)``; torch's counts int16/int32 indices without first
    widening them to intp, about twice as fast here."""
    signed = index.view(np.int16 if index.dtype.itemsize == 2 else np.int32)
    return torch.bincount(torch.from_numpy(signed), minlength=bins).numpy()


def _pixel_index(x: np.ndarray, y: np.ndarray, p: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(p != 0) * H * W + y * W + x`` per event, ``[N]``, in the smallest type that holds
    ``2 * H * W`` bins (less memory traffic than intp); raises for events outside the sensor."""
    # Indices stay below 2**15 (or 2**31), so _bincount can read them as signed.
    kind = np.uint16 if 2 * height * width <= 1 << 15 else np.uint32
    narrow = all(a.dtype.kind in "iu" and a.dtype.itemsize <= 2 for a in (x, y))
    if narrow:
        # Contiguous uint16 copies; a negative coordinate wraps to >= 2**15, so one max per
        # axis checks both bounds.
        xs, ys = x.astype(np.uint16), y.astype(np.uint16)
        outside = xs.max() >= width or ys.max() >= height
    else:
        xs, ys = x, y
        outside = x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height
    if outside:
        raise _outside_sensor(x, y, height, width)
    index = ys.astype(kind, copy=not narrow)  # never the caller's array
    index *= kind(width)
    np.add(index, xs, out=index, casting="unsafe")
    index += (p != 0).view(np.uint8) * kind(height * width)
    return index


def events_to_frames_ref(
    events,
    frames_number: int,
    split_by: str = "number",
    sensor_size: tuple[int, int, int] = DVS128_SENSOR_SIZE,
) -> np.ndarray:
    """Reference twin of :func:`events_to_frames`: same segments, one ``np.add.at`` per frame."""
    height, width = check_frame_args(frames_number, split_by, sensor_size)
    t, x, y, p = _columns(events)
    frames = np.zeros((frames_number, 2, height, width), dtype=FRAME_DTYPE)
    if len(t) == 0:
        return frames
    j_l, j_r = _segments(t, split_by, frames_number)
    for i, (lo, hi) in enumerate(zip(j_l, j_r)):
        np.add.at(frames[i], ((p[lo:hi] != 0).astype(np.intp), y[lo:hi], x[lo:hi]), 1)
    return frames
