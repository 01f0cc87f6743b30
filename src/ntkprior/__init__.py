"""ntkprior: the Neural Tangent Kernel as an instrument for describing the prior of a deep network.

Write an architecture once and get the finite PyTorch network, its exact infinite-width
NNGP and NTK, and (as they land) the empirical NTK, the prior over labelings, eigenmodes,
training dynamics, reports. See README.md and docs/.
"""

from .data import load_array
from .layers import (Abs, Dense, DenseModule, Elementwise, Erf, Gelu, Identity, Kernels, LeakyReLU,
                     ReLU, Serial, SiLU, Sigmoid, Sin, Softplus, Tanh, serial)
from .spec import SpecError, load_arch, parse_spec

__version__ = "0.1.0"

__all__ = [
    "Abs", "Dense", "DenseModule", "Elementwise", "Erf", "Gelu", "Identity", "Kernels", "LeakyReLU",
    "ReLU", "Serial", "SiLU", "Sigmoid", "Sin", "Softplus", "SpecError", "Tanh", "load_arch",
    "load_array", "parse_spec", "serial",
]
