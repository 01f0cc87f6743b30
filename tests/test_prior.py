"""The prior, candidate ranking and posteriors against scipy, scikit-learn and MATH.md's identities."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.stats
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, DotProduct

import ntkprior.prior.linalg
from ntkprior.prior.linalg import IllConditionedWarning, JitterWarning, SymmetricPSD
from ntkprior.prior.prior import KernelPrior, LearningRateWarning, predict, rank_candidates
from ntkprior.prior.sources import KernelBlocks

SK_KERNEL = RBF(length_scale=1.3) + DotProduct(sigma_0=0.5)


def sk_kernel(a, b):
    return SK_KERNEL(np.asarray(a), np.asarray(b))


def two_kernels(a, b):
    """A stand-in for an architecture's pair of kernels: NNGP-like and NTK-like."""
    class Pair:
        nngp = RBF(0.9)(np.asarray(a), np.asarray(b))
        ntk = sk_kernel(a, b)
    return Pair()


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(15, 3))
    xs = rng.normal(size=(6, 3))
    y = np.sin(x[:, 0]) + 0.3 * x[:, 1]
    y2 = np.stack([y, np.cos(x[:, 2])], 1)
    return x, xs, y, y2


def mvn_logpdf(y, cov):
    y = np.asarray(y).reshape(len(cov), -1)
    return sum(scipy.stats.multivariate_normal(np.zeros(len(cov)), cov).logpdf(c) for c in y.T)


def is_psd(c, rtol=1e-10):
    c = np.asarray(c)
    return np.allclose(c, c.T, rtol=0, atol=0) and np.linalg.eigvalsh(c).min() >= -rtol * np.abs(c).max()


# ============================================================================ the prior
def test_log_prob_matches_scipy_multivariate_normal(data):
    x, _, y, y2 = data
    h = sk_kernel(x, x)
    prior = KernelPrior(h)
    # float64 Cholesky vs scipy's eigendecomposition-based logpdf, condition number ~1e3
    assert prior.log_prob(y) == pytest.approx(mvn_logpdf(y, h), rel=1e-10)
    assert prior.log_prob(y2) == pytest.approx(mvn_logpdf(y2, h), rel=1e-10)   # sum over outputs
    ridged = KernelPrior(h, diag_reg=0.1)
    ref = mvn_logpdf(y, h + 0.1 * np.mean(np.diag(h)) * np.eye(15))
    assert ridged.log_prob(y) == pytest.approx(ref, rel=1e-10)


def test_log_prob_and_posterior_match_sklearn_gaussian_process(data):
    x, xs, y, y2 = data
    alpha = 1e-6
    for labels in (y, y2):
        gpr = GaussianProcessRegressor(SK_KERNEL, alpha=alpha, optimizer=None).fit(x, labels)
        prior = KernelPrior(sk_kernel(x, x), diag_reg=alpha, reg="absolute")
        assert prior.log_prob(labels) == pytest.approx(gpr.log_marginal_likelihood_value_, rel=1e-9)
        mean, cov = gpr.predict(xs, return_cov=True)
        post = predict(sk_kernel, x, labels, xs, kind="nngp", diag_reg=alpha, reg="absolute")
        # both solve with a Cholesky factor of the same matrix: agreement to round-off
        np.testing.assert_allclose(post.mean.numpy(), mean, rtol=1e-9, atol=1e-12)
        _, std = gpr.predict(xs, return_std=True)
        if labels.ndim == 2:               # sklearn repeats the shared covariance per output
            cov, std = cov[..., 1], std[:, 1]
        np.testing.assert_allclose(post.cov.numpy(), cov, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.std.numpy(), std, rtol=1e-8)


