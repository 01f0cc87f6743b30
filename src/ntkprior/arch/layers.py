"""Layer descriptions: write an architecture once, get the finite network and its kernels.

Each layer knows two things: how to build its torch module (with the exact
parameterisation and initialisation of MATH.md section 1), and how it maps the
infinite-width kernel state (``ntkprior.kernels``). ``serial(...)`` chains layers into
an :class:`Serial` architecture::

    arch = serial(Dense(512, weight_std=1.5, bias_std=0.05), ReLU(), Dense(1))
    k = arch.kernel(x)                  # k.nngp, k.ntk  (n, n) float64
    net = arch.build(in_features=10, seed=0)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ntkprior import kernels as km
from ntkprior.data import DEFAULT_DTYPE, as_inputs, check_allocation, check_same_features, parse_memory

PARAMETERIZATIONS = ("ntk", "standard")
#: Largest layer width and quadrature degree accepted (sizes beyond them are typing errors).
MAX_WIDTH, MAX_DEGREE = 10**9, 1000


def _check_std(value, name: str, layer: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{layer}: {name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{layer}: {name} must be >= 0 (it is a standard deviation), got {value!r}")
    return float(value)


class Layer:
    """Base class: a layer description. Subclasses implement ``module``, ``map_kernel``, ``spec``."""

    def out_width(self, in_width: int) -> int:
        return in_width

    def module(self, in_width: int, generator: torch.Generator, dtype: torch.dtype) -> nn.Module:
        raise NotImplementedError

    def map_kernel(self, state: km.KernelState) -> None:
        raise NotImplementedError

    def spec(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.spec()

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.spec())


class DenseModule(nn.Module):
    """A fully-connected layer with an explicit parameterisation (MATH.md section 1).

    NTK parameterisation: ``z = (σ_w/sqrt(n_in)) W x + σ_b b`` with W, b ~ N(0, 1).
    Standard: ``z = W x + b`` with W ~ N(0, σ_w²/n_in), b ~ N(0, σ_b²).
    ``bias`` is None when the layer has no bias parameter.
    """

    def __init__(self, in_features: int, out_features: int, weight_std: float, bias_std: float | None,
                 parameterization: str, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_std, self.bias_std = weight_std, bias_std
        self.parameterization = parameterization
        w = torch.randn(out_features, in_features, generator=generator, dtype=dtype)
        b = torch.randn(out_features, generator=generator, dtype=dtype) if bias_std is not None else None
        if parameterization == "standard":
            w = w * (weight_std / math.sqrt(in_features))
            b = b * bias_std if b is not None else None
            self.weight_scale, self.bias_scale = 1.0, 1.0
        else:
            self.weight_scale = weight_std / math.sqrt(in_features)
            self.bias_scale = bias_std if bias_std is not None else 0.0
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b) if b is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(x, self.weight) * self.weight_scale
        if self.bias is not None:
            out = out + self.bias_scale * self.bias
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight_std={self.weight_std}, bias_std={self.bias_std}, "
                f"parameterization={self.parameterization!r}")


class Dense(Layer):
    """A fully-connected layer of ``out_features`` units.

    ``weight_std`` σ_w and ``bias_std`` σ_b as in MATH.md section 1; ``bias_std=None``
    means no bias parameter at all. ``parameterization`` is ``"ntk"`` (default; Jacot et
    al. 2018) or ``"standard"`` (the NTK then grows with width; Sohl-Dickstein et al. 2020).
    """

    def __init__(self, out_features: int, weight_std: float = 1.0, bias_std: float | None = 0.0,
                 parameterization: str = "ntk"):
        if isinstance(out_features, bool) or not isinstance(out_features, int) or not 1 <= out_features <= MAX_WIDTH:
            raise ValueError(f"Dense: out_features must be a positive integer (at most {MAX_WIDTH:.0e}), "
                             f"got {out_features!r}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"Dense: parameterization must be one of {PARAMETERIZATIONS}, "
                             f"got {parameterization!r}")
        self.out_features = out_features
        self.weight_std = _check_std(weight_std, "weight_std", "Dense")
        self.bias_std = _check_std(bias_std, "bias_std", "Dense", allow_none=True)
        self.parameterization = parameterization

    def out_width(self, in_width: int) -> int:
        return self.out_features

    def module(self, in_width, generator, dtype):
        check_allocation(in_width * self.out_features * torch.empty((), dtype=dtype).element_size(), "Dense",
                         f"the {self.out_features} x {in_width} weight matrix", "use a smaller width")
        return DenseModule(in_width, self.out_features, self.weight_std, self.bias_std,
                           self.parameterization, generator, dtype)

    def map_kernel(self, state):
        bias_var = self.bias_std ** 2 if self.bias_std is not None else 0.0
        km.dense_update(state, self.weight_std ** 2, bias_var,
                        standard=self.parameterization == "standard",
                        has_bias=self.bias_std is not None)
        state.width = self.out_features

    def with_out_features(self, out_features: int) -> "Dense":
        return Dense(out_features, self.weight_std, self.bias_std, self.parameterization)

    def spec(self) -> str:
        args = [str(self.out_features)]
        if self.weight_std != 1.0:
            args.append(f"weight_std={self.weight_std!r}")
        if self.bias_std != 0.0:
            args.append(f"bias_std={self.bias_std!r}")
        if self.parameterization != "ntk":
            args.append(f"parameterization={self.parameterization!r}")
        return f"dense({', '.join(args)})"


class ElementwiseModule(nn.Module):
    """Applies an elementwise function; ``name`` is shown in the module's repr."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str):
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class Activation(Layer):
    """An elementwise nonlinearity φ with its kernel map (``ntkprior.kernels``)."""

    name = "activation"

    def torch_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def kernel_map(self) -> km.ActivationMap:
        raise NotImplementedError

    def module(self, in_width, generator, dtype):
        return ElementwiseModule(self.torch_fn(), self.spec())

    def map_kernel(self, state):
        self.kernel_map().apply(state)

    def spec(self) -> str:
        return self.name


