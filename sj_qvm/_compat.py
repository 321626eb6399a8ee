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
import inspect
import warnings

import torch.nn as nn

with warnings.catch_warnings():
    # SJ 0.0.0.0.14 decorates functions with torch.jit.script at import, which recent torch
    # reports as deprecated on every import: noise in every command line's output, nothing a
    # user of sj-qvm can act on.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated",
                            category=FutureWarning)
    from spikingjelly.activation_based import base, functional, layer, neuron, surrogate
try:  # 0.0.0.0.14's monitor imports torch.utils.tensorboard, which needs the tensorboard package
    from spikingjelly.activation_based import monitor
except ImportError:
    monitor = None  # the monitors are SJ's tools for the user; sj-qvm itself never needs them

__all__ = [
    "SJ_VERSION", "SJ_MAJOR", "base", "functional", "layer", "monitor", "neuron", "surrogate",
    "MemoryModule", "StepModule", "BaseNode", "IFNode", "reset_net", "set_step_mode",
    "invalidate_reset_cache",
    "SeqToANNContainer", "default_surrogate", "is_spikingjelly_module",
]

try:
    SJ_VERSION: str = importlib.metadata.version("spikingjelly")
except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
    SJ_VERSION = "2.0.0" if hasattr(base.MemoryModule, "materialize_states") else "0.0.0.0.14"
#: 0 for the 0.0.0.0.x line, 2 for 2.x.
SJ_MAJOR: int = int(SJ_VERSION.split(".")[0])

MemoryModule = base.MemoryModule
StepModule = base.StepModule
IFNode = neuron.IFNode
#: The host's neuron base class; SJ's monitors, op counters and exchange code find neurons by it.
BaseNode = neuron.BaseNode
#: 2.x's IF node that starts at V0 = theta/2 (its channel-wise and LTB recipes use it); None on 0.14.
HalfThresholdIFNode = getattr(neuron, "HalfThresholdIFNode", None)
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


#: SpikingJelly packages that define whole networks (to be traced through), not building blocks.
_SJ_NETWORK_PACKAGES = ("spikingjelly.activation_based.ann2snn.sample_models",
                        "spikingjelly.activation_based.ann2snn.examples",
                        "spikingjelly.activation_based.model", "spikingjelly.activation_based.examples")


def is_spikingjelly_module(m: nn.Module) -> bool:
    """True for modules defined by SpikingJelly itself (its layers, nodes and containers).

    Networks SJ ships as samples or in its model zoo (``ann2snn.sample_models``' ``CNN`` and
    ``ResNet``'s ``BasicBlock``, ``activation_based.model``) are not building blocks: False.
    """
    mod = type(m).__module__
    return mod.startswith("spikingjelly.") and not mod.startswith(_SJ_NETWORK_PACKAGES)


# -- ann2snn ---------------------------------------------------------------------------------
def _import_ann2snn():
    """SpikingJelly's ``ann2snn`` package, or None where the host cannot provide it.

    0.0.0.0.14's ``ann2snn/__init__.py`` imports ``requests`` (only for ``download_url``), which
    SpikingJelly does not declare as a dependency; without it the whole package fails to import.
    Its converter and modules need nothing of the kind, so we register the package without running
    its ``__init__`` and import those submodules directly.
    """
    name = "spikingjelly.activation_based.ann2snn"
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if getattr(e, "name", None) != "requests":
            return None
    import os
    import sys
    import types
    sys.modules.pop(name, None)
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.join(os.path.dirname(base.__file__), "ann2snn")]
    pkg.__package__ = name
    sys.modules[name] = pkg
    try:
        pkg.modules = importlib.import_module(name + ".modules")
        pkg.converter = importlib.import_module(name + ".converter")
    except ImportError:
        sys.modules.pop(name, None)
        return None
    pkg.Converter = pkg.converter.Converter
    return pkg


ann2snn = _import_ann2snn()
#: SJ's ``Converter``: ``Converter(dataloader, mode=...)(ann)`` on 0.14,
#: ``Converter(recipe=...).convert(ann)`` on 2.x.
SJConverter = getattr(ann2snn, "Converter", None)
_ann2snn_modules = getattr(ann2snn, "modules", None)
if _ann2snn_modules is None and ann2snn is not None:
    _ann2snn_modules = importlib.import_module(ann2snn.__name__ + ".modules")
