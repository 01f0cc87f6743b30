"""Kernel matrices on Dask into zarr stores (resumable), and the streamed operators over them.

One LocalCluster of 2 single-threaded worker processes serves the whole module. References:
the same tiles computed in this process (exact equality), the whole-matrix kernels of
``arch.kernel`` / ``empirical_ntk`` (round-off), and dense numpy / scipy linear algebra.
"""

import os
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

import cloudpickle  # noqa: E402  (installed with dask)
import zarr  # noqa: E402

import ntkprior as ntp  # noqa: E402
from ntkprior.scale.distributed import kernel_blocks_in_memory, kernel_matrix, local_cluster  # noqa: E402
from ntkprior.scale.stored import ConvergenceWarning, StoredKernel, require  # noqa: E402

# the misbehaving architectures below are defined here, and the workers cannot import this file
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BLOCK = 128


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client
    with local_cluster(2, dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def arch():
    return ntp.serial(*[layer for _ in range(3) for layer in
                        (ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU())], ntp.Dense(1))


@pytest.fixture(scope="module")
def x():
    # 300 rows = tiles of 128, 128 and 44: a ragged edge tile in both directions
    return torch.randn(300, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(arch, x):
    return kernel_blocks_in_memory(arch, x, block=BLOCK)


class Misbehaving:
    """The same architecture (same spec, so the same store) whose kernel misbehaves on some tiles.

    A tile is named by the first entries of its row and column inputs (None: a diagonal tile).
    ``mode``: "raise" on the named tiles; "only" raise on every other tile; "exit" kill the
    worker process on the named tiles, once (a marker file remembers). ``armed``: a path; it
    misbehaves only while that file exists (so that the same object, identified by its content,
    can fail and then resume its own store).
    """

    def __init__(self, arch, x, tiles, mode, marker=None, armed=None):
        self.arch, self.mode, self.marker, self.armed = arch, mode, marker, armed
        self.keys = {(float(x[i * BLOCK, 0]), None if i == j else float(x[j * BLOCK, 0])) for i, j in tiles}

    def __str__(self):
        return str(self.arch)

    def kernel(self, x1, x2=None, **options):
        if len(x1) == 2:    # the probe kernel_matrix runs in the calling process before starting
            return self.arch.kernel(x1, x2, **options)
        named = (float(x1[0, 0]), None if x2 is None else float(x2[0, 0])) in self.keys
        if self.armed is not None and not os.path.exists(self.armed):
            return self.arch.kernel(x1, x2, **options)
        if self.mode == "exit" and named and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        if (self.mode == "raise" and named) or (self.mode == "only" and not named):
            raise RuntimeError("simulated failure")
        return self.arch.kernel(x1, x2, **options)


def tiles_of(n, symmetric=True):
    nb = -(-n // BLOCK)
    return [(i, j) for i in range(nb) for j in range(i if symmetric else 0, nb)]


def tile(matrix, i, j):
    return matrix[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]


# --- computing the matrix ----------------------------------------------------------------------

def test_workers_get_the_malloc_fix(client):
    values = client.run(lambda: tuple(os.environ.get(name) for name in
                                      ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")))
    assert set(values.values()) == {("1073741824", "1073741824", "1")}


def test_symmetric_kernel_equals_in_memory(client, arch, x, reference, tmp_path):
    stored = kernel_matrix(arch, x, store=tmp_path / "K.zarr", block=BLOCK, client=client)
    matrix = stored.load()
    assert torch.equal(matrix, reference)            # same tiles, same arithmetic: bit for bit
    assert torch.equal(matrix, matrix.T)             # the lower triangle is the mirrored upper one
    raw = zarr.open_group(str(tmp_path / "K.zarr"), mode="r")["kernel"][...]
    assert np.isnan(raw[BLOCK:, :BLOCK]).all()       # ... and is not stored
    whole = arch.kernel(x).ntk                       # other tiling: round-off only
    assert torch.allclose(matrix, whole, rtol=1e-13, atol=1e-13 * float(whole.abs().max()))
    assert (stored.kind, stored.spec, stored.shape, stored.symmetric) == ("ntk", str(arch), (300, 300), True)
    assert torch.equal(stored.x1, x)


def test_cross_nngp_equals_in_memory(client, arch, x, tmp_path):
    x2 = x[:170] * 0.7 + 0.1
    stored = kernel_matrix(arch, x, x2, kind="nngp", store=tmp_path / "K.zarr", block=BLOCK,
                           client=client.scheduler.address)    # a scheduler address works too
    assert torch.equal(stored.load(), kernel_blocks_in_memory(arch, x, x2, kind="nngp", block=BLOCK))
    whole = arch.kernel(x, x2).nngp
    assert torch.allclose(stored.load(), whole, rtol=1e-13, atol=1e-13 * float(whole.abs().max()))
    assert stored.shape == (300, 170) and not stored.symmetric and torch.equal(stored.x2, x2)


def test_empirical_kernel_equals_in_memory(client, arch, x, tmp_path):
    empirical = pytest.importorskip("ntkprior.kernels.empirical")
    torch.manual_seed(3)                # two outputs: the stored kernel is per output unit ("mean")
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
    xs, x2 = x[:200], x[200:]
    stored = kernel_matrix(model, xs, store=tmp_path / "sym.zarr", block=BLOCK, client=client)
    assert torch.equal(stored.load(), kernel_blocks_in_memory(model, xs, block=BLOCK))
    whole = empirical.empirical_ntk(model, xs, output="mean")
    assert torch.allclose(stored.load(), whole, rtol=1e-12, atol=1e-12 * float(whole.abs().max()))
    cross = kernel_matrix(model, xs, x2, store=tmp_path / "cross.zarr", block=BLOCK, client=client)
    assert torch.equal(cross.load(), kernel_blocks_in_memory(model, xs, x2, block=BLOCK))
    assert "empirical ntk" in cross.spec


def test_default_client_starts_and_closes_a_local_cluster(arch, x, tmp_path, monkeypatch):
    import ntkprior.scale.distributed as module
    started = []

    def one_worker():       # the default cluster, with one worker instead of one per core: cheaper
        started.append(local_cluster(1, dashboard_address=":0"))
        return started[-1]

    monkeypatch.setattr(module, "local_cluster", one_worker)
    stored = kernel_matrix(arch, x[:40], store=tmp_path / "K.zarr", block=BLOCK)
    assert torch.equal(stored.load(), kernel_blocks_in_memory(arch, x[:40], block=BLOCK))
    assert len(started) == 1 and started[0].status.name == "closed"


# --- interruption and resumption ------------------------------------------------------------------

def test_failed_run_resumes_to_the_identical_matrix(client, arch, x, reference, tmp_path):
    store, armed = tmp_path / "K.zarr", tmp_path / "armed"
    armed.touch()
    failing = Misbehaving(arch, x, [(1, 2)], "raise", armed=str(armed))
    with pytest.raises(RuntimeError, match=r"block \(1, 2\) failed.*call kernel_matrix again"):
        kernel_matrix(failing, x, store=store, block=BLOCK, client=client)
    group = zarr.open_group(str(store), mode="r")
    done = group["done"][...]
    assert not done[1, 2]
    for i, j in tiles_of(300):                        # what is marked complete is right
        if done[i, j]:
            assert np.array_equal(tile(group["kernel"][...], i, j), tile(reference.numpy(), i, j))
    with pytest.raises(ValueError, match="holds only .* blocks"):
        StoredKernel(store)
    # the same spec string, another object: not the same kernel source, so not resumed
    with pytest.raises(ValueError, match="different arguments.*architecture"):
        kernel_matrix(arch, x, store=store, block=BLOCK, client=client)
    armed.unlink()                                    # the failure was transient: the same source resumes
    again = Misbehaving(arch, x, [(1, 2)], "raise", armed=str(armed))
    assert torch.equal(kernel_matrix(again, x, store=store, block=BLOCK, client=client).load(), reference)


def test_killed_worker_does_not_lose_the_run(client, arch, x, reference, tmp_path):
    marker = str(tmp_path / "killed")
    stored = kernel_matrix(Misbehaving(arch, x, [(0, 1)], "exit", marker), x, store=tmp_path / "K.zarr",
                           block=BLOCK, client=client)
    assert os.path.exists(marker)                     # a worker did die mid-run
    assert torch.equal(stored.load(), reference)


def test_written_but_unmarked_block_is_recomputed(client, arch, x, reference, tmp_path):
    store, armed = tmp_path / "K.zarr", tmp_path / "armed"
    only = Misbehaving(arch, x, [(0, 1)], "only", armed=str(armed))
    kernel_matrix(only, x, store=store, block=BLOCK, client=client)      # not armed yet: computes all
    group = zarr.open_group(str(store), mode="r+")
    # an interrupted write: half the tile garbage, the flag not (or no longer) set
    group["kernel"][0:BLOCK // 2, BLOCK:2 * BLOCK] = 0.0
    group["done"][0, 1] = 0
    # resuming may compute tile (0, 1) and nothing else
    armed.touch()
    stored = kernel_matrix(only, x, store=store, block=BLOCK, client=client)
    assert torch.equal(stored.load(), reference)


def test_store_from_other_arguments_is_refused(client, arch, x, tmp_path):
    store = tmp_path / "K.zarr"
    kernel_matrix(arch, x[:100], store=store, block=BLOCK, client=client)
    other = x[:100].clone()
    other[5, 2] += 1e-9
    cases = [((arch, other), {}, "the inputs"), ((arch, x[:100]), {"kind": "nngp"}, "the kernel kind"),
             ((arch.with_width(64), x[:100]), {}, "architecture"),
             ((ntp.serial(ntp.Dense(1, weight_std=2.0)), x[:100]), {}, "architecture"),
             ((arch, x[:100]), {"block": 64}, "the block size"),
             ((arch, x[:100], x[:50]), {}, "symmetric vs cross")]
    for args, options, what in cases:
        with pytest.raises(ValueError, match=f"different arguments.*{what}.*overwrite=True"):
            kernel_matrix(*args, store=store, block=options.pop("block", BLOCK), client=client, **options)
    stored = kernel_matrix(arch, other, store=store, block=BLOCK, client=client, overwrite=True)
    assert torch.equal(stored.load(), kernel_blocks_in_memory(arch, other, block=BLOCK))
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("a", shape=(2,), dtype="f8")
    with pytest.raises(ValueError, match="not an ntkprior kernel store"):
        kernel_matrix(arch, x, store=tmp_path / "other.zarr", block=BLOCK, client=client)
    with pytest.raises(ValueError, match="not an ntkprior kernel store"):
        StoredKernel(tmp_path / "other.zarr")


def test_bad_arguments_are_named(arch, x, tmp_path):
    store = tmp_path / "K.zarr"
    model = torch.nn.Linear(6, 1).double()
    bad_x = x.clone()
    bad_x[3, 1] = float("nan")
    cases = [((arch, x), {"kind": "cov"}, "kind"), ((model, x), {"kind": "nngp"}, "kind"),
             (("dense(1)", x), {}, "arch_or_model"), ((arch, bad_x), {}, "x1"),
             ((arch, x, x[:, :3]), {}, "x2"), ((arch, x), {"block": 0}, "block"),
             ((arch, x), {"client": 3}, "client"), ((arch, x), {"torch_threads": 0}, "torch_threads")]
    for args, options, name in cases:
        with pytest.raises(ValueError, match=f"^{name}:"):
            kernel_matrix(*args, store=store, **options)
    with pytest.raises(ValueError, match="^x1: the model could not be applied"):
        kernel_matrix(torch.nn.Linear(5, 1).double(), x, store=store)   # empirical_ntk's own error, at once
    assert not store.exists()


def test_missing_dependency_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r'pip install "ntkprior\[distributed\]"'):
        require("zarr")


# --- streamed operators on a stored kernel (n = 3000) ------------------------------------------

@pytest.fixture(scope="module")
def big(client, arch, tmp_path_factory):
    x = torch.randn(3000, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    stored = kernel_matrix(arch, x, store=tmp_path_factory.mktemp("big") / "K.zarr", block=1000, client=client)
    dense = stored.load().numpy()
    w, v = scipy.linalg.eigh(dense, subset_by_index=[3000 - 21, 2999])   # the top 21, ascending
    return stored, dense, w[::-1], v[:, ::-1]


def test_products_match_dense(big, client, arch, x, tmp_path):
    stored, dense, _, _ = big
    v = np.random.default_rng(0).standard_normal((3000, 3))
    scale = np.abs(dense).sum(1).max() * np.abs(v).max()    # bound on |K v|: round-off relative to it
    streamed = StoredKernel(stored.location, max_memory="20MB")        # tile by tile, not kept
    through_zarr = StoredKernel(stored.location, max_memory="20MB")
    through_zarr._chunk_file = None                                    # zarr's reader, not readinto
    assert np.array_equal(through_zarr.matmat(v).numpy(), streamed.matmat(v).numpy())
    for op in (stored, streamed):
        assert np.abs(op.matmat(v).numpy() - dense @ v).max() < 1e-13 * scale
        assert np.abs(op.matvec(v[:, 0]).numpy() - dense @ v[:, 0]).max() < 1e-13 * scale
        assert np.abs(op.as_linear_operator() @ v[:, 1] - dense @ v[:, 1]).max() < 1e-13 * scale
    assert np.array_equal(stored.diagonal().numpy(), np.diagonal(dense))
    ridge = stored.regularised(0.5, reg="absolute")
    assert np.abs(ridge.matvec(v).numpy() - (dense @ v + 0.5 * v)).max() < 1e-13 * scale
    assert ridge.load()[7, 7] == dense[7, 7] + 0.5 and stored.ridge == 0.0
    cross = kernel_matrix(arch, x, x[:200] + 1, store=tmp_path / "C.zarr", block=BLOCK, client=client)
    c, w = cross.load().numpy(), v[:300, :2]
    op = cross.as_linear_operator()
    assert np.abs(op.rmatmat(w) - c.T @ w).max() < 1e-13 * np.abs(c).max() * 300 * np.abs(w).max()
    with pytest.raises(ValueError, match="^solve: needs a symmetric kernel"):
        cross.solve(np.ones(300))
    with pytest.raises(ValueError, match=r"^V: expected shape \(3000, k\)"):
        stored.matmat(np.ones(3000))


def test_cg_solve_matches_dense(big):
    stored, dense, top, _ = big
    op = stored.regularised(1e-2)
    mu = op.ridge
    assert mu == pytest.approx(1e-2 * np.diagonal(dense).mean(), rel=1e-15)
    b = np.random.default_rng(1).standard_normal((3000, 2))
    x = op.solve(b, tol=1e-10).numpy()
    a = dense + mu * np.eye(3000)
    exact = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), b)
    # CG certifies the (recursively updated) residual <= tol; the true one may drift by ~κ·eps ≈ 1e-11
    residual = np.linalg.norm(a @ x - b, axis=0) / np.linalg.norm(b, axis=0)
    assert (residual < 2e-10).all()
    kappa = (top[0] + mu) / mu
    assert np.linalg.norm(x - exact) / np.linalg.norm(exact) < kappa * 2e-10   # error <= κ · residual
    assert op.quad_form(b[:, 0], tol=1e-10) == pytest.approx(b[:, 0] @ exact[:, 0], rel=kappa * 2e-10)
    with pytest.warns(ConvergenceWarning, match="stopped after 3 iterations"):
        op.solve(b[:, 0], maxiter=3)


def test_jacobi_and_plain_cg(client, arch, x, tmp_path):
    stored = kernel_matrix(arch, x, store=tmp_path / "K.zarr", block=BLOCK, client=client).regularised(1e-2)
    a = stored.load().numpy()
    b = np.random.default_rng(2).standard_normal(300)
    for preconditioner in ("jacobi", None):
        x_cg = stored.solve(b, tol=1e-10, preconditioner=preconditioner).numpy()
        assert np.linalg.norm(a @ x_cg - b) < 2e-10 * np.linalg.norm(b)
    with pytest.raises(ValueError, match="^preconditioner:"):
        stored.solve(b, preconditioner="ilu")


def test_block_lanczos_matches_dense(big):
    stored, _, w, v = big
    tol, k = 1e-8, 20
    streamed = StoredKernel(stored.location, max_memory="20MB")      # streamed tile by tile
    values, vectors = streamed.eigsh(k, tol=tol)
    # the residual certificate ‖K u − θ u‖ <= tol·θ_1 bounds each eigenvalue error ...
    assert np.abs(values.numpy() - w[:k]).max() <= tol * w[0]
    # ... and each eigenvector's angle by residual / gap (Davis–Kahan)
    gaps = np.array([np.abs(np.delete(w, i) - w[i]).min() for i in range(k)])
    sines = np.sqrt(np.clip(1 - np.sum(vectors.numpy() * v[:, :k], 0) ** 2, 0, None))
    assert (sines <= tol * w[0] / gaps + 1e-7).all()
    assert (vectors.abs().argmax(0) == vectors.argmax(0)).all()     # largest entry positive


def test_eigenmodes_accepts_a_stored_kernel(client, arch, x, tmp_path):
    spectrum = pytest.importorskip("ntkprior.prior.spectrum")
    stored = kernel_matrix(arch, x, store=tmp_path / "K.zarr", block=BLOCK, client=client)
    modes = spectrum.eigenmodes(stored, k=5)
    values, vectors = stored.eigsh(5, tol=1e-10)
    assert torch.allclose(modes.values, values, rtol=1e-9)
    assert torch.allclose(modes.vectors, vectors, atol=1e-6)


def test_slq_logdet_within_its_standard_error(big):
    stored, dense, _, _ = big
    op = stored.regularised(1e-3)
    exact = 2 * np.log(np.diagonal(scipy.linalg.cholesky(dense + op.ridge * np.eye(3000)))).sum()
    value, std = op.logdet(return_std=True)
    # 4 standard errors (fixed seed); the stated accuracy: std about 1 % of |log det| here
    assert abs(value - exact) < 4 * std
    assert std < 0.015 * abs(exact)