class _PiecewiseLinear(Activation):
    """φ(x) = a·min(x, 0) + b·max(x, 0) with an arc-cosine closed form."""

    a, b = 0.0, 1.0

    def kernel_map(self):
        return km.PiecewiseLinearMap(self.a, self.b)


class ReLU(_PiecewiseLinear):
    """φ(x) = max(x, 0). Closed form (arc-cosine kernel of degree 1, Cho & Saul 2009)."""

    name = "relu"

    def torch_fn(self):
        return torch.relu


class LeakyReLU(_PiecewiseLinear):
    """φ(x) = max(x, 0) + negative_slope·min(x, 0). Closed form."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        self.a = _check_float(negative_slope, "negative_slope", "LeakyReLU")

    def torch_fn(self):
        return functools.partial(torch.nn.functional.leaky_relu, negative_slope=self.a)

    def spec(self):
        return f"leaky_relu({self.a!r})"


class Abs(_PiecewiseLinear):
    """φ(x) = |x|. Closed form."""

    name, a = "abs", -1.0

    def torch_fn(self):
        return torch.abs


class Identity(_PiecewiseLinear):
    """φ(x) = x (a linear network). T = K, T' = 1."""

    name, a = "identity", 1.0

    def torch_fn(self):
        return torch.nn.Identity()


class Erf(Activation):
    """φ(x) = a·erf(b·x) + c, with the closed form of Williams (1997)."""

    name = "erf"

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a = _check_float(a, "a", "Erf")
        self.b = _check_float(b, "b", "Erf")
        self.c = _check_float(c, "c", "Erf")

    def torch_fn(self):
        a, b, c = self.a, self.b, self.c
        return lambda x: a * torch.erf(b * x) + c

    def kernel_map(self):
        return km.ErfMap(self.a, self.b, self.c)

    def spec(self):
        if (self.a, self.b, self.c) == (1.0, 1.0, 0.0):
            return "erf"
        return f"erf(a={self.a!r}, b={self.b!r}, c={self.c!r})"


