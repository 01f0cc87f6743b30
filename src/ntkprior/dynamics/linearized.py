"""Training dynamics in closed form: the linearised network under gradient descent.

With the loss ``½ · mean`` over the m = n·k training outputs, learning rate η and t in
steps, a network that stays linear in its parameters (infinitely wide, or linearised at
finite width with its empirical NTK Θ̂) evolves in function space as (MATH.md section 4;
Jacot et al. 2018, Lee et al. 2019)::

    f_t(X)  = Y + G_t (f0(X) − Y)
    f_t(X*) = f0(X*) + Θ*X Θ⁻¹ (I − G_t) (Y − f0(X))

with ``G_t = e^{−ηΘt/m}`` for continuous gradient flow (``method="flow"``) and
``G_t = (I − ηΘ/m)^t`` for discrete gradient descent (``method="gd"``, what a network
trained for t steps actually does). In the eigenbasis Θ = Σ λ_i v_i v_iᵀ the residual's
component along v_i decays as ``e^{−ηλ_i t/m}`` or ``(1 − ηλ_i/m)^t``: large-eigenvalue
modes are learned first, and discrete steps are stable only for ``η < 2m/λ_max``.

One eigendecomposition of Θ serves every time t: the outputs at T times cost two
matrix products with n·T·k columns, not T matrix functions. ``Θ⁻¹(I − G_t)`` is applied
as ``V diag((1 − g(λ_i, t))/λ_i) Vᵀ``, which is finite also for λ_i = 0 (limit ηt/m);
only t = ∞ needs Θ⁻¹ itself, done by a Cholesky solve.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.data import Summarized, as_inputs, as_labels, check_finite, to_tensor
from ntkprior.kernels.empirical import empirical_ntk
from ntkprior.prior.linalg import SymmetricPSD
from ntkprior.prior.sources import resolve_kernels

METHODS = ("gd", "flow")


def max_stable_learning_rate(theta, m: int | None = None) -> float:
    """The largest learning rate for which gradient descent on ``½ · mean`` squared error
    is stable in the linearised model: ``2m / λ_max(Θ)`` (MATH.md section 4).

    ``theta``: a kernel matrix (n, n) or a ``SymmetricPSD``; ``m``: the number of training
    outputs n·k (default n, one output). At or above this rate the top eigenmode of the
    residual is multiplied by ``1 − ηλ_max/m ≤ −1`` every step and does not shrink.
    """
    psd = theta if isinstance(theta, SymmetricPSD) else SymmetricPSD(theta, "theta")
    m = psd.n if m is None else m
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m: expected the number of training outputs n·k (a positive integer), got {m!r}")
    lam_max = float(psd.eigh()[0][-1])
    return math.inf if lam_max == 0 else 2.0 * m / lam_max


@dataclass(repr=False)
class Trajectory(Summarized):
    """Outputs of the linearised network at several times. Modes in descending eigenvalue order.

    Fields
    ------
    times : np.ndarray (T,)
        Times in steps (continuous time is η·t); may contain ``inf``.
    train_outputs : torch.Tensor (T, n, k)
        f_t(X).
    test_outputs : torch.Tensor (T, n_test, k) or None
        f_t(X*), None without test inputs.
    loss : torch.Tensor (T,)
        ``½ · mean`` squared training error over the m = n·k outputs.
    mode_residuals : torch.Tensor (T, n, k), or (T, n·k, 1) for a full (n, n, k, k) kernel
        The training residual f_t(X) − Y split per eigenmode: ``v_iᵀ (f_t(X) − Y)``, i.e.
        ``g(λ_i, t) · v_iᵀ (f0(X) − Y)``. Summing squares over modes gives ‖f_t(X) − Y‖².
    eigenvalues : torch.Tensor (n,) (or (n·k,))
        Eigenvalues λ_i of Θ, descending (the order of ``mode_residuals``).
    learning_rate : float
    method : str
        ``"gd"`` or ``"flow"``.
    """

    times: np.ndarray
    train_outputs: torch.Tensor
    test_outputs: torch.Tensor | None
    loss: torch.Tensor
    mode_residuals: torch.Tensor
    eigenvalues: torch.Tensor
    learning_rate: float
    method: str


class LinearizedDynamics:
    """Closed-form gradient descent / gradient flow of a linearised network with NTK Θ.

    Parameters
    ----------
    theta : (n, n) kernel on the training inputs, shared by the k outputs (array, tensor or
        ``SymmetricPSD``; its cached eigendecomposition is reused); or the full kernel
        (n, n, k, k) of a k-output network (``empirical_ntk(..., output="full")``), which is
        then flattened to (n·k, n·k): exact for a finite network, whose outputs are coupled.
    y_train : (n,) or (n, k) labels.
    theta_test_train : (n_test, n) (or (n_test, n, k, k)) kernel between test and training
        inputs, or None.
    learning_rate : η.
    method : ``"gd"`` (discrete steps, ``(I − ηΘ/m)^t``) or ``"flow"`` (``e^{−ηΘt/m}``).
    f0_train, f0_test : the initial outputs f0(X) (n, k) and f0(X*) (n_test, k); None means
        0 (the mean over random initialisations, as for the infinite-width kernel).
    diag_reg : ridge added to Θ, relative to its mean diagonal (see ``SymmetricPSD``).
    """

    def __init__(self, theta, y_train, theta_test_train=None, *, learning_rate: float,
                 method: str = "gd", f0_train=None, f0_test=None, diag_reg: float = 0.0):
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS} ('gd' for discrete steps, 'flow' for "
                             f"continuous gradient flow), got {method!r}")
        self.method = method
        self.learning_rate = check_positive(learning_rate, "learning_rate")
        full = _FullKernel.detect(theta, y_train)
        if full is not None:
            theta, theta_test_train = full.flatten_kernel(theta, "theta"), full.flatten_kernel(theta_test_train, "theta_test_train")
            y_train, f0_train, f0_test = (full.flatten_outputs(v, name) for v, name in
                                          ((y_train, "y_train"), (f0_train, "f0_train"), (f0_test, "f0_test")))
        self._full = full
        self.kernel = theta if isinstance(theta, SymmetricPSD) else SymmetricPSD(theta, "theta", diag_reg=diag_reg)
        n = self.kernel.n
        self.y = as_labels(y_train, n, "y_train")
        self.m = self.y.numel()
        self.theta_test_train = _cross_kernel(theta_test_train, n)
        self.f0_train = (torch.zeros_like(self.y) if f0_train is None
                         else _outputs(f0_train, self.y.shape, "f0_train"))
        self.f0_test = self._initial_test_outputs(f0_test)
        lam, vec = self.kernel.eigh()
        self.eigenvalues, self.eigenvectors = lam.flip(0), vec.flip(1)     # descending
        self._initial_modes = self.eigenvectors.T @ (self.f0_train - self.y)   # (n, k)
        self._test_basis = (None if self.theta_test_train is None
                            else self.theta_test_train @ self.eigenvectors)    # Θ*X V

    def _initial_test_outputs(self, f0_test):
        if self.theta_test_train is None:
            if f0_test is not None:
                raise ValueError("f0_test: given without theta_test_train; pass the test-train kernel too")
            return None
        shape = (self.theta_test_train.shape[0], self.y.shape[1])
        return torch.zeros(shape, dtype=self.y.dtype, device=self.y.device) if f0_test is None else _outputs(f0_test, shape, "f0_test")

    # ------------------------------------------------------------------ spectra
    @property
    def max_stable_learning_rate(self) -> float:
        """``2m / λ_max``: gradient descent diverges along the top mode at or above it."""
        lam_max = float(self.eigenvalues[0])
        return math.inf if lam_max == 0 else 2.0 * self.m / lam_max

    def mode_convergence(self, t) -> torch.Tensor:
        """``η λ_i t / m`` for each time (rows) and mode (columns, descending λ): a mode is
        learned once this exceeds a few (its residual is then e^{−ηλ_i t/m} of the start)."""
        times = _as_times(t, self.method)
        rate = self.learning_rate * self.eigenvalues / self.m
        return torch.from_numpy(times).to(rate.device)[:, None] * rate[None, :]

    def decay(self, t) -> torch.Tensor:
        """``g(λ_i, t)``, the factor by which mode i of the training residual is multiplied
        after t steps: ``(1 − ηλ_i/m)^t`` (gd) or ``e^{−ηλ_i t/m}`` (flow); shape (T, n)."""
        times = torch.from_numpy(_as_times(t, self.method))
        return self._decay_and_gain(times)[0]

    def _decay_and_gain(self, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g = decay factor and ``(1 − g)/λ`` (the filter of Θ⁻¹(I − G_t)), both (T, n)."""
        lam = self.eigenvalues
        x = (self.learning_rate / self.m) * lam[None, :]                  # (1, n)
        t = times[:, None].to(lam.device, lam.dtype)                      # (T, 1)
        if self.method == "flow":
            xt = torch.where(x > 0, x * t, torch.zeros_like(t))          # avoid 0·inf
            one_minus_g = -torch.expm1(-xt)
        else:
            stable = x < 1
            log_factor = torch.log1p(-torch.where(stable, x, torch.zeros_like(x)))
            expo = torch.where(log_factor < 0, log_factor * t, torch.zeros_like(t))
            one_minus_g = torch.where(stable, -torch.expm1(expo), 1 - torch.pow(1 - x, t))
        g = 1 - one_minus_g
        gain = torch.where(lam > 0, one_minus_g / torch.where(lam > 0, lam, 1.0),
                           (self.learning_rate / self.m) * t)
        return g, gain

    # ------------------------------------------------------------------ outputs
    def at(self, t) -> Trajectory:
        """Outputs, loss and per-mode residuals at the times ``t`` (scalar or 1-D, in steps;
        non-negative, integers for ``"gd"``, ``inf`` allowed: the converged solution)."""
        times = _as_times(t, self.method)
        self._warn_if_unstable()
        g, gain = self._decay_and_gain(torch.from_numpy(times))
        modes = g[:, :, None] * self._initial_modes[None]                     # (T, n, k)
        train = self.y[None] + _combine(self.eigenvectors, modes)
        test = None
        if self._test_basis is not None:
            test = self.f0_test[None] - _combine(self._test_basis, gain[:, :, None] * self._initial_modes[None])
            infinite = np.isinf(times)
            if infinite.any():
                test[torch.from_numpy(infinite).to(test.device)] = self._converged_test_outputs()
        loss = 0.5 * modes.pow(2).sum(dim=(1, 2)) / self.m
        if self._full is not None:
            train, test = self._full.unflatten(train), self._full.unflatten(test)
        return Trajectory(times=times, train_outputs=train, test_outputs=test, loss=loss,
                          mode_residuals=modes, eigenvalues=self.eigenvalues,
                          learning_rate=self.learning_rate, method=self.method)

    def _converged_test_outputs(self) -> torch.Tensor:
        """t = ∞: ``f0(X*) + Θ*X Θ⁻¹ (Y − f0(X))`` by a Cholesky solve (MATH.md section 4)."""
        return self.f0_test + self.theta_test_train @ self.kernel.solve(self.y - self.f0_train)

    def _warn_if_unstable(self) -> None:
        if self.method == "gd" and self.learning_rate >= self.max_stable_learning_rate:
            unstable = int((self.learning_rate * self.eigenvalues / self.m >= 2).sum())
            warnings.warn(f"learning_rate={self.learning_rate:g} is at or above the stable maximum "
                          f"2m/λ_max = {self.max_stable_learning_rate:.4g} (m={self.m}, λ_max="
                          f"{float(self.eigenvalues[0]):.4g}): {unstable} mode(s) of the residual grow "
                          "every step and the discrete closed form diverges", stacklevel=3)


