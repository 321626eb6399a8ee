"""The optional compiled CPU kernels (``sj_qvm/ops/_cpu.c``, built by ``setup.py``), one home for
loading them, switching them off, choosing their vector build (:func:`simd`) and their threads
(:func:`pool`), and counting their calls.

``CALLS[name]`` counts each kernel run on a caller's data (tests use it to prove the fast path
ran, so that a silent fallback to torch cannot pass; the first-use checks of :mod:`.verify` are
not counted). Whether the kernels may run is :mod:`.settings`' ``native`` (``SJ_QVM_NO_NATIVE=1``
in the environment, or :func:`disabled` for a block, turns them off).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from typing import Optional

import torch

from . import enums, settings

try:
    from . import _cpu as _module
    IMPORT_ERROR: Optional[str] = None
except ImportError as e:  # no C compiler at install time: the torch paths run
    _module = None
    IMPORT_ERROR = f"{e} (build it with `python setup.py build_ext --inplace`)"

#: The signatures this source calls (``ABI`` in _cpu.c); a build from an older source is not used.
ABI = 8
if _module is not None and getattr(_module, "ABI", 1) != ABI:
    IMPORT_ERROR = (f"sj_qvm.ops._cpu was built from another source (ABI "
                    f"{getattr(_module, 'ABI', 1)}, this source needs {ABI}); rebuild it with "
                    "`python setup.py build_ext --inplace`")
    _module = None
if _module is not None:
    try:  # the ids it was built with must be the header's
        enums.guard(getattr(_module, "ENUMS", {}))
    except ValueError as e:
        IMPORT_ERROR, _module = f"sj_qvm.ops._cpu: {e}", None

CALLS: Counter = Counter()
DTYPES = {torch.float32: enums.VALUES["DT_F32"], torch.float64: enums.VALUES["DT_F64"]}
_counting = [True]


@contextlib.contextmanager
def disabled():
    """Within the block the compiled kernels are off (as with ``SJ_QVM_NO_NATIVE=1``):
    ``backend="auto"`` takes torch."""
    with settings.configured(native=False):
        yield


@contextlib.contextmanager
def uncounted():
    """Kernel runs within the block are not counted in :data:`CALLS` (first-use checks)."""
    saved, _counting[0] = _counting[0], False
    try:
        yield
    finally:
        _counting[0] = saved


def unavailable_reason(kernel: Optional[str] = None) -> Optional[str]:
    """Why the compiled CPU kernels (``kernel`` among them) cannot run at all (``None``: they
    can): the extension is not built, is stale, lacks the kernel, or is switched off."""
    if _module is None:
        return f"the compiled CPU kernels are not loaded: {IMPORT_ERROR}"
    if not settings.get().native:
        return ("the compiled CPU kernels are switched off (SJ_QVM_NO_NATIVE=1, or "
                "sj_qvm.ops.settings.configure(native=False))")
    if kernel is not None and not hasattr(_module, kernel):
        return f"the compiled CPU extension lacks {kernel} (rebuild it)"
    return None


def available() -> bool:
    return unavailable_reason() is None


def input_reason(x: torch.Tensor, kernel: str) -> Optional[str]:
    """Why ``kernel`` cannot run on ``x`` (``None``: it can): it needs the extension and a CPU
    float32/float64 tensor."""
    why = unavailable_reason(kernel)
    if why is not None:
        return why
    if x.device.type != "cpu":
        return f"input is on {x.device}, the compiled CPU kernels need a CPU tensor"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} (the compiled CPU kernels take float32 and float64)"
    return None


def takes(x: torch.Tensor, kernel: str) -> bool:
    """Whether ``kernel`` can run on ``x`` (:func:`input_reason` is None)."""
    return input_reason(x, kernel) is None


def threads() -> int:
    return settings.threads()


def call(name: str, *args) -> None:
    getattr(_module, name)(*args)
    if _counting[0]:
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


#: Why :func:`pool` had its value at import (shown by :func:`sj_qvm.ops.diagnose`).
POOL_AT_IMPORT = "pthreads: the extension is not loaded"
if _module is not None:
    POOL_AT_IMPORT = "pthreads: the extension was built without OpenMP"
if getattr(_module, "OPENMP", 0):
    if hasattr(os, "register_at_fork"):  # whoever switched the pool on, a child leaves it
        os.register_at_fork(after_in_child=_pthreads_after_fork)
    if shares_torch_pool():
        _module.pool(1)
        POOL_AT_IMPORT = "OpenMP: the process maps one OpenMP runtime, torch's"
    else:
        POOL_AT_IMPORT = ("pthreads: the process does not map exactly one OpenMP runtime (or "
                          "is not Linux), so the extension's pool would not be torch's")


def min_share(value: Optional[int] = None) -> int:
    """Elements per thread below which a kernel runs on one thread (default 524288: starting a
    thread costs about that much work on the benchmark machine); ``value`` sets it. Returns the
    value in use. Needs the extension."""
    if _module is None:
        raise RuntimeError(f"sj_qvm.ops._cpu is not loaded: {IMPORT_ERROR}")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"min_share must be an int >= 1 or None, got {value!r}")
    return _module.min_share(-1 if value is None else value)
