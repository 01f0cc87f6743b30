"""From the user's own torch module to the architecture whose infinite-width kernels describe it.

``from_torch(module, input_shape)`` reads an ``nn.Sequential`` (nested Sequentials, and
:class:`Residual` for skip connections) of ``nn.Linear``, ``nn.Conv1d/2d``, activations
(``nn.ReLU``, ``LeakyReLU``, ``GELU``, ``Tanh``, ``Sigmoid``, ``SiLU``, ``Softplus``,
``Identity``), ``nn.Flatten``, ``nn.AvgPool1d/2d``, ``nn.AdaptiveAvgPool1d/2d(1)``,
``nn.LayerNorm`` (on vectors) and ``nn.Dropout`` (the identity at evaluation), and returns the
architecture in the *standard* parameterisation at the module's own widths, with
``weight_std``/``bias_std`` those of torch's default initialisation::

    weight ~ U(−1/sqrt(fan_in), 1/sqrt(fan_in)):  Var = 1/(3·fan_in), so σ_w = 1/sqrt(3)
    bias   ~ U(−1/sqrt(fan_in), 1/sqrt(fan_in)):  σ_b = 1/sqrt(3·fan_in)

(``kaiming_uniform_(a=sqrt(5))``; fan_in = in_features, or in_channels·|kernel| for a conv).
With ``from_parameters=True`` the stds are instead estimated from the module's parameters,
``σ_w² = fan_in·mean(W²)``, ``σ_b² = mean(b²)``, and their standard errors are stated in
``arch.estimates`` (path -> (σ_w, its s.e., σ_b, its s.e.)).

Uniform is not Gaussian. The kernel maps match second moments, which is exact at infinite width
for every layer fed by a wide layer (its pre-activations are sums of many independent terms,
Gaussian by the central limit theorem), and an approximation for the first layer's
pre-activations when the input has few features: they are sums of d uniform terms. Measured
(``benchmarks/bench_conv.py --uniform``, ``docs/architectures.md``): for a one-hidden-layer ReLU
network at infinite width, the Gaussian-moment NNGP differs from the uniform-init one by 2.5 %
(relative Frobenius; 12 % on the worst entry) at d = 1, 1.4 % at d = 2, 0.55 % at d = 4 and
0.25 % at d = 16.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkprior.arch import layers as L
from ntkprior.arch.attention import read_attention_module
from ntkprior.arch.branching import Sum
from ntkprior.arch.conv import Conv
from ntkprior.arch.normalization import LayerNorm
from ntkprior.arch.pooling import AvgPool, Flatten, GlobalAvgPool


class Residual(nn.Module):
    """``shortcut(x) + alpha · block(x)`` (the identity shortcut by default): the skip connection
    that :func:`from_torch` reads as ``residual``. Exact when the sum stays Gaussian (the
    pre-activation form, e.g. ``Residual(nn.Sequential(nn.ReLU(), nn.Linear(m, m)))``)."""

    def __init__(self, block: nn.Module, shortcut: nn.Module | None = None, alpha: float = 1.0):
        super().__init__()
        self.block = block
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.alpha = float(alpha)

    def forward(self, x):
        return self.shortcut(x) + self.alpha * self.block(x)

    def extra_repr(self):
        return f"alpha={self.alpha}"


def from_torch(module: nn.Module, input_shape, from_parameters: bool = False) -> L.Serial:
    """The architecture whose infinite-width kernels describe networks initialised like ``module``.

    ``input_shape``: the per-sample input shape, d for vectors or (C, L) / (C, H, W). See the
    module docstring for what is read, the initialisation and its uniform-vs-Gaussian caveat.
    A module without a closed-form kernel raises a ValueError naming its path.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(from_parameters, bool):
        raise ValueError(f"from_parameters: must be True or False, got {from_parameters!r}")
    reader = _Reader(from_parameters)
    layers, _ = reader.read(module, L._input_shape(input_shape), "")
    if not layers:
        raise ValueError("module: holds no layer with a kernel (only identities); nothing to describe")
    arch = L.serial(layers)
    if from_parameters:
        arch.estimates = reader.estimates
    return arch


