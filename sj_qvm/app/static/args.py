"""The static-image pipeline's command line (``examples/cifar``, ``examples/imagenet``) and its checks.

``--paper`` applies Appendix A.4's hyper-parameters and the levels/rounding of the table the arch
appears in (:data:`PAPER`); ``--levels`` / ``--rounding`` given explicitly still win. Every value
is checked right after parsing; a bad one is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ...checks import ROUNDINGS, check_int, check_levels, check_positive
from ...image_models import POOLS
from ..arguments import HelpFormatter, Parser, add_version, check_values, paragraphs
from ..resources import check_fits, static_needs
from .data import StaticSpec, default_workers
from .models import ARCHS, TV_ARCHS

__all__ = ["PAPER", "PAPER_HYPER", "RESUME_FLAGS", "build_parser", "parse"]

#: Settings a resumed run must share with its checkpoint.
RESUME_FLAGS = ("dataset", "arch", "width", "levels", "rounding", "layer_thresholds", "pool",
                "image_size", "optimizer")
#: Appendix A.4: (batch size, lr, weight decay, epochs), SGD momentum 0.9 and cosine for both.
PAPER_HYPER = {"cifar": (300, 0.1, 5e-4, 300), "imagenet": (128, 0.1, 1e-4, 300)}
#: (dataset, arch) -> (L, rounding, note): the tables' settings. The paper's text and tables
#: disagree twice; the note says which one is followed.
PAPER = {
    ("cifar100", "vgg16"): (8, "round", "Table 2"),
    ("cifar100", "resnet20"): (8, "round", "Table 2"),
    ("cifar100", "resnet18"): (4, "round", "Table 2 as the text states it (L = 4; the table's "
                               "row header says L = 8)"),
    ("imagenet", "vgg16"): (16, "round", "Table 1 as the table states it (L = 16; the text "
                            "says L = 8)"),
    ("imagenet", "resnet34"): (8, "round", "Table 1"),
}
_DEFAULT_WIDTH = {"vgg16": 64, "resnet18": 64, "resnet34": 64, "resnet20": 16}


def build_parser(specs: Sequence[StaticSpec], prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; ``specs`` are the datasets ``--dataset`` offers (the first is the default)."""
    names = [s.name for s in specs]
    layouts = " ".join(f"{s.title}: {s.layout_help('ROOT')}" for s in specs)
    p = Parser(prog=prog, formatter_class=HelpFormatter, epilog=paragraphs(
        f"Real data: {layouts} Then pass --root ROOT.",
        "--paper: " + "; ".join(f"{d} {a}: L = {L}, {q} ({n})" for (d, a), (L, q, n)
                                in PAPER.items() if d in names)
        + ". torchvision archs (tv_*) are quantized with sj_qvm.quantize, calibrated on "
        "--calibration-samples training images (test transform), then QAT fine-tuned."),
        description=paragraphs(
            f"QVM on {' / '.join(s.title for s in specs)}: QAT an ANN with QuantReLU "
            "activations, convert it to an IF SNN and evaluate it at T = 1..32 in both current "
            "modes and with V0 in {0, theta/2, theta}."))
    add_version(p)
    p.add_argument("--dataset", choices=names, default=names[0], help="the dataset")
    p.add_argument("--root", type=Path, required=True, help="the dataset's folder (see below)")
    p.add_argument("--out", type=Path, default=None, help="output folder (runs/<dataset>_<arch>)")
    p.add_argument("--arch", choices=ARCHS, default="resnet20" if "cifar10" in names
                   else "resnet34", help="the network; tv_* are torchvision's models")
    p.add_argument("--width", type=int, default=None, help="first stage's channels (sj-qvm "
                   "archs; None: 16 for resnet20, 64 otherwise)")
    p.add_argument("--pool", choices=POOLS, default="avg", help="spatial pooling of the sj-qvm "
                   "archs (max converts to an exact spiking max-pool)")
    p.add_argument("--init", type=Path, default=None, help="a local torchvision state_dict "
                   "(.pth) for a tv_* arch, e.g. ImageNet-pretrained weights")
    p.add_argument("--calibration-samples", type=int, default=1024,
                   help="training images that calibrate a tv_* arch's thresholds")
    p.add_argument("--levels", type=int, default=None, help="L (default 8, or --paper's)")
    p.add_argument("--rounding", choices=ROUNDINGS, default=None,
                   help="the quantizer Q (default round, or --paper's)")
    p.add_argument("--layer-thresholds", action="store_true",
                   help="one threshold gamma per layer instead of one per channel")
    p.add_argument("--image-size", type=int, default=None, help="input side S (32 for CIFAR, "
                   "224 for ImageNet)")
    p.add_argument("--cutout", type=int, default=None, help="Cutout square side (S / 2)")
    p.add_argument("--no-autoaugment", action="store_true", help="train without AutoAugment")
    p.add_argument("--train-samples", type=int, default=None, help="use only the first N "
                   "training images (quick runs)")
    p.add_argument("--test-samples", type=int, default=None, help="evaluate on the first N "
                   "test images only")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (0: convert the "
                   "initial or resumed net)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (cosine schedule)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="SGD with momentum 0.9, or Adam")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (per process)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="data loading processes (0: load in the training process)")
    p.add_argument("--paper", action="store_true", help="Appendix A.4's hyper-parameters and "
                   "the table's L and rounding for --arch (see below)")
    p.add_argument("--eval-time-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32],
                   help="the T at which the SNN is evaluated (T = L is always added)")
    p.add_argument("--no-v0-ablation", action="store_true", help="evaluate only the matched V0 "
                   "(skips the Table 4 / Figure 4 ablation)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true", help="delete the run in OUT first")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def resolve(args, parser, specs: Sequence[StaticSpec]) -> argparse.Namespace:
    """Apply ``--paper`` and the defaults, then check every value and the run's memory estimate
    (:mod:`..resources`; exit code 2 on a bad one)."""
    spec = {s.name: s for s in specs}[args.dataset]
    base = args.arch[3:].replace("_bn", "") if args.arch in TV_ARCHS else args.arch
    if args.paper:
        if (args.dataset, base) not in PAPER:
            parser.error(f"--paper: the paper has no {args.dataset} {base} run; it has "
                         + ", ".join(f"{d} {a}" for d, a in PAPER))
        L, q, _ = PAPER[(args.dataset, base)]
        args.batch_size, args.lr, args.weight_decay, args.epochs = PAPER_HYPER[spec.variant]
        args.optimizer = "sgd"
        args.levels = L if args.levels is None else args.levels
        args.rounding = q if args.rounding is None else args.rounding
    args.levels = 8 if args.levels is None else args.levels
    args.rounding = "round" if args.rounding is None else args.rounding
    args.width = _DEFAULT_WIDTH.get(args.arch, 64) if args.width is None else args.width
    args.image_size = spec.image_size if args.image_size is None else args.image_size
    args.cutout = args.image_size // 2 if args.cutout is None else args.cutout
    if args.out is None:
        args.out = Path("runs") / f"{args.dataset}_{args.arch}"
    if args.init is not None and args.arch not in TV_ARCHS:
        parser.error(f"--init needs a torchvision arch {TV_ARCHS}, got --arch {args.arch}")
    if args.init is not None and not args.init.is_file():
        parser.error(f"--init {args.init}: no such file")
    check_values(parser, [
        lambda: check_levels(args.levels, "--levels"),
        lambda: check_int(args.epochs, "--epochs", minimum=0),
        lambda: check_int(args.batch_size, "--batch-size", minimum=1),
        lambda: check_int(args.width, "--width", minimum=1),
        lambda: check_int(args.image_size, "--image-size", minimum=16),
        lambda: check_int(args.cutout, "--cutout", minimum=0, maximum=args.image_size),
        lambda: check_int(args.workers, "--workers", minimum=0),
        lambda: check_int(args.calibration_samples, "--calibration-samples", minimum=1),
        lambda: check_int(args.seed, "--seed", minimum=0),
        lambda: [check_int(n, f"--{k.replace('_', '-')}", minimum=1) for k, n in
                 (("train_samples", args.train_samples), ("test_samples", args.test_samples))
                 if n is not None],
        lambda: [check_int(T, "--eval-time-steps", minimum=1) for T in args.eval_time_steps],
        lambda: check_positive(args.lr, "--lr"),
        lambda: check_positive(args.weight_decay, "--weight-decay", allow_zero=True),
    ])
    check_values(parser, [lambda: check_fits(*static_needs(args, spec))])  # memory, before any work
    return args


def parse(specs: Sequence[StaticSpec], argv=None, prog: Optional[str] = None):
    """Parse and check ``argv`` (exit code 2, one line, on a bad value)."""
    parser = build_parser(specs, prog)
    return resolve(parser.parse_args(argv), parser, specs)
