"""The empirical NTK of any ``torch.nn.Module``: exact, fast, and within a memory budget.

    Θ(x, x')_cd = Σ_p ∂f_c(x)/∂θ_p · ∂f_d(x')/∂θ_p        (Jacot, Gabriel & Hongler 2018)

at the model's current parameters (or a checkpoint), for every output pair (c, d). Three
methods compute it, all exact and equal to round-off (MATH.md section 2, last paragraph):

- ``"structured"``: per-layer Gram products of layer inputs and backprop signals for
  Linear / Conv1d / Conv2d / ntkprior Dense layers (Novak, Sohl-Dickstein & Schoenholz 2022),
  collected with hooks in one forward and k backward passes per data block; every other
  parameter (normalisation, embeddings, attention projections) falls back to Jacobians.
  See :mod:`ntkprior.kernels._structured`.
- ``"jacobian"``: per-example Jacobians ``vmap(jacrev)`` (torch.func), contracted block by block.
- ``"ntk-vp"``: NTK-vector products (a per-example ``vjp`` of x2 then a ``jvp`` over x1), never
  holding a Jacobian of more than a chunk of x2 examples.

The data are processed in blocks so that the memory beyond the result stays within
``max_memory`` (an estimate from the parameter count and the activation sizes measured
on a probe batch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntkprior._buffers import empty_output
from ntkprior.kernels import _structured as st
from ntkprior.data import check_finite, parse_memory, to_tensor
from ntkprior.progress import progress_bar

METHODS = ("auto", "structured", "jacobian", "ntk-vp")
OUTPUTS = ("trace", "mean", "full", "diagonal")
#: examples used to validate the model and to verify each structured layer against Jacobians
_PROBE = 3
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def empirical_ntk(model: nn.Module, x1, x2=None, *, params=None, output: str = "trace",
                  method: str = "auto", max_memory="2GB", progress: bool = False,
                  output_fn: Callable | None = None) -> torch.Tensor:
    """The empirical NTK ``Θ(x1, x2)`` of ``model`` at its current (or given) parameters.

    ``Θ(x, x')_cd = Σ_p ∂f_c(x)/∂θ_p · ∂f_d(x')/∂θ_p`` for outputs c, d of the model's output
    flattened per example to k numbers.

    Args:
        model: any ``torch.nn.Module`` whose forward maps a batch (n, ...) to outputs (n, ...)
            with no interaction between examples: put it in eval mode (dropout off, BatchNorm on
            its running statistics). Its buffers are respected. The result has the dtype and
            device of its parameters.
        x1, x2: inputs, examples along the first dimension (numpy or torch). Floating inputs are
            cast to the model's dtype; integer tensors (token ids) are passed unchanged.
            ``x2=None`` means x1 (the symmetric kernel, computed once per block pair).
        params: which parameters to differentiate; the others are held fixed. ``None``: all
            parameters with ``requires_grad``. A list of names (``model.named_parameters()``), e.g.
            only the readout ``["fc.weight", "fc.bias"]`` for the "after kernel". A dict
            ``{name: tensor}`` (a checkpoint, e.g. ``model.state_dict()``): the model is evaluated at
            those values (buffers included) and its parameters among them are differentiated.
        output: ``"trace"`` (default): the (n1, n2) kernel summed over the k outputs,
            ``Σ_c Θ_cc(x, x') = <J(x), J(x')>`` (Frobenius product of the two k × P Jacobians).
            It is the default because it is exact and convention-free: additive over parameters
            (a subset's kernel plus the rest's is the whole) and over outputs, its diagonal is
            ``‖J(x)‖²``, and for k = 1 it is simply Θ. ``"mean"``: trace / k. At infinite width
            Θ_cd → δ_cd Θ_∞, so "mean" estimates the per-output analytic kernel
            (``arch.kernel(...).ntk``) and "trace" estimates k times it. neural-tangents'
            ``empirical_ntk_fn(trace_axes=(-1,))`` despite its name divides by k (it returns
            "mean"); for single-output models all three coincide. ``"full"``: (n1, n2, k, k),
            ``[i, j, c, d] = Θ_cd(x1_i, x2_j)``. ``"diagonal"``: (n1,), the "trace" kernel at
            (x_i, x_i), for x2=None, in O(n) memory.
        method: ``"structured"``, ``"jacobian"``, ``"ntk-vp"`` (see the module docstring) or
            ``"auto"``: structured when the model has a supported layer, else jacobian, else
            ntk-vp, the first whose smallest block fits ``max_memory``.
        max_memory: budget for the working memory beyond the result (bytes or '2GB').
        progress: show a tqdm bar over data blocks.
        output_fn: applied to the model's output before flattening, to pick a tensor out of a
            tuple or dict, e.g. ``lambda out: out["logits"]``.

    Returns:
        torch tensor (n1, n2), (n1, n2, k, k) or (n1,).
    """
    _check_choice(output, OUTPUTS, "output")
    _check_choice(method, METHODS, "method")
    budget = parse_memory(max_memory)
    problem = _Problem(model, params, output_fn)
    x1 = problem.inputs(x1, "x1")
    if x2 is not None:
        if output == "diagonal":
            raise ValueError("x2: output='diagonal' gives Θ(x_i, x_i) for x1 alone; pass x2=None")
        x2 = problem.inputs(x2, "x2", like=x1)
    probe = torch.cat([x1[:_PROBE]] + ([] if x2 is None else [x2[:_PROBE]]))[:_PROBE]
    with torch.enable_grad():
        problem.probe(probe)
        method, featurize, cost = _choose_method(problem, method, probe, output, budget)
        if method == "ntk-vp":
            result = _ntk_vp_kernel(problem, x1, x2, output, budget, progress)
        else:
            n_stored = len(x1) + (0 if x2 is None else len(x2))
            block, keep = _plan_blocks(cost, n_stored, max(len(x1), len(x1 if x2 is None else x2)),
                                       budget, method)
            result = _blockwise_kernel(featurize, x1, x2, output, block, keep, progress, problem)
    if output == "mean":
        result /= problem.k
    return result


def empirical_ntk_vp(model: nn.Module, x, v, *, params=None, output: str = "trace",
                     max_memory="2GB", progress: bool = False,
                     output_fn: Callable | None = None) -> torch.Tensor:
    """NTK-vector product ``Θ(x, x) v`` without forming Θ: one vjp and one jvp per vector.

    ``Σ_c J_c (J_cᵀ v)`` for ``output="trace"`` (``v`` of shape (n,) or (n, m) for m vectors;
    "mean" divides by k) and ``J (Jᵀ v)`` for ``output="full"`` (``v`` of shape (n, k) or
    (n, k, m)), where J is the Jacobian of the outputs on x with respect to the parameters.
    Cost: (k for trace, 1 for full) × m backward and forward-mode passes over x, in blocks
    within ``max_memory``. Other arguments as :func:`empirical_ntk`.
    """
    _check_choice(output, ("trace", "mean", "full"), "output")
    budget = parse_memory(max_memory)
    problem = _Problem(model, params, output_fn)
    x = problem.inputs(x, "x")
    with torch.enable_grad():
        problem.probe(x[:_PROBE], "x")
        cotangents, unpack = _vp_cotangents(v, len(x), problem, output)
        result = unpack(_apply_jjt(problem, x, cotangents, budget, progress))
    return result


# --- the model as a function of its parameters ------------------------------------------------

class _Problem:
    """A model as a pure function of (differentiated parameters, inputs) -> outputs (n, k)."""

    def __init__(self, model: nn.Module, params, output_fn: Callable | None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if output_fn is not None and not callable(output_fn):
            raise ValueError(f"output_fn: expected a function of the model's output, got {output_fn!r}")
        self.model, self.output_fn = model, output_fn
        self.buffer_names = [n for n, _ in model.named_buffers()]
        self.values, names = _resolve_params(model, params)
        self.diff = {n: self.values[n] for n in names}
        first = next(iter(self.diff.values()))
        self.dtype, self.device = first.dtype, first.device
        self.k = self.activation_numel = None    # set by probe()
        self.forward_ad = None                   # whether jvp works through the model, found when needed

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.diff.values())

    @property
    def itemsize(self) -> int:
        return self.diff[next(iter(self.diff))].element_size()

    def inputs(self, x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs as a tensor on the model's device: floating ones in its dtype, integer ones as given."""
        if isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex()):
            t = x.detach().to(self.device)
        else:
            t = check_finite(to_tensor(x, name, dtype=self.dtype, device=self.device), name)
        if t.ndim == 0 or t.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty batch with the examples along the first "
                             f"dimension, got shape {tuple(t.shape)}")
        if like is not None and t.shape[1:] != like.shape[1:]:
            raise ValueError(f"{name}: each input has shape {tuple(t.shape[1:])} but x1's have "
                             f"{tuple(like.shape[1:])}; both must be inputs of the same model")
        return t

    def raw(self, diff: dict, x: torch.Tensor, values: dict | None = None):
        return functional_call(self.model, {**(values or self.values), **diff}, (x,))

    def apply(self, diff: dict, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs (n, k) at the fixed values and the given differentiated parameters."""
        return self.as_matrix(self.raw(diff, x), x.shape[0])

    def as_matrix(self, out, n: int) -> torch.Tensor:
        source = "model"
        if self.output_fn is not None:
            out, source = self.output_fn(out), "output_fn"
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"{source}: returned a {type(out).__name__}; the empirical NTK needs one tensor with the "
                "examples along the first dimension. Pass output_fn to pick it, e.g. "
                "output_fn=lambda out: out[0] for a tuple or lambda out: out['logits'] for a dict")
        if out.ndim == 0 or out.shape[0] != n:
            raise ValueError(f"{source}: returned shape {tuple(out.shape)} for {n} inputs; the first "
                             "dimension of the output must index the inputs")
        if not out.is_floating_point():
            raise ValueError(f"{source}: returned a {out.dtype} tensor; outputs must be floating point")
        return out.reshape(n, -1)

    def probe(self, xp: torch.Tensor, name: str = "x1") -> None:
        """Run the model on a few inputs ``xp``: shape errors, randomness and batch dependence.

        Sets ``k`` (outputs per example) and ``activation_numel`` (activation elements per example).
        Buffers are cloned and the RNG state restored, so the user's model and RNG are untouched.
        What the checks depend on is the model's structure, so a model that passed them on more than one
        example is not probed again for inputs of the same shape (``_plan_key``; 5 forward passes,
        ~1 ms of a 10 ms call at N = 256).
        """
        key = _plan_key(self, xp)
        if key in _PROBED:
            self.k, self.activation_numel = _PROBED[key]
            return
        _check_module_modes(self.model)
        values = {**self.values, **{n: self.values[n].clone() for n in self.buffer_names}}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            out, activations = self._forward_named(xp, name, values, measure=True)
            if not _close(out, self._forward_named(xp, name, values)[0]):
                raise ValueError("model: two forward passes on the same inputs gave different outputs, "
                                 "so the model is random (dropout?) and its NTK is not defined; call "
                                 "model.eval() first, or remove the randomness from its forward")
            if len(xp) > 1 and not self._batch_independent(xp, out, values):
                raise ValueError("model: an example's output depends on the other examples in the "
                                 "batch (batch statistics?), so per-example derivatives are not "
                                 "defined; call model.eval() so normalisation uses running statistics")
        self.k = out.shape[1]
        self.activation_numel = activations // len(xp) + xp[0].numel()
        if len(xp) > 1:                          # one example cannot show batch dependence
            _remember(_PROBED, key, (self.k, self.activation_numel))

    def _batch_independent(self, xp: torch.Tensor, out: torch.Tensor, values: dict) -> bool:
        """Whether each example alone gives the output it gets in the batch (and runs alone at all)."""
        try:
            alone = torch.cat([self.as_matrix(self.raw({}, xp[i:i + 1], values), 1) for i in range(len(xp))])
        except (RuntimeError, ValueError):
            return False
        return _close(out, alone)

    def _forward_named(self, x, name: str, values: dict, measure: bool = False):
        """Forward on ``x``; an exception inside the model becomes a ValueError naming the input."""
        count = [0]

        def hook(module, args, out):
            if isinstance(out, torch.Tensor):
                count[0] += out.numel()

        leaves = [m for m in self.model.modules() if not any(True for _ in m.children())] if measure else []
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            out = self.raw({}, x, values)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise ValueError(f"{name}: the model could not be applied to inputs of shape "
                             f"{tuple(x.shape)} ({_input_hint(self.model)}); torch said: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        finally:
            for h in handles:
                h.remove()
        return self.as_matrix(out, x.shape[0]), count[0]


def _resolve_params(model: nn.Module, params) -> tuple[dict, list[str]]:
    """Values for every parameter and buffer, and the names of the differentiated parameters."""
    named = dict(model.named_parameters())
    if not named:
        raise ValueError("model: has no parameters; the NTK differentiates the outputs with respect "
                         "to parameters")
    values = {n: p.detach() for n, p in named.items()}
    values.update({n: b.detach() for n, b in model.named_buffers()})
    listing = f"{list(named)[:6]}{' ...' if len(named) > 6 else ''}"
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("model: no parameter requires grad (all are frozen); unfreeze some with "
                             "p.requires_grad_(True) or name the ones to differentiate with params=[...]")
    elif isinstance(params, Mapping):
        if not params:
            raise ValueError("params: the dict is empty; pass a checkpoint {name: tensor} with at "
                             f"least one parameter of the model, whose parameters are {listing}")
        for key, value in params.items():
            if key not in values:
                raise ValueError(f"params: {key!r} is not a parameter or buffer of the model; its "
                                 f"parameters are {listing}")
            ref = values[key]
            t = to_tensor(value, f"params[{key!r}]", dtype=ref.dtype, device=ref.device)
            if t.shape != ref.shape:
                raise ValueError(f"params[{key!r}]: has shape {tuple(t.shape)} but the model's has "
                                 f"{tuple(ref.shape)}; pass a checkpoint of this architecture")
            values[key] = t
        names = [key for key in params if key in named]
        if not names:
            raise ValueError(f"params: names only buffers, no parameter to differentiate; the model's "
                             f"parameters are {listing}")
    else:
        names = [params] if isinstance(params, str) else list(params)
        if not names:
            raise ValueError(f"params: the subset is empty; name at least one parameter, from {listing}")
        for key in names:
            if key not in named:
                raise ValueError(f"params: {key!r} is not a parameter of the model; its parameters "
                                 f"are {listing}")
    if not all(values[n].is_floating_point() for n in names):
        raise ValueError("params: only floating-point parameters can be differentiated")
    return values, list(dict.fromkeys(names))


def _check_module_modes(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if m.training and isinstance(m, _DROPOUTS) and m.p > 0:
            raise ValueError(f"model: {type(m).__name__} module {name!r} is in training mode, so the "
                             "forward is random and the NTK is not defined; call model.eval() first")
        if m.training and isinstance(m, _BATCHNORMS):
            raise ValueError(f"model: {type(m).__name__} module {name!r} is in training mode and "
                             "normalises with the batch's statistics, so an example's output depends on "
                             "the others; call model.eval() so it uses its running statistics")


def _input_hint(model: nn.Module) -> str:
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            return f"its first layer {type(m).__name__} expects (n, {m.in_channels}, length)"
        if isinstance(m, nn.Conv2d):
            return f"its first layer {type(m).__name__} expects (n, {m.in_channels}, height, width)"
        if isinstance(getattr(m, "in_features", None), int):
            return f"its first layer {type(m).__name__} expects {m.in_features} features in the last dimension"
    return "check the input shape the model's forward expects"


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    tol = math.sqrt(torch.finfo(a.dtype).eps)
    return a.shape == b.shape and bool(((a - b).abs() <= tol * (1 + a.abs().max())).all())


def _check_choice(value, choices, name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


# --- per-example derivatives ------------------------------------------------------------------

def _jacobian(problem: _Problem, names, x: torch.Tensor) -> dict:
    """Per-example Jacobians {name: (n, k, *shape)} with torch.func (vmap over examples of jacrev)."""
    diff = {n: problem.diff[n] for n in names}

    def single(d, xi):
        return problem.apply(d, xi.unsqueeze(0))[0]

    return vmap(jacrev(single), in_dims=(None, 0))(diff, x)


def _jacobian_features(problem: _Problem, names, x: torch.Tensor) -> list[torch.Tensor]:
    return [j.reshape(len(x), problem.k, -1) for j in _jacobian(problem, names, x).values()]


def _jacobian_block_features(problem: _Problem, x: torch.Tensor) -> st.Features:
    return st.Features(flats=_jacobian_features(problem, problem.diff, x))


def _structured_pass(problem: _Problem, layers: list[st.Layer], x: torch.Tensor):
    """One forward with hooks and k backward passes: the structured layers' features for block ``x``.

    The gradient of Σ_i f_c(x_i) with respect to a layer output z(x_i) is example i's backprop
    signal ∂f_c(x_i)/∂z(x_i), because examples do not interact (checked by ``probe``). Returns
    (features, names of layers that did not behave as a batched layer: never called, or called
    on tensors whose first dimension is not the batch).
    """
    diff = {n: problem.diff[n].detach().requires_grad_() for layer in layers for n in layer.param_names}
    n = x.shape[0]
    with st.recording(layers) as calls:
        out = problem.apply(diff, x)
    bad = [layer.name for layer in layers
           if not calls[layer.name] or any(a.shape[:1] != (n,) or z.shape[:1] != (n,) or not z.requires_grad
                                           for a, z in calls[layer.name])]
    if bad:
        return None, bad
    zs = [(layer.name, z) for layer in layers for _, z in calls[layer.name]]
    inputs = {layer.name: [a.detach() for a, _ in calls[layer.name]] for layer in layers}
    grads_per_output = []
    for c in range(problem.k):
        grads = torch.autograd.grad(out[:, c].sum(), [z for _, z in zs], retain_graph=c < problem.k - 1,
                                    allow_unused=True)
        per_layer: dict[str, list] = {}
        for (name, z), g in zip(zs, grads):
            per_layer.setdefault(name, []).append(torch.zeros_like(z) if g is None else g)
        grads_per_output.append(per_layer)
    return st.layer_features(layers, inputs, grads_per_output), []


@dataclass
class _Cost:
    """Memory estimates in bytes: per example stored, per example while computing, per example pair."""

    feature: int
    transient: int
    pair: int

    @property
    def minimum(self) -> int:
        return self.transient + 2 * self.feature + self.pair


def _jacobian_cost(problem: _Problem, n_params: int, output: str) -> _Cost:
    its, k, act = problem.itemsize, problem.k, problem.activation_numel
    feature = k * n_params * its
    return _Cost(feature, feature + (2 * k + 2) * act * its, its * (2 * k * k if output == "full" else 2))


class _StructuredPlan:
    """Which layers take the structured path (verified on a probe batch) and which parameters fall back.

    The verification (one structured pass and one Jacobian of the probe batch, ~45 % of a small
    call) is done once per model and structure: its outcome is cached under :func:`_plan_key`, so
    repeated calls on the same model (kernel tracking during training) skip it.
    """

    def __init__(self, problem: _Problem, probe: torch.Tensor, budget: int):
        self.problem = problem
        layers = st.find_layers(problem.model, problem.diff)
        key = _plan_key(problem, probe)
        if key not in _PLAN_CACHE:
            _remember(_PLAN_CACHE, key, self._verify(layers, probe, budget))
        kept, self.shapes = _PLAN_CACHE[key]
        self.layers = [layer for layer in layers if layer.name in kept]
        st.choose_paths(self.layers, self.shapes, problem.k)
        covered = {n for layer in self.layers for n in layer.param_names}
        self.fallback = [n for n in problem.diff if n not in covered]

    def _verify(self, layers: list[st.Layer], probe: torch.Tensor, budget: int):
        """(names of the layers that pass on the probe batch, their Gram shapes)."""
        problem = self.problem
        feats, bad = _structured_pass(problem, layers, probe) if layers else (None, [])
        if bad:
            layers = [layer for layer in layers if layer.name not in bad]
            feats, _ = _structured_pass(problem, layers, probe) if layers else (None, [])
        kept = _verified(problem, layers, feats, probe, budget) if layers else []
        shapes = {}
        for i in kept:
            factors, layer = feats.grams[i], layers[i]
            _, _, groups, t, o = factors.g.shape
            width = factors.a.shape[3]
            shapes[layer.name] = (groups, t, width, o)
        return [layers[i].name for i in kept], shapes

    def featurize(self, x: torch.Tensor) -> st.Features:
        feats = st.Features()
        if self.layers:
            feats, bad = _structured_pass(self.problem, self.layers, x)
            if bad:
                raise RuntimeError(f"structured NTK: layers {bad} stopped behaving as batched layers on a "
                                   "block of inputs; use method='jacobian'")
        if self.fallback:
            feats.flats += _jacobian_features(self.problem, self.fallback, x)
        return feats

    def cost(self, output: str) -> _Cost:
        problem, its, k = self.problem, self.problem.itemsize, self.problem.k
        fallback = _jacobian_cost(problem, sum(problem.diff[n].numel() for n in self.fallback), output)
        feature, worst_pair = fallback.feature if self.fallback else 0, 0
        for layer in self.layers:
            groups, t, i, o = self.shapes[layer.name]
            if layer.explicit:
                feature += k * groups * o * i * its
            else:
                feature += groups * t * (i + k * o) * its
                worst_pair = max(worst_pair, groups * t * t * (2 + (2 * k * k if output == "full" else 0)))
        transient = feature + 3 * problem.activation_numel * its + (fallback.transient if self.fallback else 0)
        return _Cost(feature, transient, worst_pair * its + fallback.pair)


#: verified plans: _plan_key -> (kept layer names, Gram shapes); models that passed the probe's checks:
#: _plan_key -> (k, activation_numel). At most _PLAN_CACHE_SIZE entries each, oldest dropped
_PLAN_CACHE: dict = {}
_PROBED: dict = {}
_PLAN_CACHE_SIZE = 64


def _plan_key(problem: _Problem, probe: torch.Tensor) -> tuple:
    """What the probe's checks and the verification depend on: this model object and its structure (every module's type,
    settings and mode), the differentiated parameters' names and shapes, the dtype and device, the
    shape of one input, and the output_fn. No reference to the model is kept (``id`` only)."""
    modules = tuple((name, type(m).__qualname__, m.extra_repr(), m.training)
                    for name, m in problem.model.named_modules())
    params = tuple((n, tuple(p.shape)) for n, p in problem.diff.items())
    return (id(problem.model), type(problem.model).__qualname__, modules, params, problem.dtype,
            str(problem.device), tuple(probe.shape[1:]), probe.dtype,
            None if problem.output_fn is None else id(problem.output_fn))


def _remember(cache: dict, key: tuple, value) -> None:
    if len(cache) >= _PLAN_CACHE_SIZE:
        del cache[next(iter(cache))]
    cache[key] = value


#: the probe's Jacobian by plain autograd up to this many (example, output) rows; vmap(jacrev) beyond
_AUTOGRAD_ROWS = 64


def _probe_jacobian(problem: _Problem, names, x: torch.Tensor) -> dict:
    """Per-example Jacobians {name: (n, k, *shape)} of a few examples by one backward pass per
    (example, output), which avoids torch.func: its first use imports torch._dynamo (801 modules,
    1.6-2.8 s). Exact because examples do not interact (checked by ``probe``)."""
    if len(x) * problem.k > _AUTOGRAD_ROWS:
        return _jacobian(problem, names, x)
    diff = {n: problem.diff[n].detach().requires_grad_() for n in names}
    out = problem.apply(diff, x)
    rows = [torch.autograd.grad(out[i, c], list(diff.values()), retain_graph=True, allow_unused=True)
            for i in range(len(x)) for c in range(problem.k)]
    return {n: torch.stack([torch.zeros_like(diff[n]) if r[j] is None else r[j] for r in rows])
            .reshape(len(x), problem.k, *diff[n].shape) for j, n in enumerate(diff)}


def _verified(problem: _Problem, layers, feats, probe, budget) -> list[int]:
    """Indices of the layers whose structured kernel on the probe batch equals their Jacobian contraction.

    A module can look like a Linear yet be used otherwise inside the model (its weight read by
    another function, batch not in the first dimension, a different scaling); such layers are
    left to the Jacobian fallback. Tolerance: 10 sqrt(eps) relative to the layer's largest entry,
    far above round-off (~1e-14 in float64), far below any real discrepancy (order one).
    Jacobians are taken for groups of layers of at most a quarter of ``budget``.
    """
    tol = 10 * math.sqrt(torch.finfo(problem.dtype).eps)
    limit = budget // (4 * len(probe) * problem.k * problem.itemsize)
    sizes = [sum(problem.diff[n].numel() for n in layer.param_names) for layer in layers]
    kept = []
    for group in _consecutive_groups(sizes, limit):
        jac = _probe_jacobian(problem, [n for i in group for n in layers[i].param_names], probe)
        for i in group:
            flat = st.Features(flats=[jac[n].reshape(len(probe), problem.k, -1) for n in layers[i].param_names])
            gram = st.Features(grams=[feats.grams[i]])
            ref = st.kernel_block(flat, flat, "trace")
            if (st.kernel_block(gram, gram, "trace") - ref).abs().max() <= tol * ref.abs().max():
                kept.append(i)
    return kept


def _consecutive_groups(sizes: list[int], limit: int) -> list[list[int]]:
    """Split indices 0..len(sizes)-1 into runs whose sizes sum to at most ``limit`` (one item at least)."""
    groups, total = [], 0
    for i, size in enumerate(sizes):
        if not groups or total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def _choose_method(problem: _Problem, method: str, probe: torch.Tensor, output: str, budget: int):
    """(method, featurize, cost) for the requested method, or the first that fits for "auto"."""
    candidates = ["structured", "jacobian", "ntk-vp"] if method == "auto" else [method]
    for name in candidates:
        if name == "ntk-vp":
            return name, None, None
        if name == "structured":
            plan = _StructuredPlan(problem, probe, budget)
            if method == "auto" and not plan.layers:
                continue
            featurize, cost = plan.featurize, plan.cost(output)
        else:
            featurize = partial(_jacobian_block_features, problem)
            cost = _jacobian_cost(problem, problem.n_params, output)
        if cost.minimum <= budget or method != "auto":
            return name, featurize, cost
    raise AssertionError("unreachable: ntk-vp is always a candidate")


# --- blocks over the data ---------------------------------------------------------------------

def _plan_blocks(cost: _Cost, n_stored: int, n_max: int, budget: int, method: str) -> tuple[int, bool]:
    """Block size b and whether all examples' features are kept (computed once) within ``budget``.

    Memory: b·transient + b²·pair, plus either all n_stored features (kept) or two blocks' worth.
    """
    keep = n_stored * cost.feature <= budget // 2
    avail = budget - (n_stored * cost.feature if keep else 0)
    linear = cost.transient + (0 if keep else 2 * cost.feature)
    b = int((-linear + math.sqrt(linear * linear + 4 * cost.pair * avail)) / (2 * cost.pair))
    if b < 1:
        raise ValueError(f"max_memory: {budget} bytes cannot hold method={method!r} for even one pair "
                         f"of examples (needs about {cost.minimum} bytes); raise max_memory, "
                         "differentiate fewer parameters (params=...) or use method='ntk-vp'")
    return min(b, n_max), keep


class _Blocks:
    """Data split into blocks, features computed on demand and kept when ``keep``."""

    def __init__(self, featurize, x: torch.Tensor, block: int, keep: bool):
        self.featurize, self.x, self.keep = featurize, x, keep
        self.slices = [slice(s, min(s + block, len(x))) for s in range(0, len(x), block)]
        self.cache: dict[int, st.Features] = {}

    def __getitem__(self, i: int) -> st.Features:
        if i in self.cache:
            return self.cache[i]
        feats = self.featurize(self.x[self.slices[i]])
        if self.keep:
            self.cache[i] = feats
        return feats


def _blockwise_kernel(featurize, x1, x2, output: str, block: int, keep: bool, progress: bool,
                      problem: _Problem) -> torch.Tensor:
    """Assemble Θ from (row block, column block) contractions; only upper blocks when x2 is None.

    Row features are computed once per row block; column features are kept when ``keep``
    (row features too when they are also the columns), else recomputed.
    """
    symmetric = x2 is None
    rows = _Blocks(featurize, x1, block, keep and symmetric and output != "diagonal")
    like = dict(dtype=problem.dtype, device=problem.device)
    if output == "diagonal":
        result = torch.empty(len(x1), **like)
        for i, s in enumerate(progress_bar(rows.slices, desc="empirical NTK", unit="block", enabled=progress)):
            result[s] = st.kernel_diagonal(rows[i])
        return result
    cols = rows if symmetric else _Blocks(featurize, x2, block, keep)
    k = problem.k
    result = empty_output(len(x1), len(cols.x), *((k, k) if output == "full" else ()), **like)
    n_pairs = sum(len(cols.slices) - (i if symmetric else 0) for i in range(len(rows.slices)))
    with progress_bar(total=n_pairs, desc="empirical NTK", unit="block", enabled=progress) as bar:
        for i, si in enumerate(rows.slices):
            f1 = rows[i]
            for j in range(i if symmetric else 0, len(cols.slices)):
                sj = cols.slices[j]
                if symmetric and i == j:
                    st.symmetric_block(f1, output, out=result[si, si])
                else:
                    st.kernel_block(f1, cols[j], output, out=result[si, sj])
                if symmetric and j != i:
                    st.mirror(result, si, sj)
                bar.update()
    return result


# --- NTK-vector products ----------------------------------------------------------------------

def _ntk_vp_kernel(problem: _Problem, x1, x2, output: str, budget: int, progress: bool) -> torch.Tensor:
    """Θ column by column: per-example gradients of x2 (vjp) pushed through x1 by jvp.

    Holds the gradients of a chunk of x2 examples and the forward-mode activations of a block
    of x1 for each of them, never the Jacobian of x1.
    """
    its, k, n_params, act = problem.itemsize, problem.k, problem.n_params, problem.activation_numel
    per_gradient = k * (n_params + 2 * act) * its
    if output == "diagonal":
        chunk = budget // per_gradient
        _check_fits(chunk, budget, per_gradient)
        slices = [slice(s, min(s + chunk, len(x1))) for s in range(0, len(x1), chunk)]
        return torch.cat([st.kernel_diagonal(st.Features(flats=_jacobian_features(problem, problem.diff, x1[s])))
                          for s in progress_bar(slices, desc="empirical NTK", unit="block", enabled=progress)])
    x2 = x1 if x2 is None else x2
    per_row = k * (2 * act + k) * its        # one tangent's forward-mode activations, per x1 example
    rows = min(len(x1), max(1, (budget // 2) // per_row))
    chunk = min(len(x2), budget // (per_gradient + rows * per_row))
    _check_fits(chunk, budget, per_gradient + per_row)
    row_slices = [slice(s, min(s + rows, len(x1))) for s in range(0, len(x1), rows)]
    col_slices = [slice(s, min(s + chunk, len(x2))) for s in range(0, len(x2), chunk)]
    result = torch.empty(len(x1), len(x2), *((k, k) if output == "full" else ()),
                         dtype=problem.dtype, device=problem.device)
    with progress_bar(total=len(row_slices) * len(col_slices), desc="empirical NTK", unit="block",
                      enabled=progress) as bar:
        for sc in col_slices:
            grads = _jacobian(problem, problem.diff, x2[sc])           # {name: (c, k, *shape)}
            tangents = {n: g.reshape(-1, *g.shape[2:]) for n, g in grads.items()}
            c = sc.stop - sc.start
            for sr in row_slices:
                cols = vmap(_jvp_on(problem, x1[sr]))(tangents)         # (c·k, rows, k)
                full = cols.reshape(c, k, sr.stop - sr.start, k).permute(2, 0, 3, 1)
                result[sr, sc] = full if output == "full" else full.diagonal(dim1=2, dim2=3).sum(-1)
                bar.update()
    return result


def _jvp_on(problem: _Problem, x: torch.Tensor):
    """tangent -> J(x) · tangent, the outputs' directional derivative (n, k).

    Forward mode (jvp) where every op of the model supports it; otherwise (e.g. the fused
    attention kernel of nn.MultiheadAttention in eval mode) the double-vjp identity
    J u = ∂/∂w ⟨Jᵀ w, u⟩, two reverse passes. Attention runs on its composite (math) backend,
    whose derivatives are themselves differentiable.
    """
    def forward(d):
        return problem.apply(d, x)

    def push_forward(tangent):
        with sdpa_kernel(SDPBackend.MATH):
            return jvp(forward, (problem.diff,), (tangent,))[1]

    def push_reverse(tangent):
        with sdpa_kernel(SDPBackend.MATH):
            out, pull = vjp(forward, problem.diff)
            return vjp(lambda w: pull(w)[0], torch.zeros_like(out))[1](tangent)[0]

    if problem.forward_ad is None:
        try:
            push_forward({n: torch.zeros_like(p) for n, p in problem.diff.items()})
            problem.forward_ad = True
        except NotImplementedError:
            problem.forward_ad = False
    return push_forward if problem.forward_ad else push_reverse


def _check_fits(count: int, budget: int, need: int) -> None:
    if count < 1:
        raise ValueError(f"max_memory: {budget} bytes cannot hold one example's gradients and "
                         f"activations (needs about {need} bytes); raise max_memory or differentiate "
                         "fewer parameters (params=...)")


def _vp_cotangents(v, n: int, problem: _Problem, output: str):
    """The output cotangents (C, n, k) for ``v``, and a function mapping J Jᵀ of them back to v's shape."""
    k = problem.k
    t = check_finite(to_tensor(v, "v", dtype=problem.dtype, device=problem.device), "v")
    if output == "full":
        if t.shape[:2] != (n, k) or t.ndim > 3:
            raise ValueError(f"v: for output='full' expected shape ({n}, {k}) or ({n}, {k}, m) "
                             f"(inputs × outputs), got {tuple(t.shape)}")
        vectors = t.reshape(n, k, -1).permute(2, 0, 1)                          # (m, n, k)
        return vectors, lambda r: r.permute(1, 2, 0).reshape(t.shape)
    if t.shape[:1] != (n,) or t.ndim > 2:
        raise ValueError(f"v: for output={output!r} expected shape ({n},) or ({n}, m), got {tuple(t.shape)}")
    columns = t.reshape(n, -1)
    m = columns.shape[1]
    # cotangent (column j, output c): v[:, j] placed in output c; Θ_trace v = Σ_c [J (J^T cot_jc)]_c
    cot = torch.einsum("nm,cd->mcnd", columns, torch.eye(k, dtype=t.dtype, device=t.device))
    scale = 1 / k if output == "mean" else 1

    def unpack(r):
        traced = r.reshape(m, k, n, k).diagonal(dim1=1, dim2=3).sum(-1)         # (m, n)
        return (traced.T * scale).reshape(t.shape)
    return cot.reshape(m * k, n, k), unpack


