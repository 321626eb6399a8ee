"""``sj-qvm`` command line entry points."""
from __future__ import annotations

import argparse
import json
import sys


def _demo(args) -> int:
    from .digits import format_table, run_digits
    res = run_digits(levels=args.levels, rounding=args.rounding, epochs=args.epochs,
                     seed=args.seed, progress=not args.quiet)
    print(format_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
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
    demo = sub.add_parser("demo", help="QAT a small CNN on scikit-learn's digits (offline), "
                          "convert it and compare ANN and SNN accuracy over T")
    demo.add_argument("--digits", action="store_true",
                      help="the handwritten-digits job (the current default)")
    demo.add_argument("--levels", type=int, default=4, help="quantization levels L = T (default 4)")
    demo.add_argument("--rounding", choices=("floor", "round", "ceil"), default="round")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
