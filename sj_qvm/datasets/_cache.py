"""Cache entries: one ``.npz`` per sample, written atomically, validated whenever it is read.

An entry's final path exists only once its bytes are complete (:mod:`sj_qvm.atomic`), so a killed run
leaves at most a temporary that no reader looks at; the next run rebuilds the missing entries.

Entries are keyed by the fingerprint ``[size, mtime_ns]`` of the recording they were built from
as well as by the settings (the folder): sample ``key`` of a recording with fingerprint
``[S, M]`` lives at ``<key>.s<S>.m<M>.npz`` (:func:`entry_path`), so finding out what to build
costs one ``stat`` per recording, and a rewritten recording's old entries are never looked up
again (:func:`sweep_stale` deletes them). Every entry also stores the fingerprint as ``source``
(int64 ``[2]``), checked on each read. Layouts:

- frames entry: ``frames`` ``[T, 2, H, W]`` uint8/uint16/uint32 counts, ``events_count`` (int64
  scalar: the events they were counted from) and ``source``;
- events entry (DVS128 Gesture): ``events`` ``[N]`` of :data:`EVENT_DTYPE` and ``source``.

A read that fails any check raises :class:`BadEntry` (a ``ValueError`` naming the entry);
:func:`load_valid` then rebuilds the entry once, with a logged warning, and raises if it cannot.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .. import atomic
from .aedat import EVENT_DTYPE

__all__ = [
    "CACHE_VERSION", "BadEntry", "fingerprint", "fingerprint_or_bad", "entry_path", "is_present",
    "sweep_stale", "save_entry", "load_entry", "usable", "load_valid",
    "check_frames", "check_events", "remove_stale", "compact_counts",
]

CACHE_VERSION = "v2"  # bump when an entry's layout changes: old folders are then ignored
COUNT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
FRAMES_KEYS = frozenset({"frames", "events_count", "source"})
EVENTS_KEYS = frozenset({"events", "source"})
_log = logging.getLogger(__name__)


class BadEntry(ValueError):
    """A cache entry that cannot be used: unreadable, stale, or failing its layout checks."""


def fingerprint(source: Path) -> np.ndarray:
    """``[size, mtime_ns]`` of ``source`` as int64 ``[2]``: what an entry built from it stores."""
    stat = os.stat(source)
    return np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)


def fingerprint_or_bad(entry: Path, source: Path) -> np.ndarray:
    """:func:`fingerprint` of ``source``; :class:`BadEntry` naming ``entry`` (the entry's folder
    and key) where the recording is gone."""
    try:
        return fingerprint(source)
    except OSError as error:
        raise BadEntry(f"{entry}: cannot be checked against its recording {source}: "
                       f"{error.strerror or error}") from error


def entry_path(folder: Path, key: str, source: np.ndarray) -> Path:
    """Where sample ``key`` of the recording with fingerprint ``source`` is cached in ``folder``.

    ``key`` comes from a validated file name (``userNN_<lighting>_<row>``, ``cifar10_<class>_<n>``)
    and so holds no ``.`` or ``/``."""
    return Path(folder) / f"{key}.s{int(source[0])}.m{int(source[1])}.npz"


def sweep_stale(folder: Path, current: dict[str, Path], sources: dict[str, Path]) -> int:
    """Delete the entries in ``folder`` of the keys in ``current`` that are not ``current[key]``:
    versions built from an earlier state of the recording ``sources[key]``. Each is logged as a
    warning; one that cannot be deleted (a read-only cache) is left, unused. Returns the count."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        key = name.split(".", 1)[0]
        if key not in current or not name.endswith(".npz") or name == current[key].name:
            continue
        old = Path(folder) / name
        _log.warning("%s: stale, built from an earlier version of %s; rebuilding it as %s",
                     old, sources[key], current[key].name)
        try:
            old.unlink()
            removed += 1
        except OSError as error:
            _log.debug("left the stale entry %s in place: %s", old, error)
    return removed