def test_modes_contributions_sum_to_the_quadratic_form(data):
    x, _, y, y2 = data
    h = sk_kernel(x, x)
    prior = KernelPrior(h)
    table = prior.modes(y)
    q = y @ np.linalg.solve(h, y)
    assert table.total == pytest.approx(q, rel=1e-9) == pytest.approx(prior.rkhs_norm(y), rel=1e-9)
    assert prior.rkhs_norm(y, squared=False) == pytest.approx(math.sqrt(q), rel=1e-9)
    assert torch.all(table.eigenvalue[:-1] >= table.eigenvalue[1:])
    assert float(table.cumulative_share[-1]) == pytest.approx(1.0)
    w, v = np.linalg.eigh(h)
    np.testing.assert_allclose(table.eigenvalue.numpy(), w[::-1], rtol=1e-10)
    np.testing.assert_allclose(table.projection.abs().numpy(), np.abs(v[:, ::-1].T @ y), rtol=1e-8)
    assert table.projection.shape == (15,) and prior.modes(y2).projection.shape == (15, 2)
    assert prior.modes(y2).total == pytest.approx(np.trace(y2.T @ np.linalg.solve(h, y2)), rel=1e-9)
    text = str(table)
    assert "contribution" in text and "cumulative" in text and "more modes" in text


# ============================================================================ candidates
def joint_blocks(x, xs):
    return sk_kernel(x, x), sk_kernel(xs, x), sk_kernel(xs, xs)


def test_joint_is_marginal_plus_conditional_and_matches_scipy(data):
    x, xs, y, _ = data
    rng = np.random.default_rng(1)
    cands = {"a": rng.normal(size=6), "b": np.zeros(6), "c": rng.normal(size=6) * 3}
    ranking = rank_candidates(sk_kernel, x, y, xs, cands, kernel="ntk")
    h, hsx, hss = joint_blocks(x, xs)
    full = np.block([[h, hsx.T], [hsx, hss]])
    mu = hsx @ np.linalg.solve(h, y)
    sigma = hss - hsx @ np.linalg.solve(h, hsx.T)
    assert ranking.marginal_log_prob == pytest.approx(mvn_logpdf(y, h), rel=1e-10)
    for row in ranking.rows:
        ys = cands[row.name]
        joint = mvn_logpdf(np.concatenate([y, ys]), full)
        conditional = scipy.stats.multivariate_normal(mu, sigma).logpdf(ys)
        # conditioning amplifies round-off by cond(H) ~ 1e3: relative agreement 1e-8
        assert row.joint_log_prob == pytest.approx(joint, rel=1e-8)
        assert row.conditional_log_prob == pytest.approx(conditional, rel=1e-8)
        assert row.joint_log_prob == pytest.approx(ranking.marginal_log_prob + row.conditional_log_prob)
        np.testing.assert_allclose(row.residuals[:, 0].numpy(), (ys - mu) / np.sqrt(np.diag(sigma)),
                                   rtol=1e-8)
    order = [r.conditional_log_prob for r in ranking.rows]
    assert order == sorted(order, reverse=True) and ranking.best.delta == 0


def test_argmax_of_the_joint_density_is_the_kernel_regression_mean(data):
    x, xs, y, _ = data
    h, hsx, hss = joint_blocks(x, xs)
    full = np.block([[h, hsx.T], [hsx, hss]])
    dist = scipy.stats.multivariate_normal(np.zeros(21), full)
    best = scipy.optimize.minimize(lambda ys: -dist.logpdf(np.concatenate([y, ys])), np.zeros(6),
                                   method="BFGS", options={"gtol": 1e-10})
    ranking = rank_candidates(sk_kernel, x, y, xs, [best.x, best.x + 0.1], kernel="ntk")
    regression = predict(sk_kernel, x, y, xs, kind="ntk")
    # BFGS optimum to ~1e-6 (gradient tolerance 1e-10 on a well-conditioned quadratic)
    np.testing.assert_allclose(regression.mean.numpy(), best.x, atol=1e-5)
    np.testing.assert_allclose(ranking.mean[:, 0].numpy(), regression.mean.numpy(), rtol=1e-12)
    # at the mean the conditional density reaches its peak height -1/2 log det(2 pi Sigma*)
    assert ranking.best.name == "candidate 0"
    assert ranking.best.conditional_log_prob == pytest.approx(ranking.peak_log_prob, abs=1e-8)


