"""Emulated CIFAR10-DVS-style releases of real images, in the real release's own layout.

:func:`write_emulated_release` runs :func:`~sj_qvm.datasets.emulate_dvs` on each image and writes
``root/<class>/cifar10_<class>_<id>.aedat`` (jAER AEDAT 2.0, DVS128 addresses), which
:class:`~sj_qvm.datasets.CIFAR10DVS` reads exactly as the real release, splits included.
:func:`arrange` chooses which image goes to which file id so that the reader's ``"first900"``
split tests on images never seen in training; :func:`write_digits_release` and
:func:`write_folder_release` use it for scikit-learn's digits and for torchvision folders.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..checks import check_int
from ._parallel import run_tasks
from .aedat import write_aedat2
from .cifar10_dvs import CIFAR10DVS, split_files
from .emulator import DVSSettings, check_image, emulate_dvs
from .image_sources import load_digit_images, read_image_folder

__all__ = ["EMULATED_RELEASE_VERSION", "write_emulated_release", "arrange", "write_digits_release",
           "write_folder_release"]

EMULATED_RELEASE_VERSION = 2
"""Bumped whenever the same arguments write different events, so a cache of emulated releases can
tell an outdated one from a current one (2: the pixels that never see the screen are no longer
rendered, so their log intensity is exact)."""
_CLASS_NAME = re.compile(r"[a-z]+")


def _class_names(class_names, labels: np.ndarray) -> tuple[str, ...]:
    needed = int(labels.max()) + 1 if len(labels) else 0
    if class_names is None:
        if needed > len(CIFAR10DVS.classes):
            raise ValueError(f"class_names must be given for labels above {len(CIFAR10DVS.classes) - 1} "
                             f"(got labels up to {needed - 1})")
        return CIFAR10DVS.classes
    names = tuple(class_names)
    bad = [n for n in names if not isinstance(n, str) or not _CLASS_NAME.fullmatch(n)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct lowercase words [a-z]+ (file names are "
                         f"cifar10_<class>_<id>.aedat), got {names!r}")
    if len(names) < needed:
        raise ValueError(f"class_names has {len(names)} names, but labels go up to {needed - 1}")
    return names


_SYNC_AT_END = hasattr(os, "sync")  # one flush of all files instead of one fsync per file


def _emulate_file(image, path: Path, seed, settings: dict) -> None:
    write_aedat2(path, emulate_dvs(image, seed=seed, **settings), fsync=not _SYNC_AT_END)


def write_emulated_release(images, labels, root: str | os.PathLike, *, class_names=None, seed=0,
                           ids=None, num_workers: int | None = None, progress: bool = True,
                           **settings) -> Path:
    """Emulate a DVS recording of each image and write them as a CIFAR10-DVS release; returns ``root``.

    ``images``: ``[N, H, W]`` (or a sequence of ``[H, W]``), uint8 or floating in [0, 1];
    ``labels``: ``[N]`` ints. Image ``i`` becomes ``root/<name>/cifar10_<name>_<id>.aedat`` with
    ``name = class_names[labels[i]]`` and ``id = ids[i]`` (default: its running number within
    its class). ``class_names=None`` takes CIFAR10-DVS's folders in label order (airplane for 0 ..
    truck for 9), so :class:`~sj_qvm.datasets.CIFAR10DVS` and its splits read the release as
    they read the real one; other names must be lowercase words, read by a ``CIFAR10DVS``
    subclass declaring them as its ``classes``. ``seed``: recording ``(label, id)`` is emulated
    with seed ``(seed, label, id)``. ``settings``: :class:`~sj_qvm.datasets.emulator.DVSSettings`
    fields. Files are written atomically, in ``num_workers`` processes (``0``: here), with a
    progress bar (unless ``progress`` is False), and flushed to disk before this returns (one
    ``os.sync`` where there is one, rather than an fsync per file); a class folder that is a symbolic link is refused.
    """
    DVSSettings(**settings)  # every setting checked before any work
    check_int(seed, "seed", minimum=0)
    images = [check_image(image) for image in images]
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or (len(labels) and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be [N] ints, one per image ({len(images)}), got "
                         f"{labels.dtype} {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    names = _class_names(class_names, labels)
    if ids is None:
        ids = np.zeros(len(labels), np.int64)
        for label in np.unique(labels):
            ids[labels == label] = np.arange(int((labels == label).sum()))
    ids = np.asarray(ids)
    if ids.shape != labels.shape or (len(ids) and (ids.dtype.kind not in "iu" or ids.min() < 0)):
        raise ValueError(f"ids must be [N] ints >= 0, one per image, got {ids.dtype} {ids.shape}")
    if len(set(zip(labels.tolist(), ids.tolist()))) != len(ids):
        raise ValueError("ids must be distinct within each class (two images would share a file)")
    root = Path(root)
    for name in sorted({names[label] for label in labels.tolist()}):
        folder = root / name
        if folder.is_symlink():
            raise ValueError(f"{folder}: is a symbolic link; the release is written only into "
                             f"real folders under {root}")
        folder.mkdir(parents=True, exist_ok=True)
    tasks, files = [], []
    for image, label, file_id in zip(images, labels.tolist(), ids.tolist()):
        path = root / names[label] / f"cifar10_{names[label]}_{file_id}.aedat"
        tasks.append((image, path, (seed, label, file_id), settings))
        files.append(str(path))
    run_tasks(_emulate_file, tasks, files, "emulating DVS recordings", num_workers, progress)
    if _SYNC_AT_END:
        os.sync()  # every file on disk before the caller marks the release complete
    return root


def arrange(train: tuple, test: tuple, per_class: int, num_classes: int, seed: int = 0):
    """Which image each file of a release with ``per_class`` files per class shows.

    ``train``, ``test``: ``(images, labels)`` pools. For each class, the file ids that
    :class:`~sj_qvm.datasets.CIFAR10DVS`'s ``"first900"`` split puts in its test part (the last
    ``per_class - ceil(0.9 per_class)`` in the reader's alphabetical order) get distinct test
    images; the other ids get training images, in a random order drawn from ``seed``, reused
    when the class has fewer than its ids (a reused image gets a recording of its own). Returns
    ``(images, labels, ids)`` for :func:`write_emulated_release`.
    """
    check_int(per_class, "per_class", minimum=2)
    rng = np.random.default_rng(seed)
    chosen, labels, ids = [], [], []
    for label in range(num_classes):
        names = [f"cifar10_c_{i}.aedat" for i in range(per_class)]
        test_ids = [int(n[10:-6]) for n in split_files([names], "first900", train=False)[0]]
        train_ids = sorted(set(range(per_class)) - set(test_ids))
        for (images, pool_labels), wanted, distinct in ((test, test_ids, True), (train, train_ids, False)):
            pool = rng.permutation(np.flatnonzero(np.asarray(pool_labels) == label))
            if len(pool) == 0 or (distinct and len(pool) < len(wanted)):
                raise ValueError(f"class {label} has {len(pool)} {'test' if distinct else 'training'} "
                                 f"images; {len(wanted)} {'distinct ' if distinct else ''}are needed")
            for k, file_id in enumerate(wanted):
                chosen.append(images[pool[k % len(pool)]])
                labels.append(label)
                ids.append(file_id)
    return np.stack(chosen), np.asarray(labels, np.int64), np.asarray(ids, np.int64)


def write_digits_release(root: str | os.PathLike, per_class: int = 200, seed: int = 0,
                         num_workers: int | None = None, progress: bool = True,
                         **settings) -> Path:
    """scikit-learn's digits as an emulated release: ``per_class`` files per class (digit ``d``
    in CIFAR10-DVS's class folder ``d``, airplane .. truck). Per class, ``per_class -
    ceil(0.9 per_class)`` digits drawn from ``seed`` are kept for the test split (20 with the
    default 200, so 200 test recordings in all); the rest fill the training ids."""
    images, labels = load_digit_images()
    rng = np.random.default_rng(seed)
    n_test = per_class - -(-per_class * 9 // 10)
    test = np.zeros(len(labels), dtype=bool)
    for label in range(10):
        test[rng.permutation(np.flatnonzero(labels == label))[:n_test]] = True
    plan = arrange((images[~test], labels[~test]), (images[test], labels[test]), per_class, 10, seed)
    return write_emulated_release(plan[0], plan[1], root, seed=seed, ids=plan[2],
                                  num_workers=num_workers, progress=progress, **settings)


def write_folder_release(root: str | os.PathLike, images_dir: str | os.PathLike, per_class: int = 200,
                         seed: int = 0, num_workers: int | None = None, progress: bool = True,
                         **settings) -> Path:
    """A torchvision folder's images (MNIST, FashionMNIST or CIFAR-10, see
    :func:`~sj_qvm.datasets.image_sources.read_image_folder`) as an emulated release:
    ``per_class`` files per class, its test images in the ``"first900"`` test ids and its
    training images in the rest."""
    _, train_images, train_labels = read_image_folder(images_dir, train=True)
    _, test_images, test_labels = read_image_folder(images_dir, train=False)
    plan = arrange((train_images, train_labels), (test_images, test_labels), per_class, 10, seed)
    return write_emulated_release(plan[0], plan[1], root, seed=seed, ids=plan[2],
                                  num_workers=num_workers, progress=progress, **settings)
