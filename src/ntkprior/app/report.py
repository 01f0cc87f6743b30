"""``ntkprior report``: the seed document's analysis, run end to end and written as HTML + JSON.

:func:`build_report` runs four studies and writes ``index.html`` (figures in ``figures/`` beside
it) and ``results.json`` (every number the page shows) into one directory:

1. **Eigenmodes** — spectra and eigenfunctions of NTKs and an NNGP (:mod:`ntkprior.prior.spectrum`).
2. **The prior over labels** — posteriors, the prior's verdict on the training labels, and
   candidate test labels ranked by conditional log-probability (:mod:`ntkprior.prior.prior`).
3. **Training vs theory** — trained networks over the kernel's prediction, per-mode learning
   curves, a width sweep and diagnoses (:mod:`ntkprior.dynamics.training`, :mod:`ntkprior.dynamics.linearized`,
   :mod:`ntkprior.dynamics.diagnose`).
4. **Simplicity** — parity against low-degree functions on the boolean cube (built-in data), or
   how the user's labels spread over the eigenmodes (user data).

With no data it runs on the built-in data of :mod:`ntkprior.studies.datasets` (the seed's five noisy
samples of sin, a grid on [-3, 3], the cube {-1, +1}^8); with ``arch``, ``x_train``, ``y_train``
(and optionally ``x_test`` and candidate labelings) the same sections run on the user's data.
Everything computed comes from the library's public functions; this module only chooses the
studies, calls them, and lays out their results.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ntkprior.studies import datasets
from ntkprior.app import plots
from ntkprior.data import as_inputs, as_labels, check_same_features
from ntkprior.dynamics.diagnose import diagnose
from ntkprior.dynamics.linearized import linearized_dynamics, max_stable_learning_rate
from ntkprior.prior.estimators import NTKRegressor
from ntkprior.prior.prior import KernelPrior, predict, rank_candidates
from ntkprior.arch.spec import load_arch, parse_spec
from ntkprior.prior.spectrum import count_sign_changes, eigenmodes
from ntkprior.dynamics.training import SWEEP_METRICS, train, width_sweep

__all__ = ["build_report", "ReportOutput", "Sizes", "FULL", "QUICK", "DEFAULT_ARCHS", "jsonable",
           "diagnosis_summary", "sweep_summary"]

# ====================================================================== what the report runs
_W = "weight_std=1.5, bias_std=0.05"
_ROOT2 = "weight_std=1.4142135623730951, bias_std=1.0"
#: The built-in architectures (one-line specs). "seed": the seed's 3-Dense-layer ReLU network;
#: "well": the same with sigma_w = sqrt(2), sigma_b = 1, which the kernel describes well.
DEFAULT_ARCHS = {
    "two_layer": f"dense(512, {_W}) relu dense(1, {_W})",
    "deep": f"[dense(512, {_W}) relu]*3 dense(1, {_W})",
    "seed": f"[dense(512, {_W}) relu]*2 dense(1, {_W})",
    "well": f"[dense(512, {_ROOT2}) relu]*2 dense(1, {_ROOT2})",
    "cube": f"dense(512, {_ROOT2}) relu dense(1, {_ROOT2})",
}
#: The seed's training run: learning rate 0.1 for 10 000 steps (closed forms use this time).
SEED_LEARNING_RATE, SEED_STEPS = 0.1, 10_000
#: A learning rate safely below 2m / lambda_max (about 0.075 for "well" on the five points).
WELL_LEARNING_RATE = 0.05
#: Test inputs of the candidate labels: either side of 0, where the seed saw bumps, and beyond the data.
CANDIDATE_INPUTS = (-0.25, 0.25, 2.75)
#: The seed's own candidate labels ("y = 3 looks most probable", "y = 0.7 at the other bump").
SEED_LABELS = (0.7, 3.0)


@dataclass(frozen=True)
class Sizes:
    """How big each study is. :data:`FULL` fits the 3-minute budget on 2 cores; :data:`QUICK` is a smoke test."""

    eigen_points: int          #: grid points for the eigenmodes (section 1)
    plot_points: int           #: grid points for posteriors and trained networks
    seed_run: tuple            #: (steps, ((width, networks), ...)) at the seed's settings (it ran 10 000 steps)
    well_run: tuple            #: the same for "well" at learning rate 0.05 (eta lambda_min t / m >= 3 needs 1170)
    fast_run: tuple            #: the same for "well" at the seed's learning rate 0.1 (above 2m / lambda_max)
    curve_width: int           #: the single network whose per-mode residuals are tracked
    curve_records: int
    sweep_widths: tuple
    sweep_seeds: int
    sweep_steps: int
    cube_dim: int
    label_sweep_points: int    #: candidate labels per test input in the log-probability curves
    user_steps: int            #: default training steps on the user's data
    user_ensemble: int         #: networks per width on the user's data


FULL = Sizes(eigen_points=100, plot_points=161, seed_run=(2000, ((128, 4),)),
             well_run=(1500, ((64, 5), (512, 3))), fast_run=(300, ((512, 2),)), curve_width=256,
             curve_records=30, sweep_widths=(32, 64, 128, 256, 512), sweep_seeds=6, sweep_steps=200,
             cube_dim=8, label_sweep_points=141, user_steps=1000, user_ensemble=4)
QUICK = Sizes(eigen_points=40, plot_points=41, seed_run=(60, ((32, 2),)), well_run=(60, ((16, 2), (64, 2))),
              fast_run=(30, ((64, 2),)), curve_width=64, curve_records=8, sweep_widths=(16, 32, 64),
              sweep_seeds=1, sweep_steps=20, cube_dim=5, label_sweep_points=41, user_steps=60,
              user_ensemble=2)


@dataclass
class ReportOutput:
    """What :func:`build_report` wrote: the page, the numbers, the figures (paths), the runtime."""

    index: Path
    results_path: Path
    results: dict
    figures: list
    runtime_s: float


# ====================================================================== page model and helpers
def _fmt(value, digits: int = 4) -> str:
    """A number as the page shows it (the same number is stored unrounded in results.json)."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ")
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}".replace("-", "−")