#: The scaler modules SJ's converters put around each IF node (a tuple of classes, maybe empty).
VOLTAGE_SCALERS: tuple = tuple(getattr(_ann2snn_modules, n) for n in ("VoltageScaler",
                                                                       "ChannelVoltageScaler")
                               if hasattr(_ann2snn_modules, n))
#: 2.x's recipe base class; None on 0.14, which converts with ``Converter(...)(ann)`` only.
FXConversionRecipe = getattr(ann2snn, "FXConversionRecipe", None)
RateCodingRecipe = getattr(ann2snn, "RateCodingRecipe", None)


def sample_models() -> dict:
    """``{name: constructor}`` for the ANN sample models the host ships (2.x; none on 0.14)."""
    found = {}
    for mod, attr, name in (("mnist_cnn", "CNN", "mnist_cnn"),
                            ("cifar10_resnet", "ResNet18", "cifar10_resnet18")):
        try:
            m = importlib.import_module(f"spikingjelly.activation_based.ann2snn.sample_models.{mod}")
        except ImportError:
            continue
        if hasattr(m, attr):
            found[name] = getattr(m, attr)
    return found


def sj_convert(ann: nn.Module, dataloader, mode: str = "99.9%") -> nn.Module:
    """Convert ``ann`` with SpikingJelly's own rate-coding converter, in the host's call style."""
    if SJConverter is None:
        raise RuntimeError(f"spikingjelly {SJ_VERSION} has no importable ann2snn.Converter")
    if RateCodingRecipe is not None:
        return SJConverter(recipe=RateCodingRecipe(dataloader=dataloader, mode=mode)).convert(ann)
    return SJConverter(dataloader=dataloader, mode=mode)(ann)


def make_if_node(cls=None, **kwargs) -> nn.Module:
    """A host IF node (``IFNode`` unless ``cls`` is given); ``backend=`` (removed in 2.0 with
    CuPy) is passed on 0.14 only."""
    cls = IFNode if cls is None else cls
    backend = kwargs.pop("backend", None)
    if backend is not None and SJ_MAJOR < 2:
        kwargs["backend"] = backend
    return cls(**kwargs)


# -- op counting -------------------------------------------------------------------------------
#: The source of the energies per operation below: 45 nm, 32-bit float.
ENERGY_SOURCE = ('M. Horowitz, "Computing\'s energy problem (and what we can do about it)", '
                 "ISSCC 2014")
#: Energy per operation in pJ, the one home of these numbers (:data:`ENERGY_SOURCE`): a
#: multiply-accumulate 4.6 pJ (3.7 + 0.9), an accumulate 0.9 pJ; SJ 2.x's ``op_counter`` states
#: the same figures and, where it exists, they are read from it.
E_MAC_PJ, E_AC_PJ = 4.6, 0.9
try:
    _op_counter = importlib.import_module("spikingjelly.activation_based.op_counter")
except ImportError:  # 0.0.0.0.14 has no op_counter
    _op_counter = None
else:
    _cfg = _op_counter.SimpleEnergyCostConfig.fp32()
    E_MAC_PJ, E_AC_PJ = float(_cfg.e_mac_pj), float(_cfg.e_ac_pj)
HAS_OP_COUNTER: bool = _op_counter is not None
#: SJ 2.x's ``op_counter`` package (SynOp/AC/MAC counters, energy profilers); None on 0.14.
op_counter = _op_counter


def op_counter_macs(module: nn.Module, x) -> "int | None":
    """MACs of ``module(x)`` counted by SJ 2.x's ``op_counter.MACCounter``; None on 0.14.

    ``MACCounter`` treats an op whose input or weight holds only 0s and 1s as spike-driven and
    counts 0 MACs for it; callers must pass analog tensors.
    """
    if _op_counter is None:
        return None
    import torch
    counter = _op_counter.MACCounter()
    with torch.no_grad(), _op_counter.DispatchCounterMode([counter]):
        module(x)
    return int(counter.get_total())


def make_voltage_scaler(cls, *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` for a SJ voltage scaler class; ``step_mode`` is dropped where the
    host's scaler (SJ 0.0.0.0.14's) takes none: it is stateless and runs in either mode."""
    if "step_mode" in kwargs and "step_mode" not in inspect.signature(cls).parameters:
        kwargs = {k: v for k, v in kwargs.items() if k != "step_mode"}
    return cls(*args, **kwargs)
