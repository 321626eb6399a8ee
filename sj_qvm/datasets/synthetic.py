"""Offline recordings in the real formats: DVS128 Gesture and CIFAR10-DVS look-alikes.

The writers lay out releases that :class:`~sj_qvm.datasets.DVSGesture` and
:class:`~sj_qvm.datasets.CIFAR10DVS` read through exactly the code path used for the real data:
AEDAT 3.1 files with labels CSVs and trial lists, and per-class AEDAT 2.0 files.

The events are learnable. Each class moves bright shapes in its own way (translation, rotation,
oscillation, expansion), and a shape emits events on its contour where the edge moves: the rate is
proportional to ``|v . n|`` (edge speed along the outward normal ``n``), the polarity is ON on the
leading edge (``v . n > 0``) and OFF on the trailing one, as a DVS sees a bright object on a dark
background. Every sample varies in position, size, speed, phase and event count, and carries
uniform background activity. Everything is deterministic given ``seed``.

The background activity (``noise``, events at uniformly random pixels and times, as a real sensor's
leak and shot-noise events) defaults to as many events as the shapes emit. It is what keeps the
task honest for QAT: with an almost silent background (``noise=0.1``) most of every frame is exactly
zero, the first layer answers it with one constant per channel, and a net trained at L = 4 learns
to hide that constant under the rounding dead zone of L = 4 (below γ/8). Such a net works only at
that L: at L = 8, with plain clip, and in the SNN at T ≠ L it falls to near chance
(examples/dvs_gesture/README.md has the measurements).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..checks import check_int, check_positive
from .aedat import DVS128_SENSOR_SIZE, EVENT_DTYPE, write_aedat2, write_aedat31
from .cifar10_dvs import CIFAR10DVS
from .dvs_gesture import LIGHTINGS as GESTURE_LIGHTINGS

__all__ = ["write_dvs_gesture", "write_cifar10_dvs", "GESTURE_LIGHTINGS", "CIFAR10_DVS_CLASSES",
           "RELEASE_VERSION"]

#: Bumped whenever the same arguments write different events (2: background ``noise`` 0.1 -> 1.0;
#: 3: gesture arms turn 1.5 to 3 full circles from a random start), so a cache of releases can
#: tell an outdated one from a current one.
RELEASE_VERSION = 3

CIFAR10_DVS_CLASSES = CIFAR10DVS.classes  # the release's class folders, stated once there
_WIDTH, _HEIGHT = DVS128_SENSOR_SIZE[:2]
_CONTOUR_POINTS = 96


# ---- shapes: contour points q [K, 2] and outward unit normals n [K, 2], in shape coordinates ----

def _circle(radius: float, center=(0.0, 0.0), aspect: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0, 2 * np.pi, _CONTOUR_POINTS, endpoint=False)
    q = np.stack([center[0] + radius * aspect * np.cos(phi), center[1] + radius * np.sin(phi)], 1)
    n = np.stack([np.cos(phi) / aspect, np.sin(phi)], 1)
    return q, n / np.linalg.norm(n, axis=1, keepdims=True)


def _bar(length: float, width: float, angle: float = 0.0, start=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle from ``start`` along ``angle``; ``length`` x ``width``."""
    k = _CONTOUR_POINTS // 4
    s = np.linspace(0, 1, k, endpoint=False)
    half = width / 2
    sides = [
        (np.stack([s * length, np.full(k, -half)], 1), (0.0, -1.0)),
        (np.stack([s * length, np.full(k, half)], 1), (0.0, 1.0)),
        (np.stack([np.zeros(k), (s - 0.5) * width], 1), (-1.0, 0.0)),
        (np.stack([np.full(k, length), (s - 0.5) * width], 1), (1.0, 0.0)),
    ]
    q = np.concatenate([side for side, _ in sides])
    n = np.concatenate([np.tile(normal, (k, 1)) for _, normal in sides])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return q @ rot.T + np.asarray(start), n @ rot.T


def _union(*parts) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([q for q, _ in parts]), np.concatenate([n for _, n in parts])


# ---- event synthesis -------------------------------------------------------------------------

