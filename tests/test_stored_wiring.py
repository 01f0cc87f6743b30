"""Stored kernels passed to KernelPrior, predict, rank_candidates and eigenmodes.

Every result is compared with the same function on the in-memory matrix (``stored.load()``,
or the architecture itself), with tolerances derived from what the iterative method certifies:
CG's relative residual (``StoredKernel.solve``, tol 1e-8), block Lanczos's residual
certificate (``eigsh``, tol·λ₁) and the standard error SLQ reports for the log-determinant.
The stores are written by ``kernel_matrix`` through an in-process (threaded) Dask client.
"""

import numpy as np
import pytest
import scipy.linalg
import torch

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

import ntkprior as ntp  # noqa: E402
from ntkprior.scale.distributed import kernel_matrix  # noqa: E402
from ntkprior.prior.prior import KernelPrior, predict, rank_candidates  # noqa: E402
from ntkprior.prior.sources import KernelBlocks  # noqa: E402
from ntkprior.prior.spectrum import eigenmodes  # noqa: E402
from ntkprior.scale.stored import StoredKernel  # noqa: E402

N, BLOCK = 300, 128          # tiles of 128, 128 and 44: a ragged edge
CG_TOL = 2e-8                # solve() stops at relative residual 1e-8; the true one may drift 2x
DIAG_REG = 1e-2              # ridge (relative) under every solve: lambda_min(H_r) >= ridge


@pytest.fixture(scope="module")
def arch():
    return ntp.serial(ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU(),
                      ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU(), ntp.Dense(1))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, 5, dtype=torch.float64, generator=g)
    x_test = torch.randn(20, 5, dtype=torch.float64, generator=g)
    y = torch.stack([torch.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]], 1)
    return x, x_test, y


@pytest.fixture(scope="module")
def stores(arch, data, tmp_path_factory):
    from dask.distributed import Client
    x = data[0]
    root = tmp_path_factory.mktemp("stores")
    model = torch.nn.Sequential(torch.nn.Linear(5, 16, dtype=torch.float64), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1, dtype=torch.float64))
    torch.manual_seed(0)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        made = {name: kernel_matrix(source, x, kind=kind, store=root / f"{name}.zarr", block=BLOCK,
                                    client=client)
                for name, source, kind in (("ntk", arch, "ntk"), ("nngp", arch, "nngp"),
                                           ("empirical", model, "ntk"))}
        made["cross"] = kernel_matrix(arch, x, x[:50] + 1, store=root / "cross.zarr", block=BLOCK,
                                      client=client)
        made["impostor"] = kernel_matrix(Impostor(arch), x[:40], store=root / "impostor.zarr",
                                         block=BLOCK, client=client)
    # the NTK streamed tile by tile on every product, the others kept in memory once read
    made["ntk"] = StoredKernel(made["ntk"].location, max_memory="100KB")
    made["model"] = model
    return made


class Impostor:
    """Says it is ``arch`` but computes the kernel of weight_std=1.0: a spec that lies."""

    def __init__(self, arch):
        self.arch = arch
        self.other = ntp.serial(ntp.Dense(512, weight_std=1.0, bias_std=0.05), ntp.ReLU(), ntp.Dense(1))

    def __str__(self):
        return str(self.arch)

    def kernel(self, x1, x2=None, **options):
        return self.other.kernel(x1, x2, **options)


def ridge_of(matrix: np.ndarray) -> float:
    return DIAG_REG * float(np.diagonal(matrix).mean())


# --- KernelPrior ------------------------------------------------------------------------------------

