"""Closed-form training dynamics (ntkprior.dynamics.linearized) against independent references:
the gradient-descent recursion unrolled step by step, scipy's matrix exponential, and the
kernel-regression solution by scipy's solver."""

import numpy as np
import pytest
import scipy.linalg
import torch

import ntkprior.arch.layers as L
from ntkprior.dynamics.linearized import LinearizedDynamics, linearized_dynamics, max_stable_learning_rate

# Round-off of float64 products of O(10) matrices; the closed forms below are exact identities.
EXACT = 1e-10


@pytest.fixture
def problem(rng):
    arch = L.serial(L.Dense(64, weight_std=1.5, bias_std=0.05), L.ReLU(), L.Dense(2, 1.5, 0.05))
    x, xt = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    y = rng.normal(size=(6, 2))
    theta, theta_tx = arch.kernel(x).ntk.numpy(), arch.kernel(xt, x).ntk.numpy()
    f0, f0t = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    return dict(arch=arch, x=x, xt=xt, y=y, theta=theta, theta_tx=theta_tx, f0=f0, f0t=f0t, m=y.size)


def unrolled_gd(theta, theta_tx, y, f0, f0t, lr, m, steps):
    """The definition: f_{s+1} = f_s - (lr/m) Θ (f_s(X) - Y), on train and test, step by step."""
    f, ft, out = f0.copy(), f0t.copy(), {}
    for s in range(max(steps) + 1):
        if s in steps:
            out[s] = (f.copy(), ft.copy())
        r = f - y
        f, ft = f - lr / m * theta @ r, ft - lr / m * theta_tx @ r
    return out


def test_gd_closed_form_equals_unrolled_recursion(problem):
    p, lr, steps = problem, 0.4, [0, 1, 5, 60, 300]
    dyn = LinearizedDynamics(p["theta"], p["y"], p["theta_tx"], learning_rate=lr,
                             f0_train=p["f0"], f0_test=p["f0t"])
    traj = dyn.at(steps)
    ref = unrolled_gd(p["theta"], p["theta_tx"], p["y"], p["f0"], p["f0t"], lr, p["m"], steps)
    for i, s in enumerate(steps):
        np.testing.assert_allclose(traj.train_outputs[i].numpy(), ref[s][0], atol=EXACT)
        np.testing.assert_allclose(traj.test_outputs[i].numpy(), ref[s][1], atol=EXACT)
        np.testing.assert_allclose(float(traj.loss[i]), 0.5 * np.mean((ref[s][0] - p["y"]) ** 2), atol=EXACT)


def test_flow_equals_matrix_exponential(problem):
    p, lr, times = problem, 0.7, [0.0, 0.5, 13.25, 400.0]
    dyn = LinearizedDynamics(p["theta"], p["y"], p["theta_tx"], learning_rate=lr, method="flow",
                             f0_train=p["f0"], f0_test=p["f0t"])
    traj = dyn.at(times)
    for i, t in enumerate(times):
        g = scipy.linalg.expm(-lr * p["theta"] * t / p["m"])
        train = p["y"] + g @ (p["f0"] - p["y"])
        test = p["f0t"] + p["theta_tx"] @ scipy.linalg.solve(p["theta"], (np.eye(6) - g) @ (p["y"] - p["f0"]))
        np.testing.assert_allclose(traj.train_outputs[i].numpy(), train, atol=EXACT)
        np.testing.assert_allclose(traj.test_outputs[i].numpy(), test, atol=EXACT)