def jsonable(value):
    """Tensors, arrays and numpy scalars as plain JSON values (non-finite floats as strings)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


def _numbers(t) -> list:
    """A 1-D tensor/array as a list of floats."""
    return np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=float).reshape(-1).tolist()


def _superscript(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _cell(value) -> str:
    """A table cell: numbers right-aligned, words left-aligned."""
    text = str(value)
    words = bool(text) and text[0].isalpha() and text not in ("nan", "yes", "no")
    return f'<td class="t">{_e(text)}</td>' if words else f"<td>{_e(text)}</td>"


def _table(headers: list, rows: list, caption: str | None = None, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{_e(text)}</p>' if cls else f"<p>{_e(text)}</p>"


def _verdict(title: str, ok: bool, checks: list, notes: list) -> str:
    items = "".join(f'<li class="{"ok" if c["passed"] else "fail"}"><b>{"ok" if c["passed"] else "FAIL"}'
                    f' {_e(c["name"])}</b>: {_e(c["sentence"])}</li>' for c in checks)
    items += "".join(f'<li class="note"><b>note</b>: {_e(n)}</li>' for n in notes)
    word = "in the kernel regime" if ok else "NOT in the kernel regime"
    return (f'<div class="verdict {"good" if ok else "bad"}"><h4>{_e(title)}: {word}</h4>'
            f"<ul>{items}</ul></div>")


@dataclass
class _Section:
    key: str
    title: str
    intro: str
    blocks: list = field(default_factory=list)
    findings: list = field(default_factory=list)     #: one line per result, listed at the top of the page
    warnings: list = field(default_factory=list)
    seconds: float = 0.0


class _Report:
    """Collects sections, figures and numbers while the studies run; writes the page at the end."""

    def __init__(self, out: Path, progress: bool, tasks: int, dpi: int = 110):
        self.out = out
        self.figure_dir = out / "figures"
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        self.dpi = dpi
        self.sections: list[_Section] = []
        self.results: dict = {}
        self.figures: list[Path] = []
        from tqdm.auto import tqdm
        self.bar = tqdm(total=tasks, desc="ntkprior report", unit="task", disable=not progress,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}")

    @contextlib.contextmanager
    def section(self, key: str, title: str, intro: str):
        sec = _Section(key, title, intro)
        self.sections.append(sec)
        start = time.perf_counter()
        yield sec
        sec.seconds = time.perf_counter() - start
        self.results.setdefault(key, {})["seconds"] = sec.seconds
        self.results[key]["warnings"] = sec.warnings

    @contextlib.contextmanager
    def task(self, description: str):
        """One step of the progress bar; the library's warnings are kept for the page, not printed."""
        self.bar.set_postfix_str(description, refresh=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        sec = self.sections[-1]
        for w in caught:
            text = f"{description}: {w.category.__name__}: {w.message}"
            if text not in sec.warnings:
                sec.warnings.append(text)
        self.bar.update(1)

    def finding(self, text: str) -> None:
        """A one-line result of the current section, for the list at the top of the page."""
        self.sections[-1].findings.append(text)

    def figure(self, fig, name: str, caption: str, alt: str) -> str:
        """Save a figure as figures/<name>.png and return its HTML."""
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, dpi=self.dpi)
        self.figures.append(path)
        rel = path.relative_to(self.out).as_posix()
        return (f'<figure><img src="{_e(rel)}" alt="{_e(alt)}" loading="lazy">'
                f"<figcaption>{_e(caption)}</figcaption></figure>")

    def close(self):
        self.bar.close()


# ====================================================================== section 1: eigenmodes
def _eigen_section(rep: _Report, panels: dict, x: torch.Tensor, coordinate: np.ndarray,
                   coordinate_label: str, intro: str, max_modes: int = 8) -> None:
    """Spectrum and first eigenvectors of each ``panels[title] = (arch, kernel)`` on inputs x.

    Sign changes are counted along the input for 1-D inputs only; along a principal coordinate of
    higher-dimensional inputs neighbours need not be close, and the count would mean nothing.
    """
    one_d = x.shape[1] == 1
    with rep.section("eigenmodes", "1. Eigenmodes", intro) as sec:
        order = np.argsort(coordinate, kind="stable")
        res, drawn = {"n": int(x.shape[0]), "coordinate": coordinate_label, "kernels": {}}, {}
        for title, (arch, kernel) in panels.items():
            with rep.task(f"eigenmodes of the {title}"):
                modes = eigenmodes(arch, x, kernel=kernel)
            vectors = modes.vectors[order]
            k = min(max_modes, len(modes))
            changes = count_sign_changes(vectors[:, :k]) if one_d else None
            floor = float(x.shape[0] * np.finfo(np.float64).eps * float(modes.values[0]))
            res["kernels"][title] = {"arch": str(arch), "kernel": kernel, "eigenvalues": _numbers(modes.values),
                                     "sign_changes": None if changes is None else _numbers(changes),
                                     "roundoff_level": floor,
                                     "above_roundoff": int((modes.values > floor).sum())}
            drawn[title] = {"x": coordinate[order], "values": modes.values, "vectors": vectors,
                            "sign_changes": changes, "floor": floor}
        rep.results["eigenmodes"] = res
        for title, r in res["kernels"].items():
            if one_d:
                changes = ", ".join(str(int(c)) for c in r["sign_changes"])
                rep.finding(f"{title}: the eigenvectors v1…v{len(r['sign_changes'])} change sign {changes} "
                            f"times along {coordinate_label}.")
            else:
                top = ", ".join(_fmt(v, 3) for v in r["eigenvalues"][:max_modes])
                rep.finding(f"{title}: the largest eigenvalues are {top}; {r['above_roundoff']} of {res['n']} "
                            "lie above the round-off level.")
        with rep.task("eigenmode figure"):
            fig = plots.eigenmode_overview(drawn, max_modes=max_modes, xlabel=coordinate_label, connect=one_d)
            sec.blocks.append(rep.figure(
                fig, "eigenmodes", "Top: eigenvalues of each kernel's Gram matrix (log scale; the dotted line "
                "is the round-off level n·ε·λ₁, below which eigenvalues are noise). Bottom: the first "
                f"{max_modes} eigenvectors as functions of {coordinate_label}, each scaled to the same height.",
                "eigenvalue spectra and eigenvectors of each kernel"))
        titles, rows = list(panels), []
        for i in range(min(max_modes, res["n"])):
            row = [i + 1]
            for t in titles:
                kr = res["kernels"][t]
                row.append(_fmt(kr["eigenvalues"][i]))
                if one_d:
                    row.append(_fmt(int(kr["sign_changes"][i])) if i < len(kr["sign_changes"]) else "–")
            rows.append(row)
        per_kernel = (lambda t: (f"λᵢ {t}", "sign changes")) if one_d else (lambda t: (f"λᵢ {t}",))
        headers = ["mode i"] + [h for t in titles for h in per_kernel(t)]
        caption = ("The first eigenvalues and the number of sign changes of each eigenvector along "
                   f"{coordinate_label}." if one_d else "The first eigenvalues.")
        sec.blocks.append(_table(headers, rows, caption, "numbers"))
        sec.blocks.append(_p(" ".join(
            f"{t}: {r['above_roundoff']} of {res['n']} eigenvalues lie above the round-off level "
            f"{_fmt(r['roundoff_level'], 2)}." for t, r in res["kernels"].items())))


# ====================================================================== section 2: the prior
def _label_prior(arch, x, y) -> dict:
    out = {}
    for kernel in ("nngp", "ntk"):
        prior = KernelPrior.from_arch(arch, x, kernel)
        modes = prior.modes(y)
        out[kernel] = {"log_prob": prior.log_prob(y), "rkhs_norm": prior.rkhs_norm(y),
                       "smallest_mode_share": float(modes.contribution[-1]) / modes.total,
                       "eigenvalue": _numbers(modes.eigenvalue), "projection": _numbers(modes.projection),
                       "contribution": _numbers(modes.contribution),
                       "cumulative_share": _numbers(modes.cumulative_share)}
    return out


def _ranking_rows(ranking, labels: dict) -> list:
    return [{"name": r.name, "labels": _numbers(labels[r.name]), "conditional_log_prob": r.conditional_log_prob,
             "delta": r.delta, "joint_log_prob": r.joint_log_prob, "mahalanobis": r.mahalanobis,
             "max_abs_z": r.max_abs_residual, "z": _numbers(r.residuals),
             "mode_differences": [list(m) for m in r.mode_differences]} for r in ranking.rows]


def _label_sweep(arch, x, y, x_star: torch.Tensor, values: np.ndarray, marked: tuple) -> dict:
    """log p(y* | Y) and the joint over a range of labels at one test input, and at the marked labels."""
    names = {f"y*={v:.6g}": float(v) for v in values}
    names.update({f"y*={v:.6g}": float(v) for v in marked})
    ranking = rank_candidates(arch, x, y, x_star, {k: [v] for k, v in names.items()}, kernel="ntk",
                              top_modes=0)
    by_name = {r.name: r for r in ranking.rows}
    curve = [by_name[f"y*={v:.6g}"] for v in values]
    return {"x": _numbers(x_star)[0] if x_star.shape[1] == 1 else _numbers(x_star),
            "mean": float(ranking.mean[0, 0]), "std": math.sqrt(float(ranking.cov[0, 0])),
            "peak_conditional": ranking.peak_log_prob,
            "peak_joint": ranking.marginal_log_prob + ranking.peak_log_prob,
            "labels": [float(v) for v in values],
            "conditional": [r.conditional_log_prob for r in curve], "joint": [r.joint_log_prob for r in curve],
            "marked": [{"label": float(v), "conditional": by_name[f"y*={v:.6g}"].conditional_log_prob,
                        "joint": by_name[f"y*={v:.6g}"].joint_log_prob,
                        "z": float(by_name[f"y*={v:.6g}"].residuals[0, 0])} for v in marked]}


