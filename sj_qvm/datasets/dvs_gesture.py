"""DVS128 Gesture (IBM; AEDAT 3.1): samples sliced by the labels CSVs, cached per sample."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from . import _cache
from ._base import EventDataset
from .aedat import DVS128_SENSOR_SIZE, EVENT_DTYPE, read_aedat31
from .frames import events_to_frames

__all__ = ["DVSGesture", "LIGHTINGS", "read_labels_csv", "read_trial_list"]

LIGHTINGS = ("fluorescent", "fluorescent_led", "lab", "led", "natural")
_CSV_HEADER = ["class", "startTime_usec", "endTime_usec"]
_TRIAL_NAME = re.compile(rf"user(0[1-9]|1[0-9]|2[0-9])_({'|'.join(LIGHTINGS)})\.aedat")
_FIELD = re.compile(r"[0-9]{1,19}")  # ASCII digits only: int() would also take '１' or '1_0'
_log = logging.getLogger(__name__)


class _Sample(NamedTuple):
    trial: str  # recording stem, e.g. "user01_fluorescent"
    row: int  # row in the labels CSV, from 0
    label: int  # 0..10
    start: int  # µs, inclusive
    end: int  # µs, exclusive

    @property
    def key(self) -> str:
        return f"{self.trial}_{self.row:02d}"


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; ``ValueError`` naming the file and line for other bytes."""
    lines = []
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}: line {number} is not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                f"column {error.start + 1})"
            ) from None
    return lines


