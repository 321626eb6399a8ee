"""The datasets the DVS pipeline trains on: one :class:`DatasetSpec` each (DVS128 Gesture, CIFAR10-DVS,
and CIFAR10-DVS-style releases emulated from real images: scikit-learn's digits, or a torchvision
folder through :func:`emulated_images_spec`).

A spec's ``make(root, train, frames_number, progress=True)`` returns the dataset of ``(frames
[T, 2, 128, 128], label)`` (event counts, split by event number); ``write_synthetic(root, tiny,
seed, progress=True)`` writes the offline release (synthetic or emulated) in the real file
formats, once. ``progress``: tqdm bars while recordings are emulated or frames are cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic import write_atomic
from ..datasets import CIFAR10DVS, DVSGesture

__all__ = ["DatasetSpec", "DVS_GESTURE", "CIFAR10_DVS", "EMULATED_DIGITS", "EMULATED_SETTINGS",
           "EMULATED_PER_CLASS", "emulated_images_spec"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    num_classes: int
    flip: bool
    make: Callable            # (root, train, frames_number, progress=True) -> Dataset of (frames, label)
    write_synthetic: Callable  # (root, tiny: bool, seed, progress=True) -> None; writes it once
    paper_accuracy: float | None  # None: no published figure
    real_data_help: str
    classes: tuple = ()        # the class names, in label order
    order_pairs: tuple = ()    # class pairs (a, b) that only the order of events tells apart
    # (DVS128 Gesture: the right / the left arm turning clockwise vs counter-clockwise)
    input: str = "mean"        # the default --input (sj_qvm.datasets.representations)
    paper_input: str = "mean"  # the --input of --paper
    held_frames: int = 4       # the default --frames of a held (non-streaming) --input
    emulated_sources: bool = False  # its example offers --emulated and --images DIR (releases
    # emulated in this dataset's layout)


# -- the two datasets ---------------------------------------------------------------------------
def _gesture(root, train, frames_number, progress=True):
    return DVSGesture(root, train=train, frames_number=frames_number, split_by="number",
                      progress=progress)


def _write_once(root: Path, write, what: str | None = None) -> None:
    """Write an offline release once: a marker, renamed into place last, says it is complete
    and what wrote it: ``what`` (default: the ``RELEASE_VERSION`` of
    :mod:`sj_qvm.datasets.synthetic`). A release written by anything else is written again; the
    frame cache notices the changed files."""
    from ..datasets.synthetic import RELEASE_VERSION
    marker = Path(root) / ".sj_qvm_complete"
    stamp = f"complete {what or f'v{RELEASE_VERSION}'}\n".encode()
    if marker.is_file() and marker.read_bytes() == stamp:
        return
    write()
    write_atomic(marker, stamp)


def _gesture_synthetic(root, tiny, seed, progress=True):  # writes without a bar
    from ..datasets.synthetic import write_dvs_gesture
    if tiny:  # 22 train and 11 test samples
        kw = dict(users=(1, 2, 24), lightings=("fluorescent",), events_per_sample=3000)
    else:     # the real release's users and split: 759 train and 198 test samples
        kw = dict(users=tuple(range(1, 30)))
    from ..datasets.synthetic import RELEASE_VERSION
    what = f"v{RELEASE_VERSION} users {len(kw['users'])} seed {seed}"  # a changed release is rewritten
    _write_once(root, lambda: write_dvs_gesture(root, seed=seed, **kw), what)


def _cifar(root, train, frames_number, progress=True):
    return CIFAR10DVS(root, train=train, frames_number=frames_number, split_by="number",
                      progress=progress)


def _cifar_synthetic(root, tiny, seed, progress=True):  # writes without a bar
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
                    "--paper (84.50% at T = 4, L = 4)", emulated_sources=True)


# -- releases emulated from real images (sj_qvm.datasets.emulate_dvs) ----------------------------
EMULATED_PER_CLASS = {False: 200, True: 10}
"""Recordings per class of the emulated releases (by ``tiny``): with CIFAR10-DVS's "first900"
split, 200 give 180 training and 20 test recordings per class, 200 test recordings in all, so one
test sample is 0.5 points; the tiny release (for tests) has 9 and 1."""
EMULATED_SETTINGS = dict(threshold_on=0.4, threshold_off=0.4, amplitude_px=2.0, time_step_us=40_000)
"""The emulator settings of the pipeline's emulated releases: the defaults (fitted to CIFAR10-DVS's
205,071 events per recording), but with contrast thresholds 0.4, 2-pixel strokes and 40 ms
sub-steps, which give about 20,000 events per digit (10x fewer), so that 2,000 recordings are
written and framed in seconds. The tiny releases (for tests) take 65 ms sub-steps."""


def _emulated_settings(tiny: bool) -> dict:
    return dict(EMULATED_SETTINGS, time_step_us=65_000) if tiny else EMULATED_SETTINGS


def _emulated_stamp(source: str, tiny: bool, seed: int) -> str:
    from ..datasets.emulated_release import EMULATED_RELEASE_VERSION
    settings = ", ".join(f"{k}={v}" for k, v in sorted(_emulated_settings(tiny).items()))
    return (f"emulated v{EMULATED_RELEASE_VERSION} from {source}, {EMULATED_PER_CLASS[tiny]} per "
            f"class, seed {seed}, {settings}")


def _digits_emulated(root, tiny, seed, progress=True):
    from ..datasets.emulated_release import write_digits_release
    _write_once(root, lambda: write_digits_release(root, EMULATED_PER_CLASS[tiny], seed,
                                                   progress=progress, **_emulated_settings(tiny)),
                _emulated_stamp("sklearn digits", tiny, seed))


def _emulated_spec(name: str, images: str, what: str, flip: bool, write) -> DatasetSpec:
    """A release emulated from ten classes of ``images``, read as CIFAR10-DVS (``what``: how its
    classes 0..9 are named in the help)."""
    return DatasetSpec(
        name=name, title=f"emulated DVS recordings of {images}", num_classes=10, flip=flip,
        make=_cifar, write_synthetic=write, paper_accuracy=None,
        real_data_help="This release is emulated offline: each image is moved on a virtual screen "
        "in front of an emulated DVS128 (sj_qvm.datasets.emulate_dvs), as CIFAR10-DVS was "
        f"recorded, and written in CIFAR10-DVS's own layout. {what} 0..9 are in the class folders "
        "airplane..truck. " + _real_data_help(CIFAR10DVS, "--paper (84.50% at T = 4, L = 4)"))


#: scikit-learn's digits (a mirrored digit is not a digit: no flip).
EMULATED_DIGITS = _emulated_spec("emulated_digits", "scikit-learn's digits", "The digits", False,
                                 _digits_emulated)


def emulated_images_spec(images_dir) -> DatasetSpec:
    """The spec of a release emulated from the torchvision folder ``images_dir`` (MNIST,
    FashionMNIST or CIFAR-10; see :func:`sj_qvm.datasets.image_sources.read_image_folder`), for a
    ``--images DIR`` option: its test images fill the "first900" test ids, its training images the
    rest. Raises ``ImagesNotFound`` (with the expected layout) when ``images_dir`` holds none."""
    from ..datasets.emulated_release import write_folder_release
    from ..datasets.image_sources import IMAGE_FOLDERS, ImagesNotFound
    folder = Path(images_dir)
    kinds = [k for k, name in IMAGE_FOLDERS.items() if (folder / name).is_dir()]
    if len(kinds) != 1:
        from ..datasets.image_sources import folder_layout_help
        raise ImagesNotFound(f"{folder}: no single torchvision image folder. {folder_layout_help(folder)}")
    kind = kinds[0]

    def write(root, tiny, seed, progress=True):
        _write_once(root, lambda: write_folder_release(root, folder, EMULATED_PER_CLASS[tiny], seed,
                                                       progress=progress,
                                                       **_emulated_settings(tiny)),
                    _emulated_stamp(f"{kind} in {folder.resolve()}", tiny, seed))

    return _emulated_spec(f"emulated_{kind}", IMAGE_FOLDERS[kind],
                          f"The classes of {IMAGE_FOLDERS[kind]}", kind != "mnist", write)