def _apply_jjt(problem: _Problem, x, cotangents, budget: int, progress: bool) -> torch.Tensor:
    """J (Jᵀ u) for each cotangent u (C, n, k): a vjp summed over data blocks, then a jvp per block."""
    its, k, act, n_params = problem.itemsize, problem.k, problem.activation_numel, problem.n_params
    n, n_vec = len(x), len(cotangents)
    per_row = (2 * act + 2 * k) * its
    rows = min(n, max(1, (budget // 2) // per_row))
    chunk = min(n_vec, budget // (n_params * its + rows * per_row))
    _check_fits(chunk, budget, n_params * its + per_row)
    row_slices = [slice(s, min(s + rows, n)) for s in range(0, n, rows)]
    result = torch.empty(n_vec, n, k, dtype=problem.dtype, device=problem.device)
    starts = range(0, n_vec, chunk)
    with progress_bar(total=2 * len(starts) * len(row_slices), desc="NTK-vector product", unit="block",
                      enabled=progress) as bar:
        for s in starts:
            cot = cotangents[s:s + chunk]
            u = None
            for sr in row_slices:
                _, pull = vjp(lambda d, xs=x[sr]: problem.apply(d, xs), problem.diff)
                part = vmap(pull)(cot[:, sr])[0]
                u = part if u is None else {name: u[name] + part[name] for name in u}
                bar.update()
            for sr in row_slices:
                result[s:s + chunk, sr] = vmap(_jvp_on(problem, x[sr]))(u)
                bar.update()
    return result
