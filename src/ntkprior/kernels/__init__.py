"""Kernels as numbers: the infinite-width kernel state (``state``), activation maps
(``activations``: closed forms and quadrature; ``fused``: the same arithmetic compiled, opt-in)
and the empirical NTK of any torch module (``empirical``, loaded on first use: it brings in
torch.func)."""

from ntkprior.kernels.activations import ActivationMap, ErfMap, PiecewiseLinearMap, QuadratureMap, derivative
from ntkprior.kernels.activations import GeluMap
from ntkprior.kernels.state import KernelState, dense_update, input_state
from ntkprior.kernels.fused import fused_enabled, set_fused

__all__ = ["ActivationMap", "ErfMap", "KernelState", "PiecewiseLinearMap", "QuadratureMap", "dense_update",
           "derivative", "input_state", "GeluMap", "set_fused", "fused_enabled"]
