"""Fast paths, one package per op, each beside its torch twin; :func:`diagnose` says what is built,
what is switched on, and why each node or module ran the path it ran."""
from __future__ import annotations

from .report import diagnose

__all__ = ["diagnose"]
