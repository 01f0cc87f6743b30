"""``ntkprior report``: a study run end to end and written as HTML + JSON.

:func:`build_report` runs a study and writes ``index.html`` (figures in ``figures/`` beside it)
and ``results.json`` (every number the page shows) into one directory. The computation lives in
:mod:`ntkprior.studies` (plain result objects); this package lays the results out:
``html`` (page building blocks) and one layout module per study (``document``: the analysis of the
document that started the project — eigenmodes, the prior over labels, training vs theory,
simplicity — on built-in data or on the user's).

Adding a study: a module in ``ntkprior/studies/`` that computes, a layout module here, and one
line in :data:`STUDIES`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ntkprior.app.report import document
from ntkprior.app.report import mnist1d as mnist1d_layout
from ntkprior.app.report import similarity as similarity_layout
from ntkprior.app.report.html import Report, page
from ntkprior.data import jsonable
from ntkprior.studies.document.settings import DEFAULT_ARCHS, FULL, QUICK, SEED_LEARNING_RATE, SEED_STEPS, Sizes
from ntkprior.studies.progress import Progress

__all__ = ["build_report", "ReportOutput", "Sizes", "FULL", "QUICK", "DEFAULT_ARCHS", "SEED_LEARNING_RATE",
           "SEED_STEPS", "STUDIES"]

#: study name -> its layout module (with ``plan(sizes, seed, **options) -> Plan``); ``report --study NAME``
STUDIES = {"document": document}
STUDIES["mnist1d"] = mnist1d_layout
STUDIES["similarity"] = similarity_layout
STUDIES["coin"] = __import__("ntkprior.app.report.coin", fromlist=["plan"])      # issue 14: the coin


@dataclass
class ReportOutput:
    """What :func:`build_report` wrote: the page, the numbers, the figures (paths), the runtime."""

    index: Path
    results_path: Path
    results: dict
    figures: list
    runtime_s: float


@contextlib.contextmanager
def _one_thread():
    """Run on one torch thread, then restore the caller's setting.

    The report is thousands of small operations (five training points); on them a second OpenMP
    thread only adds synchronisation, and under contention makes them 10-50x slower (FACTS.md).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_report(out="ntkprior-report", *, study: str = "document", seed: int = 0, quick: bool = False, progress: bool = False,
                 arch=None, x_train=None, y_train=None, x_test=None, candidates: dict | None = None,
                 learning_rate: float | None = None, steps: int | None = None, widths=None) -> ReportOutput:
    """Run a study (default: the document's analysis) and write ``index.html``, ``figures/*.png`` and ``results.json`` to ``out``.

    Without ``arch`` / data: the document's analysis on the built-in data (the sections of
    :mod:`ntkprior.studies.document`). With ``arch`` (an architecture or a spec string), ``x_train``
    (n, d) and ``y_train`` (n,): the same sections on the user's data; ``x_test`` (n*, d) and
    ``candidates`` (``{name: labels (n*,)}``) add the candidate ranking. ``learning_rate`` (default:
    half the stable maximum 2m/λ_max of the analytic NTK), ``steps`` (default 1000; 60 when quick)
    and ``widths`` (the widths trained and swept; default the architecture's own width and a sweep
    over 32-512) apply to the user's data only. ``quick`` shrinks every study to a smoke test;
    ``progress`` shows a tqdm bar.
    """
    start = time.perf_counter()
    if study not in STUDIES:
        raise ValueError(f"study: unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    sizes = QUICK if quick else FULL
    user = {k: v for k, v in dict(arch=arch, x_train=x_train, y_train=y_train, x_test=x_test, candidates=candidates,
                                  learning_rate=learning_rate, steps=steps, widths=widths).items() if v is not None}
    plan = STUDIES[study].plan(sizes, seed, **user)
    from ntkprior.files import atomic_directory, check_output_directory
    final = check_output_directory(out, "out", is_report_directory, "an ntkprior report")
    with atomic_directory(final, "out") as staging:    # an interrupted run never mixes two reports
        written = _write_report(staging, plan, seed=seed, quick=quick, progress=progress, start=start)
    return replace(written, index=final / written.index.name, results_path=final / written.results_path.name,
                   figures=[final / p.relative_to(staging) for p in written.figures])


def is_report_directory(path: Path) -> bool:
    """Whether ``path`` holds only what :func:`build_report` writes (so a new report may replace it)."""
    names = {entry.name for entry in path.iterdir()}
    return "results.json" in names and names <= {"index.html", "results.json", "figures"}


def _write_report(out: Path, plan, *, seed: int, quick: bool, progress: bool, start: float) -> ReportOutput:
    """Run ``plan`` and write its page, figures and numbers into ``out``."""
    bar = Progress(plan.tasks, enabled=progress, description="ntkprior report")
    rep = Report(out, bar)
    try:
        with _one_thread():
            meta = plan.run(rep)
    finally:
        bar.close()
    runtime = time.perf_counter() - start
    from ntkprior import __version__
    meta = {"ntkprior version": __version__, "seed": seed, "size": "quick" if quick else "full", **meta,
            "runtime": f"{runtime:.1f} s"}
    rep.results["meta"] = {**meta, "runtime_s": runtime,
                           "findings": {s.key: s.findings for s in rep.sections},
                           "figures": [p.relative_to(out).as_posix() for p in rep.figures]}
    index = out / "index.html"
    index.write_text(page(rep, plan.title, plan.subtitle, meta, plan.source), encoding="utf-8")
    results_path = out / "results.json"
    results_path.write_text(json.dumps(jsonable(rep.results), indent=1), encoding="utf-8")
    return ReportOutput(index, results_path, rep.results, list(rep.figures), runtime)
