"""Training real networks in the background: one child process per job, bounded and cancellable.

A job runs :func:`ntkprior.dynamics.diagnose.diagnose` (it trains the ensemble with
:func:`ntkprior.dynamics.training.train` and judges it against the kernel) in a child process
(``python -m ntkprior.app.explore.jobs``, the plan as JSON on its stdin), so that the page never
waits on it, a cancel is immediate (the process is killed: no cooperation from torch needed) and a
crash cannot take the server with it. Progress is the library's own tqdm bar, read from the child's
stderr and sent back as JSON lines on its stdout, then one line with the result or the error.
Bounds: at most one job per client (a second is refused until the first ends or is cancelled), at
most ``max_jobs`` in all, and each is killed after ``time_limit`` seconds; its memory is bounded by
the sizes :mod:`ntkprior.app.explore.views` lets through (``MAX_TRAINED_PARAMETERS``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time

#: tqdm writes "... 451/1001 [...]": steps done and the total
_TQDM_COUNT = re.compile(r"(\d+)/(\d+)")
#: the child's threads: one, and no spinning (FACTS.md: set before torch is imported)
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _send(out, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


class _ProgressSink(io.TextIOBase):
    """A stand-in for the child's stderr that forwards tqdm's step counts to the parent."""

    def __init__(self, out):
        self.out = out

    def isatty(self) -> bool:
        return True         # it reads every redraw (ntkprior.progress writes a log only every 30 s)

    def write(self, text: str) -> int:
        counts = _TQDM_COUNT.findall(text)
        if counts:
            done, total = counts[-1]
            _send(self.out, {"progress": [int(done), int(total)]})
        return len(text)


def run_diagnosis(plan: dict, out) -> None:
    """The child's work: train and diagnose, then send {"done": result} or {"error": message}."""
    import warnings

    import torch
    try:
        from ntkprior.arch.spec import parse_spec
        from ntkprior.dynamics.diagnose import diagnose
        x, y, x_test = (torch.tensor(plan[k], dtype=torch.float64) for k in ("x", "y", "x_test"))
        with contextlib.redirect_stderr(_ProgressSink(out)), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            verdict = diagnose(parse_spec(plan["spec"]), x, y, x_test, plan["steps"], plan["learning_rate"],
                               seed=plan["seed"], ensemble=plan["ensemble"], progress=True)
        _send(out, {"done": diagnosis_payload(verdict, [str(w.message) for w in caught])})
    except Exception as exc:        # the page shows the message; the child exits either way
        _send(out, {"error": str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"})


def diagnosis_payload(verdict, caught: list) -> dict:
    """A :class:`~ntkprior.dynamics.diagnose.Diagnosis` as plain lists: each network's function on the
    test inputs at the start and end of training, their mean, the Lee et al. mean ± std, the verdict."""
    from ntkprior.app.report import jsonable
    run = verdict.training
    return jsonable({
        "members": run.test_outputs[:, -1, :, 0], "initial": run.test_outputs[:, 0, :, 0],
        "mean": verdict.ensemble_mean[:, 0], "lee_mean": verdict.lee_mean[:, 0], "lee_std": verdict.lee_std,
        "loss": run.loss[:, -1], "in_kernel_regime": verdict.in_kernel_regime,
        "answers": verdict.answers(), "verdicts": verdict.verdicts, "reasons": verdict.reasons,
        "checks": [{"name": c.name, "passed": c.passed, "sentence": c.sentence} for c in verdict.checks],
        "notes": verdict.notes, "text": str(verdict), "warnings": list(dict.fromkeys(caught)),
        "steps": verdict.steps, "learning_rate": verdict.learning_rate,
        "max_stable_learning_rate": verdict.max_stable_lr_analytic, "ensemble": run.ensemble})


class Job:
    """One training run in a child process; a reader thread collects what it sends."""

    def __init__(self, plan: dict, time_limit: float):
        self.plan, self.time_limit = plan, time_limit
        self.state, self.done, self.total = "running", 0, plan["steps"] + 1
        self.result, self.error = None, None
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "ntkprior.app.explore.jobs"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env={**os.environ, **_CHILD_ENV})
        self.process.stdin.write(json.dumps(plan))
        self.process.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._timer = threading.Timer(time_limit, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self._lock:
                if self.state != "running":
                    break
                if "progress" in message:
                    self.done, self.total = message["progress"]
                elif "done" in message:      # (tqdm's last count is one short: the loop breaks first)
                    self.state, self.result, self.done = "done", message["done"], self.total
                else:
                    self.state, self.error = "failed", message["error"]
        code = self.process.wait()
        with self._lock:
            if self.state == "running":
                self.state = "failed"
                self.error = f"the training process ended unexpectedly (exit code {code})"
        self._timer.cancel()

    def _stop(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if self.state != "running":
                return
            self.state, self.error = state, error
        self.process.kill()
        self.process.wait(10)

    def _expire(self) -> None:
        self._stop("timed out", f"training took longer than the explorer's limit of {self.time_limit:g} s; "
                                "use fewer steps, a smaller width or fewer networks")

    def cancel(self) -> None:
        self._stop("cancelled")
        self._timer.cancel()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def status(self) -> dict:
        with self._lock:
            return {"state": self.state, "done": self.done, "total": self.total,
                    "elapsed": time.monotonic() - self.started, "time_limit": self.time_limit,
                    "error": self.error, "result": self.result, "x_test": self.plan["x_test"]}


class TrainingJobs:
    """The jobs of every client: at most one running per client and ``max_jobs`` running in all."""

    #: finished jobs kept for their clients to read (the oldest are forgotten first)
    KEEP_FINISHED = 32

    def __init__(self, time_limit: float = 300.0, max_jobs: int = 2):
        self.time_limit, self.max_jobs = time_limit, max_jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _running(self) -> list[Job]:
        return [job for job in self._jobs.values() if job.running]

    def start(self, client: str, plan: dict) -> dict:
        with self._lock:
            mine = self._jobs.get(client)
            if mine is not None and mine.running:
                raise ValueError("train: a training run of yours is still going; wait for it or cancel it")
            if len(self._running()) >= self.max_jobs:
                raise ValueError(f"train: {self.max_jobs} training runs are going on this server; try again "
                                 "when one ends")
            finished = [c for c, job in self._jobs.items() if not job.running and c != client]
            for old in finished[:max(0, len(finished) - self.KEEP_FINISHED)]:
                del self._jobs[old]
            self._jobs.pop(client, None)          # re-inserted last: the dict stays oldest first
            self._jobs[client] = Job(plan, self.time_limit)
            return self._jobs[client].status()

    def status(self, client: str) -> dict:
        job = self._jobs.get(client)
        if job is None:
            return {"state": "none"}
        return job.status()

    def cancel(self, client: str) -> dict:
        job = self._jobs.get(client)
        if job is None:
            return {"state": "none"}
        job.cancel()
        return job.status()

    def close(self) -> None:
        """Stop every running job (the server is shutting down)."""
        for job in list(self._jobs.values()):
            job.cancel()


if __name__ == "__main__":
    run_diagnosis(json.loads(sys.stdin.read()), sys.stdout)
