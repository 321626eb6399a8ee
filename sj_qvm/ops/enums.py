"""Every id and flag the kernels read, from ``if_loop/qvm_enums.h`` (their one home), at import.

``if_loop/launch.py``, ``if_loop/surrogates.py``, :mod:`.native` and ``quant_relu/cpu.py`` take
their constants from :data:`VALUES`, so the Python side cannot drift from the kernels' source;
:func:`guard` compares the values a compiled CPU extension was built with (its ``ENUMS``) with
the header, so that a build from another header is refused instead of misreading an id. Every
``NAME = int`` entry of the header's ``enum`` blocks is read.
"""
from __future__ import annotations

import re
from pathlib import Path

HEADER = Path(__file__).with_name("if_loop") / "qvm_enums.h"
_ENUM = re.compile(r"\benum\s*\{(.*?)\}", re.S)
_ENTRY = re.compile(r"\b([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+)")


def parse(text: str) -> dict:
    """``{name: value}`` of every ``NAME = int`` in the ``enum { ... }`` blocks of ``text``
    (comments stripped first). A name given twice is a ValueError."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)
    values: dict = {}
    for block in _ENUM.findall(text):
        for name, value in _ENTRY.findall(block):
            if name in values:
                raise ValueError(f"{HEADER.name}: enum {name} is defined twice")
            values[name] = int(value)
    return values


VALUES = parse(HEADER.read_text())

#: QuantReLU's rounding names (checks.ROUNDINGS) -> the kernels' ids.
ROUNDING_IDS = {"floor": VALUES["ROUND_FLOOR"], "round": VALUES["ROUND_HALF_UP"],
                "ceil": VALUES["ROUND_CEIL"]}


def guard(built: dict, header=None) -> None:
    """Raise ValueError naming the first entry where ``built`` (the values a compiled module
    was built with) disagrees with ``header`` (default: :data:`VALUES`)."""
    header = VALUES if header is None else header
    for name, value in sorted(built.items()):
        if header.get(name) != value:
            raise ValueError(f"{HEADER.name} has {name} = {header.get(name)}, the compiled "
                             f"module was built with {value}; rebuild it with `python setup.py "
                             "build_ext --inplace`")


__all__ = ["HEADER", "VALUES", "ROUNDING_IDS", "parse", "guard"]
