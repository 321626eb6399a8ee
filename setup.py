"""Build the optional C event counter; everything else is declared in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and
``sj_qvm.datasets.events_to_frames`` uses its numpy path (same output, slower).
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
        )
    ]
)
