"""The IF loop on one constant current, keeping only the rate: ``q: [N, *]`` for T steps ->
``(N * theta / T [N, *], V_T [N, *])``, for a per-sample layer whose spike train nobody reads.
Paths: ``torch`` (the twin: the torch loop on q broadcast over T, then ``spike_seq.sum(0) *
theta / T``), ``cpu`` (:func:`sj_qvm.ops.if_loop.cpu.if_rate_cpu`), ``cupy``
(:func:`sj_qvm.ops.if_loop.constant.if_count_cupy`); :mod:`.dispatch` chooses."""
from .dispatch import if_rate, run, select

__all__ = ["if_rate", "run", "select"]
