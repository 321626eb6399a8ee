"""The datasets the DVS pipeline trains on: one :class:`DatasetSpec` each (DVS128 Gesture, CIFAR10-DVS).

A spec's ``make(root, train, frames_number)`` returns the dataset of ``(frames [T, 2, 128, 128],
label)`` (event counts, split by event number); ``write_synthetic(root, tiny, seed)`` writes the
offline synthetic release in the real file formats, once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic import write_atomic
from ..datasets import CIFAR10DVS, DVSGesture

__all__ = ["DatasetSpec", "DVS_GESTURE", "CIFAR10_DVS"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    num_classes: int
    flip: bool
    make: Callable            # (root, train, frames_number) -> Dataset of (frames, label)
    write_synthetic: Callable  # (root, tiny: bool, seed) -> None; writes the release at root once
    paper_accuracy: float
    real_data_help: str
    classes: tuple = ()        # the class names, in label order
    order_pairs: tuple = ()    # class pairs (a, b) that only the order of events tells apart
    # (DVS128 Gesture: the right / the left arm turning clockwise vs counter-clockwise)
    input: str = "mean"        # the default --input (sj_qvm.datasets.representations)
    paper_input: str = "mean"  # the --input of --paper
    held_frames: int = 4       # the default --frames of a held (non-streaming) --input


# -- the two datasets ---------------------------------------------------------------------------
def _gesture(root, train, frames_number):
    return DVSGesture(root, train=train, frames_number=frames_number, split_by="number")


def _write_once(root: Path, write) -> None:
    """Write a synthetic release once: a marker, renamed into place last, says it is complete
    and which ``RELEASE_VERSION`` of :mod:`sj_qvm.datasets.synthetic` wrote it (an older release
    is written again; the frame cache notices the changed files)."""
    from ..datasets.synthetic import RELEASE_VERSION
    marker = Path(root) / ".sj_qvm_complete"
    stamp = f"complete v{RELEASE_VERSION}\n".encode()
    if marker.is_file() and marker.read_bytes() == stamp:
        return
    write()
    write_atomic(marker, stamp)


def _gesture_synthetic(root, tiny, seed):
    from ..datasets.synthetic import write_dvs_gesture
    if tiny:  # 22 train and 11 test samples
        kw = dict(users=(1, 2, 24), lightings=("fluorescent",), events_per_sample=3000)
    else:     # 132 train and 66 test samples
        kw = dict(users=(1, 2, 3, 4, 24, 25))
    _write_once(root, lambda: write_dvs_gesture(root, seed=seed, **kw))


def _cifar(root, train, frames_number):
    return CIFAR10DVS(root, train=train, frames_number=frames_number, split_by="number")


def _cifar_synthetic(root, tiny, seed):
    from ..datasets.synthetic import write_cifar10_dvs
    # "first900" keeps 90% of each class for training: 9/1 (tiny) or 36/4 files per class.
    kw = dict(samples_per_class=10, events_per_sample=3000) if tiny else dict(samples_per_class=40)
    _write_once(root, lambda: write_cifar10_dvs(root, seed=seed, **kw))


def _real_data_help(cls, paper: str) -> str:
    return f"Real data: {cls.layout_help('ROOT')} Then pass --root ROOT. Paper setting: {paper}."


def _spec(name, title, cls, flip, make, write_synthetic, paper_accuracy, paper,
          **extra) -> DatasetSpec:
    return DatasetSpec(name=name, title=title, num_classes=cls.num_classes, flip=flip,
                       make=make, write_synthetic=write_synthetic, paper_accuracy=paper_accuracy,
                       real_data_help=_real_data_help(cls, paper), classes=tuple(cls.classes),
                       **extra)


DVS_GESTURE = _spec("dvs_gesture", "DVS128 Gesture", DVSGesture, False, _gesture, _gesture_synthetic, 0.9375,
                    "--paper (93.75% at T = 4, L = 4)", order_pairs=((3, 4), (5, 6)),
                    input="stack", paper_input="stack", held_frames=16)
CIFAR10_DVS = _spec("cifar10_dvs", "CIFAR10-DVS", CIFAR10DVS, True, _cifar, _cifar_synthetic, 0.845,
                    "--paper (84.50% at T = 4, L = 4)")