_ACTIVATIONS = {nn.ReLU: L.ReLU, nn.Tanh: L.Tanh, nn.Sigmoid: L.Sigmoid, nn.SiLU: L.SiLU}
_SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


class _Reader:
    def __init__(self, from_parameters: bool):
        self.from_parameters = from_parameters
        self.estimates: dict = {}

    def read(self, m: nn.Module, shape: tuple, path: str) -> tuple[list, tuple]:
        """(layers, output shape) of module ``m`` at ``path`` for per-sample inputs of ``shape``."""
        name = path or type(m).__name__
        if isinstance(m, nn.Sequential):
            out = []
            for child_name, child in m.named_children():
                layers, shape = self.read(child, shape, f"{path}.{child_name}" if path else child_name)
                out += layers
            return out, shape
        if isinstance(m, Residual):
            block, block_shape = self.read(m.block, shape, f"{name}.block")
            short, short_shape = self.read(m.shortcut, shape, f"{name}.shortcut")
            layer = Sum([short, block], "sum", (1.0, m.alpha))
            return [layer], layer.out_shape(shape, name)
        layer = self.layer(m, shape, name)
        if layer is None:
            return [], shape
        return [layer], layer.out_shape(shape, name)

    def layer(self, m: nn.Module, shape: tuple, name: str) -> L.Layer | None:
        kind = type(m)
        if isinstance(m, _SKIPPED):
            return None
        if kind in _ACTIVATIONS:
            return _ACTIVATIONS[kind]()
        if kind is nn.LeakyReLU:
            return L.LeakyReLU(m.negative_slope)
        if kind is nn.GELU and m.approximate == "none":
            return L.Gelu()
        if kind is nn.Softplus and m.beta == 1.0:
            return L.Softplus()
        if kind is nn.Linear:
            return self.linear(m, shape, name)
        if kind in (nn.Conv1d, nn.Conv2d):
            return self.conv(m, shape, name)
        if kind is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"{name}: nn.Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not "
                                 "supported; only nn.Flatten() (start_dim=1) has a kernel here")
            return Flatten() if len(shape) > 1 else None      # already vectors: a no-op
        if kind in (nn.AvgPool1d, nn.AvgPool2d):
            return self.avg_pool(m, name)
        if kind in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            if any(s != 1 for s in size):
                raise ValueError(f"{name}: nn.{kind.__name__}({m.output_size}) has no closed-form kernel here; "
                                 "only output_size=1 (global average pooling)")
            return GlobalAvgPool()
        if kind is nn.LayerNorm:
            return self.layer_norm(m, shape, name)
        attention = read_attention_module(m, shape, name, self.from_parameters)
        if attention is not None:
            return attention
        raise ValueError(f"{name}: nn.{kind.__name__} has no closed-form kernel; use "
                         "ntp.empirical_ntk(module, x) for this model")

    def stds(self, m: nn.Module, fan_in: int, name: str) -> tuple[float, float | None]:
        """(σ_w, σ_b) of torch's default initialisation, or estimated from the parameters."""
        has_bias = m.bias is not None
        if not self.from_parameters:
            return 1.0 / math.sqrt(3.0), (1.0 / math.sqrt(3.0 * fan_in) if has_bias else None)
        w2 = m.weight.detach().double().pow(2).reshape(-1)
        weight_std, weight_se = _std_estimate(w2, fan_in)
        bias_std = bias_se = None
        if has_bias:
            bias_std, bias_se = _std_estimate(m.bias.detach().double().pow(2).reshape(-1), 1)
        self.estimates[name] = (weight_std, weight_se, bias_std, bias_se)
        return weight_std, bias_std

    def linear(self, m: nn.Linear, shape: tuple, name: str) -> L.Dense:
        if len(shape) == 1 and shape[0] != m.in_features:
            raise ValueError(f"{name}: nn.Linear expects {m.in_features} features but receives {shape[0]}; "
                             "check input_shape")
        weight_std, bias_std = self.stds(m, m.in_features, name)
        return L.Dense(m.out_features, weight_std, bias_std, parameterization="standard")

    def conv(self, m: nn.Conv1d | nn.Conv2d, shape: tuple, name: str) -> Conv:
        nd = len(m.kernel_size)
        what = f"nn.{type(m).__name__}"
        if len(shape) != nd + 1 or shape[0] != m.in_channels:
            raise ValueError(f"{name}: {what} expects inputs (n, {m.in_channels}, {'L' if nd == 1 else 'H, W'}) "
                             f"but receives per-sample shape {shape}; check input_shape")
        if m.groups != 1 or any(d != 1 for d in m.dilation):
            raise ValueError(f"{name}: {what} with groups or dilation has no closed-form kernel here; use "
                             "ntp.empirical_ntk(module, x) for this model")
        k = m.kernel_size
        if m.padding_mode == "circular":
            if any(p != (q - 1) // 2 or q % 2 == 0 for p, q in zip(m.padding, k)):
                raise ValueError(f"{name}: {what} with circular padding is supported for odd kernels padded "
                                 "(kernel_size - 1) // 2 (the 'circular' padding of ntp.Conv)")
            padding = "circular"
        elif m.padding_mode != "zeros":
            raise ValueError(f"{name}: {what} with padding_mode={m.padding_mode!r} has no closed-form kernel "
                             "here; use padding_mode='zeros' or 'circular'")
        elif isinstance(m.padding, str):
            padding = m.padding
        else:
            padding = _compact(m.padding)
        weight_std, bias_std = self.stds(m, m.in_channels * math.prod(k), name)
        return Conv(m.out_channels, _compact(k), _compact(m.stride), padding, weight_std, bias_std,
                    parameterization="standard")

    def avg_pool(self, m, name: str) -> AvgPool:
        padding = m.padding if isinstance(m.padding, int) else max(m.padding)
        if padding != 0 or m.ceil_mode or getattr(m, "divisor_override", None) is not None:
            raise ValueError(f"{name}: nn.{type(m).__name__} with padding, ceil_mode or divisor_override is not "
                             "supported here; use padding=0")
        kernel, stride = _compact(m.kernel_size), _compact(m.stride)
        return AvgPool(kernel, None if stride == kernel else stride)

    def layer_norm(self, m: nn.LayerNorm, shape: tuple, name: str) -> LayerNorm:
        if len(shape) != 1 or tuple(m.normalized_shape) != shape:
            raise ValueError(f"{name}: nn.LayerNorm{tuple(m.normalized_shape)} on per-sample shape {shape} does "
                             "not normalise the features of vectors; only LayerNorm(d) on (n, d) has a kernel here")
        if m.elementwise_affine and m.bias is None:
            raise ValueError(f"{name}: nn.LayerNorm(bias=False) is not supported; use bias=True or "
                             "elementwise_affine=False")
        return LayerNorm(affine=bool(m.elementwise_affine))


def _compact(value):
    """An int for an int or a tuple of equal ints; else a list (as the spec grammar writes it)."""
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else list(value)


def _std_estimate(squares: torch.Tensor, fan_in: int) -> tuple[float, float]:
    """sqrt(fan_in · mean(θ²)) and its standard error (delta method: s.e.(σ) = σ/2 · s.e.(mean)/mean)."""
    mean = float(squares.mean())
    if mean == 0.0:
        return 0.0, 0.0
    se_mean = float(squares.std()) / math.sqrt(squares.numel()) if squares.numel() > 1 else float("inf")
    std = math.sqrt(fan_in * mean)
    return std, 0.5 * std * se_mean / mean
