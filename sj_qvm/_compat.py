"""Every SpikingJelly import lives here, so the next host change touches one file.

Two host generations are supported:

* ``0.0.0.0.14`` -- the one most published code uses (``backend=`` argument, CuPy kernels,
  ``ann2snn.Converter(mode=..., dataloader=...)(ann)``).
* ``2.0.x`` -- removed ``backend=`` and CuPy, caches ``reset_net`` module lists
  (``invalidate_reset_cache``) and converts through ``FXConversionRecipe`` objects.
"""
from __future__ import annotations

import importlib
import importlib.metadata

import torch.nn as nn

import spikingjelly
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate

__all__ = [
    "SJ_VERSION", "SJ_MAJOR", "base", "functional", "layer", "neuron", "surrogate",
    "MemoryModule", "IFNode", "reset_net", "set_step_mode", "invalidate_reset_cache",
    "SeqToANNContainer", "default_surrogate", "is_spikingjelly_module",
]

try:
    SJ_VERSION: str = importlib.metadata.version("spikingjelly")
except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
    SJ_VERSION = "2.0.0" if hasattr(base.MemoryModule, "materialize_states") else "0.0.0.0.14"
#: 0 for the 0.0.0.0.x line, 2 for 2.x.
SJ_MAJOR: int = int(SJ_VERSION.split(".")[0])

MemoryModule = base.MemoryModule
IFNode = neuron.IFNode
SeqToANNContainer = layer.SeqToANNContainer
reset_net = functional.reset_net
set_step_mode = functional.set_step_mode


def default_surrogate() -> nn.Module:
    """SpikingJelly's default surrogate for IF nodes: ``Sigmoid(alpha=4)``."""
    return surrogate.Sigmoid()


def invalidate_reset_cache(net: nn.Module) -> None:
    """Forget SJ 2.0's cached list of resettable modules after a module swap (no-op on 0.14)."""
    fn = getattr(functional, "invalidate_reset_cache", None)
    if fn is None:
        try:
            fn = importlib.import_module(
                "spikingjelly.activation_based.functional.net_config").invalidate_reset_cache
        except (ImportError, AttributeError):
            return
    fn(net)


def is_spikingjelly_module(m: nn.Module) -> bool:
    """True for modules defined by SpikingJelly itself (its layers, nodes and containers)."""
    return type(m).__module__.startswith("spikingjelly.")
