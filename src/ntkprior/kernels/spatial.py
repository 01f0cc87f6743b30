"""Kernel maps on the spatial state of signals and images (MATH.md section 6).

For inputs with positions (signals (C, L), images (C, H, W)) the infinite-width state of a
pair of inputs is a matrix over positions. It is carried in one of two forms, chosen by the
architecture (``Serial`` decides; the user never does):

- *diagonal* (``state.full`` False): only ``K(i, i)`` for each position, shape
  ``(rows, cols, P)``; the per-input variances ``(rows, P)``. Convolutions and activations map
  the position diagonal to itself, and a Flatten readout needs nothing else.
- *full* (``state.full`` True): ``K(i, j)`` for every pair of positions, ``(rows, cols, P, P)``;
  the per-input covariances ``(rows, P, P)``. Needed by any later pooling layer.

Positions are kept flattened (P = L or H·W); ``state.shape`` holds the spatial shape. The
formulas (Novak et al. 2019, Arora et al. 2019; the conventions of neural-tangents)::

    input      K(i, j) = Σ_c x_c(i) x'_c(j) / C,   Θ = 0
    conv       K'(i, j) = σ_w² mean_δ K̃(s·i + δ, s·j + δ) + σ_b²    (K̃: K padded; then as Dense)
    avg pool   K' = A K Aᵀ: K'(p, q) = mean_{a, b ∈ window} K(s·p + a, s·q + b)
    global     K = mean_{i, j} K(i, j)          flatten   K = mean_i K(i, i)
    layer norm K'(i, j) = K(i, j) / sqrt(K11(i, i) K22(j, j)), the same for Θ

This module knows no torch modules: only the arithmetic on the state.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import nn

from ntkprior.kernels.state import KernelState

Tensor = torch.Tensor


def spatial_input_state(x1: Tensor, x2: Tensor, *, diagonal: bool, diag_offset: int | None,
                        full: bool) -> KernelState:
    """The input state of signals/images ``x`` (n, C, *S): ``K(i, j) = Σ_c x_c(i) x'_c(j) / C``."""
    n1, c = x1.shape[:2]
    shape = tuple(x1.shape[2:])
    a = x1.reshape(n1, c, -1)
    var1 = _self_gram(a, full)
    if diagonal:
        ntk = torch.zeros_like(var1)
        return KernelState(var1, ntk, var1, var1, ntk, width=c, diagonal=True, shape=shape, full=full)
    b = x2.reshape(x2.shape[0], c, -1)
    var2 = _self_gram(b, full)
    if full:  # (n1·P, C) @ (C, n2·P) -> (n1, n2, P, P)
        p = a.shape[2]
        cov = (a.transpose(1, 2).reshape(-1, c) @ b.transpose(1, 2).reshape(-1, c).T)
        cov = cov.view(n1, p, -1, p).permute(0, 2, 1, 3).contiguous()
    else:     # per position: (P, n1, C) @ (P, C, n2) -> (n1, n2, P)
        cov = torch.bmm(a.permute(2, 0, 1), b.permute(2, 1, 0)).permute(1, 2, 0).contiguous()
    cov.div_(c)
    state = KernelState(cov, torch.zeros_like(cov), var1, var2, torch.zeros_like(var1), width=c,
                        diag_offset=diag_offset, shape=shape, full=full)
    state.sync_diagonal()
    return state


def _self_gram(a: Tensor, full: bool) -> Tensor:
    c = a.shape[1]
    if full:
        return torch.bmm(a.transpose(1, 2), a).div_(c)
    return (a * a).sum(1).div_(c)


def _position_diagonal(t: Tensor) -> Tensor:
    """``t(i, i)`` of a full per-input covariance (..., P, P) -> (..., P)."""
    return torch.diagonal(t, dim1=-2, dim2=-1)


# --- windows: the shifts of a convolution or a pooling layer ------------------------------------

