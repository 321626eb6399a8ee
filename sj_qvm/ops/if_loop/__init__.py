"""The multi-step soft-reset IF loop: ``reference`` (differentiable), ``inference`` (no-grad, in
place) and the fused CUDA kernels (``if_loop.cu`` through CuPy, ``autograd`` custom ops)."""
from .autograd import if_multi_step_cupy
from .inference import if_multi_step_inference
from .reference import if_multi_step_ref

__all__ = ["if_multi_step_ref", "if_multi_step_inference", "if_multi_step_cupy"]
