"""The infinite-width kernel state and the dense update.

A fully-connected network in the infinite-width limit is described, layer by layer, by
the state ``(K, K11, K22, Θ)``: the NNGP cross covariance of the pre-activations at two
input sets, the variances at each set, and the cross NTK (Lee et al. 2018; Jacot et al.
2018; the conventions of neural-tangents, see MATH.md section 2). This module knows no
torch modules and no architectures: only the arithmetic on that state.

Activation maps live in ``activations.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class KernelState:
    """The infinite-width state of a block of rows ``x1[r0:r1]`` against columns ``x2``.

    ``cov``/``ntk`` are (rows, cols) matrices, or (n,) vectors in diagonal mode (where the
    columns are the rows themselves). ``var1``/``ntk1`` hold K(x, x) and Θ(x, x) for the
    rows, ``var2`` K(x', x') for the columns. ``diag_offset`` is set when the block
    contains the matrix diagonal (``x2`` is ``x1``): entry ``(i, diag_offset + i)`` is a
    diagonal entry, which is kept exactly equal to ``var1``/``ntk1`` after every layer
    (so the angle there is exactly zero, not round-off). ``width`` is the current layer
    width, needed by the standard parameterisation.

    Signals and images (MATH.md section 6) add positions: ``shape`` is the spatial shape
    (``()`` for vectors) and every tensor gains trailing position axes, flattened — the
    position diagonal ``(..., P)``, or with ``full`` the whole positions × positions
    covariance ``(..., P, P)`` (``ntkprior.kernels.spatial``).
    """

    cov: Tensor
    ntk: Tensor
    var1: Tensor
    var2: Tensor
    ntk1: Tensor
    width: int
    diagonal: bool = False
    diag_offset: int | None = None
    shape: tuple = ()
    full: bool = False

    def sync_diagonal(self) -> None:
        """Overwrite the diagonal entries of a symmetric block with the exact variances."""
        if self.diag_offset is None or self.diagonal:
            return
        rows = self.cov.shape[0]
        idx = torch.arange(rows, device=self.cov.device)
        self.cov[idx, idx + self.diag_offset] = self.var1
        self.ntk[idx, idx + self.diag_offset] = self.ntk1


def input_state(x1: Tensor, x2: Tensor, *, diagonal: bool = False,
                diag_offset: int | None = None, full: bool = False) -> KernelState:
    """The state at the input: ``K = x·x' / d``, ``Θ = 0`` (the input is normalised by its dimension).

    Signals/images (n, C, *S): ``K(i, j) = Σ_c x_c(i) x'_c(j) / C`` per pair of positions, all
    pairs when ``full``, else only the position diagonal (``ntkprior.kernels.spatial``).
    """
    if x1.ndim > 2:
        from ntkprior.kernels.spatial import spatial_input_state
        return spatial_input_state(x1, x2, diagonal=diagonal, diag_offset=diag_offset, full=full)
    d = x1.shape[1]
    var1 = (x1 * x1).sum(1) / d
    if diagonal:
        ntk = torch.zeros_like(var1)
        return KernelState(var1, ntk, var1, var1, ntk, width=d, diagonal=True)
    var2 = (x2 * x2).sum(1) / d
    cov = (x1 @ x2.T).div_(d)
    _exact_on_copies(cov, x1, x2, var1, var2)
    state = KernelState(cov, torch.zeros_like(cov), var1, var2, torch.zeros_like(var1),
                        width=d, diag_offset=diag_offset)
    state.sync_diagonal()
    return state


def _exact_on_copies(cov: Tensor, x1: Tensor, x2: Tensor, var1: Tensor, var2: Tensor) -> None:
    """Set ``cov[i, j] = var1[i]`` where row i of x1 equals row j of x2, in place.

    A matrix product rounds differently from the row sums of squares, so without this a copy of x
    (``kernel(x, x.clone())``) would start with ``K != K11`` by an ulp, and the angle
    ``sqrt(K11·K22 − K²)`` would turn that ulp into 1e-8. Candidates are the pairs with bitwise
    equal ``var1[i] == var2[j]`` (equal rows have equal sums of squares); each is confirmed by
    comparing the rows.
    """
    rows, cols = torch.nonzero(var1[:, None] == var2[None, :], as_tuple=True)
    if rows.numel() == 0:
        return
    same = (x1[rows] == x2[cols]).all(dim=1).nonzero()[:, 0]
    rows, cols = rows[same], cols[same]
    cov[rows, cols] = var1[rows]


def dense_update(state: KernelState, weight_var: float, bias_var: float, *,
                 standard: bool, has_bias: bool) -> None:
    """Apply a fully-connected layer to ``state`` in place.

    NTK parameterisation:      K ← σ_w² K + σ_b²,   Θ ← K_new + σ_w² Θ
    Standard parameterisation: Θ ← n_in K + σ_w² Θ + [bias],   K ← σ_w² K + σ_b²
    (Jacot et al. 2018; Sohl-Dickstein et al. 2020 for the standard one.)
    """
    pairs = [(state.cov, state.ntk)]
    if not state.diagonal:
        pairs.append((state.var1, state.ntk1))
    for cov, ntk in pairs:  # the same arithmetic on the matrix and on the row variances
        if standard:
            ntk.mul_(weight_var).add_(cov, alpha=float(state.width)).add_(1.0 if has_bias else 0.0)
        cov.mul_(weight_var).add_(bias_var)
        if not standard:
            ntk.mul_(weight_var).add_(cov)
    if state.diagonal:
        state.var1 = state.var2 = state.cov
        state.ntk1 = state.ntk
    else:
        state.var2 = state.var2 * weight_var + bias_var
    state.sync_diagonal()


