"""Section 2 of the document's analysis: posteriors, the prior's verdict on the training labels, and
candidate test labels ranked by their conditional log-probability, one test input at a time too."""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkprior.dynamics.linearized import max_stable_learning_rate
from ntkprior.prior.prior import KernelPrior, predict, rank_candidates
from ntkprior.studies.document.settings import Data, Sizes, sweep_count
from ntkprior.studies.progress import Progress, silent
from ntkprior.studies.result import StudyResult, numbers


def label_prior(arch, x, y) -> dict:
    """log p(Y), the squared RKHS norm and its split over eigenmodes, under the NNGP and the NTK."""
    out = {}
    for kernel in ("nngp", "ntk"):
        prior = KernelPrior.from_arch(arch, x, kernel)
        modes = prior.modes(y)
        out[kernel] = {"log_prob": prior.log_prob(y), "rkhs_norm": prior.rkhs_norm(y),
                       "smallest_mode_share": float(modes.contribution[-1]) / modes.total,
                       "eigenvalue": numbers(modes.eigenvalue), "projection": numbers(modes.projection),
                       "contribution": numbers(modes.contribution),
                       "cumulative_share": numbers(modes.cumulative_share)}
    return out


def ranking_rows(ranking, labels: dict) -> list:
    """The rows of a :class:`~ntkprior.prior.prior.CandidateRanking` as JSON-ready dicts."""
    return [{"name": r.name, "labels": numbers(labels[r.name]), "conditional_log_prob": r.conditional_log_prob,
             "delta": r.delta, "joint_log_prob": r.joint_log_prob, "mahalanobis": r.mahalanobis,
             "max_abs_z": r.max_abs_residual, "z": numbers(r.residuals),
             "mode_differences": [list(m) for m in r.mode_differences]} for r in ranking.rows]


def label_sweep(arch, x, y, x_star: torch.Tensor, values: np.ndarray, marked: tuple) -> dict:
    """log p(y* | Y) and the joint over a range of labels at one test input, and at the marked labels."""
    names = {f"y*={v:.6g}": float(v) for v in values}
    names.update({f"y*={v:.6g}": float(v) for v in marked})
    ranking = rank_candidates(arch, x, y, x_star, {k: [v] for k, v in names.items()}, kernel="ntk",
                              top_modes=0)
    by_name = {r.name: r for r in ranking.rows}
    curve = [by_name[f"y*={v:.6g}"] for v in values]
    return {"x": numbers(x_star)[0] if x_star.shape[1] == 1 else numbers(x_star),
            "mean": float(ranking.mean[0, 0]), "std": math.sqrt(float(ranking.cov[0, 0])),
            "peak_conditional": ranking.peak_log_prob,
            "peak_joint": ranking.marginal_log_prob + ranking.peak_log_prob,
            "labels": [float(v) for v in values],
            "conditional": [r.conditional_log_prob for r in curve], "joint": [r.joint_log_prob for r in curve],
            "marked": [{"label": float(v), "conditional": by_name[f"y*={v:.6g}"].conditional_log_prob,
                        "joint": by_name[f"y*={v:.6g}"].joint_log_prob,
                        "z": float(by_name[f"y*={v:.6g}"].residuals[0, 0])} for v in marked]}


def posterior_kinds(t: int, learning_rate: float, stable: bool) -> dict:
    """The three kernel models drawn: title -> options of :func:`~ntkprior.prior.prior.predict`. Above the
    stable learning rate the GD-ensemble formula is that of gradient flow (discrete GD diverges), and
    the title says so."""
    ensemble = f"GD ensemble at t = {t} steps" if stable else f"gradient flow for ηt = {learning_rate * t:g}"
    return {"NNGP posterior (random networks, Bayes)": dict(kind="nngp"),
            "NTK-GP posterior": dict(kind="ntkgp"),
            ensemble: dict(kind="gd-ensemble", t=t, learning_rate=learning_rate)}


def prior_study(arch, data: Data, sizes: Sizes, t: int, learning_rate: float,
                progress: Progress | None = None) -> StudyResult:
    """Posteriors on ``data.x_plot``, the prior of the training labels, the candidates' ranking and a
    label sweep at each of the first test inputs (:func:`~ntkprior.studies.document.settings.sweep_count`)."""
    progress = progress or silent()
    lr_max = max_stable_learning_rate(arch.kernel(data.x_train).ntk)
    res = {"arch": str(arch), "x_train": data.x_train, "y_train": data.y_train,
           "training_time": {"steps": t, "learning_rate": learning_rate, "max_stable_learning_rate": lr_max,
                             "gradient_flow": learning_rate >= lr_max},
           "posteriors": {}}
    drawn = {}
    for title, options in posterior_kinds(t, learning_rate, learning_rate < lr_max).items():
        with progress.task(f"posterior: {options['kind']}"):
            post = predict(arch, data.x_train, data.y_train, data.x_plot, cov="diagonal", **options)
        res["posteriors"][options["kind"]] = {"title": title, "mean": numbers(post.mean), "std": numbers(post.std)}
        drawn[title] = (post.mean.reshape(-1), post.std)
    res["x_plot"] = data.coordinate(data.x_plot)
    with progress.task("prior probability of the training labels"):
        res["label_prior"] = label_prior(arch, data.x_train, data.y_train)
    if data.candidates is not None:
        with progress.task("ranking candidate labelings"):
            ranking = rank_candidates(arch, data.x_train, data.y_train, data.x_test, data.candidates, kernel="ntk")
        res["candidates"] = {"x_test": data.x_test, "kernel": "ntk", "marginal_log_prob": ranking.marginal_log_prob,
                             "mean": numbers(ranking.mean), "std": numbers(ranking.cov.diagonal().sqrt()),
                             "peak_log_prob": ranking.peak_log_prob,
                             "rows": ranking_rows(ranking, data.candidates)}
    sweeps = []
    if sweep_count(data):
        with progress.task("NTK-GP prediction at the test inputs"):
            at_test = predict(arch, data.x_train, data.y_train, data.x_test, kind="ntkgp", cov="diagonal")
    for j in range(sweep_count(data)):
        with progress.task(f"label sweep at test input {j + 1}"):
            low, high = data.label_range(float(at_test.mean[j]), float(at_test.std[j]))
            values = np.linspace(low, high, sizes.label_sweep_points)
            sweeps.append(label_sweep(arch, data.x_train, data.y_train, data.x_test[j:j + 1], values,
                                      data.marked_labels))
    res["label_sweeps"] = sweeps
    return StudyResult("prior", res, {"posteriors": drawn})


def prior_tasks(data: Data) -> int:
    """Progress steps of :func:`prior_study`: 3 posteriors, the label prior, candidates, label sweeps
    (the NTK-GP at the test inputs and one per input)."""
    sweeps = sweep_count(data)
    return 4 + (data.candidates is not None) + sweeps + (sweeps > 0)
