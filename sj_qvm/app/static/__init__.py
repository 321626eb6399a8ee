"""The static-image pipeline (CIFAR-10/100, ImageNet) behind ``examples/cifar`` and
``examples/imagenet``: :mod:`.args` (command line, ``--paper``), :mod:`.data` (datasets,
augmentation, loaders), :mod:`.models` (sj-qvm or torchvision networks, ``--init``),
:mod:`.pipeline` (QAT through :func:`sj_qvm.qat.fit`, checkpoints, DDP), :mod:`.sweep` (T x current
x V0 evaluation, results) and :mod:`.tables` (the paper's table layouts, Figure 4)."""
from .data import CIFAR10_SPEC, CIFAR100_SPEC, IMAGENET_SPEC
from .pipeline import main, run

__all__ = ["CIFAR10_SPEC", "CIFAR100_SPEC", "IMAGENET_SPEC", "main", "run"]
