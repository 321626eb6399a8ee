"""Gray images to show the DVS emulator: scikit-learn's digits, and torchvision's MNIST,
FashionMNIST and CIFAR-10 folders, read without torchvision.

Every reader returns ``(images [N, H, W] uint8 or float in [0, 1], labels [N] int64)``, what
:func:`~sj_qvm.datasets.emulate_dvs` takes. The layouts are torchvision's:

- ``ROOT/MNIST/raw/`` and ``ROOT/FashionMNIST/raw/``: ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each may
  be gzipped, ``.gz``);
- ``ROOT/cifar-10-batches-py/``: read by :class:`sj_qvm.datasets.cifar.CIFAR10` (safely, without
  running pickle code) and turned to luminance (ITU-R BT.601 weights), since a DVS is colour-blind.

A missing folder or file raises :class:`ImagesNotFound` (a ``FileNotFoundError`` and a
``ValueError``) that shows the expected layout; a corrupt or truncated idx file a ``ValueError``
naming the file and byte offset. The sizes an idx header declares are bounded before anything is
allocated.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_FOLDERS", "ImagesNotFound", "load_digit_images", "read_idx", "read_mnist",
           "read_cifar10_gray", "read_image_folder", "folder_layout_help"]

IMAGE_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
"""The torchvision folders :func:`read_image_folder` recognizes, by kind."""
_IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MAX_IDX_ITEMS = 10_000_000
_MAX_IDX_SIDE = 1024
_MAX_IDX_BYTES = 1 << 30
_LUMA = np.array([0.299, 0.587, 0.114])


class ImagesNotFound(FileNotFoundError, ValueError):
    """An image folder or file is missing; the message shows the expected layout."""


def folder_layout_help(root) -> str:
    """What :func:`read_image_folder` expects under ``root``."""
    root = Path(root)
    mnist = ", ".join(f + "[.gz]" for files in _IDX_FILES.values() for f in files)
    return (f"Expected one of torchvision's layouts under {root}: {root}/MNIST/raw/ or "
            f"{root}/FashionMNIST/raw/ with {mnist}; or {root}/cifar-10-batches-py/ with "
            f"data_batch_1..5, test_batch and batches.meta")


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits: ``(images [1797, 8, 8] float64 in [0, 1],
    labels [1797] int64)`` (the 0..16 gray levels divided by 16)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images / 16.0, digits.target.astype(np.int64)


def _read_bytes(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``, gunzipped when it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read(limit + 1)
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except (OSError, EOFError) as e:  # a corrupt or truncated gzip stream
        raise ValueError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (MNIST's format): ``[N]`` for ``ndim=1``, ``[N, H, W]`` for 3.

    The header is 2 zero bytes, the type byte 0x08 (uint8), the number of dimensions, then each
    dimension as a big-endian uint32. Raises ``ValueError`` naming the file and byte offset for
    another header, sizes above the bounds (10 M items, 1024 pixels a side, 1 GiB), and data
    that ends early or runs on.
    """
    path = Path(path)
    head = _read_bytes(path, 4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated idx header at byte offset {len(head)} "
                         f"(expected {4 + 4 * ndim} bytes)")
    if head[:3] != b"\x00\x00\x08" or head[3] != ndim:
        raise ValueError(f"{path}: byte offset 0: not an idx file of uint8 with {ndim} dimensions "
                         f"(header {head[:4].hex()}, expected 000008{ndim:02x})")
    dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if dims[0] > _MAX_IDX_ITEMS or any(d > _MAX_IDX_SIDE or d == 0 for d in dims[1:]):
        raise ValueError(f"{path}: byte offset 4: dimensions {dims} exceed the bounds "
                         f"({_MAX_IDX_ITEMS} items, sides 1..{_MAX_IDX_SIDE})")
    size = int(np.prod(dims))
    header = 4 + 4 * ndim
    if size > _MAX_IDX_BYTES:
        raise ValueError(f"{path}: byte offset 4: {size} bytes of data is over {_MAX_IDX_BYTES}")
    data = _read_bytes(path, header + size)
    if len(data) != header + size:
        where = "ends" if len(data) < header + size else "runs on past the data"
        raise ValueError(f"{path}: truncated or corrupt: the data {where} at byte offset "
                         f"{min(len(data), header + size)} (the header declares {dims}, "
                         f"{header + size} bytes in all)")
    return np.frombuffer(data, np.uint8, size, header).reshape(dims)


def _find(folder: Path, name: str, root: Path) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise ImagesNotFound(f"{folder / name}: missing (nor is there {name}.gz). {folder_layout_help(root)}")


def read_mnist(root: str | os.PathLike, kind: str = "mnist", train: bool = True):
    """MNIST or FashionMNIST (``kind``) from ``root/<MNIST|FashionMNIST>/raw/``:
    ``(images [N, 28, 28] uint8, labels [N] int64)`` of the train (60,000) or test (10,000) set."""
    root = Path(root)
    folder = root / IMAGE_FOLDERS[kind] / "raw"
    images_path, labels_path = (_find(folder, name, root) for name in _IDX_FILES[bool(train)])
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of "
                         f"{images_path}")
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return images, labels.astype(np.int64)


def read_cifar10_gray(root: str | os.PathLike, train: bool = True):
    """CIFAR-10 from ``root/cifar-10-batches-py/`` as luminance: ``(images [N, 32, 32] uint8,
    labels [N] int64)``."""
    from .cifar import CIFAR10
    try:
        dataset = CIFAR10(root, train=bool(train))
    except FileNotFoundError as e:
        raise ImagesNotFound(f"{e} {folder_layout_help(root)}") from None
    gray = np.rint(dataset.data @ _LUMA).astype(np.uint8)
    return gray, np.asarray(dataset.targets, dtype=np.int64)


def read_image_folder(root: str | os.PathLike, train: bool = True):
    """The images of the one torchvision folder under ``root`` (see :data:`IMAGE_FOLDERS`):
    ``(kind, images, labels)``. Raises :class:`ImagesNotFound` with the expected layout when
    ``root`` holds none of them, or more than one."""
    root = Path(root)
    if not root.is_dir():
        raise ImagesNotFound(f"{root}: no such folder. {folder_layout_help(root)}")
    found = [kind for kind, name in IMAGE_FOLDERS.items() if (root / name).is_dir()]
    if len(found) != 1:
        what = "none" if not found else f"several ({', '.join(IMAGE_FOLDERS[k] for k in found)})"
        raise ImagesNotFound(f"{root}: holds {what} of the image folders. {folder_layout_help(root)}")
    kind = found[0]
    images, labels = read_cifar10_gray(root, train) if kind == "cifar10" else read_mnist(root, kind, train)
    return kind, images, labels
