"""CIFAR10-DVS (AEDAT 2.0, jAER): explicit train/test splits, frames cached per sample."""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from . import _cache
from ._base import EventDataset
from ._parallel import run_tasks
from .aedat import read_aedat2
from .frames import events_to_frames

__all__ = ["CIFAR10DVS", "SPLITS", "split_files", "check_split"]

SPLITS = ("first900", "tebn", "random")
TRAIN_RATIO = 0.9
_SENSOR_HW = (128, 128)


def split_files(names_by_class: list[list[str]], split: str, train: bool, seed: int = 0) -> list[list[str]]:
    """Each class's file names in the train (or test) part of ``split``, in dataset order.

    ``names_by_class[c]``: class c's file names ``cifar10_<class>_<n>.aedat``. Only names are
    read, never events. With ``n`` files in a class (1000 in the release):

    - ``"first900"``: SpikingJelly's ``split_to_train_test_set(0.9, dataset, 10)`` on its
      ``CIFAR10DVS``. That dataset lists files as torchvision's ``DatasetFolder`` does, sorted as
      strings (``0, 1, 10, 100, 101, ...``), and trains on the first ``ceil(0.9 n)``; so the
      release's test set is ids 91-99 and 909-999, not 900-999.
    - ``"tebn"``: ids 0-99 are the test set, the rest the train set (the TET/TEBN convention;
      SpikingJelly's ``CIFAR10DVSTEBNSplit``). Accuracies on it run higher than on the others.
    - ``"random"``: ``np.random.RandomState(seed)`` shuffles each class's sorted list in class
      order, then the first ``ceil(0.9 n)`` train: the same as ``np.random.seed(seed)`` followed
      by SpikingJelly's ``split_to_train_test_set(0.9, dataset, 10, random_split=True)``.
    """
    check_split(split, seed)
    state = np.random.RandomState(seed) if split == "random" else None
    chosen = []
    for names in names_by_class:
        ordered = sorted(names)
        if split == "tebn":
            chosen.append([n for n in ordered if (_file_id(n) >= 100) == train])
            continue
        if state is not None:
            state.shuffle(ordered)
        cut = math.ceil(len(ordered) * TRAIN_RATIO)
        chosen.append(ordered[:cut] if train else ordered[cut:])
    return chosen


def check_split(split, seed) -> None:
    """Raise unless ``split`` is one of :data:`SPLITS` and ``seed`` an integer in 0..2**32-1."""
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an integer in 0..2**32-1, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..2**32-1, got {seed!r}")


def _file_id(name: str) -> int:
    match = re.fullmatch(r"cifar10_[a-z]+_(\d+)\.aedat", name)
    if match is None:
        raise ValueError(f"{name}: expected a file name cifar10_<class>_<n>.aedat")
    return int(match.group(1))


def _build_frames(aedat: Path, folder: Path, frames_number: int, split_by: str, warn: bool = True) -> None:
    """Worker: the frames entry of one recording in ``folder``, unless it is there and passes its
    checks; ``warn`` logs a bad entry found."""
    source = _cache.fingerprint(aedat)  # before reading: a later rewrite then shows as stale
    target = _cache.entry_path(folder, aedat.stem, source)

    def check(path, entry):
        _cache.check_frames(path, entry, frames_number, _SENSOR_HW, split_by, aedat, source)

    entry, problem = _cache.usable(target, check, None, warn)
    if entry is not None:
        return
    events = read_aedat2(aedat)
    frames = events_to_frames(events, frames_number, split_by, _SENSOR_HW)
    _cache.save_entry(target, compress=True, replacing=problem, frames=_cache.compact_counts(frames),
                      events_count=np.int64(len(events)), source=source)


