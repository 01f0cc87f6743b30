"""Kernel tracking during training: one verification per run, and the CLI switch that turns it off."""

import numpy as np
from typer.testing import CliRunner

import ntkprior as ntp
from ntkprior.app.cli import app
from ntkprior.kernels import empirical as em

SPEC = "dense(8, weight_std=1.4, bias_std=0.5) relu dense(1)"


def _data(n=6, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, np.sin(x[:, 0])


def test_tracking_verifies_the_structured_plan_once_per_run(monkeypatch):
    calls = []
    real = em._verified
    monkeypatch.setattr(em, "_verified", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(em, "_PLAN_CACHE", {})
    x, y = _data()
    result = ntp.train(ntp.parse_spec(SPEC), x, y, steps=20, learning_rate=0.05, ensemble=3, record=6)
    assert result.kernel_change.shape[1] == len(result.steps) > 3
    assert len(calls) == 1                      # 3 members x (1 initial + records) kernels, one check
    assert float(result.kernel_change[:, 0].abs().max()) == 0.0 and float(result.kernel_change[:, -1].min()) > 0


def test_cli_no_track_kernel_skips_the_kernel(tmp_path):
    x, y = _data()
    np.savetxt(tmp_path / "train.csv", np.column_stack([x, y]), delimiter=",")
    runner = CliRunner()
    for flag, tracked in (("--track-kernel", True), ("--no-track-kernel", False)):
        out = tmp_path / f"{flag}.npz"
        res = runner.invoke(app, ["train", "--arch", SPEC, "--train", str(tmp_path / "train.csv"),
                                  "--steps", "4", "--ensemble", "1", "--out", str(out), flag])
        assert res.exit_code == 0, res.output
        with np.load(out) as z:
            assert ("kernel_change" in z.files) == tracked
        assert ("–" in res.stdout) != tracked    # the table shows no kernel change when untracked
