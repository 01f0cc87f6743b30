"""Activation maps: how an elementwise nonlinearity φ transforms the kernel state.

With ``Λ = [[K11, K], [K, K22]]`` and ``(u, v) ~ N(0, Λ)``::

    K ← T(Λ) = E[φ(u) φ(v)],   Θ ← Θ · T'(Λ) = Θ · E[φ'(u) φ'(v)],   K11 ← E[φ(u)²]

Closed forms are used for the ReLU family (arc-cosine kernels, Cho & Saul 2009) and
erf (Williams 1997); any other elementwise function uses 2-D Gauss–Hermite quadrature.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from scipy.special import roots_hermite

from ntkprior.kernels.state import KernelState

Tensor = torch.Tensor


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
        u = var.reshape(-1).clamp(min=0.0).mul(2.0).sqrt()[:, None] * nodes  # any shape of variances
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


class GeluMap(ActivationMap):
    """φ(x) = x·Φ(x) (exact GELU), in closed form (Tsuchida, Pearce et al. 2020; MATH.md section 6).

    With P = K11·K22, P₁ = (K11 + 1)(K22 + 1), Δ = sqrt(P₁ − K²) (computed as
    sqrt(K11 + K22 + 1 + max(K11·K22 − K², 0)), free of cancellation) and α = atan2(K, Δ)::

        T  = K/4 + [ (K² + P·Δ²) / (P₁·Δ) + K·α ] / (2π)
        T' = 1/4 + α/(2π) + K / (2πΔ) · (1/Δ² + (1 − P)/P₁ + 1)

    and E[φ(u)²] is T at K = K11 = K22. Exact at any variance, unlike quadrature.
    """

    def pair(self, cov, var1, var2):
        gap = (var1 * var2 - cov * cov).clamp_(min=0.0)
        return self._closed_form(cov, var1, var2, gap)

    def diag(self, var):
        return self._closed_form(var, var, var, torch.zeros_like(var))

    @staticmethod
    def _closed_form(k, k11, k22, gap):
        p = k11 * k22
        p1 = (k11 + 1.0) * (k22 + 1.0)
        delta = (gap + k11 + k22 + 1.0).sqrt_()
        alpha = torch.atan2(k, delta)
        t = (k * k + p * delta * delta) / (p1 * delta) + k * alpha
        t = t.div_(2.0 * math.pi).add_(k, alpha=0.25)
        tdot = (1.0 / (delta * delta) + (1.0 - p) / p1 + 1.0) * k / (2.0 * math.pi * delta)
        tdot.add_(alpha, alpha=1.0 / (2.0 * math.pi)).add_(0.25)
        return t, tdot