def test_prior_of_a_stored_kernel_matches_dense(stores, data):
    _, _, y = data
    stored, dense = KernelPrior(stores["ntk"], diag_reg=DIAG_REG), KernelPrior(stores["ntk"].load(),
                                                                              diag_reg=DIAG_REG)
    mu = ridge_of(stores["ntk"].load().numpy())
    # CG from 0 leaves a residual r orthogonal to its iterate, so the error of b^T x is
    # r^T H_r^-1 r <= ||r||^2 / mu per column, ||r|| <= CG_TOL ||y_j||
    cg_error = float(((CG_TOL * y.norm(dim=0)) ** 2).sum() / mu)
    z = torch.flip(y, [0])
    for labels in (y, z):
        assert stored.rkhs_norm(labels) == pytest.approx(dense.rkhs_norm(labels), abs=cg_error + 1e-12)
    # SLQ: the log-determinant is a Monte Carlo estimate; within 4 of its standard errors (fixed seed)
    logdet, logdet_std = stored.logdet(return_std=True)
    assert dense.logdet(return_std=True) == (dense.logdet(), 0.0)
    assert 0 < logdet_std < 0.01 * abs(logdet) and abs(logdet - dense.logdet()) < 4 * logdet_std
    value, std = stored.log_prob(y, return_std=True)
    assert std == pytest.approx(logdet_std)               # k/2 times the log-det's, k = 2 columns
    assert abs(value - dense.log_prob(y)) < 4 * std
    # estimated once and reused: differences between labelings are exact to the CG tolerance
    assert stored.log_prob(z) - value == pytest.approx(dense.log_prob(z) - dense.log_prob(y),
                                                       abs=cg_error + 1e-9)


def test_top_modes_of_a_stored_prior_match_dense(stores, data):
    _, _, y = data
    stored, dense = KernelPrior(stores["ntk"], diag_reg=DIAG_REG), KernelPrior(stores["ntk"].load(),
                                                                              diag_reg=DIAG_REG)
    k = 6
    top, full = stored.modes(y[:, 0], k=k), dense.modes(y[:, 0])
    assert len(top) == k and len(full) == N
    w = full.eigenvalue.numpy()
    # block Lanczos certifies |lambda_hat - lambda| <= 1e-8 lambda_1 and sin(angle) <= 1e-8 lambda_1 / gap
    assert np.abs(top.eigenvalue.numpy() - w[:k]).max() <= 1e-8 * w[0]
    gaps = np.array([np.abs(np.delete(w, i) - w[i]).min() for i in range(k)])
    sines = 1e-8 * w[0] / gaps
    norm_y = float(y[:, 0].norm())
    assert (np.abs(top.projection.numpy() - full.projection[:k].numpy()) <= 2 * sines * norm_y + 1e-9).all()
    assert top.total == pytest.approx(full.total, rel=1e-10)       # CG total, as above
    assert top.remainder == pytest.approx(float(full.contribution[k:].sum()), rel=1e-6)
    assert "the modes after these 6" in str(top)
    # the dense prior gives the same top-k table
    head = dense.modes(y[:, 0], k=k)
    assert torch.equal(head.contribution, full.contribution[:k]) and head.total == pytest.approx(full.total)
    assert dense.modes(y[:, 0]).remainder == 0.0


# --- predict --------------------------------------------------------------------------------------

def cg_bound(cross: torch.Tensor, columns: torch.Tensor, mu: float) -> torch.Tensor:
    """|cross_i . (x_hat_j - x_j)| <= ||cross_i|| ||r_j|| / mu, ||r_j|| <= CG_TOL ||b_j||, for the CG
    solutions x_hat_j of H_r x = b_j (b_j the columns)."""
    return cross.norm(dim=1)[:, None] * (CG_TOL * columns.norm(dim=0))[None, :] / mu


