"""The infinite-width kernel map of global self-attention (Hron, Bahri, Sohl-Dickstein & Novak 2020,
"Infinite attention: NNGP and NTK for deep attention networks"; neural-tangents'
``stax.GlobalSelfAttention``, whose conventions are followed exactly).

Tokens are the positions of the spatial state (signals (C, T): T tokens of C features), so the
map reads and writes the FULL position covariance ``K(i, j)`` (``state.full``). Notation: K the
input's NNGP over positions (per input: ``var1``, ``var2``; between inputs: ``cov``), Θ its NTK,
``σ_QK = query_std·key_std``, ``σ_OV = out_std·value_std``, σ_b the bias, R = I the covariance of
the (optional) additive positional embedding of std σ_p, ``Kq = K + σ_p² R`` what keys and queries
see, ``Kv`` what values see (``Kq`` when ``val_pos_emb``, else K; Θv alike with Θ + σ_p² R).

**Linear scaling** (logits ``σ_QK q·k / (C·n_key)``, keys and queries tied): as widths grow the
logits converge to the deterministic ``σ_QK Kq(x)(i, j)`` of each input's own covariance, so the
attention weights are deterministic, ``G(x) = φ(σ_QK Kq(x))`` (φ: softmax over the key axis j, or
the identity, relu, abs entrywise; a causal mask sets the weights of keys j > i to 0) and::

    K'(x, x') = σ_OV² G(x) Kv(x, x') G(x')ᵀ + σ_b²
    Θ'(x, x') = σ_OV² G(x) Θv(x, x') G(x')ᵀ + 2 σ_OV² G(x) Kv(x, x') G(x')ᵀ + σ_b²

(the 2: the value and output weights; the query/key weights contribute O(1/n_key), nothing in the
limit). **Square-root scaling** (``σ_QK q·k / (C·sqrt(n_key))``, independent W_Q, W_K): the logits
stay Gaussian with ``E[G(i,j) G'(i',j')] = σ_QK² Kq(i,i') Kq(j,j')``. For the identity mechanism
(and n_heads → ∞, which makes the output Gaussian), with ⟨A, B⟩ = Σ_{j,j'} A(j,j') B(j,j')::

    K'  = σ_QK² σ_OV² ⟨Kq, Kv⟩ Kq + σ_b²
    Θ'  = σ_QK² σ_OV² [(⟨Kq, Θv⟩ + ⟨Kv, Θq⟩) Kq + ⟨Kq, Kv⟩ (Θq + 4 Kq)] + σ_b²

For softmax, relu or abs under square-root scaling the limit is an expectation over Gaussian
logits with no known closed form: refused (neural-tangents raises too).
"""

from __future__ import annotations

import torch

from ntkprior.kernels.state import KernelState

Tensor = torch.Tensor

MECHANISMS = ("softmax", "identity", "relu", "abs")


def attention_weights(logits: Tensor, mechanism: str, causal: bool) -> Tensor:
    """``φ(logits)`` over the last two (query i, key j) axes: softmax over j, or identity/relu/abs
    entrywise; ``causal`` gives the keys j > i weight 0 (logit −∞ for softmax)."""
    if causal:
        p = logits.shape[-1]
        mask = torch.ones(p, p, dtype=torch.bool, device=logits.device).triu_(1)   # keys after the query
        logits = logits.masked_fill(mask, float("-inf") if mechanism == "softmax" else 0.0)
    if mechanism == "softmax":
        return torch.softmax(logits, dim=-1)
    return {"identity": lambda t: t, "relu": torch.relu, "abs": torch.abs}[mechanism](logits)


