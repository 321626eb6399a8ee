"""No-grad multi-step IF loop that writes in place and stores nothing for backward.

``backend="auto"`` of :mod:`.dispatch` on CPU inputs: the compiled kernel of :mod:`.cpu` where it
is built (one pass over memory), else :func:`if_multi_step_torch`, the torch loop, with the same
results (the only path for other devices).

Same signature as its twin :func:`sj_qvm.functional.if_multi_step_ref` (a test compares the two
``inspect.signature``\\ s) and bit-identical spikes and V_T. ``surrogate_function`` and
``detach_reset`` shape only the backward, so a loop without autograd accepts and ignores them.
``U >= theta`` is tested as ``U - theta >= 0`` in the reference, which IEEE subtraction makes the
same predicate, and ``V - theta * s`` with ``s`` in {0, 1} is exact either way. The compiled
kernel runs at about 2x a plain ``clone`` of the input, the torch loop at 4-12x
(benchmarks/RESULTS.md).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ...checks import check_current
from ...functional import expected_current


def _check_surrogate(surrogate_function) -> None:
    # A bool here is a caller still passing store_v_seq as the 6th positional argument.
    if surrogate_function is not None and not callable(surrogate_function):
        raise TypeError("surrogate_function must be None or a callable (SJ surrogate), got "
                        f"{type(surrogate_function).__name__} {surrogate_function!r}; pass "
                        "store_v_seq by keyword")


@torch.no_grad()
def if_multi_step_inference(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                            current: str = "instant", surrogate_function: Optional[Callable] = None,
                            detach_reset: bool = False, store_v_seq: bool = False):
    """``x_seq: [T, N, *]`` -> ``(spike_seq [T, N, *], v [N, *], v_seq [T, N, *] or None)``."""
    check_current(current)
    _check_surrogate(surrogate_function)
    from . import dispatch  # noqa: PLC0415 -- it imports this module
    path, _ = dispatch.select("auto" if not x_seq.is_cuda else "torch", x_seq, v_init,
                              v_threshold, strict=strict, current=current)
    return dispatch.run(path, x_seq, v_init, v_threshold, strict, current,
                        store_v_seq=store_v_seq)


@torch.no_grad()
def if_multi_step_torch(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                        current: str = "instant", surrogate_function: Optional[Callable] = None,
                        detach_reset: bool = False, store_v_seq: bool = False):
    """The torch loop (any device and dtype): same signature and results."""
    check_current(current)
    _check_surrogate(surrogate_function)
    q = expected_current(x_seq) if current == "expected" else None
    v = torch.empty_like(x_seq[0])
    v.copy_(torch.as_tensor(v_init, dtype=v.dtype, device=v.device).expand_as(v))
    spike_seq = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq) if store_v_seq else None
    compare = torch.gt if strict else torch.ge
    scalar = not isinstance(v_threshold, torch.Tensor)
    for t in range(x_seq.shape[0]):
        v.add_(x_seq[t] if q is None else q)
        spike = compare(v, v_threshold)
        spike_seq[t].copy_(spike)
        if scalar:
            v.sub_(spike_seq[t], alpha=v_threshold)
        else:
            v.sub_(spike_seq[t] * v_threshold)
        if v_seq is not None:
            v_seq[t].copy_(v)
    return spike_seq, v, v_seq
