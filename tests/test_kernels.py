"""Infinite-width NNGP/NTK: closed forms, independent integrals, Monte Carlo over finite networks."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import ntkprior as ntp
from ntkprior import kernels as km
from reference import monte_carlo_nngp, monte_carlo_ntk, relative_frobenius

F64 = torch.float64


def two_layer_bias_free_relu(width=512):
    """f(x) = sqrt(2/m) Σ v_j relu(w_j·x) on 2-D inputs (Bietti & Mairal 2019): σ_w² / d = 1."""
    return ntp.serial(ntp.Dense(width, weight_std=math.sqrt(2), bias_std=None), ntp.ReLU(),
                      ntp.Dense(1, weight_std=math.sqrt(2), bias_std=None))


def mlp(act, depth, width=512, out=1, parameterization="ntk", weight_std=1.5, bias_std=0.5):
    layers = []
    for _ in range(depth - 1):
        layers += [ntp.Dense(width, weight_std, bias_std, parameterization), act()]
    return ntp.serial(*layers, ntp.Dense(out, weight_std, bias_std, parameterization))


def test_bietti_mairal_two_layer_values():
    # MATH.md section 2: exact values to 10 digits.
    x = torch.tensor([[1.0, 0.0], [math.cos(1), math.sin(1)], [2.0, -1.0]], dtype=F64)
    k = two_layer_bias_free_relu().kernel(x)
    ntk = torch.tensor([[2, 1.0044860142, 3.7279754156], [1.0044860142, 2, 0.9631262795],
                        [3.7279754156, 0.9631262795, 10]], dtype=F64)
    nngp = torch.tensor([[1, 0.6361672738, 2.0231426509], [0.6361672738, 1, 0.8354034559],
                         [2.0231426509, 0.8354034559, 5]], dtype=F64)
    torch.testing.assert_close(k.ntk, ntk, rtol=0, atol=1e-9)
    torch.testing.assert_close(k.nngp, nngp, rtol=0, atol=1e-9)


def gaussian_expectation(f, g, k11, k12, k22):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]) by nested adaptive quadrature (scipy).

    u = l11 z1, v = l21 z1 + l22 z2; every integral is split at the kink (argument 0) so
    that piecewise-linear and step functions integrate to ~1e-10.
    """
    l11 = math.sqrt(k11)
    l21 = k12 / l11
    l22 = math.sqrt(k22 - l21 ** 2)

    def density(z):
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def split_quad(h, kink):
        kink = min(max(kink, -12.0), 12.0)
        return (integrate.quad(h, -12, kink, epsabs=1e-13, epsrel=1e-11)[0]
                + integrate.quad(h, kink, 12, epsabs=1e-13, epsrel=1e-11)[0])

    def inner(z1):
        return split_quad(lambda z2: g(l21 * z1 + l22 * z2) * density(z2), -l21 * z1 / l22)

    return split_quad(lambda z1: f(l11 * z1) * density(z1) * inner(z1), 0.0)


def step(a, b):
    return lambda x: b if x > 0 else a


