"""The IF loop on one constant current, keeping only the rate: ``q: [N, *]`` for T steps ->
``(N * theta / T [N, *], V_T [N, *])``, for a per-sample layer whose spike train nobody reads.
One file per path (the same names in every op package): ``reference`` (the twin:
:func:`sj_qvm.functional.if_multi_step_ref` on q repeated over T, then
``spike_seq.sum(0) * theta / T``), ``torch`` (the ``"torch"`` path: the no-grad torch loop on q
broadcast over T, a view), ``cpu`` (the compiled ``if_rate`` kernel), ``cupy`` (the CUDA
``qvm_if_count``); ``dispatch`` chooses and checks a compiled path on first use."""
from .cpu import if_rate_cpu
from .cupy import if_count_cupy, if_rate_cupy
from .dispatch import if_rate, run, select
from .reference import if_rate_ref
from .torch import if_rate_torch

__all__ = ["if_rate", "run", "select", "if_rate_ref", "if_rate_torch", "if_rate_cpu",
           "if_count_cupy", "if_rate_cupy"]
