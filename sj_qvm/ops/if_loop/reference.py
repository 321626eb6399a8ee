"""The reference twin of every IF-loop fast path: plain autograd over :func:`sj_qvm.functional.if_step`."""
from ...functional import if_multi_step_ref

__all__ = ["if_multi_step_ref"]