class Elementwise(Activation):
    """Any elementwise φ, with kernels by Gauss–Hermite quadrature of ``degree`` nodes per axis.

    ``fn`` maps a tensor to a tensor of the same shape, elementwise. ``derivative`` is φ'
    (by autograd when omitted). Quadrature is accurate for smooth φ (degree 25-60);
    prefer the closed-form layers for ReLU-like functions.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], derivative=None, *,
                 degree: int = 60, name: str | None = None):
        if not callable(fn):
            raise ValueError(f"Elementwise: fn must be a callable tensor -> tensor, got {fn!r}")
        if isinstance(degree, bool) or not isinstance(degree, int) or not 2 <= degree <= MAX_DEGREE:
            raise ValueError(f"Elementwise: degree must be an integer from 2 to {MAX_DEGREE}, got {degree!r}")
        probe = torch.linspace(-2.0, 2.0, 5, dtype=DEFAULT_DTYPE)
        try:
            out = fn(probe)
        except Exception as exc:
            raise ValueError(f"Elementwise: fn failed on a tensor input ({exc}); "
                             "it must accept and return torch tensors") from None
        if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
            raise ValueError("Elementwise: fn must return a tensor of the same shape as its input "
                             "(an elementwise function)")
        self.fn, self.derivative, self.degree = fn, derivative, degree
        self.name = name or getattr(fn, "__name__", "elementwise")

    def torch_fn(self):
        return self.fn

    def kernel_map(self):
        return km.QuadratureMap(self.fn, self.derivative, self.degree)

    def spec(self):
        return self.name if self.degree == 60 else f"{self.name}(degree={self.degree})"


def _named_elementwise(name: str, fn, derivative, doc: str):
    """A named activation layer computed by quadrature (used for tanh, gelu, ...)."""

    def __init__(self, degree: int = 60):
        Elementwise.__init__(self, fn, derivative, degree=degree, name=name)

    return type(name.capitalize() if name != "silu" else "SiLU", (Elementwise,),
                {"__init__": __init__, "__doc__": doc, "name": name})


def _gelu_derivative(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


Tanh = _named_elementwise("tanh", torch.tanh, lambda x: 1.0 - torch.tanh(x) ** 2,
                          "φ = tanh, kernels by Gauss–Hermite quadrature.")
Sigmoid = _named_elementwise("sigmoid", torch.sigmoid,
                             lambda x: torch.sigmoid(x) * (1.0 - torch.sigmoid(x)),
                             "φ = logistic sigmoid, kernels by quadrature.")
Softplus = _named_elementwise("softplus", torch.nn.functional.softplus, torch.sigmoid,
                              "φ = log(1 + eˣ), kernels by quadrature.")
SiLU = _named_elementwise("silu", torch.nn.functional.silu,
                          lambda x: torch.sigmoid(x) * (1.0 + x * (1.0 - torch.sigmoid(x))),
                          "φ = x·sigmoid(x) (swish), kernels by quadrature.")
Sin = _named_elementwise("sin", torch.sin, torch.cos, "φ = sin, kernels by quadrature.")
Gelu = _named_elementwise("gelu", torch.nn.functional.gelu, _gelu_derivative,
                          "φ = x·Φ(x) (exact GELU), kernels by Gauss–Hermite quadrature.")


def _check_float(value, name: str, layer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{layer}: {name} must be a finite number, got {value!r}")
    return float(value)


@dataclass
class Kernels:
    """Infinite-width kernels for one output unit: ``nngp`` K and ``ntk`` Θ (torch float64)."""

    nngp: torch.Tensor
    ntk: torch.Tensor

    def __getitem__(self, kind: str) -> torch.Tensor:
        if kind not in ("nngp", "ntk"):
            raise ValueError(f"kind: expected 'nngp' or 'ntk', got {kind!r}")
        return getattr(self, kind)


class Serial:
    """An architecture: layers applied in sequence. Build with :func:`serial`."""

    def __init__(self, layers):
        self.layers = tuple(layers)

    # --- description ---------------------------------------------------------------
    def __str__(self) -> str:
        return " ".join(layer.spec() for layer in self.layers)

    def __repr__(self) -> str:
        return f"serial({', '.join(repr(layer) for layer in self.layers)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Serial) and self.layers == other.layers

    def __hash__(self) -> int:
        return hash(self.layers)

    @property
    def dense_layers(self) -> list[Dense]:
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    @property
    def out_features(self) -> int | None:
        """Width of the output, or None when the network has no Dense layer (the input width)."""
        dense = self.dense_layers
        return dense[-1].out_features if dense else None

    def with_width(self, width: int) -> "Serial":
        """The same architecture with every hidden Dense layer (all but the last) of ``width`` units."""
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width: must be a positive integer, got {width!r}")
        last = max((i for i, layer in enumerate(self.layers) if isinstance(layer, Dense)), default=-1)
        return Serial(layer.with_out_features(width) if isinstance(layer, Dense) and i != last else layer
                      for i, layer in enumerate(self.layers))

    # --- the finite network ---------------------------------------------------------
    def build(self, in_features: int, seed: int = 0, dtype: torch.dtype = DEFAULT_DTYPE,
              device=None) -> nn.Sequential:
        """A ``torch.nn.Sequential`` with exactly this parameterisation and initialisation.

        Parameters are drawn from a ``torch.Generator`` seeded with ``seed``, so the same
        seed gives the same network on every machine.
        """
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features: must be a positive integer, got {in_features!r}")
        gen = torch.Generator().manual_seed(int(seed))
        modules, width = [], in_features
        for layer in self.layers:
            modules.append(layer.module(width, gen, dtype))
            width = layer.out_width(width)
        net = nn.Sequential(*modules)
        return net.to(device) if device is not None else net

    # --- the infinite-width kernels ---------------------------------------------------
    def kernel(self, x1, x2=None, *, diagonal: bool = False, max_memory="1GB",
               block_rows: int | None = None, progress: bool = False) -> Kernels:
        """Exact infinite-width NNGP and NTK between ``x1`` (n1, d) and ``x2`` (n2, d).

        ``x2=None`` means ``x2 = x1``: only the upper triangle is computed and mirrored (the
        result is exactly symmetric), and the diagonal is exact (the angle there is 0, not
        round-off). ``diagonal=True`` returns only K(x, x) and Θ(x, x), shape (n1,),
        in O(n) memory. Rows are processed in blocks whose temporaries stay within
        ``max_memory`` (bytes or '512MB'), and small enough to stay in cache.
        Returns per-output-unit kernels (every output unit of the last Dense layer has
        the same kernel and distinct units are independent), on ``x1``'s device (a GPU when
        ``x1`` is a CUDA tensor; ``x2`` is moved there).
        """
        x1 = as_inputs(x1, "x1")
        if diagonal:
            if x2 is not None:
                raise ValueError("x2: diagonal=True computes K(x1, x1) only; pass x2=None")
            state = km.input_state(x1, x1, diagonal=True)
            self._propagate(state)
            return Kernels(state.cov, state.ntk)
        symmetric = x2 is None
        x2 = x1 if symmetric else as_inputs(x2, "x2", device=x1.device)
        check_same_features(x1, x2)
        n1, n2 = x1.shape[0], x2.shape[0]
        rows = block_rows or _block_rows(n2, parse_memory(max_memory), cpu=x1.device.type == "cpu")
        nngp = torch.empty(n1, n2, dtype=x1.dtype, device=x1.device)
        ntk = torch.empty(n1, n2, dtype=x1.dtype, device=x1.device)
        starts = range(0, n1, rows)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="kernel rows", unit="block")
        for r0 in starts:
            r1 = min(r0 + rows, n1)
            c0 = r0 if symmetric else 0  # symmetric: the upper triangle only, mirrored below
            state = km.input_state(x1[r0:r1], x2[c0:], diag_offset=0 if symmetric else None)
            self._propagate(state)
            for out, block in ((nngp, state.cov), (ntk, state.ntk)):
                out[r0:r1, c0:] = block
                if symmetric:
                    out[r1:, r0:r1] = block[:, r1 - r0:].T
        return Kernels(nngp, ntk)

    def _propagate(self, state: km.KernelState) -> None:
        for layer in self.layers:
            layer.map_kernel(state)


#: bytes of one (rows, n2) temporary: measured fastest between 1 and 8 MB on 2 cores at n2 = 4000
_TILE_BYTES = 4 << 20
#: live (rows, n2) temporaries during a layer map: cov, ntk, s, θ/T', T and the input Gram
_TEMPORARIES = 6


def _block_rows(n2: int, max_memory: int, itemsize: int = 8, cpu: bool = True) -> int:
    """Rows per block: all temporaries within ``max_memory``, and on the CPU each about
    ``_TILE_BYTES`` (cache-sized); a GPU wants the largest blocks memory allows."""
    per_row = _TEMPORARIES * itemsize * n2
    if per_row > max_memory:
        raise ValueError(f"max_memory: {max_memory} bytes cannot hold even one row of the kernel "
                         f"against {n2} columns (needs {per_row}); raise max_memory")
    if not cpu:
        return max_memory // per_row
    return max(1, min(max_memory // per_row, _TILE_BYTES // (itemsize * n2)))


def serial(*layers) -> Serial:
    """Chain layer descriptions into an architecture (the finite network applies them in order)."""
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    flat = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Serial):
            flat.extend(layer.layers)
        elif isinstance(layer, Layer):
            flat.append(layer)
        elif isinstance(layer, type) and issubclass(layer, Layer):
            raise ValueError(f"layers[{i}]: got the class {layer.__name__}; instantiate it: "
                             f"{layer.__name__}()")
        else:
            raise ValueError(f"layers[{i}]: expected a layer such as Dense(512) or ReLU(), got {layer!r}")
    if not flat:
        raise ValueError("layers: an architecture needs at least one layer, e.g. serial(Dense(1))")
    return Serial(flat)
