"""The multi-step soft-reset IF loop's fast paths. Their reference twin (plain autograd, the same
signature) is :func:`sj_qvm.functional.if_multi_step_ref`, the functional core, re-exported here:
``inference`` (no-grad, in place), ``bptt`` (hand-written backward), their compiled CPU kernels
(``cpu``, ``bptt_cpu``: ``sj_qvm/ops/_cpu.c``, optional, torch fallback) and the fused CUDA
kernels (``if_loop.cu`` through CuPy, ``autograd`` custom ops; ``constant``: one constant
current ``[B, *]`` in, ``[T, B, *]`` spikes out; the rate-only op is :mod:`sj_qvm.ops.if_rate`). :mod:`.dispatch`
chooses among them (``backend = "auto" | "torch" | "cpu" | "cupy"``), after :mod:`.check`
has compared a compiled path with the reference on first use."""
from ...functional import if_multi_step_ref
from .autograd import if_multi_step_cupy
from .constant import if_constant_cupy
from .bptt import if_multi_step_bptt, if_multi_step_bptt_torch
from .dispatch import if_multi_step
from .inference import if_multi_step_inference, if_multi_step_torch

__all__ = ["if_multi_step", "if_multi_step_ref", "if_multi_step_inference", "if_multi_step_torch",
           "if_multi_step_bptt", "if_multi_step_bptt_torch", "if_multi_step_cupy",
           "if_constant_cupy"]
