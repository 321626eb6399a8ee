"""The static-image datasets (CIFAR-10, CIFAR-100, ImageNet), their augmentation and loaders.

Training augmentation follows the paper's Appendix A.4 (random crop, Cutout, AutoAugment) with
torchvision's transforms: CIFAR ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
``AutoAugment(CIFAR10 policy)``; ImageNet ``RandomResizedCrop(S)``, ``RandomHorizontalFlip``,
``AutoAugment(IMAGENET policy)``; then ``ToTensor``, ``Normalize`` and :class:`Cutout` (a small
transform of sj-qvm's own). Evaluation: CIFAR as it is; ImageNet ``Resize(S * 256 / 224)``,
``CenterCrop(S)``. Every item is ``(image [3, S, S] float32, label int)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ...checks import check_int
from ...datasets.cifar import CIFAR10, CIFAR100
from ...datasets.image_folder import ImageFolder

__all__ = ["Cutout", "StaticSpec", "CIFAR10_SPEC", "CIFAR100_SPEC", "IMAGENET_SPEC", "SPECS",
           "train_transform", "eval_transform", "loader_options"]

_CIFAR_MEAN, _CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Cutout:
    """Cutout (DeVries & Taylor, 2017): zero one ``length x length`` square of ``img [C, H, W]``
    whose centre is uniform over the image (the square is clipped at the borders).

    Returns a new tensor (the input is not changed); ``length = 0`` returns the input as it is.
    The centre is drawn from torch's global generator (seeded per DataLoader worker).
    """

    def __init__(self, length: int):
        self.length = check_int(length, "cutout length", minimum=0)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.length == 0:
            return img
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        half = self.length // 2
        y0, y1 = max(0, cy - half), min(h, cy + self.length - half)
        x0, x1 = max(0, cx - half), min(w, cx + self.length - half)
        out = img.clone()
        out[..., y0:y1, x0:x1] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


@dataclass(frozen=True)
class StaticSpec:
    """One dataset: ``make(root, train, transform)`` returns its split as a Dataset of
    ``(image, label)``; ``layout_help(root)`` is the expected layout and where it is published."""
    name: str
    title: str
    num_classes: int
    image_size: int           # the paper's input side S
    variant: str              # sj_qvm.image_models variant
    make: Callable
    layout_help: Callable


def _cifar(cls):
    return lambda root, train, transform: cls(root, train=train, transform=transform)


def _imagenet(root, train, transform):
    return ImageFolder(Path(root) / ("train" if train else "val"), transform=transform)


CIFAR10_SPEC = StaticSpec("cifar10", "CIFAR-10", 10, 32, "cifar", _cifar(CIFAR10),
                          CIFAR10.layout_help)
CIFAR100_SPEC = StaticSpec("cifar100", "CIFAR-100", 100, 32, "cifar", _cifar(CIFAR100),
                           CIFAR100.layout_help)
IMAGENET_SPEC = StaticSpec("imagenet", "ImageNet-1k", 1000, 224, "imagenet", _imagenet,
                           lambda root: f"Expected {ImageFolder.layout}, ROOT = {root}.")
SPECS = {s.name: s for s in (CIFAR10_SPEC, CIFAR100_SPEC, IMAGENET_SPEC)}


def _stats(spec: StaticSpec):
    return (_CIFAR_MEAN, _CIFAR_STD) if spec.variant == "cifar" else (_IMAGENET_MEAN, _IMAGENET_STD)


def train_transform(spec: StaticSpec, image_size: int, cutout: int, autoaugment: bool = True):
    """PIL image -> ``[3, image_size, image_size]``: the A.4 augmentation (see the module doc)."""
    from torchvision import transforms as tr
    policy = tr.AutoAugmentPolicy.CIFAR10 if spec.variant == "cifar" else \
        tr.AutoAugmentPolicy.IMAGENET
    if spec.variant == "cifar":
        crop = [tr.Resize(image_size)] if image_size != 32 else []
        crop.append(tr.RandomCrop(image_size, padding=image_size // 8))
    else:
        crop = [tr.RandomResizedCrop(image_size)]
    return tr.Compose(crop + [tr.RandomHorizontalFlip()]
                      + ([tr.AutoAugment(policy)] if autoaugment else [])
                      + [tr.ToTensor(), tr.Normalize(*_stats(spec)), Cutout(cutout)])


def eval_transform(spec: StaticSpec, image_size: int):
    """PIL image -> ``[3, image_size, image_size]``, deterministic."""
    from torchvision import transforms as tr
    if spec.variant == "cifar":
        size = [tr.Resize(image_size)] if image_size != 32 else []
    else:
        size = [tr.Resize(round(image_size * 256 / 224)), tr.CenterCrop(image_size)]
    return tr.Compose(size + [tr.ToTensor(), tr.Normalize(*_stats(spec))])


def loader_options(workers: int, device: torch.device) -> dict:
    """DataLoader keywords that keep a GPU fed: ``workers`` decoding processes that stay alive
    between epochs (``persistent_workers``) with 4 batches each in flight (``prefetch_factor``),
    and page-locked batches on CUDA (``pin_memory``) so the copy to the GPU overlaps compute."""
    workers = check_int(workers, "--workers", minimum=0)
    opts = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers:
        opts.update(persistent_workers=True, prefetch_factor=4)
    return opts


def default_workers() -> int:
    """One decoding process per CPU core the process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(0, min(8, n))
