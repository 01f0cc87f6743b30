"""Fused kernel maps (torch.compile of the per-tile ReLU-family and erf maps) against the eager maps."""

import warnings

import pytest
import torch

import ntkprior as ntp
from ntkprior.kernels import activations as act

F64 = torch.float64
# inductor's own imports use deprecated torch.jit decorators (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")


@pytest.fixture
def fused(monkeypatch):
    """Fusion on for one test, then back to the environment's setting."""
    act.set_fused(True)
    yield
    act.set_fused(None)


def _x(n=300, d=6, seed=0):
    # 300 x 300 tiles: above FUSED_MIN_ELEMENTS, so the compiled map runs
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _arch(layer):
    return ntp.serial(ntp.Dense(64, weight_std=1.5, bias_std=0.1), layer(), ntp.Dense(64, weight_std=1.5, bias_std=0.1),
                      layer(), ntp.Dense(1))


@pytest.mark.slow
@pytest.mark.parametrize("layer", [ntp.ReLU, lambda: ntp.LeakyReLU(0.2), ntp.Erf])
def test_fused_maps_equal_the_eager_maps_to_round_off(layer, fused):
    # The compiled loop does the same arithmetic (inductor compiles with -ffp-contract=off) but
    # with its own vectorised atan2 / asin: at most a few ulps apart per entry and layer.
    x = _x()
    with_fusion = _arch(layer).kernel(x)
    act.set_fused(False)
    eager = _arch(layer).kernel(x)
    for a, b in ((with_fusion.nngp, eager.nngp), (with_fusion.ntk, eager.ntk)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * float(b.abs().max()))
    assert act._ARC_COSINE.compiled is not None and not act._ARC_COSINE.failed


@pytest.mark.slow
def test_fused_relu_kernel_of_a_copy_is_exact(fused):
    x = _x()
    a, b = _arch(ntp.ReLU).kernel(x), _arch(ntp.ReLU).kernel(x, x.clone())
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(fused, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    fresh = act._FusedMap(act._arc_cosine_tile)
    monkeypatch.setattr(act, "_ARC_COSINE", fresh)
    monkeypatch.setattr(act, "_fallback_warned", False)
    monkeypatch.setattr(torch, "compile", broken)
    x = _x(260)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no compiler here.*eager maps"):
        first = _arch(ntp.ReLU).kernel(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # one warning per process, not per tile
        second = _arch(ntp.ReLU).kernel(x)
    act.set_fused(False)
    eager = _arch(ntp.ReLU).kernel(x)
    assert fresh.failed and torch.equal(first.ntk, eager.ntk) and torch.equal(second.nngp, eager.nngp)


def test_fusion_is_off_by_default_and_follows_the_environment(monkeypatch):
    act.set_fused(None)
    monkeypatch.delenv("NTKPRIOR_FUSED", raising=False)
    assert not act.fused_enabled()
    monkeypatch.setenv("NTKPRIOR_FUSED", "1")
    assert act.fused_enabled()
    act.set_fused(False)
    assert not act.fused_enabled()
    act.set_fused(None)


def test_small_tiles_and_scaled_tiles_stay_eager(fused, monkeypatch):
    calls = []
    monkeypatch.setattr(act._ARC_COSINE, "compiled", lambda *a: calls.append(1))
    small = torch.rand(10, 10, dtype=F64)
    act.PiecewiseLinearMap(0.0, 1.0).pair(small.clone(), torch.ones(10, 1, dtype=F64), torch.ones(1, 10, dtype=F64))
    big = torch.full((300, 300), 1e200, dtype=F64)        # needs the power-of-two scaling: eager
    act.PiecewiseLinearMap(0.0, 1.0).pair(big.clone(), torch.full((300, 1), 2e200, dtype=F64),
                                          torch.full((1, 300), 2e200, dtype=F64))
    assert not calls