def _prior_section(rep: _Report, arch, data: "_Data", sizes: Sizes, t: int, learning_rate: float,
                   intro: str, truth=None) -> None:
    with rep.section("prior", "2. The prior over labels", intro) as sec:
        res = {"arch": str(arch), "x_train": data.x_train, "y_train": data.y_train,
               "training_time": {"steps": t, "learning_rate": learning_rate}, "posteriors": {}}
        kinds = {"NNGP posterior (random networks, Bayes)": dict(kind="nngp"),
                 "NTK-GP posterior": dict(kind="ntkgp"),
                 f"GD ensemble at t = {t} steps": dict(kind="gd-ensemble", t=t, learning_rate=learning_rate)}
        drawn = {}
        for title, options in kinds.items():
            with rep.task(f"posterior: {options['kind']}"):
                post = predict(arch, data.x_train, data.y_train, data.x_plot, cov="diagonal", **options)
            res["posteriors"][options["kind"]] = {"title": title, "mean": _numbers(post.mean),
                                                  "std": _numbers(post.std)}
            drawn[title] = (post.mean.reshape(-1), post.std)
        res["x_plot"] = data.coordinate(data.x_plot)
        with rep.task("prior probability of the training labels"):
            res["label_prior"] = _label_prior(arch, data.x_train, data.y_train)
        if data.candidates is not None:
            with rep.task("ranking candidate labelings"):
                ranking = rank_candidates(arch, data.x_train, data.y_train, data.x_test, data.candidates,
                                          kernel="ntk")
            res["candidates"] = {"x_test": data.x_test, "kernel": "ntk",
                                 "marginal_log_prob": ranking.marginal_log_prob,
                                 "mean": _numbers(ranking.mean), "std": _numbers(ranking.cov.diagonal().sqrt()),
                                 "peak_log_prob": ranking.peak_log_prob,
                                 "rows": _ranking_rows(ranking, data.candidates)}
        sweeps = []
        if _sweep_count(data):
            with rep.task("NTK-GP prediction at the test inputs"):
                at_test = predict(arch, data.x_train, data.y_train, data.x_test, kind="ntkgp", cov="diagonal")
        for j in range(_sweep_count(data)):
            with rep.task(f"label sweep at test input {j + 1}"):
                low, high = data.label_range(float(at_test.mean[j]), float(at_test.std[j]))
                values = np.linspace(low, high, sizes.label_sweep_points)
                sweeps.append(_label_sweep(arch, data.x_train, data.y_train, data.x_test[j:j + 1], values,
                                           data.marked_labels))
        res["label_sweeps"] = sweeps
        rep.results["prior"] = res
        if "candidates" in res:
            rows = res["candidates"]["rows"]
            lead = f", ahead of the next by {_fmt(-rows[1]['delta'])} nats" if len(rows) > 1 else ""
            rep.finding(f"Most probable candidate labeling under the NTK prior: “{rows[0]['name']}” "
                        f"(log p(y* | Y) = {_fmt(rows[0]['conditional_log_prob'])}{lead}).")
        for j, s in enumerate(sweeps):
            rep.finding(f"At {_where(s, j)} the most probable label is the kernel's prediction μ* = "
                        f"{_fmt(s['mean'], 3)} (σ* = {_fmt(s['std'], 3)}); the joint density's ceiling there is "
                        f"{_fmt(s['peak_joint'])}.")
        _prior_page(rep, sec, res, data, drawn, truth)


def _prior_page(rep: _Report, sec: _Section, res: dict, data: "_Data", drawn: dict, truth) -> None:
    with rep.task("prior figures"):
        candidates = None
        if "candidates" in res:
            candidates = {row["name"]: (data.coordinate(data.x_test), row["labels"])
                          for row in res["candidates"]["rows"][:4]}
        fig = plots.posterior_bands(res["x_plot"], drawn, x_train=data.coordinate(data.x_train),
                                    y_train=data.y_train, candidates=candidates, truth=truth,
                                    xlabel=data.coordinate_label, connect=data.connect)
        sec.blocks.append(rep.figure(
            fig, "posteriors", "Mean ± 2 standard deviations of three kernel models given the training points "
            "(black)" + (", with candidate test labelings (diamonds)" if candidates else "") + ". The NNGP "
            "posterior is that of Bayesian inference with randomly initialised networks as the prior; the "
            "GD ensemble is the distribution of infinitely wide networks trained by gradient descent "
            f"for {res['training_time']['steps']} steps at learning rate "
            f"{_fmt(res['training_time']['learning_rate'])}.",
            "posterior mean and two-standard-deviation bands of three kernel models"))
    lp = res["label_prior"]
    sec.blocks.append(_table(
        ["prior", "log p(Y)", "squared RKHS norm Yᵀ H⁻¹ Y",
         "share of Yᵀ H⁻¹ Y in the smallest-eigenvalue mode"],
        [[k.upper(), _fmt(v["log_prob"]), _fmt(v["rkhs_norm"]), f"{100 * v['smallest_mode_share']:.1f} %"]
         for k, v in lp.items()],
        "How probable the training labels are under each prior. The squared RKHS norm is the smallest "
        "squared parameter distance the linearised network must travel to fit them.", "numbers"))
    if "candidates" in res:
        c = res["candidates"]
        sec.blocks.append(_table(
            ["rank", "candidate", "labels y*", "log p(y* | Y)", "vs best", "joint log p(Y, y*)", "max |z|",
             "Mahalanobis²"],
            [[i + 1, r["name"], ", ".join(_fmt(v, 3) for v in r["labels"]), _fmt(r["conditional_log_prob"]),
              _fmt(r["delta"]), _fmt(r["joint_log_prob"]), _fmt(r["max_abs_z"], 3), _fmt(r["mahalanobis"])]
             for i, r in enumerate(c["rows"])],
            "Candidate labelings of the same test inputs, ranked by the NTK prior's conditional log-probability "
            f"given the training labels (best first). The kernel's own prediction μ* = "
            f"({', '.join(_fmt(m, 3) for m in c['mean'])}) with σ* = ({', '.join(_fmt(s, 3) for s in c['std'])}) "
            "would score highest of all. On the same test inputs joint and conditional differ by the same "
            f"constant log p(Y) = {_fmt(c['marginal_log_prob'])}.", "numbers"))
    if res["label_sweeps"]:
        _sweep_page(rep, sec, res["label_sweeps"], data)


def _where(sweep: dict, j: int) -> str:
    """How the page names the test input of a label sweep: its value (1-D) or its number."""
    return f"x* = {_fmt(sweep['x'], 3)}" if not isinstance(sweep["x"], list) else f"test input {j + 1}"


