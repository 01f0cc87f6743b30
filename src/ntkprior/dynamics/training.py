"""Train finite networks (or their linearisations) and compare them with the kernel's prediction.

``train`` trains the network that ``arch.build`` makes by gradient descent on the loss
``½ · mean`` over the m = n·k training outputs (MATH.md section 4), or its linearisation
around the initial parameters θ0 (Lee et al. 2019, "Wide neural networks of any depth
evolve as linear models under gradient descent")::

    f_lin(θ) = f(θ0) + J(θ0) (θ − θ0)

An ensemble of independently initialised networks trains together: their parameters are
stacked (``torch.func.stack_module_state``) and evaluated in cache-sized groups by batched
matrix products (ntkprior's own networks) or ``torch.func.vmap`` over ``functional_call`` (any
other module), so one step of 1000 networks costs a few batched operations rather than 1000
Python-level steps. Member ``i`` is ``arch.build(d, seed=seed + i)``.

``width_sweep`` rebuilds the architecture at several hidden widths, trains, and measures
how far the trained networks are from the infinite-width (analytic NTK) prediction; each
distance falls like a power of the width and the sweep fits the exponents.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, linearize, stack_module_state, vjp, vmap

from ntkprior.data import Summarized, as_inputs, as_labels, check_same_features
from ntkprior.dynamics.linearized import LinearizedDynamics, check_positive
from ntkprior.kernels.empirical import empirical_ntk
from ntkprior.dynamics import _stacked as stacked
from ntkprior.prior.linalg import SymmetricPSD

OPTIMIZERS = ("gd", "sgd")
#: largest activation of one group of ensemble members (bytes): about the L2 cache of one core,
#: measured fastest (8 width-512 networks on 64 points in float32)
_GROUP_BYTES = 1 << 20
#: number of recorded steps (log-spaced, plus step 0) when ``record`` is not given
DEFAULT_RECORDS = 20


@dataclass(repr=False)
class TrainResult(Summarized):
    """What ``train`` recorded. Leading axes: ensemble member, then recorded step.

    Fields
    ------
    steps : np.ndarray (r,)
        The recorded step numbers (number of parameter updates done), ascending; always
        starts at 0 (the initial network) and ends at the last step.
    train_outputs : torch.Tensor (ensemble, r, n, k)
        Network outputs on ``x_train`` at each recorded step.
    test_outputs : torch.Tensor (ensemble, r, n_test, k) or None
        Network outputs on ``x_test`` (None when no ``x_test`` was given).
    loss : torch.Tensor (ensemble, r)
        ``½ · mean`` squared error over all n·k training outputs (full training set,
        also when training with mini-batches).
    param_change : torch.Tensor (ensemble, r)
        ``‖θ_t − θ_0‖ / ‖θ_0‖`` over all parameters of each member.
    kernel_change : torch.Tensor (ensemble, r) or None
        Relative Frobenius distance ``‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F`` of the empirical NTK on
        ``x_train`` from its value at initialisation. Exactly 0 for a linearised network
        (its kernel is J(θ0)J(θ0)ᵀ at every step). None when ``track_kernel=False``.
    initial_kernel : torch.Tensor (ensemble, n, n) float64, or None
        The empirical NTK Θ_0 of each member on ``x_train`` (per output unit: the trace over
        outputs divided by k, ``empirical_ntk(output="mean")``; computed in float64 whatever the
        training dtype), None when ``track_kernel=False``.
    seeds : tuple of int
        ``arch.build`` seed of each member.
    diverged_at : torch.Tensor (ensemble,) int64
        First step at which a member's loss was not finite, -1 if it never was.
    """

    steps: np.ndarray
    train_outputs: torch.Tensor
    test_outputs: torch.Tensor | None
    loss: torch.Tensor
    param_change: torch.Tensor
    kernel_change: torch.Tensor | None
    initial_kernel: torch.Tensor | None
    seeds: tuple
    diverged_at: torch.Tensor
    learning_rate: float
    linearized: bool
    optimizer: str = "gd"

    @property
    def ensemble(self) -> int:
        return self.train_outputs.shape[0]


class _Group:
    """A group of networks of one architecture, as stacked parameters evaluated together on the
    training (and test) inputs: one batched forward for ntkprior's own networks,
    ``vmap(functional_call)`` for any other module.

    Linearised, the group computes ``f(θ0) + J(θ0)(θ − θ0)``: ``J(θ0)`` applied by
    ``torch.func.linearize`` (the jvp traced once at θ0, then replayed: 100x faster per step than
    ``torch.func.jvp``, which re-derives it every call) and gradients ``J(θ0)ᵀ cotangent`` by one
    ``torch.func.vjp`` at θ0, reused every step. Otherwise outputs and gradients at the current
    parameters come from the hand-written backward pass of :mod:`ntkprior.dynamics._stacked` (ntkprior's
    own networks: preallocated buffers, no autograd) or from autograd (any other module).
    """

    def __init__(self, models: list[torch.nn.Module], linearized: bool, x_train: torch.Tensor,
                 x_test: torch.Tensor | None, workspace: stacked.Workspace):
        params, self.buffers = stack_module_state(models)
        self.params = {name: p.detach().clone() for name, p in params.items()}
        self.theta0 = {name: p.clone() for name, p in self.params.items()}
        self.theta0_norm = _norm(self.theta0)
        self.size = len(models)
        self.inputs = {"train": x_train, "test": x_test}
        self.linearized = linearized
        self._skeleton = copy.deepcopy(models[0]).to("meta")
        self._dense = stacked.dense_plan(models[0])
        self._workspace = workspace
        if linearized:
            _, self._vjp = vjp(lambda p: self.forward(p, x_train), self.theta0)
            self._linear = {key: _linearize(lambda p, x=x: self.forward(p, x), self.theta0)
                            for key, x in self.inputs.items() if x is not None}
        elif self._dense is None:          # ntkprior's own networks have a hand-written backward
            for p in self.params.values():
                p.requires_grad_(True)

    def forward(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every member on ``x`` at ``params``: (size, n, k)."""
        if self._dense is not None:
            return stacked.forward(self._dense, params, x)

        def one(p, b):
            return functional_call(self._skeleton, (p, b), (x,))
        return vmap(one)(params, self.buffers)

    def train_outputs(self) -> torch.Tensor:
        """Outputs on the training inputs, keeping what ``backward`` needs."""
        if self.linearized:
            return self.outputs("train")
        if self._dense is not None:        # a copy: the next group reuses the workspace
            return stacked.forward(self._dense, self.params, self.inputs["train"], self._workspace).clone()
        self._out = self.forward(self.params, self.inputs["train"])
        return self._out.detach()

    def outputs(self, key: str) -> torch.Tensor:
        """Outputs on the ``"train"`` or ``"test"`` inputs, without gradients."""
        with torch.no_grad():
            if self.linearized:
                f0, jvp_at_theta0 = self._linear[key]
                return f0 + jvp_at_theta0({name: self.params[name] - self.theta0[name] for name in self.params})
            return self.forward(self.params, self.inputs[key])

    def train_step(self, y_train: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Outputs on the training inputs; with per-member loss weights (size, n), also the
        gradients of ``½ Σ_i weight_i ‖f(x_i) − y_i‖² / k`` (the loss over the m = n·k outputs)."""
        out = self.train_outputs()
        if weight is not None:
            self.backward(weight[:, :, None] * (out - y_train) / y_train.shape[1])
        return out

    def backward(self, cotangent: torch.Tensor) -> None:
        """Set each parameter's ``.grad`` to ``Jᵀ cotangent`` (J at θ0 when linearised)."""
        if self.linearized:
            for name, g in self._vjp(cotangent)[0].items():
                self.params[name].grad = g
            return
        if self._dense is not None:
            stacked.backward(self._dense, self.params, self._workspace, cotangent)
            return
        for p in self.params.values():
            p.grad = None
        self._out.backward(cotangent)

    def param_change(self) -> torch.Tensor:
        """``‖θ_t − θ_0‖ / ‖θ_0‖`` per member."""
        with torch.no_grad():
            return _norm({name: self.params[name] - self.theta0[name] for name in self.params}) / self.theta0_norm

    def member(self, i: int, theta0: bool = False) -> dict:
        """Parameters of member i (detached), current or initial."""
        return {name: p[i].detach() for name, p in (self.theta0 if theta0 else self.params).items()}


def _linearize(fn, theta0: dict):
    """``(fn(θ0), v ↦ J(θ0) v)`` by ``torch.func.linearize``."""
    with warnings.catch_warnings():
        # torch's own tracing machinery warns about its internals (a get_attr node it then handles,
        # its use of torch.jit.script): nothing the caller can act on
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node", category=UserWarning)
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        return linearize(fn, theta0)


def _group_size(model: torch.nn.Module, x: torch.Tensor, ensemble: int) -> int:
    """Members per group: as many as keep the largest activation of a group within ``_GROUP_BYTES``.

    One batch of 256 width-512 networks on 64 points streams 33 MB temporaries through memory in
    every operation; groups of 8 (1 MB, a core's L2 cache), each trained forward-then-backward in one
    shared workspace, keep them in cache: 2x faster than groups of 32 (float32, one thread).
    On a GPU one group holds the whole ensemble: its kernels need large batches to fill the device.
    """
    if x.device.type != "cpu":
        return ensemble
    largest = [x.numel()]
    hooks = [m.register_forward_hook(lambda mod, inp, out: largest.append(out.numel()))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    per_member = max(largest) * x.element_size()
    return max(1, min(ensemble, _GROUP_BYTES // per_member))


def train(arch, x_train, y_train, x_test=None, steps: int = 1000, learning_rate: float = 0.1,
          seed: int = 0, *, linearized: bool = False, record=None, ensemble: int = 1,
          optimizer: str = "gd", batch_size: int | None = None, momentum: float = 0.0,
          track_kernel: bool = True, dtype: torch.dtype = torch.float64, device=None,
          progress: bool = False) -> TrainResult:
    """Train ``ensemble`` networks ``arch.build(d, seed=seed + i)`` on ``(x_train, y_train)``.

    Loss: ``½ · mean`` of the squared error over the m = n·k training outputs, so that the
    function-space dynamics are ``f ← f − (η/m) Θ (f − y)`` (MATH.md section 4) and the
    closed forms of ``ntkprior.dynamics.linearized`` apply with the same η and t (in steps).

    Parameters
    ----------
    arch : an architecture from ``ntkprior.serial`` (anything with ``build(in_features, seed, dtype)``).
    x_train, y_train : (n, d) inputs and (n,) or (n, k) labels. x_test : (n_test, d) or None.
    steps : number of parameter updates. learning_rate : η.
    seed : member i is built with seed ``seed + i``; or a sequence of seeds, one member each
        (``ensemble`` is then its length). Mini-batches are drawn from the first seed.
    linearized : train ``f(θ0) + J(θ0)(θ − θ0)`` (``torch.func.linearize`` around θ0) instead of the network.
    record : steps at which to record outputs, loss, parameter and kernel change: a sequence
        of ints in [0, steps], or an int r for about r log-spaced steps. Step 0 and the last
        step are always recorded. Default: about 20 log-spaced steps.
    ensemble : number of independently initialised networks, trained together: stacked
        parameters, one batched forward and backward per group of members whose activations
        fit in cache.
    optimizer : ``"gd"`` (full batch) or ``"sgd"`` (mini-batches of ``batch_size``, each member
        its own random order, reshuffled every epoch; a partial last batch is dropped). Both
        use ``torch.optim.SGD``, with ``momentum`` (heavy ball, torch's convention). SGD
        evaluates every member on the whole training set and weights the loss by the batch,
        so a step costs as much as a full-batch step: it is meant for studying dynamics on
        small data sets, not for speed.
    track_kernel : record the empirical NTK's change (one ``empirical_ntk`` per member and
        recorded step; the main cost for large ensembles).
    dtype, device : of the networks and the data (float64 by default: needed to compare
        with closed forms to 1e-8).
    progress : show a tqdm progress bar over steps.
    """
    x_train = as_inputs(x_train, "x_train", dtype=dtype, device=device)
    n, d = x_train.shape[0], (x_train.shape[1] if x_train.ndim == 2 else tuple(x_train.shape[1:]))
    y_train = as_labels(y_train, n, "y_train", dtype=dtype, device=device)
    if x_test is not None:
        x_test = as_inputs(x_test, "x_test", dtype=dtype, device=device)
        check_same_features(x_train, x_test, "x_train", "x_test")
    steps = _check_int(steps, "steps", minimum=0)
    learning_rate = check_positive(learning_rate, "learning_rate")
    seeds = _member_seeds(seed, ensemble)
    ensemble = len(seeds)
    momentum = _check_momentum(momentum)
    weights = _loss_weights(optimizer, batch_size, n, ensemble, seeds[0], dtype, device)
    recorded = record_steps(record, steps)
    if not hasattr(arch, "build"):
        raise ValueError(f"arch: expected an architecture from ntkprior.serial(...) (with a .build method), "
                         f"got {type(arch).__name__}")

    models = [arch.build(d, seed=s, dtype=dtype, device=device) for s in seeds]
    _check_output_width(models[0], x_train, y_train)
    size = _group_size(models[0], x_train, ensemble)
    workspace = stacked.Workspace()          # groups run one after the other: they share the buffers
    groups = [_Group(models[i:i + size], linearized, x_train, x_test, workspace) for i in range(0, ensemble, size)]
    opt = torch.optim.SGD([p for g in groups for p in g.params.values()], lr=learning_rate, momentum=momentum)
    rec = _Recorder(len(recorded), ensemble, n, y_train.shape[1],
                    None if x_test is None else x_test.shape[0], dtype, device)
    kernels = _KernelTracker(models[0], x_train, groups, linearized) if track_kernel else None
    diverged_at = torch.full((ensemble,), -1, dtype=torch.int64)
    record_at = {s: j for j, s in enumerate(recorded)}

    sizes = [g.size for g in groups]
    for step in _progress(range(steps + 1), progress):
        # each group's forward is followed at once by its backward: their temporaries stay in cache
        weight = next(weights).split(sizes) if step < steps else [None] * len(groups)
        out = torch.cat([g.train_step(y_train, w) for g, w in zip(groups, weight)])
        loss = 0.5 * (out - y_train).pow(2).mean(dim=(1, 2))
        newly = (~torch.isfinite(loss)).cpu() & (diverged_at < 0)
        diverged_at[newly] = step
        if step in record_at:
            j = record_at[step]
            test = None if x_test is None else torch.cat([g.outputs("test") for g in groups])
            rec.store(j, out, test, loss, torch.cat([g.param_change() for g in groups]))
            if kernels is not None:
                rec.kernel_change[:, j] = kernels.change(diverged_at)
        if step == steps:
            break
        opt.step()

    _warn_diverged(diverged_at, learning_rate)
    return TrainResult(steps=np.asarray(recorded), train_outputs=rec.train, test_outputs=rec.test,
                       loss=rec.loss, param_change=rec.param_change,
                       kernel_change=rec.kernel_change if kernels is not None else None,
                       initial_kernel=kernels.initial if kernels is not None else None,
                       seeds=seeds, diverged_at=diverged_at, learning_rate=learning_rate,
                       linearized=linearized, optimizer=optimizer)


class _Recorder:
    """Preallocated storage for the recorded quantities."""

    def __init__(self, r, ensemble, n, k, n_test, dtype, device):
        self.train = torch.empty(ensemble, r, n, k, dtype=dtype, device=device)
        self.test = None if n_test is None else torch.empty(ensemble, r, n_test, k, dtype=dtype, device=device)
        self.loss = torch.empty(ensemble, r, dtype=dtype, device=device)
        self.param_change = torch.empty(ensemble, r, dtype=dtype, device=device)
        self.kernel_change = torch.zeros(ensemble, r, dtype=dtype, device=device)

    def store(self, j, train_out, test_out, loss, param_change):
        self.train[:, j] = train_out
        if test_out is not None:
            self.test[:, j] = test_out
        self.loss[:, j] = loss
        self.param_change[:, j] = param_change


class _KernelTracker:
    """Empirical NTK of every member on the training inputs, relative to its initial value."""

    def __init__(self, model: torch.nn.Module, x_train, groups: list[_Group], linearized: bool):
        self.groups, self.linearized = groups, linearized
        # kernels in float64 whatever the training dtype: their small eigenvalues matter
        self.module = copy.deepcopy(model).to(torch.float64)
        self.x = x_train.to(torch.float64)
        self.initial = torch.stack([self._kernel(g.member(i, theta0=True)) for g, i in self._members()])
        self.initial_norm = torch.linalg.matrix_norm(self.initial)

    def _members(self):
        return [(g, i) for g in self.groups for i in range(g.size)]

    def _kernel(self, params: dict) -> torch.Tensor:
        member = {name: p.to(torch.float64) for name, p in params.items()}
        return empirical_ntk(self.module, self.x, params=member, output="mean")

    def change(self, diverged_at) -> torch.Tensor:
        """‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F per member (0 for a linearised network; NaN once diverged)."""
        e = self.initial.shape[0]
        if self.linearized:
            return torch.zeros(e, dtype=torch.float64)
        out = torch.full((e,), math.nan, dtype=torch.float64)
        for j, (g, i) in enumerate(self._members()):
            if diverged_at[j] < 0:
                out[j] = torch.linalg.matrix_norm(self._kernel(g.member(i)) - self.initial[j]) / self.initial_norm[j]
        return out


def _member_seeds(seed, ensemble) -> tuple[int, ...]:
    """``(seed, seed + 1, ...)`` for ``ensemble`` members, or the given sequence of seeds."""
    if isinstance(seed, (list, tuple, range, np.ndarray)):
        seeds = tuple(_check_int(s, "seed", minimum=0) for s in seed)
        if not seeds:
            raise ValueError("seed: the sequence of seeds is empty; pass at least one seed")
        if ensemble != 1 and ensemble != len(seeds):
            raise ValueError(f"ensemble: {ensemble} does not match the {len(seeds)} seeds given; "
                             "pass one or the other")
        return seeds
    ensemble = _check_int(ensemble, "ensemble", minimum=1)
    return tuple(_check_int(seed, "seed", minimum=0) + i for i in range(ensemble))


def _norm(params: dict) -> torch.Tensor:
    """Euclidean norm over all parameters of each member: (ensemble,)."""
    return torch.sqrt(sum(p.detach().reshape(p.shape[0], -1).pow(2).sum(dim=1) for p in params.values()))


def record_steps(record, steps: int) -> list[int]:
    """The sorted steps to record: always 0 and ``steps``; ``record`` an int r (about r
    log-spaced steps), a sequence of steps in [0, steps], or None (``DEFAULT_RECORDS``)."""
    if record is None or (isinstance(record, (int, np.integer)) and not isinstance(record, bool)):
        r = DEFAULT_RECORDS if record is None else _check_int(record, "record", minimum=1)
        chosen = np.unique(np.round(np.geomspace(1, max(steps, 1), r)).astype(int)) if steps else []
    else:
        try:
            chosen = np.asarray(record)
        except Exception:
            chosen = np.asarray([None])
        if chosen.ndim != 1 or not np.issubdtype(chosen.dtype, np.integer):
            raise ValueError(f"record: expected an int or a sequence of integer steps, got {record!r}")
        if chosen.size and (chosen.min() < 0 or chosen.max() > steps):
            raise ValueError(f"record: steps must lie in [0, steps={steps}], got values from "
                             f"{chosen.min()} to {chosen.max()}")
    return sorted({0, steps, *(int(s) for s in chosen)})


def _loss_weights(optimizer, batch_size, n, ensemble, seed, dtype, device):
    """An endless iterator of (ensemble, n) loss weights: 1/n (gd) or 1/b on each member's batch (sgd)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "gd":
        if batch_size is not None:
            raise ValueError("batch_size: only used with optimizer='sgd'; full-batch 'gd' uses all "
                             f"{n} training points (pass optimizer='sgd' for mini-batches)")
        return itertools.repeat(torch.full((ensemble, n), 1.0 / n, dtype=dtype, device=device))
    if batch_size is None:
        raise ValueError("batch_size: optimizer='sgd' needs a mini-batch size, e.g. batch_size=32")
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    if batch_size > n:
        raise ValueError(f"batch_size: {batch_size} is larger than the {n} training points")
    generator = torch.Generator().manual_seed(seed)
    return minibatch_weights(n, batch_size, ensemble, generator, dtype, device)


def minibatch_weights(n: int, batch_size: int, ensemble: int, generator: torch.Generator,
                      dtype=torch.float64, device=None):
    """Yield (ensemble, n) weights, ``1/batch_size`` on each member's current mini-batch.

    Each member visits the training points in its own random order, reshuffled every epoch;
    an epoch has ``n // batch_size`` batches (a partial last batch is dropped).
    """
    per_epoch = n // batch_size
    while True:
        order = torch.argsort(torch.rand(ensemble, n, generator=generator), dim=1).to(device)
        for j in range(per_epoch):
            w = torch.zeros(ensemble, n, dtype=dtype, device=device)
            w.scatter_(1, order[:, j * batch_size:(j + 1) * batch_size], 1.0 / batch_size)
            yield w


def _check_output_width(model: torch.nn.Module, x_train, y_train) -> None:
    with torch.no_grad():
        k = model(x_train[:1]).reshape(1, -1).shape[-1]
    if k != y_train.shape[1]:
        raise ValueError(f"y_train: has {y_train.shape[1]} output column(s) but the network has {k} "
                         "outputs; make the last Dense layer's width match the labels")


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_momentum(momentum) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.floating)) \
            or not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
    return float(momentum)


def _warn_diverged(diverged_at: torch.Tensor, learning_rate: float) -> None:
    bad = torch.nonzero(diverged_at >= 0).flatten().tolist()
    if bad:
        warnings.warn(f"training diverged (non-finite loss) for {len(bad)} of {len(diverged_at)} "
                      f"network(s), first at step {int(diverged_at[bad].min())} with learning_rate="
                      f"{learning_rate:g}; their outputs are NaN/inf from then on. Lower the learning "
                      "rate below 2m/λ_max (ntkprior.dynamics.linearized.max_stable_learning_rate)", stacklevel=2)


def _progress(iterable, progress: bool, desc: str = "training"):
    if not progress:
        return iterable
    from ntkprior.progress import progress_bar
    return progress_bar(iterable, desc=desc, unit="step" if desc == "training" else "it")


# ================================================================================ width sweeps
#: the quantities a width sweep measures, each a mean over the seeds at one width
SWEEP_METRICS = ("test_distance", "param_change", "kernel_change", "init_kernel_distance")


@dataclass
class WidthSweepRow:
    """One width of a sweep; every figure is the mean over the seeds.

    Fields
    ------
    width : hidden width of every hidden Dense layer.
    test_distance : RMS over test inputs and outputs of ``f_t(X*) − f_lin,t(X*)`` at t = steps,
        divided by RMS(y_train): the trained network against the infinite-width linearised
        network (analytic NTK, discrete-GD closed form) started from the network's own f0.
    param_change : ``‖θ_t − θ_0‖ / ‖θ_0‖`` at t = steps.
    kernel_change : ``‖Θ̂_t − Θ̂_0‖_F / ‖Θ̂_0‖_F`` of the empirical NTK on x_train at t = steps.
    init_kernel_distance : ``‖Θ̂_0 − Θ‖_F / ‖Θ‖_F``, empirical against analytic NTK at init.
    loss : final ``½ · mean`` training loss.
    """

    width: int
    test_distance: float
    param_change: float
    kernel_change: float
    init_kernel_distance: float
    loss: float


@dataclass(repr=False)
class WidthSweep(Summarized):
    """Result of :func:`width_sweep`: one row per width and the fitted power laws.

    ``exponents[name]`` is the least-squares slope of log(metric) against log(width) for each
    name in ``SWEEP_METRICS``. Expected in the lazy regime (NTK parameterisation): about −1/2
    for ``test_distance`` and ``init_kernel_distance`` (the empirical NTK fluctuates around
    the analytic one like width^−1/2), about −1 for ``kernel_change`` (Dyer & Gur-Ari 2019);
    ``param_change`` goes like ‖θ_0‖^−1: −1/2 with one hidden layer, −1 with more.
    """

    rows: list[WidthSweepRow]
    exponents: dict[str, float]
    steps: int
    learning_rate: float
    seeds: tuple

    def summary(self) -> dict:
        """A JSON-ready dict: widths, seeds, steps, learning rate, rows and exponents."""
        return {"widths": [r.width for r in self.rows], "seeds": list(self.seeds), "steps": self.steps,
                "learning_rate": self.learning_rate, "rows": [vars(r) for r in self.rows],
                "exponents": self.exponents}

    def __str__(self) -> str:
        head = f"{'width':>7} " + " ".join(f"{name:>21}" for name in SWEEP_METRICS) + f" {'loss':>10}"
        lines = [f"width sweep: {len(self.seeds)} seed(s), {self.steps} steps, learning_rate={self.learning_rate:g}", head]
        for r in self.rows:
            lines.append(f"{r.width:>7} " + " ".join(f"{getattr(r, name):>21.4g}" for name in SWEEP_METRICS)
                         + f" {r.loss:>10.3g}")
        lines.append(f"{'slope':>7} " + " ".join(f"{self.exponents[name]:>21.3f}" for name in SWEEP_METRICS))
        return "\n".join(lines)


def width_sweep(arch, x_train, y_train, x_test, widths, seeds, steps: int, learning_rate: float, *,
                dtype: torch.dtype = torch.float64, progress: bool = False) -> WidthSweep:
    """Train ``arch.with_width(w)`` for each width and measure the distance to infinite width.

    For each width, the networks of ``seeds`` (an int s for seeds 0..s−1, or a sequence) are
    trained together by full-batch gradient descent (:func:`train`) and compared with the
    infinite-width prediction at the same time t = ``steps``: the analytic NTK's discrete-GD
    closed form started from each network's own initial outputs f0 (``ntkprior.dynamics.linearized``).
    Starting from the same f0 removes the O(1) randomness of the initial function, so what
    remains (the empirical kernel's deviation from the analytic one, and its motion) vanishes
    with width; against the GD-ensemble mean the distance would stay at the spread of f0.
    See :class:`WidthSweepRow` for the metrics and :class:`WidthSweep` for the exponents.
    """
    widths = [_check_int(w, "widths", minimum=1) for w in np.atleast_1d(np.asarray(widths)).tolist()]
    if len(widths) < 2 or len(set(widths)) != len(widths):
        raise ValueError(f"widths: need at least two distinct widths to fit an exponent, got {widths}")
    seeds = tuple(range(_check_int(seeds, "seeds", minimum=1))) if np.isscalar(seeds) else tuple(seeds)
    if x_test is None:
        raise ValueError("x_test: a width sweep compares test outputs; pass test inputs")
    rows = []
    for width in _progress(widths, progress, "widths"):
        net = arch.with_width(width)
        result = train(net, x_train, y_train, x_test, steps, learning_rate, seeds, record=[0, steps], dtype=dtype)
        rows.append(_sweep_row(net, width, x_train, y_train, x_test, result))
    exponents = {name: _log_log_slope(widths, [getattr(r, name) for r in rows], name) for name in SWEEP_METRICS}
    return WidthSweep(rows, exponents, steps, float(learning_rate), seeds)


def _sweep_row(arch, width, x_train, y_train, x_test, result: TrainResult) -> WidthSweepRow:
    theta = arch.kernel(x_train).ntk
    prediction = same_f0_prediction(SymmetricPSD(theta, "analytic NTK"), arch.kernel(x_test, x_train).ntk,
                                    y_train, result)
    y = as_labels(y_train, theta.shape[0], "y_train")
    distance = rms(result.test_outputs[:, -1].to(prediction.dtype) - prediction) / rms(y)
    init = torch.linalg.matrix_norm(result.initial_kernel.to(theta.dtype) - theta) / torch.linalg.matrix_norm(theta)
    return WidthSweepRow(width, float(distance.mean()), float(result.param_change[:, -1].mean()),
                         float(result.kernel_change[:, -1].mean()), float(init.mean()),
                         float(result.loss[:, -1].mean()))


def same_f0_prediction(theta: SymmetricPSD, theta_test_train, y_train, result: TrainResult) -> torch.Tensor:
    """Test outputs (ensemble, n_test, k) at the last recorded step of linearised networks with
    kernel ``theta`` (discrete-GD closed form, ``ntkprior.dynamics.linearized``) started from each trained
    member's own initial outputs f0(X), f0(X*). The eigendecomposition of ``theta`` is shared."""
    t = int(result.steps[-1])
    outs = []
    for f0, f0_test in zip(result.train_outputs[:, 0], result.test_outputs[:, 0]):
        dyn = LinearizedDynamics(theta, y_train, theta_test_train, learning_rate=result.learning_rate,
                                 f0_train=f0.to(torch.float64), f0_test=f0_test.to(torch.float64))
        outs.append(dyn.at(t).test_outputs[0])
    return torch.stack(outs)


def rms(values: torch.Tensor) -> torch.Tensor:
    """Root mean square over all but the first axis (or over everything for a 2-D array of one)."""
    v = values if values.ndim > 2 else values[None]
    return v.pow(2).reshape(v.shape[0], -1).mean(dim=1).sqrt()


def _log_log_slope(widths, values, name: str) -> float:
    w, v = np.asarray(widths, dtype=float), np.asarray(values, dtype=float)
    if not np.all(np.isfinite(v) & (v > 0)):
        warnings.warn(f"width_sweep: cannot fit a power law to {name} = {v.tolist()} (needs positive, "
                      "finite values); its exponent is NaN", stacklevel=3)
        return math.nan
    return float(np.polyfit(np.log(w), np.log(v), 1)[0])
