"""The multi-step soft-reset IF loop, one file per path (the same names in every op package):

* ``reference``: the twin, :func:`sj_qvm.functional.if_multi_step_ref` (plain autograd);
* ``torch``: the ``"torch"`` path, a no-grad in-place loop and a loop with a hand-written
  backward (pure PyTorch, any device);
* ``cpu``: the ``"cpu"`` path, the compiled kernels of ``sj_qvm/ops/_cpu.c`` (optional);
* ``cupy``: the ``"cupy"`` path, ``if_loop.cu`` through CuPy as ``torch.library`` custom ops
  (``if_constant_cupy``: one constant current ``[B, *]`` in, ``[T, B, *]`` spikes out; the
  rate-only op is :mod:`sj_qvm.ops.if_rate`);
* ``dispatch``: which path runs (``backend = "auto" | "torch" | "cpu" | "cupy"``), after
  :mod:`.check` has compared a compiled path with the reference on first use.

What the kernels share: ``launch`` (CUDA arguments and outputs), ``surrogates`` (the surrogate
table of both kernels), ``qvm_enums.h`` (their ids and flags)."""
from .cupy import if_constant_cupy, if_multi_step_cupy
from .dispatch import if_multi_step, if_multi_step_bptt, if_multi_step_inference
from .reference import if_multi_step_ref
from .torch import if_multi_step_bptt_torch, if_multi_step_torch

__all__ = ["if_multi_step", "if_multi_step_ref", "if_multi_step_inference", "if_multi_step_torch",
           "if_multi_step_bptt", "if_multi_step_bptt_torch", "if_multi_step_cupy",
           "if_constant_cupy"]
