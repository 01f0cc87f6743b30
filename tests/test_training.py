"""Training finite and linearised networks (ntkprior.dynamics.training) against independent references:
a Python loop over torch.nn networks with torch.optim.SGD, the closed-form dynamics with the
same empirical NTK, and the Lee et al. GD-ensemble formula of ntkprior.prior.prior."""

import numpy as np
import pytest
import torch

import ntkprior.arch.layers as L
from ntkprior.dynamics.linearized import linearized_dynamics
from ntkprior.kernels.empirical import empirical_ntk
from ntkprior.prior.prior import predict
from ntkprior.dynamics import training
from ntkprior.dynamics.training import minibatch_weights, train, width_sweep


def small_arch(k=1, width=32):
    return L.serial(L.Dense(width, weight_std=1.5, bias_std=0.1), L.Erf(),
                    L.Dense(width, 1.5, 0.1), L.ReLU(), L.Dense(k, 1.5, 0.1))


@pytest.fixture
def data(rng):
    return rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), rng.normal(size=(5, 3))


def loop_reference(arch, x, y, xt, steps, lr, seeds, momentum=0.0, batches=None):
    """Single torch.nn networks, one after the other, trained by torch.optim.SGD on ½·mean."""
    x, y, xt = (torch.as_tensor(v) for v in (x, y, xt))
    outs = []
    for i, s in enumerate(seeds):
        net = arch.build(x.shape[1], seed=s)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
        for step in range(steps):
            rows = slice(None) if batches is None else batches[step][i]
            opt.zero_grad()
            (0.5 * (net(x[rows]) - y[rows]).pow(2).mean()).backward()
            opt.step()
        with torch.no_grad():
            outs.append((net(x), net(xt)))
    return outs


@pytest.mark.parametrize("group_bytes", [2 << 20, 1])
def test_vectorised_ensemble_equals_a_loop_of_torch_optim(data, monkeypatch, group_bytes):
    """One group of 3 networks, and (group_bytes=1) one group per network."""
    monkeypatch.setattr(training, "_GROUP_BYTES", group_bytes)
    x, y, xt = data
    arch = small_arch(k=2)
    result = train(arch, x, y, xt, 60, 0.3, seed=5, ensemble=3, momentum=0.9, track_kernel=False)
    for i, (train_out, test_out) in enumerate(loop_reference(arch, x, y, xt, 60, 0.3, [5, 6, 7], momentum=0.9)):
        # the same float64 operations in a different order (batched matmuls): round-off only
        torch.testing.assert_close(result.train_outputs[i, -1], train_out, rtol=0, atol=1e-12)
        torch.testing.assert_close(result.test_outputs[i, -1], test_out, rtol=0, atol=1e-12)
    assert result.seeds == (5, 6, 7)
    np.testing.assert_array_equal(result.diverged_at.numpy(), [-1, -1, -1])


@pytest.mark.parametrize("arch", [
    small_arch(k=1),                                                    # one output: the outer-product path
    L.serial(L.Dense(6, bias_std=None), L.Tanh(), L.Dense(4, parameterization="standard"), L.LeakyReLU(0.2),
             L.Dense(3, bias_std=0.3)),                                 # no bias, standard, generic activations
    L.serial(L.Dense(2, weight_std=1.3, bias_std=0.5)),                 # a linear model: one shared-input layer
], ids=["relu-erf-k1", "tanh-leaky-standard", "linear"])
def test_hand_written_backward_equals_autograd(arch, rng):
    """ntkprior.dynamics._stacked's forward and backward for stacked networks against each torch.nn
    network's own forward and autograd gradients (float64: round-off only)."""
    from torch.func import stack_module_state
    from ntkprior.dynamics import _stacked
    x = torch.as_tensor(rng.normal(size=(9, 4)))
    models = [arch.build(4, seed=s) for s in range(3)]
    params = {name: p.detach().clone() for name, p in stack_module_state(models)[0].items()}
    plan, workspace = _stacked.dense_plan(models[0]), _stacked.Workspace()
    out = _stacked.forward(plan, params, x, workspace)
    cotangent = torch.as_tensor(rng.normal(size=tuple(out.shape)))
    _stacked.backward(plan, params, workspace, cotangent)
    for i, net in enumerate(models):
        torch.testing.assert_close(out[i], net(x).detach(), rtol=0, atol=1e-13)
        net(x).backward(cotangent[i])
        for name, p in net.named_parameters():
            torch.testing.assert_close(params[name].grad[i], p.grad, rtol=0, atol=1e-13)


