"""Run the kernels of ``if_loop.cu`` through CuPy, on PyTorch's current stream, without copies.

CuPy is imported on first use, never at ``import sj_qvm``. The source is compiled once per device
into a cached ``cupy.RawModule`` (NVRTC; CuPy also keeps the binary in its on-disk cache). Tensors
reach the kernels as their ``data_ptr()`` (zero-copy), after :func:`.launch.array` checked them.
``LAUNCHES`` counts launches per kernel name, so tests can prove that the kernel ran. A launch
can be captured in a CUDA graph once that kernel has run on that device (one call before capture:
a warm-up, which compiles and loads the module); a first run inside a capture is refused.
"""
from __future__ import annotations

import collections
import hashlib
import math
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).with_name("if_loop.cu")
# What if_loop.cu includes:
HEADERS = tuple(SOURCE.with_name(h) for h in ("if_loop.cuh", "if_float.cuh", "if_rate.cuh",
                                             "qvm_enums.h"))
BLOCK = 256

#: kernel name -> number of launches in this process (the sentinel for tests).
LAUNCHES: collections.Counter = collections.Counter()

_modules: dict = {}  # device index -> cupy.RawModule
_functions: dict = {}  # (device index, kernel name) -> cupy.RawKernel
_streams: dict = {}  # (device index, stream handle) -> cupy.cuda.ExternalStream


def import_cupy():
    """The ``cupy`` module (raises ``ImportError`` when it is not installed)."""
    import cupy  # noqa: PLC0415 -- lazy on purpose
    return cupy


def compile_options() -> tuple[str, ...]:
    """NVRTC options for ``if_loop.cu``: the headers' folder, and the headers' hash.

    CuPy's compile cache keys on the source text and options only, so the hash makes an edited
    ``if_loop.cuh`` or ``if_rate.cuh`` a cache miss.
    """
    digest = hashlib.sha1(b"".join(h.read_bytes() for h in HEADERS)).hexdigest()[:12]
    return (f"-I{SOURCE.parent}", f"-DQVM_HEADER_SHA1=0x{digest}")


def cupy_nvrtc_options(arch: str) -> tuple[str, ...]:
    """The NVRTC options ``cupy.RawModule`` compiles ``if_loop.cu`` with, for ``-arch=<arch>``
    (``sm_90`` for a cubin, as CuPy does where NVRTC knows the GPU, or ``compute_90`` for PTX).

    CuPy 13 and 14 append to :func:`compile_options` (``cupy/cuda/compiler.py``:
    ``_compile_with_cache_cuda`` adds ``-ftz=true``, ``_compile_using_nvrtc_no_warning`` the arch
    and ``--device-as-default-execution-space``), besides ``-I`` folders of its own and of the
    CUDA toolkit that ``if_loop.cu`` does not use. NVRTC keeps the last ``-ftz``, so ours could
    not undo it: ``if_float.cuh`` writes the forward's arithmetic in PTX without ``.ftz``.
    """
    return compile_options() + ("-ftz=true", f"-arch={arch}",
                                "--device-as-default-execution-space")


def module(device_index: int):
    """The compiled ``cupy.RawModule`` for one device, built on first use."""
    mod = _modules.get(device_index)
    if mod is None:
        cupy = import_cupy()
        with cupy.cuda.Device(device_index):
            mod = cupy.RawModule(code=SOURCE.read_text(), options=compile_options())
            mod.compile()  # compile now, so a failure surfaces here and not mid-forward
        _modules[device_index] = mod
    return mod


def _function(device_index: int, name: str):
    key = (device_index, name)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = module(device_index).get_function(name)
    return fn


def _stream(cupy, device_index: int, handle: int):
    key = (device_index, handle)
    s = _streams.get(key)
    if s is None:
        s = _streams[key] = cupy.cuda.ExternalStream(handle, device_index)
    return s


def _arg(a):
    if isinstance(a, torch.Tensor):  # checked by launch.array: dense, on the device, detached
        return np.uint64(a.data_ptr())
    if a is None:
        return np.uint64(0)  # a null pointer, never dereferenced (the flags say so)
    return a  # numpy scalars: np.float32, np.int64, np.int32


class CupyRunner:
    """Launch ``name`` over ``threads`` threads with kernel arguments ``args``."""

    def launch(self, name: str, threads: int, args: tuple, device: torch.device) -> None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        if (index, name) not in _functions and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"{name} has not run on cuda:{index} yet and a CUDA graph is being "
                               "captured; run one call before capture (a warm-up)")
        cupy = import_cupy()
        handle = torch.cuda.current_stream(index).cuda_stream
        with cupy.cuda.Device(index):
            fn = _function(index, name)  # CuPy loads the module on the current device
            with _stream(cupy, index, handle):
                fn((math.ceil(threads / BLOCK),), (BLOCK,), tuple(_arg(a) for a in args))
        LAUNCHES[name] += 1
