"""Symmetric positive semi-definite matrices: validation, explicit ridge, cached factorisations.

Every computation on a kernel matrix in ntkprior (log-probabilities, posteriors, eigenmodes,
training dynamics) goes through :class:`SymmetricPSD`. It

- validates the matrix once (square, finite, symmetric to a relative tolerance, no eigenvalue
  below ``-1e-8 * lambda_max``) and reports what is wrong with the numbers;
- adds the ridge the caller asked for, explicitly (``diag_reg``; relative to the mean diagonal by
  default) and nothing else, unless ``jitter="auto"`` was passed, in which case the smallest jitter
  that makes the Cholesky factorisation succeed is added and announced with a warning;
- computes each factorisation at most once and reuses it: the Cholesky factor (for solves,
  log-determinants and quadratic forms; about 20x cheaper than an eigendecomposition) and the
  eigendecomposition (for functions of the matrix such as ``exp(-eta * H * t / m)``).

The matrix-free protocol used by the rest of the package is ``.shape``, ``.matvec(v)`` and
``.solve(b)``; an out-of-core kernel that offers the same three members can stand in for a
``SymmetricPSD`` wherever only those are used. :func:`as_symmetric_psd` passes a stored kernel
(:class:`ntkprior.scale.stored.StoredKernel`) through as its view with the ridge, which also offers
``quad_form`` and a stochastic ``logdet``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Callable

import numpy as np
import scipy.linalg
import torch

from ntkprior._buffers import empty_output
from ntkprior._threads import op_threads
from ntkprior.data import check_finite, to_tensor

__all__ = ["SymmetricPSD", "as_symmetric_psd", "is_stored_kernel", "check_symmetric", "finite_or_raise",
           "fix_signs", "top_eigenpairs", "PARTIAL_SHARE", "IllConditionedWarning", "JitterWarning", "PSD_RTOL",
           "COND_WARN", "DuplicateInputsWarning", "DUPLICATE_RTOL"]

#: Eigenvalues below ``-PSD_RTOL * lambda_max`` mean the matrix is not positive semi-definite.
PSD_RTOL = 1e-8
#: Condition numbers above this trigger an :class:`IllConditionedWarning` (solves keep ~6 digits).
COND_WARN = 1e10
#: Jitter tried by ``jitter="auto"``, relative to the mean diagonal: one value per decade.
JITTER_GRID = tuple(10.0 ** e for e in range(-12, 0))
_ROW_BLOCK = 1024
_TILE = 256


#: top_eigh(k) uses Lanczos when k <= n / PARTIAL_SHARE, the full decomposition otherwise
PARTIAL_SHARE = 10


def top_eigenpairs(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, k: int, *, tol: float = 0.0,
                   seed: int = 0, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenpairs (descending) of a symmetric operator by ARPACK's implicitly restarted Lanczos.

    ``matvec`` maps an (n,) or (n, m) tensor to the product; ``tol`` is ARPACK's relative accuracy
    (0: machine precision); the start vector is drawn from ``seed``. Signs follow :func:`fix_signs`.
    """
    import scipy.sparse.linalg

    def apply(v):
        out = matvec(torch.from_numpy(np.ascontiguousarray(v)).to(device=device, dtype=dtype))
        return out.cpu().numpy()

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=apply, matmat=apply, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    w, v = scipy.sparse.linalg.eigsh(op, k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(w)[::-1]
    values = torch.from_numpy(w[order].copy()).to(device=device, dtype=dtype)
    vectors = torch.from_numpy(v[:, order].copy()).to(device=device, dtype=dtype)
    return values, fix_signs(vectors)


class IllConditionedWarning(UserWarning):
    """A kernel matrix is so ill-conditioned that solves with it lose many digits."""


class JitterWarning(UserWarning):
    """``jitter="auto"`` added a multiple of the identity to a numerically singular matrix."""


class DuplicateInputsWarning(IllConditionedWarning):
    """Two rows of a kernel matrix are the same point (duplicated inputs): the matrix is singular."""


#: Rows i, j whose kernel distance ``K_ii + K_jj - 2 K_ij`` is at most this times the mean diagonal are
#: duplicates: the same point to round-off (an NTK entry carries ~1e-9 relative round-off, so exactly
#: duplicated inputs land far below; distinct inputs 1e-4 apart in a ReLU network land above).
DUPLICATE_RTOL = 1e-8
_DUPLICATES_SHOWN = 5


def symmetry_rtol(matrix) -> float:
    """Asymmetry tolerated relative to the largest entry: 1e-10 for float64 input, 1e-4 otherwise.

    Kernels assembled blockwise in float64 are symmetric to ~1e-14; float32 arithmetic (e.g. an
    empirical NTK J J^T in single precision) leaves ~1e-6.
    """
    dtype = getattr(matrix, "dtype", None)
    double = dtype in (torch.float64, np.float64) or dtype is None
    return 1e-10 if double else 1e-4


def _row_blocks(n: int):
    """Row ranges of at most _ROW_BLOCK rows: O(n^2) reductions without an n x n temporary."""
    return [(i, min(i + _ROW_BLOCK, n)) for i in range(0, n, _ROW_BLOCK)]


def finite_or_raise(t: torch.Tensor, name: str) -> torch.Tensor:
    """``data.check_finite`` with a fast path: one reduction (NaN and inf propagate through a sum);
    the element-wise search that locates the first bad value runs only when the sum is not finite."""
    if not math.isfinite(float(t.sum())):
        check_finite(t, name)
    return t


def _max_abs(m: torch.Tensor) -> float:
    """``max |M|`` by two reductions, without an n x n temporary (NaN propagates)."""
    return max(float(m.max()), -float(m.min()))


def _max_asymmetry(m: torch.Tensor) -> float:
    """``max |M - M^T|`` in row blocks, without an n x n temporary."""
    return max(float((m[i:j] - m[:, i:j].T).abs().max()) for i, j in _row_blocks(m.shape[0]))


def _symmetrised(m: torch.Tensor) -> tuple[torch.Tensor, float, float, torch.Tensor]:
    """``((M + M^T) / 2, max |M - M^T|, max |S|, row sums of |S|)`` (S the symmetrised matrix) in one
    pass over the upper triangle of cache-sized tiles: the validation costs no extra pass.

    NaN and inf propagate into the maxima. The output is allocated on transparent huge pages
    (:func:`ntkprior._buffers.empty_output`): measured at n = 4000, one thread, 0.06 s against 0.11 s
    in torch's 4 KiB pages, whose first-touch page faults were half the pass (``m + m.T`` alone 0.09 s).
    """
    n, out, asyms, scales = m.shape[0], empty_output(*m.shape, dtype=m.dtype, device=m.device), [], []
    rows = torch.zeros(n, dtype=m.dtype, device=m.device)
    with op_threads(_TILE * _TILE):                   # cache-sized tiles: one thread
        _symmetrise_tiles(m, out, asyms, scales, rows)
    return out, _max_or_nan(asyms), _max_or_nan(scales), rows


def _symmetrise_tiles(m, out, asyms, scales, rows) -> None:
    """The loop of :func:`_symmetrised`: fills ``out`` and ``rows``, appends per-tile maxima.

    A tile pair that is exactly symmetric (``torch.equal``: the kernels ntkprior computes, numpy's
    ``X @ X.T``) is copied as it is, skipping the difference and the mean: 8 passes over the tile
    instead of 11. NaN never compares equal, so it takes the other branch and reaches the maxima.
    """
    n = m.shape[0]
    for i in range(0, n, _TILE):
        for j in range(i, n, _TILE):
            a, b = m[i:i + _TILE, j:j + _TILE], m[j:j + _TILE, i:i + _TILE].T
            tile = out[i:i + _TILE, j:j + _TILE]
            if torch.equal(a, b):
                asyms.append(0.0)
                tile.copy_(a)
            else:
                asyms.append(float((a - b).abs_().max()))
                torch.add(a, b, out=tile).mul_(0.5)
            if j != i:
                out[j:j + _TILE, i:i + _TILE] = tile.T
            magnitude = tile.abs()
            scales.append(float(magnitude.max()))
            rows[i:i + _TILE] += magnitude.sum(1)
            if j != i:
                rows[j:j + _TILE] += magnitude.sum(0)


def _max_or_nan(values: list[float]) -> float:
    """``max(values)``, NaN if any is NaN (Python's ``max`` would skip a NaN after the first value)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _finite_scale(m: torch.Tensor, name: str) -> float:
    """``max |M|``; raises, locating the first NaN / inf, when it is not finite."""
    scale = _max_abs(m)
    if not math.isfinite(scale):
        check_finite(m, name)
    return scale


def _raise_if_asymmetric(name: str, asym: float, scale: float, rtol: float) -> None:
    if asym > rtol * scale:
        raise ValueError(
            f"{name}: is not symmetric: max |M - M^T| = {asym:.3g}, which is "
            f"{asym / scale:.3g} of the largest entry {scale:.3g} (tolerance {rtol:g}); "
            "a kernel matrix K(x, x) must be symmetric: check how it was computed, "
            "or symmetrise it with (M + M.T) / 2 if the asymmetry is round-off")


def user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` that points at the first caller outside ntkprior."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_symmetric(m: torch.Tensor, name: str, rtol: float = 1e-10) -> None:
    """Raise unless M is finite and ``max |M - M^T| <= rtol * max |M|`` (reported with the numbers)."""
    _raise_if_asymmetric(name, _max_asymmetry(m), _finite_scale(m, name), rtol)


def fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Fix the sign of each column in place so that plots are reproducible, and return it.

    Convention: the entry of largest magnitude is positive; among entries within a relative 1e-6
    of that magnitude (ties, e.g. in Fourier modes) the first one decides.
    """
    for j in range(0, vectors.shape[1], _ROW_BLOCK):         # column blocks: small temporaries
        block = vectors[:, j:j + _ROW_BLOCK]
        mag = block.abs()
        first = (mag >= (1 - 1e-6) * mag.max(dim=0).values).to(torch.int8).argmax(dim=0)
        signs = torch.sign(block[first, torch.arange(block.shape[1], device=block.device)])
        signs[signs == 0] = 1.0
        block.mul_(signs)
    return vectors


def _cholesky(m: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Lower Cholesky factor and LAPACK's info (0: success; i > 0: leading minor i not PD).

    On CPU scipy's LAPACK ``potrf`` (OpenBLAS): measured at n = 4000, one thread, 1.0-1.75 s against
    1.7-2.4 s for torch.linalg.cholesky_ex (MKL). A C-ordered symmetric M is its own Fortran-ordered
    transpose, so the upper factor of ``M^T`` computed in Fortran order is L in C order: no extra copy.
    """
    if m.device.type != "cpu":
        L, info = torch.linalg.cholesky_ex(m)
        return L, int(info)
    u, info = scipy.linalg.lapack.dpotrf(m.numpy().T, lower=0, clean=1)
    return torch.from_numpy(u.T), int(info)


def _eigvalsh(m: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending) of a symmetric matrix, without eigenvectors."""
    if m.device.type != "cpu":
        return torch.linalg.eigvalsh(m)
    return torch.from_numpy(scipy.linalg.eigh(m.numpy(), eigvals_only=True, driver="evr",
                                              check_finite=False))


def _eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of a symmetric matrix: scipy's LAPACK driver ``evr`` on CPU.

    Measured at n = 8000 (FACTS.md): scipy evr 114 s, torch.linalg.eigh 171 s.
    """
    if m.device.type != "cpu":
        return torch.linalg.eigh(m)
    w, v = scipy.linalg.eigh(m.numpy(), driver="evr", check_finite=False)
    return torch.from_numpy(w), torch.from_numpy(v)


class SymmetricPSD:
    """A validated symmetric positive semi-definite matrix with cached factorisations.

    Parameters
    ----------
    matrix : array-like (n, n)
        Symmetric PSD matrix (numpy array or torch tensor); converted to float64 and symmetrised
        as ``(M + M^T) / 2`` after the symmetry check. The caller's array is never modified.
    name : str
        What the matrix is, used in every error and warning message.
    diag_reg : float
        Ridge added to the diagonal. With ``reg="relative"`` (default) the amount added is
        ``diag_reg * mean(diag(M))``; with ``reg="absolute"`` it is ``diag_reg`` itself.
    jitter : None or "auto"
        ``None`` (default): a numerically singular matrix raises a ``ValueError`` reporting its
        smallest eigenvalue and condition number. ``"auto"``: add the smallest jitter
        ``10^e * mean(diag)``, e = -12..-1, for which the Cholesky factorisation succeeds, and
        warn (:class:`JitterWarning`) with its value.

    Attributes
    ----------
    matrix : torch.Tensor
        The matrix that is factorised: symmetrised, plus ridge (and jitter, once added).
    n : int
    ridge : float
        Absolute amount added to the diagonal because of ``diag_reg``.
    jitter : float
        Absolute amount added by ``jitter="auto"`` (0.0 until needed).

    Notes
    -----
    Positive semi-definiteness is checked wherever eigenvalues become available: when ``eigh()`` is
    called, and when the Cholesky factorisation fails. A successful Cholesky factorisation of
    ``M + ridge * I`` proves that every eigenvalue of ``M`` exceeds ``-ridge``; with ``diag_reg > 0``
    negative eigenvalues smaller than the ridge in magnitude are not reported unless ``eigh()`` runs.
    """

    def __init__(self, matrix, name: str = "kernel", *, diag_reg: float = 0.0,
                 reg: str = "relative", jitter: str | None = None):
        if jitter not in (None, "auto"):
            raise ValueError(f"jitter: expected None or 'auto', got {jitter!r}")
        if reg not in ("relative", "absolute"):
            raise ValueError(f"reg: expected 'relative' or 'absolute', got {reg!r}")
        if not (isinstance(diag_reg, (int, float)) and math.isfinite(diag_reg) and diag_reg >= 0):
            raise ValueError(f"diag_reg: expected a finite number >= 0, got {diag_reg!r}")
        m = to_tensor(matrix, name)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"{name}: expected a square matrix (n, n), got shape {tuple(m.shape)}")
        if m.shape[0] == 0:
            raise ValueError(f"{name}: is empty; pass a kernel matrix of at least one input")
        self.name = name
        sym, asym, scale, self._abs_row_sums = _symmetrised(m)
        if not (math.isfinite(scale) and math.isfinite(asym)):
            check_finite(m, name)                    # locates and reports the first NaN / inf
        m = sym
        _raise_if_asymmetric(name, asym, scale, symmetry_rtol(matrix))
        self._unregularised_diagonal = m.diagonal().clone()
        self._check_diagonal(m)
        self.mean_diagonal = float(m.diagonal().mean())
        self.ridge = float(diag_reg) * (self.mean_diagonal if reg == "relative" else 1.0)
        if reg == "relative" and diag_reg > 0 and self.mean_diagonal == 0:
            raise ValueError(f"{name}: the diagonal is zero, so a relative diag_reg adds nothing; "
                             "pass reg='absolute' with the ridge you want")
        m.diagonal().add_(self.ridge)
        self.matrix = m
        self.n = m.shape[0]
        self.jitter = 0.0
        self._jitter_mode = jitter
        self._chol: torch.Tensor | None = None
        self._eig: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned_condition = False
        self._warned_duplicates = False
        self._duplicates: tuple[torch.Tensor, torch.Tensor] | None = None
        self._top: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._values: torch.Tensor | None = None

    # ----------------------------------------------------------------- validation
    def _check_diagonal(self, m: torch.Tensor) -> None:
        d = m.diagonal()
        lo = float(d.min())
        if lo < -PSD_RTOL * float(d.abs().max()):
            i = int(d.argmin())
            raise ValueError(f"{self.name}: diagonal entry {i} is negative ({lo:.6g}); a positive "
                             "semi-definite matrix has a non-negative diagonal: this is not a kernel "
                             "(Gram) matrix")

    def _unregularised(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        return eigenvalues - self.diagonal_shift

    def _check_psd(self, eigenvalues: torch.Tensor) -> None:
        """Reject eigenvalues of the user's matrix (before ridge) below -PSD_RTOL * lambda_max."""
        w = self._unregularised(eigenvalues)
        lo, hi = float(w.min()), float(w.max())
        if lo < -PSD_RTOL * max(hi, 0.0):
            raise ValueError(
                f"{self.name}: is not positive semi-definite: smallest eigenvalue {lo:.6g}, largest "
                f"{hi:.6g} (eigenvalues below {-PSD_RTOL:g} * largest are rejected); a kernel must "
                "be a Gram matrix: check how it was computed (and compute it in float64)")

    def _singular_error(self) -> ValueError:
        """Describe why the Cholesky factorisation failed; raises instead if the matrix is not PSD."""
        w = _eigvalsh(self.matrix)
        self._check_psd(w)
        lo, hi = float(w[0]), float(w[-1])
        cond = hi / lo if lo > 0 else math.inf
        # A useful ridge clears the round-off of the largest eigenvalue and brings the condition
        # number below COND_WARN.
        needed = max(max(-lo, 0.0) + self.n * np.finfo(np.float64).eps * hi, hi / COND_WARN)
        suggestion = 10.0 ** math.ceil(math.log10(needed / self.mean_diagonal)) \
            if self.mean_diagonal > 0 else None
        hint = (f"pass diag_reg={suggestion:g} (a ridge of {suggestion:g} x mean diagonal) "
                if suggestion else "pass diag_reg with reg='absolute' ")
        return ValueError(
            f"{self.name}: is numerically singular, the Cholesky factorisation failed: smallest "
            f"eigenvalue {lo:.3g}, largest {hi:.3g}, condition number {cond:.3g}. Duplicate inputs, "
            f"1-D inputs without biases, or more inputs than features make kernels singular. {hint}"
            "to add an explicit ridge, or jitter='auto' to add the smallest jitter that works")

    # ----------------------------------------------------------------- factorisations
    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def diagonal_shift(self) -> float:
        """Everything added to the caller's diagonal: ``ridge + jitter``."""
        return self.ridge + self.jitter

    def cholesky(self) -> torch.Tensor:
        """Lower Cholesky factor L (``matrix = L L^T``), computed once."""
        if self._chol is None:
            L, info = _cholesky(self.matrix)
            if info != 0:
                if self._jitter_mode != "auto":
                    raise self._singular_error()
                L = self._cholesky_with_jitter()
            self._chol = L
            self._warn_if_ill_conditioned(self._condition_estimate(), "LAPACK estimate")
        return self._chol

    def _cholesky_with_jitter(self) -> torch.Tensor:
        """Smallest jitter on JITTER_GRID (x mean diagonal) for which Cholesky succeeds.

        Bisection over the grid, restoring the exact diagonal after each failed try.
        """
        scale = self.mean_diagonal if self.mean_diagonal > 0 else 1.0
        diag = self.matrix.diagonal()
        original = diag.clone()
        lo, hi, found = 0, len(JITTER_GRID) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            diag.copy_(original + JITTER_GRID[mid] * scale)
            L, info = _cholesky(self.matrix)
            if info == 0:
                found, hi = (mid, L), mid - 1
            else:
                lo = mid + 1
        if found is None:
            diag.copy_(original)
            raise self._singular_error()
        index, L = found
        diag.copy_(original + JITTER_GRID[index] * scale)
        self.jitter = JITTER_GRID[index] * scale
        if JITTER_GRID[index] > PSD_RTOL:
            # The jitter is too large to certify that the matrix was PSD within tolerance.
            self._check_psd(_eigvalsh(self.matrix))
        self._shift_cached_eigenvalues(self.jitter)
        warnings.warn(
            f"{self.name}: is numerically singular (Cholesky failed); jitter='auto' added "
            f"{self.jitter:.3g} (= {JITTER_GRID[index]:g} x mean diagonal {scale:.3g}) to the "
            f"diagonal, the smallest of 1e-12..1e-1 x mean diagonal that works. Results are those "
            f"of {self.name} + {self.jitter:.3g} I; pass diag_reg={JITTER_GRID[index]:g} to make "
            "this ridge explicit", JitterWarning, stacklevel=user_stacklevel())
        return L

    def _shift_cached_eigenvalues(self, shift: float) -> None:
        """The matrix gained ``shift * I``: so did every eigenvalue cached before (vectors unchanged)."""
        if self._eig is not None:
            self._eig = (self._eig[0] + shift, self._eig[1])
        if self._values is not None:
            self._values = self._values + shift
        self._top = {k: (w + shift, v) for k, (w, v) in self._top.items()}

    def _condition_estimate(self) -> float:
        """1-norm condition number estimated by LAPACK ``pocon`` from the Cholesky factor, O(n^2)."""
        # the 1-norm of the matrix as factorised, from the row sums of |M| taken while validating
        d0 = self._unregularised_diagonal
        anorm = float((self._abs_row_sums - d0.abs() + self.matrix.diagonal().abs()).max())
        # C-ordered L is the Fortran-ordered upper factor U = L^T: no copy.
        rcond, info = scipy.linalg.lapack.dpocon(self._chol.cpu().numpy().T, anorm, uplo="U")
        return math.inf if rcond == 0 else 1.0 / rcond

    def _warn_if_ill_conditioned(self, cond: float, how: str) -> None:
        if cond > COND_WARN and not self._warned_condition:
            self._warned_condition = True
            digits = min(16, int(math.log10(cond))) if math.isfinite(cond) else 16
            warnings.warn(
                f"{self.name}: is ill-conditioned: condition number {cond:.3g} ({how}); solves with "
                f"it lose about {digits} of 16 significant digits. An explicit ridge (diag_reg, "
                "relative to the mean diagonal) improves the conditioning",
                IllConditionedWarning, stacklevel=user_stacklevel())

    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (ascending, clipped at 0) and orthonormal eigenvectors (columns), computed once.

        Negative eigenvalues of the matrix before the ridge below ``-1e-8 * lambda_max`` raise a
        ``ValueError``; the round-off negatives that remain are clipped to 0 (MATH.md section 4).
        Eigenvector signs follow :func:`fix_signs` (largest-magnitude entry positive).
        """
        if self._eig is None:
            w, v = _eigh(self.matrix)
            self._check_psd(w)
            self._eig = (w.clamp(min=0.0), fix_signs(v))
        return self._eig

    def eigvalsh(self) -> torch.Tensor:
        """All eigenvalues (ascending, clipped at 0), checked as in :meth:`eigh`, without eigenvectors:
        from the cached decomposition when there is one, otherwise by LAPACK ``syevr`` without vectors
        (cached; the same eigenvalues as :meth:`eigh` to round-off, ~n·eps·lambda_max)."""
        if self._eig is not None:
            return self._eig[0]
        if self._values is None:
            w = _eigvalsh(self.matrix)
            self._check_psd(w)
            self._values = w.clamp(min=0.0)
        return self._values

    def top_eigh(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k largest eigenvalues (descending, clipped at 0) and their eigenvectors (n, k).

        From the cached full decomposition when there is one or when k is a large share of n
        (``k > n / PARTIAL_SHARE``); otherwise by ARPACK's Lanczos iteration (``eigsh``, which="LA",
        tolerance machine precision, a fixed start vector), O(n^2) per iteration and nothing n x n
        besides the matrix: measured 0.13 s for k = 10 at n = 4000 against 9.3 s for a full ``eigh``
        (issue #20). Signs follow :func:`fix_signs`; the result is cached per k.
        """
        if self.uses_full_decomposition(k):
            w, v = self.eigh()
            return w[self.n - k:].flip(0), v[:, self.n - k:].flip(1)
        if k not in self._top:
            w, v = top_eigenpairs(self._product(), self.n, k, dtype=self.matrix.dtype,
                                  device=self.matrix.device)
            self._top = {k: (w.clamp(min=0.0), v)}
        return self._top[k]

    def _product(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``b -> matrix @ b`` for Lanczos: on CPU by numpy (OpenBLAS ``gemv``), measured 1.2x faster
        than torch's (MKL on this AMD machine) over ARPACK's top-10 at n = 4000, one thread."""
        if self.matrix.device.type != "cpu":
            return lambda b: self.matrix @ b
        dense = self.matrix.numpy()
        return lambda b: torch.from_numpy(dense @ b.numpy())

    def uses_full_decomposition(self, k: int) -> bool:
        """Whether :meth:`top_eigh` ``(k)`` takes the full decomposition (cached, or k > n / PARTIAL_SHARE)."""
        return self._eig is not None or k * PARTIAL_SHARE > self.n

    def condition_number(self) -> float:
        """lambda_max / lambda_min: exact if ``eigh()`` has run, else the LAPACK estimate from Cholesky."""
        if self._eig is not None:
            w = self._eig[0]
            return float(w[-1] / w[0]) if w[0] > 0 else math.inf
        self.cholesky()
        return self._condition_estimate()

    # ----------------------------------------------------------------- operations
    def _as_rhs(self, b, name: str) -> torch.Tensor:
        t = to_tensor(b, name, device=self.matrix.device)
        if t.ndim not in (1, 2) or t.shape[0] != self.n:
            raise ValueError(f"{name}: expected shape ({self.n},) or ({self.n}, k) to match the "
                             f"{self.n} x {self.n} {self.name}, got {tuple(t.shape)}")
        return finite_or_raise(t, name)

    def matvec(self, v) -> torch.Tensor:
        """``matrix @ v`` for v of shape (n,) or (n, k)."""
        return self.matrix @ self._as_rhs(v, "v")

    def duplicate_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs (i < j) of rows that are the same point: ``K_ii + K_jj - 2 K_ij <= DUPLICATE_RTOL ·
        mean diag`` (of the matrix without its ridge), as (pairs (p, 2), distances (p,)); O(n²) in
        row blocks, computed once. ``K_ii + K_jj - 2 K_ij = ‖φ(x_i) - φ(x_j)‖²`` in feature space."""
        if self._duplicates is None:
            diag = self.matrix.diagonal() - self.diagonal_shift
            threshold = DUPLICATE_RTOL * max(self.mean_diagonal, 0.0)
            pairs, distances = [], []
            for i, j in _row_blocks(self.n):
                d = diag[i:j, None] + diag[None, :] - 2.0 * self.matrix[i:j]   # (only j > i used: no ridge)
                hits = torch.nonzero(torch.triu(d <= threshold, diagonal=i + 1))
                pairs.append(hits + torch.tensor([i, 0], device=hits.device))
                distances.append(d[hits[:, 0], hits[:, 1]])
            self._duplicates = (torch.cat(pairs), torch.cat(distances))
        return self._duplicates

    def _check_duplicates(self, rhs: torch.Tensor, name: str) -> None:
        """Without a ridge, duplicated rows make the matrix singular: ``K a = b`` has a solution only
        if b agrees at them. Raise where it does not (naming the rows), warn (once) where it does."""
        if self.ridge > DUPLICATE_RTOL * self.mean_diagonal:
            return
        pairs, distances = self.duplicate_rows()
        if not len(pairs):
            return
        flat = rhs.reshape(self.n, -1).cpu()
        # rows that are the same point to distance d in feature space give right-hand sides (labels, or
        # cross-kernel rows) that agree to about sqrt(d / mean diag) of their scale (Cauchy-Schwarz)
        scale = float(flat.abs().max()) or 1.0
        allowed = 10.0 * torch.sqrt(torch.clamp(distances, min=0.0) / max(self.mean_diagonal, 1e-300)
                                    + np.finfo(np.float64).eps) * scale
        gap = (flat[pairs[:, 0]] - flat[pairs[:, 1]]).abs().amax(dim=1)
        conflict = torch.nonzero(gap > allowed.cpu())[:, 0]
        shown = ", ".join(f"({int(a)}, {int(b)})" for a, b in pairs[:_DUPLICATES_SHOWN].tolist())
        more = f" and {len(pairs) - _DUPLICATES_SHOWN} more" if len(pairs) > _DUPLICATES_SHOWN else ""
        fix = ("deduplicate the inputs (one row per distinct input, with the mean of its labels) or add a "
               "ridge (diag_reg, e.g. 1e-6: observation noise)")
        if len(conflict):
            k = int(conflict[0])
            a, b = (int(v) for v in pairs[k])
            raise ValueError(f"{name}: rows {a} and {b} of {self.name} are the same input (duplicated to "
                             f"round-off), but the values there differ ({float(flat[a, 0]):.6g} vs "
                             f"{float(flat[b, 0]):.6g}; {len(conflict)} such pair(s)): with a singular "
                             f"{self.name} no function fits both; {fix}")
        if not self._warned_duplicates:
            self._warned_duplicates = True
            warnings.warn(f"{self.name}: rows {shown}{more} are duplicated inputs, so the matrix is singular "
                          f"and the result rests on round-off; {fix}", DuplicateInputsWarning,
                          stacklevel=user_stacklevel())

    def solve(self, b) -> torch.Tensor:
        """``matrix^{-1} b`` by a Cholesky solve (never an explicit inverse); b (n,) or (n, k).

        Without a ridge, rows that are duplicated inputs are detected first (:meth:`duplicate_rows`):
        ``b`` differing there raises a ``ValueError`` naming the rows; agreeing, a warning."""
        rhs = self._as_rhs(b, "b")
        self._check_duplicates(rhs, "labels (right-hand side b)")
        flat, L = rhs.reshape(self.n, -1), self.cholesky()
        if L.device.type == "cpu":         # LAPACK potrs on the Fortran-ordered U = L^T: no copy
            x = torch.from_numpy(scipy.linalg.cho_solve((L.numpy().T, False), flat.numpy(),
                                                        check_finite=False))
        else:
            x = torch.cholesky_solve(flat, L)
        return x.reshape(rhs.shape)

    def logdet(self) -> float:
        """``log det(matrix) = 2 sum_i log L_ii``."""
        return float(2.0 * torch.log(self.cholesky().diagonal()).sum())

    def whiten(self, b) -> torch.Tensor:
        """``L^{-1} b`` (so that ``(L^{-1} b)^T (L^{-1} b) = b^T matrix^{-1} b``); b (n,) or (n, k).
        Duplicated rows are checked as in :meth:`solve`."""
        rhs = self._as_rhs(b, "b")
        self._check_duplicates(rhs, "labels (right-hand side b)")
        flat, L = rhs.reshape(self.n, -1), self.cholesky()
        if L.device.type == "cpu":         # LAPACK trtrs on U^T, U = L^T Fortran-ordered: no copy
            z = torch.from_numpy(scipy.linalg.solve_triangular(L.numpy().T, flat.numpy(), trans="T",
                                                               lower=False, check_finite=False))
        else:
            z = torch.linalg.solve_triangular(L, flat, upper=False)
        return z.reshape(rhs.shape)

    def quad_form(self, y) -> float:
        """``sum_j y_j^T matrix^{-1} y_j`` over the columns of y (n,) or (n, k): ``||L^{-1} y||^2``."""
        z = self.whiten(y)
        return float((z * z).sum())

    def apply_function(self, f: Callable[[torch.Tensor], torch.Tensor], b) -> torch.Tensor:
        """``V f(Lambda) V^T b`` from the cached eigendecomposition (eigenvalues clipped at 0).

        ``f`` maps the (n,) eigenvalues to an array of shape (..., n) (e.g. one row per time); the
        result then has shape (..., n) for b of shape (n,), or (..., n, k) for b of shape (n, k).
        """
        rhs = self._as_rhs(b, "b")
        w, v = self.eigh()
        fw = f(w)
        coeffs = v.T @ rhs.reshape(self.n, -1)                       # (n, k)
        out = v @ (fw[..., :, None] * coeffs)                        # (..., n, k)
        return out if rhs.ndim == 2 else out[..., 0]

    def __repr__(self) -> str:
        done = [s for s, c in (("cholesky", self._chol), ("eigh", self._eig)) if c is not None]
        return (f"SymmetricPSD({self.name!r}, n={self.n}, ridge={self.ridge:.3g}, "
                f"jitter={self.jitter:.3g}, factorised={done})")


def is_stored_kernel(obj) -> bool:
    """An out-of-core kernel (:class:`ntkprior.scale.stored.StoredKernel`): solves, eigenpairs and
    log-determinants by iterative methods, its ridge set by ``regularised(diag_reg, reg)``."""
    return callable(getattr(obj, "regularised", None)) and callable(getattr(obj, "eigsh", None))


def as_symmetric_psd(matrix, name: str = "kernel", *, diag_reg: float = 0.0, reg: str = "relative",
                     jitter: str | None = None):
    """``matrix`` as a :class:`SymmetricPSD`; one that already is one is reused with its factorisations.

    Reusing a ``SymmetricPSD`` keeps its own ridge: passing ``diag_reg`` or ``jitter`` as well is an error.
    A stored kernel (:func:`is_stored_kernel`) is returned as its view ``K + ridge·I``
    (``matrix.regularised(diag_reg, reg)``), which offers ``n``, ``solve``, ``quad_form`` and a
    stochastic ``logdet`` but no Cholesky factor or full eigendecomposition.
    """
    if is_stored_kernel(matrix):
        if not matrix.symmetric:
            raise ValueError(f"{name}: the stored kernel {matrix.location!r} is a cross kernel of shape "
                             f"{matrix.shape}; a kernel on the training inputs is K(x, x): compute it "
                             "with x2=None")
        if jitter is not None:
            raise ValueError(f"jitter: {name} is a stored kernel, where jitter='auto' (a search over "
                             "Cholesky factorisations) is not available; pass an explicit ridge, e.g. "
                             "diag_reg=1e-6 (relative to the mean diagonal)")
        return matrix.regularised(diag_reg, reg)
    if isinstance(matrix, SymmetricPSD):
        if diag_reg or jitter is not None:
            raise ValueError(f"diag_reg: {name} is already a SymmetricPSD with ridge {matrix.ridge:g} "
                             "and its own jitter setting; create it with the ridge you want instead "
                             "of passing diag_reg / jitter again")
        return matrix
    return SymmetricPSD(matrix, name, diag_reg=diag_reg, reg=reg, jitter=jitter)
