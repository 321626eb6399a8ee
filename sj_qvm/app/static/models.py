"""The static pipeline's networks: sj-qvm's image models, or torchvision's as people train them.

``--arch`` is one of :data:`sj_qvm.image_models.IMAGE_ARCHS` (QuantReLU nets built by sj-qvm) or
one of :data:`TV_ARCHS` (``tv_resnet18``, ``tv_resnet34``, ``tv_vgg16_bn``: torchvision's
plain-ReLU models, turned into QuantReLU nets by :func:`sj_qvm.quantize`, MaxPool kept, which
``convert`` makes an exact spiking max-pool). ``--init PATH`` loads a local torchvision
``state_dict`` (``.pth``) into the torchvision model before it is quantized and calibrated.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ...image_models import build_image_model
from ...interop import quantize
from ...quant import QuantReLU

__all__ = ["TV_ARCHS", "ARCHS", "load_state_dict_file", "build_network", "shape_thresholds"]

TV_ARCHS = ("tv_resnet18", "tv_resnet34", "tv_vgg16_bn")
ARCHS = ("vgg16", "resnet18", "resnet20", "resnet34") + TV_ARCHS


def load_state_dict_file(path: Path) -> dict:
    """A torchvision checkpoint at ``path``: a ``{name: tensor}`` state_dict saved with
    ``torch.save``, loaded with ``weights_only=True`` (no code runs). Anything else raises
    ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--init {path}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a crafted pickle, a truncated zip, not a torch file at all
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"--init {path}: not a torch state_dict that loads safely "
                         f"({type(e).__name__}: {first[:200]})") from None
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ValueError(f"--init {path}: expected a state_dict mapping parameter names to "
                         f"tensors, got {type(sd).__name__}")
    return sd


def _load_into(model: nn.Module, sd: dict, path: Path) -> list:
    """Load ``sd`` into ``model``; the classifier may differ in its number of classes (those
    entries are skipped and returned). Any other difference raises ValueError."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    last = list(own)[-2:]  # the final linear layer's weight and bias
    skipped = [k for k in shape if k in last]
    if missing or unexpected or set(shape) - set(skipped):
        raise ValueError(
            f"--init {path} does not fit {type(model).__name__}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, shapes differ {sorted(set(shape) - set(skipped))[:3]}")
    model.load_state_dict({k: v for k, v in sd.items() if k not in skipped}, strict=False)
    return skipped


def _torchvision(arch: str, num_classes: int) -> nn.Module:
    from torchvision import models
    return {"tv_resnet18": models.resnet18, "tv_resnet34": models.resnet34,
            "tv_vgg16_bn": models.vgg16_bn}[arch](weights=None, num_classes=num_classes)


def build_network(args, num_classes: int, variant: str, calibration=None,
                  log=print) -> nn.Module:
    """The network ``args.arch`` asks for (``[B, 3, S, S] -> [B, num_classes]``).

    For a torchvision arch: its model (``--init`` loaded when given), then
    :func:`sj_qvm.quantize` with L = ``args.levels`` and ``args.rounding``, calibrated on
    ``calibration`` (batches of ``(image, label)``; None when a checkpoint will overwrite the
    thresholds anyway, e.g. on ``--resume``).
    """
    if args.arch not in TV_ARCHS:
        return build_image_model(args.arch, num_classes=num_classes, levels=args.levels,
                                 rounding=args.rounding, width=args.width, variant=variant,
                                 pool=args.pool, channel_wise=not args.layer_thresholds)
    tv = _torchvision(args.arch, num_classes)
    if args.init is not None:
        skipped = _load_into(tv, load_state_dict_file(args.init), Path(args.init))
        if skipped:
            log(f"--init {args.init}: {', '.join(skipped)} skipped (the checkpoint's classifier "
                f"has another number of classes than {num_classes}); it starts from random")
    with warnings.catch_warnings():
        if calibration is None:  # the thresholds come from the checkpoint
            warnings.filterwarnings("ignore", message=".*gamma.*")
        return quantize(tv, args.levels, args.rounding, dataloader=calibration,
                        channel_wise=not args.layer_thresholds, progress=not args.quiet)


def shape_thresholds(model: nn.Module, state: dict) -> None:
    """Give every QuantReLU threshold the shape it has in ``state`` (a checkpoint's model): an
    uncalibrated quantized model has one gamma ``[]`` per layer, a calibrated one ``[C]``. Call it
    before the optimizer is built; the values come from the checkpoint."""
    for name, m in model.named_modules():
        key = f"{name}.threshold" if name else "threshold"
        if isinstance(m, QuantReLU) and key in state and state[key].shape != m.threshold.shape:
            m.threshold = nn.Parameter(torch.ones(state[key].shape, dtype=m.threshold.dtype))


def calibration_loader(dataset, samples: int, batch_size: int, seed: int) -> Optional[object]:
    """A loader over ``samples`` images of ``dataset`` (drawn with ``seed``) for PTQ calibration."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:samples].tolist()
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx),
                                       batch_size=batch_size)
