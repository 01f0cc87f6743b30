"""The CLI on signals and images: --x1 images.npy (N, C, H, W), --input-shape for flat CSV rows."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ntkprior.app.cli import app
from ntkprior.arch.spec import parse_spec

CNN = "conv(8, 3, weight_std=1.4) relu conv(8, 3) relu global_avg_pool dense(1)"
CNN_1D = "conv(8, 3, weight_std=1.4) relu conv(8, 3) relu flatten dense(1)"


def _run(args, code=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def images(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 2, 4, 4))
    np.save(tmp_path / "images.npy", x)
    np.savetxt(tmp_path / "flat.csv", x.reshape(5, -1), delimiter=",")
    return tmp_path, x


def test_kernel_of_images_from_npy_and_from_flat_csv_rows(images):
    d, x = images
    _run(["kernel", "--arch", CNN, "--x1", d / "images.npy", "--out", d / "K.npz"])
    expected = parse_spec(CNN).kernel(x)
    with np.load(d / "K.npz") as k:
        np.testing.assert_allclose(k["ntk"], expected.ntk.numpy(), rtol=1e-13)
        assert tuple(k["x1_shape"]) == (5, 2, 4, 4)
    _run(["kernel", "--arch", CNN, "--x1", d / "flat.csv", "--input-shape", "2,4,4", "--out", d / "K2.npz"])
    with np.load(d / "K2.npz") as k:
        np.testing.assert_allclose(k["nngp"], expected.nngp.numpy(), rtol=1e-13)


def test_bad_input_shapes_exit_2_with_one_line(images):
    d, _ = images
    res = _run(["kernel", "--arch", CNN, "--x1", d / "flat.csv", "--input-shape", "2,4,5"], code=2)
    assert "--input-shape: --x1 has 32 numbers per row but 2,4,5 holds 40" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    res = _run(["kernel", "--arch", "conv(8, 3) relu dense(1)", "--x1", d / "images.npy"], code=2)
    assert "layer 2 (dense(1)): its input is a signal/image" in res.output


def test_score_predict_and_train_read_signals_from_csv(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 6))
    y = np.sin(x.sum(1))
    np.savetxt(tmp_path / "train.csv", np.c_[x, y], delimiter=",")
    xt = rng.standard_normal((3, 6))
    header = ",".join([f"x{i}" for i in range(6)] + ["y"])
    np.savetxt(tmp_path / "test.csv", np.c_[xt, np.zeros(3)], delimiter=",", header=header, comments="")
    common = ["--arch", CNN_1D, "--train", tmp_path / "train.csv", "--test", tmp_path / "test.csv",
              "--input-shape", "1,6", "--format", "json"]
    score = json.loads(_run(["score", *common]).stdout)
    assert score
    pred = json.loads(_run(["predict", *common]).stdout)
    assert pred
    out = _run(["train", *common, "--steps", "5", "--learning-rate", "0.2"])
    assert out.stdout
    from ntkprior import predict
    post = predict(parse_spec(CNN_1D), x.reshape(8, 1, 6), y, xt.reshape(3, 1, 6))
    np.testing.assert_allclose(np.asarray(pred["mean"]).reshape(-1), post.mean.numpy().reshape(-1), rtol=1e-10)


@pytest.mark.slow
def test_report_on_a_cnn(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 1, 6))
    np.savez(tmp_path / "train.npz", x=x, y=np.sin(x.sum((1, 2))))
    res = _run(["report", "--quick", "--no-progress", "--arch", CNN_1D, "--train", tmp_path / "train.npz",
                "--out", tmp_path / "rep"])
    assert "report written to" in res.output


def test_eigen_of_images_draws_against_a_principal_coordinate(images):
    d, x = images
    res = _run(["eigen", "--arch", CNN, "--x", d / "images.npy", "--k", 3, "--figure", d / "e.png",
                "--format", "json"])
    values = json.loads(res.stdout)["values"]
    from ntkprior import eigenmodes
    np.testing.assert_allclose(values, eigenmodes(parse_spec(CNN), x, k=3).values.numpy(), rtol=1e-10)
    assert (d / "e.png").stat().st_size > 0
