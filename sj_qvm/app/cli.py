"""``sj-qvm`` command line entry points: ``sj-qvm demo`` (the DVS pipeline or the digits job) and
``sj-qvm --version``. Every error is one line on stderr with exit code 2 (:mod:`.arguments`)."""
from __future__ import annotations

import json
import sys

from ..checks import ROUNDINGS, check_int, check_levels
from ..levels import is_exact
from .arguments import (EXTRAS_HINT, HelpFormatter, Parser, add_version, check_values, fail,
                        paragraphs)
from .resources import check_fits, digits_needs

#: The offline DVS demo's recipe, 32x32 frames, T = L: a small net on the emulated release of
#: scikit-learn's digits (CIFAR10-DVS's layout; 1,800 training and 200 test recordings, --input
#: mean, streamed one frame per step), or with --gesture on the synthetic DVS128-Gesture release
#: (the real release's size: 759 and 198 recordings; the dataset's --input, a held stack of 16
#: frames, which keeps the order of events).
DVS_DEMO_ARGS = ["--arch", "vgg", "--width", "8", "--size", "32", "--optimizer", "adam",
                 "--lr", "0.005", "--batch-size", "32"]
#: Training epochs when --epochs is not given.
DEFAULT_EPOCHS = {"dvs": 16, "digits": 30}
#: Epochs of the instant-current fine-tune (--finetune-instant) when not given: the emulated
#: digits demo streams its frames (--input mean); the gesture demo holds its input, nothing to tune.
DEFAULT_FINETUNE_EPOCHS = {"digits": 3, "gesture": 0}


def _epochs(args) -> int:
    return DEFAULT_EPOCHS["digits" if args.digits else "dvs"] if args.epochs is None else args.epochs


def dvs_demo_argv(args) -> list:
    """The ``examples/dvs_gesture/train.py`` arguments ``sj-qvm demo`` runs (T = L)."""
    argv = DVS_DEMO_ARGS + ["--epochs", str(_epochs(args)), "--levels", str(args.levels),
                            "--rounding", args.rounding,
                            "--seed", str(args.seed), "--out", str(args.out or "runs/demo"),
                            "--cache-dir", str(args.cache_dir)]
    tune = args.finetune_instant
    tune = DEFAULT_FINETUNE_EPOCHS["gesture" if args.gesture else "digits"] if tune is None else tune
    argv += ["--finetune-instant", str(tune)] if tune else []
    argv += ["--overwrite"] if args.overwrite else []
    argv += ["--resume"] if args.resume else []
    return argv + (["--quiet"] if args.quiet else [])


def _demo(args) -> int:
    if args.digits:
        return _digits(args)
    from .pipeline import main as pipeline_main
    return pipeline_main(demo_spec(args), dvs_demo_argv(args), prog="sj-qvm demo")


def demo_spec(args):
    """The dataset the DVS demo runs on: the emulated digits, or with ``--gesture`` the synthetic
    DVS128 Gesture release."""
    from .registry import DVS_GESTURE, EMULATED_DIGITS
    return DVS_GESTURE if args.gesture else EMULATED_DIGITS


