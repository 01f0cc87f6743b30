"""Convolutions over signals and images: one description -> the torch module and the kernel map.

``Conv(out_channels, kernel_size, stride, padding, weight_std, bias_std, parameterization)``
for inputs in PyTorch layout (n, C, L), (n, C, H, W) (and (n, C, D, H, W)): the number of
spatial dimensions is read from the input. NTK parameterisation (Novak et al. 2019)::

    z = (σ_w / sqrt(C_in·|F|)) · conv(W, x) + σ_b · b,     W, b ~ N(0, 1)

standard: ``z = conv(W, x) + b`` with W ~ N(0, σ_w²/(C_in·|F|)), b ~ N(0, σ_b²). Its kernel
map (MATH.md section 6): ``K'(i, j) = σ_w² mean_δ K̃(s·i + δ, s·j + δ) + σ_b²`` then the Dense
arithmetic with fan-in C_in·|F| (``ntkprior.kernels.spatial.conv_positions``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkprior import kernels as km
from ntkprior.arch.layers import PARAMETERIZATIONS, Layer, _check_std, init_parameters
from ntkprior.kernels import spatial

PADDINGS = ("same", "valid", "circular")


def as_tuple(value, nd: int, name: str, where: str, minimum: int) -> tuple:
    """An int or a sequence of ``nd`` ints (each >= ``minimum``) as a tuple of ``nd`` ints."""
    values = (value,) * nd if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(values, (tuple, list)) or len(values) != nd
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values)):
        raise ValueError(f"{where}: {name} must be an integer >= {minimum} or {nd} of them (one per spatial "
                         f"dimension of the input), got {value!r}")
    return tuple(values)


def check_spec_int(value, name: str, layer: str, minimum: int):
    """Validate an int-or-sequence argument at construction (its length is checked against the input later)."""
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(values, (tuple, list)) or not values
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values)):
        raise ValueError(f"{layer}: {name} must be an integer >= {minimum} or a list of them, got {value!r}")
    return tuple(value) if isinstance(value, list) else value


def spec_value(value) -> str:
    """An int or a tuple written so the spec grammar reads it back (tuples as lists)."""
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def padding_amounts(padding, kernel_size: tuple, nd: int, where: str) -> tuple[tuple, bool]:
    """(lo, hi) zeros per spatial axis and whether they wrap: SAME pads (k−1)//2 before and the
    rest after (as torch and TensorFlow do), CIRCULAR the same amounts wrapped, an int p pads p."""
    if padding in ("same", "circular"):
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size), padding == "circular"
    if padding == "valid":
        return ((0, 0),) * nd, False
    amounts = as_tuple(padding, nd, "padding", where, 0)
    return tuple((p, p) for p in amounts), False


def window_geometry(in_shape: tuple, kernel_size, stride, padding, where: str, what: str):
    """Check a window (conv filter or pooling) against the input; return (kernel, stride, pads,
    circular, output spatial shape)."""
    if len(in_shape) < 2:
        raise ValueError(f"{where} ({what}): needs signals (n, C, L) or images (n, C, H, W), but its input "
                         f"is vectors of {in_shape[0]} features; pass inputs with channels and positions, "
                         f"e.g. x.reshape(n, 1, {in_shape[0]}) for one-channel signals")
    spatial_shape = tuple(in_shape[1:])
    nd = len(spatial_shape)
    ks = as_tuple(kernel_size, nd, "kernel_size", f"{where} ({what})", 1)
    st = as_tuple(stride, nd, "stride", f"{where} ({what})", 1)
    pads, circular = padding_amounts(padding, ks, nd, f"{where} ({what})")
    out = []
    for n, k, s, (lo, hi) in zip(spatial_shape, ks, st, pads):
        if circular and max(lo, hi) > n:
            raise ValueError(f"{where} ({what}): circular padding of {max(lo, hi)} needs an input of at least "
                             f"that length, got {n}; use a smaller kernel_size")
        if k > n + lo + hi:
            raise ValueError(f"{where} ({what}): the window of {k} is larger than the (padded) input of "
                             f"{n + lo + hi} positions along a spatial axis of {spatial_shape}; use a smaller "
                             "kernel_size, or padding='same'")
        if s > n:
            raise ValueError(f"{where} ({what}): the stride {s} does not fit an input of {n} positions along "
                             f"a spatial axis of {spatial_shape}; use a stride <= {n}")
        out.append((n + lo + hi - k) // s + 1)
    return ks, st, pads, circular, tuple(out)


def pad_input(x: torch.Tensor, pads: tuple, circular: bool) -> torch.Tensor:
    """Pad the spatial axes of (n, C, *S) with (lo, hi) per axis, zeros or wrapped."""
    if not any(lo or hi for lo, hi in pads):
        return x
    flat = [v for lo_hi in reversed(pads) for v in lo_hi]   # F.pad wants the last axis first
    return nn.functional.pad(x, flat, mode="circular" if circular else "constant")


_CONV = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}


class ConvModule(nn.Module):
    """A convolution with an explicit parameterisation (see the module docstring); padding is
    applied explicitly (zeros or circular) before a VALID convolution, so strided SAME works."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple, stride: tuple, pads: tuple,
                 circular: bool, weight_std: float, bias_std: float | None, parameterization: str,
                 generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.stride, self.pads, self.circular = stride, pads, circular
        init_parameters(self, (out_channels, in_channels, *kernel_size), in_channels * math.prod(kernel_size),
                        weight_std, bias_std, parameterization, generator, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = self.weight.ndim - 2
        out = _CONV[nd](pad_input(x, self.pads, self.circular), self.weight, stride=self.stride)
        out = out * self.weight_scale
        if self.bias is not None:
            out = out + self.bias_scale * self.bias.view(1, -1, *([1] * nd))
        return out

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={self.stride}, pads={self.pads}, circular={self.circular}, weight_std={self.weight_std}, "
                f"bias_std={self.bias_std}, parameterization={self.parameterization!r}")


