"""Thread policy: one thread for the library's small-operation loops, restored after; the command
line's OMP_WAIT_POLICY (checked in a subprocess, where the OpenMP runtime is loaded fresh)."""

import os
import subprocess
import sys

import pytest
import torch

import threading
import time

import numpy as np

import ntkprior as ntp
from ntkprior._threads import SMALL_OP, op_threads, threads_for, tile_map, tile_workers


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_operations_run_with_one_thread_and_the_setting_is_restored(two_threads, monkeypatch):
    monkeypatch.delenv("NTKPRIOR_THREADS", raising=False)
    with op_threads(SMALL_OP - 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with op_threads(SMALL_OP):
        assert torch.get_num_threads() == 2                # large: torch's own setting


def test_the_setting_is_restored_when_the_loop_raises(two_threads, monkeypatch):
    monkeypatch.delenv("NTKPRIOR_THREADS", raising=False)
    with pytest.raises(RuntimeError):
        with op_threads(10):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2


def test_environment_override(two_threads, monkeypatch):
    monkeypatch.setenv("NTKPRIOR_THREADS", "2")
    assert threads_for(10) == 2
    monkeypatch.setenv("NTKPRIOR_THREADS", "0")
    with op_threads(10):
        assert torch.get_num_threads() == 2                # 0: leave torch's setting alone
    for bad in ("two", "-1"):
        monkeypatch.setenv("NTKPRIOR_THREADS", bad)
        with pytest.raises(ValueError, match="NTKPRIOR_THREADS"):
            threads_for(10)


def test_tiles_run_side_by_side_one_torch_thread_each_in_order(two_threads, monkeypatch):
    monkeypatch.delenv("NTKPRIOR_THREADS", raising=False)
    assert tile_workers(8) == 2 and tile_workers(1) == 1
    seen = []

    def work(i):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return i * i

    assert list(tile_map(work, range(6), 2)) == [i * i for i in range(6)]
    assert seen[0] == (threading.main_thread().name, 2)           # the first alone, in the caller
    assert all(name.startswith("ntkprior-tile") and threads == 1 for name, threads in seen[1:])
    assert torch.get_num_threads() == 2
    # from a thread of the caller's own (torch's count is per OS thread): the workers still use one
    seen.clear()
    caller = threading.Thread(target=lambda: (torch.set_num_threads(2), list(tile_map(work, range(6), 2))))
    caller.start()
    caller.join(30)
    assert len(seen) == 6 and all(threads == 1 for _, threads in seen[1:])
    monkeypatch.setenv("NTKPRIOR_THREADS", "0")
    assert tile_workers(8) == 1                                    # 0: torch's threads inside each op
    monkeypatch.setenv("NTKPRIOR_THREADS", "3")
    assert tile_workers(8) == 3


def test_an_error_in_a_tile_reaches_the_caller_and_cancels_the_rest(two_threads):
    started = []

    def work(i):
        started.append(i)
        if i == 1:
            raise ValueError("tile 1 failed")
        time.sleep(0.01)                   # 200 tiles take ~1 s: the error lands long before
        return i

    with pytest.raises(ValueError, match="tile 1 failed"):
        list(tile_map(work, range(200), 2))
    assert len(started) < 200 and torch.get_num_threads() == 2


def test_kernels_computed_on_two_tile_threads_equal_one_thread_bit_for_bit(two_threads, monkeypatch):
    monkeypatch.delenv("NTKPRIOR_THREADS", raising=False)
    arch = ntp.serial(ntp.Dense(64, weight_std=1.5, bias_std=0.1), ntp.Erf(), ntp.Dense(1))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((700, 5)))
    many = dict(block_rows=64)                                      # 11 tiles
    parallel, cross = arch.kernel(x, **many), arch.kernel(x, x[:300], **many)
    torch.set_num_threads(1)
    serial, cross1 = arch.kernel(x, **many), arch.kernel(x, x[:300], **many)
    assert torch.equal(parallel.nngp, serial.nngp) and torch.equal(parallel.ntk, serial.ntk)
    assert torch.equal(cross.ntk, cross1.ntk) and torch.equal(parallel.nngp, parallel.nngp.T)


def _wait_policy(argv0: str, env_value: str | None) -> str:
    """OMP_WAIT_POLICY after importing the CLI in a fresh process whose argv[0] is ``argv0``, and
    whether torch was already loaded when ntkprior set it (it must not be)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    code = ("import sys; sys.argv = [%r]; import builtins, os\n"
            "seen = []\n"
            "real = builtins.__import__\n"
            "def spy(name, *a, **k):\n"
            "    if name == 'torch' and not seen: seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "import ntkprior.app.cli\n"
            "import ntkprior.arch.layers  # a command's first library import loads torch\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), seen[0])" % argv0)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.split()


def test_the_command_line_sets_a_passive_wait_policy_before_torch_loads():
    script = os.path.join(os.path.dirname(sys.executable), "ntkprior")
    assert _wait_policy(script, None) == ["PASSIVE", "PASSIVE"]     # set before torch's import


def test_the_command_line_keeps_the_users_wait_policy():
    script = os.path.join(os.path.dirname(sys.executable), "ntkprior")
    assert _wait_policy(script, "ACTIVE") == ["ACTIVE", "ACTIVE"]


def test_importing_the_library_leaves_the_wait_policy_alone():
    assert _wait_policy("my_script.py", None) == ["None", "None"]


_KEPT = """
import numpy as np, os, sys
from ntkprior import _process
tuned = _process.configure_command_line() if sys.argv[1] == "tuned" else False
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
a = np.ones(32 << 17)          # 32 MiB, touched
before = rss()
del a
print(tuned, (before - rss()) >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_command_line_keeps_freed_memory_for_reuse():
    # a freed 32 MiB block: returned to the system by default, kept for reuse when tuned
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}   # dask sets some

    def run(mode, **env):
        out = subprocess.run([sys.executable, "-c", _KEPT, mode], capture_output=True, text=True, timeout=120,
                             check=True, env={**clean, **env}).stdout.split()
        return out[0] == "True", int(out[1])

    assert run("default") == (False, 32)
    assert run("tuned") == (True, 0)
    assert run("tuned", MALLOC_TRIM_THRESHOLD_="0")[0] is False           # the user's choice wins