@pytest.mark.slow
@pytest.mark.parametrize("layer, phi, dphi", [
    (ntp.ReLU(), lambda x: max(x, 0.0), step(0.0, 1.0)),
    (ntp.LeakyReLU(0.2), lambda x: x if x > 0 else 0.2 * x, step(0.2, 1.0)),
    (ntp.Abs(), abs, step(-1.0, 1.0)),
    (ntp.Erf(1.5, 0.7, 0.2), lambda x: 1.5 * math.erf(0.7 * x) + 0.2,
     lambda x: 1.5 * 0.7 * 2 / math.sqrt(math.pi) * math.exp(-(0.7 * x) ** 2)),
    (ntp.Tanh(), math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    (ntp.Gelu(), lambda x: x * 0.5 * (1 + math.erf(x / math.sqrt(2))),
     lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2))) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
])
def test_activation_maps_match_direct_integration(layer, phi, dphi):
    # scipy's adaptive integration, split at the kinks, is an independent reference accurate to ~1e-10.
    # Closed forms must match it to 1e-8; the default 60-node Gauss-Hermite rule (tanh, GELU) is
    # measured at ~4e-6 (E[φ²]) and ~1e-4 (E[φ'²]) at variance 2, so quadrature layers get 3e-4.
    tol = 3e-4 if isinstance(layer, ntp.Elementwise) else 1e-8
    k11, k12, k22 = 1.0, 0.3, 2.0
    t, tdot = layer.kernel_map().pair(torch.tensor([[k12]], dtype=F64), torch.tensor([[k11]], dtype=F64),
                                      torch.tensor([[k22]], dtype=F64))
    assert float(t) == pytest.approx(gaussian_expectation(phi, phi, k11, k12, k22), rel=tol)
    assert float(tdot) == pytest.approx(gaussian_expectation(dphi, dphi, k11, k12, k22), rel=tol)
    var, dvar = layer.kernel_map().diag(torch.tensor([k22], dtype=F64))
    assert float(var) == pytest.approx(gaussian_square(phi, k22), rel=tol)
    assert float(dvar) == pytest.approx(gaussian_square(dphi, k22), rel=tol)


