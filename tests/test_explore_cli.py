"""``ntkprior explore`` as a user runs it: its help, a real server started on a random free port and
stopped with Ctrl-C, and a taken port refused with one line (exit code 2)."""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason='the explorer needs pip install "ntkprior[explore]"')

from ntkprior.app.cli import app  # noqa: E402

#: the explore command in a fresh interpreter (the console script may not be on PATH in a venv)
COMMAND = [sys.executable, "-c", "from ntkprior.app.cli import app; app()", "explore"]
START_TIMEOUT = 60.0


def _first_line(stream, seconds: float) -> str:
    """The first line a process prints, or '' after ``seconds`` (a reader thread: nothing blocks)."""
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=seconds)
    except queue.Empty:
        return ""


@contextlib.contextmanager
def running_server(*args: str):
    """Start ``ntkprior explore --port 0 --no-browser`` and yield its URL; stop it with SIGINT."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*COMMAND, "--port", "0", "--no-browser", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _first_line(proc.stdout, START_TIMEOUT)
        assert "http://127.0.0.1:" in line, f"no URL printed: {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        url = line.split()[2]
        _wait_until_up(url)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_help_names_every_option_with_an_example():
    result = CliRunner().invoke(app, ["explore", "--help"])
    assert result.exit_code == 0, result.output
    for word in ("--port", "--host", "--no-browser", "--time-limit", "8050", "127.0.0.1", "Example",
                 "ntkprior explore"):
        assert word in result.output


def test_server_starts_on_a_free_port_serves_the_page_refuses_other_hosts_and_stops_on_ctrl_c():
    with running_server() as (url, proc):
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"ntkprior explore" in page.read()
        with urllib.request.urlopen(url + "api/options", timeout=10) as options:
            assert "relu" in json.loads(options.read())["activations"]
        with urllib.request.urlopen(url + "plotly.min.js", timeout=10) as script:
            assert len(script.read()) > 1_000_000
        rebound = urllib.request.Request(url, headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 400
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) in (0, 130)          # 130: uvicorn re-raises SIGINT after a clean shutdown
        assert "Traceback" not in proc.stderr.read()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_stopping_the_server_stops_its_training_runs():
    x, y = [[-1.0], [0.5], [2.0]], [0.1, -0.3, 0.8]
    body = json.dumps({"data": {"x": x, "y": y}, "width": 512, "steps": 20_000, "ensemble": 16}).encode()
    with running_server() as (url, proc):
        request = urllib.request.Request(url + "api/train", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["state"] == "running"
        children = _children(proc.pid)
        assert children, "the training run has no child process"
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        # checked at once: the server kills and reaps its children before it exits (an orphan would
        # only die later, at its next write to the closed pipe)
        assert not [c for c in children if os.path.exists(f"/proc/{c}")]


def test_a_taken_port_is_one_line_and_exit_code_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([*COMMAND, "--port", str(port), "--no-browser"], capture_output=True, text=True,
                                timeout=START_TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --host/--port: cannot listen on 127.0.0.1:") and \
        result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("args, words", [(["--port", "70000"], ["--port", "0-65535"]),
                                         (["--time-limit", "0"], ["--time-limit"])])
def test_bad_options_exit_2_with_one_line(args, words):
    result = CliRunner().invoke(app, ["explore", "--no-browser", *args])
    assert result.exit_code == 2
    for word in words:
        assert word in result.output
