"""The kernel as a prior over labelings: log-probabilities, eigenmodes, candidates, posteriors.

MATH.md sections 3-4. A kernel H on inputs X defines the Gaussian prior ``Y ~ N(0, H)`` over the
labelings of X (one independent column per output). Its log-density

    log p(Y) = -1/2 Y^T H^-1 Y - 1/2 log det H - (n/2) log 2 pi,      H = V diag(lambda) V^T,
    Y^T H^-1 Y = sum_i (v_i . Y)^2 / lambda_i                         (squared RKHS norm)

says how surprising a labeling is to the network's prior, and which eigenmodes carry the surprise.
``N(0, K)`` with the NNGP K is the distribution of randomly initialised networks; ``N(0, Theta)``
with the NTK is the NTK-GP prior (He, Lakshminarayanan & Teh 2020), not that of any random network.

All solves use one Cholesky factorisation per kernel and all matrix functions one
eigendecomposition, cached in :class:`ntkprior.prior.linalg.SymmetricPSD` and reused by every call.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.data import as_labels, to_tensor
from ntkprior.prior.linalg import SymmetricPSD, as_symmetric_psd, is_stored_kernel, user_stacklevel
from ntkprior.prior.sources import KernelBlocks, check_kernel_name, resolve_kernels

__all__ = ["KernelPrior", "ModeTable", "rank_candidates", "CandidateRanking", "CandidateScore",
           "predict", "Posterior", "KINDS", "LearningRateWarning"]

LOG_2PI = math.log(2 * math.pi)

#: predict(kind=...) -> the kernels it needs; the first one is inverted on the training set.
KINDS = {"nngp": ("nngp",), "ntkgp": ("ntk",), "ntk": ("ntk",),
         "gd-ensemble": ("ntk", "nngp"), "readout": ("nngp",)}
_TIMED_KINDS = ("ntk", "gd-ensemble", "readout")


class LearningRateWarning(UserWarning):
    """Discrete gradient descent at this learning rate would diverge; the prediction is gradient flow."""


def _gaussian_log_prob(psd: SymmetricPSD, y: torch.Tensor, logdet: float | None = None) -> float:
    """``log N(y; 0, M)`` summed over the columns of y (n, k); ``logdet``: log det M if known."""
    n, k = y.shape
    quad = psd.quad_form(y)         # first: duplicated inputs get their clear error before any factorisation
    logdet = psd.logdet() if logdet is None else logdet
    return -0.5 * (quad + k * logdet + n * k * LOG_2PI)


def _format_table(headers: list[str], rows: list[list[str]], left: tuple[int, ...] = ()) -> str:
    """Plain-text table: numbers right-aligned, the columns in ``left`` left-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


# ================================================================================== the prior
@dataclass(frozen=True)
class ModeTable:
    """A labeling's squared RKHS norm broken down by eigenmode of the kernel (largest first).

    Attributes
    ----------
    eigenvalue : (n,) descending
    projection : (n,) or (n, k)
        ``v_i . y`` per output column, with the eigenvector signs of
        :func:`ntkprior.prior.linalg.fix_signs` (largest-magnitude entry positive).
    contribution : (n,)
        ``sum_j (v_i . y_j)^2 / lambda_i``; with :attr:`remainder` these sum to ``y^T H^-1 y``
        (:attr:`total`).
    cumulative_share : (n,)
        Share of the total carried by the first i + 1 modes (entry i is mode i + 1: modes are
        numbered from 1, the largest eigenvalue, in every table and message; arrays index from 0).
    remainder : float
        The contribution of the modes not listed, when only the top k are (``modes(y, k)``):
        ``y^T H^-1 y`` minus the listed contributions; 0 when every mode is listed.
    """

    eigenvalue: torch.Tensor
    projection: torch.Tensor
    contribution: torch.Tensor
    cumulative_share: torch.Tensor
    remainder: float = 0.0

    @property
    def total(self) -> float:
        """``y^T H^-1 y``: the listed modes plus the remainder."""
        return float(self.contribution.sum()) + self.remainder

    def __len__(self) -> int:
        return self.eigenvalue.shape[0]

    def to_text(self, max_rows: int = 10) -> str:
        proj = self.projection if self.projection.ndim == 1 else self.projection.norm(dim=1)
        rows = [[str(i + 1), f"{float(self.eigenvalue[i]):.4g}", f"{float(proj[i]):+.4g}",
                 f"{float(self.contribution[i]):.4g}", f"{float(self.cumulative_share[i]):.1%}"]
                for i in range(min(max_rows, len(self)))]
        header = ["mode", "eigenvalue", "projection" if self.projection.ndim == 1 else "|projection|",
                  "contribution", "cumulative"]
        more = f"\n... {len(self) - max_rows} more modes" if len(self) > max_rows else ""
        if self.remainder:
            more += (f"\nthe modes after these {len(self)}: {self.remainder:.4g} "
                     f"({self.remainder / self.total:.1%} of the total)")
        return (f"y^T H^-1 y = {self.total:.6g}, by eigenmode (mode 1: the largest eigenvalue)\n"
                + _format_table(header, rows) + more)

    __str__ = __repr__ = to_text


