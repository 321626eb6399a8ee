"""The multi-step soft-reset IF loop: ``reference`` (differentiable) and ``inference`` (no-grad, in place)."""
from .inference import if_multi_step_inference
from .reference import if_multi_step_ref

__all__ = ["if_multi_step_ref", "if_multi_step_inference"]
