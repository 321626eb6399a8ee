"""The QuantReLU activation ``a = gamma/L * clip(Q(x*L/gamma), 0, L)``: ``reference`` (today's
straight-through chain of autograd ops, the twin), ``fused`` (no-grad in-place expression and
one autograd function with a hand-written backward)."""
from .fused import quant_relu, quant_relu_levels
from .reference import quant_relu_ref

__all__ = ["quant_relu", "quant_relu_levels", "quant_relu_ref"]
