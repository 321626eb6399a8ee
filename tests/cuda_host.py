"""The host build of the CUDA kernels (tests/if_loop_host.cpp, g++), registered as the CPU runner
of ``sj_qvm.ops.if_loop.launch``: the fixture ``host`` that the CUDA-without-a-GPU tests share."""
import ctypes
import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from sj_qvm.ops.if_loop import cupy as cupy_mod
from sj_qvm.ops.if_loop import launch

HERE = os.path.dirname(__file__)
#: The marks of a GPU test module: ``pytestmark = GPU_ONLY`` (skipped without CUDA and CuPy).
GPU_ONLY = [pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
            pytest.mark.skipif(importlib.util.find_spec("cupy") is None,
                               reason="CuPy is not installed")]
OPS_DIR = os.path.dirname(cupy_mod.SOURCE)
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


class HostRunner:
    """Calls the host build of a kernel: same name, same arguments, ``threads`` first.

    It refuses what the GPU path refuses, so that the host tests see it: a tensor that requires
    grad (``cupy.asarray`` reads torch's ``__cuda_array_interface__``, which raises for one), a
    tensor on another device than the launch's, a non-contiguous tensor (a kernel argument is a
    bare pointer to a dense row-major array), and, in the host build itself, a vector access
    through a misaligned pointer (``if_loop_host.cpp``: the GPU faults on one).
    """

    def __init__(self, lib):
        self.lib = lib
        self.launches = []

    @staticmethod
    def pointer(a: torch.Tensor, i: int, device: torch.device) -> ctypes.c_void_p:
        if a.requires_grad:  # torch's own words (torch/_tensor.py, __cuda_array_interface__)
            raise RuntimeError(f"kernel argument {i}: Can't get __cuda_array_interface__ on "
                               "Variable that requires grad.")
        if a.device != device:
            raise RuntimeError(f"kernel argument {i} is on {a.device}, the launch on {device}")
        if not a.is_contiguous():
            raise RuntimeError(f"kernel argument {i} is not contiguous (strides {a.stride()})")
        return ctypes.c_void_p(a.data_ptr())

    def launch(self, name, threads, args, device):
        assert device.type == "cpu"
        cargs = [ctypes.c_longlong(threads)]
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                cargs.append(self.pointer(a, i, device))
            elif a is None:
                cargs.append(ctypes.c_void_p(None))
            elif isinstance(a, np.float32):
                cargs.append(ctypes.c_float(float(a)))
            elif isinstance(a, np.int64):
                cargs.append(ctypes.c_longlong(int(a)))
            elif isinstance(a, np.int32):
                cargs.append(ctypes.c_int(int(a)))
            else:
                raise TypeError(f"unexpected kernel argument {a!r}")
        fn = getattr(self.lib, name)
        fn.restype = ctypes.c_int
        rc = fn(*cargs)
        if rc == -1:
            raise RuntimeError(f"{name}: N is not a multiple of the kernel's vector width")
        if rc:
            raise RuntimeError(f"{name}: misaligned address (kernel argument {rc - 1} is not "
                               "aligned to the kernel's vector access)")
        self.launches.append(name)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The host build, registered as the CPU runner for this module's tests."""
    out = str(tmp_path_factory.mktemp("host") / "libqvm_if_loop_host.so")
    src = os.path.join(HERE, "if_loop_host.cpp")
    if shutil.which("g++"):
        cmd = ["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
               "-Wno-unknown-pragmas", f"-I{OPS_DIR}", src, "-o", out]
    elif NVCC:
        cmd = [NVCC, "-shared", "-Xcompiler", "-fPIC", "-x", "cu", f"-I{OPS_DIR}", src, "-o", out]
    else:
        pytest.skip("neither g++ nor nvcc to build the host twin")
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    runner = HostRunner(ctypes.CDLL(out))
    launch.register_runner("cpu", runner)
    yield runner
    launch._runners.pop("cpu", None)


SUBNORMAL = 2.0 ** -149  # the smallest float32 subnormal: sums of its multiples are exact


def subnormal_case(T: int, device="cpu"):
    """``(x [T, 2, K] fp32, theta, z)``: theta = 8 u (u = 2^-149, subnormal) and a constant
    current q = z theta / T, z = 0, 1/2, ..., T + 1 (exact multiples of u for T = 4), then
    q = -u and -2u; the second row repeats the first. Any flush to zero moves a spike."""
    theta = 8 * SUBNORMAL
    z = torch.arange(0, 2 * T + 3, dtype=torch.float64) / 2
    q = torch.cat([z * theta / T, torch.tensor([-SUBNORMAL, -2 * SUBNORMAL])]).float()
    return q.to(device).view(1, 1, -1).expand(T, 2, -1).contiguous(), theta, z.float()
