"""Eigenmodes against the spectral facts of MATH.md section 5, Nyström, Lanczos, signs."""

import itertools
import math

import numpy as np
import pytest
import torch

from ntkprior.prior.linalg import SymmetricPSD
from ntkprior.prior.sources import KernelBlocks
from ntkprior.prior.spectrum import count_sign_changes, eigenmodes


def relu_ntk(x1, x2, w1=1.0, b1=1.0, w2=math.sqrt(2), b2=0.0):
    """2-layer ReLU NTK, NTK parameterisation, input kernel x.x'/d (closed form of MATH.md section 2),
    written out here independently of ntkprior.kernels."""
    d = x1.shape[1]
    k = w1**2 * x1 @ x2.T / d + b1**2
    k1 = w1**2 * (x1**2).sum(1) / d + b1**2
    k2 = w1**2 * (x2**2).sum(1) / d + b1**2
    s = np.sqrt(np.maximum(k1[:, None] * k2[None] - k**2, 0))
    theta = np.arctan2(s, k)
    nngp = (s + (np.pi - theta) * k) / (2 * np.pi)
    return w2**2 * nngp + b2**2 + w2**2 * k * (np.pi - theta) / (2 * np.pi)


def kappa(u):
    """NTK of the bias-free 2-layer ReLU net on the sphere (Bietti & Mairal 2019): MATH.md section 2."""
    u = np.clip(u, -1, 1)
    return (2 * u * (np.pi - np.arccos(u)) + np.sqrt(1 - u**2)) / np.pi


# --------------------------------------------------------------------------- MATH.md section 5
def test_sphere_relu_ntk_eigenvalues_are_the_exact_funk_hecke_values():
    # Gauss-Legendre in z = cos(theta) x uniform azimuth: a quadrature rule for the uniform probability
    # measure on S^2; the operator's eigenvalues are those of W^1/2 K W^1/2.
    nz = 24
    z, wz = np.polynomial.legendre.leggauss(nz)
    phi = np.pi * np.arange(2 * nz) / nz
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz**2)
    x = np.stack([r * np.cos(pp), r * np.sin(pp), zz], -1).reshape(-1, 3)
    sw = np.sqrt(np.repeat(wz, 2 * nz) / (4 * nz))
    modes = eigenmodes(sw[:, None] * kappa(x @ x.T) * sw[None], k=48)
    # degree k, exact eigenvalue (MATH.md), multiplicity 2k+1, and the relative tolerance: the
    # quadrature error of this 1152-point grid, measured to fall like nz^-3 (4.4 % for degree 8 at
    # nz = 24, 1.8 % at nz = 32); degree 1 is exact because odd degrees >= 3 vanish.
    groups = [(0, 1 / 2, 1e-4), (1, 1 / 3, 1e-10), (2, 5 / 64, 1e-3), (4, 1 / 192, 1e-2),
              (6, 23 / 16384, 3e-2), (8, 19 / 32768, 6e-2)]
    start = 0
    for degree, exact, rtol in groups:
        group = modes.values[start:start + 2 * degree + 1].numpy()
        np.testing.assert_allclose(group, exact, rtol=rtol, err_msg=f"degree {degree}")
        start += 2 * degree + 1
    # odd degrees >= 3 vanish: the grid is symmetric under x -> -x, and only the 3 degree-1
    # eigenvectors among the top 48 are odd.
    full = eigenmodes(sw[:, None] * kappa(x @ x.T) * sw[None])
    mirror = np.array([np.argmin(((x + xi) ** 2).sum(1)) for xi in x])
    v = full.vectors.numpy()
    odd = np.abs(v[mirror] + v).max(axis=0) < 1e-8
    assert odd[:48].sum() == 3
    assert full.values.numpy()[odd].max() == pytest.approx(1 / 3, rel=1e-10)
    # the other odd modes are round-off: sqrt(1 - u^2) near antipodal pairs (u = -1) turns 1e-16
    # errors in u into ~1e-8 in the kernel, ~1e-11 after the quadrature weights
    assert np.sort(full.values.numpy()[odd])[-4] < 1e-9


