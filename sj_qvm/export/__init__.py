"""Ways out of a converted QVM network to neuromorphic toolchains: sinabs (Speck / DYNAP-CNN),
a check of the DYNAP-CNN constraints, and what NIR 1.0.x can (not) state."""
from .dynapcnn import DYNAPCNN, DynapcnnCheck, check_dynapcnn
from .nir import NIR_REFUSAL, to_nir
from .sinabs_net import to_sinabs

__all__ = ["to_sinabs", "check_dynapcnn", "DynapcnnCheck", "DYNAPCNN", "to_nir", "NIR_REFUSAL"]
