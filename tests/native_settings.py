"""The compiled CPU kernels' switches (``native.simd``, ``native.pool``) for the tests: set within
a block and restored after, and a run under each of their two values."""
import contextlib

import pytest


@contextlib.contextmanager
def switched(setting, value):
    """``setting(value)`` within the block (the value it took is yielded), restored after;
    ``setting`` is ``native.simd`` or ``native.pool``."""
    saved = setting()
    try:
        yield setting(value)
    finally:
        setting(saved)


def both_ways(setting, fn, skip_reason: str) -> list:
    """``[fn() with setting(0), fn() with setting(1)]``; skips with ``skip_reason`` where the
    value 1 does not take (no AVX2 here, no OpenMP in the build)."""
    out = []
    for value in (0, 1):
        with switched(setting, value) as got:
            if got != value:
                pytest.skip(skip_reason)
            out.append(fn())
    return out
