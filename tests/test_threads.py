"""Thread policy: one thread for the library's small-operation loops, restored after; the command
line's OMP_WAIT_POLICY (checked in a subprocess, where the OpenMP runtime is loaded fresh)."""

import os
import subprocess
import sys

import pytest
import torch

from ntkprior._threads import SMALL_OP, op_threads, threads_for


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
