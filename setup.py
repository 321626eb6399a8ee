"""Build the optional C extensions; everything else is declared in pyproject.toml.

Both are optional: without a C compiler the install still succeeds and the library uses its
torch/numpy paths (same output, slower):

* ``sj_qvm.datasets._count``: the event counter of ``events_to_frames``;
* ``sj_qvm.ops._cpu``: the CPU kernels of QuantReLU and the IF loop, each built for baseline
  x86-64 and for AVX2 (picked at run time).
  ``-ffp-contract=off``: fused multiply-adds would round differently from torch;
  ``-fno-trapping-math`` lets the compare-and-reset loops vectorize (no rounding changes).
  ``-fopenmp`` where the compiler has it, so that the kernels can run their threads on torch's
  OpenMP pool (``sj_qvm.ops.native.pool``); without it they start pthreads.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.errors import CompileError, LinkError
except ImportError:  # older setuptools
    from distutils.errors import CompileError, LinkError

unix = sys.platform != "win32"  # pthreads; on Windows the counter runs on one thread
OPENMP = ["-fopenmp"]


class BuildExt(build_ext):
    """Builds ``sj_qvm.ops._cpu`` with OpenMP, and again without it where that fails."""

    def build_extension(self, ext):
        if ext.name != "sj_qvm.ops._cpu" or not unix:
            return super().build_extension(ext)
        compile_args, link_args = list(ext.extra_compile_args), list(ext.extra_link_args)
        ext.extra_compile_args, ext.extra_link_args = compile_args + OPENMP, link_args + OPENMP
        try:
            return super().build_extension(ext)
        except (CompileError, LinkError):
            print("sj_qvm.ops._cpu: no OpenMP here; building it with pthreads only")
            ext.extra_compile_args, ext.extra_link_args = compile_args, link_args
            return super().build_extension(ext)


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "sj_qvm.datasets._count",
            sources=["sj_qvm/datasets/_count.c"],
            extra_compile_args=["-O3", "-pthread"] if unix else [],
            extra_link_args=["-pthread"] if unix else [],
            optional=True,
        ),
        Extension(
            "sj_qvm.ops._cpu",
            sources=["sj_qvm/ops/_cpu.c"],
            depends=["sj_qvm/ops/_cpu_kernels.h", "sj_qvm/ops/_cpu_quant.h",
                     "sj_qvm/ops/_cpu_split.h", "sj_qvm/ops/if_loop/qvm_enums.h"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-pthread"] if unix else [],
            extra_link_args=["-pthread"] if unix else [],
            optional=True,
        ),
    ]
)
