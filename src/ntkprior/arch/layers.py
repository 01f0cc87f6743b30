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

from ntkprior._buffers import empty_output
from ntkprior._threads import tile_map, tile_workers
from ntkprior import kernels as km
from ntkprior.kernels import spatial
from ntkprior.data import DEFAULT_DTYPE, Summarized, as_inputs, check_allocation, check_same_features, parse_memory

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
    """Base class: a layer description. Subclasses implement ``module``, ``map_kernel``, ``spec``.

    ``kind`` classifies the layer for the composition rules of ``Serial.kernel`` (which
    compositions the kernel map describes exactly): ``"weighted"`` (Dense, Conv: fresh Gaussian
    pre-activations), ``"activation"``, ``"linear"`` (fixed linear maps: pooling, flatten),
    ``"norm"`` (LayerNorm), ``"branch"`` (residual sums and concatenations).
    ``needs_full``: its kernel map reads off-diagonal positions (pooling), so the full
    positions × positions covariance must reach it.
    """

    kind = "other"
    needs_full = False

    def out_width(self, in_width: int) -> int:
        return in_width

    def out_shape(self, in_shape: tuple, where: str) -> tuple:
        """The per-sample output shape for the per-sample input shape ``in_shape`` ((d,) for vectors,
        (C, L) or (C, H, W) for signals and images); a ValueError naming ``where`` when this layer
        cannot take that input."""
        return (self.out_width(in_shape[0]),) + tuple(in_shape[1:])

    def build_module(self, in_shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> nn.Module:
        """The torch module for per-sample inputs of shape ``in_shape``."""
        return self.module(in_shape[0], generator, dtype)

    def with_width(self, width: int) -> "Layer":
        """This layer with ``width`` units/channels where it has a width (a hidden layer)."""
        return self

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


def init_parameters(module: nn.Module, weight_shape: tuple, fan_in: int, weight_std: float,
                    bias_std: float | None, parameterization: str, generator: torch.Generator,
                    dtype: torch.dtype) -> None:
    """Give a weighted layer (Dense, Conv) its parameters and scales, W, b ~ N(0, 1):

    NTK parameterisation: ``z = (σ_w/sqrt(fan_in)) W x + σ_b b`` (the scales ride outside the
    parameters); standard: ``W ~ N(0, σ_w²/fan_in)``, ``b ~ N(0, σ_b²)``, scales 1. No bias when
    ``bias_std`` is None."""
    module.weight_std, module.bias_std, module.parameterization = weight_std, bias_std, parameterization
    w = torch.randn(*weight_shape, generator=generator, dtype=dtype)
    b = torch.randn(weight_shape[0], generator=generator, dtype=dtype) if bias_std is not None else None
    if parameterization == "standard":
        w = w * (weight_std / math.sqrt(fan_in))
        b = b * bias_std if b is not None else None
        module.weight_scale, module.bias_scale = 1.0, 1.0
    else:
        module.weight_scale = weight_std / math.sqrt(fan_in)
        module.bias_scale = bias_std if bias_std is not None else 0.0
    module.weight = nn.Parameter(w)
    module.bias = nn.Parameter(b) if b is not None else None


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
        init_parameters(self, (out_features, in_features), in_features, weight_std, bias_std, parameterization,
                        generator, dtype)

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

    kind = "weighted"

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

    def out_shape(self, in_shape, where):
        if len(in_shape) > 1:
            flat = math.prod(in_shape)
            raise ValueError(f"{where} ({self.spec()}): its input is a signal/image of shape {tuple(in_shape)} "
                             f"per sample, but a dense layer needs vectors; put flatten (or global_avg_pool) "
                             f"before it, or pass the inputs as a 2-D array of shape (n, {flat})")
        return (self.out_features,)

    def with_width(self, width):
        return self.with_out_features(width)

    def module(self, in_width, generator, dtype):
        check_allocation(in_width * self.out_features * torch.empty((), dtype=dtype).element_size(), "Dense",
                         f"the {self.out_features} x {in_width} weight matrix", "use a smaller width")
        return DenseModule(in_width, self.out_features, self.weight_std, self.bias_std,
                           self.parameterization, generator, dtype)

    def kernel_terms(self) -> tuple[float, float, bool, bool]:
        """What the kernel map needs: (σ_w², σ_b², standard parameterisation, has a bias)."""
        return (self.weight_std ** 2, 0.0 if self.bias_std is None else self.bias_std ** 2,
                self.parameterization == "standard", self.bias_std is not None)

    def map_kernel(self, state):
        weight_var, bias_var, standard, has_bias = self.kernel_terms()
        km.dense_update(state, weight_var, bias_var, standard=standard, has_bias=has_bias)
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
    kind = "activation"

    def torch_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def kernel_map(self) -> km.ActivationMap:
        raise NotImplementedError

    def module(self, in_width, generator, dtype):
        return ElementwiseModule(self.torch_fn(), self.spec())

    def map_kernel(self, state):
        if state.full:   # signals/images with every pair of positions: entrywise on the position pairs
            spatial.activation_full(self.kernel_map(), state)
        else:
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

    def kernel_map(self):
        return km.PiecewiseLinearMap(self.a, self.b, slope_at_zero=0.0)     # torch: d|x|/dx = sign(0) = 0

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
    """Any elementwise φ, with kernels by 2-D quadrature (:class:`~ntkprior.kernels.activations.QuadratureMap`:
    a Gauss–Legendre rule in the whitened frame, panels graded to the kinks, ``ceil(degree/6)``
    nodes per panel; accurate to ~1e-10 at any input scale for smooth φ, checked per tile).

    ``fn`` maps a tensor to a tensor of the same shape, elementwise. ``derivative`` is φ'
    (by autograd when omitted). Prefer the closed-form layers for ReLU-like functions and GELU.
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
                          "φ = tanh, kernels by quadrature.")
Sigmoid = _named_elementwise("sigmoid", torch.sigmoid,
                             lambda x: torch.sigmoid(x) * (1.0 - torch.sigmoid(x)),
                             "φ = logistic sigmoid, kernels by quadrature.")
Softplus = _named_elementwise("softplus", torch.nn.functional.softplus, torch.sigmoid,
                              "φ = log(1 + eˣ), kernels by quadrature.")
SiLU = _named_elementwise("silu", torch.nn.functional.silu,
                          lambda x: torch.sigmoid(x) * (1.0 + x * (1.0 - torch.sigmoid(x))),
                          "φ = x·sigmoid(x) (swish), kernels by quadrature.")
Sin = _named_elementwise("sin", torch.sin, torch.cos, "φ = sin, kernels by quadrature.")
_GeluQuadrature = _named_elementwise("gelu", torch.nn.functional.gelu, _gelu_derivative, "")


class Gelu(_GeluQuadrature):
    """φ = x·Φ(x) (exact GELU, torch's ``gelu``), with the closed-form kernels of Tsuchida,
    Pearce et al. (2020) (``ntkprior.kernels.GeluMap``: exact at any variance). ``degree`` is
    kept for compatibility and unused."""

    def kernel_map(self):
        return km.GeluMap()


def _check_float(value, name: str, layer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{layer}: {name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(repr=False)
class Kernels(Summarized):
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

    @property
    def hidden_width(self) -> int | None:
        """Units (Dense) or channels (Conv) of the first hidden weighted layer — the width that
        ``with_width`` sets — or None when the only weighted layer is the readout."""
        weighted = [layer for layer in self.layers if layer.kind == "weighted"]
        if len(weighted) < 2:
            return None
        return getattr(weighted[0], "out_features", None) or weighted[0].out_channels

    def with_width(self, width: int) -> "Serial":
        """The same architecture with every hidden layer of ``width`` units (Dense) or channels (Conv,
        also inside branches); the last weighted layer (the readout) is kept."""
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width: must be a positive integer, got {width!r}")
        last = max((i for i, layer in enumerate(self.layers) if layer.kind == "weighted"), default=-1)
        return Serial(layer.with_width(width) if i != last else layer for i, layer in enumerate(self.layers))

    def output_shape(self, in_shape) -> tuple:
        """The per-sample output shape for per-sample inputs of shape ``in_shape`` (an int d for
        vectors, or (C, L), (C, H, W)); a ValueError naming the first layer that cannot take its input."""
        shape = _input_shape(in_shape)
        for i, layer in enumerate(self.layers):
            shape = layer.out_shape(shape, f"layer {i}")
        return shape

    # --- the finite network ---------------------------------------------------------
    def build(self, in_features, seed: int = 0, dtype: torch.dtype = DEFAULT_DTYPE,
              device=None) -> nn.Sequential:
        """A ``torch.nn.Sequential`` with exactly this parameterisation and initialisation.

        ``in_features`` is the input width d, or the per-sample shape (C, L) / (C, H, W) of
        signals and images (PyTorch layout). Parameters are drawn from a ``torch.Generator``
        seeded with ``seed``, so the same seed gives the same network on every machine.
        """
        shape = _input_shape(in_features)
        gen = torch.Generator().manual_seed(int(seed))
        modules = []
        for i, layer in enumerate(self.layers):
            out = layer.out_shape(shape, f"layer {i}")
            modules.append(layer.build_module(shape, gen, dtype))
            shape = out
        net = nn.Sequential(*modules)
        return net.to(device) if device is not None else net

    # --- the infinite-width kernels ---------------------------------------------------
    def kernel(self, x1, x2=None, *, diagonal: bool = False, max_memory="1GB",
               block_rows: int | None = None, progress: bool = False) -> Kernels:
        """Exact infinite-width NNGP and NTK between ``x1`` and ``x2``: vectors (n, d), signals
        (n, C, L) or images (n, C, H, W).

        ``x2=None`` means ``x2 = x1``: only the upper triangle is computed and mirrored (the
        result is exactly symmetric), and the diagonal is exact (the angle there is 0, not
        round-off). ``diagonal=True`` returns only K(x, x) and Θ(x, x), shape (n1,),
        in O(n) memory. Rows are processed in blocks whose temporaries stay within
        ``max_memory`` (bytes or '512MB'), and small enough to stay in cache; ``block_rows``
        fixes the rows per block instead. Signals and images carry the covariance of every
        pair of positions only when a later layer needs it (pooling), else only the position
        diagonal (MATH.md section 6). A ValueError is raised before any work when the
        architecture composes layers the kernel map cannot describe (see ``docs/architectures.md``)
        or when the output would not fit in memory.
        Returns per-output-unit kernels (every output unit of the last Dense layer has
        the same kernel and distinct units are independent), on ``x1``'s device (a GPU when
        ``x1`` is a CUDA tensor; ``x2`` is moved there).
        """
        x1 = as_inputs(x1, "x1")
        plan = self._plan(tuple(x1.shape[1:]))
        if block_rows is not None:
            block_rows = _check_size(block_rows, "block_rows")
        if diagonal:
            if x2 is not None:
                raise ValueError("x2: diagonal=True computes K(x1, x1) only; pass x2=None")
            state = km.input_state(x1, x1, diagonal=True, full=plan.full)
            self._propagate(state, plan)
            return Kernels(state.cov, state.ntk)
        symmetric = x2 is None
        x2 = x1 if symmetric else as_inputs(x2, "x2", device=x1.device)
        check_same_features(x1, x2)
        n1, n2 = x1.shape[0], x2.shape[0]
        _check_output_fits(n1, n2, x1.element_size(), x1.device)
        rows, workers = _tiling(n1, n2 * plan.per_pair, parse_memory(max_memory), block_rows,
                                cpu=x1.device.type == "cpu")
        nngp = empty_output(n1, n2, dtype=x1.dtype, device=x1.device)
        ntk = empty_output(n1, n2, dtype=x1.dtype, device=x1.device)
        chain = self._fused_chain(plan, x1, None if symmetric else x2)
        if chain is not None:   # the compiled loop runs on torch's threads itself; blocks side by side
            workers = 1         # were no faster with it (N = 4000, two threads: 0.15 s both ways)

        def tile(r0: int) -> km.KernelState:   # tiles write disjoint parts of the outputs: safe in parallel
            r1 = min(r0 + rows, n1)
            c0 = r0 if symmetric else 0  # symmetric: the upper triangle only, mirrored below
            state = km.input_state(x1[r0:r1], x2[c0:], diag_offset=0 if symmetric else None, full=plan.full)
            if chain is None or not chain.apply(state, r0, r1, c0):
                self._propagate(state, plan)
            for out, block in ((nngp, state.cov), (ntk, state.ntk)):
                out[r0:r1, c0:] = block
                if symmetric:
                    out[r1:, r0:r1] = block[:, r1 - r0:].T
                    _mirror_upper(out[r0:r1, r0:r1])
            return state

        done = tile_map(tile, range(0, n1, rows), workers)
        if progress:
            from ntkprior.progress import progress_bar
            done = progress_bar(done, desc="kernel rows", unit="block", total=-(-n1 // rows))
        # each block's state lives until the next block is done: its memory is then freed below live
        # memory and reused, where freeing it first let malloc return it to the system and the next
        # block fault it in again (15 % slower at N = 4000, measured)
        for _ in done:
            pass
        return Kernels(nngp, ntk)

    def _fused_chain(self, plan: "_Plan", x1: torch.Tensor, x2: torch.Tensor | None) -> "_FusedChain | None":
        """The compiled whole-network tile (``ntkprior.kernels.fused``) when fusion is on and this is
        a plain MLP on vectors — Dense layers and closed-form activations — whose variances need
        neither the zero-variance rule nor the power-of-two scaling; else None (eager layers)."""
        if plan.full or x1.ndim != 2 or not km.fused_enabled():
            return None
        steps, width, previous = [], x1.shape[1], None
        for layer in self.layers:
            if _repeats(previous, layer):
                continue
            if isinstance(layer, Dense):
                step, width = km.fused.dense_step(*layer.kernel_terms(), width), layer.out_features
            elif isinstance(layer, Activation):
                step = layer.kernel_map().fused_step()          # None: no closed form to compile
            else:
                return None
            if step is None:
                return None
            steps.append(step)
            previous = layer
        rows = self._activation_variances(x1)
        cols = rows if x2 is None else self._activation_variances(x2)
        steps = tuple(steps)
        if not km.fused.chain_variances_are_safe(steps, rows[0], cols[0]):
            return None
        return _FusedChain(steps, rows, cols)

    def _activation_variances(self, x: torch.Tensor) -> tuple[list, torch.Tensor, torch.Tensor]:
        """The pre-activation variances K(x, x) before each activation, and the final K(x, x) and
        Θ(x, x), by the eager diagonal pass (the same arithmetic as the rows of a tile)."""
        state, before = km.input_state(x, x, diagonal=True), []
        self._propagate(state, before_activations=before)
        return before, state.cov, state.ntk

    def _plan(self, in_shape: tuple) -> "_Plan":
        """Check the shapes and the composition; decide where the full position covariance is needed."""
        shape, per_pair = _input_shape(in_shape), 1
        last_full = max((i for i, layer in enumerate(self.layers) if layer.needs_full), default=-1)
        for i, layer in enumerate(self.layers):
            positions = math.prod(shape[1:])
            per_pair = max(per_pair, positions ** 2 if i <= last_full else positions)
            shape = layer.out_shape(shape, f"layer {i}")
        check_composition(self.layers)
        if len(shape) > 1:
            raise ValueError(f"arch: the output is a signal/image of shape {shape} per sample; end with a "
                             "readout such as 'flatten dense(1)' or 'global_avg_pool dense(1)'")
        return _Plan(full=last_full >= 0, last_full=last_full, per_pair=per_pair)

    def _propagate(self, state: km.KernelState, plan: "_Plan | None" = None,
                   before_activations: list | None = None) -> None:
        """Map ``state`` through every layer; ``before_activations`` collects a copy of the rows'
        variances before each activation that is applied."""
        plan = plan or _Plan(False, -1, 1)
        previous = None
        for i, layer in enumerate(self.layers):
            if before_activations is not None and layer.kind == "activation" and not _repeats(previous, layer):
                before_activations.append(state.var1.clone())
            previous = apply_layer(layer, state, previous)
            if i == plan.last_full:
                from ntkprior.kernels.spatial import to_diagonal
                to_diagonal(state)


@dataclass
class _FusedChain:
    """A plain MLP's tiles in one compiled loop: its steps, and each side's activation variances
    and final diagonal (``Serial._activation_variances``) for the rows and the columns."""

    steps: tuple
    rows: tuple
    cols: tuple

    def apply(self, state: km.KernelState, r0: int, r1: int, c0: int) -> bool:
        """Map the input ``state`` of rows r0:r1 against columns c0: to the network's output in
        place; False (state untouched) when the fused code does not run (small tile, no compiler)."""
        # copies, not views: a view's storage offset would become a guard and recompile per tile
        variances = [v.clone() for a, b in zip(self.rows[0], self.cols[0]) for v in (a[r0:r1], b[c0:])]
        out = km.fused.chain_tile(self.steps, state.cov, variances)
        if out is None:
            return False
        state.cov, state.ntk = out
        state.var1, state.ntk1 = self.rows[1][r0:r1], self.rows[2][r0:r1]
        state.sync_diagonal()
        return True


@dataclass
class _Plan:
    """How ``Serial.kernel`` carries the state: the full position covariance up to layer
    ``last_full`` (the last that reads off-diagonal positions), the position diagonal after it;
    ``per_pair``: the most numbers a pair of inputs carries at once (for the row blocks)."""

    full: bool
    last_full: int
    per_pair: int


def apply_layer(layer: Layer, state: km.KernelState, previous: Layer | None) -> Layer | None:
    """Map ``state`` through ``layer`` (in place) and return the layer now last applied.

    ReLU after ReLU is skipped: relu∘relu = relu exactly, and a second arc-cosine map would
    wrongly treat the first one's outputs as Gaussian.
    """
    if _repeats(previous, layer):
        return previous
    if layer.kind == "branch":
        layer.map_kernel(state, previous)
    else:
        layer.map_kernel(state)
    return layer


def _repeats(previous: Layer | None, layer: Layer) -> bool:
    return type(layer) is ReLU and type(previous) is ReLU


@dataclass
class Flow:
    """What the composition rules know about the signal at one point of a network.

    ``gaussian``: Gaussian with mean 0 at infinite width (after a weighted layer, and kept by
    fixed linear maps, LayerNorm and sums of such branches) — what an activation's closed form
    and LayerNorm's assume. ``raw``: only fixed maps of the inputs so far. ``fresh``: a weighted
    layer with only linear maps after it (mean 0 and independent of other branches).
    ``previous``: the last layer applied (None at the input).
    """

    gaussian: bool = False
    raw: bool = True
    fresh: bool = False
    weighted: bool = False
    previous: Layer | None = None
    #: a per-channel trained scale (LayerNorm's affine γ) since the last weighted layer: its gradient
    #: is the unit's own value, correlated with an activation's derivative there
    scaled: bool = False


def check_composition(layers, where: str = "layer ", flow: Flow | None = None, *,
                      top: bool = True) -> Flow:
    """Refuse compositions the infinite-width kernel map cannot describe, naming the position and the fix.

    Exact: activations of Gaussian pre-activations (after Dense/Conv, pooling of those, LayerNorm,
    residual sums of those); ReLU after ReLU (relu∘relu = relu); Identity anywhere. Refused: an
    activation on raw inputs or on a non-Gaussian signal (two activations in a row, an activation
    after a post-activation residual sum), LayerNorm of a non-Gaussian signal (its channel mean is
    not 0), no weighted layer. A network may end with an activation: the kernels are then those of
    its last units (e.g. the features a readout would see).
    """
    flow = Flow() if flow is None else flow
    for i, layer in enumerate(layers):
        here = f"{where}{i} ({layer.spec()})"
        if hasattr(layer, "check_kernel"):      # a layer whose kernel exists only for some options
            layer.check_kernel(here)
        if layer.kind == "weighted":
            flow = Flow(gaussian=True, raw=False, fresh=True, weighted=True, previous=layer)
        elif layer.kind == "activation":
            if not (isinstance(layer, Identity) or flow.gaussian or _repeats(flow.previous, layer)):
                raise ValueError(_non_gaussian(here, flow, "an activation's kernel map"))
            if flow.scaled and not isinstance(layer, Identity):
                raise ValueError(f"{here}: follows layer_norm(affine=True) with no dense or conv between: the "
                                 "gradient of its per-channel scale is the unit's own value, correlated with "
                                 "the activation's derivative, so the NTK has no closed form; use layer_norm "
                                 "(affine=False) before activations")
            if not isinstance(layer, Identity) and not _repeats(flow.previous, layer):
                flow = Flow(raw=flow.raw, weighted=flow.weighted, previous=layer)
        elif layer.kind == "norm":
            if not flow.gaussian:
                raise ValueError(_non_gaussian(here, flow, "layer_norm (which assumes a channel mean of 0)"))
            flow.previous, flow.scaled = layer, flow.scaled or getattr(layer, "affine", False)
        elif layer.kind == "branch":
            flow = layer.check_composition(f"{where}{i}", flow)
        else:
            flow.previous = layer
    if top and not flow.weighted:
        raise ValueError("arch: has no dense or conv layer, so it describes no network's kernel; "
                         "add one, e.g. 'dense(512) relu dense(1)'")
    return flow


def _non_gaussian(here: str, flow: Flow, what: str) -> str:
    if flow.raw:
        cause = "it acts on the raw inputs, which are not Gaussian"
        fix = "put a dense or conv layer before it (or transform the inputs yourself)"
    else:
        before = flow.previous.spec() if flow.previous is not None else "the input"
        cause = f"its input (after {before}) is not a Gaussian of mean 0 at infinite width"
        fix = ("put a dense or conv layer before it; for residual networks use the pre-activation form "
               "residual{relu conv(...) relu conv(...)} whose sums stay Gaussian")
    return f"{here}: {what} has no exact closed form here: {cause}; {fix}"


def _mirror_upper(square: torch.Tensor) -> None:
    """Copy the upper triangle of a square block onto its lower one (exact symmetry: the
    position sums of signals and images round differently for (i, j) and (j, i)). Two dense
    passes with a triangle mask: a gather/scatter of the triangle's indices cost 10 % of a kernel."""
    n = square.shape[0]
    lower = torch.ones(n, n, dtype=torch.bool, device=square.device).tril_(-1)
    square.copy_(torch.where(lower, square.T, square))


def _input_shape(in_features) -> tuple:
    """``d`` or a per-sample shape such as (C, L), (C, H, W) -> a tuple of positive ints."""
    shape = (in_features,) if isinstance(in_features, int) and not isinstance(in_features, bool) else in_features
    if (not isinstance(shape, (tuple, list, torch.Size)) or not 1 <= len(shape) <= 4
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
        raise ValueError(f"in_features: must be a positive integer d, or a per-sample shape (C, L) or "
                         f"(C, H, W) of positive integers, got {in_features!r}")
    return tuple(int(v) for v in shape)


def _check_size(value, name: str) -> int:
    """A positive integer size argument, or a ValueError like ``max_memory``'s."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return value


def _available_bytes(device: torch.device) -> int | None:
    """Memory available for new tensors on ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_output_fits(n1: int, n2: int, itemsize: int, device: torch.device) -> None:
    """Refuse, before allocating, two (n1, n2) outputs that do not fit in the memory available."""
    need = 2 * n1 * n2 * itemsize
    available = _available_bytes(device)
    if available is not None and need > available:
        raise ValueError(f"x1: the NNGP and NTK matrices ({n1} x {n2}) need {need / 1e9:.1f} GB but "
                         f"{available / 1e9:.1f} GB is available; pass diagonal=True for K(x, x) only, "
                         "or compute blocks to disk with ntkprior.distributed.kernel_matrix")


#: bytes of one (rows, n2) temporary: measured fastest between 1 and 8 MB on 2 cores at n2 = 4000
#: (n2 counts every number a pair carries: columns × positions, or × positions² with pooling)
_TILE_BYTES = 4 << 20
#: live (rows, n2) temporaries during a layer map: cov, ntk, s, θ/T', T and the input Gram
_TEMPORARIES = 6


def _tiling(n1: int, n2: int, max_memory: int, block_rows: int | None, cpu: bool) -> tuple[int, int]:
    """Rows per block and the threads that compute blocks side by side (``_threads.tile_workers``:
    on the CPU, torch's thread count, each block's operations on one thread); ``n2``: the numbers
    a row carries. The blocks in flight together keep their temporaries within ``max_memory``."""
    rows = block_rows or _block_rows(n2, max_memory, cpu=cpu)
    workers = tile_workers(-(-n1 // rows)) if cpu else 1
    workers = max(1, min(workers, max_memory // (_TEMPORARIES * 8 * n2 * rows)))
    if workers > 1 and block_rows is None:
        rows = _block_rows(n2, max_memory // workers, cpu=cpu)
    return rows, workers


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
    if any(layer.kind == "marker" for layer in flat):
        from ntkprior.arch.branching import collapse_branches
        flat = collapse_branches(flat)
    return Serial(flat)