def test_mode_differences_add_up_to_the_log_probability_gap(data):
    x, xs, y, _ = data
    cands = np.stack([np.zeros(6), np.linspace(-1, 1, 6)])
    ranking = rank_candidates(sk_kernel, x, y, xs, cands, kernel="nngp", top_modes=21)
    worse = ranking.rows[1]
    assert sum(nats for _, _, nats in worse.mode_differences) == pytest.approx(worse.delta, rel=1e-6)
    nats = [n for _, _, n in worse.mode_differences]
    assert nats == sorted(nats) and ranking.best.mode_differences == ()
    lams = ranking.mode_eigenvalues.numpy()
    assert all(lams[mode - 1] == lam for mode, lam, _ in worse.mode_differences)      # modes numbered from 1


def test_ranking_text_cannot_be_misread_as_comparable_joint_densities(data):
    x, xs, y, _ = data
    ranking = rank_candidates(sk_kernel, x, y, xs, {"coin": np.ones(6), "place": np.zeros(6)})
    text = str(ranking)
    header = text.splitlines()[1]
    assert "log p(y*|Y)" in header and "joint" not in header
    assert "NOT comparable between different test inputs" in text
    assert f"{ranking.peak_log_prob:.4g}" in text
    assert ranking["coin"].name == "coin"
    with pytest.raises(KeyError, match="no candidate named"):
        ranking["fish"]


def test_multi_output_candidates(data):
    x, xs, _, y2 = data
    cands = np.random.default_rng(2).normal(size=(3, 6, 2))
    ranking = rank_candidates(sk_kernel, x, y2, xs, cands, top_modes=0)
    single = [rank_candidates(sk_kernel, x, y2[:, j], xs, cands[:, :, j], top_modes=0) for j in (0, 1)]
    for row in ranking.rows:
        parts = [s[row.name].conditional_log_prob for s in single]
        assert row.conditional_log_prob == pytest.approx(sum(parts), rel=1e-10)
    assert ranking.mode_eigenvalues is None


# ============================================================================ posteriors
def expm_reference(theta, k, theta_sx, k_sx, k_ss, y, rate):
    """The GD-ensemble row of MATH.md section 4, transcribed with scipy.linalg.expm."""
    a = theta_sx @ np.linalg.solve(theta, np.eye(len(theta)) - scipy.linalg.expm(-rate * theta))
    return a @ y, k_ss + a @ k @ a.T - (a @ k_sx.T + k_sx @ a.T)


def test_gd_ensemble_matches_the_formula_with_expm_and_converges(data):
    x, xs, y, y2 = data
    pair = two_kernels
    theta, ksx, kss = sk_kernel(x, x), RBF(0.9)(xs, x), RBF(0.9)(xs)
    times = np.array([0.0, 3.0, 40.0])
    for labels in (y, y2):
        m = labels.size
        post = predict(pair, x, labels, xs, kind="gd-ensemble", t=times, learning_rate=0.5)
        assert post.mean.shape == (3,) + labels.shape[:0] + ((6,) if labels.ndim == 1 else (6, 2))
        for i, t in enumerate(times):
            mean, cov = expm_reference(theta, RBF(0.9)(x), sk_kernel(xs, x), ksx, kss, labels,
                                       0.5 * t / m)
            # eigendecomposition vs Pade expm, condition number ~1e3: 1e-9
            np.testing.assert_allclose(post.mean[i].numpy(), mean, atol=1e-9)
            np.testing.assert_allclose(post.cov[i].numpy(), cov, atol=1e-9)
    # t = 0: the prior of the random networks (mean 0, cov K**)
    np.testing.assert_allclose(post.cov[0].numpy(), kss, atol=1e-12)
    assert float(post.mean[0].abs().max()) == 0
    # very large t equals t = infinity (Cholesky path); e^{-rate lambda_min} < 1e-30 here
    late = predict(pair, x, y, xs, kind="gd-ensemble", t=1e9)
    done = predict(pair, x, y, xs, kind="gd-ensemble")
    np.testing.assert_allclose(late.mean.numpy(), done.mean.numpy(), atol=1e-10)
    np.testing.assert_allclose(late.cov.numpy(), done.cov.numpy(), atol=1e-10)
    assert late.mean.shape == (6,) and done.t is None


