"""LayerNorm over the channels (features) of each position.

Finite network: ``h_c(i) = γ_c (z_c(i) − mean_c z(i)) / sqrt(var_c z(i) + ε) + β_c`` (ε = 1e-5,
as torch; γ = 1, β = 0 at initialisation when ``affine``). At infinite width the channel mean
of Gaussian pre-activations is 0 and their channel variance K11(i, i) (MATH.md section 6)::

    K'(i, j) = K(i, j) / sqrt(K11(i, i) K22(j, j)),   Θ'(i, j) = Θ(i, j) / sqrt(K11(i, i) K22(j, j))

and with ``affine`` the gradients of γ and β add ``K' + 1`` to Θ' — exact only when a weighted
layer follows before any activation (γ's gradient is the unit's own value, correlated with an
activation's derivative: ``Serial`` refuses an activation after it). ε is neglected (a relative
ε/K11 ≈ 1e-5 at unit variances). Only exact after a weighted layer: its input must have mean 0
(``Serial`` refuses it after an activation).
"""

from __future__ import annotations

import torch
from torch import nn

from ntkprior.arch.layers import Layer
from ntkprior.kernels import spatial

EPS = 1e-5


class LayerNormModule(nn.Module):
    """Normalises dim 1 (features of (n, d), channels of (n, C, *S))."""

    def __init__(self, channels: int, affine: bool, dtype: torch.dtype):
        super().__init__()
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(channels, dtype=dtype))
            self.bias = nn.Parameter(torch.zeros(channels, dtype=dtype))

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        out = (x - mean) / torch.sqrt(var + EPS)
        if self.affine:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    def extra_repr(self):
        return f"affine={self.affine}"


class LayerNorm(Layer):
    """LayerNorm over features/channels; ``affine=True`` adds torch's per-channel scale and shift."""

    kind = "norm"

    def __init__(self, affine: bool = False):
        if not isinstance(affine, bool):
            raise ValueError(f"LayerNorm: affine must be True or False, got {affine!r}")
        self.affine = affine

    def build_module(self, in_shape, generator, dtype):
        return LayerNormModule(in_shape[0], self.affine, dtype)

    def map_kernel(self, state):
        spatial.layer_norm(state)
        if self.affine:   # ∂h/∂γ_c = ẑ_c, ∂h/∂β_c = 1: Θ ← Θ + K + 1
            state.ntk.add_(state.cov).add_(1.0)
            if not state.diagonal:
                state.ntk1 = state.ntk1 + state.var1 + 1.0
            else:
                state.ntk1 = state.ntk
            state.sync_diagonal()

    def spec(self):
        return "layer_norm(affine=True)" if self.affine else "layer_norm"
