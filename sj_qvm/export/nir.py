"""``to_nir``: refused, in one line, because NIR 1.0.x cannot state a QVM neuron exactly
(docs/nir.md tracks the NIR proposals that would let it)."""
from __future__ import annotations

from ..graph import ConversionError

__all__ = ["NIR_REFUSAL", "to_nir"]

#: Why a QVM network has no exact NIR 1.0.x form, in one line.
NIR_REFUSAL = ("NIR 1.0.x cannot state a QVM neuron: its IF node has no initial membrane "
               "voltage (V0 = theta/2 for round, theta for ceil), fires on v > theta only "
               "(floor and round fire on v >= theta), and its importers read the reset "
               "differently (sinabs subtracts, SpikingJelly resets to v_reset); export with "
               "sj_qvm.export.to_sinabs instead (docs/nir.md)")


def to_nir(snn, *args, **kwargs):
    """Always raises :class:`~sj_qvm.graph.ConversionError` with :data:`NIR_REFUSAL`: an NIR
    graph of a QVM network would run a different network (never exported silently)."""
    raise ConversionError(NIR_REFUSAL)
