"""Convolutional, pooled, residual and normalised networks: exact kernels against Monte Carlo
over finite networks built by ``arch.build``, and exact identities (MATH.md section 6)."""

import math

import pytest
import torch

import ntkprior as ntp
from ntkprior.arch.spec import parse_spec
from reference import monte_carlo_nngp, monte_carlo_ntk, relative_frobenius

F64 = torch.float64


def signals(n=5, c=2, length=7, seed=0):
    return torch.randn(n, c, length, generator=torch.Generator().manual_seed(seed), dtype=F64)


def images(n=4, c=2, size=5, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64)


def with_readout(body: str, units: int) -> ntp.Serial:
    return parse_spec(f"{body} dense({units}, weight_std=1.3, bias_std=0.2)")


# Every layer type, 1-D and 2-D, both parameterisations. {p} is the parameterisation, {w} the
# channel count of the finite networks.
CASES = [
    ("signal", "conv({w}, 3, weight_std=1.4, bias_std=0.3{p}) relu conv({w}, 3, weight_std=1.4{p}) relu flatten"),
    ("signal", "conv({w}, 3, stride=2, padding='valid', bias_std=0.1{p}) erf conv({w}, 2{p}) avg_pool(2) flatten"),
    ("signal", "conv({w}, 3, padding='circular'{p}) gelu conv({w}, [3]{p}) global_avg_pool"),
    ("signal", "conv({w}, 3{p}) residual(alpha=0.7){{relu conv({w}, 3, weight_std=1.4{p})}} relu flatten"),
    ("signal", "conv({w}, 3{p}) layer_norm tanh conv({w}, 1{p}) layer_norm(affine=True) flatten"),
    ("signal", "conv({w}, 3{p}) relu concat{{conv({w}, 3{p}) | conv({w}, 1, bias_std=0.5{p})}} relu flatten"),
    ("image", "conv({w}, 3, weight_std=1.4, bias_std=0.2{p}) relu conv({w}, [3, 2], padding=1{p}) relu global_avg_pool"),
    ("image", "conv({w}, 2, padding='valid'{p}) relu avg_pool(2, stride=1) conv({w}, 3, stride=2{p}) relu flatten"),
]


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("kind, body", CASES)
def test_kernels_match_monte_carlo_over_finite_networks(kind, body, parameterization):
    # 256 channels: one network's kernel fluctuates by ~c/sqrt(256) with c ~ 1-2 (FACTS.md, as for
    # MLPs of depth 2-3); averaging 12 networks (NTK: 2 output units each, autograd Jacobians) and
    # 24 networks x 128 readout units (NNGP) brings the relative Frobenius error to <= 0.05
    # measured on these cases (standard parameterisation included); a wrong factor of 2 anywhere
    # (padding counted wrongly, a missing 1/|F|, a bias term, a wrong fan-in) is off by > 0.2.
    p = "" if parameterization == "ntk" else ", parameterization='standard'"
    x = signals() if kind == "signal" else images()
    spec = body.format(w=256, p=p)
    exact = with_readout(spec, 2).kernel(x)
    ntk = monte_carlo_ntk(with_readout(spec, 2), x, seeds=range(12), units=2)
    nngp = monte_carlo_nngp(with_readout(spec, 128), x, seeds=range(24))
    assert relative_frobenius(ntk, exact.ntk) < 0.1
    assert relative_frobenius(nngp, exact.nngp) < 0.1


def test_monte_carlo_error_shrinks_like_one_over_sqrt_channels():
    # One network's empirical NTK at 32 and 512 channels, 4 seeds each: the relative error should
    # fall by about sqrt(16) = 4 (measured 3.7); 2 leaves room for the seeds and fails if the
    # analytic kernel were wrong (then the error would level off at the bias instead of shrinking).
    x = signals(n=4)
    spec = "conv({w}, 3, weight_std=1.4, bias_std=0.2) relu conv({w}, 3, weight_std=1.4) relu flatten"

    def error(width):
        arch = with_readout(spec.format(w=width), 1)
        exact = arch.kernel(x).ntk
        return sum(relative_frobenius(monte_carlo_ntk(arch, x, seeds=[s], units=1), exact) for s in range(4)) / 4

    assert error(32) / error(512) > 2.0


# --- exact identities -------------------------------------------------------------------------------

