"""Shared pieces of the benchmark scripts: timing, peak memory, and the neural-tangents baseline.

The baseline runs as a subprocess with the Python of a separate venv (see
../shared/baselines/README.md); when that venv is absent, benchmarks say so and report
ntkprior's own figures alone.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import statistics
import subprocess
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
NT_PYTHON = Path(os.environ.get("NTKPRIOR_NT_PYTHON", "/opt/ntvenv/bin/python"))
NT_BASELINE = Path(os.environ.get("NTKPRIOR_NT_BASELINE", REPO.parent / "shared" / "baselines" / "nt_baseline.py"))


def timed(fn, repeats: int = 3) -> dict:
    """Run ``fn`` once as warm-up, then ``repeats`` times; return first / median / min seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times)}


def current_rss() -> int:
    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak resident set above the starting one while the block runs, sampled every 2 ms in a
    background thread: ``.growth`` in bytes, ``.mb`` in megabytes."""

    def __enter__(self):
        self.start = self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        self.growth = self.peak - self.start
        self.mb = self.growth / 1e6


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def xla_threads(threads: int) -> dict:
    """Environment for the neural-tangents runner: XLA held to one thread (its Eigen pool off,
    intra-op parallelism 1) when ours has one; its default (every core) otherwise."""
    return {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"} if threads == 1 else {}


def neural_tangents(*args: str, script: Path = NT_BASELINE, timeout: float = 900,
                    env: dict | None = None) -> dict | None:
    """Run a neural-tangents baseline ``script`` (in its own venv) with ``args`` and return the last
    JSON line it prints; None (and a note) when the venv or script is missing, or the run fails or
    times out. ``env``: extra environment variables."""
    if not NT_PYTHON.exists() or not script.exists():
        print(f"  [neural-tangents baseline skipped: {NT_PYTHON} or {script} not found; "
              "build it with ../shared/baselines/make-nt-venv.sh]")
        return None
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    try:
        proc = subprocess.run([str(NT_PYTHON), str(script), *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"  [neural-tangents timed out after {timeout:g} s]")
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"  [neural-tangents baseline failed: {proc.stderr.strip()[-400:]}]")
        return None
    return json.loads(lines[-1])


def run_isolated(script: Path, *args: str) -> dict:
    """Run ``script`` with ``args`` in a fresh Python process (clean peak memory); parse its JSON line."""
    import sys
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True)
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
