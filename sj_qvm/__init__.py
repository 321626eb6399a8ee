"""sj-qvm: Quantization-Voltage Matching for exact ANN-to-SNN conversion in SpikingJelly."""
from .convert import convert
from .neuron import QVMIFNode
from .quant import QuantReLU

__all__ = ["QuantReLU", "QVMIFNode", "convert"]
__version__ = "0.1.0"
