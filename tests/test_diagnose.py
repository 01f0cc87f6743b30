"""The diagnosis (ntkprior.dynamics.diagnose) on the seed document's 5-point experiment, and its figures
against independent computations."""

import math
import re

import numpy as np
import pytest

import ntkprior.arch.layers as L
from ntkprior.dynamics.diagnose import Diagnosis, diagnose
from ntkprior.kernels.empirical import empirical_ntk
from ntkprior.prior.prior import predict


def seed_network(weight_std, bias_std):
    """The seed's 3-Dense-layer ReLU network (hidden width set per test with ``width=``)."""
    return L.serial(L.Dense(512, weight_std, bias_std), L.ReLU(), L.Dense(512, weight_std, bias_std),
                    L.ReLU(), L.Dense(1, weight_std, bias_std))


@pytest.fixture
def five_points():
    """5 inputs uniform on [-π, π], targets sin(x) + 0.1 noise; 9 test inputs across the interval.
    On these points the analytic NTK of the √2 / 1 network has λ_max = 133.6 (2m/λ_max = 0.075) and
    that of the 1.5 / 0.05 network λ_max = 168.2 (2m/λ_max = 0.059)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, (5, 1))
    y = np.sin(x) + 0.1 * rng.normal(size=(5, 1))
    return x, y, np.linspace(-np.pi, np.pi, 9)[:, None]


@pytest.mark.slow
def test_seed_experiment_is_flagged(five_points):
    """weight_std 1.5, bias_std 0.05, learning rate 0.1, 10 000 steps (the seed's settings), at width
    128 with two networks to fit the CI budget: above the stable rate, a finite-width kernel far worse
    conditioned than the analytic one, and small-eigenvalue modes not learned."""
    x, y, xt = five_points
    d = diagnose(seed_network(1.5, 0.05), x, y, xt, 10_000, 0.1, width=128, ensemble=2)
    assert not d.in_kernel_regime
    assert {"learning_rate", "conditioning", "unconverged_modes"} <= set(d.failed)
    assert len(d.reasons) == len(d.failed)
    by_name = {c.name: c.sentence for c in d.checks}
    # each reason carries its figures
    assert f"{d.max_stable_lr_analytic:.4g}" in by_name["learning_rate"]
    assert f"against {d.condition_analytic:.3g} analytic" in by_name["conditioning"]
    assert f"{np.nanmedian(d.train_residual):.1%}" in by_name["unconverged_modes"]
    lam = np.linalg.eigvalsh(seed_network(1.5, 0.05).kernel(x).ntk.numpy())
    assert d.max_stable_lr_analytic == pytest.approx(2 * 5 / lam[-1], rel=1e-10)
    assert d.max_stable_lr_analytic < 0.1
    assert np.median(d.condition_empirical) > 10 * d.condition_analytic
    assert np.median(d.train_residual) > 0.1
    assert str(d).splitlines()[1].strip().startswith("training has not converged (unconverged_modes)")
    assert "it may not keep matching (learning_rate, conditioning" in str(d)


@pytest.mark.slow
def test_large_bias_and_safe_learning_rate_agree(five_points):
    """weight_std √2, bias_std 1, learning rate 0.05 (2m/λ_max = 0.075), 2000 steps: the slowest
    analytic mode reaches ηλ_min t/m = 5.1; width 512 keeps each network's empirical 2m/λ̂_max
    above 0.05 and the kernel's motion small."""
    x, y, xt = five_points
    d = diagnose(seed_network(math.sqrt(2), 1.0), x, y, xt, 2000, 0.05, width=512, ensemble=2)
    assert d.in_kernel_regime, str(d)
    assert d.reasons == [] and d.failed == []
    assert d.mode_convergence_analytic.min() > 3
    assert d.mean_gap <= 1 and np.all(d.kernel_drift < 0.1)
    assert str(d).splitlines()[0].endswith("the trained ensemble matches the kernel's prediction at this time")
    assert d.verdicts == {"matches_kernel": True, "converged": True, "keeps_matching": True}


@pytest.mark.slow
def test_large_bias_at_learning_rate_01_points_at_the_learning_rate(five_points):
    x, y, xt = five_points
    d = diagnose(seed_network(math.sqrt(2), 1.0), x, y, xt, 300, 0.1, width=512, ensemble=2)
    assert not d.in_kernel_regime
    assert d.failed[0] == "learning_rate" and d.reasons[0].startswith("learning rate 0.1 is at or above")
    assert "conditioning" not in d.failed and "unconverged_modes" not in d.failed
    assert np.isnan(d.network_distance).all()           # the closed form diverges at this rate


def test_figures_match_independent_computations(rng):
    x, xt = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    y = rng.normal(size=(6, 2))
    arch = L.serial(L.Dense(64, 1.5, 0.3), L.Erf(), L.Dense(2, 1.5, 0.3))
    lr, steps, m = 0.5, 40, 12
    d = diagnose(arch, x, y, xt, steps, lr, ensemble=2, seed=4)
    assert isinstance(d, Diagnosis) and d.m == m and d.training.ensemble == 2
    theta = arch.kernel(x).ntk.numpy()
    lam, vec = np.linalg.eigh(theta)
    np.testing.assert_allclose(d.eigenvalues_analytic, lam[::-1], rtol=1e-10)
    np.testing.assert_allclose(d.mode_convergence_analytic, lr * lam[::-1] * steps / m, rtol=1e-10)
    np.testing.assert_allclose(d.label_share, ((vec.T @ y) ** 2).sum(1)[::-1] / (y ** 2).sum(), atol=1e-12)
    assert d.condition_analytic == pytest.approx(lam[-1] / lam[0], rel=1e-8)
    empirical = empirical_ntk(arch.build(2, seed=5), x, output="mean").numpy()
    lam_emp = np.linalg.eigvalsh(empirical)
    np.testing.assert_allclose(d.eigenvalues_empirical[1], lam_emp[::-1], rtol=1e-8, atol=1e-12)
    assert d.max_stable_lr_empirical[1] == pytest.approx(2 * m / lam_emp[-1], rel=1e-8)
    lee = predict(arch, x, y, xt, kind="gd-ensemble", t=steps, learning_rate=lr)
    np.testing.assert_allclose(d.lee_mean, lee.mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(d.lee_std, lee.std.numpy(), atol=1e-12)
    outputs = d.training.test_outputs[:, -1].numpy()
    np.testing.assert_allclose(d.ensemble_mean, outputs.mean(0), atol=1e-12)
    rms_y = np.sqrt((y ** 2).mean())
    np.testing.assert_allclose(d.f0_size, np.sqrt((d.training.test_outputs[:, 0].numpy() ** 2).mean((1, 2))) / rms_y)
    residual = d.training.train_outputs[:, -1].numpy() - y
    np.testing.assert_allclose(d.train_residual, np.sqrt((residual ** 2).mean((1, 2))) / rms_y)
    assert all(c.sentence for c in d.checks) and len(d.notes) == 2


def test_diverging_networks_are_diagnosed(rng):
    x, y, xt = rng.normal(size=(4, 2)), rng.normal(size=(4, 1)), rng.normal(size=(3, 2))
    arch = L.serial(L.Dense(16, 1.0, 0.1), L.ReLU(), L.Dense(1))
    with pytest.warns(UserWarning, match="diverged"):
        d = diagnose(arch, x, y, xt, 300, 1e4, ensemble=2)
    assert d.diverged == 2 and not d.in_kernel_regime
    assert d.failed == ["learning_rate", "unconverged_modes", "kernel_drift", "ensemble_mean"]
    assert "2 network(s) diverged" in d.reasons[0] and "every network diverged" in d.reasons[1]
    assert "nan" not in str(d) and "inf%" not in str(d)


def test_bad_inputs(rng):
    x, y, xt = rng.normal(size=(4, 2)), rng.normal(size=(4, 1)), rng.normal(size=(3, 2))
    arch = L.serial(L.Dense(16, 1.0, 0.1), L.ReLU(), L.Dense(1))
    with pytest.raises(ValueError, match="x_test"):
        diagnose(arch, x, y, None, 10, 0.1)
    with pytest.raises(ValueError, match="width"):
        diagnose(arch, x, y, xt, 10, 0.1, width=0)
    with pytest.raises(ValueError, match="learning_rate"):
        diagnose(arch, x, y, xt, 10, -0.1)
    with pytest.raises(ValueError, match="ensemble"):
        diagnose(arch, x, y, xt, 10, 0.1, ensemble=0)
    with pytest.raises(ValueError, match="y_train"):
        diagnose(arch, x, y[:3], xt, 10, 0.1)


def test_each_question_has_its_own_verdict(rng):
    """A failing conditioning or convergence check does not make the headline say the networks
    depart from the kernel: the headline answers only "does the ensemble match now?"."""
    import dataclasses
    from ntkprior.dynamics.diagnose import Check
    x, xt = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    d = diagnose(L.serial(L.Dense(64, weight_std=1.4, bias_std=1.0), L.ReLU(), L.Dense(1)),
                 x, np.sin(x[:, :1]), xt, 50, 0.05, ensemble=2)
    names = ["learning_rate", "unconverged_modes", "conditioning", "kernel_drift", "ensemble_mean"]

    def with_failed(*failed):
        return dataclasses.replace(d, checks=[Check(n, n not in failed, n) for n in names])

    only_conditioning = with_failed("conditioning")
    assert only_conditioning.verdicts == {"matches_kernel": True, "converged": True, "keeps_matching": False}
    assert only_conditioning.in_kernel_regime
    assert str(only_conditioning).splitlines()[0].endswith("matches the kernel's prediction at this time")
    unconverged = with_failed("unconverged_modes")
    assert unconverged.in_kernel_regime and unconverged.answers()[1] == "training has not converged (unconverged_modes)"
    mismatch = with_failed("ensemble_mean", "kernel_drift")
    assert not mismatch.in_kernel_regime
    assert mismatch.answers()[0] == "the trained ensemble does NOT match the kernel's prediction at this time (ensemble_mean)"


def test_sentences_name_test_inputs_by_their_value(five_points):
    """"test input 51" means nothing to a reader who never saw the grid: say x (issue 13)."""
    x, y, xt = five_points
    d = diagnose(seed_network(math.sqrt(2), 1.0), x, y, xt, 20, 0.05, width=32, ensemble=2)
    sentence = next(c.sentence for c in d.checks if c.name == "ensemble_mean")
    value = re.search(r"\(at x = (-?[0-9.e+-]+),", sentence)
    assert value and any(abs(float(value.group(1)) - v) < 1e-3 for v in xt[:, 0]), sentence
