"""Writing results never loses or mixes a user's data (issue #17): ``ntkprior.files`` checks paths and
writes files and directories atomically; ``kernel --out`` and ``report`` killed with SIGKILL at
random moments leave the previous result or a complete new one, never a truncated or mixed one."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ntkprior.files import (TEMP_PREFIX, atomic_directory, atomic_file, check_input_file, check_output_directory,
                            check_output_file, check_replaceable, remove_tree, write_text)


def leftovers(path):
    return [p for p in path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_atomic_file_replaces_only_when_complete(tmp_path):
    target = tmp_path / "K.npz"
    target.write_text("old")
    for interruption in (RuntimeError("failed"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)):
            with atomic_file(target) as tmp:
                tmp.write_text("half")
                raise interruption
        assert target.read_text() == "old" and not leftovers(tmp_path)
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz"      # same directory, same suffix
        np.savez(tmp, a=np.arange(3))
    with np.load(target) as z:
        assert list(z["a"]) == [0, 1, 2]
    write_text(tmp_path / "r.json", "{}")
    assert (tmp_path / "r.json").read_text() == "{}" and not leftovers(tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        with atomic_file(tmp_path):
            pass


def test_atomic_directory_never_mixes_two_runs(tmp_path):
    out = tmp_path / "R"
    out.mkdir()
    (out / "old.png").write_text("old figure")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "new.png").write_text("new figure")
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(out)) == ["old.png"] and not leftovers(tmp_path)
    with atomic_directory(out) as tmp:
        (tmp / "new.png").write_text("new figure")
    assert sorted(os.listdir(out)) == ["new.png"] and not leftovers(tmp_path)


def test_paths_are_checked_with_the_option_named(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f.csv").write_text("1")
    cases = [(lambda: check_input_file(tmp_path / "nope.csv", "--x"), "--x: file .* does not exist"),
             (lambda: check_input_file(tmp_path / "d", "--x"), "--x: .* is a directory"),
             (lambda: check_output_file(tmp_path / "d", "--out"), "--out: .* is a directory"),
             (lambda: check_output_file(tmp_path / "no" / "K.npz", "--out"), "--out: the directory .* does not exist"),
             (lambda: check_output_file(tmp_path / "K.json", "--out", (".npz",)), "--out: cannot write '.json'"),
             (lambda: check_output_directory(tmp_path / "f.csv", "--out", lambda p: True, "a report"),
              "is a file, not a directory"),
             (lambda: check_output_directory(tmp_path, "--out", lambda p: False, "a report"),
              "holds other data, not a report; pass a new path")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert check_input_file(tmp_path / "f.csv", "--x") == tmp_path / "f.csv"
    assert check_output_file(tmp_path / "K.npz", "--out", (".npz",)) == tmp_path / "K.npz"


def test_the_working_directory_its_parents_and_home_are_never_replaced(tmp_path, monkeypatch):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    for path in (inner, tmp_path / "a", tmp_path, "/", os.path.expanduser("~"), "."):
        with pytest.raises(ValueError, match="never replaced"):
            check_replaceable(path, "store")
        with pytest.raises(ValueError, match="never replaced"):
            remove_tree(path, "store")
    assert inner.is_dir()
    other = tmp_path / "other"
    other.mkdir()
    remove_tree(other, "store")
    assert not other.exists() and not leftovers(tmp_path)


def _kill_at_random(command, rng, low, high, env):
    """Start ``command``, SIGKILL it after a uniform(low, high) delay; True if it was still running."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(low, high))
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return alive


CLI = [sys.executable, "-c", "from ntkprior.app.cli import app; app()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPEC = "[dense(64) relu]*2 dense(1)"


def test_kernel_out_killed_at_random_moments_is_old_or_complete(tmp_path):
    """SIGKILL during ``kernel --out K.npz`` (a 2 x 72 MB result) at seeded random moments: K.npz is
    the previous result or a complete new one, each time; no truncated file ever has the name."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 3))        # a run of 2-3 s idle (import, kernel, write): kills land inside
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "K.npz"
    np.savez(out, nngp=np.zeros(1), ntk=np.zeros(1))             # the previous result
    command = CLI + ["kernel", "--arch", SPEC, "--x1", str(tmp_path / "x.npy"), "--out", str(out)]
    kills = 0
    for _ in range(5):
        kills += _kill_at_random(command, rng, 0.5, 3.0, ENV)
        with np.load(out) as z:                                   # never a truncated file
            assert z["ntk"].shape in ((1,), (3000, 3000))
    assert kills >= 1
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with np.load(out) as z:
        assert z["ntk"].shape == (3000, 3000) and np.isfinite(z["ntk"]).all()


def test_report_killed_at_a_random_moment_keeps_the_older_report(tmp_path):
    """SIGKILL during ``report --quick --out R`` over an older report: R is the older report, whole;
    the rerun replaces it with a complete new one (no figure of the older run left)."""
    out = tmp_path / "R"
    (out / "figures").mkdir(parents=True)
    (out / "results.json").write_text("{}")
    (out / "index.html").write_text("older")
    (out / "figures" / "older-only.png").write_text("older figure")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    command = CLI + ["report", "--quick", "--no-progress", "--out", str(out)]
    assert _kill_at_random(command, np.random.default_rng(1), 1.5, 4.0, ENV)   # a quick report takes ~8 s idle
    after = sorted(p.relative_to(out) for p in out.rglob("*"))
    if (out / "index.html").read_text() == "older":      # killed before the swap: the older report, whole
        assert after == before
    else:                                                 # killed after it: the new report, complete
        assert not (out / "figures" / "older-only.png").exists()
        assert "meta" in json.loads((out / "results.json").read_text())
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not (out / "figures" / "older-only.png").exists() and (out / "index.html").read_text() != "older"
    assert len(list((out / "figures").glob("*.png"))) >= 1
