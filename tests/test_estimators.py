"""scikit-learn interop: NeuralKernel in GaussianProcessRegressor / KernelRidge / SVC, NTKRegressor."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import check_estimator

import ntkprior.arch.layers as nl
from ntkprior.prior.estimators import NeuralKernel, NTKRegressor
from ntkprior.prior.prior import KernelPrior, predict

ARCH = nl.serial(nl.Dense(64, weight_std=1.5, bias_std=0.1), nl.ReLU(), nl.Dense(1))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 2))
    xs = rng.normal(size=(7, 2))
    y = np.sin(2 * x[:, 0]) + x[:, 1]
    return x, xs, y


def test_neural_kernel_matrices_are_the_architecture_kernels(data):
    x, xs, _ = data
    for kind in ("ntk", "nngp"):
        k = NeuralKernel(ARCH, kind)
        np.testing.assert_array_equal(k(x), getattr(ARCH.kernel(x), kind).numpy())
        np.testing.assert_array_equal(k(xs, x), getattr(ARCH.kernel(xs, x), kind).numpy())
        np.testing.assert_allclose(k.diag(xs), np.diag(k(xs)), rtol=1e-12)
        value, grad = k(x, eval_gradient=True)
        assert grad.shape == (25, 25, 0) and k.theta.shape == (0,)


def test_gaussian_process_regressor_with_the_nngp_is_the_nngp_posterior(data):
    x, xs, y = data
    alpha = 1e-8
    gpr = GaussianProcessRegressor(NeuralKernel(ARCH, "nngp"), alpha=alpha, optimizer=None).fit(x, y)
    mean, cov = gpr.predict(xs, return_cov=True)
    post = predict(ARCH, x, y, xs, kind="nngp", diag_reg=alpha, reg="absolute")
    # same matrix, both by Cholesky: round-off agreement
    np.testing.assert_allclose(mean, post.mean.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov, post.cov.numpy(), rtol=1e-7, atol=1e-10)
    prior = KernelPrior.from_arch(ARCH, x, "nngp", diag_reg=alpha, reg="absolute")
    assert gpr.log_marginal_likelihood_value_ == pytest.approx(prior.log_prob(y), rel=1e-9)
    # composes with sklearn's kernels
    noisy = GaussianProcessRegressor(NeuralKernel(ARCH, "nngp") + WhiteKernel(0.1, "fixed"),
                                     alpha=1e-12, optimizer=None).fit(x, y)
    ridge = predict(ARCH, x, y, xs, kind="nngp", diag_reg=0.1, reg="absolute")
    np.testing.assert_allclose(noisy.predict(xs), ridge.mean.numpy(), rtol=1e-8, atol=1e-10)


def test_kernel_ridge_with_the_ntk_is_ntk_ridge_regression(data):
    x, xs, y = data
    alpha = 1e-3
    model = KernelRidge(alpha=alpha, kernel=NeuralKernel(ARCH, "ntk")).fit(x, y)
    theta = ARCH.kernel(x).ntk.numpy()
    reference = ARCH.kernel(xs, x).ntk.numpy() @ np.linalg.solve(theta + alpha * np.eye(25), y)
    np.testing.assert_allclose(model.predict(xs), reference, rtol=1e-8)
    ours = predict(ARCH, x, y, xs, kind="ntk", diag_reg=alpha, reg="absolute")
    np.testing.assert_allclose(ours.mean.numpy(), reference, rtol=1e-8)


def test_svc_with_a_callable_kernel_equals_the_precomputed_gram_matrix(data):
    x, xs, y = data
    labels = (y > 0).astype(int)
    callable_svc = SVC(kernel=NeuralKernel(ARCH, "ntk"), C=10.0).fit(x, labels)
    gram = ARCH.kernel(x).ntk.numpy()
    precomputed = SVC(kernel="precomputed", C=10.0).fit(gram, labels)
    np.testing.assert_allclose(callable_svc.decision_function(xs),
                               precomputed.decision_function(ARCH.kernel(xs, x).ntk.numpy()),
                               rtol=1e-8, atol=1e-10)


def test_clone_and_repr():
    k = NeuralKernel(ARCH, "nngp")
    assert clone(k).get_params()["kernel"] == "nngp" and clone(k) == k
    assert "dense(64" in repr(k)
    est = NTKRegressor(ARCH, kind="ntkgp", diag_reg=0.0)
    assert clone(est).get_params() == est.get_params()


def test_ntk_regressor_matches_predict_and_scores(data):
    x, xs, y = data
    est = NTKRegressor(ARCH, kind="gd-ensemble", t=30.0, learning_rate=0.5, diag_reg=0.0).fit(x, y)
    mean, std = est.predict(xs, return_std=True)
    post = predict(ARCH, x, y, xs, kind="gd-ensemble", t=30.0, learning_rate=0.5)
    np.testing.assert_allclose(mean, post.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, post.std.numpy(), rtol=1e-12)
    _, cov = est.predict(xs, return_cov=True)
    np.testing.assert_allclose(cov, post.cov.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.predict(xs), mean, rtol=1e-12)
    # converged, with the tiny default ridge, the fit on the training set is near-perfect
    assert NTKRegressor(ARCH).fit(x, y).score(x, y) > 1 - 1e-6
    y2 = np.stack([y, -y], 1)
    assert NTKRegressor(ARCH).fit(x, y2).predict(xs).shape == (7, 2)


def test_ntk_regressor_bad_settings(data):
    x, xs, y = data
    with pytest.raises(ValueError, match="arch: pass an architecture"):
        NTKRegressor().fit(x, y)
    with pytest.raises(ValueError, match="t: NTKRegressor takes one training time"):
        NTKRegressor(ARCH, t=[1.0, 2.0]).fit(x, y)
    with pytest.raises(ValueError, match="kind='ntk' predicts the mean only"):
        NTKRegressor(ARCH, kind="ntk").fit(x, y).predict(xs, return_std=True)
    with pytest.raises(ValueError, match="kind: expected one of"):
        NTKRegressor(ARCH, kind="svm").fit(x, y)
    with pytest.raises(ValueError, match="not precomputed matrices"):
        NeuralKernel(np.eye(3))(x)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")   # no pandas / array API
def test_ntk_regressor_passes_sklearn_check_estimator():
    failures = [(r["check_name"], r["exception"]) for r in check_estimator(NTKRegressor(ARCH), on_fail=None)
                if r["status"] == "failed"]
    assert not failures
