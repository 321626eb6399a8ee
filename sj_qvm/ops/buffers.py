"""Output buffers for the compiled CPU kernels: :func:`empty`, ``torch.empty`` that advises a
large buffer as transparent huge pages before anything touches it.

glibc maps every allocation of 32 MiB or more as fresh pages, and the first touch of each 4 KiB
page is a page fault. On Linux with transparent huge pages in ``madvise`` mode (a common
default), ``madvise(MADV_HUGEPAGE)`` on such a buffer lets the kernel fault it in 2 MiB pages,
which halves the cost of first touching it on the benchmark machine (``benchmarks/RESULTS.md``).
The advice changes no value: it is advisory, and silently skipped where it does not apply
(another OS, THP off, a buffer smaller than ``HUGE_BYTES``).

It is given only to memory not yet touched. A large buffer that glibc hands out from its heap
(memory freed earlier, already faulted in) gains nothing from it: the advice then only splits
the heap's mapping and hands the kernel's huge-page daemon pages to collapse, and it measured
slower (``benchmarks/RESULTS.md``). ``mincore`` on the buffer's first huge page tells the two
apart.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

import torch

__all__ = ["HUGE_BYTES", "empty", "advise_huge", "resident"]

HUGE_BYTES = 32 << 20
_MADV_HUGEPAGE = 14
_PAGE = 1 << 21
_libc: Optional[tuple] = None
_loaded = False


def _libc_calls():
    """``(madvise, mincore)`` from libc, or ``None`` where they cannot be had."""
    global _libc, _loaded
    if not _loaded:
        _loaded = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                madvise, mincore = libc.madvise, libc.mincore
                madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
                madvise.restype = mincore.restype = ctypes.c_int
                _libc = (madvise, mincore)
            except (OSError, AttributeError):
                _libc = None
    return _libc


def resident(addr: int) -> Optional[bool]:
    """Whether the 4 KiB page at page-aligned ``addr`` is in memory (``None``: cannot tell)."""
    calls = _libc_calls()
    if calls is None:
        return None
    vec = ctypes.create_string_buffer(1)
    if calls[1](addr, 4096, vec) != 0:
        return None
    return bool(vec.raw[0] & 1)


def advise_huge(t: torch.Tensor) -> bool:
    """Advise the 2 MiB-aligned interior of CPU tensor ``t``'s memory as huge pages; True if the
    advice was taken (False: not Linux, too small, already in memory, or refused)."""
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or nbytes < HUGE_BYTES:
        return False
    calls = _libc_calls()
    if calls is None:
        return False
    start = t.data_ptr()
    lo = (start + _PAGE - 1) & ~(_PAGE - 1)
    hi = (start + nbytes) & ~(_PAGE - 1)
    if hi <= lo or resident(lo) is not False:
        return False
    return calls[0](lo, hi - lo, _MADV_HUGEPAGE) == 0


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, advised as huge pages when it is
    ``HUGE_BYTES`` or more (see the module docstring)."""
    t = torch.empty(shape, dtype=dtype)
    advise_huge(t)
    return t
