"""Infinite-width kernel maps: the kernel state and how activations transform it.

A fully-connected network in the infinite-width limit is described, layer by layer, by
the state ``(K, K11, K22, Θ)``: the NNGP cross covariance of the pre-activations at two
input sets, the variances at each set, and the cross NTK (Lee et al. 2018; Jacot et al.
2018; the conventions of neural-tangents, see MATH.md section 2). This module knows no
torch modules and no architectures: only the arithmetic on that state.

Activations map, with ``Λ = [[K11, K], [K, K22]]`` and ``(u, v) ~ N(0, Λ)``::

    K ← T(Λ) = E[φ(u) φ(v)],   Θ ← Θ · T'(Λ) = Θ · E[φ'(u) φ'(v)],   K11 ← E[φ(u)²]

Closed forms are used for the ReLU family (arc-cosine kernels, Cho & Saul 2009) and
erf (Williams 1997); any other elementwise function uses 2-D Gauss–Hermite quadrature.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from scipy.special import roots_hermite

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
    """

    cov: Tensor
    ntk: Tensor
    var1: Tensor
    var2: Tensor
    ntk1: Tensor
    width: int
    diagonal: bool = False
    diag_offset: int | None = None

    def sync_diagonal(self) -> None:
        """Overwrite the diagonal entries of a symmetric block with the exact variances."""
        if self.diag_offset is None or self.diagonal:
            return
        rows = self.cov.shape[0]
        idx = torch.arange(rows, device=self.cov.device)
        self.cov[idx, idx + self.diag_offset] = self.var1
        self.ntk[idx, idx + self.diag_offset] = self.ntk1


def input_state(x1: Tensor, x2: Tensor, *, diagonal: bool = False,
                diag_offset: int | None = None) -> KernelState:
    """The state at the input: ``K = x·x' / d``, ``Θ = 0`` (the input is normalised by its dimension)."""
    d = x1.shape[1]
    var1 = (x1 * x1).sum(1) / d
    if diagonal:
        ntk = torch.zeros_like(var1)
        return KernelState(var1, ntk, var1, var1, ntk, width=d, diagonal=True)
    var2 = (x2 * x2).sum(1) / d
    cov = (x1 @ x2.T).div_(d)
    state = KernelState(cov, torch.zeros_like(cov), var1, var2, torch.zeros_like(var1),
                        width=d, diag_offset=diag_offset)
    state.sync_diagonal()
    return state


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


