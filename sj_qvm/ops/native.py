"""The optional compiled CPU kernels (``sj_qvm/ops/_cpu.c``, built by ``setup.py``), one home for
loading them, switching them off, choosing their vector build (:func:`simd`) and their threads
(:func:`pool`), and counting their calls.

``CALLS[name]`` counts each kernel run (tests use it to prove the fast path ran, so that a silent
fallback to torch cannot pass). ``ENABLED = False`` (or ``SJ_QVM_NO_NATIVE=1`` in the environment)
sends every call to the torch paths, which give the same results.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from typing import Optional

import torch

try:
    from . import _cpu as _module
    IMPORT_ERROR: Optional[str] = None
except ImportError as e:  # no C compiler at install time: the torch paths run
    _module = None
    IMPORT_ERROR = f"{e} (build it with `python setup.py build_ext --inplace`)"

#: The signatures this source calls (``ABI`` in _cpu.c); a build from an older source is not used.
ABI = 7
if _module is not None and getattr(_module, "ABI", 1) != ABI:
    IMPORT_ERROR = (f"sj_qvm.ops._cpu was built from another source (ABI "
                    f"{getattr(_module, 'ABI', 1)}, this source needs {ABI}); rebuild it with "
                    "`python setup.py build_ext --inplace`")
    _module = None

ENABLED = os.environ.get("SJ_QVM_NO_NATIVE", "") in ("", "0")
CALLS: Counter = Counter()
DTYPES = {torch.float32: 0, torch.float64: 1}


@contextlib.contextmanager
def disabled():
    """Within the block every op takes its torch path (as with ``SJ_QVM_NO_NATIVE=1``)."""
    global ENABLED
    saved, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = saved


def available() -> bool:
    return _module is not None and ENABLED


def takes(x: torch.Tensor, kernel: str) -> bool:
    """Whether ``kernel`` can run on ``x``: a CPU float32/float64 tensor, and the extension is
    built and has it (an extension built from an older source may lack a kernel)."""
    return (available() and x.device.type == "cpu" and x.dtype in DTYPES
            and hasattr(_module, kernel))


def threads() -> int:
    return max(1, min(64, torch.get_num_threads()))


def call(name: str, *args) -> None:
    getattr(_module, name)(*args)
    CALLS[name] += 1


def simd(level: Optional[int] = None) -> int:
    """The vector build the kernels run: 1 AVX2 (the default where the CPU has it), 0 the
    baseline SSE2 build (the same bits, slower). ``level`` 0 or 1 switches it (1 only takes
    effect where the CPU has AVX2); the level now in use is returned. Needs the extension."""
    if _module is None:
        raise RuntimeError(f"sj_qvm.ops._cpu is not loaded: {IMPORT_ERROR}")
    if level is not None and level not in (0, 1):
        raise ValueError(f"level must be one of (0, 1, None), got {level!r}")
    return _module.simd(-1 if level is None else level)


def pool(mode: Optional[int] = None) -> int:
    """Where the kernels run their threads' shares: 1 on the OpenMP thread pool, 0 on a pthread
    each (the same shares, so the same bits). ``mode`` 0 or 1 switches it (1 only takes effect
    where the extension was built with OpenMP); the mode now in use is returned. At import it
    is 1 where :func:`shares_torch_pool` holds, and 0 again in a forked child. Needs the
    extension."""
    if _module is None:
        raise RuntimeError(f"sj_qvm.ops._cpu is not loaded: {IMPORT_ERROR}")
    if mode is not None and mode not in (0, 1):
        raise ValueError(f"mode must be one of (0, 1, None), got {mode!r}")
    return _module.pool(-1 if mode is None else mode)


_OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")


def openmp_runtimes(maps_lines) -> set:
    """The distinct files of OpenMP runtimes (GNU, Intel, LLVM) among the mapped files of
    ``maps_lines`` (lines of ``/proc/<pid>/maps``)."""
    found = set()
    for line in maps_lines:
        parts = line.split(None, 5)
        if len(parts) == 6:
            path = parts[5].strip()
            if any(os.path.basename(path).startswith(name) for name in _OPENMP_RUNTIMES):
                found.add(path)
    return found


def shares_torch_pool() -> bool:
    """Whether the extension's OpenMP pool is torch's: it was built with OpenMP and the process
    maps exactly one OpenMP runtime (the dynamic linker gave the extension the ``libgomp.so.1``
    torch had loaded). Two runtimes would keep two pools that compete for the cores, so then
    the kernels keep their pthreads. Only Linux is checked (elsewhere: False)."""
    if _module is None or not getattr(_module, "OPENMP", 0) or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps") as f:
            return len(openmp_runtimes(f)) == 1
    except OSError:
        return False


def _pthreads_after_fork() -> None:
    """In a forked child: back to pthreads. GNU OpenMP's pool does not survive a fork (the
    child's first parallel region waits for workers that were not copied), so torch itself
    hangs there with more than one thread; the kernels' pthreads are started afresh."""
    _module.pool(0)


if getattr(_module, "OPENMP", 0):
    if hasattr(os, "register_at_fork"):  # whoever switched the pool on, a child leaves it
        os.register_at_fork(after_in_child=_pthreads_after_fork)
    if shares_torch_pool():
        _module.pool(1)


def min_share(value: Optional[int] = None) -> int:
    """Elements per thread below which a kernel runs on one thread (default 524288: starting a
    thread costs about that much work on the benchmark machine); ``value`` sets it. Returns the
    value in use. Needs the extension."""
    if _module is None:
        raise RuntimeError(f"sj_qvm.ops._cpu is not loaded: {IMPORT_ERROR}")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"min_share must be an int >= 1 or None, got {value!r}")
    return _module.min_share(-1 if value is None else value)
