"""Build the optional C extensions; everything else is declared in pyproject.toml.

Both are optional: without a C compiler the install still succeeds and the library uses its
torch/numpy paths (same output, slower):

* ``sj_qvm.datasets._count``: the event counter of ``events_to_frames``;
* ``sj_qvm.ops._cpu``: the CPU kernels of QuantReLU and the IF loop, each built for baseline
  x86-64 and for AVX2 (picked at run time).
  ``-ffp-contract=off``: fused multiply-adds would round differently from torch;
  ``-fno-trapping-math`` lets the compare-and-reset loops vectorize (no rounding changes).
"""

import sys

from setuptools import Extension, setup

unix = sys.platform != "win32"  # pthreads; on Windows the counter runs on one thread

setup(
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
            depends=["sj_qvm/ops/_cpu_kernels.h", "sj_qvm/ops/_cpu_quant.h"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-pthread"] if unix else [],
            extra_link_args=["-pthread"] if unix else [],
            optional=True,
        ),
    ]
)