@pytest.mark.parametrize("method", ["gd", "flow"])
def test_infinite_time_is_kernel_regression(problem, method):
    p = problem
    dyn = LinearizedDynamics(p["theta"], p["y"], p["theta_tx"], learning_rate=0.5, method=method)
    regression = p["theta_tx"] @ scipy.linalg.solve(p["theta"], p["y"], assume_a="pos")
    traj = dyn.at([np.inf, 10**7])
    np.testing.assert_allclose(traj.test_outputs[0].numpy(), regression, atol=EXACT)
    np.testing.assert_allclose(traj.train_outputs[0].numpy(), p["y"], atol=EXACT)
    # t = 1e7 steps: the slowest mode has decayed by exp(-lr λ_min t/m) < 1e-100, so the finite-time
    # formula (eigenbasis) meets the Cholesky solve to round-off (solve error ~ cond · eps ~ 1e-12).
    assert 0.5 * float(dyn.eigenvalues[-1]) * 1e7 / p["m"] > 230
    np.testing.assert_allclose(traj.test_outputs[1].numpy(), regression, atol=1e-9)


def test_discrete_approaches_flow_for_small_steps(problem):
    """(1 - x)^t vs e^{-xt} at fixed ηt: the gap is first order in η (it is ~ t x²/2 per mode)."""
    p, tau = problem, 30.0           # continuous time η·t
    gaps = []
    for lr in (1e-2, 1e-3):
        steps = int(round(tau / lr))
        kw = dict(f0_train=p["f0"], f0_test=p["f0t"])
        gd = LinearizedDynamics(p["theta"], p["y"], p["theta_tx"], learning_rate=lr, **kw).at(steps)
        flow = LinearizedDynamics(p["theta"], p["y"], p["theta_tx"], learning_rate=lr, method="flow", **kw).at(steps)
        gaps.append(float((gd.test_outputs - flow.test_outputs).abs().max()))
    assert gaps[1] < 1e-3
    # ten times smaller η, about ten times smaller gap (first order; 7-13 allows the O(η²) term)
    assert 7 < gaps[0] / gaps[1] < 13


def test_mode_residuals_split_the_residual(problem):
    p, lr = problem, 0.4
    dyn = LinearizedDynamics(p["theta"], p["y"], learning_rate=lr, f0_train=p["f0"])
    traj = dyn.at([0, 10, 200])
    lam, vec = np.linalg.eigh(p["theta"])
    lam, vec = lam[::-1], vec[:, ::-1]
    np.testing.assert_allclose(traj.eigenvalues.numpy(), lam, rtol=1e-12)
    for i, t in enumerate(traj.times):
        residual = traj.train_outputs[i].numpy() - p["y"]
        # squared mode residuals add up to the squared residual (V orthonormal)
        np.testing.assert_allclose((traj.mode_residuals[i] ** 2).sum().item(), (residual ** 2).sum(), rtol=1e-12)
        # each mode is the initial one times (1 - η λ_i / m)^t; compared up to the eigenvector sign
        expected = np.abs(vec.T @ (p["f0"] - p["y"])) * np.abs(1 - lr * lam / p["m"])[:, None] ** t
        np.testing.assert_allclose(traj.mode_residuals[i].abs().numpy(), expected, atol=EXACT)
    conv = dyn.mode_convergence([10])
    np.testing.assert_allclose(conv[0].numpy(), lr * lam * 10 / p["m"], rtol=1e-12)
    assert torch.all(dyn.decay([200])[0, :-1] <= dyn.decay([200])[0, 1:])   # large λ learned first


def test_max_stable_learning_rate_is_the_gd_stability_edge(problem):
    p = problem
    lr_max = max_stable_learning_rate(p["theta"], p["m"])
    assert lr_max == pytest.approx(2 * p["m"] / np.linalg.eigvalsh(p["theta"])[-1], rel=1e-12)
    assert LinearizedDynamics(p["theta"], p["y"], learning_rate=1.0).max_stable_learning_rate == pytest.approx(lr_max)
    below = LinearizedDynamics(p["theta"], p["y"], learning_rate=0.99 * lr_max, f0_train=p["f0"]).at([0, 3000])
    assert below.loss[1] < 1e-3 * below.loss[0]
    above = LinearizedDynamics(p["theta"], p["y"], learning_rate=1.01 * lr_max, f0_train=p["f0"])
    with pytest.warns(UserWarning, match="stable maximum"):
        grown = above.at([0, 3000])
    assert grown.loss[1] > 1e3 * grown.loss[0]


