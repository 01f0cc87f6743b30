"""Self-attention (issue 15): the infinite-width kernel against neural-tangents' GlobalSelfAttention,
closed forms, Monte Carlo over finite networks built by ``arch.build``, exact symmetries, the
finite module, the spec grammar, from_torch, training."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ntkprior as ntp
from ntkprior import kernels as km
from ntkprior.arch.layers import apply_layer
from ntkprior.arch.spec import parse_spec
from reference import monte_carlo_ntk, relative_frobenius

F64 = torch.float64
NT_PYTHON = os.environ.get("NT_PYTHON", "/opt/ntvenv/bin/python")
NT_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "nt_attention_baseline.py"


def sequences(n=5, c=3, t=6, seed=0):
    return torch.randn(n, c, t, generator=torch.Generator().manual_seed(seed), dtype=F64)


def position_kernels(layer, x1, x2=None):
    """The full position-resolved (n1, n2, T, T) NNGP and NTK after ``layer`` applied to the inputs."""
    state = km.input_state(x1, x1 if x2 is None else x2, full=True)
    layer.map_kernel(state)
    return state.cov, state.ntk


# --- neural-tangents, exactly -------------------------------------------------------------------

def _nt_kwargs(layer: ntp.SelfAttention) -> dict:
    return dict(n_chan_out=layer.out_channels, n_chan_key=layer.key_channels, n_chan_val=layer.value_channels,
                n_heads=layer.n_heads, W_key_std=layer.key_std, W_query_std=layer.query_std,
                W_value_std=layer.value_std, W_out_std=layer.out_std, b_std=layer.bias_std,
                attention_mechanism=layer.mechanism.upper(), linear_scaling=layer.linear_scaling,
                pos_emb_type=layer.pos_emb.upper(), W_pos_emb_std=layer.pos_emb_std, val_pos_emb=layer.val_pos_emb)


def nt_kernels(cases: list, x: torch.Tensor, tmp_path) -> list[tuple[np.ndarray, np.ndarray]]:
    """neural-tangents' (nngp, ntk) for each network of ``cases`` (one subprocess: JAX starts once)."""
    spec, inputs, out = tmp_path / "spec.json", tmp_path / "x.npy", tmp_path / "out.npz"
    spec.write_text(json.dumps({"cases": cases}))
    np.save(inputs, x.numpy())
    subprocess.run([NT_PYTHON, str(NT_SCRIPT), str(spec), str(inputs), str(out)], check=True,
                   capture_output=True, timeout=600)
    r = np.load(out)
    return [(r[f"nngp_{i}"], r[f"ntk_{i}"]) for i in range(len(cases))]


ATTENTION_CASES = [
    dict(mechanism="softmax"),
    dict(mechanism="identity", bias_std=0.3),
    dict(mechanism="relu", key_std=1.3, bias_std=0.4, n_heads=3),
    dict(mechanism="abs", value_std=0.7, out_std=1.2),
    dict(mechanism="softmax", pos_emb="sum", pos_emb_std=0.8, query_std=2.0),
    dict(mechanism="softmax", pos_emb="sum", val_pos_emb=True),
    dict(mechanism="identity", linear_scaling=False, bias_std=0.3),
    dict(mechanism="identity", linear_scaling=False, pos_emb="sum", pos_emb_std=0.6),
    dict(mechanism="identity", linear_scaling=False, pos_emb="sum", val_pos_emb=True),
]
READOUTS = (("global_avg_pool", ntp.GlobalAvgPool()), ("flatten", ntp.Flatten()))