class _FullKernel:
    """A full multi-output kernel (n, n, k, k) handled as one (n·k, n·k) kernel on flattened
    outputs: row ``i·k + c`` is output c at input i. The loss ``½ · mean`` over the n·k outputs
    and hence m are unchanged."""

    def __init__(self, k: int):
        self.k = k

    @classmethod
    def detect(cls, theta, y_train):
        if isinstance(theta, SymmetricPSD) or np.ndim(theta) != 4:
            return None
        shape = tuple(theta.shape)
        if shape[0] != shape[1] or shape[2] != shape[3]:
            raise ValueError(f"theta: a full kernel has shape (n, n, k, k), got {shape}")
        k = shape[2]
        cols = 1 if np.ndim(y_train) == 1 else np.shape(y_train)[-1]
        if cols != k:
            raise ValueError(f"y_train: has {cols} output column(s) but the full kernel theta is for "
                             f"k = {k} outputs (shape {shape})")
        return cls(k)

    def flatten_kernel(self, kernel, name: str):
        if kernel is None:
            return None
        t = to_tensor(kernel, name)
        if t.ndim != 4 or t.shape[2:] != (self.k, self.k):
            raise ValueError(f"{name}: expected a full kernel of shape (n1, n2, {self.k}, {self.k}) "
                             f"like theta, got {tuple(t.shape)}")
        n1, n2 = t.shape[:2]
        return t.permute(0, 2, 1, 3).reshape(n1 * self.k, n2 * self.k)

    def flatten_outputs(self, values, name: str):
        if values is None:
            return None
        t = to_tensor(values, name)
        if t.ndim != 2 or t.shape[1] != self.k:
            raise ValueError(f"{name}: expected shape (n, {self.k}), got {tuple(t.shape)}")
        return t.reshape(-1, 1)

    def unflatten(self, outputs):
        return None if outputs is None else outputs.reshape(outputs.shape[0], -1, self.k)