def test_time_convention_is_mean_over_all_outputs(data):
    # loss 1/2 mean over m = n k outputs: two columns at time t move like one column at time t / 2
    x, xs, _, y2 = data
    both = predict(sk_kernel, x, y2, xs, kind="ntk", t=10.0)
    one = predict(sk_kernel, x, y2[:, 0], xs, kind="ntk", t=5.0)
    np.testing.assert_allclose(both.mean[:, 0].numpy(), one.mean.numpy(), rtol=1e-12)
    assert both.cov is None and both.std is None


def test_readout_matches_formula_and_converges_to_the_nngp_posterior(data):
    x, xs, y, _ = data
    k, ksx, kss = sk_kernel(x, x), sk_kernel(xs, x), sk_kernel(xs, xs)
    rate = 0.5 * 7.0 / 15
    post = predict(sk_kernel, x, y, xs, kind="readout", t=7.0, learning_rate=0.5)
    inv = np.linalg.inv(k)
    mean = ksx @ inv @ (np.eye(15) - scipy.linalg.expm(-rate * k)) @ y
    cov = kss - ksx @ inv @ (np.eye(15) - scipy.linalg.expm(-2 * rate * k)) @ ksx.T
    np.testing.assert_allclose(post.mean.numpy(), mean, atol=1e-9)
    np.testing.assert_allclose(post.cov.numpy(), cov, atol=1e-9)
    done = predict(sk_kernel, x, y, xs, kind="readout", t=[math.inf])
    gp = predict(sk_kernel, x, y, xs, kind="nngp")
    np.testing.assert_allclose(done.mean[0].numpy(), gp.mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(done.cov[0].numpy(), gp.cov.numpy(), atol=1e-12)


@pytest.mark.parametrize("kind", ["nngp", "ntkgp", "ntk", "gd-ensemble", "readout"])
def test_train_set_mean_at_convergence_is_y_and_covariance_vanishes(data, kind):
    x, _, y, y2 = data
    post = predict(two_kernels, x, y2, None, kind=kind)
    assert post.on_train
    np.testing.assert_allclose(post.mean.numpy(), y2, atol=1e-12)
    if kind != "ntk":
        assert float(post.cov.abs().max()) < 1e-12
    # with a ridge: kernel ridge regression on the training inputs
    h = RBF(0.9)(x) if kind in ("nngp", "readout") else sk_kernel(x, x)
    ridged = predict(two_kernels, x, y, None, kind=kind, diag_reg=0.01)
    r = 0.01 * np.mean(np.diag(h))
    np.testing.assert_allclose(ridged.mean.numpy(), h @ np.linalg.solve(h + r * np.eye(15), y),
                               atol=1e-10)


def test_train_set_at_finite_time_follows_the_residual_decay(data):
    x, _, y, _ = data
    theta, k = sk_kernel(x, x), RBF(0.9)(x)
    post = predict(two_kernels, x, y, None, kind="gd-ensemble", t=4.0)
    decay = scipy.linalg.expm(-4.0 / 15 * theta)
    np.testing.assert_allclose(post.mean.numpy(), y - decay @ y, atol=1e-10)
    np.testing.assert_allclose(post.cov.numpy(), decay @ k @ decay, atol=1e-10)


@pytest.mark.parametrize("kind", ["nngp", "ntkgp", "gd-ensemble", "readout"])
def test_covariances_symmetric_psd_and_variances_match(data, kind):
    x, xs, y, _ = data
    t = None if kind in ("nngp", "ntkgp") else [0.0, 2.0, 50.0]
    post = predict(two_kernels, x, y, xs, kind=kind, t=t)
    covs = post.cov[None] if post.cov.ndim == 2 else post.cov
    for c in covs:
        assert is_psd(c)
    diag_only = predict(two_kernels, x, y, xs, kind=kind, t=t, cov="diagonal")
    assert diag_only.cov is None
    np.testing.assert_allclose(diag_only.var.numpy(), post.var.numpy(), atol=1e-12)
    mean_only = predict(two_kernels, x, y, xs, kind=kind, t=t, cov=None)
    assert mean_only.var is None and mean_only.std is None
    np.testing.assert_allclose(mean_only.mean.numpy(), post.mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(post.std.numpy() ** 2, post.var.clamp(min=0).numpy())


def test_cached_factorisation_is_reused_across_prior_and_predict(data, monkeypatch):
    x, xs, y, _ = data
    prior = KernelPrior(sk_kernel(x, x))
    prior.log_prob(y), prior.modes(y)
    reference = predict(sk_kernel, x, y, xs, kind="ntkgp")
    calls = []
    original = ntkprior.prior.linalg._cholesky
    monkeypatch.setattr(ntkprior.prior.linalg, "_cholesky", lambda *a, **k: calls.append(1) or original(*a, **k))
    blocks = KernelBlocks(prior.psd, sk_kernel(xs, x), sk_kernel(xs, xs))
    post = predict(blocks, None, y, kind="ntkgp")
    late = predict(blocks, None, y, kind="ntk", t=[1.0, 2.0])
    np.testing.assert_allclose(post.mean.numpy(), reference.mean.numpy(), rtol=1e-12)
    assert late.mean.shape == (2, 6)
    assert not calls


def test_from_arch_uses_the_architecture_kernel():
    import ntkprior.arch.layers as nl
    arch = nl.serial(nl.Dense(64, weight_std=1.5, bias_std=0.1), nl.ReLU(), nl.Dense(1))
    x = np.random.default_rng(5).normal(size=(20, 2))
    y = np.sin(x[:, 0])
    for kernel in ("ntk", "nngp"):
        h = getattr(arch.kernel(x), kernel)
        assert KernelPrior.from_arch(arch, x, kernel).log_prob(y) == pytest.approx(
            KernelPrior(h).log_prob(y), rel=1e-12)
    post = predict(arch, x, y, x[:4] + 0.1, kind="gd-ensemble", t=[1.0, 100.0])
    assert post.cov.shape == (2, 4, 4)


# ============================================================================ errors
def test_bad_inputs_give_clear_errors(data):
    x, xs, y, y2 = data
    with pytest.raises(ValueError, match="kind: expected one of"):
        predict(sk_kernel, x, y, xs, kind="svm")
    with pytest.raises(ValueError, match="t: kind='nngp' is a Bayesian posterior"):
        predict(sk_kernel, x, y, xs, kind="nngp", t=3.0)
    with pytest.raises(ValueError, match="t: training times must be >= 0"):
        predict(sk_kernel, x, y, xs, kind="ntk", t=[-1.0])
    with pytest.raises(ValueError, match="learning_rate"):
        predict(sk_kernel, x, y, xs, kind="ntk", t=1.0, learning_rate=0)
    with pytest.raises(ValueError, match="y_train: has 14 rows but there are 15 inputs"):
        predict(sk_kernel, x, y[:-1], xs)
    with pytest.raises(ValueError, match="x_test: has 2 features but x_train has 3"):
        predict(sk_kernel, x, y, xs[:, :2])
    with pytest.raises(ValueError, match="x_train: contains 1 NaN"):
        predict(sk_kernel, np.where(x == x[0, 0], np.nan, x), y, xs)
    with pytest.raises(ValueError, match="single kernel, but both the NNGP and the NTK are needed"):
        predict(sk_kernel, x, y, xs, kind="gd-ensemble")
    with pytest.raises(ValueError, match="full test-test block"):
        predict(KernelBlocks(sk_kernel(x, x), sk_kernel(xs, x)), None, y, kind="nngp")
    with pytest.raises(ValueError, match="x_test: has 6 rows but the precomputed test_train block is for 5"):
        predict(KernelBlocks(sk_kernel(x, x), sk_kernel(xs[:5], x), sk_kernel(xs[:5], xs[:5])),
                x, y, xs)
    with pytest.raises(ValueError, match=r"candidates\['b'\]: has 5 rows but there are 6 inputs"):
        rank_candidates(sk_kernel, x, y, xs, {"a": np.zeros(6), "b": np.zeros(5)})
    with pytest.raises(ValueError, match=r"candidates\['candidate 0'\]: has 1 output columns but y_train has 2"):
        rank_candidates(sk_kernel, x, y2, xs, np.zeros((2, 6)))
    with pytest.raises(ValueError, match="candidates: expected shape"):
        rank_candidates(sk_kernel, x, y, xs, np.zeros(6))
    with pytest.raises(ValueError, match="needs test inputs"):
        rank_candidates(sk_kernel, x, y, None, np.zeros((1, 6)))
    with pytest.raises(ValueError, match="precomputed kernels describe different inputs"):
        predict({"ntk": sk_kernel(x, x), "nngp": sk_kernel(x[:5], x[:5])}, None, y, kind="gd-ensemble")
    with pytest.raises(ValueError, match="arch_or_kernel: expected an architecture"):
        predict("rbf", x, y, xs)
    with pytest.raises(ValueError, match="model: expected a torch.nn.Module"):
        KernelPrior.from_model(sk_kernel, x)


def test_singular_kernel_error_and_explicit_remedies():
    x = np.linspace(-1, 1, 12)[:, None]
    y = x[:, 0] ** 2

    def linear(a, b):                      # rank 1: like a 1-D kernel without biases
        return np.asarray(a) @ np.asarray(b).T

    with pytest.raises(ValueError, match="numerically singular.*smallest eigenvalue.*diag_reg="):
        predict(linear, x, y, x + 0.05, kind="nngp")
    with pytest.raises(ValueError, match="numerically singular"):
        KernelPrior(linear(x, x)).log_prob(y)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        KernelPrior(linear(x, x), jitter="auto").log_prob(y)
    # the jitter that works leaves a condition number ~1e13, which is announced too; both warnings
    # point at the caller's line
    assert [r.category for r in record] == [JitterWarning, IllConditionedWarning]
    assert "jitter='auto' added" in str(record[0].message)
    assert all(r.filename == __file__ for r in record)
    # finite-time predictions need no inverse: a singular kernel is fine there (zero modes grow ~ t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = predict(linear, x, y, x + 0.05, kind="ntk", t=5.0)
    assert torch.isfinite(post.mean).all()


def test_learning_rate_above_stability_limit_warns(data):
    x, xs, y, _ = data
    lam_max = np.linalg.eigvalsh(sk_kernel(x, x)).max()
    with pytest.warns(LearningRateWarning, match="exceeds 2m / lambda_max"):
        predict(sk_kernel, x, y, xs, kind="ntk", t=1.0, learning_rate=3 * 15 / lam_max)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(sk_kernel, x, y, xs, kind="ntk", t=1.0, learning_rate=1.9 * 15 / lam_max)


def test_symmetric_psd_instances_keep_their_ridge(data):
    x, _, y, _ = data
    psd = SymmetricPSD(sk_kernel(x, x), diag_reg=0.1)
    with pytest.raises(ValueError, match="already a SymmetricPSD"):
        KernelPrior(psd, diag_reg=0.2)
    assert KernelPrior(psd).psd is psd


def test_from_model_uses_the_per_output_empirical_ntk():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    # independent reference: the Jacobian by plain autograd, both outputs, divided by k = 2
    params = list(net.parameters())
    rows = [[torch.cat([g.reshape(-1) for g in torch.autograd.grad(net(x[i:i + 1])[0, c], params)])
             for i in range(10)] for c in range(2)]
    h = sum(torch.stack(r) @ torch.stack(r).T for r in rows) / 2
    y = torch.sin(x[:, 0])
    prior = KernelPrior.from_model(net, x, diag_reg=1e-8)
    assert prior.log_prob(y) == pytest.approx(KernelPrior(h, diag_reg=1e-8).log_prob(y), rel=1e-9)
    post = predict(net, x, y, x[:3] * 0.5, kind="ntk", t=2.0, learning_rate=0.1)
    assert post.mean.shape == (3,)
    with pytest.raises(ValueError, match="provides only ntk, not nngp"):
        predict(net, x, y, x[:3], kind="nngp")


def test_modes_are_numbered_from_one_everywhere(data):
    """One convention (issue 13): mode 1 is the largest eigenvalue in KernelPrior.modes' table, in the
    candidates' mode differences and in the eigen command."""
    x, _, y, _ = data
    prior = KernelPrior(sk_kernel(x, x))
    first_row = prior.modes(y).to_text().splitlines()[2].split()
    assert first_row[0] == "1" and float(first_row[1]) == pytest.approx(float(prior.modes(y).eigenvalue[0]), rel=1e-3)