def test_circulant_kernel_has_fourier_eigenvectors():
    n = 64
    angle = 2 * np.pi * np.arange(n) / n
    x = np.stack([np.cos(angle), np.sin(angle)], 1)
    h = relu_ntk(x, x)
    modes = eigenmodes(h)
    # eigenvalues of a circulant matrix: the DFT of its first row
    dft = np.array([np.sum(h[0] * np.cos(2 * np.pi * f * np.arange(n) / n)) for f in range(n)])
    np.testing.assert_allclose(np.sort(modes.values.numpy()), np.sort(dft), rtol=1e-10, atol=1e-12)
    for i in range(n):
        f = int(np.argmin(np.abs(dft - float(modes.values[i]))))
        others = np.delete(dft, [f, (n - f) % n])
        if np.min(np.abs(others - dft[f])) < 1e-6 * dft.max():
            continue                       # degenerate across frequencies: no unique Fourier mode
        basis = np.stack([np.cos(f * angle), np.sin(f * angle)], 1)
        basis = basis[:, np.linalg.norm(basis, axis=0) > 1e-9]
        q, _ = np.linalg.qr(basis)
        assert np.linalg.norm(q.T @ modes.vectors[:, i].numpy()) == pytest.approx(1.0, abs=1e-9)


def test_parity_has_the_smallest_eigenvalue_on_the_boolean_cube():
    d = 10
    x = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    # 2-layer ReLU NTK with bias, first layer on the raw dot product x.x' + 1 (weight_std = sqrt(d),
    # bias_std = 1), readout weight_std = sqrt(2) without bias: MATH.md's d = 10 figures
    h = relu_ntk(x, x, w1=math.sqrt(d), b1=1.0)
    modes = eigenmodes(h)
    n = len(x)
    expected = [5.00, 1.10, 0.0957, 3.08e-3, 3.08e-3, 1.21e-3, 1.21e-3, 9.0e-4, 9.0e-4, 7.87e-4, 7.87e-4]
    for degree, value in enumerate(expected):
        chi = np.prod(x[:, :degree], axis=1) / np.sqrt(n)          # a Walsh function of this degree
        rayleigh = chi @ h @ chi
        assert np.linalg.norm(h @ chi - rayleigh * chi) < 1e-9 * rayleigh   # an eigenvector
        # MATH.md gives 3 significant digits: relative tolerance 0.5 %
        assert rayleigh / n == pytest.approx(value, rel=5e-3), degree
    parity = np.prod(x, axis=1) / np.sqrt(n)
    smallest = float(modes.values[-1])
    assert parity @ h @ parity == pytest.approx(smallest, rel=1e-9)   # tied with degree 9
    assert np.linalg.norm(modes.vectors[:, -11:].numpy().T @ parity) == pytest.approx(1.0, abs=1e-9)


def test_kth_eigenvector_on_an_interval_has_k_minus_1_sign_changes():
    x = np.linspace(-1, 1, 200)[:, None]
    modes = eigenmodes(relu_ntk(x, x), k=10)
    assert count_sign_changes(modes.vectors).tolist() == list(range(10))


# --------------------------------------------------------------------------- Nyström, methods
def test_nystrom_reproduces_eigenvectors_and_extends_smoothly():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(60, 2))

    def kernel(a, b):
        return torch.as_tensor(relu_ntk(np.asarray(a), np.asarray(b)))

    modes = eigenmodes(kernel, x, k=5)
    np.testing.assert_allclose(modes.functions(x).numpy(), modes.vectors.numpy(), atol=1e-10)
    # the same through an explicit cross-kernel matrix
    x_new = rng.uniform(-1, 1, size=(7, 2))
    np.testing.assert_allclose(modes.functions(x_new).numpy(),
                               modes.functions(cross=relu_ntk(x_new, x)).numpy(), rtol=1e-12)
    # eigenfunction equation at new points: sum_j k(x, x_j) phi_i(x_j) = lambda_i phi_i(x)
    phi_train = modes.functions(x).numpy()
    np.testing.assert_allclose(relu_ntk(x_new, x) @ phi_train,
                               modes.values.numpy() * modes.functions(x_new).numpy(), rtol=1e-10)


