"""Spatial priors: the circulant/Fourier identity on the orbit of circular shifts (exact), and the
MNIST-1D study (kernel regression, the prior's view, trained networks, the report)."""

import numpy as np
import pytest
import torch

from ntkprior.arch.spec import parse_spec
from ntkprior.studies.mnist1d import circulant_distance, circulant_eigenvalues, circular_shifts

F64 = torch.float64
LAYERS = "conv(6, 5{pad}, weight_std=1.4, bias_std=0.1) relu conv(6, 3{pad}, weight_std=1.4, bias_std=0.1) relu "
CIRCULAR = LAYERS.format(pad=", padding='circular'")
MLP = "dense(32, weight_std=1.4, bias_std=0.1) relu dense(32, weight_std=1.4, bias_std=0.1) relu dense(1)"


def orbit_kernel(spec: str, flat: bool = False, length: int = 16, kind: str = "ntk") -> np.ndarray:
    x = torch.randn(1, length, generator=torch.Generator().manual_seed(3), dtype=F64)
    orbit = circular_shifts(x)                       # (L, 1, L): row a is S^a x
    inputs = orbit.reshape(length, -1) if flat else orbit
    return getattr(parse_spec(spec).kernel(inputs), kind).numpy()


def fourier_offdiagonal(k: np.ndarray) -> float:
    """‖offdiag(F^H K F)‖_F / ‖K‖_F with numpy's FFT (F the unitary DFT): independent of circulant_part."""
    n = k.shape[0]
    d = np.fft.ifft(np.fft.fft(k, axis=1), axis=0) * 1.0     # = F^H K F up to the unitary scaling (n / n)
    return float(np.linalg.norm(d - np.diag(np.diag(d))) / np.linalg.norm(k))


ROUND_OFF = 1e-13   # float64 kernels of 16 inputs: entries carry ~1e-16 relative error, norms sum 256 of them


@pytest.mark.parametrize("readout", ["flatten dense(1)", "global_avg_pool dense(1)"])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_circular_cnn_kernel_on_the_shift_orbit_is_circulant_with_fourier_eigenvectors(readout, kind):
    k = orbit_kernel(CIRCULAR + readout, kind=kind)
    assert circulant_distance(k) < ROUND_OFF
    assert fourier_offdiagonal(k) < ROUND_OFF                       # the DFT diagonalises K
    eig = np.sort(np.linalg.eigvalsh(k))[::-1]                      # LAPACK, independent of the FFT
    np.testing.assert_allclose(circulant_eigenvalues(k).numpy(), eig, rtol=0, atol=ROUND_OFF * eig[0])


def test_global_average_pooling_makes_the_orbit_kernel_constant():
    # k(S^a x, S^b x) = k(x, x) for every a, b: the GAP network cannot tell shifts apart. The
    # off-diagonal entries pair positions holding equal values (angle 0), where the ReLU map's arccos
    # loses half the digits (~sqrt(eps) = 1.5e-8, FACTS.md) while the diagonal is set exactly: measured
    # 2.5e-10 relative, so 1e-8 is the round-off bound of that path
    k = orbit_kernel(CIRCULAR + "global_avg_pool dense(1)")
    np.testing.assert_allclose(k, k[0, 0], rtol=1e-8)


def test_the_mlp_kernel_is_circulant_on_the_orbit_too():
    # x·y, |x|, |y| are invariant under shifting both arguments: the dot-product kernel is circulant on an orbit
    k = orbit_kernel(MLP, flat=True)
    assert circulant_distance(k) < ROUND_OFF
    assert fourier_offdiagonal(k) < ROUND_OFF


@pytest.mark.parametrize("spec", [LAYERS.format(pad="") + "flatten dense(1)",                     # zero (SAME) padding
                                  "conv(6, 5, stride=2, padding='circular', weight_std=1.4) relu flatten dense(1)"])
def test_same_padding_and_strides_break_the_circulant_structure(spec):
    # measured 4.4 % (SAME) and 5.1 % (stride 2) at L = 16: many orders above round-off, and the
    # Fourier off-diagonal share equals the distance (F^H C F is the diagonal of F^H K F)
    k = orbit_kernel(spec)
    assert circulant_distance(k) > 1e-2
    assert fourier_offdiagonal(k) == pytest.approx(circulant_distance(k), rel=1e-10)


def test_circular_shifts_and_bad_input():
    x = torch.arange(5.0)
    orbit = circular_shifts(x)
    assert torch.equal(orbit[2], torch.tensor([3.0, 4.0, 0.0, 1.0, 2.0], dtype=F64))
    with pytest.raises(ValueError, match="signal: expected one signal"):
        circular_shifts(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="matrix: expected a square matrix"):
        circulant_distance(np.zeros((2, 3)))