@pytest.mark.skipif(not os.path.exists(NT_PYTHON), reason="neural-tangents venv absent (make-nt-venv.sh)")
def test_attention_networks_equal_neural_tangents(tmp_path):
    # Every mechanism, both scalings, positional embeddings, two readouts: conv(8, 1) attention
    # relu attention readout dense(1), and a transformer (per-token dense, residual attention, layer
    # norm, residual per-token MLP, layer norm, global average pool, dense). Both are float64
    # computations of the same formulas: agreement to rounding. NT's relu NTK clips its cosine
    # (1e-10 relative measured), hence rtol 1e-8.
    x = sequences()
    ours, theirs = [], []
    for i, options in enumerate(ATTENTION_CASES):
        att = ntp.SelfAttention(8, 8, 8, **options)
        for name, readout in READOUTS if i == 0 else READOUTS[:1]:     # flatten once (JAX compiles each)
            ours.append(ntp.serial(ntp.Conv(8, 1, bias_std=0.2), att, ntp.ReLU(), att, readout, ntp.Dense(1)))
            theirs.append([["conv1", {"width": 8, "b_std": 0.2}], ["attention", _nt_kwargs(att)], ["relu", {}],
                           ["attention", _nt_kwargs(att)], [name, {}], ["dense", {"width": 1}]])
    att = ntp.SelfAttention(16, 16, 16, n_heads=2, query_std=1.5)
    ours.append(parse_spec(f"conv(16, 1) residual{{{att.spec()}}} layer_norm "
                           "residual{conv(16, 1) relu conv(16, 1)} layer_norm global_avg_pool dense(1)"))
    theirs.append([["conv1", {"width": 16}], ["residual_attention", _nt_kwargs(att)], ["layer_norm", {}],
                   ["residual_mlp", {"width": 16}], ["layer_norm", {}], ["global_avg_pool", {}],
                   ["dense", {"width": 1}]])
    for arch, (nngp, ntk) in zip(ours, nt_kernels(theirs, x, tmp_path)):
        k = arch.kernel(x)
        np.testing.assert_allclose(k.nngp.numpy(), nngp, rtol=1e-8, atol=1e-12 * np.abs(nngp).max(), err_msg=str(arch))
        np.testing.assert_allclose(k.ntk.numpy(), ntk, rtol=1e-8, atol=1e-12 * np.abs(ntk).max(), err_msg=str(arch))


# --- closed forms -------------------------------------------------------------------------------

def test_identity_mechanism_linear_scaling_closed_form():
    # On raw inputs K(i, j) = x_i·x'_j / C and G = σ_QK K(x), so the NNGP is the cubic
    # σ_OV² σ_QK² Σ_{j,j'} K(x)(i, j) K(x, x')(j, j') K(x')(i', j') + σ_b², computed here by einsum
    # on the raw inputs; the NTK (input Θ = 0) is 2 (K' − σ_b²) + σ_b². Exact to rounding.
    x1, x2 = sequences(4, seed=1), sequences(3, seed=2)
    qk, ov, b = 1.3 * 0.8, 0.9 * 1.1, 0.25
    layer = ntp.SelfAttention(5, 5, 5, key_std=1.3, query_std=0.8, value_std=0.9, out_std=1.1, bias_std=b,
                              mechanism="identity")
    c = x1.shape[1]
    k11 = torch.einsum("aci,acj->aij", x1, x1) / c
    k22 = torch.einsum("bci,bcj->bij", x2, x2) / c
    k12 = torch.einsum("aci,bcj->abij", x1, x2) / c
    expected = ov ** 2 * qk ** 2 * torch.einsum("aij,abjk,blk->abil", k11, k12, k22) + b ** 2
    nngp, ntk = position_kernels(layer, x1, x2)
    torch.testing.assert_close(nngp, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ntk, 2 * (expected - b ** 2) + b ** 2, rtol=1e-12, atol=1e-12)


def test_identity_mechanism_sqrt_scaling_closed_form():
    # E[G(i,j) G'(i',j')] = σ_QK² K(i,i') K(j,j'): the NNGP is σ_QK² σ_OV² K(i, i') Σ_{j,j'} K(j, j')²;
    # from raw inputs (Θ = 0) the NTK is σ_QK² σ_OV² · 4 K(i, i') Σ K² (the four weight matrices).
    x1, x2 = sequences(4, seed=1), sequences(3, seed=2)
    layer = ntp.SelfAttention(5, 5, 5, query_std=1.2, out_std=0.7, mechanism="identity", linear_scaling=False)
    k12 = torch.einsum("aci,bcj->abij", x1, x2) / x1.shape[1]
    expected = (1.2 * 0.7) ** 2 * k12 * (k12 ** 2).sum((-1, -2), keepdim=True)
    nngp, ntk = position_kernels(layer, x1, x2)
    torch.testing.assert_close(nngp, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ntk, 4 * expected, rtol=1e-12, atol=1e-12)


