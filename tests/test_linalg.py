"""SymmetricPSD: validation, explicit ridge, cached factorisations, against numpy / scipy."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import ntkprior.prior.linalg

from ntkprior.prior.linalg import (COND_WARN, IllConditionedWarning, JitterWarning, SymmetricPSD,
                             as_symmetric_psd, fix_signs)


def random_spd(rng, n=30, rank=None, scale=1.0):
    a = rng.normal(size=(n, rank or n + 5))
    return scale * a @ a.T / a.shape[1]


def matrix_with_spectrum(rng, eigenvalues):
    q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues), len(eigenvalues))))
    return (q * np.asarray(eigenvalues)) @ q.T


# --------------------------------------------------------------------------- operations
def test_solve_logdet_quad_form_match_numpy(rng):
    h = random_spd(rng)
    b = rng.normal(size=(30, 3))
    s = SymmetricPSD(h)
    # float64 on a matrix with condition number ~1e2: agreement to ~1e-12 relative
    np.testing.assert_allclose(s.solve(b).numpy(), np.linalg.solve(h, b), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s.solve(b[:, 0]).numpy(), np.linalg.solve(h, b[:, 0]), rtol=1e-10)
    assert s.logdet() == pytest.approx(np.linalg.slogdet(h)[1], rel=1e-12)
    assert s.quad_form(b) == pytest.approx(np.trace(b.T @ np.linalg.solve(h, b)), rel=1e-10)
    np.testing.assert_allclose(s.matvec(b).numpy(), h @ b, rtol=1e-13)
    assert s.shape == (30, 30) and s.n == 30


def test_factorisations_are_computed_once(rng, monkeypatch):
    s = SymmetricPSD(random_spd(rng))
    L = s.cholesky()
    calls = []
    monkeypatch.setattr(ntkprior.prior.linalg, "_cholesky", lambda *a, **k: calls.append(1))
    s.solve(np.ones(30)), s.logdet(), s.quad_form(np.ones(30))
    assert s.cholesky() is L and not calls
    assert s.eigh() is s.eigh()


def test_eigh_ascending_orthonormal_and_reconstructs(rng):
    h = random_spd(rng)
    w, v = SymmetricPSD(h).eigh()
    assert torch.all(w[1:] >= w[:-1])
    np.testing.assert_allclose((v * w) @ v.T, h, atol=1e-12)
    np.testing.assert_allclose(v.T @ v, np.eye(30), atol=1e-12)


def test_eigh_clips_round_off_negatives_to_zero(rng):
    h = random_spd(rng, rank=5)            # rank 5: 25 eigenvalues are round-off around 0
    w_raw = np.linalg.eigvalsh(h)
    assert w_raw.min() < 0                 # the test needs a negative round-off eigenvalue
    w, _ = SymmetricPSD(h).eigh()
    assert float(w.min()) == 0.0
    np.testing.assert_allclose(w[-5:].numpy(), w_raw[-5:], rtol=1e-12)


def test_apply_function_matches_scipy_expm_and_batches_over_times(rng):
    h = random_spd(rng)
    b = rng.normal(size=(30, 2))
    s = SymmetricPSD(h)
    times = torch.tensor([0.0, 0.5, 2.0])
    out = s.apply_function(lambda w: torch.exp(-times[:, None] * w), b)
    assert out.shape == (3, 30, 2)
    for i, t in enumerate(times.tolist()):
        np.testing.assert_allclose(out[i].numpy(), scipy.linalg.expm(-t * h) @ b, atol=1e-12)
    np.testing.assert_allclose(s.apply_function(lambda w: w, b[:, 0]).numpy(), h @ b[:, 0],
                               atol=1e-12)


def test_ridge_relative_and_absolute(rng):
    h = random_spd(rng)
    rel = SymmetricPSD(h, diag_reg=0.1)
    np.testing.assert_allclose(rel.matrix.numpy(), h + 0.1 * np.mean(np.diag(h)) * np.eye(30))
    assert rel.ridge == pytest.approx(0.1 * np.mean(np.diag(h)))
    ab = SymmetricPSD(h, diag_reg=0.1, reg="absolute")
    np.testing.assert_allclose(ab.matrix.numpy(), h + 0.1 * np.eye(30))
    # the caller's array is not modified
    assert not np.shares_memory(ab.matrix.numpy(), h)


def test_accepts_round_off_asymmetry_of_float32_input(rng):
    h = random_spd(rng).astype(np.float32)
    h[0, 1] += 1e-6                        # float32 round-off level
    s = SymmetricPSD(h)
    assert torch.equal(s.matrix, s.matrix.T) and s.matrix.dtype == torch.float64



@pytest.mark.parametrize("perturbed", [False, True])
def test_the_validation_pass_against_numpy_on_tiles_symmetric_or_not(rng, perturbed):
    """The one tiled pass (symmetrised copy, max |M - M^T|, max |S|, row sums of |S|) on 600 x 600
    (tiles of 256: full, partial, on and off the diagonal), exactly symmetric or with some tiles not."""
    h = random_spd(rng, n=600)
    if perturbed:                                    # one off-diagonal tile pair and one diagonal tile
        h[10, 300] += 1e-3
        h[520, 590] -= 2e-3
    sym, asym, scale, rows = ntkprior.prior.linalg._symmetrised(torch.from_numpy(h))
    expected = (h + h.T) / 2
    assert np.array_equal(sym.numpy(), expected)
    assert asym == np.abs(h - h.T).max() and scale == np.abs(expected).max()
    np.testing.assert_allclose(rows.numpy(), np.abs(expected).sum(1), rtol=1e-13)
    h[5, 400] = h[400, 5] = np.nan                   # symmetric NaN: no tile compares equal with it
    assert math.isnan(ntkprior.prior.linalg._symmetrised(torch.from_numpy(h))[1])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, match", [
    (np.ones((3, 4)), "square"),
    (np.ones(3), "square"),
    (np.zeros((0, 0)), "empty"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
    (np.array([[1.0, 0.5], [0.4, 1.0]]), "not symmetric"),
    (np.array([[-1.0, 0.0], [0.0, 1.0]]), "diagonal entry 0 is negative"),
    ([["a", "b"]], "expected numbers"),
])
def test_bad_matrices_are_rejected_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        SymmetricPSD(bad, name="my kernel")


@pytest.mark.parametrize("kwargs, match", [
    ({"diag_reg": -1.0}, "diag_reg"), ({"diag_reg": float("nan")}, "diag_reg"),
    ({"reg": "percent"}, "reg"), ({"jitter": 1e-6}, "jitter"),
])
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SymmetricPSD(np.eye(2), **kwargs)


def test_rhs_shape_mismatch_is_a_clear_error(rng):
    s = SymmetricPSD(random_spd(rng))
    with pytest.raises(ValueError, match=r"b: expected shape \(30,\)"):
        s.solve(np.ones(29))


def test_negative_eigenvalue_rejected_with_the_numbers(rng):
    h = matrix_with_spectrum(rng, [-1e-3, 0.5, 1.0, 2.0])
    for factorise in ("eigh", "cholesky"):
        with pytest.raises(ValueError, match=r"not positive semi-definite: smallest eigenvalue "
                                             r"-0\.001.*largest 2\b"):
            getattr(SymmetricPSD(h, name="H"), factorise)()
    # jitter='auto' does not hide a matrix that is not PSD
    with pytest.raises(ValueError, match="not positive semi-definite"):
        SymmetricPSD(h, jitter="auto").cholesky()


def test_eigenvalue_just_inside_the_tolerance_is_accepted(rng):
    w = SymmetricPSD(matrix_with_spectrum(rng, [-1e-9, 0.5, 1.0, 2.0]), diag_reg=1e-6).eigh()[0]
    assert float(w.min()) == pytest.approx(-1e-9 + 1e-6 * 0.875, rel=1e-5)


def test_singular_matrix_error_reports_eigenvalue_condition_and_fix():
    x = np.linspace(-1, 1, 20)[:, None]
    h = x @ x.T + 1.0                      # rank 2, like a 1-D kernel without biases
    with pytest.raises(ValueError) as info:
        SymmetricPSD(h, name="NTK").cholesky()
    msg = str(info.value)
    for part in ("NTK: is numerically singular", "smallest eigenvalue", "condition number",
                 "diag_reg=", "jitter='auto'"):
        assert part in msg
    suggested = float(msg.split("diag_reg=")[1].split()[0])
    # the suggested ridge works and leaves a condition number below the warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SymmetricPSD(h, diag_reg=suggested).condition_number() < COND_WARN


def test_jitter_auto_adds_smallest_grid_value_that_works_and_warns(rng):
    # an eigenvalue of -3e-10 is inside the PSD tolerance; Cholesky needs jitter > 3e-10
    h = matrix_with_spectrum(rng, [-3e-10, 1.0, 2.0, 3.0])
    s = SymmetricPSD(h, jitter="auto")
    w_before = s.eigh()[0].clone()
    with pytest.warns(JitterWarning, match=r"added [0-9.e+-]+ \(= 1e-\d+ x mean diagonal"):
        s.cholesky()
    rel = s.jitter / s.mean_diagonal
    assert rel == pytest.approx(1e-9)       # 1.5e-9 > 3e-10 > 1.5e-10
    # independent check: one decade less does not factorise
    assert torch.linalg.cholesky_ex(torch.tensor(h + 0.1 * s.jitter * np.eye(4)))[1] != 0
    np.testing.assert_allclose(s.matrix.numpy(), h + s.jitter * np.eye(4), atol=1e-15)
    # the cached eigenvalues follow the jitter
    np.testing.assert_allclose(s.eigh()[0].numpy(), (w_before + s.jitter).numpy())



def test_eigenvalues_alone_match_scipy_are_checked_and_come_from_a_cached_decomposition(rng, monkeypatch):
    h = random_spd(rng, n=50)
    s = SymmetricPSD(h)
    np.testing.assert_allclose(s.eigvalsh().numpy(), scipy.linalg.eigvalsh(h), rtol=1e-12)
    assert s.eigvalsh() is s.eigvalsh()
    full = SymmetricPSD(h)
    full.eigh()
    monkeypatch.setattr(ntkprior.prior.linalg, "_eigvalsh", lambda m: pytest.fail("recomputed"))
    assert full.eigvalsh() is full.eigh()[0]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not positive semi-definite"):
        SymmetricPSD(matrix_with_spectrum(rng, [-1e-3, 1.0, 2.0])).eigvalsh()


def test_eigenvalues_cached_before_a_jitter_follow_it(rng):
    h = matrix_with_spectrum(rng, np.r_[-3e-10, np.linspace(1.0, 3.0, 39)])
    s = SymmetricPSD(h, jitter="auto")
    s.eigvalsh()
    s.top_eigh(2)                            # both cached before the factorisation adds the jitter
    with pytest.warns(JitterWarning):
        s.cholesky()
    exact = scipy.linalg.eigvalsh(s.matrix.numpy())
    # the smallest was clipped from -3e-10 to 0 before the shift
    np.testing.assert_allclose(s.eigvalsh().numpy(), exact, rtol=0, atol=4e-10)
    np.testing.assert_allclose(s.top_eigh(2)[0].numpy(), exact[::-1][:2], rtol=1e-13)


def test_ill_conditioned_matrix_warns_with_condition_number(rng):
    h = matrix_with_spectrum(rng, np.logspace(-12, 0, 10))
    s = SymmetricPSD(h)
    with pytest.warns(IllConditionedWarning, match=r"condition number [0-9.]+e\+1[12]"):
        s.cholesky()
    # LAPACK's 1-norm estimate is within a factor n of the 2-norm condition number 1e12
    assert 1e11 < s.condition_number() < 1e13



@pytest.mark.parametrize("kind", ["random", "graded", "smooth kernel", "one"])
def test_condition_estimate_is_a_lower_bound_of_the_exact_one(rng, kind):
    """The 1-norm condition estimate (LAPACK pocon from the factor) against the exact
    ||M||_1 ||M^-1||_1 from numpy's inverse."""
    if kind == "random":
        h = random_spd(rng, n=80)
    elif kind == "graded":
        h = matrix_with_spectrum(rng, np.logspace(-9, 0, 60))
    elif kind == "smooth kernel":
        x = np.sort(rng.uniform(-1, 1, 120))
        h = np.exp(-2.0 * (x[:, None] - x[None]) ** 2) + 1e-7 * np.eye(120)
    else:
        h = np.array([[2.5]])
    h = (h + h.T) / 2
    s = SymmetricPSD(h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        cond = s.condition_number()
    exact = np.abs(h).sum(0).max() * np.abs(np.linalg.inv(h)).sum(0).max()
    assert exact / 3 <= cond <= exact * (1 + 1e-8)         # a lower bound, within Hager's factor 3


# --------------------------------------------------------------------------- helpers
def test_whiten_gives_the_quadratic_form(rng):
    h = random_spd(rng)
    b = rng.normal(size=(30, 2))
    s = SymmetricPSD(h)
    z = s.whiten(b).numpy()
    np.testing.assert_allclose(z.T @ z, b.T @ np.linalg.solve(h, b), rtol=1e-10)
    np.testing.assert_allclose(s.cholesky().numpy() @ z, b, atol=1e-12)


def test_fix_signs_largest_entry_positive_first_of_ties_decides():
    v = torch.tensor([[0.1, -0.5, 0.5], [-0.9, 0.5, -0.5], [0.2, 0.1, 0.0]])
    out = fix_signs(v.clone())
    assert out[:, 0].tolist() == pytest.approx([-0.1, 0.9, -0.2])    # largest |entry| made positive
    assert out[:, 1].tolist() == pytest.approx([0.5, -0.5, -0.1])    # tie: the first one decides
    assert out[:, 2].tolist() == pytest.approx([0.5, -0.5, 0.0])
    w, vecs = SymmetricPSD(random_spd(np.random.default_rng(1))).eigh()
    top = vecs.abs().argmax(dim=0)
    assert torch.all(vecs[top, torch.arange(30)] > 0)


def test_as_symmetric_psd_reuses_instances_and_refuses_a_second_ridge(rng):
    s = SymmetricPSD(random_spd(rng), diag_reg=0.1)
    assert as_symmetric_psd(s) is s
    with pytest.raises(ValueError, match="already a SymmetricPSD with ridge"):
        as_symmetric_psd(s, diag_reg=0.2)
    assert isinstance(as_symmetric_psd(np.eye(3)), SymmetricPSD)
    assert s.diagonal_shift == s.ridge


def test_warnings_point_at_the_callers_line(rng):
    h = matrix_with_spectrum(rng, np.logspace(-12, 0, 10))
    with pytest.warns(IllConditionedWarning) as record:
        SymmetricPSD(h).solve(np.ones(10))
    assert record[0].filename == __file__
