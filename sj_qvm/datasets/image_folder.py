"""ImageNet-style ``train/``, ``val/`` folders (one subfolder per class), read as torchvision does,
with a corrupt image named in a ``ValueError`` and nothing read from outside the root."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torchvision.datasets import ImageFolder as _TVImageFolder

__all__ = ["ImageFolder", "load_rgb"]


def load_rgb(path: str):
    """The image at ``path`` as an RGB PIL image; a file PIL cannot decode fully raises
    ``ValueError`` naming it (PIL reports truncation only when the pixels are read)."""
    from PIL import Image
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        offset = ""
        try:
            offset = f" (file of {os.path.getsize(path)} bytes)"
        except OSError:
            pass
        raise ValueError(f"{path}: not a readable image{offset}: {e}") from None


class ImageFolder(_TVImageFolder):
    """``root/<class>/<image>`` as ``(PIL RGB image, class index)``, classes sorted by name.

    Args:
        root: one split's folder, e.g. ``/data/imagenet/train``.
        transform, target_transform: as in torchvision.
    Raises:
        FileNotFoundError (with the expected layout) when ``root`` has no class folders with images;
        ValueError when an image resolves outside ``root`` (a symlink) or cannot be decoded.
    """

    layout = ("ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG (ImageNet's ILSVRC-2012 "
              "release, https://image-net.org/download.php, with val/ sorted into class folders)")

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 target_transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder. Expected {self.layout}.")
        try:
            super().__init__(str(root), transform=transform, target_transform=target_transform,
                             loader=load_rgb)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{root}: {e}. Expected {self.layout}.") from None
        inside = root.resolve()
        for path, _ in self.samples:
            if not Path(path).resolve().is_relative_to(inside):
                raise ValueError(f"{path}: resolves outside {root} ({Path(path).resolve()})")
        self.num_classes = len(self.classes)
