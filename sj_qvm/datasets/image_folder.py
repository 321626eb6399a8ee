"""ImageNet-style ``train/``, ``val/`` folders (one subfolder per class), read as torchvision does,
with a corrupt image named in a ``ValueError`` and nothing read from outside the root.

The walk of a class folder follows links to folders as torchvision's does
(``os.walk(followlinks=True)``), with two limits that keep it finite and every image under its
own class: a folder is listed once however many links lead to it (a link to a folder already
walked, e.g. to an ancestor, adds nothing), and a link that leads out of its class folder is not
followed (a warning names it; out of the root it is refused): ``cat/more -> ..`` would otherwise
list every class again as ``cat``, once per level of the loop, and two such links make the walk
exponential.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from torchvision.datasets import ImageFolder as _TVImageFolder
from torchvision.datasets.folder import has_file_allowed_extension

__all__ = ["ImageFolder", "UnreadableImageError", "load_rgb"]


class UnreadableImageError(ValueError):
    """A file that is not a readable image; the message is one line that starts with its path.

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch from the text
    ``"Caught UnreadableImageError in DataLoader worker process 0.\nOriginal Traceback ..."``;
    the rebuilt error keeps the one line (with the worker named after it) and carries the worker's
    traceback as a note, shown where a traceback is printed.
    """

    def __init__(self, message: str):
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        head, marker, original = str(message).rpartition(f"\n{name}: ")
        if not (marker and head.startswith(f"Caught {type(self).__name__} ")):
            super().__init__(message)
            return
        where = head.split("\n", 1)[0].removeprefix(f"Caught {type(self).__name__} ").rstrip(".")
        super().__init__(f"{original.strip()} ({where})")
        self.add_note(head)


def load_rgb(path: str):
    """The image at ``path`` as an RGB PIL image; a file PIL cannot decode fully raises
    :class:`UnreadableImageError` (a ``ValueError``) naming it (PIL reports truncation only when
    the pixels are read)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:  # the warning where warnings are errors
        offset = ""
        try:
            offset = f" (file of {os.path.getsize(path)} bytes)"
        except OSError:
            pass
        reason = "no image format PIL knows" if isinstance(e, UnidentifiedImageError) else e
        raise UnreadableImageError(f"{path}: not a readable image{offset}: {reason}") from None


def class_files(class_dir: str, root: str) -> List[str]:
    """The files under ``class_dir`` (links to folders followed), in torchvision's order (folders
    by path, files by name within each); each real folder is listed once, and a folder link that
    leads out of ``class_dir`` is skipped with a warning, out of ``root`` refused with a
    ``ValueError`` (see the module docstring)."""
    top, inside = os.path.realpath(class_dir), os.path.realpath(root)
    seen = {top}
    listed: List[Tuple[str, List[str]]] = []
    stack = [class_dir]
    while stack:
        folder = stack.pop()
        files, folders = [], []
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):  # the same walk on every run
                if not entry.is_dir():
                    files.append(entry.name)
                    continue
                real = os.path.realpath(entry.path)
                if real in seen:
                    continue  # a loop, or a second way into a folder already listed
                if os.path.commonpath([inside, real]) != inside:
                    raise ValueError(f"{entry.path}: resolves outside {root} ({real})")
                if os.path.commonpath([top, real]) != top:
                    warnings.warn(f"{entry.path}: a link to {real}, outside the class folder "
                                  f"{class_dir}: not followed (its images would get this "
                                  "folder's label)")
                    continue
                seen.add(real)
                folders.append(entry.path)
        stack += reversed(folders)
        listed.append((folder, files))
    return [os.path.join(folder, f) for folder, files in sorted(listed) for f in files]


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

    @staticmethod
    def make_dataset(directory, class_to_idx: Dict[str, int],
                     extensions: Optional[Tuple[str, ...]] = None,
                     is_valid_file: Optional[Callable[[str], bool]] = None,
                     allow_empty: bool = False) -> List[Tuple[str, int]]:
        """torchvision's ``(path, class index)`` list, walked by :func:`class_files`."""
        if (extensions is None) == (is_valid_file is None):
            raise ValueError("pass exactly one of extensions and is_valid_file")
        valid = is_valid_file or (lambda p: has_file_allowed_extension(p, extensions))
        samples, empty = [], []
        for name in sorted(class_to_idx):
            folder = os.path.join(directory, name)
            if not os.path.isdir(folder):
                continue
            found = [(p, class_to_idx[name]) for p in class_files(folder, directory) if valid(p)]
            samples += found
            if not found:
                empty.append(name)
        if empty and not allow_empty:
            raise FileNotFoundError(f"no image in the class folders {', '.join(empty)} (extensions "
                                    f"{', '.join(extensions or ())})")
        return samples
