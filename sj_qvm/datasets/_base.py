"""What DVSGesture and CIFAR10DVS share: argument checks, the cache folders and their preparation,
validated cached frames, transforms, and the class attributes every event dataset declares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import check_bool
from . import _cache
from ._parallel import check_workers, run_tasks
from .aedat import EVENT_DTYPE
from .frames import check_frame_args, check_sensor_size, check_split_by

__all__ = ["EventDataset"]

_DECLARED = ("sensor_size", "classes", "num_classes", "url", "cache_name")


class EventDataset(Dataset):
    """Base of the event-camera datasets: ``dataset[i]`` is ``(frames or events, label)``.

    Each subclass declares, as tonic does, the class attributes

    - ``sensor_size``: ``(W, H, P)``, width, height and polarities (the DVS128's ``(128, 128, 2)``);
      ``frames`` are ``[T, P, H, W]``;
    - ``classes``: the class names, label ``i`` being ``classes[i]``; ``num_classes = len(classes)``;
    - ``url``: where the release is published; :meth:`layout_help` tells how to unpack it;
    - ``cache_name``: the cache folder's name, ``<cache_dir>/<cache_name>_<CACHE_VERSION>``;

    and these are checked when the subclass is defined. Subclasses fill ``self.samples``, call
    :meth:`_prepare` and implement ``_item(index) -> (data, label)``.
    """

    sensor_size: tuple[int, int, int]
    classes: tuple[str, ...]
    num_classes: int
    url: str
    cache_name: str
    size_hw: tuple[int, int]
    """``(H, W)`` of ``sensor_size``, the order of the frames' last two axes; set from it."""
    dtype = EVENT_DTYPE

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [name for name in _DECLARED if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"{cls.__name__} must declare the class attributes {missing}")
        if cls.layout_help.__func__ is EventDataset.layout_help.__func__:
            raise TypeError(f"{cls.__name__} must define the classmethod layout_help(root)")
        cls.size_hw = check_sensor_size(cls.sensor_size)
        if cls.num_classes != len(cls.classes):
            raise TypeError(f"{cls.__name__}.num_classes is {cls.num_classes}, but it has {len(cls.classes)} classes")

    @classmethod
    def layout_help(cls, root: str | os.PathLike) -> str:
        """What a user reads when ``root`` does not hold the release: its layout under ``root``,
        where it is published (``url``), and the offline stand-in."""
        raise NotImplementedError

    def __init__(self, root: str | os.PathLike, train: bool, frames_number: int | None,
                 split_by: str, transform: Callable | None, target_transform: Callable | None,
                 num_workers: int | None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True):
        check_bool(bool(train) if isinstance(train, np.bool_) else train, "train")
        check_split_by(split_by)
        if frames_number is not None:
            check_frame_args(frames_number, split_by, self.sensor_size)
        check_workers(num_workers)
        check_bool(progress, "progress")
        self.progress = progress  # a tqdm bar while the cache is built
        for name, value in (("transform", transform), ("target_transform", target_transform)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be None or a callable, got {value!r}")
        self.root = Path(root)
        self.train = bool(train)
        self.frames_number = frames_number
        self.split_by = split_by
        self.transform = transform
        self.target_transform = target_transform
        self.samples: list = []
        self.cache = (Path(cache_dir) if cache_dir is not None else self.root / "sj_qvm_cache") / \
            f"{self.cache_name}_{_cache.CACHE_VERSION}"
        """This dataset's cache folder: ``<cache_dir>/<cache_name>_<CACHE_VERSION>``, where
        ``cache_dir`` defaults to ``root/sj_qvm_cache``."""
        self.frames_dir = None if frames_number is None else self.cache / f"frames_T{frames_number}_{split_by}"
        """Where the frames entries are, one folder per setting (None without ``frames_number``)."""

    def __len__(self) -> int:
        return len(self.samples)

    def _prepare(self, build: Callable, folders: Sequence[Path],
                 jobs: Sequence[tuple[Path, Sequence[tuple[Path, str]], tuple]], num_workers: int | None) -> None:
        """Bring the cache up to date before the first read.

        ``folders``: the cache folders of this setting. ``jobs``: one ``(recording, entries,
        task)`` per recording, ``entries`` the ``(folder, key)`` of each cache entry built from it
        (``folder`` one of ``folders``), ``task`` the arguments of ``build(*task)``, which writes
        those entries that are missing or bad. The folders are created and cleared of dead
        writers' temporaries; a recording whose entries are all present costs one ``stat``;
        entries built from an earlier version of a recording are deleted; the rest is built in
        ``num_workers`` processes (:func:`run_tasks`).
        """
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            _cache.remove_stale(folder)
        current = {folder: {} for folder in folders}
        sources = {folder: {} for folder in folders}
        tasks, names = [], []
        for recording, entries, task in jobs:
            source = _cache.fingerprint(recording)
            paths = []
            for folder, key in entries:
                current[folder][key] = path = _cache.entry_path(folder, key, source)
                sources[folder][key] = recording
                paths.append(path)
            if not all(_cache.is_present(path) for path in paths):
                tasks.append(task)
                names.append(str(recording))
        for folder in folders:
            _cache.sweep_stale(folder, current[folder], sources[folder])
        split = "train" if self.train else "test"
        run_tasks(build, tasks, names, f"{type(self).__name__} {split}: preprocessing", num_workers,
                  self.progress)

    @staticmethod
    def _entry(folder: Path, key: str, recording: Path) -> tuple[Path, np.ndarray]:
        """``(path, fingerprint)`` of sample ``key``'s entry in ``folder`` for ``recording`` as it
        is now; :class:`_cache.BadEntry` naming the entry where the recording is gone."""
        source = _cache.fingerprint_or_bad(folder / key, recording)
        return _cache.entry_path(folder, key, source), source

    def _load_frames(self, entry: Path, source: Path, fingerprint: np.ndarray,
                     rebuild: Callable[[], None]) -> torch.Tensor:
        """The frames entry ``entry`` of the recording ``source`` (whose fingerprint is
        ``fingerprint``) as a ``[T, 2, H, W]`` float32 tensor, validated (see
        :func:`_cache.check_frames`); a bad entry is rebuilt by ``rebuild()`` with a logged
        warning, or raises ``ValueError`` naming it."""
        size_hw = self.size_hw

        def check(path, data):
            _cache.check_frames(path, data, self.frames_number, size_hw, self.split_by, source, fingerprint)

        # Room for float64 frames, so that an entry of the wrong dtype is named as such.
        max_bytes = self.frames_number * 2 * size_hw[0] * size_hw[1] * 8 + 4096
        data = _cache.load_valid(entry, check, rebuild, max_bytes)
        return torch.from_numpy(data["frames"].astype(np.float32))

    def __getitem__(self, index: int):
        data, label = self._item(index)
        if self.transform is not None:
            data = self.transform(data)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return data, label
