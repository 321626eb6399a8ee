"""The QuantReLU activation ``a = gamma/L * clip(Q(x*L/gamma), 0, L)``, one file per path (the
same names in every op package): ``reference`` (the straight-through chain of autograd ops, the
twin), ``torch`` (the ``"torch"`` path: a no-grad in-place expression and one autograd function
with a hand-written backward, which also runs the ``"cpu"`` path's kernels), ``cpu`` (the
compiled kernels of ``sj_qvm/ops/_cpu.c``), ``dispatch`` (which path runs, and why). There is no
CUDA kernel, so no ``cupy``: ``"auto"`` runs torch on CUDA."""
from .dispatch import select
from .reference import quant_relu_ref
from .torch import quant_relu, quant_relu_levels, quant_relu_path

__all__ = ["quant_relu", "quant_relu_levels", "quant_relu_path", "quant_relu_ref", "select"]