def _sweep_page(rep: _Report, sec: _Section, sweeps: list, data: "_Data") -> None:
    def where(s):
        return _where(s, sweeps.index(s))

    with rep.task("candidate log-probability figure"):
        fig = plots.candidate_log_probs(
            {where(s): (s["labels"], s["conditional"]) for s in sweeps},
            candidates={where(s): ([m["label"] for m in s["marked"]], [m["conditional"] for m in s["marked"]])
                        for s in sweeps},
            peaks={where(s): (s["mean"], s["peak_conditional"]) for s in sweeps})
        sec.blocks.append(rep.figure(
            fig, "candidate_log_probs", "log p(y* | Y) under the NTK prior as a function of the candidate label "
            "y*, one curve per test input. Each curve peaks at the kernel's prediction μ* (triangle), and its "
            "height −½ log 2πσ*² depends on the test input; diamonds mark the labels "
            f"{', '.join(_fmt(v, 3) for v in data.marked_labels)}.",
            "conditional log-probability of candidate labels at each test input"))
    headers = ["test input", "μ* (prediction)", "σ*", "peak log p(y*|Y)", "peak joint log p(Y, y*)"]
    for v in data.marked_labels:
        headers += [f"log p(y*={_fmt(v, 3)} | Y)", f"joint, y*={_fmt(v, 3)}"]
    rows = []
    for s in sweeps:
        row = [where(s), _fmt(s["mean"]), _fmt(s["std"]), _fmt(s["peak_conditional"]), _fmt(s["peak_joint"])]
        for m in s["marked"]:
            row += [_fmt(m["conditional"]), _fmt(m["joint"])]
        rows.append(row)
    sec.blocks.append(_table(headers, rows, "One test input at a time: the label each input finds most "
                             "probable is the kernel's prediction μ*, and the ceiling of the joint density "
                             "differs from input to input.", "numbers"))
    first, spread = sweeps[0], max(s["peak_joint"] for s in sweeps) - min(s["peak_joint"] for s in sweeps)
    sec.blocks.append(_p(
        f"Why “y* = 3 looks most probable”: at {where(first)} raising y* towards μ* = "
        f"{_fmt(first['mean'], 3)} raises its probability and going past μ* lowers it, so the most probable "
        "label is exactly the kernel-regression prediction; a candidate looks best when it is closest to μ*, "
        "in units of σ*. Why joint densities at different inputs cannot be compared: log p(Y, y*) = "
        "log p(Y) + log N(y*; μ*, σ*²) has its ceiling log p(Y) − ½ log 2πσ*², and here the ceilings "
        f"differ by {_fmt(spread, 3)} nats between test inputs only because σ* differs. A higher joint "
        "density at one input is not a more plausible generalisation than a lower one elsewhere; compare the "
        "standardised residuals z = (y* − μ*)/σ* instead (docs/prior.md)." + _joint_vs_z(sweeps, where),
        "explain"))


def _joint_vs_z(sweeps: list, where) -> str:
    """A sentence contrasting the marked label the joint density prefers with the one closest to its prediction."""
    pairs = [(s, m) for s in sweeps for m in s["marked"]]
    if len(sweeps) < 2 or not pairs:
        return ""
    (sj, mj), (sz, mz) = max(pairs, key=lambda p: p[1]["joint"]), min(pairs, key=lambda p: abs(p[1]["z"]))
    best_joint = (f"y* = {_fmt(mj['label'], 3)} at {where(sj)} (joint {_fmt(mj['joint'])}, "
                  f"z = {_fmt(mj['z'], 3)})")
    if mj is mz:
        return (f" Among the marked labels the joint density and the residual agree here: {best_joint} is "
                "highest by both, but only the residual is a fair comparison across inputs.")
    return (f" Among the marked labels the joint density is highest for {best_joint}, while the label "
            f"closest to its own prediction is y* = {_fmt(mz['label'], 3)} at {where(sz)} "
            f"(joint {_fmt(mz['joint'])}, z = {_fmt(mz['z'], 3)}).")


# ====================================================================== section 3: training
@dataclass(frozen=True)
class _Setting:
    """One training configuration: label, architecture, learning rate, steps, and (width, networks) pairs."""

    label: str
    arch: object
    learning_rate: float
    steps: int
    runs: tuple

    @property
    def widths(self) -> list:
        return [w for w, _ in self.runs]


def diagnosis_summary(d) -> dict:
    """The verdict, checks and figures of a :class:`~ntkprior.dynamics.diagnose.Diagnosis` as a JSON-ready dict
    (without its training record)."""
    return {"in_kernel_regime": d.in_kernel_regime, "reasons": d.reasons,
            "checks": [{"name": c.name, "passed": c.passed, "sentence": c.sentence} for c in d.checks],
            "notes": d.notes, "m": d.m, "max_stable_lr_analytic": d.max_stable_lr_analytic,
            "max_stable_lr_empirical": d.max_stable_lr_empirical, "condition_analytic": d.condition_analytic,
            "condition_empirical": d.condition_empirical, "kernel_drift": d.kernel_drift,
            "param_change": d.param_change, "train_residual": d.train_residual, "mean_gap": d.mean_gap,
            "mode_convergence_analytic": d.mode_convergence_analytic,
            "eigenvalues_analytic": d.eigenvalues_analytic,
            "ensemble_mean": np.asarray(d.ensemble_mean).reshape(-1),
            "lee_mean": np.asarray(d.lee_mean).reshape(-1), "lee_std": d.lee_std}


def sweep_summary(sweep) -> dict:
    """A :class:`~ntkprior.dynamics.training.WidthSweep` as a JSON-ready dict: widths, seeds, rows, exponents."""
    return {"widths": [r.width for r in sweep.rows], "seeds": list(sweep.seeds), "steps": sweep.steps,
            "learning_rate": sweep.learning_rate, "rows": [vars(r) for r in sweep.rows],
            "exponents": sweep.exponents}


def _mode_curves(arch, data: "_Data", sizes: Sizes, learning_rate: float, steps: int, seed: int) -> dict:
    """One trained network's residual per eigenmode of the analytic NTK, and the closed form from its f0."""
    net = arch.with_width(sizes.curve_width)
    result = train(net, data.x_train, data.y_train, None, steps, learning_rate, seed, ensemble=1,
                   record=sizes.curve_records, track_kernel=False)
    f0 = result.train_outputs[0, 0]
    dyn = linearized_dynamics(arch, data.x_train, data.y_train, learning_rate=learning_rate, method="gd",
                              f0=(f0, None))
    times = np.unique(np.r_[0, np.round(np.geomspace(1, steps, 120))].astype(int))
    theory = dyn.at(times).mode_residuals[:, :, 0]
    # the trained network's residual f_t(X) - Y in the same eigenbasis (v_i . residual, as mode_residuals)
    measured = (result.train_outputs[0, :, :, 0] - data.y_train.reshape(1, -1)) @ dyn.eigenvectors
    return {"width": sizes.curve_width, "steps": steps, "learning_rate": learning_rate,
            "eigenvalues": _numbers(dyn.eigenvalues), "times": times, "theory": theory,
            "measured_steps": result.steps, "measured": measured,
            "max_stable_learning_rate": dyn.max_stable_learning_rate}


def _training_section(rep: _Report, data: "_Data", sizes: Sizes, settings: list, curve_setting: _Setting,
                      sweep_setting: _Setting, seed: int, intro: str) -> None:
    with rep.section("training", "3. Training vs theory", intro) as sec:
        res = {"settings": []}
        panels, kernel_mean, kernel_std = {}, {}, {}
        for s in settings:
            for width, networks in s.runs:
                with rep.task(f"diagnose {s.label} at width {width}"):
                    d = diagnose(s.arch, data.x_train, data.y_train, data.x_plot, s.steps, s.learning_rate,
                                 width=width, seed=seed, ensemble=networks)
                entry = {"label": s.label, "arch": str(s.arch.with_width(width)), "width": width,
                         "learning_rate": s.learning_rate, "steps": s.steps, "ensemble": networks,
                         **diagnosis_summary(d)}
                res["settings"].append(entry)
                title = f"{s.label}, η = {_fmt(s.learning_rate)}, width {width}"
                panels[title] = d.training.test_outputs[:, -1, :, 0]
                kernel_mean[title], kernel_std[title] = entry["lee_mean"], entry["lee_std"]
        with rep.task("per-mode learning curves"):
            res["mode_curves"] = _mode_curves(curve_setting.arch, data, sizes, curve_setting.learning_rate,
                                              curve_setting.steps, seed)
        with rep.task("width sweep"):
            seeds = tuple(range(seed, seed + sweep_setting.runs[0][1]))
            sweep = width_sweep(sweep_setting.arch, data.x_train, data.y_train, data.x_plot, sweep_setting.widths,
                                seeds, sweep_setting.steps, sweep_setting.learning_rate)
        res["width_sweep"] = {"label": sweep_setting.label, "arch": str(sweep_setting.arch),
                              **sweep_summary(sweep)}
        rep.results["training"] = res
        for s in res["settings"]:
            failed = [c["name"] for c in s["checks"] if not c["passed"]]
            verdict = "in the kernel regime." if s["in_kernel_regime"] else \
                f"NOT in the kernel regime ({', '.join(failed)})."
            rep.finding(f"{_setting_title(s)}: {verdict}")
        rep.finding("Width sweep exponents: " + ", ".join(
            f"{k} ∝ width^{_fmt(v, 2)}" for k, v in res["width_sweep"]["exponents"].items()) + ".")
        _training_page(rep, sec, res, data, panels, kernel_mean, kernel_std)


