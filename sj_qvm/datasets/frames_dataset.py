"""Event-frame samples for training: :class:`Frames` (sum-pooling, scaling, augmentation).

A sample is ``frames: [T, 2, H, W]`` event counts. :class:`Frames` sum-pools them to the training
size and augments them for training: a random translation of up to 1/8 of the frame size with zero
fill, plus an optional random horizontal flip (CIFAR10-DVS; not gestures, whose classes include
left/right pairs), the same for all T frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["Frames", "augment", "to_time_major"]


class Frames(torch.utils.data.Dataset):
    """Wraps a dataset of ``(frames [T, 2, S, S], label)``: downsampling, scaling, augmentation.

    Items are ``(frames [T, 2, size, size] float32, label)``. Downsampling sums counts over
    ``k x k`` blocks (``k = S // size``), so ``frames.sum()`` is kept; then it is multiplied by
    ``scale``. With ``train`` each item is augmented afresh (:func:`augment`).
    """

    def __init__(self, base, size: int, scale: float = 1.0, train: bool = False, flip: bool = False):
        self.base, self.size, self.scale, self.train, self.flip = base, size, scale, train, flip
        self._cache: dict = {}

    def __len__(self):
        return len(self.base)

    def _load(self, i):
        if i not in self._cache:
            frames, label = self.base[i]
            frames = torch.as_tensor(frames, dtype=torch.float32)
            k = frames.shape[-1] // self.size
            if k > 1:
                frames = F.avg_pool2d(frames, k) * (k * k)
            self._cache[i] = (frames * self.scale, int(label))
        return self._cache[i]

    def __getitem__(self, i):
        frames, label = self._load(i)
        if self.train:
            frames = augment(frames, self.flip)
        return frames, label


def augment(frames: torch.Tensor, flip: bool) -> torch.Tensor:
    """Random translation (zero fill, up to H/8) and optional h-flip of ``[T, C, H, W]``; a new
    tensor of the same shape (the input is not changed). Uses torch's global generator."""
    H, W = frames.shape[-2:]
    m = max(1, H // 8)
    dy, dx = (int(v) for v in torch.randint(-m, m + 1, (2,)))
    out = torch.zeros_like(frames)
    ys, yd = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
    xs, xd = slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx))
    out[..., yd, xd] = frames[..., ys, xs]
    if flip and torch.rand(()) < 0.5:
        out = out.flip(-1)
    return out


def to_time_major(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, *] -> [T, B, *]`` (contiguous)."""
    return frames.transpose(0, 1).contiguous()
