"""CIFAR10-DVS (AEDAT 2.0, jAER): explicit train/test splits, frames cached per sample."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..checks import check_choice, check_int
from . import _cache
from ._base import EventDataset
from .aedat import DVS128_SENSOR_SIZE, read_aedat2
from .frames import events_to_frames

__all__ = ["CIFAR10DVS", "SPLITS", "split_files", "check_split"]

SPLITS = ("first900", "tebn", "random")
TRAIN_RATIO = 0.9


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
    """Raise unless ``split`` is one of :data:`SPLITS` and ``seed`` an int in 0..2**32-1 (what
    ``np.random.RandomState`` takes)."""
    check_choice(split, SPLITS, "split")
    check_int(seed, "seed", minimum=0, maximum=2**32 - 1)


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
        _cache.check_frames(path, entry, frames_number, CIFAR10DVS.size_hw, split_by, aedat, source)

    entry, problem = _cache.usable(target, check, None, warn)
    if entry is not None:
        return
    events = read_aedat2(aedat)
    frames = events_to_frames(events, frames_number, split_by, CIFAR10DVS.sensor_size)
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

    Frames are preprocessed once (a tqdm bar unless ``progress`` is False) in ``num_workers``
    processes into ``cache_dir`` (default
    ``root/sj_qvm_cache``) ``/cifar10_dvs_v2/frames_T{T}_{split_by}/<class>/``, one compressed
    uint8/uint16/uint32 entry per recording, ``cifar10_<class>_<n>.s<size>.m<mtime_ns>.npz``
    (keyed by the recording's size and mtime_ns: a rewritten recording is rebuilt), renamed into
    place once complete. Entries are checked on every read: a corrupt entry is rebuilt with a
    logged warning, or raises ``ValueError`` naming it where it cannot be. Only
    files ``<class>/cifar10_<class>_<n>.aedat`` are listed, so entry paths stay in the cache.
    ``train`` must be a bool, ``seed`` an integer in 0..2**32-1.
    """

    sensor_size = DVS128_SENSOR_SIZE
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    num_classes = len(classes)
    url = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
    cache_name = "cifar10_dvs"

    @classmethod
    def layout_help(cls, root: str | os.PathLike) -> str:
        return (
            f"Expected the release unpacked as {Path(root)}/<class>/cifar10_<class>_<n>.aedat for "
            f"the classes {', '.join(cls.classes)}. It is published on figshare at {cls.url} (one "
            f"zip per class); sj_qvm.datasets.synthetic.write_cifar10_dvs writes an offline stand-in."
        )

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
        progress: bool = True,
    ):
        check_split(split, seed)
        super().__init__(root, train, frames_number, split_by, transform, target_transform, num_workers,
                         cache_dir, progress)
        self.split = split
        names_by_class = []
        for name in self.classes:
            folder = self.root / name
            if not folder.is_dir():
                raise FileNotFoundError(f"CIFAR10-DVS not found: {folder} is missing. {self.layout_help(self.root)}")
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
        if self.frames_dir is not None:
            jobs = []
            for relative, label in self.samples:
                aedat, folder = self.root / relative, self.frames_dir / self.classes[label]
                jobs.append((aedat, [(folder, aedat.stem)], (aedat, folder, frames_number, split_by)))
            self._prepare(_build_frames, [self.frames_dir / name for name in self.classes], jobs, num_workers)

    def _item(self, index: int):
        relative, label = self.samples[index]
        aedat = self.root / relative
        if self.frames_dir is None:
            return read_aedat2(aedat), label
        folder = self.frames_dir / self.classes[label]
        target, source = self._entry(folder, aedat.stem, aedat)
        rebuild = lambda: _build_frames(aedat, folder, self.frames_number, self.split_by, warn=False)  # noqa: E731
        return self._load_frames(target, aedat, source, rebuild), label