def test_singular_kernel_at_finite_time(rng):
    """A rank-4 kernel on 7 inputs (random features J, Θ = J Jᵀ): finite-time dynamics stay exact
    (the λ = 0 filter is its limit ηt/m), t = ∞ asks for diag_reg."""
    j, jt = rng.normal(size=(7, 4)), rng.normal(size=(3, 4))
    theta, theta_tx = j @ j.T, jt @ j.T
    y = rng.normal(size=(7, 1))
    dyn = LinearizedDynamics(theta, y, theta_tx, learning_rate=0.3)
    assert float(dyn.eigenvalues[-1]) < 1e-12 * float(dyn.eigenvalues[0])
    traj = dyn.at([50])
    ref = unrolled_gd(theta, theta_tx, y, np.zeros_like(y), np.zeros((3, 1)), 0.3, 7, [50])[50]
    np.testing.assert_allclose(traj.test_outputs[0].numpy(), ref[1], atol=EXACT)
    np.testing.assert_allclose(traj.train_outputs[0].numpy(), ref[0], atol=EXACT)
    with pytest.raises(ValueError, match="diag_reg"):
        dyn.at([np.inf])


def test_from_architecture_uses_the_analytic_ntk(problem):
    p = problem
    dyn = linearized_dynamics(p["arch"], p["x"], p["y"], p["xt"], learning_rate=0.2, f0=(p["f0"], p["f0t"]))
    direct = LinearizedDynamics(p["theta"], p["y"], p["theta_tx"], learning_rate=0.2,
                                f0_train=p["f0"], f0_test=p["f0t"])
    np.testing.assert_allclose(dyn.at([7]).test_outputs.numpy(), direct.at([7]).test_outputs.numpy(), atol=EXACT)
    pair = linearized_dynamics((p["theta"], p["theta_tx"]), None, p["y"], learning_rate=0.2)
    np.testing.assert_allclose(pair.at([7]).train_outputs.numpy(),
                               LinearizedDynamics(p["theta"], p["y"], learning_rate=0.2).at([7]).train_outputs.numpy())


def test_bad_inputs(problem):
    p = problem
    theta, y = p["theta"], p["y"]
    cases = [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(learning_rate=0.1, method="euler"), "method"),
        (dict(learning_rate=0.1, f0_train=np.zeros((5, 2))), "f0_train"),
        (dict(learning_rate=0.1, f0_test=np.zeros((4, 2))), "f0_test"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            LinearizedDynamics(theta, y, **kwargs)
    with pytest.raises(ValueError, match="y_train"):
        LinearizedDynamics(theta, y[:5], learning_rate=0.1)
    with pytest.raises(ValueError, match="theta_test_train"):
        LinearizedDynamics(theta, y, p["theta_tx"][:, :5], learning_rate=0.1)
    with pytest.raises(ValueError, match="symmetric"):
        LinearizedDynamics(theta + np.triu(np.ones((6, 6)), 1), y, learning_rate=0.1)
    dyn = LinearizedDynamics(theta, y, learning_rate=0.1)
    for t, msg in [(-1, ">= 0"), (2.5, "integers"), (float("nan"), ">= 0"), ([[1, 2]], "1-D"), ("soon", "t:")]:
        with pytest.raises(ValueError, match=msg):
            dyn.at(t)
    assert LinearizedDynamics(theta, y, learning_rate=0.1, method="flow").at(2.5).times[0] == 2.5
    with pytest.raises(ValueError, match="'network' needs a torch.nn.Module"):
        linearized_dynamics(p["arch"], p["x"], y, learning_rate=0.1, f0="network")
    with pytest.raises(ValueError, match="arch_or_kernel"):
        linearized_dynamics("relu", p["x"], y, learning_rate=0.1)
    with pytest.raises(ValueError, match="x_test"):
        linearized_dynamics(p["arch"], p["x"], y, p["xt"][:, :2], learning_rate=0.1)
    with pytest.raises(ValueError, match="m:"):
        max_stable_learning_rate(theta, 0)