@pytest.mark.parametrize("kind", ["nngp", "ntkgp", "ntk", "gd-ensemble", "readout"])
def test_predict_with_stored_kernels_matches_the_architecture(stores, arch, data, kind):
    x, x_test, y = data
    both = {"ntk": stores["ntk"], "nngp": stores["nngp"]}
    inverted = "ntk" if kind in ("ntkgp", "ntk", "gd-ensemble") else "nngp"
    h = both[inverted].load()
    mu = ridge_of(h.numpy())
    cross = getattr(arch.kernel(x_test, x), inverted)
    bound = cov_bound(cross, mu) if kind != "gd-ensemble" else gd_ensemble_bound(stores, arch, data, mu)
    for cov in ("full", "diagonal", None):
        got = predict(both, None, y, x_test, kind=kind, diag_reg=DIAG_REG, cov=cov)
        want = predict(arch, x, y, x_test, kind=kind, diag_reg=DIAG_REG, cov=cov)
        assert (got.mean - want.mean).abs().le(cg_bound(cross, y, mu)).all()
        if want.var is None:
            assert got.var is None and got.cov is None
            continue
        assert (got.var - want.var).abs().le(bound.diagonal()).all()
        if cov == "full":
            assert (got.cov - want.cov).abs().le(bound).all() and torch.equal(got.cov, got.cov.T)


def cov_bound(cross: torch.Tensor, mu: float) -> torch.Tensor:
    """|cross_i . (A_j hat - A_j)| for A_j = H_r^-1 cross_j solved by CG: cg_bound with b = cross_j."""
    return cg_bound(cross, cross.T, mu)


def gd_ensemble_bound(stores, arch, data, mu: float) -> torch.Tensor:
    """Error of ``K** + A K A^T - A KX* - K*X A^T`` when each row of A = Theta*X Theta_r^-1 is off
    by ||E_i|| <= e_i = CG_TOL ||Theta*X_i|| / mu: |E_i (K A_j^T - KX*_j)| + (i <-> j) + e_i e_j ||K||."""
    x, x_test, _ = data
    theta, k = stores["ntk"].load(), stores["nngp"].load()
    kernels = arch.kernel(x_test, x)
    a = torch.linalg.solve(theta + mu * torch.eye(N, dtype=torch.float64), kernels.ntk.T).T
    e = CG_TOL * kernels.ntk.norm(dim=1) / mu
    g = e[:, None] * (a @ k - kernels.nngp).norm(dim=1)[None, :]
    return g + g.T + e[:, None] * e[None, :] * torch.linalg.matrix_norm(k, 2)


def test_predict_takes_one_stored_kernel_and_its_test_blocks(stores, arch, data):
    x, x_test, y = data
    cross, test = arch.kernel(x_test, x).ntk, arch.kernel(x_test).ntk
    alone = predict(stores["ntk"], x, y, x_test, kind="ntkgp", diag_reg=DIAG_REG)
    given = predict(KernelBlocks(stores["ntk"], cross, test), None, y, None, kind="ntkgp", diag_reg=DIAG_REG)
    as_tuple = predict((stores["ntk"], cross, test), None, y, x_test, kind="ntkgp", diag_reg=DIAG_REG)
    # the architecture read back from the store computes the same test blocks, bit for bit
    assert torch.equal(alone.mean, given.mean) and torch.equal(alone.cov, given.cov)
    assert torch.equal(as_tuple.mean, given.mean)


def test_empirical_store_predicts_from_given_test_blocks(stores, data):
    from ntkprior.kernels.empirical import empirical_ntk
    x, x_test, y = data
    stored, model = stores["empirical"], stores["model"]
    with pytest.raises(ValueError, match="holds an empirical NTK.*KernelBlocks"):
        predict(stored, x, y, x_test, kind="ntkgp", diag_reg=DIAG_REG)
    cross = empirical_ntk(model, x_test, x, output="trace")
    test = empirical_ntk(model, x_test, output="trace")
    got = predict(KernelBlocks(stored, cross, test), None, y, None, kind="ntkgp", diag_reg=DIAG_REG)
    want = predict(KernelBlocks(stored.load(), cross, test), None, y, None, kind="ntkgp", diag_reg=DIAG_REG)
    mu = ridge_of(stored.load().numpy())
    assert (got.mean - want.mean).abs().le(cg_bound(cross, y, mu)).all()
    assert (got.var - want.var).abs().max() <= cross.norm(dim=1).max() ** 2 * CG_TOL / mu


