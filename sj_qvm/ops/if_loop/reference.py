"""The IF loop's reference twin: :func:`sj_qvm.functional.if_multi_step_ref`, the functional core
(plain autograd ops, one step at a time). Every path of this package (:mod:`.torch`, :mod:`.cpu`,
:mod:`.cupy`) has its signature and is tested against it, and :mod:`.check` compares a compiled
path with it on first use. It lives in the core because the node's single-step mode runs the
same ``if_step``."""
from ...functional import if_multi_step_ref

__all__ = ["if_multi_step_ref"]
