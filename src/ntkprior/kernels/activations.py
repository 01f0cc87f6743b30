"""Activation maps: how an elementwise nonlinearity φ transforms the kernel state.

With ``Λ = [[K11, K], [K, K22]]`` and ``(u, v) ~ N(0, Λ)``::

    K ← T(Λ) = E[φ(u) φ(v)],   Θ ← Θ · T'(Λ) = Θ · E[φ'(u) φ'(v)],   K11 ← E[φ(u)²]

Closed forms are used for the ReLU family (arc-cosine kernels, Cho & Saul 2009) and
erf (Williams 1997); any other elementwise function uses a 2-D Gauss–Legendre rule in the
whitened frame, split at the kinks (``QuadratureMap``).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch

from ntkprior._threads import op_threads
from ntkprior.kernels import fused
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

    def fused_step(self) -> tuple | None:
        """This map as a step of a compiled MLP chain (:mod:`ntkprior.kernels.fused`), or None."""
        return None

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

    def __init__(self, a: float, b: float, slope_at_zero: float | None = None):
        self.even = (a * a + b * b) / 2.0
        self.odd = (a - b) ** 2 / (2.0 * math.pi)
        self.mean_slope = (a + b) / 2.0                 # E[φ'(v)], v ~ N(0, σ² > 0)
        self.slope_at_zero = a if slope_at_zero is None else slope_at_zero   # φ'(0) as torch's autograd has it

    def fused_step(self):
        return ("arc_cosine", self.even, self.odd)

    def pair(self, cov, var1, var2):
        t, tdot = self._arc_cosine(cov, var1, var2)
        return t, self._at_zero_variance(tdot, var1, var2)

    def _at_zero_variance(self, tdot, var1, var2):
        """Where a pre-activation variance is exactly 0 the pre-activation is exactly 0 in every network
        (e.g. a zero input without biases), so φ' there is φ'(0), torch's convention, not the Gaussian
        average: ``T' = φ'(0)·E[φ'(v)]`` with one side at 0, ``φ'(0)²`` with both."""
        zero1, zero2 = var1 == 0, var2 == 0
        if not (bool(zero1.any()) or bool(zero2.any())):
            return tdot
        one = torch.full_like(tdot, self.slope_at_zero * self.mean_slope)
        both = torch.full_like(tdot, self.slope_at_zero ** 2)
        return torch.where(zero1 & zero2, both, torch.where(zero1 | zero2, one, tdot))

    def _arc_cosine(self, cov, var1, var2):
        if self.odd == 0.0:  # linear: T = a²K, T' = a²
            return cov.mul_(self.even), torch.full_like(cov, self.even)
        scales = _power_of_two_scales(var1, var2)
        compiled = None if scales is not None else fused.ARC_COSINE(cov, var1, var2, self.even, self.odd)
        if compiled is not None:
            return compiled
        if scales is None:
            s = _sqrt_det(var1, var2, cov)
            tdot = _atan2(s, cov)
        else:                   # |K| near overflow or underflow: the same arithmetic, scaled exactly
            r1, r2 = scales
            k = cov * (r1 * r2)
            s = _sqrt_det(var1 * (r1 * r1), var2 * (r2 * r2), k)
            tdot = torch.atan2(s, k)
            s.div_(r1 * r2)
        tdot.mul_(-self.odd).add_(self.even)
        t = s.mul_(self.odd).addcmul_(tdot, cov)
        return t, tdot

    def diag(self, var):
        return var * self.even, self._at_zero_variance(torch.full_like(var, self.even), var, var)


class ErfMap(ActivationMap):
    """φ(x) = A·erf(B·x) + C (Williams 1997). With Λ scaled by B² and P = (1+2K11)(1+2K22)::

        T  = A² (2/π) arcsin(2K / sqrt(P)) + C²
        T' = A² B² (4/π) / sqrt(P − 4K²),   P − 4K² = 1 + 2K11 + 2K22 + 4(K11·K22 − K²)
        E[φ(u)²] = A² (2/π) arcsin(2K11 / (1 + 2K11)) + C²

    ``P − 4K²`` is evaluated in the second form: the first loses every digit near the diagonal
    at large variances (both terms ~4K², their difference ~4K). Products that would overflow
    are formed from variances scaled by exact powers of two.
    """

    def __init__(self, a: float, b: float, c: float):
        self.a2, self.b2, self.c2 = a * a, b * b, c * c

    def fused_step(self):
        return ("erf", self.a2, self.b2, self.c2)

    def pair(self, cov, var1, var2):
        a1, a2 = self.b2 * var1, self.b2 * var2
        scales = _power_of_two_scales(a1, a2)
        compiled = None if scales is not None else fused.ERF(cov, a1, a2, self.a2 * self.b2 * 4.0 / math.pi,
                                                        self.a2 * 2.0 / math.pi, self.c2, self.b2)
        if compiled is not None:
            return compiled
        k = cov.mul_(self.b2)
        if scales is None:
            r1 = r2 = 1.0
        else:                   # K11·K22 would overflow: the same arithmetic, scaled exactly
            r1, r2 = scales
            a1, a2, k = a1 * (r1 * r1), a2 * (r2 * r2), k.mul_(r1 * r2)
        q = _det(a1, a2, k).mul_(4.0).add_(2.0 * (a1 * (r2 * r2) + a2 * (r1 * r1)) + (r1 * r2) ** 2)
        tdot = q.clamp_(min=torch.finfo(cov.dtype).tiny).rsqrt_()
        if scales is not None:
            tdot.mul_(r1 * r2)
        tdot.mul_(self.a2 * self.b2 * 4.0 / math.pi)
        root_p = ((r1 * r1 + 2.0 * a1) * (r2 * r2 + 2.0 * a2)).sqrt_()
        t = _asin_(k.mul_(2.0).div_(root_p).clamp_(-1.0, 1.0))
        t.mul_(self.a2 * 2.0 / math.pi).add_(self.c2)
        return t, tdot

    def diag(self, var):
        """``pair(var, var, var)``: the same arithmetic, so that a copy of x gives K(x, x) exactly."""
        return self.pair(var.clone(), var, var)


def _numpy_can(*xs: Tensor) -> bool:
    """Whether numpy can work on these tensors in place of torch: CPU, float32/64, contiguous, no grad.
    numpy's SIMD inverse trigonometry (within 1-4 ulp) beats torch's float64 on this machine: asin
    4.3x (0.96 vs 4.1 ns per element), atan2 1.2x (1.15 vs 1.33 ms for a 131 x 4000 block), one thread."""
    return all(x.device.type == "cpu" and x.dtype in (torch.float64, torch.float32) and x.is_contiguous()
               and not x.requires_grad for x in xs)


def _asin_(x: Tensor) -> Tensor:
    """``arcsin(x)`` in place (numpy's on the CPU, see :func:`_numpy_can`)."""
    if not _numpy_can(x):
        return x.asin_()
    array = x.numpy()
    np.arcsin(array, out=array)
    return x


def _atan2(y: Tensor, x: Tensor) -> Tensor:
    """``atan2(y, x)`` of two tensors of one shape (numpy's on the CPU, see :func:`_numpy_can`)."""
    if y.shape != x.shape or y.dtype != x.dtype or not _numpy_can(y, x):
        return torch.atan2(y, x)
    return torch.from_numpy(np.arctan2(y.numpy(), x.numpy()))


def _det(var1: Tensor, var2: Tensor, cov: Tensor) -> Tensor:
    """``max(K11·K22 − K², 0)`` by a plain subtraction of two rounded products (no fused
    multiply-add), so that it is exactly 0 wherever ``K == K11 == K22``, as on a copy of x."""
    s = var1 * var2
    return s.sub_(cov * cov).clamp_(min=0.0)


def _sqrt_det(var1: Tensor, var2: Tensor, cov: Tensor) -> Tensor:
    """``sqrt(max(K11·K22 − K², 0))``, see :func:`_det`."""
    return _det(var1, var2, cov).sqrt_()


def _power_of_two_scales(var1: Tensor, var2: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(2^(−e1/2), 2^(−e2/2))`` with even exponents that bring each variance near 1, or None
    when the products ``var1·var2`` and ``K²`` neither overflow nor underflow (the usual case).

    Multiplying by powers of two is exact, so the scaled arithmetic rounds exactly as the
    unscaled one would in a wider exponent range: inputs up to ~1e300 keep every digit.
    """
    if all(fused.SAFE_LOW <= float(v.abs().min()) and float(v.abs().max()) <= fused.SAFE_HIGH
           or not bool((v != 0).any()) for v in (var1, var2)):
        return None
    return _half_exponent_scale(var1), _half_exponent_scale(var2)


def _half_exponent_scale(var: Tensor) -> Tensor:
    """``2^(−e/2)`` with ``var = m·2^e``, ``e`` rounded down to even (1 where var is 0)."""
    _, e = torch.frexp(var)
    half = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ones_like(var), -half)


def derivative(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The elementwise derivative φ' of an elementwise ``fn``, by autograd."""

    def dfn(x: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(xg).sum(), xg)
        return g

    return dfn


class QuadratureMap(ActivationMap):
    """Any elementwise φ by a 2-D Gauss–Legendre rule in the whitened frame, split at the kinks.

    With ``σ1 = sqrt(K11) >= σ2 = sqrt(K22)`` (the inputs are swapped into this order, so
    kernel matrices come out exactly symmetric), ``ρ = K / sqrt(K11 K22)``, ``s = sqrt((1−ρ)(1+ρ))``
    and ``u = σ1 z1``, ``v = σ2 (ρ z1 + s z2)`` with ``z1, z2 ~ N(0, 1)`` independent::

        E[f(u) g(v)] = ∫ f(σ1 z1) [∫ g(σ2 (ρ z1 + s z2)) N(z2) dz2] N(z1) dz1

    with f = g = φ for T and f = g = φ' for T'. A smooth activation of a large-variance input
    behaves like a kinked one: f(σ1 z1) changes on a scale 1/σ1 around z1 = 0, and g on a
    scale 1/(σ2 s) around z2 = −ρ z1 / s. Each axis is cut into panels on [−8.5, 8.5] (the
    N(0, 1) mass beyond is 2e-17): a fixed grid of width ≤ 1.55 that resolves the Gaussian
    weight, plus panels graded geometrically towards the kink (widths w, 2w, 4w, ... up to 1,
    with w = min(1, 1/scale)), so the nodes follow the variance and the panel count grows
    only like log2(σ). Each panel carries ``m = ceil(degree / 6)`` Gauss–Legendre nodes
    (degree 60: m = 10; about 140 nodes per axis at unit variance). Measured against mpmath
    (``tests/test_quadrature.py``): relative error ≤ 1e-10 for tanh, erf, GELU, SiLU, softplus,
    sin at pre-activation variances 1e-6 to 1e8. A warning reports the rule's own error where
    it exceeds ``WARN_ERROR`` (from a rule of 1.5x the nodes per panel on sampled entries of
    both sides: the largest and smallest variances of the rows and of the columns).
    """

    #: elements evaluated at once: (chunk, n1, n2) temporaries of 512 kB, cache-sized (measured
    #: 1.3 ms per entry at unit variance, one thread, against 5.8 ms with 64 MB temporaries)
    CHUNK_VALUES = 2**16
    #: relative disagreement between the rule and a finer one that triggers a warning
    WARN_ERROR = 1e-8
    #: half-width of the integration range in the whitened frame
    RANGE = 8.5
    #: edges of the fixed panels that resolve the N(0, 1) weight
    GRID_EDGES = 12

    def __init__(self, fn: Callable[[Tensor], Tensor], dfn: Callable[[Tensor], Tensor] | None,
                 degree: int):
        self.fn = fn
        self.dfn = dfn if dfn is not None else derivative(fn)
        self.degree = degree
        self.per_panel = max(2, math.ceil(degree / 6))

    def apply(self, state: KernelState) -> None:
        if state.diagonal:
            self.check_accuracy(state.var1, state.var1, state.var1)
        else:
            self.check_accuracy(state.cov, state.var1[:, None], state.var2[None, :])
        super().apply(state)

    def diag(self, var):
        return self.pair(var, var, var)

    def pair(self, cov, var1, var2):
        return self._pair(cov, var1, var2, self.per_panel)

    # ----------------------------------------------------------------- accuracy
    def check_accuracy(self, cov: Tensor, var1: Tensor, var2: Tensor) -> None:
        """Warn when the rule disagrees with a finer one (1.5x the nodes per panel) on sampled
        entries of broadcastable ``cov, var1, var2`` (both sides' extreme variances included)."""
        k, k11, k22 = _accuracy_sample(cov, var1, var2)
        coarse = self._pair(k, k11, k22, self.per_panel)
        fine = self._pair(k, k11, k22, self.per_panel + max(2, self.per_panel // 2))
        d11 = self._pair(k11, k11, k11, self.per_panel + max(2, self.per_panel // 2))
        d22 = self._pair(k22, k22, k22, self.per_panel + max(2, self.per_panel // 2))
        err = 0.0
        for c, f, a, b in zip(coarse, fine, d11, d22):          # T and T', relative to sqrt(T11 T22)
            scale = (a.abs() * b.abs()).sqrt().clamp(min=1e-300)
            err = max(err, float(((c - f).abs() / scale).max()))
        if err > self.WARN_ERROR:
            worst = max(float(var1.max()), float(var2.max()))
            warnings.warn(f"quadrature with degree={self.degree} is accurate only to a relative "
                          f"{err:.1e} at pre-activation variances up to {worst:.3g} (both inputs); "
                          f"pass a larger degree (e.g. degree={4 * self.degree}) or use a closed-form "
                          "activation", RuntimeWarning, stacklevel=4)

    # ----------------------------------------------------------------- the rule
    def _pair(self, cov, var1, var2, per_panel):
        shape = torch.broadcast_shapes(cov.shape, var1.shape, var2.shape)
        k = cov.expand(shape).reshape(-1)
        k11 = var1.expand(shape).reshape(-1)
        k22 = var2.expand(shape).reshape(-1)
        k11, k22 = torch.maximum(k11, k22), torch.minimum(k11, k22)  # canonical order: symmetric
        t = torch.empty_like(k)
        tdot = torch.empty_like(k)
        nodes, weights = (torch.from_numpy(a).to(k) for a in np.polynomial.legendre.leggauss(per_panel))
        step = max(1, self.CHUNK_VALUES // self._nodes_per_entry(k11, k22, k, per_panel))
        with op_threads(self.CHUNK_VALUES):                 # cache-sized chunks: one thread
            for i in range(0, k.numel(), step):
                sl = slice(i, i + step)
                t[sl], tdot[sl] = self._pair_flat(k[sl], k11[sl], k22[sl], nodes, weights)
        return t.reshape(shape), tdot.reshape(shape)

    def _nodes_per_entry(self, k11, k22, k, per_panel) -> int:
        levels = _levels(_kink_width(k11.clamp(min=0).sqrt()))
        return ((self.GRID_EDGES + 2 * levels) * per_panel) ** 2 or 1

    def _pair_flat(self, k, k11, k22, nodes, weights):
        s1, s2 = k11.clamp(min=0).sqrt(), k22.clamp(min=0).sqrt()
        norm = (k11 * k22).sqrt()
        rho = torch.where(norm > 0, k / norm, torch.zeros_like(k)).clamp_(-1.0, 1.0)
        s = ((1.0 - rho) * (1.0 + rho)).sqrt()
        zero = torch.zeros_like(k)
        z1, w1 = self._axis(zero, _kink_width(s1), nodes, weights)            # (B, n1)
        safe = torch.where(s > 0, s, torch.ones_like(s))
        centre = torch.where(s[:, None] > 0, -rho[:, None] * z1 / safe[:, None], torch.zeros_like(z1))
        centre = centre.clamp(-2 * self.RANGE, 2 * self.RANGE)
        width2 = _kink_width(s2 * s)[:, None].expand_as(centre)
        z2, w2 = self._axis(centre, width2, nodes, weights)                   # (B, n1, n2)
        u = s1[:, None] * z1
        v = s2[:, None, None] * (rho[:, None, None] * z1[..., None] + s[:, None, None] * z2)

        def expect(f):
            inner = (f(v) * w2).sum(-1)                                       # (B, n1)
            return (f(u) * w1 * inner).sum(-1)

        return expect(self.fn), expect(self.dfn)

    def _axis(self, centre, width, nodes, weights):
        """Nodes and weights of N(0, 1) on [−RANGE, RANGE]: the fixed grid plus panels graded
        geometrically from ``centre`` (widths ``width·2^j`` up to 1) on each side."""
        levels = _levels(width)
        steps = width[..., None] * 2.0 ** torch.arange(levels, dtype=width.dtype, device=width.device)
        grid = torch.linspace(-self.RANGE, self.RANGE, self.GRID_EDGES, dtype=width.dtype,
                              device=width.device).expand(*centre.shape, -1)
        c = centre[..., None]
        edges = torch.cat([c - steps, c, c + steps, grid], -1).clamp_(-self.RANGE, self.RANGE)
        edges = edges.sort(-1).values
        half = (edges[..., 1:] - edges[..., :-1]) / 2
        mid = (edges[..., 1:] + edges[..., :-1]) / 2
        z = mid[..., None] + half[..., None] * nodes                          # (..., panels, m)
        w = half[..., None] * weights * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return z.flatten(-2), w.flatten(-2)


def _kink_width(scale: Tensor) -> Tensor:
    """Width ``min(1, 1/scale)`` of the region where φ(scale·z) bends, in the whitened frame."""
    return scale.clamp(min=1.0).reciprocal()


def _levels(width: Tensor) -> int:
    """Graded panels per side: widths ``w, 2w, ...`` until 1, for the narrowest ``w`` given."""
    narrowest = float(width.min()) if width.numel() else 1.0
    return max(1, math.ceil(math.log2(1.0 / max(narrowest, 1e-300))) + 1)


#: entries sampled for the accuracy self-check, besides those at the extreme variances
_SAMPLE = 32


def _accuracy_sample(cov: Tensor, var1: Tensor, var2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(K, K11, K22) at sampled entries of broadcastable ``cov, var1, var2``: every pairing of the
    largest and smallest variance of each side, and ``_SAMPLE`` entries spread over the tensor."""
    shape = torch.broadcast_shapes(cov.shape, var1.shape, var2.shape)
    views = [t.expand(shape) for t in (cov, var1, var2)]
    picks = [_extreme_coords(var1, shape, which) for which in ("max", "min")]
    other = [_extreme_coords(var2, shape, which) for which in ("max", "min")]
    coords = [tuple(a if var1.shape[d - len(shape) + var1.ndim] > 1 else b
                    for d, (a, b) in enumerate(zip(p, q)))
              if var1.ndim else q for p in picks for q in other]
    numel = math.prod(shape)
    spread = torch.linspace(0, max(numel - 1, 0), min(_SAMPLE, numel)).long()
    spread_coords = torch.unravel_index(spread, shape) if shape else ()
    index = [torch.cat([torch.tensor([c[d] for c in coords], dtype=torch.long), spread_coords[d]])
             for d in range(len(shape))]
    return tuple(v[tuple(index)] if shape else v.reshape(1) for v in views)


def _extreme_coords(var: Tensor, shape, which: str) -> tuple[int, ...]:
    """Coordinates in ``shape`` of ``var``'s largest (or smallest) entry; 0 along broadcast axes."""
    flat = int(var.reshape(-1).argmax() if which == "max" else var.reshape(-1).argmin())
    own = [int(i) for i in torch.unravel_index(torch.tensor(flat), var.shape)] if var.ndim else []
    own = [0] * (len(shape) - var.ndim) + own
    return tuple(o if (d >= len(shape) - var.ndim and var.shape[d - len(shape) + var.ndim] > 1) else 0
                 for d, o in enumerate(own))


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
        delta = (gap + (k11 + k22) + 1.0).sqrt_()      # k11 + k22 first: exactly symmetric in the two
        alpha = torch.atan2(k, delta)
        t = (k * k + p * delta * delta) / (p1 * delta) + k * alpha
        t = t.div_(2.0 * math.pi).add_(k, alpha=0.25)
        tdot = (1.0 / (delta * delta) + (1.0 - p) / p1 + 1.0) * k / (2.0 * math.pi * delta)
        tdot.add_(alpha, alpha=1.0 / (2.0 * math.pi)).add_(0.25)
        return t, tdot
