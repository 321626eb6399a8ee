"""The multi-step soft-reset IF loop: ``reference`` (plain autograd), ``inference`` (no-grad, in
place) and ``bptt`` (hand-written backward)."""
from .bptt import if_multi_step_bptt
from .inference import if_multi_step_inference
from .reference import if_multi_step_ref

__all__ = ["if_multi_step_ref", "if_multi_step_inference", "if_multi_step_bptt"]