class CIFAR10DVS(EventDataset):
    """CIFAR10-DVS, read from the release layout ``root/<class>/cifar10_<class>_<n>.aedat``.

    The release has no train/test split; ``split`` names the convention (see :func:`split_files`:
    ``"first900"`` is SpikingJelly's ``split_to_train_test_set(0.9)``, alphabetical order;
    ``"tebn"`` tests on ids 0-99; ``"random"`` shuffles with ``seed``). Samples are ordered by
    class, then as in the split. ``dataset[i]`` is ``(frames, label)`` with ``frames`` a
    ``[T, 2, 128, 128]`` float32 tensor of event counts when ``frames_number=T`` is given, else
    ``(events, label)`` with ``events`` a structured array of :data:`EVENT_DTYPE`, read straight
    from the AEDAT file (the vectorized reader is as fast as a cache would be).

    Frames are preprocessed once in ``num_workers`` processes into ``cache_dir`` (default
    ``root/sj_qvm_cache``) ``/cifar10_dvs_v2/frames_T{T}_{split_by}/<class>/``, one compressed
    uint8/uint16/uint32 entry per recording, ``cifar10_<class>_<n>.s<size>.m<mtime_ns>.npz``
    (keyed by the recording's size and mtime_ns: a rewritten recording is rebuilt), renamed into
    place once complete. Entries are checked on every read: a corrupt entry is rebuilt with a
    logged warning, or raises ``ValueError`` naming it where it cannot be. Only
    files ``<class>/cifar10_<class>_<n>.aedat`` are listed, so entry paths stay in the cache.
    ``train`` must be a bool, ``seed`` an integer in 0..2**32-1.
    """

    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    url = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        frames_number: int | None = None,
        split_by: str = "number",
        split: str = "first900",
        seed: int = 0,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int | None = None,
    ):
        check_split(split, seed)
        super().__init__(root, train, frames_number, split_by, transform, target_transform, num_workers)
        self.split = split
        names_by_class = []
        for name in self.classes:
            folder = self.root / name
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"CIFAR10-DVS not found: {folder} is missing. Expected the release unpacked "
                    f"as {self.root}/<class>/cifar10_<class>_<n>.aedat for the classes "
                    f"{', '.join(self.classes)}. It is published on figshare at {self.url} "
                    f"(one zip per class); sj_qvm.datasets.synthetic.write_cifar10_dvs writes an "
                    f"offline stand-in."
                )
            names = [p.name for p in folder.glob("*.aedat")]
            for n in names:
                _file_id(n)
                if not n.startswith(f"cifar10_{name}_"):
                    raise ValueError(f"{folder / n}: expected a file name cifar10_{name}_<n>.aedat in {folder}")
            names_by_class.append(names)
        self.samples: list[tuple[str, int]] = [  # (class/file name, label)
            (f"{self.classes[label]}/{n}", label)
            for label, chosen in enumerate(split_files(names_by_class, split, self.train, seed))
            for n in chosen
        ]
        cache = Path(cache_dir) if cache_dir is not None else self.root / "sj_qvm_cache"
        self.frames_dir = (
            None if frames_number is None
            else cache / f"cifar10_dvs_{_cache.CACHE_VERSION}" / f"frames_T{frames_number}_{split_by}"
        )
        self._prepare(num_workers)

    def _prepare(self, num_workers: int | None) -> None:
        if self.frames_dir is None:
            return
        for name in self.classes:
            (self.frames_dir / name).mkdir(parents=True, exist_ok=True)
        _cache.remove_stale(self.frames_dir)
        tasks, names = [], []
        current = {name: {} for name in self.classes}
        sources = {}
        for relative, label in self.samples:
            aedat = self.root / relative
            folder = self.frames_dir / self.classes[label]
            target = _cache.entry_path(folder, aedat.stem, _cache.fingerprint(aedat))
            current[self.classes[label]][aedat.stem] = target
            sources[aedat.stem] = aedat
            if not _cache.is_present(target):
                tasks.append((aedat, folder, self.frames_number, self.split_by))
                names.append(str(aedat))
        for name in self.classes:
            _cache.sweep_stale(self.frames_dir / name, current[name], sources)
        split = "train" if self.train else "test"
        run_tasks(_build_frames, tasks, names, f"CIFAR10DVS {split}: preprocessing", num_workers)

    def _item(self, index: int):
        relative, label = self.samples[index]
        aedat = self.root / relative
        if self.frames_dir is None:
            return read_aedat2(aedat), label
        folder = self.frames_dir / self.classes[label]
        source = _cache.fingerprint_or_bad(folder / aedat.stem, aedat)
        target = _cache.entry_path(folder, aedat.stem, source)
        rebuild = lambda: _build_frames(aedat, folder, self.frames_number, self.split_by, warn=False)  # noqa: E731
        return self._load_frames(target, aedat, source, rebuild), label
