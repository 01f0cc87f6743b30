"""``ntp.similar`` and ``ntkprior similar``: the normalised kernel and its nearest pool inputs, checked
against a brute-force computation from the whole kernel matrix of queries and pool together."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ntkprior as ntp
from ntkprior.app.cli import app
from ntkprior.arch.spec import parse_spec
from reference import jacobian_rows

F64 = torch.float64
MLP = "dense(64, weight_std=1.4, bias_std=0.1) relu dense(64, weight_std=1.4) relu dense(1)"
CNN = "conv(8, 3, padding='circular', weight_std=1.4, bias_std=0.1) relu conv(8, 3, weight_std=1.4) relu " \
      "global_avg_pool dense(1)"


def brute_force(matrix: np.ndarray, n_q: int, k: int):
    """Neighbours from the joint matrix of [queries; pool]: a Python sort per query (ties: lower index)."""
    d = np.sqrt(np.diag(matrix))
    s = matrix[:n_q, n_q:] / np.outer(d[:n_q], d[n_q:])
    order = np.array([sorted(range(s.shape[1]), key=lambda j: (-s[i, j], j))[:k] for i in range(n_q)])
    return order, np.take_along_axis(s, order, axis=1)


def _data(shape, n_q=4, n_p=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_q, *shape, generator=g, dtype=F64), torch.randn(n_p, *shape, generator=g, dtype=F64)


@pytest.mark.parametrize("spec, shape", [(MLP, (5,)), (CNN, (1, 10))])
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_similar_equals_brute_force(spec, shape, kernel):
    arch = parse_spec(spec)
    q, pool = _data(shape)
    joint = getattr(arch.kernel(torch.cat([q, pool])), kernel).numpy()
    want_idx, want_s = brute_force(joint, len(q), 5)
    got = ntp.similar(arch, q, pool, k=5, kernel=kernel)
    # the indices must agree exactly (no ties among random inputs); the values are the same float64
    # arithmetic up to the order of a square root and a division: 1e-12 is ~1e4 ulps
    np.testing.assert_array_equal(got.indices, want_idx)
    np.testing.assert_allclose(got.similarity, want_s, rtol=0, atol=1e-12)
    assert got.matrix.shape == (4, 12) and got.kernel == kernel
    assert np.all(np.diff(got.similarity, axis=1) <= 0)          # most similar first


def test_similar_of_a_query_in_the_pool_finds_itself_with_similarity_one():
    arch = parse_spec(CNN)
    q, pool = _data((1, 10))
    got = ntp.similar(arch, pool[[3, 7]], pool, k=2)
    np.testing.assert_array_equal(got.indices[:, 0], [3, 7])
    np.testing.assert_allclose(got.similarity[:, 0], 1.0, atol=1e-12)     # s(x, x) = 1 exactly up to round-off


def test_precomputed_blocks_give_the_architectures_answer():
    arch = parse_spec(MLP)
    q, pool = _data((5,))
    ntk = lambda a, b=None: arch.kernel(a, b).ntk
    blocks = ntp.KernelBlocks(ntk(pool), ntk(q, pool), ntk(q).diagonal())
    a, b = ntp.similar(arch, q, pool, k=3), ntp.similar(blocks, q, pool, k=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.similarity, b.similarity, atol=1e-12)
    assert b.kernel == "kernel"


def test_empirical_ntk_of_a_module_equals_its_autodiff_jacobian():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    q, pool = _data((5,), n_q=3, n_p=8)
    j = jacobian_rows(net, torch.cat([q, pool]))          # (n, parameters) by torch.autograd, row by row
    want_idx, want_s = brute_force((j @ j.T).numpy(), 3, 4)
    got = ntp.similar(net, q, pool, k=4)
    np.testing.assert_array_equal(got.indices, want_idx)
    np.testing.assert_allclose(got.similarity, want_s, atol=1e-10)    # float64 Jacobians, 10^2-term sums


def test_bad_input_names_the_argument():
    arch = parse_spec(MLP)
    q, pool = _data((5,))
    with pytest.raises(ValueError, match="k: expected an integer between 1 and the pool size 12"):
        ntp.similar(arch, q, pool, k=13)
    with pytest.raises(ValueError, match="k:"):
        ntp.similar(arch, q, pool, k=0)
    no_bias = parse_spec("dense(8) relu dense(1)")
    with pytest.raises(ValueError, match=r"queries: row 1 has kernel variance"):
        ntp.similar(no_bias, torch.stack([q[0], torch.zeros(5, dtype=F64)]), pool)
    with pytest.raises(ValueError, match="kernel: expected 'ntk' or 'nngp'"):
        ntp.similar(arch, q, pool, kernel="rbf")


def test_cli_similar_writes_indices_and_figure(tmp_path):
    q, pool = _data((1, 10))
    np.save(tmp_path / "q.npy", q.numpy())
    np.save(tmp_path / "pool.npy", pool.numpy())
    run = lambda *args: CliRunner().invoke(app, ["similar", "--arch", CNN, "--query", str(tmp_path / "q.npy"),
                                                "--pool", str(tmp_path / "pool.npy"), *args])
    result = run("--k", "3", "--figure", str(tmp_path / "f.png"), "--out", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "s.json").read_text())
    want = ntp.similar(parse_spec(CNN), q, pool, k=3)
    np.testing.assert_array_equal(saved["indices"], want.indices)
    assert (tmp_path / "f.png").stat().st_size > 0
    bad = run("--k", "50")
    assert bad.exit_code == 2 and "--k: expected between 1 and the pool size 12" in bad.output
    assert "Traceback" not in bad.output


# ====================================================================== the lion-and-husky study
from ntkprior.studies import similarity as study


def test_composed_images_are_deterministic_and_alpha_composited():
    a, b = study.backgrounds(), study.backgrounds()
    assert list(a) == list(study.BACKGROUNDS)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].shape == (12, 12) and a[name].min() >= 0 and a[name].max() <= 1
    np.testing.assert_array_equal(a["vertical stripes"], a["horizontal stripes"].T)
    objects, labels = study.digits()
    assert objects.shape == (1797, 8, 8) and objects.max() == 1.0
    x = study.compose(objects[:3], 0.5 * a["checkerboard"])
    assert x.shape == (3, 1, 12, 12)
    np.testing.assert_array_equal(x[:, 0, :2], np.broadcast_to(0.5 * a["checkerboard"][:2], (3, 2, 12)))  # border: c·b
    inner = x[:, 0, 2:10, 2:10]
    np.testing.assert_allclose(inner, (1 - objects[:3]) * 0.5 * a["checkerboard"][2:10, 2:10] + objects[:3])
    q1 = study.quadruples(20, labels, np.arange(1000, 1797), seed=3)
    np.testing.assert_array_equal(q1, study.quadruples(20, labels, np.arange(1000, 1797), seed=3))
    assert np.all(labels[q1[:, 0]] != labels[q1[:, 1]]) and np.all(q1[:, 2] != q1[:, 3])
    with pytest.raises(ValueError, match=r"objects: expected \(n, 8, 8\)"):
        study.compose(np.zeros((2, 4, 4)), a["gradient"])


def test_same_object_fraction_agrees_with_similar():
    objects, labels = study.digits()
    quads = study.quadruples(5, labels, np.arange(1000, 1797), seed=0)
    images = study.triples(objects, quads, 0.5)
    arch = parse_spec("conv(8, 3, weight_std=1.4, bias_std=0.1) relu global_avg_pool dense(1)")
    got = study.same_object_fraction(lambda trio: arch.kernel(trio).ntk, images)
    for i, trio in enumerate(images):
        ref = ntp.similar(arch, trio[:1], trio[1:], k=2)
        np.testing.assert_allclose(got["similarity"][i].numpy(), ref.matrix[0], atol=1e-12)
    wins = [ntp.similar(arch, t[:1], t[1:], k=1).indices[0, 0] == 0 for t in images]
    assert got["fraction"] == pytest.approx(np.mean(wins))


@pytest.mark.slow      # ~14 s alone
def test_quick_similarity_report_writes_its_files(tmp_path):
    result = CliRunner().invoke(app, ["report", "--study", "similarity", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "results.json").read_text())
    for contrast in ("0.25", "0.5", "1.0"):
        assert all(0 <= v <= 1 for v in res["same_object_fraction"][contrast].values())
    assert {"before", "after", "held_out_accuracy"} <= set(res["after"])
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["triptych_after.png", "triptych_exact.png"]


def test_a_stored_kernel_gives_the_architectures_answer(tmp_path):
    pytest.importorskip("zarr")
    from dask.distributed import Client
    from ntkprior.scale.distributed import kernel_matrix
    arch = parse_spec(MLP)
    q, pool = _data((5,))
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        stored = kernel_matrix(arch, pool, store=tmp_path / "K.zarr", block=8, client=client)
    # the pool-pool kernel from the store (its diagonal), the query blocks from the recorded architecture
    got = ntp.similar(stored, q, pool, k=4)
    want = ntp.similar(arch, q, pool, k=4)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.similarity, want.similarity, atol=1e-12)
