"""Pooling and flattening: fixed linear maps over positions (no parameters).

Kernel maps (MATH.md section 6): average pooling is a fixed linear map A, so both positions
are averaged independently, ``K' = A K Aᵀ`` (it reads off-diagonal positions: the state
carries the full position covariance up to it); global average pooling ``K = mean_{i,j}
K(i, j)``; ``Flatten`` followed by Dense (fan-in C·positions, as in torch) ``K = mean_i K(i, i)``.
"""

from __future__ import annotations

import math

from torch import nn

from ntkprior.arch.conv import check_spec_int, pad_input, spec_value, window_geometry
from ntkprior.arch.layers import Layer
from ntkprior.kernels import spatial

_POOL = {1: nn.functional.avg_pool1d, 2: nn.functional.avg_pool2d, 3: nn.functional.avg_pool3d}


class AvgPoolModule(nn.Module):
    """Average pooling; padded zeros count in the average (torch's ``count_include_pad=True``)."""

    def __init__(self, kernel_size: tuple, stride: tuple, pads: tuple):
        super().__init__()
        self.kernel_size, self.stride, self.pads = kernel_size, stride, pads

    def forward(self, x):
        return _POOL[len(self.kernel_size)](pad_input(x, self.pads, False), self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pads={self.pads}"


class AvgPool(Layer):
    """Average pooling over windows of ``kernel_size`` positions every ``stride`` (default: the
    window, non-overlapping); ``padding`` "valid" (none) or "same" (zeros, counted in the mean)."""

    kind = "linear"
    needs_full = True

    def __init__(self, kernel_size=2, stride=None, padding: str = "valid"):
        if padding not in ("valid", "same"):
            raise ValueError(f"AvgPool: padding must be 'valid' or 'same', got {padding!r}")
        self.kernel_size = check_spec_int(kernel_size, "kernel_size", "AvgPool", 1)
        self.stride = None if stride is None else check_spec_int(stride, "stride", "AvgPool", 1)
        self.padding = padding

    def geometry(self, in_shape, where="avg_pool"):
        stride = self.kernel_size if self.stride is None else self.stride
        return window_geometry(in_shape, self.kernel_size, stride, self.padding, where, self.spec())

    def out_shape(self, in_shape, where):
        return (in_shape[0],) + self.geometry(in_shape, where)[4]

    def build_module(self, in_shape, generator, dtype):
        ks, st, pads, _, _ = self.geometry(in_shape)
        return AvgPoolModule(ks, st, pads)

    def map_kernel(self, state):
        ks, st, pads, _, _ = self.geometry((state.width,) + state.shape)
        spatial.pool_positions(state, ks, st, pads)

    def spec(self):
        args = [spec_value(self.kernel_size)]
        if self.stride is not None:
            args.append(f"stride={spec_value(self.stride)}")
        if self.padding != "valid":
            args.append(f"padding={self.padding!r}")
        return f"avg_pool({', '.join(args)})"


class _Reduce(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def forward(self, x):
        return x.flatten(2).mean(-1) if self.how == "mean" else x.flatten(1)

    def extra_repr(self):
        return self.how


def _needs_positions(layer: Layer, in_shape: tuple, where: str) -> None:
    if len(in_shape) < 2:
        raise ValueError(f"{where} ({layer.spec()}): needs signals (n, C, L) or images (n, C, H, W), but its "
                         f"input is already vectors of {in_shape[0]} features; remove it")


class GlobalAvgPool(Layer):
    """The mean over all positions of each channel: (n, C, *S) -> (n, C)."""

    kind = "linear"
    needs_full = True

    def out_shape(self, in_shape, where):
        _needs_positions(self, in_shape, where)
        return (in_shape[0],)

    def build_module(self, in_shape, generator, dtype):
        return _Reduce("mean")

    def map_kernel(self, state):
        spatial.global_pool(state)

    def spec(self):
        return "global_avg_pool"


class Flatten(Layer):
    """(n, C, *S) -> (n, C·P) in torch's order; the Dense after it has fan-in C·P."""

    kind = "linear"

    def out_shape(self, in_shape, where):
        _needs_positions(self, in_shape, where)
        return (math.prod(in_shape),)

    def build_module(self, in_shape, generator, dtype):
        return _Reduce("flatten")

    def map_kernel(self, state):
        spatial.flatten(state)

    def spec(self):
        return "flatten"