def test_softmax_weights_rows_are_distributions_and_causal_is_lower_triangular():
    # the limit weights G = softmax_j(σ_QK K(i, j)): each row sums to 1; causal zeroes keys j > i
    from ntkprior.kernels.attention import attention_weights
    k = torch.einsum("aci,acj->aij", sequences(), sequences()) / 3
    for causal in (False, True):
        g = attention_weights(2.0 * k, "softmax", causal)
        torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:-1], dtype=F64))
        if causal:
            assert torch.equal(torch.triu(g, 1), torch.zeros_like(g))
            torch.testing.assert_close(g[:, 0, 0], torch.ones(g.shape[0], dtype=F64))


# --- Monte Carlo over finite networks -----------------------------------------------------------

def monte_carlo_positions(layer, x, seeds, before=None):
    """E[f_c(x)(i) f_c(x')(i')] over output channels and seeds of the finite attention layer (after
    the finite ``before`` layer when given)."""
    total = 0.0
    with torch.no_grad():
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            h = before.build_module(tuple(x.shape[1:]), gen, F64)(x) if before is not None else x
            f = layer.build_module(tuple(h.shape[1:]), gen, F64)(h)          # (n, out, T)
            total = total + torch.einsum("aci,bcj->abij", f, f) / f.shape[1]
    return total / len(seeds)


MC_CASES = [
    dict(mechanism="softmax", query_std=2.0),
    dict(mechanism="identity", bias_std=0.5),
    dict(mechanism="relu", key_std=1.5),
    dict(mechanism="abs"),
    dict(mechanism="softmax", causal=True, query_std=2.0),
    dict(mechanism="softmax", pos_emb="sum", pos_emb_std=0.7, val_pos_emb=True),
    dict(mechanism="identity", linear_scaling=False),
]


def mc_layer(options, out=512):
    """Wide finite layers: linear scaling 4 heads x 1024 key x 128 value channels (the logits' spread
    sqrt(2/1024) ≈ 4 % per head enters K' at second order); square-root scaling 256 heads of
    16 key x 4 value channels (the Gaussian logits' second moment is exact at any key width, the
    limit needs many heads)."""
    if options.get("linear_scaling", True):
        return ntp.SelfAttention(out, 1024, 128, n_heads=4, **options)
    return ntp.SelfAttention(out, 16, 4, n_heads=256, **options)


@pytest.mark.parametrize("options", MC_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_position_nngp_matches_finite_networks(options):
    # The whole (n, n, T, T) output covariance of one attention layer against 32 finite layers x 512
    # output channels: relative Frobenius error measured 0.016-0.040 on these cases (an average
    # over 512 value and 512 output channels per network, 32 networks); tolerance 0.07. Changing
    # key_std by 25 % (and value_std by 10 % for softmax, which is flat in the logit scale here)
    # moves the exact kernel by 0.30-0.56, so a wrong scale, a missing 1/C or a dropped positional
    # term fails. The positional embedding is i.i.d. per channel: its covariance converges to I
    # only over many channels, so a wide conv(512, 1) comes first.
    x = sequences(n=4, t=5)
    layer = mc_layer(options)
    before = ntp.Conv(512, 1) if options.get("pos_emb") else None
    state = km.input_state(x, x, full=True)
    if before is not None:
        before.map_kernel(state)
    layer.map_kernel(state)
    assert relative_frobenius(monte_carlo_positions(layer, x, range(32), before), state.cov) < 0.07


NTK_CASES = [o for o in MC_CASES if not o.get("pos_emb")]


def ntk_layer(options):
    if options.get("linear_scaling", True):
        return ntp.SelfAttention(64, 1024, 256, n_heads=4, **options)
    return ntp.SelfAttention(64, 16, 4, n_heads=128, **options)


@pytest.mark.parametrize("options", NTK_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_ntk_on_raw_inputs_matches_finite_networks(options):
    # attention flatten dense(2) on the inputs: the NTK sums the query/key weights (vanishing as
    # 1/n_key with linear scaling, the 4th of 4 equal shares with square-root scaling), the value
    # and output weights and the readout. 48 networks x 2 units: measured 0.012-0.024 at 64
    # networks (the scatter of single-network NTKs); tolerance 0.06. Dropping the value/output
    # term's factor 2 (Θ = 3K here under linear scaling) is off by 0.33.
    x = sequences(n=4, t=5)
    arch = ntp.serial(ntk_layer(options), ntp.Flatten(), ntp.Dense(2))
    exact = arch.kernel(x)
    assert relative_frobenius(monte_carlo_ntk(arch, x, seeds=range(48), units=2), exact.ntk) < 0.06


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(mechanism="softmax", query_std=2.0),
                                     dict(mechanism="softmax", pos_emb="sum", pos_emb_std=0.7, val_pos_emb=True)],
                         ids=["softmax", "pos_emb"])
