"""ANNs for event-camera frames, built to convert exactly: QuantReLU activations, average pooling.

Both take the time-averaged frame ``[B, C, H, W]`` (C = 2 polarities) and return logits ``[B, K]``.
Every activation is a :class:`~sj_qvm.QuantReLU` with one trainable threshold gamma per channel
(``channel_wise=True``, the default) or per layer; ``levels=None`` builds the plain-ReLU float
ANN of the same architecture (for post-training conversion with :func:`sj_qvm.quantize`).
"""
from __future__ import annotations

import torch.nn as nn

from .checks import check_bool, check_choice
from .quant import QuantReLU

ARCHS = ("resnet18", "vgg")


def _act(levels, rounding: str, threshold: float, channels: int, channel_wise: bool) -> nn.Module:
    check_bool(channel_wise, "channel_wise")
    if levels is None:
        return nn.ReLU()
    return QuantReLU(levels, rounding, [float(threshold)] * channels if channel_wise else threshold)


class BasicBlock(nn.Module):
    """ResNet basic block; each activation is its own QuantReLU (its own threshold gamma)."""

    def __init__(self, cin: int, cout: int, stride: int, levels, rounding: str, threshold: float,
                 channel_wise: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = _act(levels, rounding, threshold, cout, channel_wise)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            # Average-pool then 1x1 conv: a strided 1x1 conv would drop 3/4 of the input.
            self.shortcut = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                          nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act2 = _act(levels, rounding, threshold, cout, channel_wise)

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(y)) + self.shortcut(x))


def basic_stages(width: int, blocks, levels, rounding: str, threshold: float,
                 channel_wise: bool = True):
    """``(nn.Sequential of BasicBlocks, output channels)``: ``blocks[i]`` blocks of
    ``width * 2**i`` channels in stage i, the first block of every stage after the first with
    stride 2. Input ``[B, width, H, W]``."""
    layers, cin = [], width
    for i, n in enumerate(blocks):
        cout = width * 2 ** i
        for j in range(n):
            layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, levels, rounding,
                                     threshold, channel_wise))
            cin = cout
    return nn.Sequential(*layers), cin


class ResNet18(nn.Module):
    """ResNet-18 for ``[B, in_channels, H, W]``: 3x3 stem, stages of 2 blocks, avg-pool head."""

    def __init__(self, in_channels: int = 2, num_classes: int = 11, levels=4,
                 rounding: str = "round", width: int = 64, threshold: float = 2.0,
                 channel_wise: bool = True):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w),
                                  _act(levels, rounding, threshold, w, channel_wise),
                                  nn.AvgPool2d(2))
        self.layers, cin = basic_stages(w, (2, 2, 2, 2), levels, rounding, threshold, channel_wise)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def vgg(in_channels: int = 2, num_classes: int = 11, levels=4, rounding: str = "round",
        width: int = 16, threshold: float = 2.0, channel_wise: bool = True) -> nn.Sequential:
    """A small VGG-style net for CPU runs: 4 conv-BN-QuantReLU-avgpool stages and a classifier."""
    layers, cin = [], in_channels
    for i in range(4):
        cout = width * 2 ** min(i, 2)
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   _act(levels, rounding, threshold, cout, channel_wise), nn.AvgPool2d(2)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin * 4, num_classes)]
    return nn.Sequential(*layers)


def build_model(arch: str, **kwargs) -> nn.Module:
    """``arch`` in :data:`ARCHS`; kwargs go to the constructor."""
    check_choice(arch, ARCHS, "arch")
    if arch == "resnet18":
        return ResNet18(**kwargs)
    return vgg(**kwargs)