def gaussian_square(f, k):
    """E[f(u)²] for u ~ N(0, k), by scipy's adaptive quadrature split at the kink."""
    integrand = lambda z: f(math.sqrt(k) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return integrate.quad(integrand, -12, 0)[0] + integrate.quad(integrand, 0, 12)[0]


def unit_scale_inputs(n=8, d=4, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def sphere_inputs(n=8, d=4, seed=1):
    """Inputs with ‖x‖²/d = 1, so the first pre-activation variance is σ_w² + σ_b²."""
    x = unit_scale_inputs(n, d, seed)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(d)


def test_erf_closed_form_matches_quadrature_at_degree_60():
    # MATH.md: with degree 60 the quadrature agrees with the closed form to ~1e-7 at unit variance
    # (measured 1e-11 here). Gauss-Hermite degrades as the variance grows: see the warning test.
    x = sphere_inputs()
    closed = mlp(ntp.Erf, 3, weight_std=1.0, bias_std=0.1).kernel(x)
    quad = mlp(lambda: ntp.Elementwise(torch.erf, degree=60), 3, weight_std=1.0, bias_std=0.1).kernel(x)
    assert relative_frobenius(quad.nngp, closed.nngp) < 1e-6
    assert relative_frobenius(quad.ntk, closed.ntk) < 1e-6


@pytest.mark.parametrize("closed, fn", [
    (lambda: ntp.LeakyReLU(0.1), lambda x: torch.nn.functional.leaky_relu(x, 0.1)),
    (ntp.Abs, torch.abs),
    (ntp.ReLU, torch.relu),
])
def test_piecewise_linear_closed_forms_match_quadrature(closed, fn):
    # Gauss-Hermite converges slowly on kinks: at degree 200 the measured error is ~5e-3 (NNGP) and
    # ~5e-2 (NTK: T' integrates a step function whose jump lies on grid points at the diagonal).
    # The tight check of these closed forms is against scipy above; this one catches a wrong
    # slope or sign, which is off by > 0.3.
    x = unit_scale_inputs()
    a = mlp(closed, 3, width=8, weight_std=1.0, bias_std=0.1).kernel(x)
    b = mlp(lambda: ntp.Elementwise(fn, degree=200), 3, width=8, weight_std=1.0, bias_std=0.1).kernel(x)
    assert relative_frobenius(b.nngp, a.nngp) < 1e-2
    assert relative_frobenius(b.ntk, a.ntk) < 0.1


def test_quadrature_warns_when_inaccurate():
    x = 5 * unit_scale_inputs()
    with pytest.warns(RuntimeWarning, match=r"degree=8 is accurate only to"):  # error ~0.3 here
        mlp(lambda: ntp.Tanh(degree=8), 2, weight_std=3.0).kernel(x)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("act", [ntp.ReLU, ntp.Erf, ntp.Tanh])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_kernels_match_monte_carlo_over_finite_networks(act, depth, parameterization):
    # Width 512, 16 networks x 2 output units for the NTK, 32 networks x 256 readouts for the
    # NNGP. The relative Frobenius fluctuation of one network's kernel grows like depth/sqrt(width)
    # (Hanin & Nica 2019); averaging 16-32 networks brings it to <= 0.051 measured (ReLU, depth 4).
    # 0.08 leaves room for other seeds; a wrong σ_b, σ_w or a missing factor is off by > 0.15.
    if depth == 1 and act is not ntp.ReLU:
        pytest.skip("depth 1 has no activation: one case suffices")
    x = unit_scale_inputs(n=6, d=5, seed=0)
    arch = mlp(act, depth, width=512, out=2, parameterization=parameterization)
    exact = arch.kernel(x)
    ntk = monte_carlo_ntk(arch, x, seeds=range(16), units=2)
    nngp = monte_carlo_nngp(mlp(act, depth, width=512, out=256, parameterization=parameterization), x,
                            seeds=range(32))
    tol = 1e-10 if depth == 1 else 0.08  # a linear network's NTK is exact at any width
    assert relative_frobenius(ntk, exact.ntk) < tol
    assert relative_frobenius(nngp, exact.nngp) < 0.08


@pytest.mark.parametrize("act", [ntp.ReLU, ntp.Erf, ntp.Tanh, ntp.Abs])
def test_kernel_is_symmetric_psd_with_exact_diagonal(act):
    x = sphere_inputs(n=40, d=3)
    x[5] = x[4]  # duplicate points stress the angle computation
    arch = mlp(act, 3, weight_std=1.2, bias_std=0.1)  # variances where tanh's quadrature is accurate
    k = arch.kernel(x)
    diag = arch.kernel(x, diagonal=True)
    for full, d in ((k.nngp, diag.nngp), (k.ntk, diag.ntk)):
        assert torch.equal(full, full.T) or relative_frobenius(full, full.T) < 1e-15
        evals = torch.linalg.eigvalsh(full)
        assert evals.min() > -1e-12 * evals.max()
        assert torch.equal(torch.diagonal(full), d)  # bit-exact: theta = 0 there, not round-off


def test_relu_diagonal_has_zero_angle_exactly():
    # one ReLU layer on the diagonal: T = K11/2 exactly, T' = 1/2 exactly
    x = unit_scale_inputs(n=50, d=7) * 1e3
    k = ntp.serial(ntp.Dense(3, bias_std=None), ntp.ReLU()).kernel(x)
    assert torch.equal(torch.diagonal(k.nngp), (x * x).sum(1) / 7 / 2)


def test_cross_kernel_equals_block_of_joint_kernel():
    x = unit_scale_inputs(n=30, d=3)
    arch = mlp(ntp.ReLU, 4)
    joint = arch.kernel(x)
    cross = arch.kernel(x[:12], x[12:])
    torch.testing.assert_close(cross.ntk, joint.ntk[:12, 12:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(cross.nngp, joint.nngp[:12, 12:], rtol=1e-12, atol=1e-14)


def test_blocking_does_not_change_the_result():
    x = unit_scale_inputs(n=37, d=3)
    arch = mlp(ntp.Erf, 3)
    whole = arch.kernel(x, block_rows=37)
    # the input Gram's matmul may sum in another order per block: round-off only (entries are O(1))
    torch.testing.assert_close(arch.kernel(x, block_rows=5).ntk, whole.ntk, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(arch.kernel(x, max_memory=6 * 8 * 37).ntk, whole.ntk, rtol=1e-13, atol=1e-14)


def test_zero_inputs_and_huge_weights_are_finite():
    zeros = torch.zeros(4, 3, dtype=F64)
    for act in (ntp.ReLU, ntp.Erf, ntp.Tanh):
        k = mlp(act, 3, bias_std=None).kernel(zeros)
        assert torch.isfinite(k.ntk).all() and torch.isfinite(k.nngp).all()
    k = mlp(ntp.ReLU, 4, weight_std=1e6).kernel(unit_scale_inputs())
    assert torch.isfinite(k.ntk).all() and (k.ntk.diagonal() > 0).all()
    k = mlp(ntp.Erf, 4, weight_std=1e6).kernel(unit_scale_inputs())
    assert torch.isfinite(k.ntk).all()


def test_standard_parameterization_grows_with_width():
    # Θ ← n_in K + σ_w² Θ + 1: the standard NTK scales with the hidden width (MATH.md section 1)
    x = unit_scale_inputs()
    narrow = mlp(ntp.ReLU, 2, width=100, parameterization="standard").kernel(x).ntk
    wide = mlp(ntp.ReLU, 2, width=1000, parameterization="standard").kernel(x).ntk
    assert 8 < float(wide.diagonal().mean() / narrow.diagonal().mean()) < 10.5
    same_nngp = mlp(ntp.ReLU, 2, parameterization="ntk").kernel(x).nngp
    torch.testing.assert_close(mlp(ntp.ReLU, 2, parameterization="standard").kernel(x).nngp, same_nngp)


def test_constant_input_feature_equals_first_layer_bias():
    # MATH.md: appending β to every input equals a first-layer bias σ_b = β when σ_w² / d = 1
    x = unit_scale_inputs(d=3)
    beta = 0.7
    xb = torch.cat([x, torch.full((x.shape[0], 1), beta, dtype=F64)], 1)
    with_feature = ntp.serial(ntp.Dense(9, weight_std=2.0, bias_std=None), ntp.ReLU(), ntp.Dense(1)).kernel(xb)
    with_bias = ntp.serial(ntp.Dense(9, weight_std=math.sqrt(3), bias_std=beta), ntp.ReLU(),
                           ntp.Dense(1)).kernel(x)
    torch.testing.assert_close(with_feature.nngp, with_bias.nngp, rtol=1e-12, atol=1e-12)


def test_bias_free_kernel_on_1d_inputs_has_rank_two():
    x = torch.linspace(-3, 3, 25, dtype=F64)[:, None]
    k = ntp.serial(ntp.Dense(9, bias_std=None), ntp.ReLU(), ntp.Dense(1, bias_std=None)).kernel(x)
    evals = torch.linalg.eigvalsh(k.nngp)
    assert (evals[:-2].abs() < 1e-10 * evals[-1]).all()


@pytest.mark.parametrize("x, match", [
    (np.array([[1.0, np.nan]]), "x1: contains 1 NaN"),
    (np.array([[1.0, np.inf]]), "x1: contains"),
    (np.ones(3), r"reshape\(-1, 1\)"),
    (np.ones((2, 3, 4)), "2-D array"),
    (np.ones((0, 3)), "x1: is empty"),
    ([["a", "b"]], "expected numbers"),
])
def test_bad_inputs_raise_clear_errors(x, match):
    with pytest.raises(ValueError, match=match):
        mlp(ntp.ReLU, 2).kernel(x)


def test_mismatched_features_and_bad_arguments():
    arch = mlp(ntp.ReLU, 2)
    with pytest.raises(ValueError, match="x2: has 4 features but x1 has 3"):
        arch.kernel(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="x2: diagonal=True"):
        arch.kernel(np.ones((2, 3)), np.ones((2, 3)), diagonal=True)
    with pytest.raises(ValueError, match="max_memory"):
        arch.kernel(np.ones((2, 3)), max_memory="lots")
    with pytest.raises(ValueError, match="max_memory: .* cannot hold even one row"):
        arch.kernel(np.ones((2, 3)), max_memory=10)


def test_kernel_state_dense_maps_are_in_place_arithmetic():
    # one Dense layer: Θ = K = σ_w² x·x'/d + σ_b² exactly (NTK parameterisation)
    x = unit_scale_inputs(d=3)
    state = km.input_state(x, x)
    km.dense_update(state, 4.0, 0.25, standard=False, has_bias=True)
    torch.testing.assert_close(state.cov, 4.0 * x @ x.T / 3 + 0.25, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(state.ntk, state.cov, rtol=0, atol=0)