def test_ntk_after_a_trained_layer_matches_finite_networks(options):
    # conv(1024, 1) relu attention flatten dense(2): the input NTK Θ enters as G Θ Gᵀ (and the
    # embedding's gradient as σ_p² I). The attention weights' dependence on the conv's parameters
    # vanishes only as the conv widens: at 128 channels it still adds 15-30 % (measured), at 1024
    # the error is 0.011-0.015 with 16 networks, 0.04 with 8 (the scatter of single networks'
    # NTKs; measured); 8 networks here, tolerance 0.08 (~25 s each). Dropping the 2 G K Gᵀ term is
    # off by 0.55, the G Θ Gᵀ term by 0.17 (softmax) and 0.11 (pos_emb) — computed; the agreement
    # with neural-tangents to 1e-8 pins both more tightly.
    x = sequences(n=4, t=5)
    att = ntp.SelfAttention(64, 1024, 64, n_heads=4, **options)
    arch = ntp.serial(ntp.Conv(1024, 1, bias_std=0.3), ntp.ReLU(), att, ntp.Flatten(), ntp.Dense(2))
    exact = arch.kernel(x)
    assert relative_frobenius(monte_carlo_ntk(arch, x, seeds=range(8), units=2), exact.ntk) < 0.08


@pytest.mark.slow
def test_transformer_block_nngp_matches_finite_networks():
    # conv(256,1) residual{attention} layer_norm residual{conv relu conv} global_avg_pool dense:
    # residual sums, layer norm and the per-token MLP compose with attention (the NTK of this
    # block is checked against neural-tangents above). 16 networks x 256 readout units.
    x = sequences(n=4, t=5, seed=4)
    spec = ("conv(256, 1) residual{self_attention(256, 1024, 64, n_heads=4, query_std=2.0)} layer_norm "
            "residual{conv(256, 1) relu conv(256, 1)} global_avg_pool dense(256)")
    arch = parse_spec(spec)
    from reference import monte_carlo_nngp
    assert relative_frobenius(monte_carlo_nngp(arch, x, seeds=range(16)), arch.kernel(x).nngp) < 0.06


# --- exact symmetries and consistency ----------------------------------------------------------

ARCH = ("conv(8, 1, bias_std=0.1) residual{{self_attention(8, 8, 8, n_heads=2{o})}} layer_norm "
        "residual{{conv(8, 1) relu conv(8, 1)}} global_avg_pool dense(1)")