def _sandwich(g1: Tensor, m: Tensor, g2: Tensor, pair: bool) -> Tensor:
    """``G1 M G2ᵀ`` per pair of inputs: M (rows, cols, P, P) with G1 (rows, P, P), G2 (cols, P, P);
    or per input (``pair`` False): M, G1, G2 all (n, P, P).

    Pairs as two large batched products (one per side, batched over rows then columns) rather
    than rows·cols tiny P×P ones: 5-10x faster at P = 8."""
    if not pair:
        return torch.matmul(torch.matmul(g1, m), g2.transpose(-1, -2))
    rows, cols, p, q = m.shape
    left = torch.bmm(g1, m.permute(0, 2, 1, 3).reshape(rows, p, cols * q))         # (rows, i, cols·q)
    left = left.view(rows, p, cols, q).permute(2, 0, 1, 3).reshape(cols, rows * p, q)
    both = torch.bmm(left, g2.transpose(1, 2))                                       # (cols, rows·i, j)
    return both.view(cols, rows, p, p).permute(1, 0, 2, 3).contiguous()


def _with_pos(t: Tensor, pos_var: float) -> Tensor:
    """``t + σ_p² I`` over positions (the additive positional embedding's covariance), or ``t``."""
    if not pos_var:
        return t
    return t + pos_var * torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)


def self_attention_linear(state: KernelState, *, qk_std: float, ov_std: float, bias_var: float,
                          mechanism: str, causal: bool, pos_var: float, val_pos_emb: bool) -> None:
    """The linear-scaling attention map (module docstring) on a full state, in place."""
    _require_full(state)
    v_pos = pos_var if val_pos_emb else 0.0
    g1 = attention_weights(qk_std * _with_pos(state.var1, pos_var), mechanism, causal)
    ov = ov_std ** 2

    def apply(g_a, cov, ntk, g_b, pair):
        k_new = _sandwich(g_a, _with_pos(cov, v_pos), g_b, pair).mul_(ov)
        t_new = _sandwich(g_a, _with_pos(ntk, v_pos), g_b, pair).mul_(ov).add_(k_new, alpha=2.0)
        return k_new.add_(bias_var), t_new.add_(bias_var)

    if state.diagonal:
        state.cov, state.ntk = apply(g1, state.cov, state.ntk, g1, False)
        state.var1 = state.var2 = state.cov
        state.ntk1 = state.ntk
        return
    g2 = attention_weights(qk_std * _with_pos(state.var2, pos_var), mechanism, causal)
    state.cov, state.ntk = apply(g1, state.cov, state.ntk, g2, True)
    state.var1, state.ntk1 = apply(g1, state.var1, state.ntk1, g1, False)
    state.var2 = _sandwich(g2, _with_pos(state.var2, v_pos), g2, False).mul_(ov).add_(bias_var)
    state.sync_diagonal()


def self_attention_sqrt_identity(state: KernelState, *, qk_std: float, ov_std: float, bias_var: float,
                                 pos_var: float, val_pos_emb: bool) -> None:
    """The square-root-scaling identity-mechanism map (module docstring) on a full state, in place."""
    _require_full(state)
    scale = (qk_std * ov_std) ** 2

    def apply(cov, ntk):
        kq, tq = _with_pos(cov, pos_var), _with_pos(ntk, pos_var)
        kv, tv = (kq, tq) if val_pos_emb else (cov, ntk)
        kk = _inner(kq, kv)
        kt = _inner(kq, tv) + _inner(kv, tq)
        k_new = (kq * kk).mul_(scale).add_(bias_var)
        t_new = (kq * kt + (tq + 4.0 * kq) * kk).mul_(scale).add_(bias_var)
        return k_new, t_new

    if state.diagonal:
        state.cov, state.ntk = apply(state.cov, state.ntk)
        state.var1 = state.var2 = state.cov
        state.ntk1 = state.ntk
        return
    state.cov, state.ntk = apply(state.cov, state.ntk)
    state.var1, state.ntk1 = apply(state.var1, state.ntk1)
    state.var2 = apply(state.var2, torch.zeros_like(state.var2))[0]
    state.sync_diagonal()


def _inner(a: Tensor, b: Tensor) -> Tensor:
    """⟨A, B⟩ = Σ_{j, j'} A(j, j') B(j, j') per pair, kept as (..., 1, 1) to broadcast over positions."""
    return (a * b).sum((-1, -2), keepdim=True)


def _require_full(state: KernelState) -> None:
    if not state.full:
        raise RuntimeError("self-attention needs the full position covariance (Serial decides this)")
