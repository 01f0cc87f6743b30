"""The library's bad-input contract (issue #17): duplicated inputs where a solve needs an invertible
kernel, absurd sizes refused before any allocation, files whose headers lie, and a user's module left
exactly as it was found. Every case raises a ValueError naming the argument and the fix, or warns
with the numbers; none returns a wrong number silently."""

import copy
import io
import warnings
import zipfile

import numpy as np
import pytest
import torch
from numpy.lib import format as npy

import ntkprior as ntp
from ntkprior.data import load_array
from ntkprior.prior.linalg import DUPLICATE_RTOL, DuplicateInputsWarning, SymmetricPSD

ARCH = ntp.parse_spec("dense(256, weight_std=1.5, bias_std=0.1) relu dense(256, weight_std=1.5, bias_std=0.1) "
                      "relu dense(1)")


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64, generator=g)
    x[7] = x[2]                                  # one exactly duplicated input
    y = torch.randn(10, dtype=torch.float64, generator=g)
    x_test = torch.randn(4, 3, dtype=torch.float64, generator=g)
    return x, y, x_test


def consistent(y):
    y = y.clone()
    y[7] = y[2]
    return y


# --- duplicated inputs ---------------------------------------------------------------------------

SOLVES = {
    "log_prob": lambda x, y, xt, **kw: ntp.KernelPrior(ARCH.kernel(x).ntk, **kw).log_prob(y),
    "predict ntkgp": lambda x, y, xt, **kw: ntp.predict(ARCH, x, y, xt, kind="ntkgp", **kw).mean,
    "predict ntk t=inf": lambda x, y, xt, **kw: ntp.predict(ARCH, x, y, xt, kind="ntk", t=float("inf"), **kw).mean,
    "rank_candidates": lambda x, y, xt, **kw: ntp.rank_candidates(ARCH, x, y, xt, {"zero": torch.zeros(4)},
                                                                  **kw).rows[0].conditional_log_prob,
    "dynamics t=inf": lambda x, y, xt, **kw: ntp.linearized_dynamics(ARCH, x, y, xt, learning_rate=0.1,
                                                                     **kw).at(float("inf")).test_outputs,
}


@pytest.mark.parametrize("use", list(SOLVES))
def test_conflicting_labels_at_a_duplicated_input_raise_naming_the_rows(data, use):
    x, y, xt = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"rows 2 and 7 .* same input .*deduplicate .* ridge \(diag_reg"):
            SOLVES[use](x, y, xt)


@pytest.mark.parametrize("use", list(SOLVES))
def test_consistent_labels_at_a_duplicated_input_warn(data, use):
    x, y, xt = data
    with pytest.warns(DuplicateInputsWarning, match=r"rows \(2, 7\) are duplicated inputs"):
        try:
            SOLVES[use](x, consistent(y), xt)
        except ValueError as exc:                    # the NNGP's Cholesky may still fail: it says so
            assert "numerically singular" in str(exc)


@pytest.mark.parametrize("use", list(SOLVES))
def test_a_ridge_makes_duplicates_harmless(data, use):
    x, y, xt = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", DuplicateInputsWarning)
        assert torch.isfinite(torch.as_tensor(SOLVES[use](x, y, xt, diag_reg=1e-4))).all()


def test_duplicates_are_found_from_the_kernel_alone_and_near_ones_within_round_off():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, dtype=torch.float64, generator=g)
    x[20] = x[3] * (1 + 1e-13)                       # a duplicate within round-off
    x[11] = x[5] + 1e-3                              # close, but a different point
    psd = SymmetricPSD(ARCH.kernel(x).ntk)
    pairs, distances = psd.duplicate_rows()
    assert pairs.tolist() == [[3, 20]]
    k = ARCH.kernel(x).ntk
    d_far = float(k[5, 5] + k[11, 11] - 2 * k[5, 11]) / float(k.diagonal().mean())
    assert d_far > 10 * DUPLICATE_RTOL and float(distances[0]) <= DUPLICATE_RTOL * float(k.diagonal().mean())


# --- absurd sizes, refused before any allocation ----------------------------------------------------

