"""What DVSGesture and CIFAR10DVS share: argument checks, length, validated cached frames, transforms."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import _cache
from ._parallel import check_workers
from .aedat import EVENT_DTYPE
from .frames import check_frame_args, check_split_by


class EventDataset(Dataset):
    """Base of the event-camera datasets: ``dataset[i]`` is ``(frames or events, label)``.

    Subclasses fill ``self.samples`` and implement ``_item(index) -> (data, label)``.
    """

    sensor_size = (128, 128, 2)  # tonic's (W, H, polarities)
    dtype = EVENT_DTYPE

    def __init__(self, root: str | os.PathLike, train: bool, frames_number: int | None,
                 split_by: str, transform: Callable | None, target_transform: Callable | None,
                 num_workers: int | None):
        if not isinstance(train, (bool, np.bool_)):
            raise TypeError(f"train must be True (the train split) or False (the test split), got {train!r}")
        check_split_by(split_by)
        if frames_number is not None:
            check_frame_args(frames_number, split_by, self.sensor_size[1::-1])
        check_workers(num_workers)
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

    def __len__(self) -> int:
        return len(self.samples)

    def _load_frames(self, entry: Path, source: Path, fingerprint: np.ndarray,
                     rebuild: Callable[[], None]) -> torch.Tensor:
        """The frames entry ``entry`` of the recording ``source`` (whose fingerprint is
        ``fingerprint``) as a ``[T, 2, H, W]`` float32 tensor, validated (see
        :func:`_cache.check_frames`); a bad entry is rebuilt by ``rebuild()`` with a logged
        warning, or raises ``ValueError`` naming it."""
        size_hw = self.sensor_size[1::-1]

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