class KernelPrior:
    """The Gaussian prior ``Y ~ N(0, H)`` that a kernel matrix puts on labelings of its inputs.

    Parameters
    ----------
    H : (n, n) array, tensor, SymmetricPSD or StoredKernel
        Kernel matrix on the inputs (any PSD matrix), or a symmetric
        :class:`~ntkprior.scale.stored.StoredKernel` used out of core (see Notes).
    diag_reg, reg, jitter :
        Explicit ridge and singular-matrix policy, see :class:`ntkprior.prior.linalg.SymmetricPSD`.
        Nothing is added silently: a numerically singular H raises a ``ValueError``.
        ``jitter="auto"`` is not available for a stored kernel.
    name : str
        Used in messages.
    probes : int, stored kernels only
        Probe vectors of the stochastic log-determinant (default 32); its standard error
        shrinks like 1/sqrt(probes).

    Notes
    -----
    With a stored kernel nothing n x n is formed: quadratic forms ``y^T H^-1 y`` are solved by
    conjugate gradients (relative residual 1e-8), the log-determinant is estimated by stochastic
    Lanczos quadrature (:meth:`ntkprior.scale.stored.StoredKernel.logdet`), and :meth:`modes` lists the
    top k modes from block Lanczos. The log-determinant is therefore *stochastic*: it is
    estimated once per prior and reused, so log-probability differences between labelings under
    the same prior are exact to the CG tolerance, while absolute values (and comparisons across
    kernels) carry its standard error: ``log_prob(y, return_std=True)``. A ridge (``diag_reg``)
    keeps CG fast; without one an ill-conditioned kernel ends in a ``ConvergenceWarning``.

    Examples
    --------
    >>> prior = KernelPrior.from_arch(arch, x, kernel="ntk")            # doctest: +SKIP
    >>> prior.log_prob(y), prior.rkhs_norm(y), print(prior.modes(y))   # doctest: +SKIP
    >>> prior = KernelPrior(StoredKernel("K.zarr"), diag_reg=1e-3)      # doctest: +SKIP
    >>> prior.log_prob(y, return_std=True), print(prior.modes(y, k=20))  # doctest: +SKIP
    """

    def __init__(self, H, *, diag_reg: float = 0.0, reg: str = "relative", jitter: str | None = None,
                 name: str = "H", probes: int | None = None):
        self.psd = as_symmetric_psd(H, name, diag_reg=diag_reg, reg=reg, jitter=jitter)
        self.stored = is_stored_kernel(self.psd)
        if probes is not None and not self.stored:
            raise ValueError("probes: applies to the stochastic log-determinant of a stored kernel; the "
                             "log-determinant of an in-memory matrix is exact (Cholesky): drop probes")
        self._probes = 32 if probes is None else probes
        self._logdet: tuple[float, float] | None = None

    @classmethod
    def from_arch(cls, arch_or_kernel, x, kernel: str = "ntk", *, diag_reg: float = 0.0,
                  reg: str = "relative", jitter: str | None = None, progress: bool = False):
        """The prior of an architecture's infinite-width ``kernel`` ("ntk" or "nngp") on inputs x.

        Any ``arch_or_kernel`` of :mod:`ntkprior.prior.sources` is accepted (architecture, callable, ...).
        """
        check_kernel_name(kernel)
        source = resolve_kernels(arch_or_kernel, progress=progress)
        return cls(source.matrix(kernel, x), diag_reg=diag_reg, reg=reg, jitter=jitter,
                   name=source.label(kernel))

    @classmethod
    def from_model(cls, model: torch.nn.Module, x, *, diag_reg: float = 0.0, reg: str = "relative",
                   jitter: str | None = None, progress: bool = False):
        """The prior of a finite network's empirical NTK at its current parameters.

        The kernel is ``empirical_ntk(model, x, output="mean")``: ``J J^T`` summed over the k outputs
        and divided by k, the per-output kernel that matches ``arch.kernel(x).ntk`` at large width.
        """
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}; "
                             "use KernelPrior.from_arch for an architecture")
        H = resolve_kernels(model, progress=progress).matrix("ntk", x)
        return cls(H, diag_reg=diag_reg, reg=reg, jitter=jitter, name="empirical NTK")

    @property
    def n(self) -> int:
        return self.psd.n

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of H (with ridge), descending, clipped at 0."""
        if self.stored:
            raise ValueError("eigenvalues: a stored kernel gives only its top eigenvalues; use "
                             "prior.psd.eigsh(k) or ntkprior.prior.spectrum.eigenmodes(stored, k=k)")
        return self.psd.eigh()[0].flip(0)

    def logdet(self, *, return_std: bool = False):
        """``log det H`` (with ridge), and with ``return_std=True`` its standard error.

        Exact (Cholesky; standard error 0) for a matrix; for a stored kernel estimated once by
        stochastic Lanczos quadrature with ``probes`` probes and reused by every call.
        """
        if self._logdet is None:
            self._logdet = (self.psd.logdet(probes=self._probes, return_std=True) if self.stored
                            else (self.psd.logdet(), 0.0))
        return self._logdet if return_std else self._logdet[0]

    def log_prob(self, y, *, return_std: bool = False):
        """``log N(y; 0, H)`` for y (n,) or (n, k), summed over the k output columns.

        ``return_std=True`` returns ``(value, std)``: std is the standard error that the
        stochastic log-determinant of a stored kernel carries, ``k/2`` times that of
        :meth:`logdet` (0 for a matrix). It is shared by every labeling of the same prior.
        """
        labels = as_labels(y, self.n, "y")
        quad = self.psd.quad_form(labels)     # duplicated inputs are named here, before the log-determinant
        (logdet, std), (n, k) = self.logdet(return_std=True), labels.shape
        value = -0.5 * (quad + k * logdet + n * k * LOG_2PI)
        return (value, 0.5 * k * std) if return_std else value

    def rkhs_norm(self, y, *, squared: bool = True) -> float:
        """``y^T H^-1 y`` (summed over columns): the squared RKHS norm, by default.

        It is the smallest squared parameter distance the linearised network must travel to fit y
        (MATH.md section 3). ``squared=False`` returns its square root, the norm itself.
        """
        q = self.psd.quad_form(as_labels(y, self.n, "y"))
        return q if squared else math.sqrt(q)

    def modes(self, y, k: int | None = None) -> ModeTable:
        """Per eigenmode (largest eigenvalue first): eigenvalue, ``v_i . y``, ``(v_i . y)^2 / lambda_i``,
        cumulative share of ``y^T H^-1 y``.

        ``k``: list only the top k modes; the others are summed into ``remainder``. For a matrix,
        the top k come from Lanczos (ARPACK) when k <= n / 10 and the total ``y^T H^-1 y`` from the
        Cholesky factor that :meth:`log_prob` uses (issue #20: 0.13 s instead of a 9 s full
        decomposition at n = 4000, k = 10); all modes (k None, or a large k) need the full
        eigendecomposition, computed once. A stored kernel needs ``k`` and finds the top k by
        block Lanczos, the total by conjugate gradients.
        """
        labels = as_labels(y, self.n, "y")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.n):
            raise ValueError(f"k: expected an integer between 1 and n = {self.n}, or None, got {k!r}")
        if self.stored and k is None:
            raise ValueError(f"k: a stored kernel gives its top k eigenpairs only (block Lanczos), "
                             f"not all n = {self.n}; pass k, e.g. modes(y, k=20): the other modes "
                             "are summed into the table's remainder")
        full = not self.stored and (k is None or self.psd.uses_full_decomposition(k))
        if self.stored:
            w, v = self.psd.eigsh(k)
        else:
            self.psd.cholesky()        # a singular H has no finite RKHS norm: raise the clear error
            w, v = self.psd.top_eigh(self.n if full else k)               # largest first
        proj = v.T @ labels                                               # (k or n, outputs)
        contribution = (proj * proj).sum(dim=1) / w
        total = float(contribution.sum()) if full else self.psd.quad_form(labels)
        if full and k is not None:     # every mode is at hand: the same numbers as the full table
            w, proj, contribution = w[:k], proj[:k], contribution[:k]
        cumulative = torch.cumsum(contribution, 0) / total
        return ModeTable(w, proj[:, 0] if np.ndim(y) == 1 else proj, contribution, cumulative,
                         total - float(contribution.sum()))

    def __repr__(self) -> str:
        return f"KernelPrior(n={self.n}, {self.psd!r})"


# ================================================================================== candidates
@dataclass(frozen=True)
class CandidateScore:
    """One candidate labeling y* of the test inputs, scored against the training labels Y."""

    name: str
    conditional_log_prob: float      #: log p(y* | Y) = log N(y*; mu*, Sigma*)
    delta: float                     #: conditional_log_prob minus the best candidate's (<= 0)
    joint_log_prob: float            #: log p(Y, y*) = log p(Y) + log p(y* | Y); see CandidateRanking
    mahalanobis: float               #: (y* - mu*)^T Sigma*^-1 (y* - mu*), summed over outputs
    residuals: torch.Tensor          #: (n*, k) standardised residuals (y* - mu*) / sigma*
    mode_differences: tuple          #: ((mode number, 1 = largest eigenvalue; eigenvalue; nats), ...) vs the best

    @property
    def max_abs_residual(self) -> float:
        return float(self.residuals.abs().max())


_JOINT_WARNING = (
    "Ranked by log p(y*|Y): every row labels the SAME test inputs X*, so the differences are\n"
    "log-odds between the candidates. The joint log p(Y, y*) = log p(Y) + log p(y*|Y) (in\n"
    ".rows[i].joint_log_prob) is NOT comparable between different test inputs: its largest\n"
    "possible value, -1/2 log det(2 pi Sigma*) = {peak:.4g} here, depends on X*, so a higher joint\n"
    "density elsewhere is no sign of a more plausible generalisation. Across different test inputs\n"
    "compare Mahalanobis distances or standardised residuals z = (y* - mu*)/sigma* instead.")


@dataclass(frozen=True)
class CandidateRanking:
    """Candidate labelings of the same test inputs, best first (by conditional log-probability).

    Why conditional and not joint densities: with ``[Y; y*] ~ N(0, Sigma)``,

        log p(Y, y*) = log p(Y) + log N(y*; mu*, sigma*^2),
        mu* = H*X H^-1 Y,   sigma*^2 = H** - H*X H^-1 HX*.

    The y* maximising the joint density is the kernel-regression prediction mu*, and the peak height
    ``-1/2 log 2 pi sigma*^2`` depends on the test input: joint densities at different test inputs are
    not comparable. Within one ranking (one X*) ``log p(Y)`` is shared, so joint and conditional
    differences coincide; the table shows only the conditional.
    """

    rows: tuple
    kernel: str
    n_train: int
    n_test: int
    marginal_log_prob: float          #: log p(Y), shared by every candidate
    mean: torch.Tensor                #: mu* (n*, k)
    cov: torch.Tensor                 #: Sigma* (n*, n*)
    peak_log_prob: float              #: max over y* of log p(y* | Y) = -k/2 log det(2 pi Sigma*)
    mode_eigenvalues: torch.Tensor | None   #: eigenvalues of the joint kernel on [X; X*], descending

    @property
    def best(self) -> CandidateScore:
        return self.rows[0]

    def __getitem__(self, name: str) -> CandidateScore:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no candidate named {name!r}; candidates: {[r.name for r in self.rows]}")

    def to_text(self) -> str:
        rows = []
        for rank, r in enumerate(self.rows, 1):
            modes = "; ".join(f"mode {i} (lambda={lam:.2g}): {nats:+.3g}"
                              for i, lam, nats in r.mode_differences) or "-"
            rows.append([str(rank), r.name, f"{r.conditional_log_prob:.4g}", f"{r.delta:+.4g}",
                         f"{r.max_abs_residual:.3g}", f"{r.mahalanobis:.4g}", modes])
        headers = ["rank", "candidate", "log p(y*|Y)", "vs best", "max|z|", "Mahalanobis^2",
                   "modes making the difference (nats vs best)"]
        title = (f"{len(self.rows)} candidate labelings of the same {self.n_test} test inputs under the "
                 f"{self.kernel} prior, given {self.n_train} training labels; best first")
        return "\n".join([title, _format_table(headers, rows, left=(1, 6)),
                          _JOINT_WARNING.format(peak=self.peak_log_prob)])

    __str__ = __repr__ = to_text


def _candidate_list(candidates, n_test: int, k: int) -> list[tuple[str, torch.Tensor]]:
    """Named (n*, k) label arrays from a dict, a list, or an array (c, n*) / (c, n*, k)."""
    if isinstance(candidates, dict):
        items = list(candidates.items())
    elif isinstance(candidates, (list, tuple)):
        items = [(f"candidate {i}", c) for i, c in enumerate(candidates)]
    else:
        arr = to_tensor(candidates, "candidates")
        if arr.ndim not in (2, 3):
            raise ValueError(f"candidates: expected shape (n_candidates, {n_test}) or "
                             f"(n_candidates, {n_test}, {k}), or a dict / list of labelings; "
                             f"got shape {tuple(arr.shape)}")
        items = [(f"candidate {i}", arr[i]) for i in range(arr.shape[0])]
    if not items:
        raise ValueError("candidates: is empty; pass at least one candidate labeling of x_test")
    out = []
    for name, value in items:
        label = f"candidates[{name!r}]"
        y = as_labels(value, n_test, label)
        if y.shape[1] != k:
            raise ValueError(f"{label}: has {y.shape[1]} output columns but y_train has {k}")
        out.append((str(name), y))
    return out


def _mode_contributions(psd: SymmetricPSD, z: torch.Tensor) -> torch.Tensor:
    """``sum_j (v_i . z_j)^2 / lambda_i`` per eigenmode, largest eigenvalue first."""
    w, v = psd.eigh()
    proj = v.T @ z
    return ((proj * proj).sum(dim=1) / w).flip(0)


def rank_candidates(arch_or_kernel, x_train, y_train, x_test, candidates, kernel: str = "ntk", *,
                    diag_reg: float = 0.0, reg: str = "relative", jitter: str | None = None,
                    top_modes: int = 3, progress: bool = False) -> CandidateRanking:
    """Rank candidate labelings y* of the test inputs by ``log p(y* | x_test, X, Y)`` under a kernel prior.

    Parameters
    ----------
    arch_or_kernel :
        Architecture, callable, module or precomputed :class:`~ntkprior.prior.sources.KernelBlocks` (which
        then must hold ``test_train`` and a full ``test`` block).
    x_train, y_train : (n, d), (n,) or (n, k)
    x_test : (n*, d)
    candidates : dict name -> labels, list of labels, or array (c, n*) / (c, n*, k)
        Each candidate labels every test input, e.g. {"goes to the coin": ..., "goes to the old
        place": ...}.
    kernel : "ntk" (NTK-GP prior) or "nngp" (random-network prior)
    diag_reg, reg, jitter : ridge on the train-train kernel (observation noise), see SymmetricPSD.
    top_modes : int
        How many eigenmodes of the joint kernel on [X; X*] to report per candidate: those that cost
        it the most log-probability relative to the best candidate. 0 skips the
        eigendecomposition (cubic in n + n*); a stored kernel needs 0. With a stored kernel the
        conditional is by conjugate gradients and ``marginal_log_prob`` (hence ``joint_log_prob``)
        is stochastic (:meth:`ntkprior.scale.stored.StoredKernel.logdet`); the ranking is not.

    Returns
    -------
    CandidateRanking
        Rows sorted by the conditional log-probability (best first), each with the joint
        log-probability, the standardised residuals ``(y* - mu*)/sigma*`` and the mode differences.

    Notes
    -----
    With ``[Y; y*] ~ N(0, Sigma)`` (MATH.md section 3)::

        log p(Y, y*) = log p(Y) + log N(y*; mu*, Sigma*),
        mu* = H*X H^-1 Y,    Sigma* = H** - H*X H^-1 HX*.

    The joint density is maximised by the kernel-regression prediction ``y* = mu*``, and its peak
    height ``-1/2 log det(2 pi Sigma*)`` depends on the test inputs. So joint densities of labelings
    of *different* test inputs are not comparable: a test input where the kernel is confident has a
    higher peak whether or not the label is plausible. Within one call every candidate shares X* and
    ``log p(Y)``, so the ranking by the conditional equals the ranking by the joint; the printed table
    shows only the conditional and states the peak height, so the joint cannot be misread.
    """
    check_kernel_name(kernel)
    source = resolve_kernels(arch_or_kernel, progress=progress)
    blocks = source.blocks([kernel], x_train, x_test)[kernel]
    if blocks.test_train is None:
        raise ValueError("x_test: rank_candidates needs test inputs (or precomputed KernelBlocks "
                         "with test_train and test blocks)")
    y = as_labels(y_train, blocks.n_train, "y_train")
    named = _candidate_list(candidates, blocks.n_test, y.shape[1])
    psd = as_symmetric_psd(blocks.train, f"{source.label(kernel)} of the training inputs",
                           diag_reg=diag_reg, reg=reg, jitter=jitter)
    if is_stored_kernel(psd) and top_modes > 0:
        raise ValueError("top_modes: the eigenmodes of the joint kernel on [X; X*] need it in memory, "
                         "which a stored training kernel avoids; pass top_modes=0")
    marginal = _gaussian_log_prob(psd, y)
    mean, sigma_star = _gp_conditional(psd, blocks.test_train, blocks.test, y, full=True)
    cond = SymmetricPSD(sigma_star, "conditional covariance of the test labels given the training "
                        "labels (Sigma* = H** - H*X H^-1 HX*)", jitter=jitter)
    sigma = cond.matrix.diagonal().clamp(min=0).sqrt()[:, None]
    joint = None
    if top_modes > 0:
        joint = SymmetricPSD(torch.cat([torch.cat([psd.matrix, blocks.test_train.T], 1),
                                        torch.cat([blocks.test_train, blocks.test], 1)], 0),
                             "joint kernel of training and test inputs")
    scored = []
    for name, cand in named:
        residual = cand - mean
        maha = cond.quad_form(residual)
        conditional = -0.5 * (maha + y.shape[1] * cond.logdet() + residual.numel() * LOG_2PI)
        modes = _mode_contributions(joint, torch.cat([y, cand])) if joint is not None else None
        scored.append((name, conditional, maha, residual / sigma, modes))
    scored.sort(key=lambda s: -s[1])
    best_conditional, best_modes = scored[0][1], scored[0][4]
    joint_values = None if joint is None else joint.eigh()[0].flip(0)
    rows = []
    for name, conditional, maha, z, modes in scored:
        differences = ()
        if modes is not None and name != scored[0][0]:
            nats = -0.5 * (modes - best_modes)
            worst = torch.argsort(nats)[:top_modes]
            differences = tuple((int(i) + 1, float(joint_values[i]), float(nats[i])) for i in worst)
        rows.append(CandidateScore(name, conditional, conditional - best_conditional,
                                   marginal + conditional, maha, z, differences))
    return CandidateRanking(
        tuple(rows), source.label(kernel), blocks.n_train, blocks.n_test, marginal, mean, cond.matrix,
        -0.5 * y.shape[1] * (cond.logdet() + blocks.n_test * LOG_2PI),
        joint_values)


# ================================================================================== posteriors
@dataclass(frozen=True)
class Posterior:
    """Predictive distribution of the outputs at the test (or training) inputs.

    Attributes
    ----------
    kind : str
    mean : tensor
        Shape of y_train with n* rows: (n*,) or (n*, k); with a leading time axis (T, ...) when t
        was an array.
    cov : tensor or None
        (n*, n*) (or (T, n*, n*)), the same for every output column (outputs are independent under
        the kernel). None for ``kind="ntk"`` (a deterministic predictor) or unless ``cov="full"``.
    var : tensor or None
        Diagonal of the covariance, (n*,) or (T, n*); None when ``cov=None`` or ``kind="ntk"``.
    t : tensor or None
        Training times in steps (None: converged, t = infinity).
    on_train : bool
        True when the predictions are for the training inputs themselves.
    """

    kind: str
    mean: torch.Tensor
    cov: torch.Tensor | None
    var: torch.Tensor | None
    t: torch.Tensor | None
    on_train: bool

    @property
    def std(self) -> torch.Tensor | None:
        """Predictive standard deviation ``sqrt(var)`` (round-off negatives clipped to 0)."""
        return None if self.var is None else self.var.clamp(min=0).sqrt()

    def __repr__(self) -> str:
        where = "training inputs" if self.on_train else "test inputs"
        when = "converged" if self.t is None else f"t = {self.t.tolist()}"
        parts = [f"mean {tuple(self.mean.shape)}"] + [
            f"{name} {tuple(value.shape)}" for name, value in (("cov", self.cov), ("var", self.var))
            if value is not None]
        return f"Posterior(kind={self.kind!r}, {where}, {when}: {', '.join(parts)})"


class _Regression:
    """Products with ``A = H*X H_r^-1 g(H_r)`` for one kernel factorised on the training inputs.

    ``cross=None`` stands for predictions on the training inputs, where ``H*X = H = H_r - s I``
    (s = ridge + jitter) is used in closed form: the converged train-set mean without ridge is then
    exactly Y, and its covariance exactly 0.
    """

    def __init__(self, psd: SymmetricPSD, cross: torch.Tensor | None):
        self.psd = psd
        self._cross = cross

    def cross(self) -> torch.Tensor:
        """``H*X``; on the training set the caller's H (the factorised matrix minus its ridge)."""
        if self._cross is not None:
            return self._cross
        m = self.psd.matrix
        return m - self.psd.diagonal_shift * torch.eye(self.psd.n, dtype=torch.float64, device=m.device)

    def weights(self, rates: torch.Tensor | None) -> torch.Tensor:
        """``A`` with ``g = I`` (converged; rates None, by Cholesky), or for each ``rate = eta t / m``
        ``A_t = H*X H_r^-1 (I - exp(-rate H_r))`` from the eigendecomposition: shape (T, n*, n)."""
        if rates is None or torch.isinf(rates).any():
            self.psd.cholesky()                  # converged predictions need a non-singular kernel
        if rates is None:
            shift, n = self.psd.diagonal_shift, self.psd.n
            if self._cross is not None:
                return self.psd.solve(self._cross.T).T
            eye = torch.eye(n, dtype=torch.float64, device=self.psd.matrix.device)
            return eye if shift == 0 else eye - shift * self.psd.solve(eye)
        w, v = self.psd.eigh()
        if self._cross is None:
            p = v * (w - self.psd.diagonal_shift).clamp(min=0)
        else:
            p = self._cross @ v
        return (p * _flow_filter(w, rates)[:, None, :]) @ v.T


def _flow_filter(w: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-rate * lambda)) / lambda`` for each rate (rows) and eigenvalue (columns).

    The limit at lambda = 0 is ``rate`` (a zero mode grows linearly); at rate = inf it is 1/lambda.
    """
    rates = rates.to(w.device)
    positive = w > 0
    safe = torch.where(positive, w, torch.ones_like(w))
    x = rates[:, None] * safe[None, :]
    g = -torch.expm1(-x) / safe
    return torch.where(positive, g, rates[:, None].expand_as(g))


def _times(t, learning_rate, kind: str):
    """(times in steps, or None for converged; whether the results get a time axis)."""
    if t is None:
        return None, False
    scalar = np.ndim(t) == 0
    times = to_tensor(t, "t")      # (note: data.to_tensor turns a 0-d value into shape (1,))
    if times.ndim > 1:
        raise ValueError(f"t: expected a number or a 1-D array of times, got shape {tuple(times.shape)}")
    if torch.isnan(times).any() or (times < 0).any():
        raise ValueError(f"t: training times must be >= 0 (steps; inf for convergence), got {t!r}")
    if kind not in _TIMED_KINDS:
        if torch.isinf(times).all():
            return None, False
        raise ValueError(f"t: kind={kind!r} is a Bayesian posterior without training time; t applies "
                         f"to kind in {_TIMED_KINDS}")
    lr = learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning_rate: expected a finite number > 0, got {learning_rate!r}")
    times = times.reshape(-1)
    if scalar and torch.isinf(times).all():
        return None, False
    return times, not scalar


def _check_learning_rate(psd: SymmetricPSD, learning_rate: float, m: int) -> None:
    lam_max = float(psd.eigh()[0][-1])
    if learning_rate * lam_max > 2 * m:
        warnings.warn(
            f"learning_rate={learning_rate:g} exceeds 2m / lambda_max = {2 * m / lam_max:.4g} (m = {m} "
            f"training outputs, lambda_max = {lam_max:.4g}): discrete gradient descent would diverge; "
            "the prediction is that of gradient flow at continuous time learning_rate * t",
            LearningRateWarning, stacklevel=user_stacklevel())


def _minus_cross(test, w, cross, full: bool):
    """``test - W cross^T`` (symmetrised), or its diagonal."""
    if full:
        c = test - w @ cross.T
        return (c + c.mT) / 2
    return test - (w * cross).sum(-1)


def _gd_ensemble_cov(test, w, wk, k_cross, full: bool):
    """``K** + A K A^T - (A KX* + K*X A^T)`` (Lee et al. 2019), or its diagonal; ``wk = A K``."""
    if full:
        b = w @ k_cross.T
        c = test + wk @ w.mT - b - b.mT
        return (c + c.mT) / 2
    return test + (wk * w).sum(-1) - 2 * (w * k_cross).sum(-1)


def _plain(train) -> torch.Tensor:
    return train if isinstance(train, torch.Tensor) else _Regression(train, None).cross()


def _test_blocks(blocks: KernelBlocks, cross: torch.Tensor, full: bool):
    """(H*X, H** or its diagonal), the training set standing in for the test set when there is none."""
    if blocks.test_train is None:
        return cross, (cross if full else cross.diagonal())
    return cross, (blocks.test if full else blocks.test_diagonal())


def _gp_conditional(psd: SymmetricPSD, cross, test, y, full: bool):
    """``mu* = H*X H_r^-1 Y`` and ``Sigma* = H** - H*X H_r^-1 HX*`` (or its diagonal; test None:
    mean only) from one triangular solve ``W = L^-1 HX*``: ``Sigma* = H** - W^T W``; for a stored
    kernel from one conjugate-gradient solve (:func:`_solve_weights`)."""
    if is_stored_kernel(psd):
        mean, w = _solve_weights(psd, cross, y, test is not None)
        return mean, None if test is None else _minus_cross(test, w, cross, full)
    labels = psd.whiten(y)               # first: labels that conflict at duplicated inputs are named
    whitened = psd.whiten(cross.T)                                      # (n, n*)
    mean = whitened.T @ labels
    if test is None:
        return mean, None
    if not full:
        return mean, test - (whitened * whitened).sum(dim=0)
    c = test - whitened.T @ whitened
    return mean, (c + c.T) / 2


def _solve_weights(op, cross, y, weights: bool):
    """``(H*X H_r^-1 Y, A = H*X H_r^-1 or None)`` for a stored kernel: one block conjugate-gradient
    solve ``H_r^-1 [Y, HX*]``, all columns sharing each pass over the store."""
    k = y.shape[1]
    solved = op.solve(torch.cat([y, cross.T], 1) if weights else y)
    return cross @ solved[:, :k], (solved[:, k:].T if weights else None)


def _stored_gd_ensemble(op, blocks: dict, y, full: bool):
    """The converged GD ensemble with stored kernels: ``A = Theta*X Theta_r^-1`` by CG, ``A K`` by one
    pass over the stored NNGP K (without ridge)."""
    ntk, nngp = blocks["ntk"], blocks["nngp"]
    mean, w = _solve_weights(op, ntk.test_train, y, True)
    test = nngp.test if full else nngp.test_diagonal()
    return mean, _gd_ensemble_cov(test, w, nngp.train.matmat(w.T).T, nngp.test_train, full)


def _check_stored_prediction(main: KernelBlocks, rates) -> None:
    """What a stored training kernel cannot give: finite times, predictions at the training inputs."""
    if rates is not None:
        raise ValueError("t: predictions at finite training times need the whole eigendecomposition of "
                         "the training kernel, which a stored kernel does not give; pass t=None "
                         "(converged), or load the kernel into memory (stored.load()) if it fits")
    if main.test_train is None:
        raise ValueError("x_test: predictions at the training inputs of a stored kernel would need its "
                         "n x n matrix in memory; pass x_test (the inputs to predict at), or load the "
                         "kernel (stored.load()) if it fits")


def _by_weights(psd: SymmetricPSD, blocks: dict, inverted: str, kind: str, y, rates, cov):
    """Mean ``A Y`` and covariance from the explicit weights ``A`` (one per time): the training-set
    predictions, the GD ensemble, and every finite time."""
    main, full = blocks[inverted], cov == "full"
    regression = _Regression(psd, main.test_train)
    w = regression.weights(rates)
    if cov is None:
        return w @ y, None
    cross, test = _test_blocks(main, regression.cross(), full)
    if kind == "gd-ensemble":
        k = blocks["nngp"]
        k_train = _plain(k.train)
        k_cross, k_test = _test_blocks(k, k_train if k.test_train is None else k.test_train, full)
        return w @ y, _gd_ensemble_cov(k_test, w, w @ k_train, k_cross, full)
    w_cov = w if kind != "readout" or rates is None else regression.weights(2 * rates)
    return w @ y, _minus_cross(test, w_cov, cross, full)


def predict(arch_or_kernel, x_train, y_train, x_test=None, kind: str = "nngp", *, t=None,
            learning_rate: float = 1.0, diag_reg: float = 0.0, reg: str = "relative",
            jitter: str | None = None, cov: str | None = "full", progress: bool = False) -> Posterior:
    """Predictions of a kernel model at ``x_test`` (or, with ``x_test=None``, at the training inputs).

    ``kind`` (MATH.md section 4; K the NNGP, Theta the NTK, ``A_t = Theta*X Theta^-1 (I - e^{-eta Theta t/m})``):

    ============== ===================================== =================================================
    kind           mean                                  covariance
    ============== ===================================== =================================================
    "nngp"         ``K*X K^-1 Y``                        ``K** - K*X K^-1 KX*`` (Bayesian posterior of the
                                                         random-network prior)
    "ntkgp"        ``Theta*X Theta^-1 Y``                ``Theta** - Theta*X Theta^-1 ThetaX*`` (NTK-GP,
                                                         He et al. 2020)
    "ntk"          ``A_t Y``                             none: NTK kernel regression, the mean of
                                                         infinitely wide networks trained by gradient
                                                         flow; ``cov`` and ``var`` are None
    "gd-ensemble"  ``A_t Y``                             ``K** + A_t K A_t^T - (A_t KX* + K*X A_t^T)``:
                                                         the spread of that ensemble over random
                                                         initialisations (Lee et al. 2019)
    "readout"      ``K*X K^-1 (I - e^{-eta K t/m}) Y``   ``K** - K*X K^-1 (I - e^{-2 eta K t/m}) KX*``
                                                         (only the last layer trained)
    ============== ===================================== =================================================

    Conventions: loss ``1/2 mean`` over the ``m = n k`` training outputs; ``t`` counts steps of
    learning rate ``eta``, and the formulas are those of gradient flow at continuous time ``eta t``
    (eigenmode i of the residual decays like ``e^{-eta lambda_i t/m}``; eigenvalues clipped at 0).
    ``t=None`` or ``inf``: converged, computed by Cholesky solves (no eigendecomposition).
    ``t`` may be a 1-D array of times: results get a leading time axis. The Bayesian kinds
    ("nngp", "ntkgp") have no time. ``diag_reg`` adds a ridge to the inverted train-train kernel
    only (K for "nngp"/"readout", Theta otherwise), in ``H^-1`` and in the exponent alike: the
    converged mean is then kernel ridge regression.

    Parameters
    ----------
    arch_or_kernel : architecture, callable, module, precomputed KernelBlocks or stored kernel (see
        :mod:`ntkprior.prior.sources`); "gd-ensemble" needs both the NTK and the NNGP.
    x_train, y_train : (n, d), (n,) or (n, k)
    x_test : (n*, d) or None
        None: predictions at the training inputs (precomputed KernelBlocks: their test blocks if any).
    cov : "full" (default), "diagonal" or None
        "diagonal" computes only the variances (and only the diagonal of the test-test kernel);
        None only the mean.

    Returns
    -------
    Posterior with ``.mean``, ``.cov``, ``.var``, ``.std``.

    Notes
    -----
    A stored training kernel (:class:`ntkprior.scale.stored.StoredKernel`; for "gd-ensemble" a dict
    ``{"ntk": stored_ntk, "nngp": stored_nngp}``) gives the converged (``t=None``) predictions at
    ``x_test`` without forming its n x n matrix: ``H_r^-1 [Y, HX*]`` by one block conjugate-gradient
    solve (relative residual 1e-8 per column; each iteration one pass over the store), the test
    blocks from the architecture the store records (or from ``KernelBlocks(stored, test_train,
    test)``). Finite times and predictions at the training inputs need the whole matrix and raise.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    if cov not in ("full", "diagonal", None):
        raise ValueError(f"cov: expected 'full', 'diagonal' or None, got {cov!r}")
    times, time_axis = _times(t, learning_rate, kind)
    names = KINDS[kind]
    if kind == "ntk":
        cov = None
    elif cov is None:
        names = names[:1]                  # the mean needs only the inverted kernel
    source = resolve_kernels(arch_or_kernel, progress=progress)
    blocks = source.blocks(names, x_train, x_test, test=cov)
    full_cov = cov == "full"
    main = blocks[names[0]]
    y = as_labels(y_train, main.n_train, "y_train")
    m = y.numel()
    rates = None if times is None else learning_rate * times / m        # eta t / m
    psd = as_symmetric_psd(main.train, f"{source.label(names[0])} of the training inputs",
                           diag_reg=diag_reg, reg=reg, jitter=jitter)
    test = None if cov is None or main.test_train is None else (
        main.test if full_cov else main.test_diagonal())
    if is_stored_kernel(psd):
        _check_stored_prediction(main, rates)
        if kind == "gd-ensemble" and cov is not None:
            mean, covariance = _stored_gd_ensemble(psd, blocks, y, full_cov)
        else:
            mean, covariance = _gp_conditional(psd, main.test_train, test, y, full_cov)
    elif rates is None and kind != "gd-ensemble" and main.test_train is not None:
        mean, covariance = _gp_conditional(psd, main.test_train, test, y, full_cov)
    else:
        mean, covariance = _by_weights(psd, blocks, names[0], kind, y, rates, cov)
        if rates is not None:
            _check_learning_rate(psd, learning_rate, m)
    if not time_axis and rates is not None:
        mean = mean[0]
        covariance = None if covariance is None else covariance[0]
    if np.ndim(y_train) == 1:
        mean = mean[..., 0]
    var = covariance
    if full_cov:
        var = covariance.diagonal(dim1=-2, dim2=-1)
    return Posterior(kind, mean, covariance if full_cov else None, var,
                     times if time_axis or times is None else times[0], main.test_train is None)