def _setting_title(s: dict) -> str:
    return f"{s['label']}, width {s['width']}, learning rate {_fmt(s['learning_rate'])}, {s['steps']} steps"


def _training_page(rep, sec, res, data, panels, kernel_mean, kernel_std) -> None:
    with rep.task("training figures"):
        fig = plots.trained_vs_kernel(data.coordinate(data.x_plot), kernel_mean, kernel_std, panels,
                                      x_train=data.coordinate(data.x_train), y_train=data.y_train,
                                      kernel_label="GD ensemble (kernel)", xlabel=data.coordinate_label,
                                      connect=data.connect)
        sec.blocks.append(rep.figure(
            fig, "trained_vs_kernel", "Each panel: an ensemble of really trained networks (thin lines; dashed: "
            "their mean) over the infinite-width prediction for the same architecture, learning rate and "
            "number of steps (the Lee et al. GD-ensemble mean ± 2 std). The diagnoses below give the numbers.",
            "trained networks compared with the kernel prediction"))
        for s in res["settings"]:
            sec.blocks.append(_verdict(f"{_setting_title(s)}, {s['ensemble']} networks", s["in_kernel_regime"],
                                       s["checks"], s["notes"]))
        mc = res["mode_curves"]
        fig = plots.mode_learning_curves(mc["times"], mc["theory"], mc["eigenvalues"],
                                         measured_times=mc["measured_steps"], measured=mc["measured"])
        sec.blocks.append(rep.figure(
            fig, "mode_learning_curves", f"The training residual f_t(X) − Y along each eigenvector of the NTK, "
            f"for one network of width {mc['width']} (circles) and the closed form of the infinitely wide "
            f"network started from the same initial outputs (lines); learning rate {_fmt(mc['learning_rate'])}. "
            "Modes with large eigenvalues are learned first: mode i decays like (1 − ηλᵢ/m)ᵗ.",
            "residual per eigenmode over training"))
        ws = res["width_sweep"]
        fig = plots.width_sweep(ws["widths"], {m: [r[m] for r in ws["rows"]] for m in SWEEP_METRICS},
                                ws["exponents"])
        sec.blocks.append(rep.figure(
            fig, "width_sweep", f"Distance from the infinite-width description against hidden width "
            f"({ws['label']}; {len(ws['seeds'])} seed(s), {ws['steps']} steps, learning rate "
            f"{_fmt(ws['learning_rate'])}), with fitted power laws. test_distance: trained network vs the "
            "infinite-width closed form from the same f0; param_change and kernel_change: relative motion "
            "of the parameters and of the empirical NTK during training; init_kernel_distance: empirical vs "
            "analytic NTK at initialisation.", "log-log plot of distances against width"))
    sec.blocks.append(_table(["width"] + list(SWEEP_METRICS) + ["final loss"],
                             [[r["width"]] + [_fmt(r[m], 3) for m in SWEEP_METRICS] + [_fmt(r["loss"], 3)]
                              for r in ws["rows"]] +
                             [["fitted exponent"] + [_fmt(ws["exponents"][m], 3) for m in SWEEP_METRICS] + [""]],
                             "The width sweep's numbers (means over seeds) and the fitted log-log slopes. In "
                             "the lazy regime one expects about −½ for test_distance and "
                             "init_kernel_distance, −1 for kernel_change, and for param_change −½ with one "
                             f"hidden layer, −1 with more (Dyer & Gur-Ari 2019); with {len(ws['seeds'])} seed(s) and "
                             f"{data.x_train.shape[0]} training points the fits are noisy.", "numbers"))