class TorchArch:
    """An "architecture" of plain torch.nn layers: exercises the generic (vmap) path of train."""

    def build(self, in_features, seed=0, dtype=torch.float64, device=None):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(in_features, 16), torch.nn.Tanh(),
                                   torch.nn.Linear(16, 2)).to(dtype)


def test_any_torch_module_trains_like_the_loop(data, monkeypatch):
    """The vmap path, one group per network (also for the linearised networks)."""
    monkeypatch.setattr(training, "_GROUP_BYTES", 1)
    x, y, xt = data
    arch = TorchArch()
    result = train(arch, x, y, xt, 30, 0.3, seed=1, ensemble=2, momentum=0.5)
    for i, (train_out, test_out) in enumerate(loop_reference(arch, x, y, xt, 30, 0.3, [1, 2], momentum=0.5)):
        torch.testing.assert_close(result.test_outputs[i, -1], test_out, rtol=0, atol=1e-12)
    linear = train(arch, x, y, xt, 30, 0.3, seed=1, ensemble=2, linearized=True, track_kernel=False)
    traj = linearized_dynamics(arch.build(3, seed=2), x, y, xt, learning_rate=0.3, f0="network").at(linear.steps)
    torch.testing.assert_close(linear.test_outputs[1], traj.test_outputs, rtol=0, atol=1e-8)


def test_sgd_minibatches_equal_a_loop_with_the_same_batches(data):
    x, y, xt = data
    arch, steps, b = small_arch(k=2), 25, 3
    result = train(arch, x, y, xt, steps, 0.2, seed=2, ensemble=2, optimizer="sgd", batch_size=b,
                   momentum=0.5, track_kernel=False)
    weights = minibatch_weights(8, b, 2, torch.Generator().manual_seed(2))
    batches = [[torch.nonzero(w[i]).flatten() for i in range(2)] for w in (next(weights) for _ in range(steps))]
    assert all(len(rows) == b for step in batches for rows in step)
    for i, (train_out, _) in enumerate(loop_reference(arch, x, y, xt, steps, 0.2, [2, 3], 0.5, batches)):
        torch.testing.assert_close(result.train_outputs[i, -1], train_out, rtol=0, atol=1e-12)
    # a batch of all n points is full-batch gradient descent
    full = train(arch, x, y, xt, 10, 0.2, seed=2, optimizer="sgd", batch_size=8, track_kernel=False)
    gd = train(arch, x, y, xt, 10, 0.2, seed=2, track_kernel=False)
    torch.testing.assert_close(full.test_outputs, gd.test_outputs, rtol=0, atol=1e-13)