def _edge_events(rng, objects, duration_us: float, n_events: int, jitter: float = 0.6):
    """Sample ``n_events`` contour events of moving ``objects`` over ``[0, duration_us)``.

    ``objects``: list of ``(q [K, 2], n [K, 2], motion)``, ``motion(u) -> (cx, cy, theta, scale)``
    for normalized time ``u`` in [0, 1]. Returns columns ``t`` (µs from 0), ``x``, ``y``, ``p``.
    """
    pieces = []
    per_object = max(1, 3 * n_events // len(objects))
    h = 1e-3
    for q, n, motion in objects:
        u = rng.random(per_object)
        k = rng.integers(0, len(q), per_object)
        pos0, _ = _place(q[k], n[k], motion(u - h))
        pos1, normal = _place(q[k], n[k], motion(u + h))
        pos, _ = _place(q[k], n[k], motion(u))
        speed = np.sum((pos1 - pos0) * normal, axis=1) / (2 * h)
        pieces.append((u, pos, speed))
    u, pos, speed = (np.concatenate(parts) for parts in zip(*pieces))
    top = np.abs(speed).max() or 1.0
    keep = rng.random(len(u)) < np.abs(speed) / top
    order = rng.permutation(np.flatnonzero(keep))[:n_events]
    pos = pos[order] + rng.normal(0, jitter, (len(order), 2))
    x, y = np.rint(pos[:, 0]).astype(np.int64), np.rint(pos[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < _WIDTH) & (y >= 0) & (y < _HEIGHT)
    t = (u[order] * duration_us).astype(np.int64)
    return t[inside], x[inside], y[inside], (speed[order] > 0)[inside].astype(np.uint8)


def _place(q, n, state):
    cx, cy, theta, scale = (np.broadcast_to(v, (len(q),)) for v in state)
    cos, sin = np.cos(theta), np.sin(theta)
    x = cx + scale * (cos * q[:, 0] - sin * q[:, 1])
    y = cy + scale * (sin * q[:, 0] + cos * q[:, 1])
    normal = np.stack([cos * n[:, 0] - sin * n[:, 1], sin * n[:, 0] + cos * n[:, 1]], 1)
    return np.stack([x, y], 1), normal


def _noise(rng, n: int, duration_us: float):
    return (
        rng.integers(0, max(1, int(duration_us)), n),
        rng.integers(0, _WIDTH, n),
        rng.integers(0, _HEIGHT, n),
        rng.integers(0, 2, n).astype(np.uint8),
    )


def _check_rates(events_per_sample, noise, duration_us) -> None:
    check_int(events_per_sample, "events_per_sample", minimum=1)
    check_positive(noise, "noise", allow_zero=True)
    check_int(duration_us, "duration_us", minimum=1)


def _to_events(columns_list, t0: int) -> np.ndarray:
    t, x, y, p = (np.concatenate(parts) for parts in zip(*columns_list))
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    order = np.argsort(t, kind="stable")
    events["t"], events["x"], events["y"], events["p"] = t[order] + t0, x[order], y[order], p[order]
    return events


# ---- DVS128 Gesture --------------------------------------------------------------------------

def _gesture_objects(rng, label: int):
    """Shapes and motions of gesture ``label`` (0..10), randomized per sample."""
    dx, dy = rng.uniform(-8, 8, 2)
    size = rng.uniform(0.8, 1.2)
    cycles = rng.uniform(2.0, 3.0)
    phase = rng.uniform(0, 2 * np.pi)
    blob = _circle(7 * size)

    def wave(u):
        return np.sin(2 * np.pi * cycles * u + phase)

    if label == 0:  # hand clapping: two blobs meeting and parting
        gap = lambda u: 10 + 14 * (0.5 + 0.5 * wave(u))
        return [(*blob, lambda u: (64 + dx - gap(u), 64 + dy, 0.0, 1.0)),
                (*blob, lambda u: (64 + dx + gap(u), 64 + dy, 0.0, 1.0))]
    if label in (1, 2):  # right / left hand wave: an upright bar swinging about its base
        cx = (92 if label == 1 else 36) + dx
        bar = _bar(30 * size, 7 * size)
        return [(*bar, lambda u: (cx, 100 + dy, -np.pi / 2 + 0.6 * wave(u), 1.0))]
    if label in (3, 4, 5, 6):  # right / left arm, clockwise / counter-clockwise: an orbiting blob
        # As in the recordings, the arm turns through several full circles from wherever it is,
        # so the time-summed picture is the same ring both ways: only the order tells them apart.
        cx = (88 if label in (3, 4) else 40) + dx
        turns = rng.uniform(1.5, 3.0) * (1 if label in (3, 5) else -1)
        start = rng.uniform(0, 2 * np.pi)
        angle = lambda u: start + 2 * np.pi * turns * u
        return [(*blob, lambda u: (cx + 22 * np.cos(angle(u)), 60 + dy + 22 * np.sin(angle(u)), 0.0, 1.0))]
    if label == 7:  # arm roll: two small blobs spinning around each other, fast
        small = _circle(5 * size)
        spin = rng.uniform(3.0, 4.0)
        angle = lambda u: phase + 2 * np.pi * spin * u
        return [(*small, lambda u: (64 + dx + 12 * np.cos(angle(u)), 40 + dy + 12 * np.sin(angle(u)), 0.0, 1.0)),
                (*small, lambda u: (64 + dx - 12 * np.cos(angle(u)), 40 + dy - 12 * np.sin(angle(u)), 0.0, 1.0))]
    if label == 8:  # air drums: two blobs beating up and down in antiphase
        return [(*blob, lambda u: (42 + dx, 76 + dy + 12 * wave(u), 0.0, 1.0)),
                (*blob, lambda u: (86 + dx, 76 + dy - 12 * wave(u), 0.0, 1.0))]
    if label == 9:  # air guitar: a tilted bar strumming fast, a blob sliding slowly on the left
        bar = _bar(44 * size, 6 * size, start=(-22 * size, 0.0))
        fast = lambda u: np.sin(2 * np.pi * 2 * cycles * u + phase)
        return [(*bar, lambda u: (70 + dx, 72 + dy + 7 * fast(u), 0.35, 1.0)),
                (*_circle(5 * size), lambda u: (30 + dx + 6 * np.sin(2 * np.pi * 0.6 * u + phase), 52 + dy, 0.0, 1.0))]
    if label == 10:  # other gestures: a ring breathing in and out
        ring = _circle(6.0)
        slow = lambda u: np.sin(2 * np.pi * cycles / 2 * u + phase)
        return [(*ring, lambda u: (64 + dx, 76 + dy, 0.0, size * (2.5 + 1.7 * slow(u))))]
    raise ValueError(f"gesture label must be in 0..10, got {label}")


def _gesture_recording(rng, events_per_sample: int, noise: float, duration_us: int):
    """One recording: the 11 gestures in order, each in its CSV window, plus background noise."""
    rows, columns = [], []
    start = int(rng.integers(1_000_000, 3_000_000))
    for label in range(11):
        length = int(duration_us * rng.uniform(0.85, 1.15))
        n = int(events_per_sample * rng.uniform(0.8, 1.2))
        t, x, y, p = _edge_events(rng, _gesture_objects(rng, label), length, n)
        columns.append((t + start, x, y, p))
        rows.append((label + 1, start, start + length))
        start += length + int(rng.integers(200_000, 500_000))
    columns.append(_noise(rng, int(noise * events_per_sample * 11), start))
    return _to_events(columns, 0), rows


def write_dvs_gesture(
    root: str | os.PathLike,
    users=(1, 2, 3, 4, 24, 25),
    lightings=("fluorescent", "led", "natural"),
    seed: int = 0,
    events_per_sample: int = 8000,
    noise: float = 1.0,
    duration_us: int = 1_500_000,
) -> Path:
    """Write a DVS128-Gesture-shaped release under ``root/DvsGesture`` and return ``root``.

    One AEDAT 3.1 recording ``userNN_<lighting>.aedat`` per (user, lighting), holding the 11
    gestures in CSV windows (``userNN_<lighting>_labels.csv``: class 1..11, startTime_usec,
    endTime_usec) of about ``duration_us`` each, about ``events_per_sample`` edge events per
    gesture and ``noise`` times as many background events, spread over the whole recording
    (gaps included, so a gesture's window holds about 3/4 of that). As in the release, users
    1-23 are listed in ``trials_to_train.txt`` and users 24-29 in ``trials_to_test.txt``. The
    defaults (4 train users, 2 test users, 3 lightings) give 132 train and 66 test samples,
    about 24 MB, written in a few seconds.
    """
    _check_rates(events_per_sample, noise, duration_us)
    root = Path(root)
    folder = root / "DvsGesture"
    folder.mkdir(parents=True, exist_ok=True)
    trials = {"train": [], "test": []}
    for user in users:
        if not 1 <= user <= 29:
            raise ValueError(f"users must lie in 1..29 (1-23 train, 24-29 test), got {user}")
        for lighting in lightings:
            if lighting not in GESTURE_LIGHTINGS:
                raise ValueError(f"lightings must be among {GESTURE_LIGHTINGS}, got {lighting!r}")
            rng = np.random.default_rng([seed, user, GESTURE_LIGHTINGS.index(lighting)])
            events, rows = _gesture_recording(rng, events_per_sample, noise, duration_us)
            stem = f"user{user:02d}_{lighting}"
            write_aedat31(folder / f"{stem}.aedat", events)
            csv = "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in rows)
            (folder / f"{stem}_labels.csv").write_text(csv)
            trials["train" if user <= 23 else "test"].append(f"{stem}.aedat")
    for split, names in trials.items():
        (folder / f"trials_to_{split}.txt").write_text("".join(name + "\n" for name in names))
    return root


# ---- CIFAR10-DVS -----------------------------------------------------------------------------

def _cifar_shape(label: int, size: float):
    """An outline per class, roughly the object's silhouette, about 40 px across."""
    s = size
    shapes = {
        0: lambda: _union(_bar(44 * s, 6 * s, 0.0, (-22 * s, 0)), _bar(30 * s, 6 * s, np.pi / 2, (0, -15 * s))),
        1: lambda: _union(_bar(40 * s, 14 * s, 0.0, (-20 * s, -4 * s)), _circle(6 * s, (-11 * s, 8 * s)), _circle(6 * s, (11 * s, 8 * s))),
        2: lambda: _union(_bar(24 * s, 5 * s, -0.6, (0, 0)), _bar(24 * s, 5 * s, np.pi + 0.6, (0, 0))),
        3: lambda: _union(_circle(14 * s), _bar(12 * s, 5 * s, -2.0, (-8 * s, -10 * s)), _bar(12 * s, 5 * s, -1.1, (8 * s, -10 * s))),
        4: lambda: _union(_bar(32 * s, 6 * s, np.pi / 2, (0, -12 * s)), _bar(16 * s, 4 * s, -2.4, (0, -12 * s)), _bar(16 * s, 4 * s, -0.7, (0, -12 * s))),
        5: lambda: _union(_bar(32 * s, 12 * s, 0.0, (-16 * s, 0)), _circle(8 * s, (20 * s, -8 * s))),
        6: lambda: _circle(12 * s, aspect=1.8),
        7: lambda: _union(_bar(36 * s, 10 * s, 0.0, (-18 * s, -6 * s)), *[_bar(14 * s, 4 * s, np.pi / 2, (dx * s, -1 * s)) for dx in (-15, -7, 7, 15)]),
        8: lambda: _union(_bar(40 * s, 8 * s, 0.0, (-20 * s, 10 * s)), _bar(26 * s, 4 * s, -np.pi / 2, (0, 6 * s)), _bar(22 * s, 4 * s, -2.6, (18 * s, 6 * s))),
        9: lambda: _union(_bar(30 * s, 22 * s, 0.0, (-22 * s, -4 * s)), _bar(14 * s, 14 * s, 0.0, (8 * s, 0)), _circle(5 * s, (-12 * s, 10 * s)), _circle(5 * s, (14 * s, 10 * s))),
    }
    if label not in shapes:
        raise ValueError(f"CIFAR10-DVS label must be in 0..9, got {label}")
    return shapes[label]()


def _cifar_sample(rng, label: int, events_per_sample: int, noise: float, duration_us: int) -> np.ndarray:
    """An image outline moved around a small closed loop, as the screen-recorded release was."""
    q, n = _cifar_shape(label, rng.uniform(0.85, 1.15))
    cx, cy = 64 + rng.uniform(-8, 8), 64 + rng.uniform(-8, 8)
    tilt = rng.uniform(-0.15, 0.15)
    loops, radius, phase = rng.uniform(2.0, 3.0), rng.uniform(3.0, 5.0), rng.uniform(0, 2 * np.pi)

    def motion(u):
        a = phase + 2 * np.pi * loops * u
        return cx + radius * np.cos(a), cy + radius * np.sin(a), tilt, 1.0

    count = int(events_per_sample * rng.uniform(0.8, 1.2))
    signal = _edge_events(rng, [(q, n, motion)], duration_us, count)
    background = _noise(rng, int(noise * count), duration_us)
    return _to_events([signal, background], int(rng.integers(0, 100_000)))


def write_cifar10_dvs(
    root: str | os.PathLike,
    samples_per_class: int = 20,
    ids=None,
    seed: int = 0,
    events_per_sample: int = 5000,
    noise: float = 1.0,
    duration_us: int = 1_200_000,
) -> Path:
    """Write a CIFAR10-DVS-shaped release and return ``root``.

    ``root/<class>/cifar10_<class>_<n>.aedat`` (jAER AEDAT 2.0, DVS128 addresses) for the ten
    classes airplane .. truck and ``n`` in ``ids`` (default ``range(samples_per_class)``; the
    release has 0..999). Each recording moves a class-specific outline around a small loop for
    ``duration_us``, with about ``events_per_sample`` edge events plus ``noise`` times as many
    background events. The defaults (20 per class) give about 16 MB.
    """
    _check_rates(events_per_sample, noise, duration_us)
    root = Path(root)
    ids = range(samples_per_class) if ids is None else ids
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in ids:
            rng = np.random.default_rng([seed, label, int(i)])
            events = _cifar_sample(rng, label, events_per_sample, noise, duration_us)
            write_aedat2(folder / f"cifar10_{name}_{int(i)}.aedat", events)
    return root