def window_mean(t: Tensor, shape: tuple, lead: int, groups: int, kernel_size: tuple, stride: tuple,
                pads: tuple, circular: bool) -> tuple[Tensor, tuple]:
    """``mean_δ t̃(s·i + δ, s·j + δ, ...)`` over the window offsets δ, the same δ in each of the
    ``groups`` position groups (1: a position diagonal or one side of a covariance; 2: both
    sides of a full covariance, as a convolution ties them). ``t`` has ``lead`` leading axes and
    ``groups`` flattened position axes; returns the result (positions flattened) and the new
    spatial shape. ``pads`` are (lo, hi) per spatial axis: zeros, or wrapped when ``circular``.

    One group is a matrix product with the window matrix (:func:`window_matrix`); two tied groups
    are a sum of shifted strided slices: with zero padding the slices skip the padded positions
    (:func:`_tied_window_zeros`), circular padding wraps one spatial axis at a time (the window is
    a product over axes).
    """
    if groups == 1:
        w, out = window_matrix(shape, kernel_size, stride, pads, circular, t.dtype, t.device)
        return (t.reshape(-1, t.shape[-1]) @ w).reshape(t.shape[:-1] + (w.shape[1],)), out
    if not circular:
        return _tied_window_zeros(t, shape, lead, kernel_size, stride, pads)
    nd = len(shape)
    t = t.reshape(t.shape[:lead] + shape * groups)
    for d, (k, s, (lo, hi)) in enumerate(zip(kernel_size, stride, pads)):
        t = _tied_window_axis(t, [lead + d, lead + nd + d], k, s, lo, hi, circular)
    out = tuple(t.shape[lead:lead + nd])
    return t.reshape(t.shape[:lead] + (math.prod(out),) * groups), out


@functools.lru_cache(maxsize=64)
def window_matrix(shape: tuple, kernel_size: tuple, stride: tuple, pads: tuple, circular: bool,
                  dtype: torch.dtype, device) -> tuple[Tensor, tuple]:
    """The (P_in, P_out) matrix W of a window mean over flattened positions, ``t_out = t_in @ W``:
    ``W[q, p] = 1/|F|`` for each input position q in output p's (padded) window — the Kronecker
    product of one matrix per spatial axis. Returns W and the output spatial shape (cached: the
    same layer meets the same shapes in every row block; callers must not modify W)."""
    w, out = torch.ones(1, 1, dtype=dtype), []
    for n, k, s, (lo, hi) in zip(shape, kernel_size, stride, pads):
        m = (n + lo + hi - k) // s + 1
        axis = torch.zeros(n, m, dtype=dtype)
        for p in range(m):
            for o in range(k):
                q = s * p + o - lo
                if circular:
                    axis[q % n, p] += 1.0 / k
                elif 0 <= q < n:
                    axis[q, p] += 1.0 / k
        w, out = torch.kron(w, axis), out + [m]
    return w.to(device), tuple(out)


