"""The command line end to end on small files: outputs have the expected keys and shapes and agree with
the library; bad input exits with code 2 and one message naming the problem."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ntkprior.app.cli import app
from ntkprior.prior.prior import predict, rank_candidates
from ntkprior.arch.spec import parse_spec
from ntkprior.prior.spectrum import count_sign_changes, eigenmodes

SPEC = "dense(16, weight_std=1.4, bias_std=0.5) relu dense(16, weight_std=1.4, bias_std=0.5) relu dense(1)"
COMMANDS = ["kernel", "eigen", "score", "predict", "train", "diagnose", "report"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def files(tmp_path, rng):
    """1-D training data with a header (x, y), test inputs with labels, two candidates, a 2-D .npz."""
    x = np.sort(rng.uniform(-2, 2, 6))
    y = np.sin(x)
    xt = np.array([-1.5, 0.1, 1.7])
    np.savetxt(tmp_path / "train.csv", np.c_[x, y], delimiter=",", header="x,y", comments="")
    np.savetxt(tmp_path / "test.csv", np.c_[xt, np.sin(xt)], delimiter=",", header="x,y", comments="")
    np.savetxt(tmp_path / "test_inputs.csv", xt[:, None], delimiter=",", header="x", comments="")
    np.savetxt(tmp_path / "cands.csv", np.c_[np.zeros(3), np.ones(3)], delimiter=",", header="flat,up",
               comments="")
    np.savetxt(tmp_path / "grid.csv", np.linspace(-3, 3, 12)[:, None], delimiter=",")
    x2 = rng.standard_normal((7, 2))
    np.savez(tmp_path / "train2.npz", x=x2, y=x2[:, 0] * x2[:, 1])
    return tmp_path, x, y, xt


def _run(runner, args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(runner, command):
    out = _run(runner, [command, "--help"]).output
    assert "Example" in out and f"ntkprior {command}" in out


def test_eigen_writes_values_vectors_sign_changes_and_a_figure(runner, files):
    d, *_ = files
    res = _run(runner, ["eigen", "--arch", SPEC, "--x", d / "grid.csv", "--k", 5, "--out", d / "e.npz",
                        "--figure", d / "e.png", "--format", "json"])
    printed = json.loads(res.stdout)
    grid = np.linspace(-3, 3, 12)[:, None]
    modes = eigenmodes(parse_spec(SPEC), grid, k=5)
    with np.load(d / "e.npz") as z:
        assert z["values"].shape == (5,) and z["vectors"].shape == (12, 5)
        np.testing.assert_allclose(z["values"], modes.values.numpy(), rtol=1e-12)
        np.testing.assert_allclose(z["vectors"], modes.vectors.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(printed["values"], modes.values.numpy(), rtol=1e-12)
    assert printed["sign_changes"] == count_sign_changes(modes.vectors).tolist()    # the grid is sorted
    assert (d / "e.png").read_bytes()[:4] == b"\x89PNG"
    _run(runner, ["eigen", "--arch", SPEC, "--x", d / "grid.csv", "--k", 3, "--out", d / "e.csv"])
    lines = (d / "e.csv").read_text().splitlines()
    assert lines[0] == "mode,eigenvalue,sign_changes" and len(lines) == 4


def test_score_ranks_candidates_like_the_library(runner, files):
    d, x, y, xt = files
    res = _run(runner, ["score", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test.csv",
                        "--candidates", d / "cands.csv", "--out", d / "rank.csv", "--format", "json"])
    printed = json.loads(res.stdout)
    # the test file's y column is scored as a third candidate
    named = {"flat": np.zeros(3), "up": np.ones(3), "labels in the test file": np.sin(xt)}
    ranking = rank_candidates(parse_spec(SPEC), x[:, None], y, xt[:, None], named)
    assert [r["name"] for r in printed["rows"]] == [r.name for r in ranking.rows]
    for row in printed["rows"]:
        assert row["conditional_log_prob"] == pytest.approx(ranking[row["name"]].conditional_log_prob, rel=1e-12)
        assert row["joint_log_prob"] == pytest.approx(ranking[row["name"]].joint_log_prob, rel=1e-12)
    lines = (d / "rank.csv").read_text().splitlines()
    assert lines[0].startswith("rank,name,conditional_log_prob") and len(lines) == 4
    text = _run(runner, ["score", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test_inputs.csv",
                         "--candidates", d / "cands.csv"]).output
    assert "NOT comparable between different test inputs" in text


def test_predict_matches_the_library_at_several_times(runner, files):
    d, x, y, xt = files
    _run(runner, ["predict", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test_inputs.csv",
                  "--kind", "gd-ensemble", "--t", "10,100,inf", "--learning-rate", 0.05, "--out", d / "p.npz"])
    post = predict(parse_spec(SPEC), x[:, None], y[:, None], xt[:, None], kind="gd-ensemble",
                   t=[10, 100, np.inf], learning_rate=0.05, cov="diagonal")
    with np.load(d / "p.npz") as z:      # (times, test inputs, outputs); the std is shared by the outputs
        assert z["mean"].shape == (3, 3, 1) and z["std"].shape == (3, 3, 1)
        np.testing.assert_allclose(z["mean"], post.mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(z["std"][..., 0], post.std.numpy(), rtol=1e-12, atol=1e-14)
    _run(runner, ["predict", "--arch", SPEC, "--train", d / "train2.npz", "--kind", "nngp", "--out", d / "p.csv"])
    lines = (d / "p.csv").read_text().splitlines()
    assert lines[0] == "mean_0,std" and len(lines) == 8          # on the 7 training inputs
    res = _run(runner, ["predict", "--arch", SPEC, "--train", d / "train.csv", "--kind", "ntkgp",
                        "--format", "json"])
    assert np.array(json.loads(res.stdout)["mean"]).shape == (6, 1)


def test_train_one_width_and_a_width_sweep(runner, files):
    d, *_ = files
    _run(runner, ["train", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test_inputs.csv",
                  "--steps", 5, "--learning-rate", 0.05, "--ensemble", 2, "--widths", 8, "--out", d / "t.npz"])
    with np.load(d / "t.npz") as z:
        r = len(z["steps"])
        assert z["steps"][0] == 0 and z["steps"][-1] == 5
        assert z["train_outputs"].shape == (2, r, 6, 1) and z["test_outputs"].shape == (2, r, 3, 1)
        assert z["loss"].shape == (2, r) and z["kernel_mean"].shape == (3, 1) and z["kernel_std"].shape == (3,)
        assert "dense(8," in str(z["arch"])
    res = _run(runner, ["train", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test_inputs.csv",
                        "--steps", 3, "--learning-rate", 0.05, "--ensemble", 1, "--widths", "4,8,16",
                        "--format", "json"])
    sweep = json.loads(res.stdout)
    assert [row["width"] for row in sweep["rows"]] == [4, 8, 16]
    assert set(sweep["exponents"]) == {"test_distance", "param_change", "kernel_change", "init_kernel_distance"}


def test_diagnose_prints_a_verdict_and_writes_its_figures(runner, files):
    d, *_ = files
    res = _run(runner, ["diagnose", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test_inputs.csv",
                        "--steps", 5, "--learning-rate", 0.05, "--width", 8, "--ensemble", 2, "--out",
                        d / "diag.json", "--format", "json"])
    printed = json.loads(res.stdout)
    saved = json.loads((d / "diag.json").read_text())
    assert printed == saved
    assert isinstance(saved["in_kernel_regime"], bool)
    assert {c["name"] for c in saved["checks"]} == {"learning_rate", "unconverged_modes", "conditioning",
                                                    "kernel_drift", "ensemble_mean"}
    text = _run(runner, ["diagnose", "--arch", SPEC, "--train", d / "train.csv", "--steps", 5, "--width", 8,
                         "--ensemble", 2]).stdout
    assert text.startswith("Diagnosis (width 8, 2 networks, 5 steps")


def test_report_on_user_files(runner, files):
    d, *_ = files
    out = d / "rep"
    res = _run(runner, ["report", "--quick", "--no-progress", "--arch", SPEC, "--train", d / "train.csv",
                        "--test", d / "test.csv", "--candidates", d / "cands.csv", "--steps", 10, "--widths", 8,
                        "--out", out])
    assert "report written to" in res.output
    results = json.loads((out / "results.json").read_text())
    names = {r["name"] for r in results["prior"]["candidates"]["rows"]}
    assert names == {"flat", "up", "labels in the test file"}
    assert [s["width"] for s in results["training"]["settings"]] == [8]


@pytest.mark.parametrize("args, message", [
    (["eigen", "--arch", "dense(3) rleu", "--x", "GRID"], "unknown layer 'rleu'"),
    (["eigen", "--arch", SPEC, "--x", "missing.csv"], "--x: file 'missing.csv' does not exist"),
    (["eigen", "--arch", SPEC, "--x", "GRID", "--kernel", "ntk2"], "kernel: expected 'ntk' or 'nngp'"),
    (["eigen", "--arch", SPEC, "--x", "GRID", "--out", "e.txt"], "--out: cannot write '.txt' here"),
    (["score", "--arch", SPEC, "--train", "GRID", "--test", "TEST"], "--train: "),
    (["score", "--arch", SPEC, "--train", "TRAIN", "--test", "TEST", "--candidates", "BADCANDS"],
     "candidate 'flat' has shape (2,) but there are 3 test inputs"),
    (["score", "--arch", SPEC, "--train", "TRAIN", "--test", "TEST2D", "--candidates", "CANDS"],
     "x_test: has 2 features but x_train has 1"),
    (["score", "--arch", SPEC, "--train", "TRAIN", "--test", "INPUTS"], "--candidates: nothing to rank"),
    (["predict", "--arch", SPEC, "--train", "TRAIN", "--kind", "magic"], "kind: expected one of"),
    (["predict", "--arch", SPEC, "--train", "TRAIN", "--kind", "ntk", "--t", "1,2", "--out", "p.csv"],
     "--out: a .csv holds one training time"),
    (["predict", "--arch", SPEC, "--train", "TRAIN", "--kind", "ntk", "--t", "1,x"], "--t: could not read '1,x'"),
    (["train", "--arch", SPEC, "--train", "TRAIN", "--widths", "8,16"], "--test: a width sweep compares"),
    (["train", "--arch", SPEC, "--train", "TRAIN", "--steps", "-1"], "steps: expected an integer >= 0"),
    (["diagnose", "--arch", SPEC, "--train", "TRAIN", "--format", "yaml"], "--format: expected 'text' or 'json'"),
    (["report", "--test", "TEST"], "--test, --candidates, --learning-rate, --steps, --widths: apply to a report"),
    (["report", "--arch", SPEC], "--arch, --train: a report on your data needs both"),
])
def test_bad_input_exits_2_with_one_message(runner, files, args, message):
    d, *_ = files
    np.savetxt(d / "badcands.csv", np.zeros((2, 1)), delimiter=",", header="flat", comments="")
    np.savetxt(d / "test2d.csv", np.zeros((3, 2)), delimiter=",", header="a,b", comments="")
    paths = {"GRID": "grid.csv", "TRAIN": "train.csv", "TEST": "test.csv", "INPUTS": "test_inputs.csv",
             "CANDS": "cands.csv", "BADCANDS": "badcands.csv", "TEST2D": "test2d.csv"}
    args = [str(d / paths[a]) if a in paths else (str(d / a) if a.endswith((".txt", ".csv")) and "/" not in a
                                                   and a != "missing.csv" else a) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ")


@pytest.mark.parametrize("suffix", [".json", ".npz", ".npy"])
def test_candidate_files_of_every_format_give_the_same_ranking(runner, files, suffix):
    d, *_ = files
    path = d / f"cands{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"flat": [0, 0, 0], "up": [1, 1, 1]}))
    elif suffix == ".npz":
        np.savez(path, flat=np.zeros(3), up=np.ones(3))
    else:
        np.save(path, np.array([np.zeros(3), np.ones(3)]))
    args = ["score", "--arch", SPEC, "--train", d / "train.csv", "--test", d / "test_inputs.csv",
            "--format", "json"]
    expected = json.loads(_run(runner, args + ["--candidates", d / "cands.csv"]).stdout)["rows"]
    got = json.loads(_run(runner, args + ["--candidates", path]).stdout)["rows"]
    names = {"candidate 1": "flat", "candidate 2": "up"}          # an .npy has no names
    assert [names.get(r["name"], r["name"]) for r in got] == [r["name"] for r in expected]
    assert [r["conditional_log_prob"] for r in got] == [r["conditional_log_prob"] for r in expected]


def test_library_warnings_are_printed_as_one_line_each(runner, files):
    d, *_ = files
    res = _run(runner, ["predict", "--arch", SPEC, "--train", d / "train.csv", "--kind", "ntk", "--t", "1000", "--learning-rate", 1])
    assert "warning: learning_rate=1 exceeds 2m / lambda_max" in res.stderr
    assert "LearningRateWarning" not in res.output and ".py:" not in res.output


def test_train_csv_without_a_header_takes_the_last_column_as_label(runner, files):
    d, x, y, _ = files
    np.savetxt(d / "plain.csv", np.c_[x, y], delimiter=",")
    res = _run(runner, ["predict", "--arch", SPEC, "--train", d / "plain.csv", "--kind", "nngp",
                        "--format", "json"])
    mean = np.array(json.loads(res.stdout)["mean"])[:, 0]
    np.testing.assert_allclose(mean, predict(parse_spec(SPEC), torch.from_numpy(x)[:, None], y, kind="nngp").mean,
                               rtol=1e-10, atol=1e-10)


def test_a_csv_y_column_is_a_label_for_every_command(runner, tmp_path):
    """One rule for CSV columns (issue 13): kernel --x1 and eigen --x leave a y column out of the
    inputs, as --train does, and say which columns they used."""
    table = tmp_path / "train.csv"
    x = np.linspace(-1, 1, 5)
    np.savetxt(table, np.c_[x, 2 * x, np.sin(x)], delimiter=",", header="a,b,y", comments="")
    res = _run(runner, ["kernel", "--arch", SPEC, "--x1", table, "--out", tmp_path / "k.npz"])
    assert res.exit_code == 0, res.output
    assert "label column(s) y, left out; the inputs are its 2 other column(s): a, b" in res.stderr
    with np.load(tmp_path / "k.npz") as z:
        np.testing.assert_allclose(z["ntk"], parse_spec(SPEC).kernel(np.c_[x, 2 * x]).ntk.numpy(), rtol=1e-12)
    res = _run(runner, ["eigen", "--arch", SPEC, "--x", table, "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n"] == 5


def test_every_command_takes_format_json(runner, tmp_path):
    """README: every command takes --format json (issue 13); kernel and report did not."""
    np.save(tmp_path / "x.npy", np.linspace(-1, 1, 6)[:, None])
    res = _run(runner, ["kernel", "--arch", SPEC, "--x1", tmp_path / "x.npy", "--out", tmp_path / "K.npz",
                        "--format", "json"])
    assert json.loads(res.stdout) == {"out": str(tmp_path / "K.npz"), "shape": [6, 6], "arch": str(parse_spec(SPEC))}
    text = _run(runner, ["kernel", "--arch", SPEC, "--x1", tmp_path / "x.npy", "--out", tmp_path / "K.npz"])
    assert text.stdout.startswith("NNGP and NTK of") and "6 x 6" in text.stdout
    res = _run(runner, ["report", "--quick", "--no-progress", "--out", tmp_path / "r", "--format", "json"])
    payload = json.loads(res.stdout)
    assert payload["index"].endswith("index.html") and set(payload["findings"]) >= {"eigenmodes", "prior"}
    import inspect
    # every command that prints results has the option (explore serves a page and prints its URL)
    missing = [c.name or c.callback.__name__ for c in app.registered_commands
               if c.callback.__name__ != "explore" and "fmt" not in inspect.signature(c.callback).parameters]
    assert not missing, missing