def test_kernel_size_one_conv_on_length_one_signals_equals_dense():
    x = torch.randn(6, 5, dtype=F64)
    for p in ("ntk", "standard"):
        dense = ntp.serial(ntp.Dense(64, 1.3, 0.2, p), ntp.ReLU(), ntp.Dense(1, 1.1, 0.1, p)).kernel(x)
        conv = parse_spec(f"conv(64, 1, weight_std=1.3, bias_std=0.2, parameterization={p!r}) relu "
                          f"flatten dense(1, weight_std=1.1, bias_std=0.1, parameterization={p!r})").kernel(x[:, :, None])
        torch.testing.assert_close(conv.nngp, dense.nngp, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(conv.ntk, dense.ntk, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("body", ["conv(8, 3, padding='circular', bias_std=0.1) relu conv(8, 5, padding='circular') "
                                  "relu flatten",
                                  "conv(8, 3, padding='circular') erf conv(8, 3, padding='circular') global_avg_pool"])
def test_circular_padding_kernel_is_invariant_to_circular_shifts(body):
    x = signals(n=4, length=9)
    arch = with_readout(body, 1)
    k = arch.kernel(x)
    # both inputs shifted alike: the kernel is unchanged (every layer commutes with circular shifts)
    both = arch.kernel(torch.roll(x, 3, -1))
    torch.testing.assert_close(both.ntk, k.ntk, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(both.nngp, k.nngp, rtol=1e-12, atol=1e-14)
    if "global_avg_pool" in body:
        # a global mean readout: shifting only one input changes nothing either, nor the finite network
        one = arch.kernel(x, torch.roll(x, 2, -1))
        torch.testing.assert_close(one.nngp, k.nngp, rtol=1e-12, atol=1e-14)
        net = arch.build((2, 9))
        torch.testing.assert_close(net(torch.roll(x, 4, -1)), net(x))
    else:
        # a flatten readout compares aligned positions: a shift of one input does change the kernel
        assert not torch.allclose(arch.kernel(x, torch.roll(x, 2, -1)).nngp, k.nngp)


def test_residual_adds_the_block_kernel():
    # dense(σ_w=1, σ_b=0) as the block: K_out = K_in + K_in = 2 K_in (MATH.md section 6)
    x = torch.randn(5, 4, dtype=F64)
    base = ntp.serial(ntp.Dense(16, 1.2, 0.3), ntp.ReLU(), ntp.Dense(16))
    res = ntp.serial(base, ntp.residual(ntp.Dense(16)))
    torch.testing.assert_close(res.kernel(x).nngp, 2 * base.kernel(x).nngp, rtol=1e-14, atol=1e-15)
    # alpha scales the block's kernel by alpha²; the NTK adds the block's NTK
    scaled = ntp.serial(base, ntp.residual(ntp.ReLU(), ntp.Dense(16, 1.5), alpha=0.5)).kernel(x)
    block = ntp.serial(base, ntp.ReLU(), ntp.Dense(16, 1.5)).kernel(x)
    torch.testing.assert_close(scaled.nngp, base.kernel(x).nngp + 0.25 * block.nngp, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(scaled.ntk, base.kernel(x).ntk + 0.25 * block.ntk, rtol=1e-13, atol=1e-15)
    # residual(Identity()) is x + x = 2x, whose kernel is 4K, not the 2K of adding independent
    # branches (what neural-tangents' FanInSum returns): the kernel refuses it rather than guess
    with pytest.raises(ValueError, match="branches \\[0, 1\\] have no weighted layer"):
        ntp.serial(base, ntp.residual(ntp.Identity())).kernel(x)
    # the same network through FanOut / parallel / FanInSum
    fan = ntp.serial(base, ntp.FanOut(2), ntp.parallel(None, ntp.Dense(16)), ntp.FanInSum())
    assert fan == res and str(fan) == str(res)


def test_layer_norm_output_variances_are_exactly_one():
    x = signals(n=4) * 7.0
    arch = parse_spec("conv(8, 3, weight_std=2.0, bias_std=0.5) layer_norm flatten dense(1, weight_std=1.0)")
    k = arch.kernel(x)
    assert torch.equal(k.nngp.diag(), torch.ones(4, dtype=F64))
    vec = parse_spec("dense(8, weight_std=3.0) layer_norm dense(1)").kernel(torch.randn(5, 3, dtype=F64) * 10)
    assert torch.equal(vec.nngp.diag(), torch.ones(5, dtype=F64))


def test_gelu_closed_form_matches_high_degree_quadrature_and_stays_finite_at_huge_variance():
    from ntkprior import kernels as km
    gelu = km.GeluMap()
    quad = km.QuadratureMap(torch.nn.functional.gelu, ntp.Gelu().derivative, degree=200)
    k11 = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64)
    k22 = torch.tensor([1.5, 1.0, 0.7, 3.0], dtype=F64)
    k = torch.tensor([0.3, -0.9, 1.1, 3.0], dtype=F64)
    t, tdot = gelu.pair(k.clone(), k11, k22)
    qt, qtdot = quad.pair(k.clone(), k11, k22)
    torch.testing.assert_close(t, qt, rtol=1e-10, atol=1e-12)      # 200 nodes: exact to ~1e-13 here
    torch.testing.assert_close(tdot, qtdot, rtol=1e-10, atol=1e-12)
    d, ddot = gelu.diag(k11)
    torch.testing.assert_close(d, quad.diag(k11)[0], rtol=1e-10, atol=1e-12)
    # variance 1e6: GELU ≈ ReLU there (x·Φ(x) -> max(x, 0) on the scale sqrt(1e6)): E[φ²] -> v/2, E[φ'²] -> 1/2
    v = torch.tensor([1e6], dtype=F64)
    d, ddot = gelu.diag(v)
    assert torch.isfinite(d).all() and float(d / (v / 2)) == pytest.approx(1.0, abs=2e-3)
    assert float(ddot) == pytest.approx(0.5, abs=2e-3)
    relu_t, relu_tdot = km.PiecewiseLinearMap(0.0, 1.0).pair(torch.tensor([3e5], dtype=F64), v, v)
    t, tdot = gelu.pair(torch.tensor([3e5], dtype=F64), v, v)
    assert float(t / relu_t) == pytest.approx(1.0, abs=2e-3) and float(tdot / relu_tdot) == pytest.approx(1.0, abs=2e-3)


# --- properties -----------------------------------------------------------------------------------

PROPERTY_SPECS = [
    "conv(8, 3, weight_std=1.4, bias_std=0.1) relu conv(8, 3) relu flatten dense(1)",
    "conv(8, 3) relu conv(8, 3, stride=2) avg_pool(2) residual{relu conv(8, 3)} layer_norm relu flatten dense(1)",
    "conv(8, [3, 3]) gelu conv(8, 3, padding='circular') relu global_avg_pool dense(1)",
]


@pytest.mark.parametrize("spec", PROPERTY_SPECS)
def test_spatial_kernels_are_symmetric_psd_with_consistent_blocks_and_diagonal(spec):
    x = images(n=7, size=6) if "[3, 3]" in spec else signals(n=7, length=10)
    x[3] = x[2]   # duplicate points stress the angle computation
    arch = parse_spec(spec)
    assert parse_spec(str(arch)) == arch
    k = arch.kernel(x)
    diag = arch.kernel(x, diagonal=True)
    cross = arch.kernel(x[:3], x[3:])
    blocks = arch.kernel(x, block_rows=2)
    for name in ("nngp", "ntk"):
        full = k[name]
        assert torch.equal(full, full.T)
        assert torch.equal(full.diag(), diag[name])
        assert float(torch.linalg.eigvalsh(full).min()) > -1e-12 * float(full.diag().max())
        # off the exact diagonal, the angle between equal inputs comes from K11·K22 − K² ≈ 0 and
        # carries ~sqrt(ε) ≈ 1e-8 relative round-off (FACTS.md); the blocks are computed alike
        torch.testing.assert_close(cross[name], full[:3, 3:], rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(blocks[name], full, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(full[2], full[3], rtol=1e-7, atol=1e-12)


def test_finite_at_zero_inputs_and_huge_weights():
    x = signals(n=3)
    x[0] = 0.0
    arch = parse_spec("conv(8, 3, weight_std=1e4) relu conv(8, 3, weight_std=1e4) avg_pool(2) flatten dense(1)")
    k = arch.kernel(x)
    assert torch.isfinite(k.nngp).all() and torch.isfinite(k.ntk).all()
    assert float(k.nngp[0, 0]) == 0.0
    assert torch.isfinite(parse_spec("conv(8, 3) layer_norm relu flatten dense(1)").kernel(x).ntk).all()


def test_position_diagonal_state_is_used_without_pooling():
    # Flatten readouts never need off-diagonal positions: the plan carries only the diagonal
    arch = parse_spec("conv(8, 3) relu conv(8, 3) relu flatten dense(1)")
    assert not arch._plan((2, 7)).full
    assert arch._plan((2, 7)).per_pair == 7
    pooled = parse_spec("conv(8, 3) relu avg_pool(2) conv(8, 3) relu flatten dense(1)")
    plan = pooled._plan((2, 8))
    assert plan.full and plan.last_full == 2 and plan.per_pair == 64


def test_finite_network_shapes_follow_torch_conventions():
    arch = parse_spec("conv(4, 3, stride=2) relu conv(6, 2, padding='valid') avg_pool(2) flatten dense(3)")
    x = signals(n=2, length=11)
    net = arch.build((2, 11))
    assert net(x).shape == (2, 3)
    assert arch.output_shape((2, 11)) == (3,)
    # SAME with stride 2 gives ceil(11/2) = 6 positions; VALID k=2 -> 5; pool 2 -> 2; flatten 6·2
    assert parse_spec("conv(4, 3, stride=2) relu conv(6, 2, padding='valid') avg_pool(2) flatten").output_shape(
        (2, 11)) == (12,)


# --- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, x, match", [
    ("conv(8, 3) relu flatten dense(1)", torch.randn(3, 5, dtype=F64), r"layer 0 \(conv\(8, 3\)\): needs signals"),
    ("conv(8, 3) relu dense(1)", signals(), r"layer 2 \(dense\(1\)\): its input is a signal/image .* put flatten"),
    ("conv(8, 3) avg_pool(9) flatten dense(1)", signals(), r"layer 1 \(avg_pool\(9\)\): the window of 9 is larger"),
    ("conv(8, 3, stride=9) flatten dense(1)", signals(), r"layer 0 .* the stride 9 does not fit"),
    ("conv(8, [3, 3]) flatten dense(1)", signals(), r"kernel_size must be an integer >= 1 or 1 of them"),
    ("conv(8, 3) residual{conv(4, 3)} flatten dense(1)", signals(), r"layer 1 .* shapes differ at the sum"),
    ("conv(8, 3) sum{relu | relu} flatten dense(1)", signals(), r"layer 1 .* branches \[0, 1\] have no weighted"),
    ("relu conv(8, 3) flatten dense(1)", signals(), r"layer 0 \(relu\): .* raw inputs"),
    ("conv(8, 3) relu tanh flatten dense(1)", signals(), r"layer 2 \(tanh\): .*after relu"),
    ("conv(8, 3) relu layer_norm flatten dense(1)", signals(), r"layer 2 \(layer_norm\): .* channel mean"),
    ("conv(8, 3) layer_norm(affine=True) relu flatten dense(1)", signals(), r"layer 2 \(relu\): follows layer_norm"),
    ("flatten identity", signals(), r"has no dense or conv layer"),
    ("conv(8, 3) flatten flatten dense(1)", signals(), r"layer 2 \(flatten\): .* already vectors"),
])
def test_clear_errors_name_the_layer_and_the_fix(spec, x, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec).kernel(x)


def test_relu_after_relu_is_computed_exactly():
    x = signals(n=4)
    once = parse_spec("conv(8, 3) relu flatten dense(1)").kernel(x)
    twice = parse_spec("conv(8, 3) relu relu flatten dense(1)").kernel(x)
    assert torch.equal(once.ntk, twice.ntk) and torch.equal(once.nngp, twice.nngp)


def test_size_arguments_are_validated_and_huge_outputs_refused_before_allocating():
    arch = parse_spec("dense(8) relu dense(1)")
    x = torch.randn(4, 3, dtype=F64)
    for bad in (-2, 2.5, 0, True):
        with pytest.raises(ValueError, match="block_rows: must be a positive integer"):
            arch.kernel(x, block_rows=bad)
    big = torch.zeros(1, 10, dtype=F64).expand(40000 * 20, 10)   # 800 000 rows: 10 TB of output
    with pytest.raises(ValueError, match=r"need .* GB .* diagonal=True .* ntkprior.distributed"):
        arch.kernel(big)


def test_branch_markers_must_come_in_order():
    with pytest.raises(ValueError, match=r"FanOut\(2\) must be followed by parallel"):
        ntp.serial(ntp.Dense(4), ntp.FanOut(2), ntp.Dense(3))
    with pytest.raises(ValueError, match="must follow FanOut"):
        ntp.serial(ntp.Dense(4), ntp.FanInSum())


# --- neural-tangents 0.6.5 reference values (computed once with its jitted kernel_fn, float64) ------

X1 = [[[0.126, -0.132, 0.64, 0.105, -0.536, 0.362, 1.304], [0.947, -0.704, -1.265, -0.623, 0.041, -2.325, -0.219]],
      [[-1.246, -0.732, -0.544, -0.316, 0.412, 1.043, -0.129], [1.366, -0.665, 0.352, 0.903, 0.094, -0.743, -0.922]],
      [[-0.458, 0.22, -1.01, -0.209, -0.159, 0.541, 0.215], [0.355, -0.654, -0.13, 0.784, 1.493, -1.259, 1.514]]]
X2 = [[[[1.346, 0.781, 0.264, -0.314], [1.458, 1.96, 1.802, 1.315], [0.357, -1.208, -0.004, 0.656],
        [-1.288, 0.395, 0.43, 0.696]],
       [[-1.184, -0.662, -0.436, -1.17], [1.739, -0.496, 0.329, -0.259], [1.583, 1.32, 0.633, -2.204],
        [0.052, 0.684, 1.004, -0.618]]],
      [[[1.822, -1.32, -0.662, 0.935], [0.049, 2.002, 0.189, -0.633], [-0.378, -1.091, -1.278, 0.63],
        [0.581, 1.295, -0.755, 1.689]],
       [[-0.287, 1.574, -0.433, -0.735], [0.25, 1.031, 0.161, -0.586], [-1.341, -1.402, 0.503, 0.99],
        [-0.164, -1.074, 0.873, -1.28]]],
      [[[-0.713, 0.621, -2.25, 0.386], [-0.582, 0.109, -0.076, 0.202], [0.694, -0.758, 1.421, 0.726],
        [0.844, 1.165, 0.788, 0.844]],
       [[0.076, -1.427, -0.135, -0.77], [-1.423, 0.258, -0.569, -1.03], [-1.043, 0.268, 0.359, 1.322],
        [-0.014, 1.042, 1.402, 1.15]]]]
X3 = [[-2.365, 1.229, 0.34, 0.424], [0.371, 0.383, 0.319, -0.359], [-1.902, -0.109, -0.804, 1.08]]
NT_CASES = [
    # stax: Conv(8, (3,), CIRCULAR, 1.3, 0.2) Relu Conv(8, (3,), strides 2, VALID, 1.2, 0.1) Erf
    #       AvgPool((2,), strides 1, VALID) Flatten Dense(1, 1.1, 0.3)
    ("conv(8, 3, padding='circular', weight_std=1.3, bias_std=0.2) relu "
     "conv(8, 3, stride=2, padding='valid', weight_std=1.2, bias_std=0.1) erf avg_pool(2, stride=1) flatten "
     "dense(1, weight_std=1.1, bias_std=0.3)", X1,
     [[0.44933692234924, 0.2378675282531, 0.25286363779766], [0.2378675282531, 0.37082921208947, 0.27342270196045],
      [0.25286363779766, 0.27342270196045, 0.40584533876953]],
     [[1.21174331922302, 0.39926905736846, 0.44131449279689], [0.39926905736846, 0.94053905917723, 0.52850643427023],
      [0.44131449279689, 0.52850643427023, 1.05465600549335]]),
    # stax: Conv(8, (3, 3), SAME, 1.4, 0.1) Relu Conv(8, (2, 3), SAME, 1.4) Relu GlobalAvgPool Dense(1, 1.2)
    ("conv(8, 3, weight_std=1.4, bias_std=0.1) relu conv(8, [2, 3], weight_std=1.4) relu global_avg_pool "
     "dense(1, weight_std=1.2)", X2,
     [[0.42283531626002, 0.3600567897647, 0.32669832469967], [0.3600567897647, 0.35709968873434, 0.30702722993559],
      [0.32669832469967, 0.30702722993559, 0.29573611305372]],
     [[0.6984042267687, 0.48701832308532, 0.45590041625349], [0.48701832308532, 0.53943605910361, 0.41865273398458],
      [0.45590041625349, 0.41865273398458, 0.47451488966546]]),
    # stax: Dense(8, 1.5, 0.2) LayerNorm Gelu Dense(8, 1.3, 0.1) Gelu Dense(1, 1.0, 0.0)
    ("dense(8, weight_std=1.5, bias_std=0.2) layer_norm gelu dense(8, weight_std=1.3, bias_std=0.1) gelu dense(1)", X3,
     [[0.29497637829679, 0.06770610893957, 0.21425025448911], [0.06770610893957, 0.29497637829571, 0.02927624280394],
      [0.21425025448911, 0.02927624280394, 0.29497637829676]],
     [[0.94696570058092, 0.0693742268254, 0.59243977505112], [0.0693742268254, 0.94696570057744, -0.02090015207655],
      [0.59243977505112, -0.02090015207655, 0.94696570058082]]),
]


@pytest.mark.parametrize("spec, x, nngp, ntk", NT_CASES)
def test_kernels_equal_neural_tangents_reference_values(spec, x, nngp, ntk):
    # printed to 14 digits; neural-tangents' own round-off is ~1e-12 (its GELU diagonal entries of
    # equal inputs differ by 1e-12), so 1e-10 relative
    k = parse_spec(spec).kernel(torch.tensor(x, dtype=F64))
    torch.testing.assert_close(k.nngp, torch.tensor(nngp, dtype=F64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(k.ntk, torch.tensor(ntk, dtype=F64), rtol=1e-10, atol=1e-12)


# --- the spec grammar for the new layers ----------------------------------------------------------

@pytest.mark.parametrize("spec", [
    "conv(8, [3, 2], stride=[1, 2], padding=1, weight_std=1.5, bias_std=None, parameterization='standard') relu "
    "avg_pool(2, stride=1, padding='same') flatten dense(1)",
    "dense(8) residual(alpha=0.5){relu dense(8) relu dense(8)} sum(scales=[1.0, 2.0]){ | dense(8)} "
    "concat{dense(4) | dense(2)} layer_norm(affine=True) dense(1)",
    "conv(4, 3) sum{relu conv(4, 1) | conv(4, 3, padding='circular')} global_avg_pool dense(1)",
])
def test_new_layers_print_as_specs_that_parse_back(spec):
    arch = parse_spec(spec)
    assert parse_spec(str(arch)) == arch
    assert parse_spec(str(arch)).layers == arch.layers


@pytest.mark.parametrize("spec, match", [
    ("dense(8) residual{relu dense(8)", r"'\{' is never closed"),
    ("dense(8) | dense(1)", r"'\|' separates branches only inside"),
    ("dense(8) } dense(1)", r"'\}' without a matching"),
    ("dense(8) residual{relu dense(8) | dense(8)} dense(1)", r"residual\{\.\.\.\} holds the layers of one block"),
    ("dense(8) residual(beta=2){dense(8)} dense(1)", r"bad arguments for residual"),
    ("dense(8) residual dense(1)", r"unknown layer 'residual' \(write residual\{\.\.\.\} for a branch\)"),
    ("conv(8, 3, padding='reflect') dense(1)", r"padding must be one of"),
])
def test_branch_grammar_errors_point_at_the_token(spec, match):
    with pytest.raises(ntp.SpecError, match=match):
        parse_spec(spec)


@pytest.mark.parametrize("shape, k, s, pads", [((7,), (3,), (2,), ((1, 1),)), ((6, 5), (2, 3), (2, 1), ((0, 1), (1, 1))),
                                             ((5, 6), (3, 2), (3, 2), ((0, 0), (2, 1)))])
def test_tied_windows_skipping_padding_equal_padded_shifted_slices(shape, k, s, pads):
    # the two implementations of the full-covariance convolution window (spatial.window_mean)
    from ntkprior.kernels import spatial
    p = math.prod(shape)
    t = torch.randn(2, 3, p, p, dtype=F64)
    fast, out = spatial._tied_window_zeros(t, shape, 2, k, s, pads)
    x = t.reshape((2, 3) + shape * 2)
    for d, (kd, sd, (lo, hi)) in enumerate(zip(k, s, pads)):
        x = spatial._tied_window_axis(x, [2 + d, 2 + len(shape) + d], kd, sd, lo, hi, False)
    torch.testing.assert_close(fast, x.reshape(2, 3, math.prod(out), math.prod(out)), rtol=1e-14, atol=1e-15)