@pytest.mark.parametrize("options", ["", ", mechanism='relu'", ", mechanism='identity', linear_scaling=False"])
def test_token_permutation_leaves_the_kernel_unchanged(options):
    # without positional embeddings attention is permutation-equivariant, the pooled kernel invariant;
    # exact up to the rounding of reordered sums (1e-13 relative)
    x = sequences(n=6, t=7)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    arch = parse_spec(ARCH.format(o=options))
    a, b = arch.kernel(x), arch.kernel(x[:, :, perm])
    torch.testing.assert_close(b.nngp, a.nngp, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(b.ntk, a.ntk, rtol=1e-13, atol=1e-14)
    layer = ntp.SelfAttention(8, 8, 8, mechanism="relu")
    full, _ = position_kernels(layer, x)
    permuted, _ = position_kernels(layer, x[:, :, perm])
    torch.testing.assert_close(permuted, full[:, :, perm][:, :, :, perm], rtol=1e-13, atol=1e-14)


def test_finite_module_is_permutation_equivariant_and_positional_embedding_breaks_it():
    # one finite network: equivariant without positional embeddings, not with one draw of them
    # or with the causal mask. At infinite width the embedding's covariance R = I (neural-tangents'
    # default, pos_emb_decay_fn=None) is itself permutation-invariant, so the KERNEL stays
    # equivariant: i.i.d. embeddings mark only "same position", not order; causal masking breaks it.
    x = sequences(n=3, t=6)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(2))
    plain = ntp.SelfAttention(4, 8, 8, n_heads=2).build_module((3, 6), torch.Generator().manual_seed(0), F64)
    torch.testing.assert_close(plain(x[:, :, perm]), plain(x)[:, :, perm], rtol=1e-12, atol=1e-12)
    for layer, kernel_equivariant in ((ntp.SelfAttention(4, 8, 8, pos_emb="sum"), True),
                                      (ntp.SelfAttention(4, 8, 8, causal=True), False)):
        module = layer.build_module((3, 6), torch.Generator().manual_seed(0), F64)
        assert not torch.allclose(module(x[:, :, perm]), module(x)[:, :, perm])
        k, _ = position_kernels(layer, x)
        kp, _ = position_kernels(layer, x[:, :, perm])
        assert torch.allclose(kp, k[:, :, perm][:, :, :, perm], rtol=1e-12, atol=1e-14) == kernel_equivariant


def test_causal_module_output_ignores_later_tokens():
    # the finite causal layer's output at token i depends on tokens <= i only
    x = sequences(n=2, t=6)
    module = ntp.SelfAttention(4, 8, 8, causal=True).build_module((3, 6), torch.Generator().manual_seed(0), F64)
    changed = x.clone()
    changed[:, :, 4:] += 1.0
    torch.testing.assert_close(module(changed)[:, :, :4], module(x)[:, :, :4])


@pytest.mark.parametrize("options", ["", ", pos_emb='sum', val_pos_emb=True, causal=True",
                                     ", mechanism='identity', linear_scaling=False, bias_std=0.2"])
