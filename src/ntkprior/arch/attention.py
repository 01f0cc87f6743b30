"""Global self-attention over the tokens of a sequence: the finite torch module and its kernel map.

``SelfAttention(out_channels, key_channels, value_channels, n_heads=1, ...)`` takes the arguments
of neural-tangents' ``stax.GlobalSelfAttention`` one to one, with its defaults::

    out_channels   n_chan_out      key_std        W_key_std       bias_std    b_std (None: no bias)
    key_channels   n_chan_key      query_std      W_query_std     mechanism   attention_mechanism
    value_channels n_chan_val      value_std      W_value_std     linear_scaling
    n_heads        n_heads         out_std        W_out_std       pos_emb     pos_emb_type ("none", "sum")
                                                                  pos_emb_std W_pos_emb_std
                                                                  val_pos_emb val_pos_emb

Inputs are (n, C, T) in PyTorch layout: T tokens (positions) of C features; images (n, C, H, W)
attend over all H·W positions. A per-token dense layer is ``Conv(out, 1)``. The finite layer (NTK
parameterisation, every weight N(0, 1); per head h with W_K, W_V of shape (C, n_key), (C, n_val))::

    k_h = x W_K,   q_h = k_h (linear scaling: tied) or x W_Q (square-root scaling)
    A_h = φ(σ_QK q_h k_hᵀ / (C · n_key))          (linear scaling; C · sqrt(n_key) otherwise)
    f   = σ_OV / sqrt(C · n_val · n_heads) · concat_h(A_h x W_V) W_O + σ_b b

with φ softmax over the keys, or identity / relu / abs entrywise; ``causal`` masks the keys after
each query (weight 0; −∞ logits for softmax) in the flattened position order. ``pos_emb="sum"``
adds a trainable embedding σ_p·E (E ~ N(0, 1), one per position and channel; neural-tangents'
SUM with the identity covariance, ``pos_emb_decay_fn=None``) to what keys and queries read, and to
the values too when ``val_pos_emb``.

What the scaling means (Hron et al. 2020, section 3). **Linear scaling** 1/n_key: the logits are an
average over n_key key features, so as widths grow they converge to the deterministic ``σ_QK
K(i, j)`` of the input's own covariance; the attention pattern of a wide network at initialisation
is a fixed function of token similarity, and the query/key weights' share of the NTK vanishes as
1/n_key — in the kernel regime such a network does not learn where to attend. Keys and queries
must be tied, else the limit logits are 0 (uniform attention). **Square-root scaling** 1/sqrt(n_key)
(the usual transformer): the logits stay random Gaussians at any width; the limit is Gaussian only
as ``n_heads`` → ∞, and its kernel is an expectation over those logits, closed form only for the
identity mechanism. ``Serial.kernel`` refuses softmax/relu/abs with square-root scaling instead
of approximating them. Kernel formulas: ``ntkprior.kernels.attention``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkprior.arch.layers import Layer, _check_std
from ntkprior.kernels import attention as ka

POS_EMB = ("none", "sum")


class SelfAttentionModule(nn.Module):
    """The finite attention layer (module docstring) on (n, C, *S); ``layer`` is its description."""

    def __init__(self, layer: "SelfAttention", in_shape: tuple, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.layer = layer
        c, positions = in_shape[0], math.prod(in_shape[1:])
        h, nk, nv = layer.n_heads, layer.key_channels, layer.value_channels

        def normal(*shape):
            return nn.Parameter(torch.randn(*shape, generator=generator, dtype=dtype))

        self.key = normal(h, c, nk)
        self.query = normal(h, c, nk) if not layer.linear_scaling else None
        self.value = normal(h, c, nv)
        self.out = normal(h * nv, layer.out_channels)
        self.bias = normal(layer.out_channels) if layer.bias_std is not None else None
        self.pos = normal(positions, c) if layer.pos_emb == "sum" else None
        self.logit_scale = layer.query_std * layer.key_std / (c * (nk if layer.linear_scaling else math.sqrt(nk)))
        self.out_scale = layer.out_std * layer.value_std / math.sqrt(c * nv * h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        tokens = x.reshape(n, c, -1).transpose(1, 2)                       # (n, T, C)
        seen = tokens + self.layer.pos_emb_std * self.pos if self.pos is not None else tokens
        keys = torch.einsum("ntc,hck->nhtk", seen, self.key)
        queries = keys if self.query is None else torch.einsum("ntc,hck->nhtk", seen, self.query)
        logits = torch.matmul(queries, keys.transpose(-1, -2)) * self.logit_scale
        weights = ka.attention_weights(logits, self.layer.mechanism, self.layer.causal)
        values = torch.einsum("ntc,hcv->nhtv", seen if self.layer.val_pos_emb else tokens, self.value)
        heads = torch.matmul(weights, values).permute(0, 2, 1, 3).reshape(n, tokens.shape[1], -1)
        out = torch.matmul(heads, self.out) * self.out_scale
        if self.bias is not None:
            out = out + self.layer.bias_std * self.bias
        return out.transpose(1, 2).reshape((n, -1) + tuple(x.shape[2:]))

    def extra_repr(self) -> str:
        return self.layer.spec()


class SelfAttention(Layer):
    """Global self-attention over tokens (module docstring): neural-tangents' ``GlobalSelfAttention``.

    The kernel map is exact for every mechanism with ``linear_scaling=True`` and for the identity
    mechanism with ``linear_scaling=False`` (n_heads → ∞); other square-root-scaled mechanisms have
    no closed form and ``Serial.kernel`` refuses them (their finite module still builds and trains).
    """

    kind = "weighted"
    needs_full = True

    def __init__(self, out_channels: int, key_channels: int, value_channels: int, n_heads: int = 1,
                 key_std: float = 1.0, query_std: float = 1.0, value_std: float = 1.0, out_std: float = 1.0,
                 bias_std: float | None = None, mechanism: str = "softmax", linear_scaling: bool = True,
                 pos_emb: str = "none", pos_emb_std: float = 1.0, val_pos_emb: bool = False,
                 causal: bool = False):
        for name, value in (("out_channels", out_channels), ("key_channels", key_channels),
                            ("value_channels", value_channels), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SelfAttention: {name} must be a positive integer, got {value!r}")
        if mechanism not in ka.MECHANISMS:
            raise ValueError(f"SelfAttention: mechanism must be one of {ka.MECHANISMS}, got {mechanism!r}")
        if pos_emb not in POS_EMB:
            raise ValueError(f"SelfAttention: pos_emb must be one of {POS_EMB}, got {pos_emb!r}")
        for name, value in (("linear_scaling", linear_scaling), ("val_pos_emb", val_pos_emb), ("causal", causal)):
            if not isinstance(value, bool):
                raise ValueError(f"SelfAttention: {name} must be True or False, got {value!r}")
        if val_pos_emb and pos_emb == "none":
            raise ValueError("SelfAttention: val_pos_emb=True needs a positional embedding; pass pos_emb='sum'")
        self.out_channels, self.key_channels, self.value_channels = out_channels, key_channels, value_channels
        self.n_heads = n_heads
        self.key_std = _check_std(key_std, "key_std", "SelfAttention")
        self.query_std = _check_std(query_std, "query_std", "SelfAttention")
        self.value_std = _check_std(value_std, "value_std", "SelfAttention")
        self.out_std = _check_std(out_std, "out_std", "SelfAttention")
        self.bias_std = _check_std(bias_std, "bias_std", "SelfAttention", allow_none=True)
        self.pos_emb_std = _check_std(pos_emb_std, "pos_emb_std", "SelfAttention")
        self.mechanism, self.linear_scaling = mechanism, linear_scaling
        self.pos_emb, self.val_pos_emb, self.causal = pos_emb, val_pos_emb, causal

    def out_shape(self, in_shape, where):
        if len(in_shape) < 2:
            raise ValueError(f"{where} ({self.spec()}): needs sequences (n, C, T) of T tokens with C features, but "
                             f"its input is vectors of {in_shape[0]} features; pass x.reshape(n, C, T), or put "
                             "the attention before flatten/global_avg_pool")
        return (self.out_channels,) + tuple(in_shape[1:])

    def build_module(self, in_shape, generator, dtype):
        return SelfAttentionModule(self, tuple(in_shape), generator, dtype)

    def check_kernel(self, where: str) -> None:
        """Refuse, before any work, options whose limit kernel has no closed form (or is not implemented)."""
        if self.linear_scaling:
            return
        if self.mechanism != "identity":
            raise ValueError(f"{where}: with linear_scaling=False the {self.mechanism} attention weights stay "
                             "random Gaussian logits at infinite width and the kernel is an expectation with no "
                             "known closed form (Hron et al. 2020; neural-tangents raises too); use "
                             "linear_scaling=True, or mechanism='identity', or ntp.empirical_ntk on the finite "
                             "network")
        if self.causal:
            raise ValueError(f"{where}: causal=True is implemented for linear_scaling=True only (the square-root "
                             "identity kernel here sums over all keys); use linear_scaling=True")

    def map_kernel(self, state):
        self.check_kernel(self.spec())
        qk, ov = self.query_std * self.key_std, self.out_std * self.value_std
        bias_var = self.bias_std ** 2 if self.bias_std is not None else 0.0
        pos_var = self.pos_emb_std ** 2 if self.pos_emb == "sum" else 0.0
        if self.linear_scaling:
            ka.self_attention_linear(state, qk_std=qk, ov_std=ov, bias_var=bias_var, mechanism=self.mechanism,
                                     causal=self.causal, pos_var=pos_var, val_pos_emb=self.val_pos_emb)
        else:
            ka.self_attention_sqrt_identity(state, qk_std=qk, ov_std=ov, bias_var=bias_var, pos_var=pos_var,
                                            val_pos_emb=self.val_pos_emb)
        state.width = self.out_channels

    def with_width(self, width):
        """Out, key and value channels all set to ``width`` (heads unchanged)."""
        return SelfAttention(width, width, width, **self._options())

    def _options(self) -> dict:
        return dict(n_heads=self.n_heads, key_std=self.key_std, query_std=self.query_std,
                    value_std=self.value_std, out_std=self.out_std, bias_std=self.bias_std,
                    mechanism=self.mechanism, linear_scaling=self.linear_scaling, pos_emb=self.pos_emb,
                    pos_emb_std=self.pos_emb_std, val_pos_emb=self.val_pos_emb, causal=self.causal)

    def spec(self) -> str:
        defaults = dict(n_heads=1, key_std=1.0, query_std=1.0, value_std=1.0, out_std=1.0, bias_std=None,
                        mechanism="softmax", linear_scaling=True, pos_emb="none", pos_emb_std=1.0,
                        val_pos_emb=False, causal=False)
        args = [str(self.out_channels), str(self.key_channels), str(self.value_channels)]
        args += [f"{k}={v!r}" for k, v in self._options().items() if v != defaults[k]]
        return f"self_attention({', '.join(args)})"


def read_attention_module(m: nn.Module, shape: tuple, name: str, from_parameters: bool) -> SelfAttention | None:
    """``from_torch``'s reading of attention modules: an ``ntp.SelfAttention`` module gives back its
    own description (its initialisation is the one the kernel describes); ``nn.MultiheadAttention``
    is refused, and so is ``from_parameters=True`` (its stds are not estimated). None: ``m`` is no
    attention module."""
    if isinstance(m, nn.MultiheadAttention):
        raise ValueError(f"{name}: nn.MultiheadAttention has no infinite-width kernel here: its queries and keys "
                         "are independent with 1/sqrt(head_dim) scaling (no closed form at infinite width), its "
                         "inputs are (T, n, E) or (n, T, E), it returns a tuple, and its default init "
                         "(xavier_uniform on the packed in-projection, zero biases) is not the parameterisation "
                         "of the kernel; build the layer with ntp.SelfAttention(...) and arch.build instead, "
                         "or use ntp.empirical_ntk(module, x)")
    if not isinstance(m, SelfAttentionModule):
        return None
    if from_parameters:
        raise ValueError(f"{name}: from_parameters=True does not estimate a SelfAttention module's stds from its "
                         "parameters; pass from_parameters=False to read the stds it was built with")
    channels, positions = m.key.shape[1], (m.pos.shape[0] if m.pos is not None else None)
    if len(shape) < 2 or shape[0] != channels or positions not in (None, math.prod(shape[1:])):
        raise ValueError(f"{name}: this SelfAttention module was built for {channels} channels"
                         f"{f' and {positions} positions' if positions else ''}, but receives per-sample "
                         f"inputs of shape {shape}; check input_shape")
    return m.layer