def test_rank_candidates_with_a_stored_kernel(stores, arch, data):
    x, x_test, y = data
    y1 = y[:, 0]
    candidates = {"zero": torch.zeros(20), "sin": torch.sin(2 * x_test[:, 0]), "cos": torch.cos(x_test[:, 0])}
    got = rank_candidates(stores["ntk"], x, y1, x_test, candidates, diag_reg=DIAG_REG, top_modes=0)
    want = rank_candidates(arch, x, y1, x_test, candidates, diag_reg=DIAG_REG, top_modes=0)
    assert [r.name for r in got.rows] == [r.name for r in want.rows]
    cross = arch.kernel(x_test, x).ntk
    mu = ridge_of(stores["ntk"].load().numpy())
    d_mean, d_cov = cg_bound(cross, y1[:, None], mu), cov_bound(cross, mu)
    assert (got.mean - want.mean).abs().le(d_mean).all() and (got.cov - want.cov).abs().le(d_cov).all()
    # log N(y*; mu*, S) to first order: |d log det S| <= sqrt(n*) ||S^-1|| ||dS||_F and
    # |d maha| <= ||S^-1 r||^2 ||dS||_F + 2 ||d mu|| ||S^-1 r||; second order is below that
    # while ||S^-1|| ||dS||_F < 0.1 (asserted); doubled for it
    inverse = torch.linalg.inv(want.cov)
    norm_inverse = float(torch.linalg.matrix_norm(inverse, 2))
    ds, dm = float(d_cov.norm()), float(d_mean.norm())
    assert norm_inverse * ds < 0.1
    for a, b in zip(got.rows, want.rows):
        s_r = float((inverse @ (candidates[b.name] - want.mean[:, 0])).norm())
        bound = 0.5 * (20 ** 0.5 * norm_inverse * ds + s_r ** 2 * ds + 2 * dm * s_r)
        assert abs(a.conditional_log_prob - b.conditional_log_prob) <= 2 * bound
    with pytest.raises(ValueError, match="^top_modes: .*pass top_modes=0"):
        rank_candidates(stores["ntk"], x, y1, x_test, candidates, diag_reg=DIAG_REG)


# --- eigenmodes -----------------------------------------------------------------------------------

def test_eigenmodes_of_a_stored_kernel_match_dense(stores, arch, data, monkeypatch):
    x, x_test, _ = data
    stored, k = stores["ntk"], 5
    passes = []
    original = StoredKernel._product
    monkeypatch.setattr(StoredKernel, "_product", lambda self, v, t: passes.append(1) or original(self, v, t))
    modes = eigenmodes(stored, k=k)
    monkeypatch.undo()
    dense = eigenmodes(arch, x, k=N)
    assert len(passes) <= 12                          # block Lanczos: a handful of passes, not ARPACK's ~100
    w = dense.values.numpy()
    assert modes.kernel == "ntk" and torch.equal(modes.x, x)
    assert np.abs(modes.values.numpy() - w[:k]).max() <= 1e-8 * w[0]
    gaps = np.array([np.abs(np.delete(w, i) - w[i]).min() for i in range(k)])
    sines = 1e-8 * w[0] / gaps
    # both fix the signs the same way (largest entry positive): columns agree, not just up to sign
    assert ((modes.vectors - dense.vectors[:, :k]).norm(dim=0).numpy() <= 2 * sines + 1e-9).all()
    # eigenfunctions by Nystrom from the architecture the store records
    phi, phi_dense = modes.functions(x_test), dense.functions(x_test)[:, :k]
    cross = arch.kernel(x_test, x).ntk
    # phi = H(x, X) v / lambda: |dphi| <= ||H(x, X)|| (||dv|| + |dlambda| / lambda) / lambda
    bound = cross.norm(dim=1)[:, None] * torch.from_numpy(2 * sines + 1e-8 * w[0] / w[:k]) / modes.values
    assert ((phi - phi_dense).abs() <= bound + 1e-12).all()
    # a stored NNGP is found as the NNGP without being told
    assert eigenmodes(stores["nngp"], k=2).kernel == "nngp"
    loaded = eigenmodes(stored, k=k, method="dense")
    assert torch.allclose(loaded.values, dense.values[:k], rtol=1e-12)