def test_lanczos_matches_dense_top_k_including_signs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    h = relu_ntk(x, x)
    dense = eigenmodes(h, k=8, method="dense")
    lanczos = eigenmodes(h, k=8, method="lanczos")
    np.testing.assert_allclose(lanczos.values.numpy(), dense.values.numpy(), rtol=1e-10)
    np.testing.assert_allclose(lanczos.vectors.numpy(), dense.vectors.numpy(), atol=1e-8)


def test_operator_objects_are_accepted_matrix_free():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 3))
    h = torch.as_tensor(relu_ntk(x, x))

    class Operator:                       # what an out-of-core kernel offers
        shape = h.shape
        calls = 0

        def matvec(self, v):
            Operator.calls += 1
            return h @ v

    modes = eigenmodes(Operator(), k=4)
    np.testing.assert_allclose(modes.values.numpy(), eigenmodes(h, k=4).values.numpy(), rtol=1e-10)
    assert Operator.calls > 0


def test_sign_convention_largest_entry_positive_and_reproducible():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2))
    h = relu_ntk(x, x)
    a = eigenmodes(h).vectors
    b = eigenmodes(-(-h)).vectors
    assert torch.equal(a, b)
    top = a.abs().argmax(dim=0)
    assert torch.all(a[top, torch.arange(40)] > 0)


def test_a_factorised_matrix_is_reused():
    x = np.random.default_rng(5).normal(size=(30, 2))
    psd = SymmetricPSD(relu_ntk(x, x))
    w, v = psd.eigh()
    modes = eigenmodes(psd, k=4)
    assert torch.equal(modes.values, w.flip(0)[:4]) and torch.equal(modes.vectors, v.flip(1)[:, :4])


def test_eigenmodes_from_an_architecture_match_its_kernel_matrix():
    import ntkprior.arch.layers as nl
    arch = nl.serial(nl.Dense(64, weight_std=1.5, bias_std=0.1), nl.ReLU(), nl.Dense(1))
    x = np.random.default_rng(4).normal(size=(30, 2))
    modes = eigenmodes(arch, x, k=3, kernel="nngp")
    reference = eigenmodes(arch.kernel(x).nngp, k=3)
    np.testing.assert_allclose(modes.values.numpy(), reference.values.numpy(), rtol=1e-12)
    assert modes.kernel == "nngp" and reference.kernel == "kernel"


# --------------------------------------------------------------------------- errors
def test_count_sign_changes_ignores_zeros_and_rejects_bad_shapes():
    assert count_sign_changes(np.array([1.0, 0.0, 1.0, -2.0, 0.0, -1.0, 3.0])) == 2
    with pytest.raises(ValueError, match="vectors"):
        count_sign_changes(np.ones((2, 2, 2)))


def test_bad_arguments_give_clear_errors():
    h = relu_ntk(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="k: expected an integer between 1 and n = 3"):
        eigenmodes(h, k=4)
    with pytest.raises(ValueError, match="Lanczos finds fewer than n"):
        eigenmodes(h, k=3, method="lanczos")
    with pytest.raises(ValueError, match="method"):
        eigenmodes(h, method="svd")
    with pytest.raises(ValueError, match="kernel: expected 'ntk' or 'nngp'"):
        eigenmodes(h, kernel="rbf")
    modes = eigenmodes(h, k=2)
    with pytest.raises(ValueError, match="cannot be evaluated at new inputs"):
        modes.functions(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"cross: expected shape \(n_new, 3\)"):
        modes.functions(cross=np.ones((2, 4)))
    with pytest.raises(ValueError, match="not symmetric"):
        eigenmodes(h + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="NaN"):
        eigenmodes(KernelBlocks(np.full((2, 2), np.nan)))
