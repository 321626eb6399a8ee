"""SpikingJelly's own dataset functions, the reference our readers, frames and splits are tested
(and benchmarked) against: the one place that knows where each SJ generation keeps them.

2.x keeps them in ``spikingjelly.datasets.utils``, 0.0.0.0.14 in ``spikingjelly.datasets``;
CIFAR10-DVS's reader is ``spikingjelly.datasets.cifar10_dvs._load_origin_data`` on 2.x and
``CIFAR10DVS.load_origin_data`` on 0.0.0.0.14 (which calls ``np.fromstring`` in binary mode, gone in
numpy 2, so it is unavailable there). Tests call :func:`require`, which skips when SJ lacks one.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

import numpy as np

_MODULES = ("spikingjelly.datasets.utils", "spikingjelly.datasets")  # 2.x first, then 0.0.0.0.14


def function(name: str) -> Optional[Callable]:
    """SJ's dataset function ``name`` (e.g. ``load_aedat_v3``), or None where SJ has none."""
    if name == "cifar10_dvs_reader":
        return _cifar10_dvs_reader()
    for module in _MODULES:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


def _cifar10_dvs_reader() -> Optional[Callable]:
    try:
        from spikingjelly.datasets.cifar10_dvs import _load_origin_data  # 2.x
        return _load_origin_data
    except ImportError:
        pass
    try:
        from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS
    except ImportError:
        return None
    if int(np.__version__.split(".")[0]) >= 2:
        return None
    return CIFAR10DVS.load_origin_data


def require(*names: str):
    """SJ's functions ``names`` (one, or a tuple of them); ``pytest.skip`` where one is missing.
    ``"cifar10_dvs_reader"`` names SJ's CIFAR10-DVS ``.aedat`` reader."""
    found = [function(n) for n in names]
    missing = [n for n, f in zip(names, found) if f is None]
    if missing:
        import pytest  # noqa: PLC0415 -- the benchmarks use function() without pytest
        pytest.skip(f"SpikingJelly here has no {', '.join(missing)}")
    return found[0] if len(found) == 1 else tuple(found)


__all__ = ["function", "require"]
