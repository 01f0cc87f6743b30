"""Learning curves from the spectrum: the test error of kernel regression against the number of
training points, predicted from the eigenvalues of the kernel on a pool of inputs, and measured.

MATH.md section 5 (Bordelon, Canatar & Pehlevan, ICML 2020; Canatar, Bordelon & Pehlevan, Nature
Communications 2021; equivalently Simon, Dickens, Karkada & DeWeese 2021, "eigenlearning").

The pool of N inputs stands for the data distribution (the uniform distribution over the pool). The
kernel's integral operator under it has eigenvalues ``eta_rho = lambda_rho / N`` (``lambda_rho`` those
of the Gram matrix ``K`` on the pool) and eigenfunctions ``phi_rho = sqrt(N) u_rho`` on the pool (unit
eigenvectors ``u_rho``). A target y has coefficients ``v_rho = u_rho . y / sqrt(N)``, so that
``E[y^2] = ||y||^2 / N = sum_rho v_rho^2``. Kernel regression on p points drawn from the pool,
``f = K(., X)(K(X, X) + ridge I)^{-1} y_X``, has expected test error (over the draw of the p points)

    kappa = ridge + kappa sum_rho eta_rho / (p eta_rho + kappa)        (self-consistent; unique root)
    L_rho = p eta_rho / (p eta_rho + kappa)                            (learnability of mode rho)
    gamma = (1/p) sum_rho L_rho^2
    E_g   = [ sum_rho (1 - L_rho)^2 v_rho^2 + sigma^2 gamma ] / (1 - gamma)

with label noise of standard deviation sigma on the training labels (the error is against the
clean target). At zero ridge ``sum_rho L_rho = p`` (conservation); in general ``sum L = p (1 -
ridge / kappa)``. A mode is learned once p exceeds roughly the number of modes with a larger
eigenvalue: here "learned" means ``L_rho >= 1/2`` (``p eta_rho >= kappa``).

At zero ridge with p at least the number R of non-zero eigenvalues, kappa = 0: every mode of
non-zero eigenvalue is learned exactly (L = 1) and the others not at all (L = 0); the prediction
is 0 for a noiseless target in the kernel's span, and ``(power outside the span + sigma^2 R/p) /
(1 - R/p)`` otherwise (infinite at p = R: the interpolation peak).

The prediction is the error under the pool distribution, which includes the p training points.
On the N - p held-out points instead (what :attr:`LearningCurve.measured` measures) the error of an
interpolant of clean labels (zero ridge, no noise: zero error on the training points) is
``E_rest = E_g / (1 - p/N)``: ``held_out``. Measured on the boolean cube {±1}^8 (N = 256, the ReLU
NTK with bias, 20 draws) it agrees with kernel regression to 5 % up to p = 250, where ``E_g`` alone is
40x too small. The two agree for p << N. With a ridge or noise the in-sample error is not zero and
no held-out prediction is given (compare with ``predicted`` at p << N).

``ridge`` is relative by default (the project's convention, like ``diag_reg``): the absolute
ridge is ``ridge * mean(diag K)`` over the pool, ``mean(diag K) = tr(K)/N = sum_rho eta_rho``.

Stored kernels and pools beyond ``DENSE_LIMIT`` give only their top k eigenpairs. The remaining
eigenvalue mass ``T = tr(K)/N - sum_top eta`` and target power ``E[y^2] - sum_top v^2`` are
treated as not learned (``p eta << kappa`` for every mode beyond k), so that they act as an extra
ridge T and an extra unlearned error: exact in the limit of a well-resolved top of the
spectrum, and a warning says when the smallest kept mode is itself being learned.

One eigendecomposition (:func:`pool_spectrum`) serves every training-set size and every target:
the curve for one more target costs one product ``U^T y``, one more size a scalar root.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.linalg
import torch

from ntkprior.data import as_inputs, as_labels
from ntkprior.prior.linalg import is_stored_kernel, user_stacklevel
from ntkprior.prior.sources import _StoredSource, check_kernel_name, resolve_kernels

__all__ = ["PoolSpectrum", "LearningCurve", "MeasuredCurve", "TruncationWarning", "pool_spectrum",
           "learning_curve", "measure_learning_curve", "spectral_learning_curve", "training_subsets",
           "LEARNED"]

#: a mode counts as learned once its learnability reaches this (p eta_rho >= kappa)
LEARNED = 0.5
#: warn when the smallest kept mode of a truncated spectrum is learned (the modes beyond it start to be)
_TRUNCATION_LEARNABILITY = LEARNED
#: bound on the bisection steps; a bracket of 10^±300 reaches float precision in ~65
_MAX_BISECTIONS = 200
#: elements of the (sizes x modes) learnability array computed at once
_CHUNK_ELEMENTS = 1 << 22
_EPS = np.finfo(np.float64).eps


class TruncationWarning(UserWarning):
    """The top-k eigenpairs of a truncated spectrum do not resolve the modes being learned."""


# ============================================================================ the theory
def _solve_kappa(eta: np.ndarray, p: np.ndarray, ridge: float) -> np.ndarray:
    """The root kappa > 0 of ``g(kappa) = 1 - ridge/kappa - sum_rho eta_rho/(p eta_rho + kappa)``
    for each p, or 0 where there is none (ridge 0 and p >= R, the number of non-zero eta).

    g increases strictly from g(0+) (-inf if ridge > 0, ``1 - R/p`` if not) to 1, so the root is
    unique; it is bracketed by proven bounds and found by bisection in log kappa (every step halves
    the bracket, so the accuracy is that of the floating-point numbers after a bounded number of
    steps). Upper bound: ``g(ridge + sum eta) >= 0``. Lower bound: ``g(ridge) <= 0``; with no ridge,
    ``g(eta_min (R - p)/2) < 0`` because then each of the R terms is at least ``2/(R + p)``.
    """
    positive = eta[eta > 0]
    r = positive.shape[0]
    kappa = np.zeros(p.shape[0])
    if r == 0:                                   # nothing to learn: kappa = ridge solves g = 0
        return np.full(p.shape[0], float(ridge))
    solvable = p < r if ridge == 0 else np.ones(p.shape[0], dtype=bool)
    if not solvable.any():
        return kappa
    q = p[solvable].astype(np.float64)[:, None]
    hi = np.full(q.shape[0], ridge + positive.sum())
    lo = np.full(q.shape[0], ridge) if ridge > 0 else positive.min() * (r - q[:, 0]) / 2
    log_lo, log_hi = np.log(lo), np.log(hi)
    for _ in range(_MAX_BISECTIONS):
        mid = 0.5 * (log_lo + log_hi)
        k = np.exp(mid)
        g = 1.0 - ridge / k - (positive[None, :] / (q * positive[None, :] + k[:, None])).sum(axis=1)
        below = g < 0
        log_lo = np.where(below, mid, log_lo)
        log_hi = np.where(below, log_hi, mid)
        if np.all(log_hi - log_lo <= 4 * _EPS * np.maximum(1.0, np.abs(log_hi))):
            break
    kappa[solvable] = np.exp(0.5 * (log_lo + log_hi))
    return kappa


def _learnabilities(eta: np.ndarray, p: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """``L_rho = p eta_rho / (p eta_rho + kappa)``, (sizes, modes); with kappa = 0: 1 where eta > 0."""
    pe = p.astype(np.float64)[:, None] * eta[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pe / (pe + kappa[:, None])
    return np.where(eta[None, :] > 0, out, 0.0)


def _test_error(L: np.ndarray, p: np.ndarray, power: np.ndarray, unlearned: float,
                noise_var: float) -> tuple[np.ndarray, np.ndarray]:
    """``(E_g, gamma)``: ``E_g = [sum (1 - L)^2 v^2 + unlearned + sigma^2 gamma] / (1 - gamma)``.

    ``gamma = sum L^2 / p`` reaches 1 only at kappa = 0 and p = R; there E_g is 0 when the numerator
    vanishes (to round-off of the target power) and infinite otherwise.
    """
    gamma = (L ** 2).sum(axis=1) / p
    numerator = ((1.0 - L) ** 2 * power[None, :]).sum(axis=1) + unlearned + noise_var * gamma
    at_peak = gamma >= 1.0 - 4 * _EPS * L.shape[1]
    roundoff = 1e3 * _EPS * (power.sum() + unlearned + noise_var)
    with np.errstate(divide="ignore"):
        error = np.where(at_peak, np.where(numerator <= roundoff, 0.0, np.inf),
                         numerator / np.where(at_peak, 1.0, 1.0 - gamma))
    return error, gamma


def check_train_sizes(n_train, limit: int | None, what: str = "n_train") -> np.ndarray:
    """Training-set sizes: positive integers, each below the pool size ``limit`` (if any)."""
    values = np.atleast_1d(np.asarray(n_train if not isinstance(n_train, torch.Tensor) else n_train.cpu()))
    if values.size == 0 or values.ndim != 1:
        raise ValueError(f"{what}: expected a non-empty list of training-set sizes, e.g. [10, 20, 50], "
                         f"got {n_train!r}")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number) \
            or not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise ValueError(f"{what}: training-set sizes must be whole numbers, got {n_train!r}")
    values = values.astype(np.int64)
    if values.min() < 1:
        raise ValueError(f"{what}: training-set sizes must be at least 1, got {int(values.min())}")
    if limit is not None and values.max() >= limit:
        raise ValueError(f"{what}: a training set of {int(values.max())} points leaves no point of the "
                         f"pool of {limit} to test on; use sizes below {limit} (or a larger pool)")
    return values


def _check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _absolute_ridge(ridge, reg: str, scale: float) -> float:
    """The ridge added to the p x p Gram matrix: ``ridge * scale`` (relative) or ``ridge``."""
    ridge = _check_nonnegative(ridge, "ridge")
    if reg not in ("relative", "absolute"):
        raise ValueError(f"reg: expected 'relative' (ridge x mean diagonal of the pool kernel) or "
                         f"'absolute', got {reg!r}")
    return ridge * scale if reg == "relative" else ridge


@dataclass(frozen=True)
class MeasuredCurve:
    """Kernel regression on random training subsets of the pool, tested on the rest of the pool.

    ``mse`` (sizes, draws): mean squared error against the clean target over the held-out points
    (and outputs) of each draw; ``mean`` and ``std`` (sample standard deviation, ddof 1) over draws.
    """

    n_train: np.ndarray
    mse: torch.Tensor
    seed: int

    @property
    def draws(self) -> int:
        return self.mse.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        return self.mse.mean(dim=1)

    @property
    def std(self) -> torch.Tensor:
        return self.mse.std(dim=1) if self.draws > 1 else torch.zeros(self.mse.shape[0], dtype=self.mse.dtype)

    def __repr__(self) -> str:
        return (f"MeasuredCurve(n_train={self.n_train.tolist()}, draws={self.draws}, "
                f"mean=[{', '.join(f'{float(v):.3g}' for v in self.mean)}])")


@dataclass(frozen=True)
class LearningCurve:
    """The predicted test error of kernel regression for each training-set size (module docstring).

    Attributes
    ----------
    n_train : (S,) int array
    predicted : (S,) tensor
        Predicted test MSE E_g (mean over outputs), against the clean target.
    learnability : (S, M) tensor
        ``L_rho`` of every kept mode (largest eigenvalue first) at each size.
    kappa, gamma : (S,) tensors
    learned_modes : (S,) int tensor
        Number of modes with ``L_rho >= 1/2`` (``p eta_rho >= kappa``): the effective number of
        learned modes.
    eigenvalues : (M,) tensor
        ``eta_rho`` (eigenvalues of K/N, descending; round-off ones set to 0).
    mode_power : (M,) tensor
        ``v_rho^2`` (mean over the outputs of a multi-output target).
    target_power : float
        ``E[y^2]`` over the pool (mean over outputs); ``predicted / target_power`` is the relative error.
    ridge : float
        The absolute ridge lambda on the p x p Gram matrix.
    noise : float
        Standard deviation of the label noise on the training labels.
    tail : float
        Eigenvalue mass beyond the kept modes (0 for a full decomposition).
    pool_size : int or None
        N, for curves from a pool.
    held_out : (S,) tensor or None
        Predicted test MSE on the N - p pool points left out of training, ``E_g / (1 - p/N)``, for
        an interpolant of clean labels (zero ridge, no noise; None otherwise; module docstring): the
        prediction to compare with ``measured``.
    measured : MeasuredCurve or None
        Kernel regression on subsets of the pool (``measured=True``).
    """

    n_train: np.ndarray
    predicted: torch.Tensor
    learnability: torch.Tensor
    kappa: torch.Tensor
    gamma: torch.Tensor
    learned_modes: torch.Tensor
    eigenvalues: torch.Tensor
    mode_power: torch.Tensor
    target_power: float
    ridge: float
    noise: float
    tail: float = 0.0
    kind: str = "kernel"
    pool_size: int | None = None
    held_out: torch.Tensor | None = None
    measured: MeasuredCurve | None = None

    @property
    def relative(self) -> torch.Tensor:
        """``predicted / E[y^2]``: 1 is the error of predicting 0."""
        return self.predicted / self.target_power if self.target_power > 0 else self.predicted

    def samples_needed(self, fraction: float = 0.1, *, source: str = "predicted") -> int | None:
        """The first size of ``n_train`` whose test error is at most ``fraction * E[y^2]``: of the
        prediction (``source="predicted"``), of the held-out prediction (``"held_out"``) or of the mean
        measured error (``"measured"``); None if no size reaches it."""
        if not (isinstance(fraction, (int, float)) and 0 < fraction):
            raise ValueError(f"fraction: expected a positive number (of the target power), got {fraction!r}")
        if source == "predicted":
            errors = self.predicted
        elif source == "held_out" and self.held_out is not None:
            errors = self.held_out
        elif source == "measured":
            if self.measured is None:
                raise ValueError("source: this curve was not measured; call learning_curve(..., measured=True)")
            errors = self.measured.mean
        else:
            raise ValueError(f"source: expected 'predicted', 'measured' or (for a pool) 'held_out', "
                             f"got {source!r}")
        hit = torch.nonzero(errors <= fraction * self.target_power)
        return int(self.n_train[int(hit[0])]) if hit.numel() else None

    def to_text(self) -> str:
        """A table: size, predicted error (and relative), measured mean ± std, learned modes, kappa."""
        head = f"{'n':>7}  {'predicted':>10}  {'relative':>8}"
        head += f"  {'held out':>10}" if self.held_out is not None else ""
        head += f"  {'measured':>10}  {'± std':>9}" if self.measured is not None else ""
        lines = [f"learning curve of the {self.kind} ({len(self.eigenvalues)} modes, E[y²] = "
                 f"{self.target_power:.4g}, ridge {self.ridge:.3g}, noise {self.noise:.3g})",
                 head + f"  {'learned modes':>13}  {'κ':>9}"]
        for i, n in enumerate(self.n_train):
            row = f"{int(n):>7}  {float(self.predicted[i]):>10.4g}  {float(self.relative[i]):>8.3g}"
            row += f"  {float(self.held_out[i]):>10.4g}" if self.held_out is not None else ""
            if self.measured is not None:
                row += f"  {float(self.measured.mean[i]):>10.4g}  {float(self.measured.std[i]):>9.2g}"
            lines.append(row + f"  {int(self.learned_modes[i]):>13}  {float(self.kappa[i]):>9.3g}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        pred = ", ".join(f"{float(v):.3g}" for v in self.predicted[:6]) + (", ..." if len(self.n_train) > 6 else "")
        meas = "" if self.measured is None else \
            ", measured=[" + ", ".join(f"{float(v):.3g}" for v in self.measured.mean[:6]) + \
            (", ...]" if len(self.n_train) > 6 else "]")
        return (f"LearningCurve(kind={self.kind!r}, modes={len(self.eigenvalues)}, "
                f"n_train={self.n_train[:6].tolist()}{'...' if len(self.n_train) > 6 else ''}, "
                f"predicted=[{pred}]{meas})")


def _curve(eta: np.ndarray, power: np.ndarray, sizes: np.ndarray, ridge: float, noise: float,
           tail: float, tail_power: float, target_power: float, kind: str,
           pool_size: int | None = None) -> LearningCurve:
    """The theory for sizes, in chunks of sizes so that (sizes x modes) stays small."""
    chunk = max(1, _CHUNK_ELEMENTS // max(1, eta.shape[0]))
    parts = []
    for start in range(0, sizes.shape[0], chunk):
        p = sizes[start:start + chunk]
        kappa = _solve_kappa(eta, p, ridge + tail)
        L = _learnabilities(eta, p, kappa)
        error, gamma = _test_error(L, p, power, tail_power, noise ** 2)
        parts.append((error, L, kappa, gamma))
    error, L, kappa, gamma = (np.concatenate(a) for a in zip(*parts))
    if tail > 0 and eta.shape[0] and L[:, -1].max() > _TRUNCATION_LEARNABILITY:
        i = int(np.argmax(L[:, -1] > _TRUNCATION_LEARNABILITY))
        warnings.warn(f"learning_curve: the smallest of the {eta.shape[0]} kept eigenvalues already has "
                      f"learnability {L[i, -1]:.2f} at n = {int(sizes[i])}, so the {tail:.3g} of eigenvalue "
                      "mass beyond them is partly learned too and the prediction overestimates the error "
                      "from there on; pass a larger k", TruncationWarning, stacklevel=user_stacklevel())
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))      # noqa: E731
    return LearningCurve(n_train=sizes, predicted=t(error), learnability=t(L), kappa=t(kappa), gamma=t(gamma),
                         learned_modes=t((L >= LEARNED).sum(axis=1)), eigenvalues=t(eta),
                         mode_power=t(power), target_power=float(target_power), ridge=float(ridge),
                         noise=float(noise), tail=float(tail), kind=kind, pool_size=pool_size,
                         held_out=None if pool_size is None or ridge + tail > 0 or noise > 0 else
                         t(error / (1.0 - sizes / pool_size)))


def spectral_learning_curve(eigenvalues, coefficients, n_train, *, ridge: float = 0.0,
                            reg: str = "relative", noise: float = 0.0, tail: float = 0.0,
                            tail_power: float = 0.0) -> LearningCurve:
    """The learning curve from a spectrum given directly: eigenvalues ``eta_rho`` of the kernel's
    integral operator under the data distribution and the target's coefficients ``v_rho`` on its
    orthonormal eigenfunctions (one entry per mode, so repeat an eigenvalue for its multiplicity).

    For an analytic spectrum, e.g. the Funk–Hecke eigenvalues of a dot-product kernel on a sphere
    (MATH.md section 5). ``coefficients`` (M,) or (M, k); ``ridge`` relative to ``sum eta + tail``
    (the mean diagonal) unless ``reg="absolute"``; ``tail``, ``tail_power``: eigenvalue mass and
    target power of modes not listed, treated as unlearned (module docstring). Any size p >= 1.
    """
    eta = torch.as_tensor(eigenvalues, dtype=torch.float64).detach().cpu().numpy()
    v = torch.as_tensor(coefficients, dtype=torch.float64).detach().cpu().numpy()
    if eta.ndim != 1 or eta.size == 0 or not np.all(np.isfinite(eta)) or (eta < 0).any():
        raise ValueError("eigenvalues: expected a non-empty 1-D array of finite numbers >= 0")
    v = v[:, None] if v.ndim == 1 else v
    if v.ndim != 2 or v.shape[0] != eta.shape[0] or not np.all(np.isfinite(v)):
        raise ValueError(f"coefficients: expected {eta.shape[0]} finite values (one per eigenvalue), or "
                         f"({eta.shape[0]}, k), got shape {tuple(v.shape)}")
    tail = _check_nonnegative(tail, "tail")
    tail_power = _check_nonnegative(tail_power, "tail_power")
    order = np.argsort(-eta, kind="stable")
    eta, power = eta[order], (v[order] ** 2).mean(axis=1)
    lam = _absolute_ridge(ridge, reg, float(eta.sum()) + tail)
    return _curve(eta, power, check_train_sizes(n_train, None), lam, _check_nonnegative(noise, "noise"), tail,
                  tail_power, float(power.sum()) + tail_power, "kernel")


# ============================================================================ measured
def training_subsets(pool_size: int, n: int, draws: int, seed: int):
    """``draws`` random splits of the pool into n training and ``pool_size - n`` test indices.

    Reproducible per (seed, n), whatever other sizes are drawn: the generator is
    ``numpy.random.default_rng((seed, n))``. Yields ``(train_idx, test_idx, rng)``, the generator
    then used for that draw's label noise.
    """
    rng = np.random.default_rng((int(seed), int(n)))
    for _ in range(draws):
        order = rng.permutation(pool_size)
        yield order[:n], order[n:], rng


def check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


def _kernel_regression_mse(K: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                           ridge: float, noise: np.ndarray) -> float:
    """Test MSE of ``f = K(test, X)(K(X, X) + ridge I)^+ (y_X + noise)`` against ``y_test``.

    The pseudo-inverse through the eigendecomposition of the p x p block (eigenvalues below
    ``p eps lambda_max`` dropped at zero ridge) is the ridgeless limit even where K(X, X) is
    singular (p above the kernel's rank), as the theory's kappa -> 0 is.
    """
    w, u = scipy.linalg.eigh(K[np.ix_(train, train)], driver="evr", check_finite=False)
    shifted = w + ridge
    keep = shifted > max(train.shape[0] * _EPS * max(float(w[-1]), 0.0), 0.0) if ridge == 0 else shifted > 0
    alpha = u[:, keep] @ ((u[:, keep].T @ (y[train] + noise)) / shifted[keep, None])
    residual = K[np.ix_(test, train)] @ alpha - y[test]
    return float(np.mean(residual ** 2))


def _measure(K: torch.Tensor, y: torch.Tensor, sizes: np.ndarray, ridge: float, noise: float, draws,
             seed) -> MeasuredCurve:
    """Test MSE of kernel regression for ``draws`` subsets of each size (:func:`training_subsets`)."""
    draws, seed = check_count(draws, "draws"), check_seed(seed)
    K, labels = K.cpu().numpy(), y.cpu().numpy()
    mse = np.empty((sizes.shape[0], draws))
    for i, n in enumerate(sizes):
        for j, (train, test, rng) in enumerate(training_subsets(K.shape[0], int(n), draws, seed)):
            eps = noise * rng.standard_normal((int(n), labels.shape[1]))
            mse[i, j] = _kernel_regression_mse(K, labels, train, test, ridge, eps)
    return MeasuredCurve(n_train=sizes, mse=torch.from_numpy(mse), seed=seed)


# ============================================================================ the pool spectrum
@dataclass(frozen=True)
class PoolSpectrum:
    """The eigendecomposition of a kernel on a pool of inputs, ready for learning curves.

    ``eigenvalues`` (M,): ``eta_rho = lambda_rho / N``, descending, those at the round-off level
    ``N eps lambda_max`` set to 0; ``vectors`` (N, M) orthonormal; ``mean_diagonal`` ``tr(K)/N``;
    ``matrix``: the pool kernel (N, N) when it is in memory (for measured curves); ``store``: the
    stored kernel it came from, if any. Build one with :func:`pool_spectrum`.
    """

    eigenvalues: torch.Tensor
    vectors: torch.Tensor
    mean_diagonal: float
    kind: str
    x: torch.Tensor | None = None
    matrix: torch.Tensor | None = field(default=None, repr=False)
    store: object = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Pool size N."""
        return self.vectors.shape[0]

    @property
    def complete(self) -> bool:
        return self.vectors.shape[1] == self.n

    @property
    def tail(self) -> float:
        """Eigenvalue mass beyond the kept modes, ``tr(K)/N - sum eta`` (0 when all are kept)."""
        return 0.0 if self.complete else max(self.mean_diagonal - float(self.eigenvalues.sum()), 0.0)

    def __repr__(self) -> str:
        top = ", ".join(f"{float(v):.4g}" for v in self.eigenvalues[:4])
        return (f"PoolSpectrum(kind={self.kind!r}, pool={self.n}, modes={self.vectors.shape[1]}, "
                f"eigenvalues=[{top}, ...], tail={self.tail:.3g})")

    def _target(self, target) -> torch.Tensor:
        y = as_labels(target, self.n, "target")
        return y.to(self.vectors.device)

    def coefficients(self, target) -> torch.Tensor:
        """``v_rho = u_rho . y / sqrt(N)`` for each kept mode: (M, k) for a target (N,) or (N, k)."""
        return (self.vectors.T @ self._target(target)) / math.sqrt(self.n)

    def curve(self, target, n_train, *, ridge: float = 0.0, reg: str = "relative", noise: float = 0.0,
              measured: bool = False, draws: int = 10, seed: int = 0) -> LearningCurve:
        """The predicted learning curve of ``target`` (and the measured one with ``measured=True``)."""
        y = self._target(target)
        sizes = check_train_sizes(n_train, self.n)
        noise = _check_nonnegative(noise, "noise")
        lam = _absolute_ridge(ridge, reg, self.mean_diagonal)
        power = ((self.vectors.T @ y) ** 2 / self.n).mean(dim=1).cpu().numpy()
        target_power = float((y ** 2).mean())
        tail_power = 0.0 if self.complete else max(target_power - float(power.sum()), 0.0)
        curve = _curve(self.eigenvalues.cpu().numpy(), power, sizes, lam, noise, self.tail, tail_power,
                       target_power, self.kind, self.n)
        if measured:
            curve = replace(curve, measured=_measure(self.kernel_matrix(), y, sizes, lam, noise, draws, seed))
        return curve

    def measure(self, target, n_train, *, ridge: float = 0.0, reg: str = "relative", noise: float = 0.0,
                draws: int = 10, seed: int = 0) -> MeasuredCurve:
        """Kernel regression on ``draws`` random subsets of each size, tested on the rest of the pool."""
        lam = _absolute_ridge(ridge, reg, self.mean_diagonal)
        return _measure(self.kernel_matrix(), self._target(target), check_train_sizes(n_train, self.n), lam,
                        _check_nonnegative(noise, "noise"), draws, seed)

    def kernel_matrix(self) -> torch.Tensor:
        """The pool kernel (N, N); a stored kernel is loaded into memory (``StoredKernel.load``)."""
        if self.matrix is not None:
            return self.matrix
        if self.store is not None:
            return self.store.load()
        raise ValueError("measured: this PoolSpectrum kept no kernel matrix; build it with pool_spectrum()")


def _pool_kernel(arch_or_kernel, x_pool, kind: str, progress: bool):
    """The kernel on the pool, computed once: (source, validated x_pool or None, in-memory matrix or
    None, stored kernel or None, mean diagonal)."""
    check_kernel_name(kind, "kind")
    source = resolve_kernels(arch_or_kernel, progress=progress)
    if x_pool is not None:
        x_pool = as_inputs(x_pool, "x_pool")
    elif not (source.precomputed or isinstance(source, _StoredSource)):      # those know their inputs
        raise ValueError("x_pool: is required to compute the kernel; pass the pool of inputs (N, d)")
    matrix = source.matrix(kind, x_pool)
    if is_stored_kernel(matrix):
        return source, x_pool, None, matrix, float(matrix.diagonal().mean())
    dense = matrix if isinstance(matrix, torch.Tensor) else matrix.matrix     # SymmetricPSD: with its ridge
    return source, x_pool, dense, None, float(dense.diagonal().mean())


def pool_spectrum(arch_or_kernel, x_pool=None, kind: str = "ntk", *, k: int | None = None,
                  seed: int = 0, progress: bool = False) -> PoolSpectrum:
    """Eigendecompose the kernel on a pool of inputs once, for the learning curves of any target.

    Parameters
    ----------
    arch_or_kernel :
        Architecture, torch module (empirical NTK), kernel callable, precomputed matrix or
        KernelBlocks (its train block is the pool kernel), or a stored kernel (see
        :mod:`ntkprior.prior.sources`).
    x_pool : (N, d)
        The pool: inputs standing for the data distribution. Optional for matrices and stored
        kernels (checked against them when given).
    kind : "ntk" or "nngp"
        Which kernel: NTK regression is the trained wide network's prediction, NNGP regression the
        Bayesian posterior mean of the random network.
    k :
        Keep only the top k eigenpairs (Lanczos; required for stored kernels and pools above
        ``ntkprior.prior.spectrum.DENSE_LIMIT``); the rest is treated as a tail (module docstring).
    """
    from ntkprior.prior.spectrum import eigenmodes
    source, x_pool, dense, store, mean_diagonal = _pool_kernel(arch_or_kernel, x_pool, kind, progress)
    modes = eigenmodes(dense if dense is not None else store, None, k=k, seed=seed)
    n = modes.vectors.shape[0]
    if n < 2:
        raise ValueError("x_pool: a pool of one input leaves nothing to test on; pass at least 2 inputs")
    lam = modes.values
    eta = torch.where(lam > n * _EPS * float(lam[0]), lam, torch.zeros_like(lam)) / n
    x = store.x1 if store is not None else x_pool
    return PoolSpectrum(eigenvalues=eta, vectors=modes.vectors, mean_diagonal=mean_diagonal,
                        kind=kind if source.names is not None else "kernel", x=x, matrix=dense, store=store)


def _spectrum_for(arch_or_kernel, x_pool, kind, k, seed, progress) -> PoolSpectrum:
    if isinstance(arch_or_kernel, PoolSpectrum):
        if x_pool is not None and (arch_or_kernel.x is None
                                   or not torch.equal(as_inputs(x_pool, "x_pool"), arch_or_kernel.x)):
            raise ValueError("x_pool: differs from the pool of the PoolSpectrum passed; pass x_pool=None")
        return arch_or_kernel
    return pool_spectrum(arch_or_kernel, x_pool, kind, k=k, seed=seed, progress=progress)


def learning_curve(arch_or_kernel, x_pool, target, n_train, *, ridge: float = 0.0, kind: str = "ntk",
                   noise: float = 0.0, measured: bool = False, draws: int = 10, seed: int = 0,
                   reg: str = "relative", k: int | None = None, progress: bool = False) -> LearningCurve:
    """The test error of kernel regression against the training-set size, predicted from the
    spectrum of the kernel on a pool of inputs (module docstring: Bordelon, Canatar & Pehlevan).

    Parameters
    ----------
    arch_or_kernel : any kernel source (:func:`pool_spectrum`), or a :class:`PoolSpectrum` (then
        x_pool may be None): one eigendecomposition for many targets and sizes.
    x_pool : (N, d) the inputs standing for the data distribution.
    target : (N,) or (N, k) the function to learn, on the pool.
    n_train : training-set sizes, each 1 <= p < N.
    ridge : ridge of the regression, relative to the mean diagonal of the pool kernel
        (``reg="absolute"``: added to the p x p Gram matrix as it is).
    kind : "ntk" or "nngp". noise : standard deviation of label noise on the training labels.
    measured : also run kernel regression on ``draws`` random subsets of each size (seeded by
        ``seed``), tested on the rest of the pool: ``.measured``.
    k : keep the top k eigenpairs only (stored kernels, large pools).
    """
    spectrum = _spectrum_for(arch_or_kernel, x_pool, kind, k, seed, progress)
    return spectrum.curve(target, n_train, ridge=ridge, reg=reg, noise=noise, measured=measured, draws=draws,
                          seed=seed)


def measure_learning_curve(arch_or_kernel, x_pool, target, n_train, *, ridge: float = 0.0,
                           kind: str = "ntk", noise: float = 0.0, draws: int = 10, seed: int = 0,
                           reg: str = "relative", progress: bool = False) -> MeasuredCurve:
    """Kernel regression on random subsets of the pool, tested on the rest (``learning_curve``'s
    ``.measured`` without the theory). The pool kernel is computed once, or loaded from a store."""
    if isinstance(arch_or_kernel, PoolSpectrum):
        spectrum = _spectrum_for(arch_or_kernel, x_pool, kind, None, seed, progress)
        return spectrum.measure(target, n_train, ridge=ridge, reg=reg, noise=noise, draws=draws, seed=seed)
    _, _, dense, store, mean_diagonal = _pool_kernel(arch_or_kernel, x_pool, kind, progress)
    matrix = dense if dense is not None else store.load()
    n = matrix.shape[0]
    lam = _absolute_ridge(ridge, reg, mean_diagonal)
    return _measure(matrix, as_labels(target, n, "target"), check_train_sizes(n_train, n), lam,
                    _check_nonnegative(noise, "noise"), draws, seed)