def linearized_dynamics(arch_or_kernel, x_train, y_train, x_test=None, *, learning_rate: float,
                        method: str = "gd", f0=None, diag_reg: float = 0.0) -> LinearizedDynamics:
    """Closed-form dynamics for the NTK of ``arch_or_kernel`` on these inputs.

    ``arch_or_kernel`` is anything ``ntkprior.prior.sources.resolve_kernels`` accepts: an
    architecture (its analytic infinite-width NTK), a ``torch.nn.Module`` (its full empirical
    NTK (n, n, k, k) at its current parameters: one finite network, linearised exactly around
    them), a callable
    ``k(x1, x2)``, or precomputed matrices (``Θ``, ``(Θ, Θ*X)`` or ``KernelBlocks``; the
    inputs may then be None).

    ``f0`` is None (initial outputs 0: the mean over random initialisations), ``"network"``
    (the module's own outputs f0(X), f0(X*); only for a module), or a pair ``(f0(X), f0(X*))``.
    """
    if isinstance(arch_or_kernel, torch.nn.Module):
        theta, theta_tx = _full_empirical_kernels(arch_or_kernel, x_train, x_test)
    else:
        blocks = resolve_kernels(arch_or_kernel).blocks(["ntk"], x_train, x_test, test=None)["ntk"]
        theta, theta_tx = blocks.train, blocks.test_train
    f0_train, f0_test = _initial_outputs(arch_or_kernel, f0, x_train, x_test)
    return LinearizedDynamics(theta, y_train, theta_tx, learning_rate=learning_rate,
                              method=method, f0_train=f0_train, f0_test=f0_test, diag_reg=diag_reg)


