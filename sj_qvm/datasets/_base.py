"""What DVSGesture and CIFAR10DVS share: settings, length, cached-frame loading and transforms."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import _cache
from .aedat import EVENT_DTYPE
from .frames import check_frame_args


class EventDataset(Dataset):
    """Base of the event-camera datasets: ``dataset[i]`` is ``(frames or events, label)``.

    Subclasses fill ``self.samples`` and implement ``_item(index) -> (data, label)``.
    """

    sensor_size = (128, 128, 2)  # tonic's (W, H, polarities)
    dtype = EVENT_DTYPE

    def __init__(self, root: str | os.PathLike, train: bool, frames_number: int | None,
                 split_by: str, transform: Callable | None, target_transform: Callable | None):
        if frames_number is not None:
            check_frame_args(frames_number, split_by, self.sensor_size[1::-1])
        self.root = Path(root)
        self.train = bool(train)
        self.frames_number = frames_number
        self.split_by = split_by
        self.transform = transform
        self.target_transform = target_transform
        self.samples: list = []

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def _load_frames(entry: Path) -> torch.Tensor:
        """A cached ``[T, 2, H, W]`` count entry as a float32 tensor."""
        return torch.from_numpy(_cache.load_entry(entry)["frames"].astype(np.float32))

    def __getitem__(self, index: int):
        data, label = self._item(index)
        if self.transform is not None:
            data = self.transform(data)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return data, label
