"""The QuantReLU activation ``a = gamma/L * clip(Q(x*L/gamma), 0, L)``: ``reference`` (the
straight-through chain of autograd ops, the twin), ``fused`` (the ``"torch"`` path: a no-grad
in-place expression and one autograd function with a hand-written backward, which also runs the
``"cpu"`` path's kernels of ``cpu``), ``dispatch`` (which path runs, and why)."""
from .dispatch import select
from .fused import quant_relu, quant_relu_levels, quant_relu_path
from .reference import quant_relu_ref

__all__ = ["quant_relu", "quant_relu_levels", "quant_relu_path", "quant_relu_ref", "select"]
