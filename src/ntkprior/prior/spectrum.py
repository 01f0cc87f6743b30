"""Eigenmodes of a kernel on a set of inputs, and the eigenfunctions anywhere by Nyström extension.

MATH.md section 5. The Gram matrix ``H(X, X) = V diag(lambda) V^T`` has eigenvectors ``v_i`` on the
inputs X; the Nyström extension ``phi_i(x) = H(x, X) v_i / lambda_i`` evaluates the i-th
eigenfunction at any input and reproduces ``v_i`` exactly on X. The eigenvalues are those of the
Gram matrix; divided by n they estimate the eigenvalues of the kernel's integral operator under the
distribution the inputs were drawn from.

Up to ``DENSE_LIMIT`` inputs the decomposition is dense (LAPACK ``evr``); beyond, the top k
eigenpairs are found by Lanczos iteration (ARPACK) using only products with the kernel matrix,
so nothing larger than the kernel itself is formed. A kernel stored out of core
(:class:`ntkprior.scale.stored.StoredKernel`) uses its own block Lanczos (few passes over the store),
and its eigenfunctions the architecture the store records. Any other object with ``.shape``
and ``.matvec(v)`` is accepted as the kernel and used through ARPACK.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ntkprior.data import as_inputs, to_tensor
from ntkprior.prior.linalg import (IllConditionedWarning, as_symmetric_psd, check_symmetric, finite_or_raise,
                             is_stored_kernel, symmetry_rtol, top_eigenpairs, user_stacklevel)
from ntkprior.prior.sources import KernelSource, check_kernel_name, is_kernel_operator, resolve_kernels

__all__ = ["Eigenmodes", "eigenmodes", "count_sign_changes", "DENSE_LIMIT"]

#: Largest n for which method="auto" uses a dense eigendecomposition (about 4 min at n = 10^4).
DENSE_LIMIT = 10_000


@dataclass(frozen=True)
class Eigenmodes:
    """The top eigenpairs of a kernel matrix H(X, X), largest eigenvalue first.

    Attributes
    ----------
    values : (k,) tensor, descending
        Eigenvalues of the Gram matrix (clipped at 0).
    vectors : (n, k) tensor
        Orthonormal eigenvectors; in each the entry of largest magnitude is positive
        (:func:`ntkprior.prior.linalg.fix_signs`), so plots are reproducible.
    kernel : str
        Which kernel ("ntk", "nngp", or "kernel" for a user's single kernel).
    x : (n, d) tensor or None
        The inputs, when known.
    all_values : (n,) tensor, descending, or None
        Every eigenvalue (clipped at 0), when asked for with ``eigenmodes(..., all_values=True)``.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    kernel: str
    x: torch.Tensor | None = None
    all_values: torch.Tensor | None = field(default=None, repr=False)
    source: KernelSource | None = field(default=None, repr=False)
    requested: str = field(default="ntk", repr=False)     #: kernel name asked of the source

    def __len__(self) -> int:
        return self.values.shape[0]

    def __repr__(self) -> str:
        top = ", ".join(f"{float(v):.4g}" for v in self.values[:5])
        more = ", ..." if len(self) > 5 else ""
        return (f"Eigenmodes(kernel={self.kernel!r}, n={self.vectors.shape[0]}, k={len(self)}, "
                f"values=[{top}{more}])")

    def functions(self, x_new=None, *, cross=None) -> torch.Tensor:
        """Eigenfunctions at new inputs by the Nyström extension: ``phi_i(x) = H(x, X) v_i / lambda_i``.

        Pass ``x_new`` (n_new, d) when the modes were computed from an architecture or kernel
        function, or the cross-kernel matrix ``cross = H(x_new, X)`` (n_new, n) otherwise. Returns
        (n_new, k); at the original inputs it reproduces ``vectors``.
        """
        if cross is None:
            if x_new is None:
                raise ValueError("x_new: pass the new inputs, or cross=H(x_new, X)")
            if self.source is None or self.x is None:
                raise ValueError("x_new: these eigenmodes come from a matrix, so the kernel cannot be "
                                 "evaluated at new inputs; pass cross=H(x_new, X) instead")
            cross = self.source.cross(self.requested, as_inputs(x_new, "x_new"), self.x)
        cross = finite_or_raise(to_tensor(cross, "cross"), "cross")
        n = self.vectors.shape[0]
        if cross.ndim != 2 or cross.shape[1] != n:
            raise ValueError(f"cross: expected shape (n_new, {n}) (the kernel between the new inputs "
                             f"and the {n} inputs of the eigenmodes), got {tuple(cross.shape)}")
        if (self.values == 0).any():
            first = int(torch.nonzero(self.values == 0)[0])
            raise ValueError(f"eigenmodes: eigenvalue {first} is 0, so its Nyström extension "
                             f"is undefined; keep only the first {first} modes (k={first})")
        noise = n * np.finfo(np.float64).eps * float(self.values[0])
        if (self.values < noise).any():
            warnings.warn(f"eigenmodes: {int((self.values < noise).sum())} eigenvalue(s) are below the "
                          f"round-off level {noise:.3g} of the largest; their eigenfunctions are "
                          "dominated by round-off", IllConditionedWarning, stacklevel=user_stacklevel())
        return (cross @ self.vectors) / self.values


def _check_k(k, n: int, dense: bool) -> int:
    if k is None:
        if not dense:
            raise ValueError(f"k: pass the number of eigenpairs wanted; n = {n} exceeds DENSE_LIMIT = "
                             f"{DENSE_LIMIT} for a dense decomposition (or pass method='dense')")
        return n
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k: expected an integer between 1 and n = {n}, got {k!r}")
    if not dense and k >= n:
        raise ValueError(f"k: Lanczos finds fewer than n = {n} eigenpairs, got k = {k}; "
                         "use method='dense' for all of them")
    return int(k)


def _check_stored_k(k, n: int) -> int:
    if k is None:
        raise ValueError(f"k: pass the number of eigenpairs wanted; a stored kernel gives its top k by "
                         f"block Lanczos, not all n = {n} (method='dense' loads it into memory)")
    return _check_k(k, n, dense=True)


def _lanczos(matvec, n: int, k: int, tol: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenpairs of a symmetric operator by ARPACK's implicitly restarted Lanczos."""
    return top_eigenpairs(matvec, n, k, tol=tol, seed=seed)


def eigenmodes(arch_or_kernel, x=None, k: int | None = None, kernel: str | None = None, *,
               method: str = "auto", tol: float = 0.0, seed: int = 0, all_values: bool = False,
               progress: bool = False) -> Eigenmodes:
    """The top-k eigenpairs of a kernel on inputs x, largest first.

    Parameters
    ----------
    arch_or_kernel :
        Architecture, kernel callable, torch module, precomputed matrix or KernelBlocks, stored
        kernel (see :mod:`ntkprior.prior.sources`), or an operator with ``.shape`` and ``.matvec(v)``.
    x : (n, d), optional for matrices, operators and stored kernels (which know their inputs)
    k : int or None
        Number of eigenpairs (None: all, dense only).
    kernel : "ntk", "nngp" or None
        None: the NTK, or the only kernel the source has (a stored NNGP, say).
    method : "auto" | "dense" | "lanczos"
        "auto": dense up to ``DENSE_LIMIT`` inputs, Lanczos beyond (and always for operators and
        stored kernels; "dense" loads a stored kernel into memory).
    tol, seed :
        Lanczos relative accuracy (0: machine precision) and the seed of its start vector. For a
        stored kernel, block Lanczos stops when every residual ``‖Hv − λv‖ <= tol·λ_1`` (tol 0:
        1e-8), which bounds each eigenvalue's error by that and each vector's angle by it
        divided by the spectral gap (:meth:`ntkprior.scale.stored.StoredKernel.eigsh`).
    all_values :
        Also every eigenvalue (``.all_values``, descending), for a spectrum drawn with a few
        eigenvectors: LAPACK ``syevr`` without vectors (about 3x cheaper than the full decomposition;
        equal to it to round-off, ~n·eps·lambda_1) next to the top k pairs by Lanczos, or both from one
        full decomposition when k is a large share of n. Dense decompositions only.

    Returns
    -------
    Eigenmodes with ``.values`` (descending), ``.vectors`` (n, k) and ``.functions(x_new)``.
    """
    if kernel is not None:
        check_kernel_name(kernel)
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method: expected 'auto', 'dense' or 'lanczos', got {method!r}")
    if is_kernel_operator(arch_or_kernel) and not is_stored_kernel(arch_or_kernel):
        n = int(arch_or_kernel.shape[0])
        _check_all_values(all_values, "the kernel is an operator (products only)")
        w, v = _lanczos(arch_or_kernel.matvec, n, _check_k(k, n, dense=False), tol, seed)
        return Eigenmodes(w.clamp(min=0), v, kernel or "ntk", None if x is None else as_inputs(x, "x"))
    source = resolve_kernels(arch_or_kernel, progress=progress)
    if kernel is None:
        kernel = source.names[0] if source.names is not None and "ntk" not in source.names else "ntk"
    label = kernel if source.names is not None else "kernel"      # Eigenmodes.kernel
    matrix = source.matrix(kernel, x)
    x_kept = None if x is None else as_inputs(x, "x")
    if is_stored_kernel(matrix):
        if method != "dense":
            _check_all_values(all_values, "the kernel is stored out of core", matrix.n)
            values, vectors = matrix.eigsh(_check_stored_k(k, matrix.n), tol=tol or 1e-8, seed=seed)
            return Eigenmodes(values.clamp(min=0), vectors, label, matrix.x1, source=source, requested=kernel)
        matrix, x_kept = matrix.load(), matrix.x1
    n = matrix.n if not isinstance(matrix, torch.Tensor) else matrix.shape[0]
    dense = method == "dense" or (method == "auto" and n <= DENSE_LIMIT)
    k = _check_k(k, n, dense)
    spectrum = None
    if dense:       # the top k by Lanczos when k << n, else from the full decomposition
        psd = as_symmetric_psd(matrix, f"{source.label(kernel)} of the inputs")
        values, vectors = psd.top_eigh(k)
        spectrum = psd.eigvalsh().flip(0) if all_values else None     # after top_eigh: reuses a full one
    else:
        why = "method='lanczos' was asked for" if method == "lanczos" else f"n = {n} exceeds DENSE_LIMIT = {DENSE_LIMIT}"
        _check_all_values(all_values, why, n)
        if not isinstance(matrix, torch.Tensor):
            matrix = matrix.matrix
        check_symmetric(matrix, f"{source.label(kernel)} of the inputs", symmetry_rtol(matrix))
        values, vectors = _lanczos(lambda b: (matrix @ b.to(matrix.device)).cpu(), n, k, tol, seed)
        values, vectors = values.to(matrix.device), vectors.to(matrix.device)
        values = values.clamp(min=0)
    keep_source = x_kept is not None and not source.precomputed
    return Eigenmodes(values, vectors, label, x_kept, all_values=spectrum,
                      source=source if keep_source else None, requested=kernel)


def _check_all_values(all_values: bool, why: str, dense_n: int | None = None) -> None:
    """Refuse ``all_values`` where the eigenpairs come from Lanczos (``dense_n``: method='dense' would serve)."""
    if all_values:
        dense = f"pass method='dense' (an n x n matrix, n = {dense_n}) or " if dense_n else ""
        raise ValueError(f"all_values: every eigenvalue needs a dense decomposition, and {why}; "
                         f"{dense}ask for the top k eigenpairs only")


def count_sign_changes(vectors, *, rtol: float = 1e-6):
    """Number of sign changes along the first axis of a vector (n,) or of each column of (n, k).

    Entries smaller than ``rtol * max |v|`` count as zero and are skipped. Order the inputs first
    (e.g. by their coordinate on an interval): the k-th eigenvector of a smooth kernel on an
    interval has k - 1 sign changes (MATH.md section 5).
    """
    v = to_tensor(vectors, "vectors")
    if v.ndim not in (1, 2):
        raise ValueError(f"vectors: expected shape (n,) or (n, k), got {tuple(v.shape)}")
    columns = v[:, None] if v.ndim == 1 else v
    counts = []
    for col in columns.T:
        kept = col[col.abs() > rtol * col.abs().max()]
        signs = torch.sign(kept)
        counts.append(int((signs[1:] != signs[:-1]).sum()))
    return counts[0] if v.ndim == 1 else torch.tensor(counts)
