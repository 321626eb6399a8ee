"""CIFAR-10 and CIFAR-100 from torchvision's "python version" layout, read without running pickle code.

The releases are pickled dicts (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``) whose ``data`` is a numpy
``uint8`` array ``[N, 3072]`` (1024 red, then green, then blue values of a 32x32 image, row-major)
and whose labels are a list of ints. A pickle can name any Python callable; this reader's
unpickler resolves only the numpy names an ndarray needs and refuses every other, so a
crafted file raises ``ValueError`` naming it instead of running code.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

__all__ = ["CIFAR10", "CIFAR100", "read_cifar_batch"]

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode")}  # how protocol 2 stores bytes: encode(str, "latin1")
_MAX_BYTES = 512 * 2 ** 20  # the largest CIFAR file (CIFAR-100 train) is 155 MiB


def _empty_bytes() -> bytes:
    """How protocol 2 stores the empty buffer of an array with no element: ``bytes()``; only
    that call (``bytes(n)`` would allocate n bytes)."""
    return b""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if (module, name) in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return _empty_bytes
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e})") from None
    if size > _MAX_BYTES:
        raise ValueError(f"{path}: {size} bytes is larger than any CIFAR file")
    raw = path.read_bytes()
    buf = io.BytesIO(raw)
    try:
        obj = _SafeUnpickler(buf, encoding="bytes").load()
    except Exception as e:  # truncated, crafted or not a pickle at all
        raise ValueError(f"{path}: not a CIFAR pickle (at byte offset {buf.tell()} of {len(raw)}: "
                         f"{type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR pickle (offset 0: a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: str | os.PathLike, label_key: str, num_classes: int):
    """One batch file -> ``(images [N, 32, 32, 3] uint8, labels [N] int64)``, validated."""
    path = Path(path)
    d = _load(path)
    for key in ("data", label_key):
        if key not in d:
            raise ValueError(f"{path}: no {key!r} entry (has {sorted(map(str, d))})")
    data, labels = d["data"], d[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072], got {what}")
    if len(data) == 0:
        raise ValueError(f"{path}: holds no image ('data' is uint8 [0, 3072])")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise ValueError(f"{path}: {label_key!r} must list one label per image ({len(data)})")
    try:
        labels, what = np.asarray(labels), None
    except ValueError:
        what = "lists of different lengths"
    if what is None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        what = f"{labels.dtype} {list(labels.shape)}, e.g. {labels.reshape(-1)[:2].tolist()!r}"
    if what is not None:
        raise ValueError(f"{path}: {label_key!r} must be one int in [0, {num_classes}) per image, "
                         f"got {what}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{path}: {label_key!r} must be ints in [0, {num_classes}), "
                         f"got {labels.dtype} in [{labels.min()}, {labels.max()}]")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


class CIFAR10(Dataset):
    """CIFAR-10, torchvision's layout and item type: ``dataset[i] = (PIL image 32x32 RGB, label)``.

    Args:
        root: the folder that holds ``cifar-10-batches-py/`` (nothing is downloaded or written).
        train: the 50,000 training images (``True``) or the 10,000 test images.
        transform, target_transform: callables applied to the PIL image / the int label.
    """

    folder = "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file, meta_key, label_key = "batches.meta", "label_names", "labels"
    num_classes = 10
    image_size = (32, 32, 3)  # (W, H, channels)

    def __init__(self, root: str | os.PathLike, train: bool = True,
                 transform: Callable | None = None, target_transform: Callable | None = None):
        if not isinstance(train, bool):
            raise TypeError(f"train must be True or False, got {train!r}")
        for name, value in (("transform", transform), ("target_transform", target_transform)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be None or a callable, got {value!r}")
        self.root = Path(root)
        base = self.root / self.folder
        files = self.train_files if train else self.test_files
        missing = [f for f in files + (self.meta_file,) if not (base / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{base}: missing {', '.join(missing)}.\n{self.layout_help(root)}")
        meta = _load(base / self.meta_file)
        names = meta.get(self.meta_key)
        if not isinstance(names, list) or len(names) != self.num_classes:
            raise ValueError(f"{base / self.meta_file}: {self.meta_key!r} must list "
                             f"{self.num_classes} class names")
        self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        parts = [read_cifar_batch(base / f, self.label_key, self.num_classes) for f in files]
        self.data = np.concatenate([p[0] for p in parts])
        self.targets = np.concatenate([p[1] for p in parts]).tolist()
        self.train, self.transform, self.target_transform = train, transform, target_transform

    @classmethod
    def layout_help(cls, root) -> str:
        """What a user sees when ``root`` is missing or wrong: the expected layout and its source."""
        files = ", ".join(cls.train_files + cls.test_files + (cls.meta_file,))
        return (f"Expected {Path(root) / cls.folder}/ with {files} (torchvision's layout; "
                f"extract {cls.url} into {root}).")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image
        img, label = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label


class CIFAR100(CIFAR10):
    """CIFAR-100 (fine labels), same item type: the folder ``cifar-100-python/``."""

    folder = "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    train_files, test_files = ("train",), ("test",)
    meta_file, meta_key, label_key = "meta", "fine_label_names", "fine_labels"
    num_classes = 100
