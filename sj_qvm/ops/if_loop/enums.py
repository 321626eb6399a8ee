"""The kernels' flag bits and surrogate ids, read from ``if_loop.cuh`` (their one home) at import.

``launch.py`` and ``surrogates.py`` take their constants from :data:`VALUES`, so the Python side
cannot drift from the kernels. Every ``NAME = int`` entry of the header's ``enum`` blocks is read.
"""
from __future__ import annotations

import re
from pathlib import Path

HEADER = Path(__file__).with_name("if_loop.cuh")
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

__all__ = ["HEADER", "VALUES", "parse"]