def test_cross_kernels_are_blocks_of_the_whole(options):
    x = sequences(n=7, t=5, seed=5)
    arch = parse_spec(ARCH.format(o=options))
    whole = arch.kernel(x)
    cross = arch.kernel(x[:3], x[3:])
    torch.testing.assert_close(cross.nngp, whole.nngp[:3, 3:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(cross.ntk, whole.ntk[:3, 3:], rtol=1e-12, atol=1e-14)
    diag = arch.kernel(x, diagonal=True)
    torch.testing.assert_close(diag.nngp, torch.diagonal(whole.nngp), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag.ntk, torch.diagonal(whole.ntk), rtol=1e-12, atol=1e-14)
    blocks = arch.kernel(x, block_rows=2)
    torch.testing.assert_close(blocks.nngp, whole.nngp, rtol=1e-12, atol=1e-14)
    assert torch.equal(whole.nngp, whole.nngp.T)


def test_flatten_readout_drops_to_the_position_diagonal_after_attention():
    # the full covariance is carried up to the attention layer only; the kernel equals the one
    # computed with the full state carried through every layer
    x = sequences(n=4, t=5)
    arch = parse_spec("conv(8, 1) self_attention(8, 8, 8) relu conv(8, 3) relu flatten dense(1)")
    plan = arch._plan(tuple(x.shape[1:]))
    assert plan.full and plan.last_full == 1
    k = arch.kernel(x)
    state, previous = km.input_state(x, x, full=True), None
    for layer in arch.layers:             # the full state through every layer (flatten reduces it)
        previous = apply_layer(layer, state, previous)
    torch.testing.assert_close(k.nngp, state.cov, rtol=1e-12, atol=1e-14)


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["softmax", "relu", "abs"])
def test_square_root_scaling_without_closed_form_is_refused(mechanism):
    arch = parse_spec(f"self_attention(8, 8, 8, mechanism='{mechanism}', linear_scaling=False) flatten dense(1)")
    with pytest.raises(ValueError, match="no known closed form"):
        arch.kernel(sequences())
    assert arch.build((3, 6), seed=0)(sequences()).shape == (5, 1)     # the finite network still exists


@pytest.mark.parametrize("kwargs, match", [
    (dict(out_channels=0), "out_channels"), (dict(mechanism="sigmoid"), "mechanism"),
    (dict(key_std=-1.0), "key_std"), (dict(pos_emb="concat"), "pos_emb"),
    (dict(val_pos_emb=True), "val_pos_emb"), (dict(causal=1), "causal"), (dict(n_heads=2.0), "n_heads"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(out_channels=4, key_channels=4, value_channels=4) | kwargs
    with pytest.raises(ValueError, match=match):
        ntp.SelfAttention(**args)


def test_attention_on_vectors_and_causal_sqrt_are_refused():
    with pytest.raises(ValueError, match="needs sequences"):
        parse_spec("dense(4) self_attention(4, 4, 4) dense(1)").kernel(torch.randn(3, 5, dtype=F64))
    arch = parse_spec("self_attention(4, 4, 4, mechanism='identity', linear_scaling=False, causal=True) flatten dense(1)")
    with pytest.raises(ValueError, match="layer 0 .*causal=True is implemented for linear_scaling=True only"):
        arch.kernel(sequences())


# --- spec, from_torch, training -----------------------------------------------------------------

def test_spec_round_trips_and_with_width():
    arch = parse_spec("conv(8, 1) residual{self_attention(8, 16, 4, n_heads=2, key_std=1.5, bias_std=0.1, "
                      "mechanism='relu', pos_emb='sum', pos_emb_std=0.5, val_pos_emb=True, causal=True)} "
                      "global_avg_pool dense(1)")
    assert parse_spec(str(arch)) == arch
    wide = arch.with_width(32)
    att = wide.layers[1].branches[1][0]
    assert (att.out_channels, att.key_channels, att.value_channels, att.n_heads) == (32, 32, 32, 2)


def test_from_torch_reads_its_own_module_and_refuses_multihead_attention():
    arch = parse_spec("conv(8, 1) self_attention(8, 16, 4, n_heads=2, mechanism='abs') global_avg_pool dense(1)")
    net = arch.build((3, 6), seed=0)
    att = net[1]
    read = ntp.from_torch(nn.Sequential(att), (8, 6))
    assert list(read.layers) == [arch.layers[1]]
    with pytest.raises(ValueError, match="receives per-sample inputs of shape"):
        ntp.from_torch(nn.Sequential(att), (5, 6))
    with pytest.raises(ValueError, match="from_parameters=True does not estimate"):
        ntp.from_torch(nn.Sequential(att), (8, 6), from_parameters=True)
    with pytest.raises(ValueError, match=r"0: nn.MultiheadAttention .*ntp.SelfAttention"):
        ntp.from_torch(nn.Sequential(nn.MultiheadAttention(8, 2)), (8, 6))


def test_training_an_attention_network_lowers_the_loss():
    x = sequences(n=8, t=4, seed=7)
    y = torch.sin(x.sum((1, 2)))
    arch = parse_spec("conv(16, 1) residual{self_attention(16, 16, 16, n_heads=2)} global_avg_pool dense(1)")
    result = ntp.train(arch, x, y, steps=30, learning_rate=0.5, seed=0, record=[0, 30], track_kernel=False)
    assert float(result.loss[0, -1]) < 0.5 * float(result.loss[0, 0])
