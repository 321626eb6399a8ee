"""Output buffers for the compiled CPU kernels: :func:`empty`, ``torch.empty`` that advises a
large buffer as transparent huge pages before anything touches it.

glibc maps every allocation of 32 MiB or more as fresh pages, and the first touch of each 4 KiB
page is a page fault. On Linux with transparent huge pages in ``madvise`` mode (a common
default), ``madvise(MADV_HUGEPAGE)`` on such a buffer lets the kernel fault it in 2 MiB pages,
which halves the cost of first touching it on the benchmark machine (``benchmarks/RESULTS.md``).
The advice changes no value: it is advisory, and silently skipped where it does not apply
(another OS, THP off, a buffer smaller than ``HUGE_BYTES``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

import torch

__all__ = ["HUGE_BYTES", "empty", "advise_huge"]

HUGE_BYTES = 32 << 20
_MADV_HUGEPAGE = 14
_PAGE = 1 << 21
_madvise: Optional[object] = None
_loaded = False


def _libc_madvise():
    global _madvise, _loaded
    if not _loaded:
        _loaded = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = libc.madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):
                _madvise = None
    return _madvise


def advise_huge(t: torch.Tensor) -> bool:
    """Advise the 2 MiB-aligned interior of CPU tensor ``t``'s memory as huge pages; True if the
    advice was taken (False: not Linux, too small, or refused)."""
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or nbytes < HUGE_BYTES:
        return False
    fn = _libc_madvise()
    if fn is None:
        return False
    start = t.data_ptr()
    lo = (start + _PAGE - 1) & ~(_PAGE - 1)
    hi = (start + nbytes) & ~(_PAGE - 1)
    return hi > lo and fn(lo, hi - lo, _MADV_HUGEPAGE) == 0


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, advised as huge pages when it is
    ``HUGE_BYTES`` or more (see the module docstring)."""
    t = torch.empty(shape, dtype=dtype)
    advise_huge(t)
    return t
