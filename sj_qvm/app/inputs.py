"""The DVS pipeline's ``--input``: which representation of the event frames the ANN and the SNN
read (:mod:`sj_qvm.datasets.representations` holds the representations and the list of names).

Each dataset names its default ``--input``, the one ``--paper`` uses, and how many frames a held
representation stacks by default (:class:`.registry.DatasetSpec` ``input``, ``paper_input``,
``held_frames``); an explicit flag wins.
"""
from __future__ import annotations

import argparse
import warnings

from ..datasets.representations import REPRESENTATIONS, representation
from .arguments import check_values

__all__ = ["add_input_argument", "fill_input", "check_input"]


def add_input_argument(parser: argparse.ArgumentParser, spec) -> None:
    parser.add_argument(
        "--input", default=None, metavar="{" + ",".join(REPRESENTATIONS) + "}",
        help="what the ANN reads of the T frames: 'mean' the time-averaged frame (the SNN gets "
        "one frame per step: it streams), 'stack' the T frames as 2T channels, 'bins:K' K "
        "time bins as 2K channels (both keep the order of events; the SNN gets them as a "
        f"constant current, after the whole recording). None: {spec.input} ({spec.paper_input} "
        "with --paper)")


def fill_input(args: argparse.Namespace, parser: argparse.ArgumentParser,
               spec) -> argparse.Namespace:
    """Fill in the dataset's ``--input`` (its ``paper_input`` with ``--paper``) and ``--frames``
    where they were not given: L for a streaming representation (``--paper``: 4), the dataset's
    ``held_frames`` for a held one. An unknown ``--input`` stops here (exit code 2)."""
    if args.input is None:
        args.input = spec.paper_input if args.paper else spec.input
    check_values(parser, [lambda: representation(args.input, "--input")])
    if args.frames is None:
        streams = representation(args.input).streams
        args.frames = (4 if args.paper else args.levels) if streams else spec.held_frames
    return args


def check_input(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Check ``--input`` against ``--frames`` (exit code 2, one line naming the allowed values, on
    a bad one). A streaming representation runs the SNN one step per frame, so it warns when
    ``--frames`` is not ``--levels``; a held one runs its own T = L steps whatever the number of
    frames."""
    check_values(parser, [lambda: representation(args.input, "--input").channels(args.frames)])
    for flag, what in (("calibrate_instant", "--calibrate-instant fits"),
                       ("finetune_instant", "--finetune-instant fine-tunes")):
        if getattr(args, flag, False) and not representation(args.input).streams:
            parser.error(f"{what} the instant current of a streaming --input (mean); "
                         f"--input {args.input} holds its input constant")
    if args.frames != args.levels and representation(args.input).streams:
        warnings.warn(f"--frames {args.frames} != --levels {args.levels}: the SNN runs T = "
                      f"{args.frames} frames, and exactness needs T = L", stacklevel=3)
    return args