def _full_empirical_kernels(model: torch.nn.Module, x_train, x_test):
    """The module's full empirical NTK (n, n, k, k) on the training inputs, and test-train block.

    The full kernel (not the trace over outputs) makes the linearisation exact for k > 1 outputs.
    """
    if x_train is None:
        raise ValueError("x_train: is required to compute the empirical NTK of a module")
    theta = empirical_ntk(model, x_train, output="full")
    theta_tx = None if x_test is None else empirical_ntk(model, x_test, x_train, output="full")
    return theta.to(torch.float64), (None if theta_tx is None else theta_tx.to(torch.float64))


def _initial_outputs(arch_or_kernel, f0, x_train, x_test):
    """(f0(X), f0(X*)) from the ``f0`` argument: None, "network" or a pair of arrays."""
    if f0 is None:
        return None, None
    if isinstance(f0, str):
        if f0 != "network":
            raise ValueError(f"f0: expected None, 'network' or a pair (f0_train, f0_test), got {f0!r}")
        if not isinstance(arch_or_kernel, torch.nn.Module):
            raise ValueError("f0: 'network' needs a torch.nn.Module as arch_or_kernel (its own initial "
                             "outputs); for an architecture or matrices pass f0=(f0_train, f0_test) arrays")
        return tuple(None if x is None else _network_outputs(arch_or_kernel, x, name)
                     for x, name in ((x_train, "x_train"), (x_test, "x_test")))
    if not (isinstance(f0, (tuple, list)) and len(f0) == 2):
        raise ValueError(f"f0: expected None, 'network' or a pair (f0_train, f0_test), got {type(f0).__name__}")
    return f0[0], f0[1]


