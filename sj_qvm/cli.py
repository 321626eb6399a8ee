"""``sj-qvm`` command line entry points."""
from __future__ import annotations

import argparse
import json
import os
import sys


#: The offline DVS demo: a small net on the synthetic DVS128-Gesture release, 64x64 frames.
DVS_DEMO_ARGS = ["--arch", "vgg", "--width", "8", "--size", "64", "--optimizer", "adam",
                 "--lr", "0.003", "--batch-size", "16"]


def _demo(args) -> int:
    if args.digits:
        return _digits(args)
    from .pipeline import DVS_GESTURE, main as pipeline_main
    argv = DVS_DEMO_ARGS + ["--epochs", str(args.epochs or 12), "--levels", str(args.levels),
                            "--frames", str(args.levels), "--rounding", args.rounding,
                            "--seed", str(args.seed), "--out", str(args.out or "runs/demo"),
                            "--cache-dir", str(args.cache_dir)]
    argv += ["--overwrite"] if args.overwrite else []
    argv += ["--resume"] if args.resume else []
    return pipeline_main(DVS_GESTURE, argv + (["--quiet"] if args.quiet else []))


def _digits(args) -> int:
    from .digits import format_table, run_digits
    res = run_digits(levels=args.levels, rounding=args.rounding, epochs=args.epochs or 30,
                     seed=args.seed, progress=not args.quiet)
    print(format_table(res))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        from .atomic import write_atomic
        write_atomic(os.path.join(args.out, "results.json"),
                     json.dumps(res, indent=2).encode("utf-8"))
    L = res["levels"]
    exact = res["mismatched_neurons"] == 0 and res["snn_accuracy"]["expected"][L] == res["ann_accuracy"]
    if not exact:
        print("ERROR: the SNN is not exact at T = L in expected mode", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sj-qvm", description="Exact ANN-to-SNN conversion "
                                     "with Quantization-Voltage Matching (QVM).")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the offline demo: QAT a small net on a synthetic DVS128 Gesture release "
        "(real AEDAT 3.1 files, written on first use), convert it, and compare ANN and SNN "
        "accuracy over T; --digits for the handwritten-digits job",
        description="Train, convert and evaluate on an embedded default, offline. Default: the "
        "DVS128-Gesture pipeline (examples/dvs_gesture) on a synthetic release, 64x64 frames, "
        "T = L = 4. --digits: scikit-learn's handwritten digits.")
    demo.add_argument("--digits", action="store_true",
                      help="QAT a small CNN on scikit-learn's 8x8 handwritten digits instead")
    demo.add_argument("--levels", type=int, default=4, help="quantization levels L = T (default 4)")
    demo.add_argument("--rounding", choices=("floor", "round", "ceil"), default="round")
    demo.add_argument("--epochs", type=int, default=None, help="default 12 (DVS) or 30 (digits)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", metavar="DIR", help="output folder (DVS default: runs/demo)")
    demo.add_argument("--cache-dir", default="runs/synthetic",
                      help="where the synthetic release is written (default runs/synthetic)")
    again = demo.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="DVS: continue the run in --out")
    again.add_argument("--overwrite", action="store_true", help="DVS: replace the run already in "
                       "--out (without --resume or --overwrite, an --out that holds a run is "
                       "refused)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
