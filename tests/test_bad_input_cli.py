"""The CLI's bad-input contract (issue #17): every bad path, file or size exits with code 2 and one
``error:`` line naming the option, never a traceback, and never touches what the user already had.

Each case is a command line over files made in ``tmp_path``; the assertions are the contract (exit
2, one line, the option's name, no traceback), and that the user's files are unchanged.
"""

import json
import os

import numpy as np
import pytest
from numpy.lib import format as npy
from typer.testing import CliRunner

import ntkprior as ntp
from ntkprior.app.cli import app

SPEC = "dense(16, bias_std=0.1) relu dense(1)"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def d(tmp_path, rng):
    x = rng.standard_normal((6, 2))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "train.csv", np.c_[x, x[:, 0]], delimiter=",", header="a,b,y", comments="")
    np.savetxt(tmp_path / "two.csv", np.c_[x, x[:, 0], x[:, 1]], delimiter=",", header="a,b,y1,y2",
               comments="")
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes("- dense(3)  # caf\xe9\n".encode("latin-1"))
    (tmp_path / "a_dir").mkdir()
    with open(tmp_path / "huge.npy", "wb") as f:      # a 200-byte file whose header claims 7 TiB
        npy.write_array_header_1_0(f, {"shape": (2**20, 2**20 - 2**17), "fortran_order": False,
                                       "descr": "<f8"})
        f.write(b"\0" * 72)
    np.save(tmp_path / "tall.npy", np.zeros((2_000_000, 1)))     # 16 MB in, a 64 TB kernel out
    return tmp_path


def contract(result, option: str) -> str:
    """Exit 2, one error line naming ``option`` (a spec error adds its caret lines), no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and option in errors[0], result.stderr
    others = [line for line in result.stderr.splitlines() if not line.startswith(("error:", "  "))]
    assert others == [], result.stderr             # no progress bar, no warning noise before the error
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.stdout == ""                     # nothing printed before the error (no progress bar)
    return errors[0]


CASES = {
    "out is a directory": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--out", "{d}/a_dir"], "--out"),
    "out in a missing directory": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--out", "{d}/no/K.npz"],
                                   "--out"),
    "out not writable": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--out", "/proc/K.npz"], "/proc"),
    "out with another suffix": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--out", "{d}/K.json"], "--out"),
    "input is a directory": (["kernel", "--arch", SPEC, "--x1", "{d}/a_dir"], "--x1"),
    "input missing": (["kernel", "--arch", SPEC, "--x1", "{d}/missing.npy"], "--x1"),
    "npy header claims 7 TiB": (["kernel", "--arch", SPEC, "--x1", "{d}/huge.npy"], "--x1"),
    "kernel larger than memory": (["kernel", "--arch", SPEC, "--x1", "{d}/tall.npy", "--out", "{d}/K.npz"],
                                  "--store"),
    "yaml is a directory": (["kernel", "--arch", "{d}/dir.yaml", "--x1", "{d}/x.npy"], "arch"),
    "yaml not utf-8": (["kernel", "--arch", "{d}/latin1.yaml", "--x1", "{d}/x.npy"], "UTF-8"),
    "absurd repetition": (["kernel", "--arch", "[dense(8) relu]*100000000 dense(1)", "--x1", "{d}/x.npy"],
                          "arch"),
    "absurd degree": (["kernel", "--arch", "dense(8) tanh(degree=100000) dense(1)", "--x1", "{d}/x.npy"], "arch"),
    "absurd width": (["kernel", "--arch", "dense(100000000000) relu dense(1)", "--x1", "{d}/x.npy"], "arch"),
    "figure format unknown": (["eigen", "--arch", SPEC, "--x", "{d}/x.npy", "--figure", "{d}/e.xyz"], "--figure"),
    "figure in a directory that is missing": (["eigen", "--arch", SPEC, "--x", "{d}/x.npy", "--figure",
                                               "{d}/no/e.png"], "--figure"),
    "eigen out is a directory": (["eigen", "--arch", SPEC, "--x", "{d}/x.npy", "--out", "{d}/a_dir"], "--out"),
    "train is a directory": (["score", "--arch", SPEC, "--train", "{d}/a_dir", "--test", "{d}/x.npy"], "--train"),
    "test is a directory": (["predict", "--arch", SPEC, "--train", "{d}/train.csv", "--test", "{d}/a_dir"],
                            "--test"),
    "candidates is a directory": (["score", "--arch", SPEC, "--train", "{d}/train.csv", "--test", "{d}/x.npy",
                                   "--candidates", "{d}/a_dir"], "--candidates"),
    "train out in a missing directory": (["train", "--arch", SPEC, "--train", "{d}/train.csv", "--steps", "2",
                                          "--out", "{d}/no/t.json"], "--out"),
    "report out is a file": (["report", "--quick", "--out", "{d}/x.npy"], "--out"),
    "report over other data": (["report", "--quick", "--out", "{d}"], "--out"),
    "report on two label columns": (["report", "--quick", "--arch", SPEC, "--train", "{d}/two.csv", "--out",
                                     "{d}/R"], "y_train"),
    "store over the user's directory": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--store", "{d}"],
                                        "holds other data, not an ntkprior kernel store"),
    "stall timeout not positive": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--store", "{d}/K.zarr",
                                    "--stall-timeout", "0"], "stall_timeout"),
    "store is a file": (["kernel", "--arch", SPEC, "--x1", "{d}/x.npy", "--store", "{d}/x.npy"], "store"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(runner, d, case):
    args, option = CASES[case]
    before = sorted((p.relative_to(d), p.stat().st_size) for p in d.rglob("*"))
    result = runner.invoke(app, [a.format(d=d) for a in args])
    contract(result, option)
    assert sorted((p.relative_to(d), p.stat().st_size) for p in d.rglob("*")) == before   # nothing touched


def test_store_dot_never_empties_the_working_directory(runner, d, monkeypatch):
    monkeypatch.chdir(d)
    before = sorted(os.listdir(d))
    for extra in ([], ["--overwrite"]):
        contract(runner.invoke(app, ["kernel", "--arch", SPEC, "--x1", "x.npy", "--store", ".", *extra]), "store")
    assert sorted(os.listdir(d)) == before


def test_unreachable_scheduler_is_one_line(runner, d):
    pytest.importorskip("dask.distributed")
    result = runner.invoke(app, ["kernel", "--arch", SPEC, "--x1", f"{d}/x.npy", "--store", f"{d}/K.zarr",
                                 "--scheduler", "tcp://127.0.0.1:9"])
    assert "no Dask scheduler answered" in contract(result, "client")


def test_kernel_out_writes_exactly_the_name_printed(runner, d):
    result = runner.invoke(app, ["kernel", "--arch", SPEC, "--x1", f"{d}/x.npy", "--out", f"{d}/K.npz",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["out"] == f"{d}/K.npz" and (d / "K.npz").is_file()
    assert not [p for p in d.iterdir() if p.name.startswith(".ntkprior-tmp")]     # no temporary left


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: "
                                                               "you tried to allocate 25600000000 bytes")])
def test_an_impossible_allocation_met_later_is_one_line(runner, d, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(ntp.Serial, "kernel", fail)
    result = runner.invoke(app, ["kernel", "--arch", SPEC, "--x1", f"{d}/x.npy", "--out", f"{d}/K.npz"])
    assert "not enough memory" in contract(result, "--store")
    monkeypatch.setattr(ntp.Serial, "kernel", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    result = runner.invoke(app, ["kernel", "--arch", SPEC, "--x1", f"{d}/x.npy", "--out", f"{d}/K.npz"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)   # bugs are not hidden