def _network_outputs(model: torch.nn.Module, x, name: str) -> torch.Tensor:
    """The model's outputs on x as a float64 (n, k) tensor (inputs cast to the model's dtype)."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        out = model(as_inputs(x, name, dtype=dtype))
    return out.detach().to(torch.float64).reshape(out.shape[0], -1)


def _combine(basis: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``basis @ coeffs[t]`` for every t as one matrix product: (p, n) x (T, n, k) -> (T, p, k)."""
    T, n, k = coeffs.shape
    flat = coeffs.permute(1, 0, 2).reshape(n, T * k)
    return (basis @ flat).reshape(basis.shape[0], T, k).permute(1, 0, 2)


def _as_times(t, method: str) -> np.ndarray:
    """Validate times: a scalar or 1-D array, >= 0 (``inf`` allowed); integers for discrete steps."""
    try:
        times = np.atleast_1d(np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"t: expected a number or a 1-D array of times (steps), got {t!r}") from None
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"t: expected a number or a non-empty 1-D array of times, got shape {times.shape}")
    if np.isnan(times).any() or (times < 0).any():
        raise ValueError(f"t: times must be >= 0 (steps since initialisation), got {times[np.isnan(times) | (times < 0)][:3]}")
    if method == "gd":
        finite = times[np.isfinite(times)]
        if (finite != np.round(finite)).any():
            raise ValueError(f"t: method='gd' counts discrete steps, so times must be integers, got "
                             f"{finite[finite != np.round(finite)][:3]}; use method='flow' for continuous time")
    return times


def check_positive(value, name: str) -> float:
    """A finite number > 0 (a learning rate), as a float; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def _cross_kernel(matrix, n: int):
    if matrix is None:
        return None
    t = check_finite(to_tensor(matrix, "theta_test_train"), "theta_test_train")
    if t.ndim != 2 or t.shape[1] != n:
        raise ValueError(f"theta_test_train: expected shape (n_test, {n}) (test rows, training columns), "
                         f"got {tuple(t.shape)}")
    return t


def _outputs(values, shape: tuple, name: str) -> torch.Tensor:
    t = check_finite(to_tensor(values, name), name)
    if t.ndim == 1 and shape[1] == 1:
        t = t[:, None]
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (one row per input, one column per output), "
                         f"got {tuple(t.shape)}")
    return t
