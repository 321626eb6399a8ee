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


# -- the two datasets ---------------------------------------------------------------------------
def _gesture(root, train, frames_number):
    from ..datasets import DVSGesture
    return DVSGesture(root, train=train, frames_number=frames_number, split_by="number")


def _write_once(root: Path, write) -> None:
    """Write a synthetic release once: a marker, renamed into place last, says it is complete."""
    marker = Path(root) / ".sj_qvm_complete"
    if marker.exists():
        return
    write()
    write_atomic(marker, b"complete\n")


def _gesture_synthetic(root, tiny, seed):
    from ..datasets.synthetic import write_dvs_gesture
    if tiny:  # 22 train and 11 test samples
        kw = dict(users=(1, 2, 24), lightings=("fluorescent",), events_per_sample=3000)
    else:     # 132 train and 66 test samples
        kw = dict(users=(1, 2, 3, 4, 24, 25))
    _write_once(root, lambda: write_dvs_gesture(root, seed=seed, **kw))


def _cifar(root, train, frames_number):
    from ..datasets import CIFAR10DVS
    return CIFAR10DVS(root, train=train, frames_number=frames_number, split_by="number")


def _cifar_synthetic(root, tiny, seed):
    from ..datasets.synthetic import write_cifar10_dvs
    # "first900" keeps 90% of each class for training: 9/1 (tiny) or 36/4 files per class.
    kw = dict(samples_per_class=10, events_per_sample=3000) if tiny else dict(samples_per_class=40)
    _write_once(root, lambda: write_cifar10_dvs(root, seed=seed, **kw))


DVS_GESTURE = DatasetSpec(
    name="dvs_gesture", title="DVS128 Gesture", num_classes=11, flip=False, make=_gesture,
    write_synthetic=_gesture_synthetic, paper_accuracy=0.9375,
    real_data_help="Real data: download DvsGesture.tar.gz from IBM "
    "(https://research.ibm.com/interactive/dvsgesture/), unpack it so that ROOT/DvsGesture/ holds "
    "userNN_<light>.aedat, userNN_<light>_labels.csv, trials_to_train.txt and trials_to_test.txt, "
    "then pass --root ROOT. Paper setting: --paper (93.75% at T = 4, L = 4).")

CIFAR10_DVS = DatasetSpec(
    name="cifar10_dvs", title="CIFAR10-DVS", num_classes=10, flip=True, make=_cifar,
    write_synthetic=_cifar_synthetic, paper_accuracy=0.845,
    real_data_help="Real data: download the CIFAR10-DVS release from figshare "
    "(https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671), unpack the ten class archives "
    "so that ROOT/<class>/cifar10_<class>_<n>.aedat exist, then pass --root ROOT. "
    "Paper setting: --paper (84.50% at T = 4, L = 4).")