def save_entry(path: Path, compress: bool = False, replacing: BadEntry | None = None,
               **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (:func:`sj_qvm.atomic.atomic_write`; no fsync: a
    torn entry after a power loss fails its checks on the next read and is rebuilt).

    ``replacing``: the problem of the bad entry this write replaces; a write that then fails (a
    read-only cache) raises :class:`BadEntry` naming the entry instead of the ``OSError``.
    Stale temporaries are left to :func:`remove_stale`, which the datasets run once per folder.
    """
    try:
        atomic.atomic_write(path, lambda f: _write(f, arrays, compress), clean=False, fsync=False)
    except OSError as error:
        if replacing is None:
            raise
        raise BadEntry(f"{replacing}; it cannot be rebuilt: {error}") from error


def _write(f, arrays: dict, compress: bool) -> None:
    (np.savez_compressed if compress else np.savez)(f, **arrays)


def load_entry(path: Path, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` entry at ``path``; raises :class:`BadEntry` naming ``path`` when
    it is missing, a symbolic link, not a complete ``.npz`` of plain arrays (CRCs checked), or
    would take more than ``max_bytes``. Each array's declared size is checked against the bytes
    the archive holds before any memory is allocated for it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        raise BadEntry(f"{path}: cannot open the cache entry ({error.strerror or error})") from error
    with os.fdopen(fd, "rb") as f:
        try:
            with zipfile.ZipFile(f) as archive:
                return _read_arrays(path, archive, max_bytes)
        except BadEntry:
            raise
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, MemoryError) as error:
            raise BadEntry(f"{path}: unreadable cache entry ({type(error).__name__}: {error})") from error


def _read_arrays(path: Path, archive: zipfile.ZipFile, max_bytes: int | None) -> dict[str, np.ndarray]:
    arrays, total = {}, 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy") or "/" in info.filename:
            raise BadEntry(f"{path}: holds {info.filename!r}, not an array of an .npz entry")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(member)
            if dtype.hasobject:
                raise BadEntry(f"{path}: {info.filename} holds Python objects")
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            total += declared
            if declared > info.file_size or (max_bytes is not None and total > max_bytes):
                raise BadEntry(f"{path}: {info.filename} declares {declared} bytes; the archive holds "
                               f"{info.file_size} and the entry may need {max_bytes}")
            buffer = bytearray(declared)
            if member.readinto(buffer) != declared or member.read(1):  # the last read checks the CRC
                raise BadEntry(f"{path}: {info.filename} does not hold the {declared} bytes it declares")
        array = np.frombuffer(buffer, dtype=dtype)
        arrays[info.filename[: -len(".npy")]] = array.reshape(shape, order="F" if fortran_order else "C")
    return arrays


def usable(path: Path, check: Callable[[Path, dict], None], max_bytes: int | None = None,
           warn: bool = True) -> tuple[dict | None, BadEntry | None]:
    """``(entry, None)`` when the entry at ``path`` passes ``check(path, entry)``, else
    ``(None, problem)``; ``problem`` is None for a missing entry and is logged as a warning (with
    ``warn``) for an entry that exists but is bad: the caller rebuilds it."""
    try:
        entry = load_entry(path, max_bytes)
        check(path, entry)
        return entry, None
    except BadEntry as problem:
        if not (os.path.exists(path) or os.path.islink(path)):
            return None, None
        if warn:
            _log.warning("%s; rebuilding it", problem)
        return None, problem


def load_valid(path: Path, check: Callable[[Path, dict], None], rebuild: Callable[[], None],
               max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The entry at ``path`` once ``check(path, entry)`` passes.

    A bad or missing entry is rebuilt by ``rebuild()`` (which must not warn again), with a logged
    warning naming it. Raises :class:`BadEntry` naming the entry when the rebuild fails (a
    read-only cache, a missing recording) or its result still fails the check.
    """
    entry, problem = usable(path, check, max_bytes)
    if entry is not None:
        return entry
    if problem is None:
        _log.warning("%s: missing; rebuilding it", path)
    try:
        rebuild()
    except OSError as error:
        raise BadEntry(f"{problem or f'{path}: missing'}; it cannot be rebuilt: {error}") from error
    entry = load_entry(path, max_bytes)
    check(path, entry)
    return entry


def is_present(path: Path) -> bool:
    """Whether an entry file (not a symbolic link) is at ``path``: what deciding to build needs,
    the fingerprint being in the name. Its contents are checked when it is read."""
    return os.path.isfile(path) and not os.path.islink(path)


def _check_common(path: Path, entry: dict, keys: frozenset, source_path: Path, source: np.ndarray) -> None:
    if set(entry) != keys:
        raise BadEntry(f"{path}: holds the arrays {sorted(entry)}, expected {sorted(keys)}")
    stored = entry["source"]
    if stored.dtype != np.int64 or stored.shape != (2,):
        raise BadEntry(f"{path}: 'source' must be int64 [size, mtime_ns], got {stored.dtype} {stored.shape}")
    if not np.array_equal(stored, source):
        raise BadEntry(
            f"{path}: stale, built from {source_path} with [size, mtime_ns] = {stored.tolist()}, "
            f"which is now {source.tolist()}"
        )


def check_frames(path: Path, entry: dict, frames_number: int, size_hw: tuple[int, int],
                 split_by: str, source_path: Path, source: np.ndarray) -> None:
    """Raise :class:`BadEntry` unless ``entry`` is a frames entry for these settings, built from
    ``source_path`` as it is now, whose counts add up: ``frames.sum() == events_count`` for
    ``split_by="number"``, ``<=`` for ``"time"`` (windows of unsorted events can miss some)."""
    _check_common(path, entry, FRAMES_KEYS, source_path, source)
    frames, count = entry["frames"], entry["events_count"]
    if frames.dtype not in COUNT_DTYPES:
        raise BadEntry(f"{path}: frames have dtype {frames.dtype}, expected uint8, uint16 or uint32 counts")
    expected = (frames_number, 2, *size_hw)
    if frames.shape != expected:
        raise BadEntry(f"{path}: frames have shape {list(frames.shape)}, expected {list(expected)}")
    if count.shape != () or count.dtype != np.int64 or int(count) < 0:
        raise BadEntry(f"{path}: events_count must be a non-negative int64 scalar, got {count!r}")
    total = int(frames.sum(dtype=np.uint64))
    if total > int(count) or (split_by == "number" and total != int(count)):
        raise BadEntry(f"{path}: frames count {total} events, but the sample has {int(count)}")


def check_events(path: Path, entry: dict, start: int, end: int, size_hw: tuple[int, int],
                 source_path: Path, source: np.ndarray) -> None:
    """Raise :class:`BadEntry` unless ``entry`` is an events entry built from ``source_path`` as
    it is now, with every event in ``start <= t < end`` and on the sensor."""
    _check_common(path, entry, EVENTS_KEYS, source_path, source)
    events = entry["events"]
    if events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise BadEntry(f"{path}: events have dtype {events.dtype} and {events.ndim} dims, expected [N] of {EVENT_DTYPE}")
    if len(events) and not (
        events["t"].min() >= start and events["t"].max() < end
        and events["x"].min() >= 0 and events["x"].max() < size_hw[1]
        and events["y"].min() >= 0 and events["y"].max() < size_hw[0] and events["p"].max() <= 1
    ):
        raise BadEntry(f"{path}: events outside the sample's window [{start}, {end}) or the "
                       f"{size_hw[0]}x{size_hw[1]} sensor, or with polarity > 1")


def remove_stale(folder: Path) -> int:
    """Delete temporaries left anywhere under ``folder`` by processes that no longer run; those
    that cannot be deleted (a read-only cache) are left, and the cache stays readable."""
    return atomic.remove_stale(folder, recursive=True)


def compact_counts(frames: np.ndarray) -> np.ndarray:
    """The narrowest unsigned dtype (uint8, uint16, uint32) that holds ``frames`` exactly."""
    top = int(frames.max(initial=0))
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return frames.astype(dtype, copy=False)
    raise ValueError(f"a frame count of {top} does not fit in uint32")
