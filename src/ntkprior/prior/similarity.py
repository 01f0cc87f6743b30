"""Which inputs a network's kernel calls alike: the nearest pool inputs of each query.

The similarity of two inputs under a kernel k is the normalised kernel (the cosine of the angle
between their feature vectors, or the correlation of the network's outputs at the two inputs
under the prior)

    s(x, x') = k(x, x') / sqrt(k(x, x) · k(x', x')),   -1 <= s <= 1,

which for the NNGP is the correlation of the random network's outputs f(x), f(x') and for the
NTK the cosine between the parameter gradients ∇θ f(x), ∇θ f(x') (Jacot, Gabriel & Hongler 2018).
Under kernel regression a training point x' moves the prediction at x by an amount proportional to
k(x, x'): the most similar pool inputs are the ones whose labels a trained network copies most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.data import Summarized, as_inputs
from ntkprior.prior.linalg import is_stored_kernel
from ntkprior.prior.sources import check_kernel_name, resolve_kernels

__all__ = ["Similarity", "similar", "normalised_kernel"]


@dataclass(frozen=True, repr=False)
class Similarity(Summarized):
    """The k most similar pool inputs of each query under one kernel.

    ``indices`` (n_queries, k): pool rows, most similar first (ties: the lower pool index first);
    ``similarity`` (n_queries, k): their normalised kernel values s(query, pool[index]);
    ``matrix`` (n_queries, n_pool): s for every pair; ``kernel``: "ntk", "nngp" or "kernel".
    """

    indices: np.ndarray
    similarity: np.ndarray
    matrix: np.ndarray
    kernel: str


def normalised_kernel(cross, query_diagonal, pool_diagonal, names=("queries", "pool")) -> torch.Tensor:
    """``cross[i, j] / sqrt(query_diagonal[i] · pool_diagonal[j])``; a zero or negative variance
    k(x, x) <= 0 (the similarity is undefined there) raises a ValueError naming the input."""
    for diag, name in zip((query_diagonal, pool_diagonal), names):
        bad = torch.nonzero(diag <= 0).reshape(-1)
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"{name}: row {i} has kernel variance k(x, x) = {float(diag[i]):.3g} <= 0, so its "
                             "normalised similarity is undefined (an all-zero input under a kernel without "
                             "bias?); remove it or add bias_std > 0")
    return cross / torch.sqrt(query_diagonal[:, None] * pool_diagonal[None, :])


def _check_k(k, n_pool: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_pool:
        raise ValueError(f"k: expected an integer between 1 and the pool size {n_pool}, got {k!r}")
    return int(k)


def _pool_diagonal(train) -> torch.Tensor:
    """``diag K(pool, pool)`` of a precomputed train block (tensor, SymmetricPSD or stored kernel)."""
    if is_stored_kernel(train):
        return train.diagonal()
    if isinstance(train, torch.Tensor):
        return train.diagonal()
    return train.matrix.diagonal()


def _kernel_parts(source, kernel: str, queries, pool):
    """(K(queries, pool), diag K(queries, queries), diag K(pool, pool)) as float64 tensors."""
    if hasattr(source, "diagonal"):       # computes at new inputs: never the pool-pool matrix
        return (source.cross(kernel, queries, pool), source.diagonal(kernel, queries),
                source.diagonal(kernel, pool))
    block = source.blocks([kernel], pool, queries, test="diagonal")[kernel]
    return block.test_train, block.test_diagonal(), _pool_diagonal(block.train)


def similar(arch_or_kernel, queries, pool, k: int = 5, *, kernel: str = "ntk",
            progress: bool = False) -> Similarity:
    """The ``k`` pool inputs most similar to each query, by the normalised kernel
    ``s(x, x') = k(x, x') / sqrt(k(x, x) k(x', x'))`` (module docstring).

    Parameters
    ----------
    arch_or_kernel :
        Any kernel source (:mod:`ntkprior.prior.sources`): an architecture (exact NNGP/NTK), a
        torch module (its empirical NTK at the current parameters, e.g. after training: the
        "after kernel"), a callable ``k(x1, x2)``, or precomputed / stored matrices with the pool
        as the training set: ``KernelBlocks(K(pool, pool), K(queries, pool), K(queries, queries)
        or its diagonal)`` (only the diagonals of the square blocks are read).
    queries : (n_q, ...) inputs; pool : (n_p, ...) inputs (for precomputed matrices: the inputs
        they were computed on, used to check the row counts).
    k : how many neighbours per query (1 <= k <= n_p).
    kernel : "ntk" or "nngp" (ignored by single-kernel sources).

    Returns
    -------
    :class:`Similarity` with ``.indices`` and ``.similarity`` (n_q, k), most similar first.
    """
    check_kernel_name(kernel)
    queries, pool = as_inputs(queries, "queries"), as_inputs(pool, "pool")
    k = _check_k(k, pool.shape[0])
    source = resolve_kernels(arch_or_kernel, progress=progress)
    cross, query_diag, pool_diag = _kernel_parts(source, kernel, queries, pool)
    s = normalised_kernel(cross, query_diag, pool_diag).cpu().numpy()
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return Similarity(order, np.take_along_axis(s, order, axis=1), s, source.label(kernel).lower())
