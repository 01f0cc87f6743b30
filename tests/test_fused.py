"""Fused kernel maps (torch.compile of a whole MLP per tile, or of one activation map) against the eager layers."""

import warnings

import pytest
import torch

import ntkprior as ntp
from ntkprior.kernels import activations as act
from ntkprior.kernels import fused as fusion

F64 = torch.float64
# inductor's own imports use deprecated torch.jit decorators (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")


@pytest.fixture
def fused(monkeypatch):
    """Fusion on for one test, then back to the environment's setting."""
    fusion.set_fused(True)
    yield
    fusion.set_fused(None)


def _x(n=300, d=6, seed=0):
    # 300 x 300 tiles: above FUSED_MIN_ELEMENTS, so the compiled map runs
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _arch(layer):
    return ntp.serial(ntp.Dense(64, weight_std=1.5, bias_std=0.1), layer(), ntp.Dense(64, weight_std=1.5, bias_std=0.1),
                      layer(), ntp.Dense(1))


def _every_step():
    """One MLP with every kind of chain step: erf, leaky ReLU, |x|, identity; both parameterisations,
    with and without bias (one compilation serves the test)."""
    return ntp.serial(ntp.Dense(64, weight_std=1.5, bias_std=0.1), ntp.Erf(a=1.2, b=0.8, c=0.1),
                      ntp.Dense(64, weight_std=1.3, bias_std=None, parameterization="standard"),
                      ntp.LeakyReLU(0.2), ntp.Dense(64, weight_std=1.4, bias_std=0.2), ntp.Abs(),
                      ntp.Dense(32, weight_std=1.1, bias_std=0.3), ntp.Identity(), ntp.Dense(1))


def _eager(arch, *x):
    fusion.set_fused(False)
    try:
        return arch.kernel(*x)
    finally:
        fusion.set_fused(True)


def _close(a, b):
    # The compiled loop does the same arithmetic (inductor compiles with -ffp-contract=off) but with
    # its own vectorised atan2 / asin / sqrt: a few ulps apart per entry and layer.
    for u, v in ((a.nngp, b.nngp), (a.ntk, b.ntk)):
        torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-13 * float(v.abs().max()))


@pytest.mark.slow
def test_the_compiled_chain_equals_the_eager_layers(fused):
    arch, x, x2 = _every_step(), _x(), _x(280, seed=1)
    joint, cross = arch.kernel(x), arch.kernel(x, x2)
    chains = [f for f in fusion._CHAINS.values() if f.compiled is not None]
    assert chains and not any(f.failed for f in chains)
    _close(joint, _eager(arch, x))
    _close(cross, _eager(arch, x, x2))
    assert torch.equal(joint.nngp, joint.nngp.T) and torch.equal(joint.ntk, joint.ntk.T)
    # the diagonal is the eager diagonal pass exactly
    diagonal = arch.kernel(x, diagonal=True)
    assert torch.equal(joint.nngp.diagonal(), diagonal.nngp) and torch.equal(joint.ntk.diagonal(), diagonal.ntk)


@pytest.mark.slow
def test_the_compiled_relu_chain_of_a_copy_is_exact(fused):
    x = _x()
    a, b = _arch(ntp.ReLU).kernel(x), _arch(ntp.ReLU).kernel(x, x.clone())
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)
    _close(a, _eager(_arch(ntp.ReLU), x))


@pytest.mark.slow
def test_the_per_map_fusion_serves_convolutions(fused):
    arch = ntp.serial(ntp.Conv(8, 3, weight_std=1.4, bias_std=0.1), ntp.ReLU(), ntp.Flatten(), ntp.Dense(1))
    x = torch.randn(120, 2, 12, generator=torch.Generator().manual_seed(3), dtype=F64)
    _close(arch.kernel(x), _eager(arch, x))
    assert fusion.ARC_COSINE.compiled is not None and not fusion.ARC_COSINE.failed


def test_zero_and_extreme_variances_run_the_eager_layers(fused, monkeypatch):
    # a zero input without biases has variance exactly 0 (the eager maps use φ'(0) there); huge
    # inputs need the power-of-two scaling: neither may reach the compiled chain
    monkeypatch.setattr(fusion, "chain_tile", lambda *a: pytest.fail("the compiled chain ran"))
    arch = ntp.serial(ntp.Dense(64, weight_std=1.5, bias_std=None), ntp.ReLU(), ntp.Dense(1, bias_std=None))
    x = _x(260)
    x[7] = 0.0
    assert torch.equal(arch.kernel(x).ntk, _eager(arch, x).ntk)
    huge = _x(260) * 1e80
    assert torch.equal(_arch(ntp.ReLU).kernel(huge).nngp, _eager(_arch(ntp.ReLU), huge).nngp)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(fused, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    fresh = fusion.FusedFunction(fusion.arc_cosine_tile)
    monkeypatch.setattr(fusion, "ARC_COSINE", fresh)
    monkeypatch.setattr(fusion, "_CHAINS", {})
    monkeypatch.setattr(fusion, "_fallback_warned", False)
    monkeypatch.setattr(torch, "compile", broken)
    x = _x(260)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no compiler here.*eager maps"):
        first = _arch(ntp.ReLU).kernel(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # one warning per process, not per tile
        second = _arch(ntp.ReLU).kernel(x)
    fusion.set_fused(False)
    eager = _arch(ntp.ReLU).kernel(x)
    chain, = fusion._CHAINS.values()
    assert chain.failed and torch.equal(first.ntk, eager.ntk) and torch.equal(second.nngp, eager.nngp)


def test_fusion_is_off_by_default_and_follows_the_environment(monkeypatch):
    fusion.set_fused(None)
    monkeypatch.delenv("NTKPRIOR_FUSED", raising=False)
    assert not fusion.fused_enabled()
    monkeypatch.setenv("NTKPRIOR_FUSED", "1")
    assert fusion.fused_enabled()
    fusion.set_fused(False)
    assert not fusion.fused_enabled()
    fusion.set_fused(None)


def test_small_tiles_and_scaled_tiles_stay_eager(fused, monkeypatch):
    calls = []
    monkeypatch.setattr(fusion.ARC_COSINE, "compiled", lambda *a: calls.append(1))
    small = torch.rand(10, 10, dtype=F64)
    act.PiecewiseLinearMap(0.0, 1.0).pair(small.clone(), torch.ones(10, 1, dtype=F64), torch.ones(1, 10, dtype=F64))
    big = torch.full((300, 300), 1e200, dtype=F64)        # needs the power-of-two scaling: eager
    act.PiecewiseLinearMap(0.0, 1.0).pair(big.clone(), torch.full((300, 1), 2e200, dtype=F64),
                                          torch.full((1, 300), 2e200, dtype=F64))
    assert not calls