def read_labels_csv(path: Path) -> list[tuple[int, int, int]]:
    """Rows ``(label 0..10, start µs, end µs)`` of a ``userNN_<light>_labels.csv``.

    Raises ``ValueError`` naming the file and line for a byte that is not UTF-8, a header other
    than ``class,startTime_usec,endTime_usec``, a row that is not three ASCII integers in
    0..2**63-1, a class outside 1..11, or end < start.
    """
    lines = _text_lines(path)
    header = [field.strip() for field in lines[0].split(",")] if lines else []
    if header != _CSV_HEADER:
        raise ValueError(f"{path}: line 1 must be {','.join(_CSV_HEADER)!r}, got {lines[:1]}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3 or not all(_FIELD.fullmatch(f) and int(f) < 2**63 for f in fields):
            raise ValueError(
                f"{path}: line {number} must be three integers in 0..2**63-1, got {line!r}"
            )
        label, start, end = map(int, fields)
        if not 1 <= label <= 11:
            raise ValueError(f"{path}: line {number} has class {label}, outside 1..11")
        if end < start:
            raise ValueError(f"{path}: line {number} has endTime_usec {end} < startTime_usec {start}")
        rows.append((label - 1, start, end))
    return rows


def read_trial_list(path: Path) -> list[str]:
    """The recording stems (``userNN_<lighting>``) listed in a ``trials_to_*.txt``.

    Every non-blank line must be one name of the release's form ``userNN_<lighting>.aedat``
    (NN in 01..29, lighting one of :data:`LIGHTINGS`), listed once: nothing else can name a file
    outside the dataset folder. Raises ``ValueError`` naming the file and line otherwise.
    """
    stems, seen = [], {}
    for number, line in enumerate(_text_lines(path), start=1):
        name = line.strip()
        if not name:
            continue
        if _TRIAL_NAME.fullmatch(name) is None:
            raise ValueError(
                f"{path}: line {number} must name a recording userNN_<lighting>.aedat (NN in "
                f"01..29, lighting in {LIGHTINGS}), got {name!r}"
            )
        if name in seen:
            raise ValueError(f"{path}: line {number} lists {name} again (first on line {seen[name]})")
        seen[name] = number
        stems.append(name[: -len(".aedat")])
    return stems


def _events_check(sample: _Sample, aedat: Path, source: np.ndarray) -> Callable[[Path, dict], None]:
    return lambda path, entry: _cache.check_events(
        path, entry, sample.start, sample.end, DVSGesture.size_hw, aedat, source)


def _events_max_bytes(source: np.ndarray) -> int:
    return int(source[0]) // 8 * EVENT_DTYPE.itemsize + 4096  # a sample holds at most the file


def _build_trial(
    aedat: Path,
    samples: list[_Sample],
    events_dir: Path,
    frames_dir: Path | None,
    frames_number: int | None,
    split_by: str,
    warn: bool = True,
) -> None:
    """Worker: (re)write the events (and frames) entries of one recording's samples that are
    missing or fail their checks; ``warn`` logs each bad entry found."""
    source = _cache.fingerprint(aedat)  # before reading: a later rewrite then shows as stale
    events = None
    for sample in samples:
        path = _cache.entry_path(events_dir, sample.key, source)
        entry, problem = _cache.usable(path, _events_check(sample, aedat, source), _events_max_bytes(source), warn)
        if entry is not None:
            chosen = entry["events"]
        else:
            if events is None:
                events = read_aedat31(aedat)
            # The windows may overlap (user22_led): a mask per sample, as SpikingJelly slices.
            chosen = events[(events["t"] >= sample.start) & (events["t"] < sample.end)]
            _cache.save_entry(path, replacing=problem, events=chosen, source=source)
        if frames_dir is None:
            continue
        path = _cache.entry_path(frames_dir, sample.key, source)

        def check(entry_path, entry):
            _cache.check_frames(entry_path, entry, frames_number, DVSGesture.size_hw, split_by, aedat, source)

        entry, problem = _cache.usable(path, check, None, warn)
        if entry is None:
            frames = events_to_frames(chosen, frames_number, split_by, DVSGesture.sensor_size)
            _cache.save_entry(path, compress=True, replacing=problem, frames=_cache.compact_counts(frames),
                              events_count=np.int64(len(chosen)), source=source)


class DVSGesture(EventDataset):
    """DVS128 Gesture, read from the official release layout under ``root``::

        root/DvsGesture/userNN_<lighting>.aedat          AEDAT 3.1 recordings
        root/DvsGesture/userNN_<lighting>_labels.csv     class,startTime_usec,endTime_usec
        root/DvsGesture/trials_to_train.txt              recordings of users 01-23
        root/DvsGesture/trials_to_test.txt               recordings of users 24-29

    A sample is one CSV row: the events with ``start <= t < end``, label ``class - 1``; samples are
    ordered by trial list, then CSV row. ``dataset[i]`` is ``(frames, label)`` with ``frames`` a
    ``[T, 2, 128, 128]`` float32 tensor of event counts (:func:`events_to_frames`, identical to
    SpikingJelly's) when ``frames_number=T`` is given, else ``(events, label)`` with ``events`` a
    structured array of :data:`EVENT_DTYPE`. ``transform`` / ``target_transform`` apply to each.

    The trial lists may name only recordings of the release's form ``userNN_<lighting>.aedat``
    (:func:`read_trial_list`), so nothing outside ``root`` is read and nothing outside
    ``cache_dir`` is written. ``train`` must be a bool.

    The first use preprocesses (a tqdm bar unless ``progress`` is False) in ``num_workers``
    processes (default: CPU count, at most 8; 0 runs in this process) into ``cache_dir`` (default ``root/sj_qvm_cache``): ``dvs_gesture_v2/events``
    holds per-sample events, ``dvs_gesture_v2/frames_T{T}_{split_by}`` per-sample frames as
    compressed uint8/uint16/uint32 counts, as ``<userNN_lighting>_<row>.s<size>.m<mtime_ns>.npz``
    (keyed by the recording's size and mtime_ns: a rewritten recording's samples are rebuilt).
    Entries are renamed into place once complete, so an interrupted run resumes where it stopped,
    and are checked whenever they are read (:mod:`._cache`): a corrupt entry is rebuilt with a
    logged warning, or raises ``ValueError`` naming it where it cannot be (a read-only cache). A
    complete cache is read without writing anything.
    """

    sensor_size = DVS128_SENSOR_SIZE
    classes = (
        "hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
        "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
        "arm_roll", "air_drums", "air_guitar", "other_gestures",
    )
    num_classes = len(classes)
    url = "https://research.ibm.com/interactive/dvsgesture/"
    cache_name = "dvs_gesture"
    folder = "DvsGesture"
    trial_lists = {True: "trials_to_train.txt", False: "trials_to_test.txt"}

    @classmethod
    def layout_help(cls, root: str | os.PathLike) -> str:
        return (
            f"Expected the official release unpacked as {Path(root) / cls.folder}/ holding "
            f"userNN_<lighting>.aedat, userNN_<lighting>_labels.csv, {cls.trial_lists[True]} and "
            f"{cls.trial_lists[False]}. IBM publishes it at {cls.url} (DvsGesture.tar.gz); "
            f"sj_qvm.datasets.synthetic.write_dvs_gesture writes an offline stand-in."
        )

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        frames_number: int | None = None,
        split_by: str = "number",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int | None = None,
        progress: bool = True,
    ):
        super().__init__(root, train, frames_number, split_by, transform, target_transform, num_workers,
                         cache_dir, progress)
        self.raw = raw = self.root / self.folder
        trials = self._trials(raw)
        self.samples = [
            _Sample(stem, row, label, start, end)
            for stem in trials
            for row, (label, start, end) in enumerate(read_labels_csv(raw / f"{stem}_labels.csv"))
        ]
        self.events_dir = self.cache / "events"
        folders = [self.events_dir] + ([self.frames_dir] if self.frames_dir is not None else [])
        jobs = []
        for stem in trials:
            samples = [s for s in self.samples if s.trial == stem]
            task = (raw / f"{stem}.aedat", samples, self.events_dir, self.frames_dir, frames_number, split_by)
            jobs.append((raw / f"{stem}.aedat", [(f, s.key) for f in folders for s in samples], task))
        self._prepare(_build_trial, folders, jobs, num_workers)

    def _trials(self, raw: Path) -> list[str]:
        listing = raw / self.trial_lists[self.train]
        if not listing.is_file():
            raise FileNotFoundError(f"DVS128 Gesture not found: {listing} is missing. {self.layout_help(self.root)}")
        stems = read_trial_list(listing)
        for stem in stems:
            for needed in (raw / f"{stem}.aedat", raw / f"{stem}_labels.csv"):
                if not needed.is_file():
                    raise FileNotFoundError(f"{listing} lists {stem}.aedat, but {needed} is missing")
        return stems

    def _item(self, index: int):
        sample = self.samples[index]
        aedat = self.raw / f"{sample.trial}.aedat"

        def rebuild():
            _build_trial(aedat, [sample], self.events_dir, self.frames_dir, self.frames_number,
                         self.split_by, warn=False)

        folder = self.events_dir if self.frames_dir is None else self.frames_dir
        path, source = self._entry(folder, sample.key, aedat)
        if self.frames_dir is not None:
            return self._load_frames(path, aedat, source, rebuild), sample.label
        entry = _cache.load_valid(path, _events_check(sample, aedat, source), rebuild, _events_max_bytes(source))
        return entry["events"], sample.label
