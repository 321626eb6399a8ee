"""The DVS pipeline's command line (``examples/*/train.py``): the options and their checks.

Every value is checked right after parsing, before anything is read or written; a bad one stops
with one line on stderr naming the flag, and exit code 2 (:mod:`.arguments`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..checks import ROUNDINGS, check_int, check_levels, check_positive
from ..models import ARCHS
from .arguments import HelpFormatter, Parser, add_version, check_values, paragraphs
from .inputs import add_input_argument, check_input, fill_input
from .registry import EMULATED_DIGITS, DatasetSpec, emulated_images_spec
from .resources import check_fits, dvs_needs

__all__ = ["RESUME_FLAGS", "build_parser", "resolve", "release_spec", "parse_release", "parse"]

#: Settings a resumed run must share with its checkpoint (they change the model, data or optimizer).
RESUME_FLAGS = ("arch", "width", "levels", "rounding", "layer_thresholds", "size", "frames",
                "optimizer", "input")


def build_parser(spec: DatasetSpec, prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = Parser(
        prog=prog, formatter_class=HelpFormatter, epilog=paragraphs(spec.real_data_help),
        description=paragraphs(
            f"QVM on {spec.title}: QAT an ANN on event frames, convert it to an SNN and evaluate "
            "it at T = 1, 2, 4, 8, 16 in both current modes.",
            "Time: the plain defaults (resnet18, 128x128 frames, 30 epochs) take about 45 "
            "minutes on 2 CPU cores. For a CPU run of about a minute use the demo's settings: "
            "--arch vgg --width 8 --size 64 --optimizer adam --lr 0.003 --epochs 12 (what "
            "`sj-qvm demo` runs)."))
    add_version(p)
    p.add_argument("--root", type=Path, help="the real release (see below); without it an offline "
                   "synthetic release in the real file formats is written and used")
    p.add_argument("--synthetic", action="store_true", help="use the offline synthetic release "
                   "(what happens anyway when --root is not given)")
    if spec.emulated_sources:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--emulated", action="store_true",
                         help="instead of the synthetic release, DVS recordings emulated offline "
                         "from scikit-learn's real handwritten digits, in this layout (what "
                         "`sj-qvm demo` trains on)")
        src.add_argument("--images", type=Path, metavar="DIR",
                         help="instead of the synthetic release, DVS recordings emulated from the "
                         "torchvision folder DIR (MNIST, FashionMNIST or CIFAR-10 as torchvision "
                         "downloads them), in this layout, written under --cache-dir once")
    p.add_argument("--tiny", action="store_true", help="a very small synthetic release (tests)")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/synthetic"),
                   help="where the synthetic release is written")
    p.add_argument("--out", type=Path, default=Path("runs") / spec.name, help="output folder")
    p.add_argument("--frames", type=int, default=None, help="T, frames per sample: the SNN's "
                   "time steps for a streaming --input (exactness needs T = L); a held one runs "
                   f"T = L steps whatever T. None: L for a streaming --input, {spec.held_frames} "
                   "for a held one")
    add_input_argument(p, spec)
    p.add_argument("--levels", type=int, default=4, help="L, quantization levels")
    p.add_argument("--rounding", choices=ROUNDINGS, default="round", help="the quantizer Q")
    p.add_argument("--layer-thresholds", action="store_true",
                   help="one threshold gamma per layer instead of one per channel")
    p.add_argument("--size", type=int, default=128, choices=(32, 64, 128),
                   help="frame size after sum-pooling (64 for CPU runs)")
    p.add_argument("--arch", choices=ARCHS, default="resnet18", help="the network")
    p.add_argument("--width", type=int, default=None,
                   help="base width (None: 64 for resnet18, 16 for vgg)")
    p.add_argument("--epochs", type=int, default=30,
                   help="training epochs; 0 evaluates and converts the initial (or resumed) net")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (cosine schedule)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="SGD with momentum 0.9, or Adam")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (per process)")
    p.add_argument("--paper", action="store_true", help="the paper's hyper-parameters: resnet18, "
                   "SGD lr 0.1, cosine, weight decay 5e-4, 300 epochs, T = L = 4, and the dataset's "
                   "--input and --frames for it")
    p.add_argument("--eval-time-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                   help="the T at which the SNN is evaluated")
    p.add_argument("--calibrate-instant", action="store_true",
                   help="also evaluate the instant current with the first layer's V0 fitted to "
                   "it on 64 training sequences at each T (sj_qvm.streaming.calibrate_instant)")
    p.add_argument("--finetune-instant", type=int, default=0, metavar="EPOCHS",
                   help="also evaluate the SNN fine-tuned in the instant current for EPOCHS "
                   "epochs (surrogate BPTT, each batch at T = L, 2L or 4L; "
                   "sj_qvm.streaming_finetune.finetune_instant), its output read over the second "
                   "half of the steps (sj_qvm.streaming.delayed_readout); 0: not")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt "
                       "(log.jsonl is cut back to the checkpoint's epoch); without a checkpoint "
                       "it says so and starts from epoch 1")
    again.add_argument("--overwrite", action="store_true", help="delete the run already in OUT "
                       "and start afresh (without --resume or --overwrite, an OUT that holds a "
                       "run is refused)")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation, "
                   "initial weights)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Apply ``--paper`` and the width default, then check every value (exit code 2 on a bad one);
    ``--input`` and the default ``--frames`` are :mod:`.inputs`'s (``fill_input``,
    ``check_input``)."""
    if args.paper:
        args.arch, args.optimizer, args.lr, args.weight_decay = "resnet18", "sgd", 0.1, 5e-4
        args.epochs, args.levels = 300, 4  # --frames and --input: the dataset's (.inputs)
    if args.width is None:
        args.width = 64 if args.arch == "resnet18" else 16
    check_values(parser, [
        lambda: check_levels(args.levels, "--levels"),
        lambda: check_int(args.frames, "--frames", minimum=1),
        lambda: check_int(args.epochs, "--epochs", minimum=0),
        lambda: check_int(args.finetune_instant, "--finetune-instant", minimum=0),
        lambda: check_int(args.batch_size, "--batch-size", minimum=1),
        lambda: check_int(args.width, "--width", minimum=1),
        lambda: check_int(args.seed, "--seed", minimum=0),
        lambda: [check_int(T, "--eval-time-steps", minimum=1) for T in args.eval_time_steps],
        lambda: check_positive(args.lr, "--lr"),
        lambda: check_positive(args.weight_decay, "--weight-decay", allow_zero=True),
    ])
    return args


