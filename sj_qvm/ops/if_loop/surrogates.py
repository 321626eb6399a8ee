"""Our table from a SpikingJelly surrogate to the CUDA snippet of ``if_loop.cuh::surrogate_backward``.

SpikingJelly 2.0 removed the surrogates' ``cuda_codes``, so the kernel keeps its own copy of each
derivative ``sg'(x)``, selected by an id and two fp32 parameters computed here the way SJ computes
them in its torch backward:

==========  =====================================  ===========================================
SJ class    sg'(x)                                 (id, p0, p1)
==========  =====================================  ===========================================
Sigmoid     alpha * sigmoid(alpha x) (1 - ...)     (SG_SIGMOID, alpha, unused)
ATan        (alpha/2) / (1 + (pi alpha/2 * x)^2)    (SG_ATAN, alpha / 2, pi * (alpha / 2))
(none)      0: the spikes carry no gradient         (SG_NONE, unused, unused)
==========  =====================================  ===========================================
"""
from __future__ import annotations

import math
from typing import Optional

from ..enums import VALUES as _IDS

# The kernels' surrogate ids, read from qvm_enums.h.
SG_NONE, SG_SIGMOID, SG_ATAN = _IDS["SG_NONE"], _IDS["SG_SIGMOID"], _IDS["SG_ATAN"]

_TABLE = {
    "Sigmoid": lambda alpha: (SG_SIGMOID, alpha, 0.0),
    "ATan": lambda alpha: (SG_ATAN, alpha / 2, math.pi * (alpha / 2)),
}
SUPPORTED = tuple(_TABLE)


class UnsupportedSurrogate(ValueError):
    """The surrogate has no CUDA snippet in our table."""


def snippet(surrogate_function) -> tuple[int, float, float]:
    """``(id, p0, p1)`` of an SJ surrogate module (``None``: spikes carry no gradient).

    Only SJ's own ``Sigmoid`` and ``ATan`` (not subclasses, which may change the formula) in
    spiking mode are in the table; anything else raises :class:`UnsupportedSurrogate`.
    """
    if surrogate_function is None:
        return SG_NONE, 0.0, 0.0
    cls = type(surrogate_function)
    name = cls.__name__
    if name not in _TABLE or not cls.__module__.startswith("spikingjelly."):
        raise UnsupportedSurrogate(f"surrogate {cls.__module__}.{name} has no CUDA snippet "
                                   f"(supported: SpikingJelly's {', '.join(SUPPORTED)})")
    if not getattr(surrogate_function, "spiking", True):
        raise UnsupportedSurrogate(f"surrogate {name} is in non-spiking mode (spiking=False)")
    alpha = getattr(surrogate_function, "alpha", None)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise UnsupportedSurrogate(f"surrogate {name} has a non-float alpha {alpha!r}")
    return _TABLE[name](float(alpha))


def unsupported_reason(surrogate_function) -> Optional[str]:
    """Why :func:`snippet` would refuse ``surrogate_function``, or ``None``."""
    try:
        snippet(surrogate_function)
    except UnsupportedSurrogate as e:
        return str(e)
    return None
