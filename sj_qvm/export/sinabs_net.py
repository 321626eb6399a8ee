"""``to_sinabs``: a converted QVM network as a sinabs network that fires the same spikes."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..checks import check_levels
from ..convert import QVMNetwork
from .chain import Spiking, layer_chain

__all__ = ["to_sinabs", "require_sinabs"]


def require_sinabs():
    """The ``sinabs`` package, or an ImportError that says how to install it."""
    try:
        import sinabs
        import sinabs.layers  # noqa: F401
    except ImportError as e:
        raise ImportError("sj_qvm.export.to_sinabs needs sinabs (SynSense's SNN library): "
                          "pip install 'sj-qvm[sinabs]'") from e
    return sinabs


def sinabs_layers(chain: list, time_steps: int) -> nn.Sequential:
    """The ``nn.Sequential`` of sinabs / torch modules for a :func:`layer_chain`."""
    require_sinabs()
    from sinabs.layers import SumPool2d

    from .sinabs_layers import QVMIAFSqueeze, QVMSpike, QVMStrictSpike
    out = []
    for item in chain:
        if isinstance(item, Spiking):
            out.append(QVMIAFSqueeze(
                v_init=item.v_init, spike_threshold=item.threshold,
                spike_fn=QVMStrictSpike if item.strict else QVMSpike,
                num_timesteps=time_steps))
        elif isinstance(item, tuple) and item[0] == "sumpool":
            out.append(SumPool2d(item[1]))
        else:
            out.append(item)
    return nn.Sequential(*out)


def to_sinabs(snn: QVMNetwork, time_steps: Optional[int] = None,
              input_shape: Optional[Tuple[int, ...]] = None,
              dtype: Optional[torch.dtype] = None) -> nn.Sequential:
    """A sinabs network that computes what ``snn`` computes per step, spike for spike.

    Args:
        snn: a :class:`~sj_qvm.convert.QVMNetwork` (either schedule; its per-step form is
            exported, θ folded into the weights as :mod:`sj_qvm.fold` does).
        time_steps: T (default ``snn.levels``); the sinabs layers reshape ``[B*T, *]`` with it.
        input_shape: one sample's shape ``[C, *]``; needed to map adaptive average pools.
        dtype: of the weights and states (default: ``snn``'s parameters').
    Returns:
        ``nn.Sequential`` of ``nn.Conv2d`` / ``nn.Linear``, :class:`QVMIAFSqueeze` (soft reset by
        subtraction, V0 as the initial membrane state, one spike per step, ``>`` for ceil;
        threshold 1 where θ is a power of two, else θ per channel), ``SumPool2d`` and, for
        ``current="expected"``, :class:`~sj_qvm.export.chain.TimeMean`. Input ``[B*T, *]``
        batch-major (sinabs's layout: ``x_seq.transpose(0, 1).flatten(0, 1)`` from SJ's
        ``[T, B, *]``), output ``[B*T, *]``. Call ``sinabs.reset_states(net)`` between
        sequences (a state reset goes back to V0).
    Raises:
        ImportError without sinabs; :class:`~sj_qvm.graph.ConversionError` naming the user's
        line for a layer sinabs cannot state exactly (a residual merge, a max-pool on spikes,
        a pool that is no k x k sum with k^2 a power of two).
    """
    require_sinabs()
    T = check_levels(time_steps if time_steps is not None else snn.levels, "time_steps")
    if dtype is None:
        p = next(snn.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
    return sinabs_layers(layer_chain(snn, T, input_shape, dtype), T)
