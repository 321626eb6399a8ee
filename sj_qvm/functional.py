"""Pure integrate-and-fire math with soft reset (eq. 1 of the paper); the reference for every fast path.

    U_t = V_{t-1} + q_t
    s_t = 1[U_t >= theta]     (or 1[U_t > theta] with ``strict=True``)
    V_t = U_t - theta * s_t

Firing rules and exactness. With T = L, theta = gamma and a constant current q (the *expected*
current, eq. 9), an IF neuron fires ``N = clip(floor(V0/theta + z), 0, T)`` spikes where
``z = T*q/theta`` under the ``>=`` rule, and ``N = clip(ceil(V0/theta + z) - 1, 0, T)`` under the
strict ``>`` rule. The three QVM pairs agree with the ANN's level ``M`` at **every** z, boundaries
(z an integer, z = k + 1/2, z = 0) included:

=========  =====================  ============  ========================================
rounding   ANN: M = clip(Q(z))    V0            neuron rule -> N
=========  =====================  ============  ========================================
floor      floor(z)               0             U >= theta  -> floor(z)
round      floor(z + 1/2)         theta/2       U >= theta  -> floor(z + 1/2)   (half-up)
ceil       ceil(z)                theta         U >  theta  -> ceil(z)
=========  =====================  ============  ========================================

With the usual ``>=`` rule, V0 = theta would give floor(z) + 1 at every integer z (the paper's
proof of Theorem 3 skips that case); the strict rule removes the off-by-one. :func:`matched_v0` is
this table's one home: the neuron, the kernels' callers and the tests read V0 and the rule from it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from .checks import CURRENTS, check_current, check_rounding

# V0 / theta and the strict rule per rounding: the table above.
_MATCH = {"floor": (0.0, False), "round": (0.5, False), "ceil": (1.0, True)}


def matched_v0(rounding: str, theta):
    """``(v0, strict)``: the V0 and firing rule that match the ANN's ``rounding`` (the table above).

    ``theta`` is a float or a tensor of any shape; ``v0`` is ``0``, ``theta/2`` or ``theta`` times
    it (a float or a tensor of ``theta``'s shape, dtype and device), and ``strict`` says whether the
    neuron fires on ``U > theta`` (``"ceil"``) instead of ``U >= theta``.
    """
    fraction, strict = _MATCH[check_rounding(rounding)]
    return fraction * theta, strict


def fire(h: torch.Tensor, strict: bool, surrogate_function: Optional[Callable] = None) -> torch.Tensor:
    """Spikes from ``h = U - theta``: ``h >= 0`` (or ``h > 0`` when strict), in ``h``'s dtype.

    With a surrogate (an SJ surrogate module: heaviside forward ``h >= 0``), the strict rule is
    ``1 - sg(-h)``: its forward is ``h > 0`` and, for the symmetric surrogates SJ ships, its
    gradient equals ``sg'(h)``.
    """
    if surrogate_function is None:
        return (h > 0 if strict else h >= 0).to(h.dtype)
    if strict:
        return 1.0 - surrogate_function(-h)
    return surrogate_function(h)


def if_step(x: torch.Tensor, v: torch.Tensor, v_threshold, strict: bool = False,
            surrogate_function: Optional[Callable] = None, detach_reset: bool = False):
    """One soft-reset IF step.

    Args:
        x: input current q_t, ``[N, *]``.
        v: membrane potential V_{t-1}, broadcastable to ``x``.
        v_threshold: theta, a float or a tensor broadcastable to ``x``.
    Returns:
        ``(spike, v)``: s_t in {0, 1} (``x``'s dtype) and V_t, both ``[N, *]``.
    """
    u = v + x
    spike = fire(u - v_threshold, strict, surrogate_function)
    reset = spike.detach() if detach_reset else spike
    return spike, u - v_threshold * reset


def expected_current(x_seq: torch.Tensor) -> torch.Tensor:
    """The constant current of eq. 9: the mean of ``x_seq: [T, N, *]`` over T, shape ``[N, *]``.

    Computed as ``x_0 + sum_t (x_t - x_0) / T``, summed in time order, so that a sequence whose
    steps are all equal (a static input repeated T times) gives exactly ``x_0`` with no rounding.
    A sequence that is one ``[N, *]`` tensor broadcast over T (stride 0 on dim 0, as the
    per-sample schedule of :func:`sj_qvm.convert` passes) is that tensor, returned as it is
    (a view, no pass over the data). Where ``x_0`` is infinite the offset is 0 instead
    (``inf - inf`` would be NaN), so the mean is IEEE's: +inf or -inf when the infinities agree,
    NaN when they do not or a NaN is present.
    """
    x0 = x_seq[0]
    if x_seq.shape[0] == 1 or x_seq.stride(0) == 0:
        return x0
    ref = torch.where(torch.isinf(x0), torch.zeros_like(x0), x0)
    acc = x0 - ref  # exactly 0 where x_0 is finite
    for t in range(1, x_seq.shape[0]):
        acc = acc + (x_seq[t] - ref)
    # A 0-dim tensor divisor, not a Python int: CUDA turns division by a CPU scalar into a
    # multiplication by its reciprocal, which differs in the last bit when T is no power of 2.
    T = torch.full((), x_seq.shape[0], dtype=acc.dtype, device=acc.device)
    return ref + acc / T


def if_multi_step_ref(x_seq: torch.Tensor, v_init, v_threshold, strict: bool = False,
                      current: str = "instant", surrogate_function: Optional[Callable] = None,
                      detach_reset: bool = False, store_v_seq: bool = False):
    """T soft-reset IF steps; the differentiable reference every fast path is tested against.

    Args:
        x_seq: input currents ``[T, N, *]``.
        v_init: V0, a float or a tensor broadcastable to ``[N, *]``.
        v_threshold: theta, a float or a tensor broadcastable to ``[N, *]``.
        current: ``"instant"`` (step t receives ``x_seq[t]``) or ``"expected"`` (every step
            receives :func:`expected_current` of ``x_seq``, Algorithm 1).
    Returns:
        ``(spike_seq [T, N, *], v [N, *], v_seq [T, N, *] or None)``; v is V_T.
    """
    check_current(current)
    q = expected_current(x_seq) if current == "expected" else None
    v = torch.zeros_like(x_seq[0]) + v_init
    spikes, vs = [], []
    for t in range(x_seq.shape[0]):
        s, v = if_step(x_seq[t] if q is None else q, v, v_threshold, strict,
                       surrogate_function, detach_reset)
        spikes.append(s)
        if store_v_seq:
            vs.append(v)
    return torch.stack(spikes), v, (torch.stack(vs) if store_v_seq else None)
