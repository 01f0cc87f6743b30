"""ntkprior: the Neural Tangent Kernel as an instrument for describing the prior of a deep network."""

__version__ = "0.1.0"