def release_spec(args: argparse.Namespace, parser: argparse.ArgumentParser,
                 spec: DatasetSpec) -> DatasetSpec:
    """The release the run trains on: ``spec``, or with ``--emulated`` / ``--images DIR`` (where
    ``spec.emulated_sources``) a release emulated in its layout. Exit code 2, one line, for
    either beside ``--root``, or an ``--images`` folder that holds no torchvision image folder
    (the message shows the expected layout)."""
    emulated, images = getattr(args, "emulated", False), getattr(args, "images", None)
    if not (emulated or images is not None):
        return spec
    if args.root is not None:
        parser.error(f"--root reads a real release; --{'emulated' if emulated else 'images'} "
                     "writes an emulated one: give one of them")
    if emulated:
        return EMULATED_DIGITS
    from ..datasets.image_sources import ImagesNotFound
    try:
        return emulated_images_spec(images)
    except ImagesNotFound as e:
        parser.error(f"--images: {e}")


def parse_release(spec: DatasetSpec, argv=None, prog: Optional[str] = None) -> tuple:
    """``(args, release)``: ``argv`` parsed and checked (exit code 2, one line, on a bad value or
    a run whose memory estimate exceeds the device's: :mod:`.resources`), and the release the run
    trains on (:func:`release_spec`)."""
    parser = build_parser(spec, prog)
    args = parser.parse_args(argv)
    spec = release_spec(args, parser, spec)
    args = check_input(resolve(fill_input(args, parser, spec), parser), parser)
    check_values(parser, [lambda: check_fits(*dvs_needs(args, spec))])  # memory, before any work
    return args, spec


def parse(spec: DatasetSpec, argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    """The ``args`` of :func:`parse_release`."""
    return parse_release(spec, argv, prog)[0]
