"""Interop with SpikingJelly's ``ann2snn``: quantize a plain-ReLU ANN, convert it in SJ's call
styles, and move SNNs between SJ's IF nodes and QVM's."""
from .converter import Converter, QVMRecipe, neuron_factory
from .mapping import MAPPING, to_qvm, to_spikingjelly
from .calibration import calibrate
from .quantize import finetune, quantize

__all__ = ["quantize", "calibrate", "finetune", "Converter", "QVMRecipe", "to_qvm",
           "to_spikingjelly", "MAPPING", "neuron_factory"]