@pytest.mark.parametrize("k", [1, 2])
def test_linearized_training_equals_discrete_closed_form(data, k):
    """The issue's check: float64, same empirical NTK, to 1e-8 (measured ~1e-14: both are exact)."""
    x, y, xt = data
    arch = small_arch(k=k, width=48)
    steps = [0, 1, 17, 250]
    result = train(arch, x, y[:, :k], xt, 250, 0.5, seed=11, ensemble=2, linearized=True, record=steps)
    for i in range(2):
        model = arch.build(3, seed=11 + i)
        traj = linearized_dynamics(model, x, y[:, :k], xt, learning_rate=0.5, f0="network").at(steps)
        assert 0.5 < traj.learning_rate * float(traj.eigenvalues[0]) / (8 * k) < 2   # large but stable steps
        torch.testing.assert_close(result.train_outputs[i], traj.train_outputs, rtol=0, atol=1e-8)
        torch.testing.assert_close(result.test_outputs[i], traj.test_outputs, rtol=0, atol=1e-8)
        torch.testing.assert_close(result.loss[i], traj.loss, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(result.kernel_change.numpy(), 0.0)   # a linear model's kernel is fixed


def test_records_kernels_and_parameter_change(data):
    x, y, xt = data
    arch = small_arch(k=2)
    result = train(arch, x, y, xt, 40, 0.4, seed=3, ensemble=2, record=[10, 5])
    np.testing.assert_array_equal(result.steps, [0, 5, 10, 40])
    model = arch.build(3, seed=4)
    torch.testing.assert_close(result.initial_kernel[1], empirical_ntk(model, x, output="mean"))
    theta0 = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = loop_reference(arch, x, y, xt, 40, 0.4, [4])[0]
    torch.testing.assert_close(result.train_outputs[1, -1], ref[0], rtol=0, atol=1e-12)
    assert result.param_change[:, 0].abs().max() == 0 and result.kernel_change[:, 0].abs().max() == 0
    assert torch.all(result.param_change[:, -1] > 0) and torch.all(result.kernel_change[:, -1] > 0)
    torch.testing.assert_close(result.loss[:, 0], 0.5 * (result.train_outputs[:, 0] - torch.as_tensor(y)).pow(2).mean((1, 2)))
    assert theta0.norm() > 0
    assert len(train(arch, x, y, None, 100, 0.1, record=5, track_kernel=False).steps) <= 6
    default = train(arch, x, y, None, 0, 0.1, track_kernel=False)
    np.testing.assert_array_equal(default.steps, [0])
    assert default.test_outputs is None and default.ensemble == 1


def test_divergence_is_reported(data):
    x, y, xt = data
    with pytest.warns(UserWarning, match="diverged"):
        result = train(small_arch(k=2), x, y, xt, 200, 1e4, track_kernel=False)
    assert int(result.diverged_at[0]) > 0
    assert not torch.isfinite(result.loss[0, -1])


@pytest.mark.slow
def test_wide_network_tracks_its_linearisation(rng):
    """At width >= 2048 a briefly trained network stays within 1 % of its linearisation, and the
    gap falls like width^-1 (Dyer & Gur-Ari 2019: corrections to the linear model are O(1/width)).

    Band [-1.3, -0.7]: 4 networks per width over a 16x range of widths; the per-width mean gap
    scatters by ~20 % (seed to seed the gap varies by ~40 %), which gives a slope standard error
    of ~0.1, so ±0.3 is three standard errors."""
    x, xt = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    y = np.sign(rng.normal(size=(8, 1)))
    widths, gaps = [256, 512, 1024, 2048, 4096], []
    for w in widths:
        arch = L.serial(L.Dense(w, 1.5, 0.1), L.Erf(), L.Dense(1, 1.5, 0.1))
        kw = dict(seed=0, ensemble=4, record=[0, 100], track_kernel=False)
        net, lin = train(arch, x, y, xt, 100, 1.0, **kw), train(arch, x, y, xt, 100, 1.0, linearized=True, **kw)
        gap = (net.test_outputs[:, -1] - lin.test_outputs[:, -1]).pow(2).mean((1, 2)).sqrt()
        moved = (lin.test_outputs[:, -1] - lin.test_outputs[:, 0]).pow(2).mean((1, 2)).sqrt()
        gaps.append(float(gap.mean()))
        if w >= 2048:
            assert float((gap / moved).max()) < 0.02
    slope = np.polyfit(np.log(widths), np.log(gaps), 1)[0]
    assert -1.3 < slope < -0.7, (slope, gaps)


@pytest.mark.slow
def test_ensemble_matches_the_gd_ensemble_formula():
    """neural-tangents' own statistical check, with networks really trained: Dense(128, 1.2, 0.05)
    -Erf-Dense(1, 1.2, 0.05), 4 train / 6 test inputs in R^8 from N(0, I), ±1 labels, 1000 steps of
    gradient descent at learning rate 0.1 on ½·mean, 1024 networks. Empirical mean and covariance on
    the test inputs against the Lee et al. formula at t = 1000, within 0.08 absolute + 0.08 relative
    (the incumbent's tolerance; the sampling error of 1024 networks is ~0.03 for the mean and ~0.04
    for the covariance, finite-width corrections at width 128 ~1/128). float32 networks, as in the
    incumbent's test (JAX's default), to halve the cost."""
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    y = torch.sign(torch.randn(4, 1, generator=g, dtype=torch.float64))
    arch = L.serial(L.Dense(128, 1.2, 0.05), L.Erf(), L.Dense(1, 1.2, 0.05))
    result = train(arch, x, y, xt, 1000, 0.1, seed=0, ensemble=1024, record=[0, 1000],
                   track_kernel=False, dtype=torch.float32)
    outputs = result.test_outputs[:, -1, :, 0].double()
    reference = predict(arch, x, y, xt, kind="gd-ensemble", t=1000, learning_rate=0.1)
    np.testing.assert_allclose(outputs.mean(0).numpy(), reference.mean[:, 0].numpy(), atol=0.08, rtol=0.08)
    np.testing.assert_allclose(torch.cov(outputs.T).numpy(), reference.cov.numpy(), atol=0.08, rtol=0.08)
    # and the networks really trained: the training loss fell from O(1) to ~0
    assert float(result.loss[:, -1].max()) < 1e-3 < float(result.loss[:, 0].mean())


@pytest.mark.slow
def test_width_sweep_exponents(rng):
    """One hidden layer, widths 256-4096, 4 seeds. Expected slopes (WidthSweep docstring): -1/2 for
    the test distance, the parameter change and the kernel distance at init, -1 for the kernel's
    motion. Bands ±0.3 around them (three standard errors of a 4-seed fit over a 16x range; the
    kernel motion, whose seed-to-seed scatter is larger, gets [-1.4, -0.6])."""
    x, xt = rng.normal(size=(8, 4)), rng.normal(size=(6, 4))
    y = np.sign(rng.normal(size=(8, 1)))
    arch = L.serial(L.Dense(10, 1.5, 0.1), L.Erf(), L.Dense(1, 1.5, 0.1))
    sweep = width_sweep(arch, x, y, xt, [256, 1024, 4096], 4, 100, 1.0)
    assert [r.width for r in sweep.rows] == [256, 1024, 4096]
    assert set(sweep.exponents) == {"test_distance", "param_change", "kernel_change", "init_kernel_distance"}
    for name in ("test_distance", "param_change", "init_kernel_distance"):
        assert -0.8 < sweep.exponents[name] < -0.2, (name, sweep.exponents)
    assert -1.4 < sweep.exponents["kernel_change"] < -0.6, sweep.exponents
    assert sweep.rows[-1].init_kernel_distance < 0.05     # ~2/sqrt(width) (MATH.md section 2)
    assert "slope" in str(sweep)


def test_bad_inputs(data):
    x, y, xt = data
    arch = small_arch(k=2)
    cases = [
        (dict(arch=object()), "arch"),
        (dict(steps=-1), "steps"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(ensemble=0), "ensemble"),
        (dict(optimizer="adam"), "optimizer"),
        (dict(batch_size=4), "batch_size"),
        (dict(optimizer="sgd"), "batch_size"),
        (dict(optimizer="sgd", batch_size=9), "batch_size"),
        (dict(momentum=1.0), "momentum"),
        (dict(record=[0, 11]), "record"),
        (dict(record=[0.5]), "record"),
        (dict(seed=[1, 2], ensemble=3), "ensemble"),
        (dict(seed=-1), "seed"),
        (dict(y_train=y[:, :1]), "y_train"),
        (dict(y_train=y[:7]), "y_train"),
        (dict(x_test=xt[:, :2]), "x_test"),
        (dict(x_train=x[:, 0]), "x_train"),
    ]
    base = dict(arch=arch, x_train=x, y_train=y, x_test=xt, steps=10, learning_rate=0.1, track_kernel=False)
    for change, name in cases:
        with pytest.raises(ValueError, match=name):
            train(**{**base, **change})
    with pytest.raises(ValueError, match="widths"):
        width_sweep(arch, x, y, xt, [64], 2, 10, 0.1)
    with pytest.raises(ValueError, match="x_test"):
        width_sweep(arch, x, y, None, [64, 128], 2, 10, 0.1)
