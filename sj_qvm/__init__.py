"""sj-qvm: Quantization-Voltage Matching for exact ANN-to-SNN conversion in SpikingJelly."""
from . import analysis, streaming
from .convert import convert
from .interop import (Converter, QVMRecipe, finetune, neuron_factory, quantize, to_qvm,
                      to_spikingjelly)
from .neuron import QVMIFNode
from .quant import QuantReLU

__all__ = ["QuantReLU", "QVMIFNode", "convert", "quantize", "finetune", "Converter", "QVMRecipe",
           "to_qvm", "to_spikingjelly", "neuron_factory", "analysis", "streaming"]
__version__ = "0.1.0"
