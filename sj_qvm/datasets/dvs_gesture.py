"""DVS128 Gesture (IBM; AEDAT 3.1): samples sliced by the labels CSVs, cached per sample."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple


from . import _cache
from ._base import EventDataset
from ._parallel import run_tasks
from .aedat import read_aedat31
from .frames import events_to_frames

__all__ = ["DVSGesture", "read_labels_csv"]

_CSV_HEADER = ["class", "startTime_usec", "endTime_usec"]


class _Sample(NamedTuple):
    trial: str  # recording stem, e.g. "user01_fluorescent"
    row: int  # row in the labels CSV, from 0
    label: int  # 0..10
    start: int  # µs, inclusive
    end: int  # µs, exclusive

    @property
    def key(self) -> str:
        return f"{self.trial}_{self.row:02d}"


def read_labels_csv(path: Path) -> list[tuple[int, int, int]]:
    """Rows ``(label 0..10, start µs, end µs)`` of a ``userNN_<light>_labels.csv``.

    Raises ``ValueError`` naming the file and line for a header other than
    ``class,startTime_usec,endTime_usec``, a malformed row, a class outside 1..11, or end < start.
    """
    lines = Path(path).read_text().splitlines()
    header = [field.strip() for field in lines[0].split(",")] if lines else []
    if header != _CSV_HEADER:
        raise ValueError(f"{path}: line 1 must be {','.join(_CSV_HEADER)!r}, got {lines[:1]}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"{path}: line {number} must be three non-negative integers, got {line!r}")
        label, start, end = map(int, fields)
        if not 1 <= label <= 11:
            raise ValueError(f"{path}: line {number} has class {label}, outside 1..11")
        if end < start:
            raise ValueError(f"{path}: line {number} has endTime_usec {end} < startTime_usec {start}")
        rows.append((label - 1, start, end))
    return rows


def _build_trial(
    aedat: Path,
    samples: list[_Sample],
    events_dir: Path,
    frames_dir: Path | None,
    frames_number: int | None,
    split_by: str,
) -> None:
    """Worker: write the missing events (and frames) entries of one recording's samples."""
    events_paths = [events_dir / f"{s.key}.npz" for s in samples]
    if all(p.exists() for p in events_paths):
        per_sample = [_cache.load_entry(p)["events"] for p in events_paths]
    else:
        events = read_aedat31(aedat)
        per_sample = []
        for sample, path in zip(samples, events_paths):
            # The windows may overlap (user22_led): a mask per sample, as SpikingJelly slices.
            chosen = events[(events["t"] >= sample.start) & (events["t"] < sample.end)]
            if not path.exists():
                _cache.save_entry(path, events=chosen)
            per_sample.append(chosen)
    if frames_dir is None:
        return
    for sample, chosen in zip(samples, per_sample):
        path = frames_dir / f"{sample.key}.npz"
        if not path.exists():
            frames = events_to_frames(chosen, frames_number, split_by, (128, 128))
            _cache.save_entry(path, compress=True, frames=_cache.compact_counts(frames))


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

    The first use preprocesses in ``num_workers`` processes (default: CPU count, at most 8; 0 runs
    in this process) into ``cache_dir`` (default ``root/sj_qvm_cache``): ``dvs_gesture_v1/events``
    holds per-sample events, ``dvs_gesture_v1/frames_T{T}_{split_by}`` per-sample frames as
    compressed uint8/uint16/uint32 counts. Entries are renamed into place once complete, so an
    interrupted run resumes where it stopped.
    """

    classes = (
        "hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
        "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
        "arm_roll", "air_drums", "air_guitar", "other_gestures",
    )
    folder = "DvsGesture"
    trial_lists = {True: "trials_to_train.txt", False: "trials_to_test.txt"}
    url = "https://research.ibm.com/interactive/dvsgesture/"

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
    ):
        super().__init__(root, train, frames_number, split_by, transform, target_transform)
        raw = self.root / self.folder
        trials = self._trials(raw)
        self.samples = [
            _Sample(stem, row, label, start, end)
            for stem in trials
            for row, (label, start, end) in enumerate(read_labels_csv(raw / f"{stem}_labels.csv"))
        ]
        cache = Path(cache_dir) if cache_dir is not None else self.root / "sj_qvm_cache"
        cache = cache / f"dvs_gesture_{_cache.CACHE_VERSION}"
        self.events_dir = cache / "events"
        self.frames_dir = None if frames_number is None else cache / f"frames_T{frames_number}_{split_by}"
        self._prepare(raw, trials, num_workers)

    def _trials(self, raw: Path) -> list[str]:
        listing = raw / self.trial_lists[self.train]
        if not listing.is_file():
            raise FileNotFoundError(
                f"DVS128 Gesture not found: {listing} is missing. Expected the official release "
                f"unpacked as {self.root}/DvsGesture/ holding userNN_<lighting>.aedat, "
                f"userNN_<lighting>_labels.csv, trials_to_train.txt and trials_to_test.txt. "
                f"IBM publishes it at {self.url} (DvsGesture.tar.gz); "
                f"sj_qvm.datasets.synthetic.write_dvs_gesture writes an offline stand-in."
            )
        stems = []
        for name in listing.read_text().split():
            stem = name[: -len(".aedat")] if name.endswith(".aedat") else name
            for needed in (raw / f"{stem}.aedat", raw / f"{stem}_labels.csv"):
                if not needed.is_file():
                    raise FileNotFoundError(f"{listing} lists {name}, but {needed} is missing")
            stems.append(stem)
        return stems

    def _prepare(self, raw: Path, trials: list[str], num_workers: int | None) -> None:
        folders = [self.events_dir] + ([self.frames_dir] if self.frames_dir is not None else [])
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            _cache.remove_stale(folder)
        tasks, names = [], []
        for stem in trials:
            samples = [s for s in self.samples if s.trial == stem]
            if all((folder / f"{s.key}.npz").exists() for s in samples for folder in folders):
                continue
            aedat = raw / f"{stem}.aedat"
            tasks.append((aedat, samples, self.events_dir, self.frames_dir, self.frames_number, self.split_by))
            names.append(str(aedat))
        split = "train" if self.train else "test"
        run_tasks(_build_trial, tasks, names, f"DVSGesture {split}: preprocessing", num_workers)

    def _item(self, index: int):
        sample = self.samples[index]
        if self.frames_dir is None:
            return _cache.load_entry(self.events_dir / f"{sample.key}.npz")["events"], sample.label
        return self._load_frames(self.frames_dir / f"{sample.key}.npz"), sample.label
