"""Top-k eigenmodes by Lanczos against the full eigendecomposition (scipy.linalg.eigh)."""

import numpy as np
import pytest
import scipy.linalg
import torch

import ntkprior.prior.linalg as linalg
from ntkprior.prior.linalg import SymmetricPSD
from ntkprior.prior.prior import KernelPrior
from ntkprior.prior.spectrum import eigenmodes


def _kernel(n=300, seed=0):
    """An RBF-plus-linear Gram matrix with a spectrum decaying over many decades, plus a ridge."""
    x = np.random.default_rng(seed).normal(size=(n, 3))
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / 2.0) + 0.1 * x @ x.T + 1e-6 * np.eye(n), x


def test_top_eigh_uses_lanczos_and_matches_the_full_decomposition(monkeypatch):
    h, _ = _kernel()
    k = 10
    psd = SymmetricPSD(h)
    calls = []
    monkeypatch.setattr(linalg, "_eigh", lambda m: calls.append(m) or (_ for _ in ()).throw(
        AssertionError("the full eigendecomposition ran for k << n")))
    w, v = psd.top_eigh(k)
    assert not calls and psd._eig is None
    w_ref, v_ref = scipy.linalg.eigh(h)
    w_ref, v_ref = w_ref[::-1][:k], v_ref[:, ::-1][:, :k]
    # ARPACK at tol=0 (machine precision): eigenvalues to ~1e-13 of lambda_1; vectors to
    # eps * lambda_1 / gap (the smallest relative gap among the top 11 here is ~1e-2)
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-11, atol=1e-11 * w_ref[0])
    np.testing.assert_allclose(np.abs(v.numpy().T @ v_ref), np.eye(k), atol=1e-8)
    assert torch.allclose(v.T @ v, torch.eye(k, dtype=v.dtype), atol=1e-12)


def test_modes_top_k_table_equals_the_full_table_with_a_cholesky_remainder():
    h, x = _kernel()
    y = np.sin(x[:, 0]) + 0.3 * x[:, 1]
    partial = KernelPrior(h).modes(y, k=10)
    prior = KernelPrior(h)
    full = prior.modes(y)
    assert prior.psd._eig is not None                    # all modes: the full decomposition
    np.testing.assert_allclose(partial.eigenvalue.numpy(), full.eigenvalue[:10].numpy(), rtol=1e-11)
    np.testing.assert_allclose(partial.contribution.numpy(), full.contribution[:10].numpy(),
                               rtol=1e-7)
    np.testing.assert_allclose(partial.projection.numpy(), full.projection[:10].numpy(),
                               rtol=1e-7, atol=1e-9 * np.abs(y).sum())
    q = y @ np.linalg.solve(h, y)
    assert partial.total == pytest.approx(q, rel=1e-9)   # total from the Cholesky factor
    assert partial.remainder == pytest.approx(q - float(full.contribution[:10].sum()), rel=1e-7)
    np.testing.assert_allclose(partial.cumulative_share.numpy(), full.cumulative_share[:10].numpy(),
                               rtol=1e-7)


def test_modes_with_a_large_k_uses_the_full_decomposition():
    h, x = _kernel(60)
    prior = KernelPrior(h)
    prior.modes(x[:, 0], k=30)                          # 30 > 60 / 10
    assert prior.psd._eig is not None


def test_eigenmodes_top_k_matches_full(monkeypatch):
    h, _ = _kernel()
    top = eigenmodes(torch.from_numpy(h), k=5)
    full = eigenmodes(torch.from_numpy(h))
    np.testing.assert_allclose(top.values.numpy(), full.values[:5].numpy(), rtol=1e-11)
    # both sign conventions are fix_signs': the vectors agree, not only up to sign
    np.testing.assert_allclose(top.vectors.numpy(), full.vectors[:, :5].numpy(), atol=1e-8)


