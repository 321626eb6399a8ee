"""The SpikingJelly migration wing: quantize a plain-ReLU ANN, convert it in the call styles of
SJ's ``ann2snn``, and move SNNs between SJ's IF nodes and QVM's (the mapping table itself is core,
:mod:`sj_qvm.mapping`; ``sj_qvm.interop.mapping`` names the same module)."""
import sys

from .. import mapping
from ..mapping import MAPPING, to_qvm, to_spikingjelly
from .converter import Converter, QVMRecipe, neuron_factory
from .calibration import calibrate
from .quantize import finetune, quantize

sys.modules[__name__ + ".mapping"] = mapping  # ``import sj_qvm.interop.mapping`` still works

__all__ = ["quantize", "calibrate", "finetune", "Converter", "QVMRecipe", "to_qvm",
           "to_spikingjelly", "MAPPING", "neuron_factory"]
