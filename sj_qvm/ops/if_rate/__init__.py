"""The IF loop on one constant current, keeping only the rate: ``q: [N, *]`` for T steps ->
``(N * theta / T [N, *], V_T [N, *])``, for a per-sample layer whose spike train nobody reads.
Paths, one file each: ``torch`` (the twin: the torch loop on q broadcast over T, then
``spike_seq.sum(0) * theta / T``), ``cpu`` (the compiled ``if_rate`` kernel), ``cupy`` (the CUDA
``qvm_if_count``); ``dispatch`` chooses and checks a compiled path on first use. Its reference is
:func:`sj_qvm.functional.if_multi_step_ref` on q repeated over T."""
from .cpu import if_rate_cpu
from .cupy import if_count_cupy, if_rate_cupy
from .dispatch import if_rate, run, select
from .torch import if_rate_torch

__all__ = ["if_rate", "run", "select", "if_rate_torch", "if_rate_cpu", "if_count_cupy",
           "if_rate_cupy"]