def _digits(args) -> int:
    from ..atomic import LinkError, write_atomic
    from .digits import JOB, format_table, run_digits
    from .report import format_written
    from .run_folder import check_fresh, prepare, written_files
    if args.resume:
        return fail("--resume continues a DVS run; the digits job keeps no checkpoint (run it "
                    "again, with --overwrite to replace its results)", "sj-qvm demo")
    if args.out:  # the run folder's policy, before any work
        try:
            check_fresh(args.out, JOB, resume=False, overwrite=args.overwrite)
            prepare(args.out, JOB, resume=False, overwrite=args.overwrite)
        except (FileExistsError, NotADirectoryError, LinkError) as e:
            return fail(e, "sj-qvm demo")
    try:
        res = run_digits(levels=args.levels, rounding=args.rounding, epochs=_epochs(args),
                         seed=args.seed, progress=not args.quiet)
    except ImportError as e:  # scikit-learn holds the digits
        return fail(f"{e}; {EXTRAS_HINT}", "sj-qvm demo")
    print(format_table(res))
    if args.out:
        path, = written_files(args.out, JOB)
        write_atomic(path, json.dumps(res, indent=2).encode("utf-8"))
        print(format_written([path]))
    else:
        print("written: nothing (pass --out DIR to keep results.json)")
    L = res["levels"]
    if not is_exact(res["mismatched_neurons"], res["ann_accuracy"], res["snn_accuracy"]["expected"][L]):
        print("ERROR: the SNN is not exact at T = L in expected mode", file=sys.stderr)
        return 1
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="sj-qvm", description="Exact ANN-to-SNN conversion with "
                    "Quantization-Voltage Matching (QVM).")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", formatter_class=HelpFormatter,
        help="the offline demo: QAT a small net on DVS recordings emulated from real "
        "handwritten digits (CIFAR10-DVS's AEDAT 2.0 layout, written on first use), convert it, "
        "and compare ANN and SNN accuracy over T; --gesture for a synthetic DVS128 Gesture "
        "release, --digits for the handwritten-digits job without events",
        description=paragraphs(
            "Train, convert and evaluate on an embedded default, offline. Default: the DVS "
            "pipeline (examples/cifar10_dvs) on an emulated DVS release of scikit-learn's "
            "digits, 32x32 frames, T = L = 4. --gesture: the DVS128-Gesture pipeline "
            "(examples/dvs_gesture) on a synthetic release. --digits: scikit-learn's digits as "
            "images."))
    job = demo.add_mutually_exclusive_group()
    job.add_argument("--gesture", action="store_true",
                     help="the DVS pipeline on a synthetic DVS128 Gesture release instead (its "
                     "arm circles need the order of events: --input stack)")
    job.add_argument("--digits", action="store_true",
                     help="QAT a small CNN on scikit-learn's 8x8 handwritten digits instead")
    demo.add_argument("--levels", type=int, default=4, help="quantization levels L (= T)")
    demo.add_argument("--rounding", choices=ROUNDINGS, default="round", help="the quantizer Q")
    demo.add_argument("--epochs", type=int, default=None,
                      help=f"training epochs (None: {DEFAULT_EPOCHS['dvs']} for DVS, "
                      f"{DEFAULT_EPOCHS['digits']} for --digits); 0 converts the untrained net")
    demo.add_argument("--finetune-instant", type=int, default=None, metavar="EPOCHS",
                      help="DVS: epochs of the SNN's fine-tune in the instant current, a results "
                      "row of its own (None: "
                      f"{DEFAULT_FINETUNE_EPOCHS['digits']} for the emulated digits, 0 for "
                      "--gesture, whose held input does not stream); 0: no fine-tune")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", metavar="DIR", help="output folder (None: runs/demo for DVS; "
                      "--digits writes nothing)")
    demo.add_argument("--cache-dir", default="runs/synthetic",
                      help="where the synthetic release is written")
    again = demo.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="DVS: continue the run in --out")
    again.add_argument("--overwrite", action="store_true", help="replace the run already in "
                       "--out (without --resume or --overwrite, an --out that holds a run, of "
                       "either job, is refused)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo, parser=demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_values(args.parser, [
        lambda: check_levels(args.levels, "--levels"),
        lambda: args.epochs is None or check_int(args.epochs, "--epochs", minimum=0),
        lambda: args.finetune_instant is None or check_int(args.finetune_instant,
                                                           "--finetune-instant", minimum=0),
        lambda: check_int(args.seed, "--seed", minimum=0),
        # The digits job's memory (the DVS demo's is checked by the pipeline's parser).
        lambda: not args.digits or check_fits(*digits_needs(args.levels, args.rounding)),
    ])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