class ActivationMap:
    """How an elementwise nonlinearity φ transforms the kernel state.

    Subclasses implement ``pair(cov, var1, var2) -> (T, T')`` on matrices (with var1 as a
    column, var2 as a row) and ``diag(var) -> (E[φ(u)²], E[φ'(u)²])`` on vectors.
    ``pair`` may overwrite ``cov`` (the caller passes a matrix it no longer needs).
    """

    def pair(self, cov: Tensor, var1: Tensor, var2: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def diag(self, var: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def apply(self, state: KernelState) -> None:
        """Apply the activation to ``state`` in place: K ← T, Θ ← Θ·T', variances ← E[φ²]."""
        if state.diagonal:
            t, tdot = self.diag(state.var1)
            state.cov = state.var1 = state.var2 = t
            state.ntk.mul_(tdot)
            return
        t1, tdot1 = self.diag(state.var1)
        t2, _ = self.diag(state.var2)
        t, tdot = self.pair(state.cov, state.var1[:, None], state.var2[None, :])
        state.cov = t
        state.ntk.mul_(tdot)
        state.var1, state.var2 = t1, t2
        state.ntk1 = state.ntk1 * tdot1
        state.sync_diagonal()


class PiecewiseLinearMap(ActivationMap):
    """φ(x) = a·min(x, 0) + b·max(x, 0): ReLU (a=0, b=1), leaky ReLU, |x| (a=−1, b=1).

    With s = sqrt(max(K11·K22 − K², 0)) and θ = atan2(s, K) (the angle, computed
    stably, exactly 0 on the diagonal) — the arc-cosine kernels of Cho & Saul (2009)::

        T' = (a² + b²)/2 − (a − b)² θ / (2π)
        T  = (a − b)²/(2π) · s + T' · K
        E[φ(u)²] = (a² + b²)/2 · K11
    """

    def __init__(self, a: float, b: float):
        self.even = (a * a + b * b) / 2.0
        self.odd = (a - b) ** 2 / (2.0 * math.pi)

    def pair(self, cov, var1, var2):
        if self.odd == 0.0:  # linear: T = a²K, T' = a²
            return cov.mul_(self.even), torch.full_like(cov, self.even)
        s = var1 * var2
        s.addcmul_(cov, cov, value=-1.0).clamp_(min=0.0).sqrt_()
        tdot = torch.atan2(s, cov)
        tdot.mul_(-self.odd).add_(self.even)
        t = s.mul_(self.odd).addcmul_(tdot, cov)
        return t, tdot

    def diag(self, var):
        return var * self.even, torch.full_like(var, self.even)


class ErfMap(ActivationMap):
    """φ(x) = A·erf(B·x) + C (Williams 1997). With Λ scaled by B² and P = (1+2K11)(1+2K22)::

        T  = A² (2/π) arcsin(2K / sqrt(P)) + C²
        T' = A² B² (4/π) / sqrt(P − 4K²)
        E[φ(u)²] = A² (2/π) arcsin(2K11 / (1 + 2K11)) + C²
    """

    def __init__(self, a: float, b: float, c: float):
        self.a2, self.b2, self.c2 = a * a, b * b, c * c

    def pair(self, cov, var1, var2):
        p = (1.0 + 2.0 * self.b2 * var1) * (1.0 + 2.0 * self.b2 * var2)
        cov = cov.mul_(self.b2)
        tdot = (p - 4.0 * cov * cov).clamp_(min=torch.finfo(cov.dtype).tiny).rsqrt_()
        tdot.mul_(self.a2 * self.b2 * 4.0 / math.pi)
        t = torch.asin((2.0 * cov / p.sqrt_()).clamp_(-1.0, 1.0))
        t.mul_(self.a2 * 2.0 / math.pi).add_(self.c2)
        return t, tdot

    def diag(self, var):
        v = self.b2 * var
        t = torch.asin(2.0 * v / (1.0 + 2.0 * v)) * (self.a2 * 2.0 / math.pi) + self.c2
        tdot = (1.0 + 4.0 * v).rsqrt() * (self.a2 * self.b2 * 4.0 / math.pi)
        return t, tdot


def derivative(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The elementwise derivative φ' of an elementwise ``fn``, by autograd."""

    def dfn(x: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(xg).sum(), xg)
        return g

    return dfn


class QuadratureMap(ActivationMap):
    """Any elementwise φ by 2-D Gauss–Hermite quadrature.

    With nodes x_i and weights w_i for the weight e^{−x²}, and the symmetric square root
    [[a, b], [b, c]] = Λ^{1/2} (closed form for 2×2: (Λ + sI)/t, s = sqrt(det Λ),
    t = sqrt(tr Λ + 2s))::

        E[f(u) g(v)] ≈ (1/π) Σ_ij w_i w_j f(√2 (a x_i + b x_j)) g(√2 (b x_i + c x_j))

    with f = g = φ for T and f = g = φ' for T'. Using the symmetric root (rather than the
    Cholesky factor of MATH.md) makes the rule symmetric in the two inputs, so kernel
    matrices come out exactly symmetric. Exact for polynomials of degree < 2·deg; accurate
    for smooth φ at moderate variance, poor for non-smooth φ or large variances (a
    warning says so with the estimated error).
    """

    #: elements evaluated at once: bounds the (chunk, deg, deg) temporaries to ~64 MB
    CHUNK_VALUES = 2**23
    #: relative disagreement between the rule and one of twice the degree that triggers a warning
    WARN_ERROR = 1e-3

    def __init__(self, fn: Callable[[Tensor], Tensor], dfn: Callable[[Tensor], Tensor] | None,
                 degree: int):
        self.fn = fn
        self.dfn = dfn if dfn is not None else derivative(fn)
        self.degree = degree
        nodes, weights = roots_hermite(degree)
        self._nodes = torch.from_numpy(nodes)
        self._weights = torch.from_numpy(weights)

    def apply(self, state: KernelState) -> None:
        self._check_accuracy(state.var1)
        super().apply(state)

    def _check_accuracy(self, var: Tensor) -> None:
        """Warn when the rule is inaccurate at these variances: 1-D E[φ'²] against a rule of 2·degree."""
        coarse = self._mean_square(self.dfn, var, self.degree)
        fine = self._mean_square(self.dfn, var, 2 * self.degree)
        err = float(((coarse - fine).abs() / fine.abs().clamp(min=1e-300)).max())
        if err > self.WARN_ERROR:
            warnings.warn(f"Gauss-Hermite quadrature with degree={self.degree} is accurate only to a "
                          f"relative {err:.1e} at pre-activation variances up to {float(var.max()):.3g}; "
                          f"pass a larger degree (e.g. degree={4 * self.degree}) or use a closed-form "
                          "activation", RuntimeWarning, stacklevel=4)

    @staticmethod
    def _mean_square(f, var: Tensor, degree: int) -> Tensor:
        nodes, weights = (torch.from_numpy(a).to(var) for a in roots_hermite(degree))
        u = var.clamp(min=0.0).mul(2.0).sqrt()[:, None] * nodes
        return (f(u) ** 2 * weights).sum(-1) / math.sqrt(math.pi)

    def diag(self, var):
        return self.pair(var, var, var)

    def pair(self, cov, var1, var2):
        shape = torch.broadcast_shapes(cov.shape, var1.shape, var2.shape)
        k = cov.expand(shape).reshape(-1)
        k11 = var1.expand(shape).reshape(-1)
        k22 = var2.expand(shape).reshape(-1)
        t = torch.empty_like(k)
        tdot = torch.empty_like(k)
        step = max(1, self.CHUNK_VALUES // (self.degree * self.degree))
        for i in range(0, k.numel(), step):
            sl = slice(i, i + step)
            t[sl], tdot[sl] = self._pair_flat(k[sl], k11[sl], k22[sl])
        return t.reshape(shape), tdot.reshape(shape)

    def _pair_flat(self, k, k11, k22):
        x = self._nodes.to(k.device, k.dtype)
        w = self._weights.to(k.device, k.dtype)
        s = (k11 * k22 - k * k).clamp(min=0.0).sqrt()
        t = (k11 + k22 + 2.0 * s).clamp(min=torch.finfo(k.dtype).tiny).sqrt()
        a, b, c = ((k11 + s) / t, k / t, (k22 + s) / t)
        xi, xj = x[:, None], x[None, :]
        u = math.sqrt(2.0) * (a[:, None, None] * xi + b[:, None, None] * xj)   # (chunk, deg, deg)
        v = math.sqrt(2.0) * (b[:, None, None] * xi + c[:, None, None] * xj)
        wij = (w[:, None] * w[None, :]) / math.pi

        def expect(f):
            return (f(u) * f(v) * wij).sum((-1, -2))

        return expect(self.fn), expect(self.dfn)
