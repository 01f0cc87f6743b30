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
