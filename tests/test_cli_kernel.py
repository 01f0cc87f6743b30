"""`ntkprior kernel`: files in, .npz out, exit code 2 and one message for bad input."""

import numpy as np
import pytest
from typer.testing import CliRunner

import ntkprior as ntp
from ntkprior.app.cli import app

SPEC = "dense(64, weight_std=1.5, bias_std=0.05) relu dense(1, weight_std=1.5, bias_std=0.05)"


@pytest.fixture
def runner():
    return CliRunner()


def test_kernel_command_writes_npz_matching_the_library(runner, tmp_path, rng):
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    np.save(tmp_path / "x1.npy", x1)
    np.savetxt(tmp_path / "x2.csv", x2, delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "K.npz"
    result = runner.invoke(app, ["kernel", "--arch", SPEC, "--x1", str(tmp_path / "x1.npy"),
                                 "--x2", str(tmp_path / "x2.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        assert set(z.keys()) >= {"nngp", "ntk", "x1_shape", "x2_shape", "arch"}
        expected = ntp.parse_spec(SPEC).kernel(x1, x2)
        np.testing.assert_allclose(z["ntk"], expected.ntk.numpy(), rtol=1e-12)
        np.testing.assert_allclose(z["nngp"], expected.nngp.numpy(), rtol=1e-12)
        assert tuple(z["x1_shape"]) == (6, 3) and tuple(z["x2_shape"]) == (4, 3)


def test_kernel_command_reads_npz_and_yaml_and_diagonal(runner, tmp_path, rng):
    x = rng.standard_normal((5, 2))
    np.savez(tmp_path / "x.npz", x=x)
    (tmp_path / "arch.yaml").write_text(f"{SPEC!r}\n".replace("'", '"'))
    out = tmp_path / "d.npz"
    result = runner.invoke(app, ["kernel", "--arch", str(tmp_path / "arch.yaml"), "--x1",
                                 str(tmp_path / "x.npz"), "--diagonal", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        assert z["ntk"].shape == (5,)


@pytest.mark.parametrize("args, message", [
    (["--arch", "dense(3) rleu", "--x1", "X"], "unknown layer 'rleu'"),
    (["--arch", SPEC, "--x1", "missing.npy"], "--x1: file 'missing.npy' does not exist"),
    (["--arch", SPEC, "--x1", "X", "--x2", "BAD"], "x2: has 5 features but x1 has 3"),
    (["--arch", SPEC, "--x1", "NAN"], "x1: contains 1 NaN"),
])
def test_kernel_command_bad_input_exits_2_with_a_message(runner, tmp_path, rng, args, message):
    np.save(tmp_path / "X.npy", rng.standard_normal((4, 3)))
    np.save(tmp_path / "BAD.npy", rng.standard_normal((4, 5)))
    nan = rng.standard_normal((4, 3))
    nan[1, 1] = np.nan
    np.save(tmp_path / "NAN.npy", nan)
    args = [str(tmp_path / f"{a}.npy") if a in ("X", "BAD", "NAN") else a for a in args]
    result = runner.invoke(app, ["kernel", *args, "--out", str(tmp_path / "o.npz")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_kernel_command_writes_a_zarr_store_on_dask(runner, tmp_path, rng):
    pytest.importorskip("dask.distributed")
    from ntkprior.scale.stored import StoredKernel
    x = rng.standard_normal((30, 3))
    np.save(tmp_path / "x.npy", x)
    store = tmp_path / "K.zarr"
    args = ["kernel", "--arch", SPEC, "--x1", str(tmp_path / "x.npy"), "--store", str(store), "--block", "16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = ntp.parse_spec(SPEC).kernel(x).ntk.numpy()
    stored = StoredKernel(str(store))
    np.testing.assert_allclose(stored.matvec(np.eye(30)), expected, rtol=1e-12, atol=1e-12)
    bad = runner.invoke(app, [*args, "--diagonal"])
    assert bad.exit_code == 2 and "--diagonal: not available with --store" in bad.output


@pytest.mark.slow
def test_every_command_that_takes_an_architecture_accepts_a_store(runner, tmp_path, rng):
    """A store from kernel --store is not a dead end (issue 13): eigen, score and predict solve with
    it out of core on its own inputs; commands that build networks read its architecture back."""
    pytest.importorskip("dask.distributed")
    from ntkprior.app.cli.base import load_source
    spec = "dense(64, weight_std=1.4, bias_std=0.5) relu dense(1, weight_std=1.4, bias_std=0.5)"
    x, xt = rng.standard_normal((24, 2)), rng.standard_normal((3, 2))
    y = np.sin(x[:, 0])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "xt.npy", xt)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    store = tmp_path / "K.zarr"
    made = runner.invoke(app, ["kernel", "--arch", spec, "--x1", str(tmp_path / "x.npy"), "--store", str(store),
                               "--block", "16"])
    assert made.exit_code == 0, made.output
    arch = ntp.parse_spec(spec)
    res = runner.invoke(app, ["eigen", "--arch", str(store), "--x", str(tmp_path / "x.npy"), "--k", "4",
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    import json
    top = np.linalg.eigvalsh(arch.kernel(x).ntk.numpy())[::-1][:4]
    np.testing.assert_allclose(json.loads(res.stdout)["values"], top, rtol=1e-8)
    res = runner.invoke(app, ["predict", "--arch", str(store), "--train", str(tmp_path / "train.npz"),
                              "--test", str(tmp_path / "xt.npy"), "--kind", "ntkgp", "--format", "json"])
    assert res.exit_code == 0, res.output
    expected = ntp.predict(arch, x, y, xt, kind="ntkgp").mean.numpy()
    np.testing.assert_allclose(np.asarray(json.loads(res.stdout)["mean"]).reshape(-1), expected.reshape(-1), rtol=1e-6,
                               atol=1e-8)
    other = tmp_path / "other.npz"
    np.savez(other, x=x + 1, y=y)
    bad = runner.invoke(app, ["predict", "--arch", str(store), "--train", str(other), "--kind", "ntkgp"])
    assert bad.exit_code == 2 and "differs from the inputs the stored kernel was computed on" in bad.output
    assert str(load_source(str(store), networks=True)) == str(arch)