def test_a_weight_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"Dense: the 100000000 x 100000 weight matrix would need 80 TB"):
        ntp.parse_spec("dense(100000000) relu dense(1)").build(100000)


def test_a_file_whose_header_lies_is_refused_before_allocating(tmp_path):
    with open(tmp_path / "huge.npy", "wb") as f:
        npy.write_array_header_1_0(f, {"shape": (2**20, 917504), "fortran_order": False, "descr": "<f8"})
        f.write(b"\0" * 72)
    assert (tmp_path / "huge.npy").stat().st_size == 200
    with pytest.raises(ValueError, match=r"x: the header of .* claims .* \(float64, 7.7 TB\) but the file holds "
                                         r"only 72 B.*truncated or damaged"):
        load_array(tmp_path / "huge.npy", "x")
    np.savez(tmp_path / "ok.npz", x=np.ones((3, 2)))
    member = io.BytesIO()                            # an .npz member whose header claims more than it stores
    npy.write_array_header_1_0(member, {"shape": (9, 9), "fortran_order": False, "descr": "<f8"})
    member.write(np.ones(6).tobytes())
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        z.writestr("x.npy", member.getvalue())
    with pytest.raises(ValueError, match="claims an array of shape \\(9, 9\\)"):
        load_array(tmp_path / "bad.npz", "x")
    (tmp_path / "broken.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:-30])
    with pytest.raises(ValueError, match="x: .*broken.npz"):
        load_array(tmp_path / "broken.npz", "x")
    assert load_array(tmp_path / "ok.npz", "x").shape == (3, 2)


# --- the user's module is left as it was found ----------------------------------------------------

def _state(model):
    return {"dict": sorted(model.__dict__), "training": [m.training for m in model.modules()],
            "grad": [p.requires_grad for p in model.parameters()],
            "hooks": [len(getattr(m, h)) for m in model.modules() for h in
                      ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs")],
            "params": [p.detach().clone() for p in model.parameters()],
            "ids": [id(p) for p in model.parameters()], "grads": [p.grad for p in model.parameters()]}


@pytest.mark.parametrize("method", ["auto", "jacobian"])
def test_empirical_ntk_leaves_the_module_exactly_as_it_found_it(method):
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Dropout(0.0),
                                torch.nn.Linear(8, 2)).double()
    model.train()
    model[0].weight.requires_grad_(False)
    before = _state(model)
    x = torch.randn(5, 3, dtype=torch.float64)
    ntp.empirical_ntk(model, x, method=method)
    after = _state(model)
    for key in before:
        if key == "params":
            assert all(torch.equal(a, b) for a, b in zip(before[key], after[key]))
        else:
            assert before[key] == after[key], key
    assert copy.deepcopy(model) is not None          # still copyable / picklable: nothing attached


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("act", [ntp.ReLU, ntp.Abs, lambda: ntp.LeakyReLU(0.2)])
def test_an_exactly_zero_pre_activation_uses_the_networks_own_derivative_at_zero(parameterization, act):
    """issue #17: with bias_std=0 a zero input has pre-activations exactly 0 in every network, so
    φ'(0) (torch's convention: relu 0, |x| 0, leaky slope) enters, not the Gaussian average: the
    analytic NTK was 2.94 where every finite network gives 1.00. Against the mean empirical NTK of
    10 width-512 networks (exact for ReLU and |x|, where nothing random is left at the zero row;
    leaky ReLU within 5 %, about 4 Monte Carlo standard errors)."""
    x = torch.tensor([[0.0, 0.0], [1.0, -0.5], [0.3, 0.8]], dtype=torch.float64)
    arch = ntp.serial(ntp.Dense(512, bias_std=0.0, parameterization=parameterization), act(),
                      ntp.Dense(512, bias_std=0.0, parameterization=parameterization), act(),
                      ntp.Dense(1, bias_std=0.0, parameterization=parameterization))
    analytic = arch.kernel(x).ntk[0]
    finite = torch.stack([ntp.empirical_ntk(arch.build(2, seed=s), x) for s in range(10)]).mean(0)[0]
    torch.testing.assert_close(analytic, finite, rtol=0.05, atol=1e-9)
