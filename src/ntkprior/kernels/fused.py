"""Fused kernel maps: the per-tile arithmetic compiled by ``torch.compile`` into one loop (opt-in).

Eager torch makes one pass over a tile per operation: about 15 passes per Dense + ReLU layer,
each ≥ 0.23 ns per entry even from cache, where one fused loop spends ~1.5 ns per entry and
layer in all (benchmarks/fused_limit.c, issue #20). Inductor (C++/OpenMP on a CPU, Triton on a
GPU) fuses them. Two granularities:

- **The whole chain** (:func:`chain_tile`): a plain MLP on vectors — Dense layers and ReLU-family
  or erf activations — as one compiled function from the input covariance of a tile to its NNGP
  and NTK: every layer applied while an entry sits in registers. The per-layer variances of the
  rows and columns come from the eager diagonal pass (O(n) work), so the arithmetic is the
  eager one.
- **One map** (``ARC_COSINE``, ``ERF``): the activation map alone, for every other architecture
  (convolutions, pooling, branches), called from :mod:`ntkprior.kernels.activations`.

Results equal the eager path to round-off (inductor compiles with -ffp-contract=off: no fused
multiply-adds, so K11·K22 − K² is exactly 0 on a copy of x, as in the eager code, and the ReLU
kernel of a copy stays exact). Compilation happens once per process and architecture (dynamic
shapes), costs 3.5-11 s with inductor's on-disk cache warm and ~60 s without, and is why fusion
is off by default. Where compiling fails, the eager path runs, with one warning.
"""

from __future__ import annotations

import math
import os
import warnings

import torch

Tensor = torch.Tensor

#: tiles of at least this many entries use the fused code when fusion is on (smaller ones: eager)
FUSED_MIN_ELEMENTS = 1 << 16
#: products of two variances stay within [SAFE_LOW, SAFE_HIGH] without the power-of-two scaling
SAFE_HIGH, SAFE_LOW = 1e150, 1e-150
_fused_setting: bool | None = None           # set_fused(); None: the NTKPRIOR_FUSED variable decides
_fallback_warned = False


def set_fused(enabled: bool | None) -> None:
    """Turn the fused kernel maps on (True) or off (False) for this process; None: back to the
    ``NTKPRIOR_FUSED`` environment variable ("1": on; default off). See the module docstring."""
    global _fused_setting
    _fused_setting = enabled


def fused_enabled() -> bool:
    if _fused_setting is not None:
        return _fused_setting
    return os.environ.get("NTKPRIOR_FUSED", "0").strip() == "1"


class FusedFunction:
    """A per-tile function compiled on first use (``dynamic=True``: one compilation serves every
    tile shape); ``__call__`` returns None when fusion is off, the tile is small, or compiling failed
    (the caller then runs its eager code)."""

    def __init__(self, fn):
        self.fn, self.compiled, self.failed = fn, None, False

    def __call__(self, cov: Tensor, *args):
        if self.failed or not fused_enabled() or cov.numel() < FUSED_MIN_ELEMENTS:
            return None
        constants = [torch.tensor(a, dtype=cov.dtype, device=cov.device) if isinstance(a, float) else a
                     for a in args]
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.fn, dynamic=True)
            return self.compiled(cov, *constants)
        except Exception as exc:            # noqa: BLE001 - any compiler failure: fall back to eager
            self.failed = True
            _warn_fallback(exc)
            return None


def _warn_fallback(exc: Exception) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"fused kernel maps: torch.compile failed ({type(exc).__name__}: {first[:200]}); "
                      "using the eager maps (same results, slower). Call "
                      "ntkprior.kernels.set_fused(False) or unset NTKPRIOR_FUSED to silence "
                      "this", RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------- the maps, as single expressions
def arc_cosine_tile(cov, var1, var2, even, odd):
    """PiecewiseLinearMap.pair (unscaled branch) as one expression (the same arithmetic)."""
    s = (var1 * var2 - cov * cov).clamp(min=0.0).sqrt()
    tdot = torch.atan2(s, cov) * (-odd) + even
    return s * odd + tdot * cov, tdot