# ---------------------------------------------------------------- every eigenvalue, a few vectors
def test_all_values_with_top_vectors_match_the_full_decomposition(monkeypatch):
    h, _ = _kernel()
    calls = []
    monkeypatch.setattr(linalg, "_eigh", lambda m: calls.append(m) or (_ for _ in ()).throw(
        AssertionError("the full eigendecomposition ran for k << n")))
    modes = eigenmodes(h, k=8, all_values=True)
    assert not calls and modes.vectors.shape == (300, 8) and modes.all_values.shape == (300,)
    w_ref, v_ref = scipy.linalg.eigh(h)
    w_ref, v_ref = w_ref[::-1], v_ref[:, ::-1]
    # syevr without vectors against with: round-off, n * eps * lambda_1
    np.testing.assert_allclose(modes.all_values.numpy(), w_ref, rtol=0, atol=300 * 2.3e-16 * w_ref[0])
    np.testing.assert_allclose(modes.values.numpy(), modes.all_values[:8].numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.abs(modes.vectors.numpy().T @ v_ref[:, :8]), np.eye(8), atol=1e-8)


def test_all_values_reuse_one_full_decomposition_when_k_is_a_large_share(monkeypatch):
    h, _ = _kernel(60)
    monkeypatch.setattr(linalg, "_eigvalsh", lambda m: pytest.fail("eigenvalues computed twice"))
    modes = eigenmodes(h, k=8, all_values=True)        # 8 > 60 / 10: the full decomposition
    full = eigenmodes(h)
    assert torch.equal(modes.all_values, full.values) and torch.equal(modes.vectors, full.vectors[:, :8])
    assert eigenmodes(h, k=3).all_values is None


def test_all_values_need_a_dense_decomposition():
    h, _ = _kernel(60)

    class Operator:
        shape = (60, 60)

        def matvec(self, v):
            return torch.from_numpy(h) @ v

    with pytest.raises(ValueError, match="all_values: every eigenvalue needs a dense decomposition"):
        eigenmodes(Operator(), k=3, all_values=True)
    with pytest.raises(ValueError, match="method='lanczos' was asked for; pass method='dense'"):
        eigenmodes(h, k=3, method="lanczos", all_values=True)


@pytest.mark.parametrize("d", [1, 2])
def test_the_report_eigen_study_against_scipy_eigh(d, monkeypatch):
    """The report's spectra and first eigenvectors (every eigenvalue, 8 vectors by Lanczos at n = 100)
    against scipy.linalg.eigh of the same kernel matrices, vectors up to sign."""
    from ntkprior.arch.spec import parse_spec
    from ntkprior.studies.document.eigen import eigen_study
    from ntkprior.studies.document.settings import DEFAULT_ARCHS
    from ntkprior.prior.spectrum import count_sign_changes

    n = 100
    if d == 1:
        x = torch.linspace(-3.0, 3.0, n, dtype=torch.float64)[:, None]
        coordinate = x[:, 0].numpy()
    else:
        x = torch.from_numpy(np.random.default_rng(1).normal(size=(n, 2)))
        coordinate = x[:, 0].numpy()
    arch = parse_spec(DEFAULT_ARCHS["two_layer"])
    monkeypatch.setattr(linalg, "_eigh", lambda m: pytest.fail("the study ran a full eigendecomposition"))
    study = eigen_study({"NTK": (arch, "ntk"), "NNGP": (arch, "nngp")}, x, coordinate, "x")
    order = np.argsort(coordinate, kind="stable")
    kernels = arch.kernel(x)
    monkeypatch.undo()
    for title, matrix in {"NTK": kernels.ntk, "NNGP": kernels.nngp}.items():
        w_ref, v_ref = scipy.linalg.eigh(matrix.numpy())
        w_ref, v_ref = np.clip(w_ref[::-1], 0, None), v_ref[:, ::-1][:, :8]
        res, drawn = study.numbers["kernels"][title], study.arrays["kernels"][title]
        np.testing.assert_allclose(res["eigenvalues"], w_ref, rtol=0, atol=n * 2.3e-16 * w_ref[0])
        assert drawn["vectors"].shape == (n, 8)
        np.testing.assert_allclose(np.abs(drawn["vectors"].numpy().T @ v_ref[order]), np.eye(8), atol=1e-8)
        if d == 1:
            assert res["sign_changes"] == count_sign_changes(v_ref[order]).tolist()