class Conv(Layer):
    """A convolution of ``out_channels`` filters over signals (n, C, L) or images (n, C, H, W).

    ``kernel_size`` and ``stride``: an int (every spatial axis) or one per axis. ``padding``:
    ``"same"`` (zeros, output length ceil(L/stride)), ``"valid"`` (none), ``"circular"``
    (wrapped: the kernel is invariant to circular shifts) or an int p of zeros each side.
    ``weight_std`` σ_w, ``bias_std`` σ_b (None: no bias), ``parameterization`` "ntk" or
    "standard" with fan-in C_in·|F| — as Dense (MATH.md sections 1 and 6).
    """

    kind = "weighted"

    def __init__(self, out_channels: int, kernel_size=3, stride=1, padding="same", weight_std: float = 1.0,
                 bias_std: float | None = 0.0, parameterization: str = "ntk"):
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"Conv: out_channels must be a positive integer, got {out_channels!r}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"Conv: parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        if not (padding in PADDINGS or isinstance(padding, (int, list, tuple)) and not isinstance(padding, bool)):
            raise ValueError(f"Conv: padding must be one of {PADDINGS} or an int, got {padding!r}")
        self.out_channels = out_channels
        self.kernel_size = check_spec_int(kernel_size, "kernel_size", "Conv", 1)
        self.stride = check_spec_int(stride, "stride", "Conv", 1)
        self.padding = padding if isinstance(padding, str) else check_spec_int(padding, "padding", "Conv", 0)
        self.weight_std = _check_std(weight_std, "weight_std", "Conv")
        self.bias_std = _check_std(bias_std, "bias_std", "Conv", allow_none=True)
        self.parameterization = parameterization

    def geometry(self, in_shape: tuple, where: str = "conv"):
        return window_geometry(in_shape, self.kernel_size, self.stride, self.padding, where, self.spec())

    def out_shape(self, in_shape, where):
        return (self.out_channels,) + self.geometry(in_shape, where)[4]

    def build_module(self, in_shape, generator, dtype):
        ks, st, pads, circular, _ = self.geometry(in_shape)
        return ConvModule(in_shape[0], self.out_channels, ks, st, pads, circular, self.weight_std,
                          self.bias_std, self.parameterization, generator, dtype)

    def map_kernel(self, state):
        ks, st, pads, circular, _ = self.geometry((state.width,) + state.shape)
        spatial.conv_positions(state, ks, st, pads, circular)
        state.width *= math.prod(ks)          # the fan-in C_in·|F| of the standard parameterisation
        bias_var = self.bias_std ** 2 if self.bias_std is not None else 0.0
        km.dense_update(state, self.weight_std ** 2, bias_var, standard=self.parameterization == "standard",
                        has_bias=self.bias_std is not None)
        state.width = self.out_channels

    def with_width(self, width):
        return Conv(width, self.kernel_size, self.stride, self.padding, self.weight_std, self.bias_std,
                    self.parameterization)

    def spec(self) -> str:
        args = [str(self.out_channels), spec_value(self.kernel_size)]
        if self.stride != 1:
            args.append(f"stride={spec_value(self.stride)}")
        if self.padding != "same":
            args.append(f"padding={spec_value(self.padding)}")
        if self.weight_std != 1.0:
            args.append(f"weight_std={self.weight_std!r}")
        if self.bias_std != 0.0:
            args.append(f"bias_std={self.bias_std!r}")
        if self.parameterization != "ntk":
            args.append(f"parameterization={self.parameterization!r}")
        return f"conv({', '.join(args)})"