def erf_tile(cov, a1, a2, tdot_scale, t_scale, c2, b2):
    """ErfMap.pair (unscaled branch) as one expression (the same arithmetic); a1, a2 = b²·K11, b²·K22."""
    k = cov * b2
    q = (a1 * a2 - k * k).clamp(min=0.0) * 4.0 + (2.0 * (a1 + a2) + 1.0)
    tdot = q.clamp(min=torch.finfo(cov.dtype).tiny).rsqrt() * tdot_scale
    t = torch.asin((k * 2.0 / ((1.0 + 2.0 * a1) * (1.0 + 2.0 * a2)).sqrt()).clamp(-1.0, 1.0))
    return t * t_scale + c2, tdot


ARC_COSINE = FusedFunction(arc_cosine_tile)
ERF = FusedFunction(erf_tile)


# ----------------------------------------------------------------- the whole chain of an MLP
def dense_step(weight_var: float, bias_var: float, standard: bool, has_bias: bool, in_width: int) -> tuple:
    """A Dense layer as a chain step (see :func:`ntkprior.kernels.state.dense_update`)."""
    return ("dense", float(weight_var), float(bias_var), bool(standard), bool(has_bias), int(in_width))


def _dense(cov, ntk, step):
    _, w, b, standard, has_bias, width = step
    if standard:
        ntk = ntk * w + cov * float(width) + (1.0 if has_bias else 0.0)
        return cov * w + b, ntk
    cov = cov * w + b
    return cov, ntk * w + cov


def _activation(cov, ntk, var1, var2, step):
    if step[0] == "arc_cosine":
        _, even, odd = step
        if odd == 0.0:                                          # linear: T = a²K, T' = a²
            return cov * even, ntk * even
        t, tdot = arc_cosine_tile(cov, var1, var2, even, odd)
    else:
        _, a2, b2, c2 = step
        t, tdot = erf_tile(cov, b2 * var1, b2 * var2, a2 * b2 * 4.0 / math.pi, a2 * 2.0 / math.pi, c2, b2)
    return t, ntk * tdot


def _chain_function(steps: tuple):
    """``f(cov, v1_0, v2_0, v1_1, v2_1, ...) -> (nngp, ntk)``: every step of an MLP on one tile,
    with the rows' and columns' pre-activation variances before each activation."""

    def chain(cov, *variances):
        ntk, i = torch.zeros_like(cov), 0
        for step in steps:
            if step[0] == "dense":
                cov, ntk = _dense(cov, ntk, step)
            else:
                cov, ntk = _activation(cov, ntk, variances[i][:, None], variances[i + 1][None, :], step)
                i += 2
        return cov, ntk

    return chain


_CHAINS: dict[tuple, FusedFunction] = {}


def chain_variances_are_safe(steps: tuple, rows: list[Tensor], cols: list[Tensor]) -> bool:
    """Whether the unscaled arithmetic holds for every activation, given the rows' and columns'
    variances before each: none exactly 0 (the eager maps use φ'(0) there) and every product of
    variances without overflow or underflow (the eager maps scale by powers of two there)."""
    activations = [s for s in steps if s[0] != "dense"]
    for step, v1, v2 in zip(activations, rows, cols):
        scale = step[2] if step[0] == "erf" else 1.0          # the erf map works on b²·K
        for v in (v1, v2):
            if not (SAFE_LOW <= scale * float(v.min()) and scale * float(v.max()) <= SAFE_HIGH):
                return False
    return True


def chain_tile(steps: tuple, cov: Tensor, variances: list[Tensor]) -> tuple[Tensor, Tensor] | None:
    """NNGP and NTK of one tile through a whole MLP in one compiled loop, or None (fusion off, tile
    small, compiling failed: run the eager layers). ``steps``: :func:`dense_step` tuples and
    activation steps (``ActivationMap.fused_step``); ``variances``: rows' (r,) and columns' (c,)
    pre-activation variances before each activation, in order (contiguous: a view's storage
    offset would become a guard and recompile per tile)."""
    fused = _CHAINS.get(steps)
    if fused is None:
        fused = _CHAINS[steps] = FusedFunction(_chain_function(steps))
    return fused(cov, *variances)
