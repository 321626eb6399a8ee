"""The command lines' shared rules: every error is one line on stderr and exit code 2.

argparse prints its usage before an error; :class:`Parser` prints only ``prog: error: message``.
Values argparse cannot check (ranges, finiteness) are checked with the :mod:`sj_qvm.checks`
helpers right after parsing (:func:`check_values`), before any work, under the flag's name.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from .. import __version__

__all__ = ["Parser", "HelpFormatter", "check_values", "add_version", "one_line", "fail", "EXTRAS_HINT",
           "paragraphs"]


def one_line(message) -> str:
    """``message`` as one line (newlines and runs of spaces become one space)."""
    return " ".join(str(message).split())


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (not a flag's False); keeps the description's and epilog's line
    breaks (fill them with :func:`paragraphs`)."""

    def _get_help_string(self, action):
        if action.default is False:
            return action.help
        return super()._get_help_string(action)


def paragraphs(*texts: str, width: int = 78) -> str:
    """``texts`` filled to ``width`` columns, a blank line between them."""
    return "\n\n".join(textwrap.fill(t, width) for t in texts)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit code 2), without the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"sj-qvm {__version__}")


def check_values(parser: argparse.ArgumentParser, checks) -> None:
    """Run ``checks`` (zero-argument callables, e.g. ``lambda: check_int(args.epochs, "--epochs",
    minimum=0)``); the first ValueError or TypeError becomes ``parser.error`` (exit code 2)."""
    for check in checks:
        try:
            check()
        except (ValueError, TypeError) as e:
            parser.error(str(e))


#: Said when an optional dependency of a job is missing.
EXTRAS_HINT = "install the demo extras: pip install 'sj-qvm[demo]' (scikit-learn, matplotlib)"


def fail(message, prog: str = "sj-qvm") -> int:
    """Print a run-time error as one line on stderr; returns exit code 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return 2
