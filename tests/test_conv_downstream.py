"""Every downstream call works unchanged with convolutional architectures on signals and images."""

import numpy as np
import pytest
import torch

import ntkprior as ntp

F64 = torch.float64
ARCH = "conv(16, 3, weight_std=1.4, bias_std=0.1) relu conv(16, 3, weight_std=1.4) relu flatten dense(1)"


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, 6, dtype=F64, generator=g)
    y = torch.sin(x.sum((1, 2)))
    xt = torch.randn(4, 1, 6, dtype=F64, generator=g)
    return x, y, xt


def flat_mlp_equivalent():
    """conv(k=1) on length-1 signals is Dense: the same network on vectors (a reference for wiring)."""
    return (ntp.parse_spec("conv(16, 1, weight_std=1.4) relu flatten dense(1)"),
            ntp.parse_spec("dense(16, weight_std=1.4) relu dense(1)"))


def test_prior_predict_rank_and_eigenmodes_match_the_equal_vector_network():
    conv, dense = flat_mlp_equivalent()
    g = torch.Generator().manual_seed(1)
    x, xt = torch.randn(10, 3, dtype=F64, generator=g), torch.randn(3, 3, dtype=F64, generator=g)
    y = x[:, 0] - x[:, 1] ** 2
    xs, xts = x[:, :, None], xt[:, :, None]
    assert ntp.KernelPrior.from_arch(conv, xs).log_prob(y) == pytest.approx(
        ntp.KernelPrior.from_arch(dense, x).log_prob(y), rel=1e-12)
    a, b = ntp.predict(conv, xs, y, xts), ntp.predict(dense, x, y, xt)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-10, atol=1e-12)
    ra = ntp.rank_candidates(conv, xs, y, xts[:1], {"zero": [0.0], "one": [1.0]})
    rb = ntp.rank_candidates(dense, x, y, xt[:1], {"zero": [0.0], "one": [1.0]})
    assert [c.name for c in ra.rows] == [c.name for c in rb.rows]
    ea, eb = ntp.eigenmodes(conv, xs, k=3), ntp.eigenmodes(dense, x, k=3)
    torch.testing.assert_close(ea.values, eb.values, rtol=1e-10, atol=1e-12)


def test_linearized_dynamics_and_the_diagnosis_run_on_signals(data):
    x, y, xt = data
    arch = ntp.parse_spec(ARCH)
    # at t = inf the zero-initialised linearised network is the NTK regression (MATH.md section 4)
    traj = ntp.linearized_dynamics(arch, x, y, xt, learning_rate=0.5).at([float("inf")])
    post = ntp.predict(arch, x, y, xt, kind="ntk")
    torch.testing.assert_close(traj.test_outputs[-1].reshape(-1), post.mean.reshape(-1), rtol=1e-6, atol=1e-8)
    diagnosis = ntp.diagnose(arch, x, y, xt, 20, 0.5, ensemble=2)
    assert str(diagnosis)


def test_train_real_cnn_ensembles_and_the_width_sweep(data):
    x, y, xt = data
    arch = ntp.parse_spec(ARCH)
    result = ntp.train(arch, x, y, xt, steps=30, learning_rate=0.5, ensemble=3)
    loss = result.loss
    assert loss.shape[0] == 3 and bool((loss[:, -1] < loss[:, 0]).all())
    # member i is arch.build(shape, seed=i): its initial outputs are the recorded step-0 outputs
    net = arch.build((1, 6), seed=1)
    torch.testing.assert_close(result.train_outputs[1, 0], net(x))
    narrow = arch.with_width(8)
    assert str(narrow).startswith("conv(8, 3") and "conv(8, 3, weight_std=1.4)" in str(narrow)
    sweep = ntp.width_sweep(arch, x, y, xt, widths=[8, 32], seeds=2, steps=10, learning_rate=0.5)
    assert len(sweep.rows) == 2


def test_blockwise_distributed_tiles_equal_the_in_memory_kernel(data):
    pytest.importorskip("dask")
    from ntkprior.scale.distributed import kernel_blocks_in_memory
    x, _, _ = data
    arch = ntp.parse_spec("conv(8, 3) relu avg_pool(2) flatten dense(1)")
    tiles = kernel_blocks_in_memory(arch, x, block=5)
    torch.testing.assert_close(torch.as_tensor(np.asarray(tiles)), arch.kernel(x).ntk, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_kernel_matrix_on_a_dask_cluster_stores_the_cnn_kernel(data, tmp_path):
    pytest.importorskip("dask.distributed")
    pytest.importorskip("zarr")
    from dask.distributed import Client

    from ntkprior.scale.distributed import kernel_matrix, local_cluster
    x, _, _ = data
    arch = ntp.parse_spec("conv(8, 3) relu avg_pool(2) flatten dense(1)")
    with local_cluster(1, dashboard_address=":0") as cluster, Client(cluster) as client:
        stored = kernel_matrix(arch, x, store=tmp_path / "K.zarr", block=5, client=client)
        assert ntp.parse_spec(stored.spec) == arch
        torch.testing.assert_close(torch.as_tensor(stored.load()), arch.kernel(x).ntk, rtol=1e-12, atol=1e-14)