def test_eigenfunctions_of_an_empirical_store_need_the_cross_kernel(stores, data):
    from ntkprior.kernels.empirical import empirical_ntk
    x, x_test, _ = data
    modes = eigenmodes(stores["empirical"], k=3)
    with pytest.raises(ValueError, match="empirical NTK.*cross=K"):
        modes.functions(x_test)
    cross = empirical_ntk(stores["model"], x_test, x, output="trace")
    assert modes.functions(cross=cross).shape == (20, 3)


# --- refusals -------------------------------------------------------------------------------------

def test_what_a_stored_kernel_cannot_do_is_refused_clearly(stores, arch, data):
    x, x_test, y = data
    stored = stores["ntk"]
    with pytest.raises(ValueError, match="^jitter: .*diag_reg"):
        KernelPrior(stored, jitter="auto")
    with pytest.raises(ValueError, match="^probes: "):
        KernelPrior(stored.load(), probes=8)
    with pytest.raises(ValueError, match="^H: the stored kernel .* cross kernel"):
        KernelPrior(stores["cross"])
    prior = KernelPrior(stored, diag_reg=DIAG_REG)
    with pytest.raises(ValueError, match="^k: a stored kernel gives its top k"):
        prior.modes(y)
    with pytest.raises(ValueError, match="^eigenvalues: "):
        prior.eigenvalues
    with pytest.raises(ValueError, match="^k: pass the number of eigenpairs"):
        eigenmodes(stored)
    with pytest.raises(ValueError, match="^t: predictions at finite training times"):
        predict(stored, x, y, x_test, kind="ntk", t=100.0, diag_reg=DIAG_REG)
    with pytest.raises(ValueError, match="^x_test: predictions at the training inputs"):
        predict(stored, x, y, None, kind="ntkgp", diag_reg=DIAG_REG)
    with pytest.raises(ValueError, match="provides only ntk, not nngp"):
        predict(stored, x, y, x_test, kind="nngp")
    with pytest.raises(ValueError, match=r"^arch_or_kernel\['ntk'\]: .* holds the nngp"):
        predict({"ntk": stores["nngp"]}, x, y, x_test, kind="ntkgp")
    with pytest.raises(ValueError, match=r"^arch_or_kernel\['nngp'\]: mixes an in-memory kernel"):
        predict({"ntk": stored, "nngp": stores["nngp"].load()}, x, y, x_test, kind="gd-ensemble")
    with pytest.raises(ValueError, match="^x_train: differs from the inputs"):
        predict(stored, x + 1, y, x_test, kind="ntkgp")
    with pytest.raises(ValueError, match="does not reproduce the stored kernel"):
        stores["impostor"].architecture()
    assert str(stored.architecture()) == str(arch)


def test_prior_without_a_ridge(stores, data):
    # no ridge: CG runs on K itself (Nystrom-preconditioned), error <= ||r||^2 / lambda_min(K); the
    # reference solve carries round-off up to ~10 kappa eps relative (kappa = 4e5 here)
    y = data[2][:, 0]
    h = stores["nngp"].load().numpy()
    exact = float(y.numpy() @ scipy.linalg.solve(h, y.numpy(), assume_a="pos"))
    w = scipy.linalg.eigvalsh(h)
    bound = (CG_TOL * float(y.norm())) ** 2 / w[0] + 10 * w[-1] / w[0] * np.finfo(float).eps * exact
    assert KernelPrior(stores["nngp"]).rkhs_norm(y) == pytest.approx(exact, abs=bound)