# ====================================================================== section 4: simplicity
def _cube_section(rep: _Report, arch, sizes: Sizes, seed: int, intro: str) -> None:
    d = sizes.cube_dim
    with rep.section("simplicity", "4. Simplicity", intro) as sec:
        cube = datasets.boolean_cube(d)
        rng = np.random.default_rng(seed)
        targets = {"constant 1": (datasets.walsh(cube, []), 0), "x₁": (datasets.walsh(cube, [0]), 1),
                   "x₁·x₂": (datasets.walsh(cube, [0, 1]), 2),
                   "x₁·x₂·x₃": (datasets.walsh(cube, [0, 1, 2]), 3),
                   f"majority of {d} bits": (datasets.majority(cube), None),
                   f"parity of {d} bits": (datasets.walsh(cube, range(d)), d),
                   "random ±1 labels": (torch.from_numpy(rng.choice([-1.0, 1.0], size=cube.shape[0])), None)}
        with rep.task("kernel on the boolean cube"):
            prior = KernelPrior.from_arch(arch, cube, "ntk")
        by_degree = []
        with rep.task("eigenvalue by Walsh degree"):
            for k in range(d + 1):
                # a Walsh function lies in one eigenspace: the mode carrying its norm has its eigenvalue
                modes = prior.modes(datasets.walsh(cube, range(k)))
                top = int(torch.argmax(modes.contribution))
                by_degree.append({"degree": k, "eigenvalue": float(modes.eigenvalue[top]),
                                  "multiplicity": math.comb(d, k)})
        split = rng.permutation(cube.shape[0])
        train_idx, test_idx = split[: cube.shape[0] // 2], split[cube.shape[0] // 2:]
        rows = []
        with rep.task("RKHS norms and half-cube regression"):
            for name, (y, degree) in targets.items():
                r2 = None      # R² is undefined for a constant target (no variance to explain)
                if degree != 0:
                    model = NTKRegressor(arch, kind="ntkgp").fit(cube[train_idx].numpy(), y[train_idx].numpy())
                    r2 = float(model.score(cube[test_idx].numpy(), y[test_idx].numpy()))
                rows.append({"name": name, "degree": degree, "rkhs_norm": prior.rkhs_norm(y),
                             "log_prob": prior.log_prob(y), "r2_half_cube": r2})
        res = {"d": d, "n": int(cube.shape[0]), "arch": str(arch), "kernel": "ntk", "by_degree": by_degree,
               "targets": rows, "train_points": int(len(train_idx))}
        rep.results["simplicity"] = res
        by_name = {r["name"]: r for r in rows}
        parity, x1 = by_name[f"parity of {d} bits"], by_name["x₁"]
        smallest = min(by_degree, key=lambda b: b["eigenvalue"])["degree"]
        rep.finding(f"Parity of {d} bits: eigenvalue {_fmt(by_degree[d]['eigenvalue'])} (x₁: "
                    f"{_fmt(by_degree[1]['eigenvalue'])}; the smallest is that of degree {smallest}), "
                    f"squared RKHS norm {_fmt(parity['rkhs_norm'])} (x₁: {_fmt(x1['rkhs_norm'])}); fitted on "
                    f"half the cube the NTK-GP reaches R² = {_fmt(parity['r2_half_cube'], 3)} on parity and "
                    f"{_fmt(x1['r2_half_cube'], 3)} on x₁.")
        with rep.task("simplicity figures"):
            fig = plots.walsh_spectrum([b["degree"] for b in by_degree], [b["eigenvalue"] for b in by_degree],
                                       multiplicities=[b["multiplicity"] for b in by_degree],
                                       highlight={"parity": d, "x₁": 1})
            sec.blocks.append(rep.figure(
                fig, "walsh_spectrum", "The NTK's eigenvalue for Walsh functions of each degree on "
                f"{{±1}}{_superscript(d)} (×: how many Walsh functions share it).",
                "eigenvalue against Walsh degree"))
            fig = plots.rkhs_norms({r["name"]: r["rkhs_norm"] for r in rows}, highlight=[f"parity of {d} bits"])
            sec.blocks.append(rep.figure(
                fig, "rkhs_norms", f"Squared RKHS norm yᵀH⁻¹y of each ±1 target on all {res['n']} points: "
                "how far the linearised network must move its parameters to fit it. Every target has the same "
                f"Euclidean norm √{res['n']}.", "squared RKHS norm of each target"))
        sec.blocks.append(_table(
            ["target", "Walsh degree", "squared RKHS norm", "log p(y) under the NTK prior",
             f"R² on the other half, fitted on {res['train_points']} points"],
            [[r["name"], "–" if r["degree"] is None else r["degree"], _fmt(r["rkhs_norm"]), _fmt(r["log_prob"]),
              _fmt(r["r2_half_cube"], 3)] for r in rows],
            "The cost of each target under the NTK prior, and how well the NTK-GP fitted on a random half of the "
            "cube predicts the other half (R² = 1: perfectly; R² ≤ 0: no better than the mean).", "numbers"))


def _user_simplicity_section(rep: _Report, arch, data: "_Data", seed: int, intro: str) -> None:
    with rep.section("simplicity", "4. Simplicity of your labels", intro) as sec:
        order = np.random.default_rng(seed).permutation(data.y_train.shape[0])
        shuffled = data.y_train[torch.from_numpy(order)]
        with rep.task("RKHS norm of the labels and of shuffled labels"):
            prior = KernelPrior.from_arch(arch, data.x_train, "ntk")
            table = {name: prior.modes(y) for name, y in (("your labels", data.y_train),
                                                          ("the same labels shuffled", shuffled))}
        res = {"arch": str(arch), "kernel": "ntk",
               "labelings": {name: {"rkhs_norm": m.total, "log_prob": prior.log_prob(y),
                                    "cumulative_share": _numbers(m.cumulative_share),
                                    "eigenvalue": _numbers(m.eigenvalue)}
                             for (name, m), y in zip(table.items(), (data.y_train, shuffled))}}
        rep.results["simplicity"] = res
        yours, shuffled_ = res["labelings"].values()
        rep.finding(f"Squared RKHS norm of your labels: {_fmt(yours['rkhs_norm'])}; of the same labels "
                    f"shuffled: {_fmt(shuffled_['rkhs_norm'])}.")
        with rep.task("simplicity figure"):
            fig = plots.mode_contributions({k: v["cumulative_share"] for k, v in res["labelings"].items()})
            sec.blocks.append(rep.figure(
                fig, "mode_contributions", "How the squared RKHS norm of the labels accumulates over the NTK's "
                "eigenmodes (largest eigenvalue first), for your labels and for the same values shuffled "
                "across inputs.", "cumulative share of the RKHS norm by eigenmode"))
        rows = [[k, _fmt(v["rkhs_norm"]), _fmt(v["log_prob"])] for k, v in res["labelings"].items()]
        sec.blocks.append(_table(["labeling", "squared RKHS norm", "log p(y) under the NTK prior"], rows,
                                 "A labeling the architecture finds simple has a much smaller norm than its "
                                 "shuffled version.", "numbers"))


def _sweep_count(data: "_Data") -> int:
    """Test inputs that get a label sweep (at most three)."""
    return 0 if data.x_test is None else min(3, data.x_test.shape[0])


# ====================================================================== data for the report
@dataclass
class _Data:
    """The inputs a report runs on, and how to draw them (1-D: the input; otherwise a principal coordinate)."""

    x_train: torch.Tensor
    y_train: torch.Tensor                 #: (n,)
    x_plot: torch.Tensor                  #: where posteriors and trained networks are drawn
    x_test: torch.Tensor | None           #: test inputs of the candidates
    candidates: dict | None               #: name -> labels of x_test
    marked_labels: tuple = ()
    fixed_label_range: tuple | None = None
    coordinate_label: str = "input x"
    direction: np.ndarray | None = None  #: principal direction for d > 1 (None: the input itself)
    centre: np.ndarray | None = None

    @property
    def connect(self) -> bool:
        return self.direction is None

    def coordinate(self, x) -> np.ndarray:
        """Where each input is drawn: x itself in 1-D, its principal coordinate otherwise."""
        a = np.asarray(x, dtype=float)
        if self.direction is None:
            return a.reshape(-1)
        return (a - self.centre) @ self.direction

    def label_range(self, mean: float, std: float) -> tuple[float, float]:
        if self.fixed_label_range is not None:
            return self.fixed_label_range
        width = max(4 * std, 0.5 * float(self.y_train.abs().max()), 1e-3)
        return mean - width, mean + width


def _default_data(sizes: Sizes, seed: int) -> _Data:
    x, y = datasets.seed_sin_data(5, 0.1, seed)
    x_test = torch.tensor(CANDIDATE_INPUTS, dtype=torch.float64)[:, None]
    candidates = {"sin(x*): the noiseless target": torch.sin(x_test[:, 0]),
                  "y* = 0.7 everywhere": torch.full((len(CANDIDATE_INPUTS),), 0.7, dtype=torch.float64),
                  "y* = 3 everywhere": torch.full((len(CANDIDATE_INPUTS),), 3.0, dtype=torch.float64),
                  "y* = 0 everywhere": torch.zeros(len(CANDIDATE_INPUTS), dtype=torch.float64),
                  "−sin(x*): the mirror image": -torch.sin(x_test[:, 0])}
    return _Data(x, y, datasets.interval_grid(sizes.plot_points, -4.0, 4.0), x_test, candidates,
                 marked_labels=SEED_LABELS, fixed_label_range=(-3.0, 4.0))


def _user_data(x_train, y_train, x_test, candidates, sizes: Sizes) -> _Data:
    x = as_inputs(x_train, "x_train")
    y = as_labels(y_train, x.shape[0], "y_train")
    if y.shape[1] != 1:
        raise ValueError(f"y_train: the report handles one output column, got {y.shape[1]}; run it per "
                         "column, or use the score / predict subcommands, which take several")
    test = None
    if x_test is not None:
        test = as_inputs(x_test, "x_test")
        check_same_features(x, test, "x_train", "x_test")
    named = None
    if candidates is not None:
        if test is None:
            raise ValueError("candidates: candidate labels are for test inputs; pass x_test (--test) too")
        named = {str(k): as_labels(v, test.shape[0], f"candidates[{k!r}]")[:, 0] for k, v in candidates.items()}
        if not named:
            raise ValueError("candidates: is empty; pass at least one labeling of the test inputs")
    if x.shape[1] == 1:
        both = x if test is None else torch.cat([x, test])
        low, high = float(both.min()), float(both.max())
        pad = 0.15 * (high - low) if high > low else 1.0
        return _Data(x, y[:, 0], datasets.interval_grid(sizes.plot_points, low - pad, high + pad), test, named)
    from sklearn.decomposition import PCA
    pca = PCA(1).fit(x.numpy())
    plot = test if test is not None else x
    return _Data(x, y[:, 0], plot, test, named, coordinate_label="principal coordinate of the input",
                 direction=pca.components_[0], centre=pca.mean_)


# ====================================================================== the page
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1.2em;color:#1b1b1b;line-height:1.5}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2.2em}
p.lead{font-size:1.08em;color:#333;background:#f4f8fb;border-left:4px solid #0072B2;padding:.6em .9em}
p.explain{background:#fff8ec;border-left:4px solid #E69F00;padding:.6em .9em}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.92em;color:#444;margin-top:.3em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}caption{caption-side:top;text-align:left;
color:#444;padding-bottom:.3em;max-width:1100px}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#eef3f7}td:first-child,th:first-child,td.t{text-align:left}
.verdict{border:1px solid #ccc;border-radius:6px;padding:.3em 1em;margin:1em 0}
.verdict.good{border-left:6px solid #009E73}.verdict.bad{border-left:6px solid #D55E00}
.verdict li.ok b{color:#007a5a}.verdict li.fail b{color:#b34700}.verdict li.note b{color:#555}
.verdict li{margin:.25em 0}.meta{color:#555;font-size:.92em}details{margin:1em 0;color:#555;font-size:.9em}
nav a{margin-right:1em}code{background:#f2f2f2;padding:0 .25em}
table.specs{font-size:.85em;margin:.3em 0}table.specs td{text-align:left;font-family:ui-monospace,monospace}
table.specs td:first-child{font-family:inherit}table.specs th{text-align:left}
.findings{background:#f3faf7;border-left:4px solid #009E73;padding:.2em 1em;margin:1em 0}
.findings h3{margin:.4em 0}.findings li{margin:.2em 0}
"""


def _page(rep: _Report, title: str, subtitle: str, meta: dict) -> str:
    nav = "".join(f'<a href="#{s.key}">{_e(s.title)}</a>' for s in rep.sections)
    findings = "".join(f"<li><b>{_e(s.title)}</b><ul>" + "".join(f"<li>{_e(f)}</li>" for f in s.findings)
                       + "</ul></li>" for s in rep.sections if s.findings)
    body = []
    for s in rep.sections:
        body.append(f'<section id="{s.key}"><h2>{_e(s.title)}</h2>{_p(s.intro, "lead")}')
        body.extend(s.blocks)
        if s.warnings:
            items = "".join(f"<li>{_e(w)}</li>" for w in s.warnings)
            body.append(f"<details><summary>{len(s.warnings)} warning(s) from the library while this section "
                        f"ran</summary><ul>{items}</ul></details>")
        body.append(f'<p class="meta">Section computed in {s.seconds:.1f} s.</p></section>')
    facts = "".join(f"<li><b>{_e(k)}</b>: " + (_table(["used for", "spec"], list(v.items()), cls="specs")
                                                if isinstance(v, dict) else _e(v)) + "</li>"
                    for k, v in meta.items())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body><h1>{_e(title)}</h1><p>{_e(subtitle)}</p><ul class=\"meta\">{facts}</ul>"
            f'<div class="findings"><h3>Findings</h3><ul>{findings}</ul></div><nav>{nav}</nav>'
            + "".join(body) + "</body></html>")


# ====================================================================== entry point
_INTRO = {
    "eigen": "Each column is one kernel on {n} evenly spaced inputs in [−3, 3]: its eigenvalue spectrum (top) "
             "and its first eight eigenvectors drawn as functions of x (bottom). Gradient descent fits the "
             "large-eigenvalue modes first, and the later eigenvectors oscillate more and more like sinusoids — "
             "the i-th changes sign about i − 1 times.",
    "prior": "Five noisy samples of sin(x) (black) and what three kernel models of the seed's 3-layer ReLU "
             "network predict from them: Bayesian inference with random networks (NNGP), the NTK-GP, and the "
             "ensemble of infinitely wide networks trained by gradient descent. Candidate labels at test inputs "
             "are then scored by the NTK prior's probability given the training labels, which shows why the "
             "most probable label is the kernel's prediction and why joint densities at different inputs cannot "
             "be compared.",
    "training": "Finite networks, really trained by gradient descent, against what the kernel predicts for the "
                "same training time, then the residual of each eigenmode over training and the distance to the "
                "infinite-width description as the width grows. A diagnosis of each setting checks, with "
                "numbers, whether the trained networks are in the kernel regime and names what breaks it.",
    "cube": "Every function on the cube {{±1}}{d} is a sum of Walsh functions, and the NTK's eigenvalue "
            "depends only on a Walsh function's degree. Parity, a one-line program, is the degree-{d} Walsh "
            "function: it has the smallest eigenvalue and the largest RKHS norm, so the network finds it the "
            "hardest function to learn.",
}
_USER_INTRO = {
    "eigen": "The NTK and NNGP of your architecture on your {n} training inputs: eigenvalue spectra (top) and "
             "the first eigenvectors drawn against {coord} (bottom). Gradient descent fits the "
             "large-eigenvalue modes first, so these are the functions the network prefers.",
    "prior": "What three kernel models of your architecture predict from your training data: Bayesian "
             "inference with random networks (NNGP), the NTK-GP, and the ensemble of infinitely wide networks "
             "trained by gradient descent. Candidate test labels, if given, are ranked by the NTK prior's "
             "probability conditioned on the training labels.",
    "training": _INTRO["training"],
    "simplicity": "How the squared RKHS norm of your labels (the parameter distance the linearised network "
                  "must travel to fit them) accumulates over the NTK's eigenmodes. Labels the architecture "
                  "finds simple sit in the large-eigenvalue modes and have a far smaller norm than the same "
                  "values shuffled.",
}


def _prior_tasks(data: _Data) -> int:
    """Progress-bar steps of section 2: 3 posteriors, label prior, figures, candidates, label sweeps
    (the NTK-GP at the test inputs, one per input, their figure)."""
    sweeps = _sweep_count(data)
    return 5 + (data.candidates is not None) + sweeps + 2 * (sweeps > 0)


def _default_tasks(data: _Data, sizes: Sizes) -> int:
    runs = len(sizes.seed_run[1]) + len(sizes.well_run[1]) + len(sizes.fast_run[1])
    eigen, training, cube = 3 + 1, runs + 3, 4
    return eigen + _prior_tasks(data) + training + cube


def _user_tasks(data: _Data, trained_widths: int) -> int:
    return 2 + 1 + _prior_tasks(data) + trained_widths + 3 + 2


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


def build_report(out="ntkprior-report", *, seed: int = 0, quick: bool = False, progress: bool = False,
                 arch=None, x_train=None, y_train=None, x_test=None, candidates: dict | None = None,
                 learning_rate: float | None = None, steps: int | None = None, widths=None) -> ReportOutput:
    """Run the report's studies and write ``index.html``, ``figures/*.png`` and ``results.json`` to ``out``.

    Without ``arch`` / data: the seed document's analysis on the built-in data (sections 1-4 of the
    module docstring). With ``arch`` (an architecture or a spec string), ``x_train`` (n, d) and
    ``y_train`` (n,): the same sections on the user's data; ``x_test`` (n*, d) and ``candidates``
    (``{name: labels (n*,)}``) add the candidate ranking. ``learning_rate`` (default: half the stable
    maximum 2m/λ_max of the analytic NTK), ``steps`` (default 1000; 60 when quick) and ``widths`` (the widths
    trained and swept; default the architecture's own width and a sweep over 32-512) apply to the
    user's data only. ``quick`` shrinks every study to a smoke test; ``progress`` shows a tqdm bar.
    """
    from ntkprior.files import atomic_directory, check_output_directory
    final = check_output_directory(out, "out", is_report_directory, "an ntkprior report")
    with atomic_directory(final, "out") as staging:    # an interrupted run never mixes two reports
        written = _write_report(staging, seed=seed, quick=quick, progress=progress, arch=arch, x_train=x_train,
                                y_train=y_train, x_test=x_test, candidates=candidates,
                                learning_rate=learning_rate, steps=steps, widths=widths)
    return replace(written, index=final / written.index.name, results_path=final / written.results_path.name,
                   figures=[final / p.relative_to(staging) for p in written.figures])


def is_report_directory(path: Path) -> bool:
    """Whether ``path`` holds only what :func:`build_report` writes (so a new report may replace it)."""
    names = {entry.name for entry in path.iterdir()}
    return "results.json" in names and names <= {"index.html", "results.json", "figures"}


def _write_report(out: Path, *, seed, quick, progress, arch, x_train, y_train, x_test, candidates,
                  learning_rate, steps, widths) -> ReportOutput:
    start = time.perf_counter()
    sizes = QUICK if quick else FULL
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    user = arch is not None or x_train is not None or y_train is not None
    if user and (arch is None or x_train is None or y_train is None):
        raise ValueError("arch, x_train, y_train: a report on your data needs all three "
                         "(--arch, and --train with inputs and labels)")
    if not user and any(v is not None for v in (x_test, candidates, learning_rate, steps, widths)):
        raise ValueError("x_test, candidates, learning_rate, steps, widths: only apply to a report on your "
                         "data; pass arch, x_train and y_train too")
    if user:
        arch = load_arch(arch) if isinstance(arch, str) else arch
        data = _user_data(x_train, y_train, x_test, candidates, sizes)
        steps = sizes.user_steps if steps is None else steps
        rep = _Report(out, progress, tasks=_user_tasks(data, len(_user_widths(arch, widths, sizes)[0])))
        title, subtitle = "ntkprior report on your data", f"Architecture: {arch}"
    else:
        data = _default_data(sizes, seed)
        rep = _Report(out, progress, tasks=_default_tasks(data, sizes))
        title = "ntkprior report: the NTK as a prior, on the seed document's examples"
        subtitle = ("The analysis of “The Neural Tangent Kernel as a prior” (SERI MATS 2022), run end to end: "
                    "eigenmodes, the prior over labels, trained networks against theory, and simplicity.")
    try:
        with _one_thread():
            meta = (_run_user(rep, arch, data, sizes, seed, learning_rate, steps, widths) if user
                    else _run_default(rep, data, sizes, seed))
    finally:
        rep.close()
    runtime = time.perf_counter() - start
    from ntkprior import __version__
    meta = {"ntkprior version": __version__, "seed": seed, "size": "quick" if quick else "full", **meta,
            "runtime": f"{runtime:.1f} s"}
    rep.results["meta"] = {**meta, "runtime_s": runtime,
                           "findings": {s.key: s.findings for s in rep.sections},
                           "figures": [p.relative_to(out).as_posix() for p in rep.figures]}
    index = out / "index.html"
    index.write_text(_page(rep, title, subtitle, meta), encoding="utf-8")
    results_path = out / "results.json"
    results_path.write_text(json.dumps(jsonable(rep.results), indent=1), encoding="utf-8")
    return ReportOutput(index, results_path, rep.results, list(rep.figures), runtime)


def _run_default(rep: _Report, data: _Data, sizes: Sizes, seed: int) -> dict:
    archs = {k: parse_spec(v) for k, v in DEFAULT_ARCHS.items()}
    grid = datasets.interval_grid(sizes.eigen_points, -3.0, 3.0)
    _eigen_section(rep, {"2-layer ReLU NTK": (archs["two_layer"], "ntk"),
                         "4-layer ReLU NTK": (archs["deep"], "ntk"),
                         "2-layer ReLU NNGP": (archs["two_layer"], "nngp")},
                   grid, grid[:, 0].numpy(), "input x", _INTRO["eigen"].format(n=sizes.eigen_points))
    truth_x = datasets.interval_grid(201, -4.0, 4.0)
    _prior_section(rep, archs["seed"], data, sizes, SEED_STEPS, SEED_LEARNING_RATE, _INTRO["prior"],
                   truth=(truth_x[:, 0], torch.sin(truth_x[:, 0])))
    seed_setting = _Setting("seed's settings", archs["seed"], SEED_LEARNING_RATE, *sizes.seed_run)
    well = _Setting("σ_w = √2, σ_b = 1", archs["well"], WELL_LEARNING_RATE, *sizes.well_run)
    fast = _Setting("σ_w = √2, σ_b = 1", archs["well"], SEED_LEARNING_RATE, *sizes.fast_run)
    sweep = replace(well, steps=sizes.sweep_steps, runs=tuple((w, sizes.sweep_seeds) for w in sizes.sweep_widths))
    _training_section(rep, data, sizes, [seed_setting, well, fast], well, sweep, seed, _INTRO["training"])
    _cube_section(rep, archs["cube"], sizes, seed, _INTRO["cube"].format(d=_superscript(sizes.cube_dim)))
    roles = {"two_layer": "2-layer ReLU (section 1)", "deep": "4-layer ReLU (section 1)",
             "seed": "the seed's 3-layer ReLU network (sections 2-3)", "well": "σ_w = √2, σ_b = 1 (section 3)",
             "cube": "2-layer ReLU on the cube (section 4)"}
    return {"architectures": {roles[k]: v for k, v in DEFAULT_ARCHS.items()},
            "training data": f"5 inputs uniform on [−π, π] (seed {seed}), labels sin(x) + 0.1·N(0, 1)",
            "seed's training run": f"learning rate {SEED_LEARNING_RATE}, {SEED_STEPS} steps (closed forms); "
                                   f"trained networks here run {sizes.seed_run[0]} steps to fit the time budget"}


def _user_widths(arch, widths, sizes: Sizes) -> tuple[tuple, tuple]:
    """(widths trained and diagnosed, widths swept): the user's, or the architecture's own and the
    default sweep."""
    if len(arch.dense_layers) < 2:
        raise ValueError(f"arch: {arch} has no hidden Dense layer; the report trains networks of several "
                         "widths, so it needs at least one hidden layer, e.g. dense(512) relu dense(1)")
    if widths is None:
        return (arch.dense_layers[0].out_features,), sizes.sweep_widths
    widths = tuple(int(w) for w in widths)
    return widths, widths if len(widths) > 1 else sizes.sweep_widths


def _run_user(rep: _Report, arch, data: _Data, sizes: Sizes, seed: int, learning_rate, steps, widths) -> dict:
    lr_max = max_stable_learning_rate(arch.kernel(data.x_train).ntk)
    learning_rate = 0.5 * lr_max if learning_rate is None else learning_rate
    train_widths, sweep_widths = _user_widths(arch, widths, sizes)
    coord = data.coordinate_label
    _eigen_section(rep, {"NTK": (arch, "ntk"), "NNGP": (arch, "nngp")}, data.x_train,
                   data.coordinate(data.x_train), coord,
                   _USER_INTRO["eigen"].format(n=data.x_train.shape[0], coord=coord))
    _prior_section(rep, arch, data, sizes, steps, learning_rate, _USER_INTRO["prior"])
    setting = _Setting("your settings", arch, learning_rate, steps,
                       tuple((w, sizes.user_ensemble) for w in train_widths))
    sweep = replace(setting, steps=min(steps, sizes.sweep_steps),
                    runs=tuple((w, sizes.sweep_seeds) for w in sweep_widths))
    _training_section(rep, data, sizes, [setting], setting, sweep, seed, _USER_INTRO["training"])
    _user_simplicity_section(rep, arch, data, seed, _USER_INTRO["simplicity"])
    return {"architecture": str(arch), "training inputs": f"{data.x_train.shape[0]} × {data.x_train.shape[1]}",
            "test inputs": "none" if data.x_test is None else f"{data.x_test.shape[0]}",
            "learning rate": f"{learning_rate:.4g} (stable maximum 2m/λ_max = {lr_max:.4g})",
            "steps": steps}