def _tied_window_zeros(t: Tensor, shape: tuple, lead: int, kernel_size: tuple, stride: tuple,
                       pads: tuple) -> tuple[Tensor, tuple]:
    """The tied window mean of a full covariance with zero padding: for each offset δ, the output
    positions whose input ``s·i + δ − lo`` lies inside receive that strided slice (padded zeros add
    nothing but count in 1/|F|)."""
    batch = t.shape[:lead]
    x = t.reshape(batch + shape * 2)
    out = tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(shape, kernel_size, stride, pads))
    acc = x.new_zeros(batch + out * 2)
    for offset in itertools.product(*(range(k) for k in kernel_size)):
        outs, ins = [], []
        for n, s, (lo, _), m, o in zip(shape, stride, pads, out, offset):
            first, last = max(0, -((o - lo) // s)), min(m - 1, (n - 1 - o + lo) // s)
            outs.append(slice(first, last + 1))
            ins.append(slice(s * first + o - lo, s * last + o - lo + 1, s))
        if all(sl.stop > sl.start for sl in outs):
            acc[(Ellipsis,) + tuple(outs) * 2] += x[(Ellipsis,) + tuple(ins) * 2]
    acc.div_(math.prod(kernel_size))
    return acc.reshape(batch + (math.prod(out),) * 2), out


def _tied_window_axis(t: Tensor, axes: list, k: int, s: int, lo: int, hi: int, circular: bool) -> Tensor:
    """``mean_o t̃(s·i + o, s·j + o)`` along one spatial axis of each side of a full covariance."""
    last = [t.ndim - 2, t.ndim - 1]
    moved = t.movedim(axes, last) if axes != last else t
    batch = moved.shape[:-2]
    x = moved.reshape((-1, 1) + moved.shape[-2:])
    if lo or hi:
        x = nn.functional.pad(x, [lo, hi] * 2, mode="circular" if circular else "constant")
    m = (x.shape[-1] - k) // s + 1
    y = None
    for o in range(k):
        piece = x[..., o:o + s * (m - 1) + 1:s, o:o + s * (m - 1) + 1:s]
        y = piece.clone() if y is None else y.add_(piece)
    y = y.div_(k).reshape(batch + y.shape[2:])
    return y.movedim(last, axes) if axes != last else y


def _for_each(state: KernelState, fn) -> None:
    """Apply ``fn(tensor, lead_axes)`` to every tensor of the state (the pair block and the
    per-input variances)."""
    if state.diagonal:
        state.cov = fn(state.cov, 1)
        state.ntk = fn(state.ntk, 1)
        state.var1 = state.var2 = state.cov
        state.ntk1 = state.ntk
        return
    state.cov, state.ntk = fn(state.cov, 2), fn(state.ntk, 2)
    state.var1, state.ntk1 = fn(state.var1, 1), fn(state.ntk1, 1)
    state.var2 = fn(state.var2, 1)


def conv_positions(state: KernelState, kernel_size: tuple, stride: tuple, pads: tuple,
                   circular: bool) -> None:
    """The position part of a convolution: ``t ← mean_δ t̃(s·i + δ, s·j + δ)`` on K and Θ.

    The weights of different filter offsets are independent, so only equal offsets pair up;
    the Dense arithmetic (``dense_update`` with fan-in C·|F|) follows.
    """
    groups = 2 if state.full else 1
    new_shape = [state.shape]

    def fn(t, lead):
        out, new_shape[0] = window_mean(t, state.shape, lead, groups, kernel_size, stride, pads, circular)
        return out

    _for_each(state, fn)
    state.shape = new_shape[0]
    state.sync_diagonal()


def pool_positions(state: KernelState, kernel_size: tuple, stride: tuple, pads: tuple) -> None:
    """Average pooling ``K' = A K Aᵀ`` (both sides averaged independently). Needs the full state."""
    if not state.full:
        raise RuntimeError("average pooling needs the full position covariance (Serial decides this)")
    w, out = window_matrix(state.shape, kernel_size, stride, pads, False, state.cov.dtype, state.cov.device)

    def fn(t, lead):   # Wᵀ t W, as (t W)ᵀ W transposed back
        return ((t @ w).transpose(-1, -2) @ w).transpose(-1, -2).contiguous()

    _for_each(state, fn)
    state.shape = out
    state.sync_diagonal()


def global_pool(state: KernelState) -> None:
    """Global average pooling: ``K = mean_{i, j} K(i, j)``; the state becomes that of vectors."""
    if not state.full:
        raise RuntimeError("global average pooling needs the full position covariance")
    _for_each(state, lambda t, lead: t.mean((-1, -2)))
    state.shape, state.full = (), False
    state.sync_diagonal()


def flatten(state: KernelState) -> None:
    """Flatten (for the Dense that follows, fan-in C·P): ``K = mean_i K(i, i)``; vectors after.

    ``state.width`` becomes C·P, the fan-in of the next layer (standard parameterisation).
    """
    positions = math.prod(state.shape)
    if state.full:
        to_diagonal(state)
    _for_each(state, lambda t, lead: t.mean(-1))
    state.width *= positions
    state.shape = ()
    state.sync_diagonal()


def to_diagonal(state: KernelState) -> None:
    """Keep only the position diagonal ``K(i, i)`` (once no later layer needs the rest)."""
    if not state.full:
        return
    _for_each(state, lambda t, lead: _position_diagonal(t).contiguous())
    state.full = False


def layer_norm(state: KernelState) -> None:
    """LayerNorm over the channels of each position: ``K(i, j) / sqrt(K11(i, i) K22(j, j))``, and Θ alike.

    At infinite width the channel mean of Gaussian pre-activations is 0 and their channel
    variance is K11(i, i), so the normalised variances are exactly 1.
    """
    tiny = torch.finfo(state.cov.dtype).tiny
    if state.diagonal:
        d = (_position_diagonal(state.var1) if state.full else state.var1).clamp(min=tiny).rsqrt()
        scale = d[..., :, None] * d[..., None, :] if state.full else d * d
        state.ntk = state.ntk * scale
        state.cov = state.var1 = state.var2 = state.cov * scale
        state.ntk1 = state.ntk
        _set_unit_diagonal(state.cov, state.full)
        return
    d1 = (_position_diagonal(state.var1) if state.full else state.var1).clamp(min=tiny).rsqrt()
    d2 = (_position_diagonal(state.var2) if state.full else state.var2).clamp(min=tiny).rsqrt()
    if state.full:
        self1 = d1[:, :, None] * d1[:, None, :]
        self2 = d2[:, :, None] * d2[:, None, :]
        cross = d1[:, None, :, None] * d2[None, :, None, :]
    else:
        self1, self2 = d1 * d1, d2 * d2
        cross = d1[:, None] * d2[None, :]
    state.cov, state.ntk = state.cov * cross, state.ntk * cross
    state.var1, state.ntk1 = state.var1 * self1, state.ntk1 * self1
    state.var2 = state.var2 * self2
    for v in (state.var1, state.var2):
        _set_unit_diagonal(v, state.full)
    state.sync_diagonal()


def _set_unit_diagonal(var: Tensor, full: bool) -> None:
    if full:
        _position_diagonal(var).fill_(1.0)
    else:
        var.fill_(1.0)


def activation_full(amap, state: KernelState) -> None:
    """An activation on the full state: entrywise ``T(K11(i, i), K(i, j), K22(j, j))``.

    The position diagonal of each input's covariance is set from ``amap.diag`` (exact there:
    the angle is 0, not round-off).
    """
    check = getattr(amap, "check_accuracy", None)      # quadrature maps warn where their rule is inaccurate
    d1 = _position_diagonal(state.var1).contiguous()
    if check is not None:
        check(state.var1, d1[..., :, None], d1[..., None, :])
    t1d, tdot1d = amap.diag(d1)
    t1, tdot1 = amap.pair(state.var1.clone(), d1[..., :, None], d1[..., None, :])
    _position_diagonal(t1).copy_(t1d)
    _position_diagonal(tdot1).copy_(tdot1d)
    if state.diagonal:
        state.cov = state.var1 = state.var2 = t1
        state.ntk = state.ntk1 = state.ntk * tdot1
        return
    d2 = _position_diagonal(state.var2).contiguous()
    t2, _ = amap.pair(state.var2.clone(), d2[..., :, None], d2[..., None, :])
    _position_diagonal(t2).copy_(amap.diag(d2)[0])
    if check is not None:
        check(state.cov, d1[:, None, :, None], d2[None, :, None, :])
    t, tdot = amap.pair(state.cov, d1[:, None, :, None], d2[None, :, None, :])
    state.cov = t
    state.ntk.mul_(tdot)
    state.ntk1 = state.ntk1 * tdot1
    state.var1, state.var2 = t1, t2
    state.sync_diagonal()


# --- branches -----------------------------------------------------------------------------------

def copy_state(state: KernelState) -> KernelState:
    """An independent copy (FanOut): every tensor cloned."""
    new = KernelState(**{**state.__dict__})
    _for_each(new, lambda t, lead: t.clone())
    return new


def combine(states: list[KernelState], weights: list[float], widths: list[int] | None = None) -> KernelState:
    """``Σ_b w_b · state_b`` (FanInSum with branch scales w_b = alpha², or FanInConcat with
    w_b = C_b / ΣC). ``widths`` (concat) sets the new channel count to their sum."""
    out = states[0]
    fields = ("cov", "ntk") if out.diagonal else ("cov", "ntk", "var1", "var2", "ntk1")
    for name in fields:
        total = getattr(out, name) * weights[0]
        for st, w in zip(states[1:], weights[1:]):
            total.add_(getattr(st, name), alpha=w)
        setattr(out, name, total)
    if out.diagonal:
        out.var1 = out.var2 = out.cov
        out.ntk1 = out.ntk
    out.width = sum(widths) if widths is not None else out.width
    out.sync_diagonal()
    return out
