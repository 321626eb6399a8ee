"""ANNs for static images, as in the paper's Tables 1, 2 and 4: VGG-16, ResNet-18/20/34.

Every model takes images ``[B, 3, H, W]`` and returns logits ``[B, num_classes]``; every
activation is a :class:`~sj_qvm.QuantReLU` (one threshold per channel by default; ``levels=None``
builds the plain-ReLU float twin). ``variant="cifar"`` is the 32x32 form (3x3 stem, no stem
pooling); ``variant="imagenet"`` the 224x224 form (7x7 stride-2 stem and a 3x3 stride-2 pool for
the ResNets, a 7x7 adaptive pool before VGG's classifier). ``width`` is the first stage's channel
count (64 for VGG-16 and ResNet-18/34, 16 for ResNet-20 in the standard nets); later stages scale
with it. ``pool`` chooses the spatial pooling: ``"avg"`` (what ANN-to-SNN work usually trains) or
``"max"`` (converted exactly by :class:`sj_qvm.pool.SpikingMaxPool`).
"""
from __future__ import annotations

import torch.nn as nn

from .checks import check_choice, check_int, check_rounding
from .models import _act, basic_stages

__all__ = ["IMAGE_ARCHS", "VARIANTS", "POOLS", "vgg16", "resnet18", "resnet20", "resnet34",
           "build_image_model"]

IMAGE_ARCHS = ("vgg16", "resnet18", "resnet20", "resnet34")
VARIANTS = ("cifar", "imagenet")
POOLS = ("avg", "max")
_VGG16 = (1, 1, "P", 2, 2, "P", 4, 4, 4, "P", 8, 8, 8, "P", 8, 8, 8, "P")  # x width


def _check(num_classes, levels, rounding, width, variant, pool) -> None:
    check_int(num_classes, "num_classes", minimum=2)
    if levels is not None:
        check_int(levels, "levels", minimum=1)
    check_rounding(rounding)
    check_int(width, "width", minimum=1)
    check_choice(variant, VARIANTS, "variant")
    check_choice(pool, POOLS, "pool")


def _pool(pool: str, kernel: int, stride: int, padding: int = 0) -> nn.Module:
    if pool == "max":
        return nn.MaxPool2d(kernel, stride, padding)
    return nn.AvgPool2d(kernel, stride, padding)


def vgg16(num_classes: int = 100, levels=8, rounding: str = "round", width: int = 64,
          variant: str = "cifar", pool: str = "avg", threshold: float = 2.0,
          channel_wise: bool = True, dropout: float = 0.5) -> nn.Sequential:
    """VGG-16 (13 conv-BN-QuantReLU layers, 5 pools, 3 linear layers).

    The CIFAR head is 512 -> 4096 -> 4096 -> K on the 1x1 map; the ImageNet head pools to 7x7
    first (512*7*7 -> 4096 -> 4096 -> K). Both hidden linear layers have QuantReLUs.
    """
    _check(num_classes, levels, rounding, width, variant, pool)
    layers, cin = [], 3
    for v in _VGG16:
        if v == "P":
            layers.append(_pool(pool, 2, 2))
            continue
        cout = v * width
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   _act(levels, rounding, threshold, cout, channel_wise)]
        cin = cout
    side, hidden = (7, 4096 * width // 64) if variant == "imagenet" else (1, 4096 * width // 64)
    layers += [nn.AdaptiveAvgPool2d(side), nn.Flatten(),
               nn.Linear(cin * side * side, hidden), _act(levels, rounding, threshold, hidden,
                                                          channel_wise), nn.Dropout(dropout),
               nn.Linear(hidden, hidden), _act(levels, rounding, threshold, hidden, channel_wise),
               nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """A ResNet of basic blocks: ``blocks[i]`` blocks of ``width * 2**i`` channels per stage."""

    def __init__(self, blocks, num_classes: int = 100, levels=8, rounding: str = "round",
                 width: int = 64, variant: str = "cifar", pool: str = "avg",
                 threshold: float = 2.0, channel_wise: bool = True):
        super().__init__()
        _check(num_classes, levels, rounding, width, variant, pool)
        w = width
        if variant == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w),
                                      _act(levels, rounding, threshold, w, channel_wise),
                                      _pool(pool, 3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w),
                                      _act(levels, rounding, threshold, w, channel_wise))
        self.layers, cin = basic_stages(w, blocks, levels, rounding, threshold, channel_wise)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def resnet18(num_classes: int = 100, **kwargs) -> ResNet:
    """ResNet-18: stages of 2, 2, 2, 2 blocks (64-512 channels at width 64)."""
    return ResNet((2, 2, 2, 2), num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34: stages of 3, 4, 6, 3 blocks."""
    return ResNet((3, 4, 6, 3), num_classes, **kwargs)


def resnet20(num_classes: int = 100, width: int = 16, **kwargs) -> ResNet:
    """The CIFAR ResNet-20 of He et al.: 3 stages of 3 blocks, 16-32-64 channels at width 16."""
    return ResNet((3, 3, 3), num_classes, width=width, **kwargs)


def build_image_model(arch: str, **kwargs) -> nn.Module:
    """``arch`` in :data:`IMAGE_ARCHS`; kwargs go to its constructor."""
    builders = {"vgg16": vgg16, "resnet18": resnet18, "resnet20": resnet20, "resnet34": resnet34}
    return builders[check_choice(arch, IMAGE_ARCHS, "arch")](**kwargs)
