"""The multi-step soft-reset IF loop: ``reference`` (plain autograd, the twin of every fast path),
``inference`` (no-grad, in place), ``bptt`` (hand-written backward), their compiled CPU kernels
(``cpu``, ``bptt_cpu``: ``sj_qvm/ops/_cpu.c``, optional, torch fallback) and the fused CUDA
kernels (``if_loop.cu`` through CuPy, ``autograd`` custom ops)."""
from .autograd import if_multi_step_cupy
from .bptt import if_multi_step_bptt
from .inference import if_multi_step_inference
from .reference import if_multi_step_ref

__all__ = ["if_multi_step_ref", "if_multi_step_inference", "if_multi_step_bptt", "if_multi_step_cupy"]
