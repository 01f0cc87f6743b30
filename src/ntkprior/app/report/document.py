"""The layout of the document's analysis (:mod:`ntkprior.studies.document`): its four sections as
figures, tables and sentences generated from what each study returned."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import torch

from ntkprior.app import plots
from ntkprior.app.report.html import Plan, Report, Section, fmt, paragraph, superscript, table, verdict
from ntkprior.arch.spec import load_arch, parse_spec
from ntkprior.dynamics.linearized import max_stable_learning_rate
from ntkprior.dynamics.training import SWEEP_METRICS
from ntkprior.studies import datasets
from ntkprior.studies.document.eigen import eigen_study
from ntkprior.studies.document.prior import prior_study, prior_tasks
from ntkprior.studies.document.settings import (DEFAULT_ARCHS, DOCUMENT, SEED_LEARNING_RATE, SEED_STEPS, WELL_LEARNING_RATE,
                                                Data, Setting, Sizes, default_data, sweep_count, user_data,
                                                user_widths)
from ntkprior.studies.document.simplicity import cube_study, labels_study
from ntkprior.studies.document.training import training_study, training_tasks


# ====================================================================== section 1: eigenmodes
def eigen_section(rep: Report, panels: dict, x: torch.Tensor, coordinate: np.ndarray,
                  coordinate_label: str, intro: str, max_modes: int = 8) -> None:
    """Spectrum and first eigenvectors of each ``panels[title] = (arch, kernel)`` on inputs x."""
    with rep.section("eigenmodes", "1. Eigenmodes", intro) as sec:
        study = eigen_study(panels, x, coordinate, coordinate_label, rep.progress, max_modes)
        res, drawn, one_d = study.numbers, study.arrays["kernels"], study.numbers["one_d"]
        rep.results["eigenmodes"] = res
        for title, r in res["kernels"].items():
            if one_d:
                changes = ", ".join(str(int(c)) for c in r["sign_changes"])
                rep.finding(f"{title}: the eigenvectors v1…v{len(r['sign_changes'])} change sign {changes} "
                            f"times along {coordinate_label}.")
            else:
                top = ", ".join(fmt(v, 3) for v in r["eigenvalues"][:max_modes])
                rep.finding(f"{title}: the largest eigenvalues are {top}; {r['above_roundoff']} of {res['n']} "
                            "lie above the round-off level.")
        with rep.task("eigenmode figure"):
            fig = plots.eigenmode_overview(drawn, max_modes=max_modes, xlabel=coordinate_label, connect=one_d)
            sec.blocks.append(rep.figure(
                fig, "eigenmodes", "Top: eigenvalues of each kernel's Gram matrix (log scale; the dotted line "
                "is the round-off level n·ε·λ₁, below which eigenvalues are noise). Bottom: the first "
                f"{max_modes} eigenvectors as functions of {coordinate_label}, each scaled to the same height.",
                "eigenvalue spectra and eigenvectors of each kernel"))
        if not one_d:
            xy, (xlabel, ylabel) = study.arrays["plane"]
            for title, vectors in study.arrays["vectors"].items():
                with rep.task(f"eigenvector maps of the {title}"):
                    fig = plots.eigenvector_maps(xy, vectors, eigenvalues=drawn[title]["values"],
                                                 max_modes=max_modes, xlabel=xlabel, ylabel=ylabel,
                                                 title=f"{title}: the first eigenvectors over the inputs")
                    sec.blocks.append(rep.figure(
                        fig, f"eigenvector_maps_{title.lower()}", f"The first {max_modes} eigenvectors of the "
                        f"{title}, each input drawn at ({xlabel}, {ylabel}) and coloured by the eigenvector's "
                        "value there (red positive, blue negative): the view that suits inputs of more than "
                        "one dimension.", f"eigenvectors of the {title} as colour maps"))
        titles, rows = list(panels), []
        for i in range(min(max_modes, res["n"])):
            row = [i + 1]
            for t in titles:
                kr = res["kernels"][t]
                row.append(fmt(kr["eigenvalues"][i]))
                if one_d:
                    row.append(fmt(int(kr["sign_changes"][i])) if i < len(kr["sign_changes"]) else "–")
            rows.append(row)
        per_kernel = (lambda t: (f"λᵢ {t}", "sign changes")) if one_d else (lambda t: (f"λᵢ {t}",))
        headers = ["mode i"] + [h for t in titles for h in per_kernel(t)]
        caption = ("The first eigenvalues and the number of sign changes of each eigenvector along "
                   f"{coordinate_label}." if one_d else "The first eigenvalues.")
        sec.blocks.append(table(headers, rows, caption, "numbers"))
        sec.blocks.append(paragraph(" ".join(
            f"{t}: {r['above_roundoff']} of {res['n']} eigenvalues lie above the round-off level "
            f"{fmt(r['roundoff_level'], 2)}." for t, r in res["kernels"].items())))


# ====================================================================== section 2: the prior
def prior_section(rep: Report, arch, data: Data, sizes: Sizes, t: int, learning_rate: float,
                  intro: str, truth=None) -> None:
    with rep.section("prior", "2. The prior over labels", intro) as sec:
        study = prior_study(arch, data, sizes, t, learning_rate, rep.progress)
        res, sweeps, drawn = study.numbers, study.numbers["label_sweeps"], study.arrays["posteriors"]
        rep.results["prior"] = res
        if "candidates" in res:
            rows = res["candidates"]["rows"]
            lead = f", ahead of the next by {fmt(-rows[1]['delta'])} nats" if len(rows) > 1 else ""
            rep.finding(f"Most probable candidate labeling under the NTK prior: “{rows[0]['name']}” "
                        f"(log p(y* | Y) = {fmt(rows[0]['conditional_log_prob'])}{lead}).")
        for j, s in enumerate(sweeps):
            rep.finding(f"At {where_label(s, j)} the most probable label is the kernel's prediction μ* = "
                        f"{fmt(s['mean'], 3)} (σ* = {fmt(s['std'], 3)}); the joint density's ceiling there is "
                        f"{fmt(s['peak_joint'])}.")
        prior_page(rep, sec, res, data, drawn, truth)


def prior_page(rep: Report, sec: Section, res: dict, data: Data, drawn: dict, truth) -> None:
    with rep.task("prior figures"):
        candidates = None
        if "candidates" in res:
            candidates = {row["name"]: (data.coordinate(data.x_test), row["labels"])
                          for row in res["candidates"]["rows"][:4]}
        fig = plots.posterior_bands(res["x_plot"], drawn, x_train=data.coordinate(data.x_train),
                                    y_train=data.y_train, candidates=candidates, truth=truth,
                                    xlabel=data.coordinate_label, connect=data.connect)
        sec.blocks.append(rep.figure(fig, "posteriors", posterior_caption(res, candidates),
                                     "posterior mean and two-standard-deviation bands of three kernel models"))
    lp = res["label_prior"]
    sec.blocks.append(table(
        ["prior", "log p(Y)", "squared RKHS norm Yᵀ H⁻¹ Y",
         "share of Yᵀ H⁻¹ Y in the smallest-eigenvalue mode"],
        [[k.upper(), fmt(v["log_prob"]), fmt(v["rkhs_norm"]), f"{100 * v['smallest_mode_share']:.1f} %"]
         for k, v in lp.items()],
        "How probable the training labels are under each prior. The squared RKHS norm is the smallest "
        "squared parameter distance the linearised network must travel to fit them.", "numbers"))
    if "candidates" in res:
        c = res["candidates"]
        sec.blocks.append(table(
            ["rank", "candidate", "labels y*", "log p(y* | Y)", "vs best", "joint log p(Y, y*)", "max |z|",
             "Mahalanobis²"],
            [[i + 1, r["name"], ", ".join(fmt(v, 3) for v in r["labels"]), fmt(r["conditional_log_prob"]),
              fmt(r["delta"]), fmt(r["joint_log_prob"]), fmt(r["max_abs_z"], 3), fmt(r["mahalanobis"])]
             for i, r in enumerate(c["rows"])],
            "Candidate labelings of the same test inputs, ranked by the NTK prior's conditional log-probability "
            f"given the training labels (best first). The kernel's own prediction μ* = "
            f"({', '.join(fmt(m, 3) for m in c['mean'])}) with σ* = ({', '.join(fmt(s, 3) for s in c['std'])}) "
            "would score highest of all. On the same test inputs joint and conditional differ by the same "
            f"constant log p(Y) = {fmt(c['marginal_log_prob'])}.", "numbers"))
    if res["label_sweeps"]:
        sweep_page(rep, sec, res["label_sweeps"], data)


def posterior_caption(res: dict, candidates: dict | None) -> str:
    """The posteriors figure's caption, from what this run drew: candidates shown, gradient flow, and an
    NNGP dominated by its smallest eigenvalue."""
    tt, lp = res["training_time"], res["label_prior"]
    text = "Mean ± 2 standard deviations of three kernel models given the training points (black)"
    if candidates:
        total = len(res["candidates"]["rows"])
        shown = "the candidate test labelings" if total == len(candidates) else \
            f"the {len(candidates)} most probable of the {total} candidate test labelings"
        text += (f", with {shown} (diamonds; the sets at one test input are drawn slightly apart so that "
                 "each stays visible — they label the same x*)")
    text += (". The NNGP posterior is that of Bayesian inference with randomly initialised networks as the "
             "prior. ")
    if tt["gradient_flow"]:
        text += (f"Learning rate {fmt(tt['learning_rate'])} is above the stable maximum 2m/λ_max = "
                 f"{fmt(tt['max_stable_learning_rate'], 3)}: discrete gradient descent at this rate diverges, so "
                 f"the third model is the gradient-flow limit of the GD-ensemble formula at the same ηt = "
                 f"{fmt(tt['learning_rate'] * tt['steps'])}, not real GD.")
    else:
        text += (f"The GD ensemble is the distribution of infinitely wide networks trained by gradient descent "
                 f"for {tt['steps']} steps at learning rate {fmt(tt['learning_rate'])}.")
    nngp = lp["nngp"]
    if nngp["smallest_mode_share"] > 0.5:
        text += (f" The NNGP is nearly singular on these inputs (eigenvalues from {fmt(nngp['eigenvalue'][0], 3)} "
                 f"down to {fmt(nngp['eigenvalue'][-1], 3)}) and its smallest-eigenvalue mode carries "
                 f"{100 * nngp['smallest_mode_share']:.1f} % of YᵀK⁻¹Y: its mean between the points is driven "
                 "by that one mode, and its ±2 std band is too narrow to see. This is correct, not a bug.")
    return text


def where_label(sweep: dict, j: int) -> str:
    """How the page names the test input of a label sweep: its value (1-D) or its number."""
    return f"x* = {fmt(sweep['x'], 3)}" if not isinstance(sweep["x"], list) else f"test input {j + 1}"


def sweep_page(rep: Report, sec: Section, sweeps: list, data: Data) -> None:
    def where(s):
        return where_label(s, sweeps.index(s))

    with rep.task("candidate log-probability figure"):
        fig = plots.candidate_log_probs(
            {where(s): (s["labels"], s["conditional"]) for s in sweeps},
            candidates={where(s): ([m["label"] for m in s["marked"]], [m["conditional"] for m in s["marked"]])
                        for s in sweeps},
            peaks={where(s): (s["mean"], s["peak_conditional"]) for s in sweeps})
        n_test = data.x_test.shape[0]
        which = "one curve per test input" if len(sweeps) == n_test else \
            f"one curve for each of the first {len(sweeps)} of the {n_test} test inputs"
        marked = (f"; diamonds mark the labels {', '.join(fmt(v, 3) for v in data.marked_labels)}"
                  if data.marked_labels else "")
        sec.blocks.append(rep.figure(
            fig, "candidate_log_probs", "log p(y* | Y) under the NTK prior as a function of the candidate label "
            f"y*, {which}. Each curve peaks at the kernel's prediction μ* (triangle), and its "
            f"height −½ log 2πσ*² depends on the test input{marked}.",
            "conditional log-probability of candidate labels at each test input"))
    headers = ["test input", "μ* (prediction)", "σ*", "peak log p(y*|Y)", "peak joint log p(Y, y*)"]
    for v in data.marked_labels:
        headers += [f"log p(y*={fmt(v, 3)} | Y)", f"joint, y*={fmt(v, 3)}"]
    rows = []
    for s in sweeps:
        row = [where(s), fmt(s["mean"]), fmt(s["std"]), fmt(s["peak_conditional"]), fmt(s["peak_joint"])]
        for m in s["marked"]:
            row += [fmt(m["conditional"]), fmt(m["joint"])]
        rows.append(row)
    sec.blocks.append(table(headers, rows, "One test input at a time: the label each input finds most "
                             "probable is the kernel's prediction μ*, and the ceiling of the joint density "
                             "differs from input to input.", "numbers"))
    first, spread = sweeps[0], max(s["peak_joint"] for s in sweeps) - min(s["peak_joint"] for s in sweeps)
    question = ("Why “y* = 3 looks most probable”" if 3.0 in data.marked_labels else
                "Why the most probable label is the kernel's prediction")
    sec.blocks.append(paragraph(
        f"{question}: at {where(first)} raising y* towards μ* = "
        f"{fmt(first['mean'], 3)} raises its probability and going past μ* lowers it, so the most probable "
        "label is exactly the kernel-regression prediction; a candidate looks best when it is closest to μ*, "
        "in units of σ*. Why joint densities at different inputs cannot be compared: log p(Y, y*) = "
        "log p(Y) + log N(y*; μ*, σ*²) has its ceiling log p(Y) − ½ log 2πσ*², and here the ceilings "
        f"differ by {fmt(spread, 3)} nats between test inputs only because σ* differs. A higher joint "
        "density at one input is not a more plausible generalisation than a lower one elsewhere; compare the "
        "standardised residuals z = (y* − μ*)/σ* instead (docs/prior.md)." + joint_vs_z(sweeps, where),
        "explain"))


def joint_vs_z(sweeps: list, where) -> str:
    """A sentence contrasting the marked label the joint density prefers with the one closest to its prediction."""
    pairs = [(s, m) for s in sweeps for m in s["marked"]]
    if len(sweeps) < 2 or not pairs:
        return ""
    (sj, mj), (sz, mz) = max(pairs, key=lambda p: p[1]["joint"]), min(pairs, key=lambda p: abs(p[1]["z"]))
    best_joint = (f"y* = {fmt(mj['label'], 3)} at {where(sj)} (joint {fmt(mj['joint'])}, "
                  f"z = {fmt(mj['z'], 3)})")
    if mj is mz:
        return (f" Among the marked labels the joint density and the residual agree here: {best_joint} is "
                "highest by both, but only the residual is a fair comparison across inputs.")
    return (f" Among the marked labels the joint density is highest for {best_joint}, while the label "
            f"closest to its own prediction is y* = {fmt(mz['label'], 3)} at {where(sz)} "
            f"(joint {fmt(mz['joint'])}, z = {fmt(mz['z'], 3)}).")


# ====================================================================== section 3: training
def training_section(rep: Report, data: Data, sizes: Sizes, settings: list, curve_setting: Setting,
                     sweep_setting: Setting, seed: int, intro: str) -> None:
    with rep.section("training", "3. Training vs theory", intro) as sec:
        study = training_study(data, sizes, settings, curve_setting, sweep_setting, seed, rep.progress)
        res = study.numbers
        rep.results["training"] = res
        panels, kernel_mean, kernel_std = {}, {}, {}
        for ((label, learning_rate, width), drawn), entry in zip(study.arrays["panels"].items(), res["settings"]):
            title = f"{label}, η = {fmt(learning_rate)}, width {width}"
            if learning_rate >= entry["max_stable_lr_analytic"]:
                title += f"\nη > 2m/λ_max = {fmt(entry['max_stable_lr_analytic'], 3)}: gradient flow"
            panels[title], kernel_mean[title], kernel_std[title] = (drawn["networks"], drawn["kernel_mean"],
                                                                    drawn["kernel_std"])
        for s in res["settings"]:
            rep.finding(f"{setting_title(s)}: {'; '.join(s['answers'])}.")
        rep.finding("Width sweep exponents: " + ", ".join(
            f"{k} ∝ width^{fmt(v, 2)}" for k, v in res["width_sweep"]["exponents"].items()) + ".")
        training_page(rep, sec, res, data, panels, kernel_mean, kernel_std)


def unstable_note(settings: list) -> str:
    """A sentence naming the panels whose learning rate is above 2m/λ_max (there the kernel curve is the
    gradient-flow limit, and real gradient descent of the infinite network diverges)."""
    unstable = [s for s in settings if s["learning_rate"] >= s["max_stable_lr_analytic"]]
    if not unstable:
        return ""
    which = "; ".join(f"{s['label']} at η = {fmt(s['learning_rate'])} (2m/λ_max = "
                      f"{fmt(s['max_stable_lr_analytic'], 3)})" for s in unstable)
    return (f" Above the stable learning rate — {which} — discrete gradient descent of the infinitely wide "
            "network diverges: there the kernel's curve is gradient flow at the same ηt, and the trained "
            "networks show what finite networks do instead.")


def setting_title(s: dict) -> str:
    return f"{s['label']}, width {s['width']}, learning rate {fmt(s['learning_rate'])}, {s['steps']} steps"


def training_page(rep, sec, res, data, panels, kernel_mean, kernel_std) -> None:
    with rep.task("training figures"):
        fig = plots.trained_vs_kernel(data.coordinate(data.x_plot), kernel_mean, kernel_std, panels,
                                      x_train=data.coordinate(data.x_train), y_train=data.y_train,
                                      kernel_label="GD ensemble (kernel)", xlabel=data.coordinate_label,
                                      connect=data.connect)
        sec.blocks.append(rep.figure(
            fig, "trained_vs_kernel", "Each panel: an ensemble of really trained networks ("
            + ("thin lines; dashed: their mean" if data.connect else "dots; crosses: their mean, at each input")
            + ") over the infinite-width prediction for the same architecture, learning rate and "
            "number of steps (the Lee et al. GD-ensemble mean ± 2 std" + ("" if data.connect else ", as error bars")
            + ")." + unstable_note(res["settings"])
            + " The diagnoses below give the numbers.",
            "trained networks compared with the kernel prediction"))
        for s in res["settings"]:
            sec.blocks.append(verdict(f"{setting_title(s)}, {s['ensemble']} networks", s["answers"],
                                      s["verdicts"]["matches_kernel"], s["checks"], s["notes"]))
        mc = res["mode_curves"]
        fig = plots.mode_learning_curves(mc["times"], mc["theory"], mc["eigenvalues"],
                                         measured_times=mc["measured_steps"], measured=mc["measured"])
        sec.blocks.append(rep.figure(
            fig, "mode_learning_curves", f"The training residual f_t(X) − Y along each eigenvector of the NTK, "
            f"for one network of width {mc['width']} (circles) and the closed form of the infinitely wide "
            f"network started from the same initial outputs (lines); learning rate {fmt(mc['learning_rate'])}. "
            "Modes with large eigenvalues are learned first: mode i decays like (1 − ηλᵢ/m)ᵗ.",
            "residual per eigenmode over training"))
        ws = res["width_sweep"]
        fig = plots.width_sweep(ws["widths"], {m: [r[m] for r in ws["rows"]] for m in SWEEP_METRICS},
                                ws["exponents"])
        sec.blocks.append(rep.figure(
            fig, "width_sweep", f"Distance from the infinite-width description against hidden width "
            f"({ws['label']}; {len(ws['seeds'])} seed(s), {ws['steps']} steps, learning rate "
            f"{fmt(ws['learning_rate'])}), with fitted power laws. test_distance: trained network vs the "
            "infinite-width closed form from the same f0; param_change and kernel_change: relative motion "
            "of the parameters and of the empirical NTK during training; init_kernel_distance: empirical vs "
            "analytic NTK at initialisation.", "log-log plot of distances against width"))
    sec.blocks.append(table(["width"] + list(SWEEP_METRICS) + ["final loss"],
                             [[r["width"]] + [fmt(r[m], 3) for m in SWEEP_METRICS] + [fmt(r["loss"], 3)]
                              for r in ws["rows"]] +
                             [["fitted exponent"] + [fmt(ws["exponents"][m], 3) for m in SWEEP_METRICS] + [""]],
                             "The width sweep's numbers (means over seeds) and the fitted log-log slopes. In "
                             "the lazy regime one expects about −½ for test_distance and "
                             "init_kernel_distance, −1 for kernel_change, and for param_change −½ with one "
                             f"hidden layer, −1 with more (Dyer & Gur-Ari 2019); with {len(ws['seeds'])} seed(s) and "
                             f"{data.x_train.shape[0]} training points the fits are noisy.", "numbers"))


# ====================================================================== section 4: simplicity
def cube_section(rep: Report, arch, sizes: Sizes, seed: int, intro: str) -> None:
    d = sizes.cube_dim
    with rep.section("simplicity", "4. Simplicity", intro) as sec:
        study = cube_study(arch, d, seed, rep.progress, sizes.curve_draws)
        res = study.numbers
        rep.results["simplicity"] = res
        rows, by_degree = res["targets"], res["by_degree"]
        by_name = {r["name"]: r for r in rows}
        parity, x1 = by_name[f"parity of {d} bits"], by_name["x₁"]
        smallest = min(by_degree, key=lambda b: b["eigenvalue"])["degree"]
        rep.finding(f"Parity of {d} bits: eigenvalue {fmt(by_degree[d]['eigenvalue'])} (x₁: "
                    f"{fmt(by_degree[1]['eigenvalue'])}; the smallest is that of degree {smallest}), "
                    f"squared RKHS norm {fmt(parity['rkhs_norm'])} (x₁: {fmt(x1['rkhs_norm'])}); fitted on "
                    f"half the cube the NTK-GP reaches R² = {fmt(parity['r2_half_cube'], 3)} on parity and "
                    f"{fmt(x1['r2_half_cube'], 3)} on x₁.")
        with rep.task("simplicity figures"):
            fig = plots.walsh_spectrum([b["degree"] for b in by_degree], [b["eigenvalue"] for b in by_degree],
                                       multiplicities=[b["multiplicity"] for b in by_degree],
                                       highlight={"parity": d, "x₁": 1})
            sec.blocks.append(rep.figure(
                fig, "walsh_spectrum", "The NTK's eigenvalue for Walsh functions of each degree on "
                f"{{±1}}{superscript(d)} (×: how many Walsh functions share it).",
                "eigenvalue against Walsh degree"))
            fig = plots.rkhs_norms({r["name"]: r["rkhs_norm"] for r in rows}, highlight=[f"parity of {d} bits"])
            sec.blocks.append(rep.figure(
                fig, "rkhs_norms", f"Squared RKHS norm yᵀH⁻¹y of each ±1 target on all {res['n']} points: "
                "how far the linearised network must move its parameters to fit it. Every target has the same "
                f"Euclidean norm √{res['n']}.", "squared RKHS norm of each target"))
        sec.blocks.append(table(
            ["target", "Walsh degree", "squared RKHS norm", "log p(y) under the NTK prior",
             f"R² on the other half, fitted on {res['train_points']} points"],
            [[r["name"], "–" if r["degree"] is None else r["degree"], fmt(r["rkhs_norm"]), fmt(r["log_prob"]),
              fmt(r["r2_half_cube"], 3)] for r in rows],
            "The cost of each target under the NTK prior, and how well the NTK-GP fitted on a random half of the "
            "cube predicts the other half (R² = 1: perfectly; R² ≤ 0: no better than the mean).", "numbers"))
        learning_curves_block(rep, sec, res, study.arrays["learning_curves"])


def _needed(value, n: int) -> str:
    return f"> {n - 1} (not within the cube)" if value is None else fmt(value)


def learning_curves_block(rep: Report, sec: Section, res: dict, drawn: dict) -> None:
    """How many samples each target needs: predicted from the spectrum and measured (issue 19)."""
    lc, n = res["learning_curves"], res["n"]
    low, parity = lc["rows"][0], lc["rows"][-1]
    level = f"{100 * lc['fraction']:.0f} % of E[y²]"
    rep.finding(f"Samples needed for a held-out error below {level}: {low['target']} "
                f"{_needed(low['samples_needed_predicted'], n)} predicted, {_needed(low['samples_needed_measured'], n)} "
                f"measured; parity {_needed(parity['samples_needed_predicted'], n)} predicted, "
                f"{_needed(parity['samples_needed_measured'], n)} measured.")
    with rep.task("learning-curve figure"):
        fig = plots.learning_curves(**drawn)
        sec.blocks.append(rep.figure(
            fig, "learning_curves", "Left: the test error on held-out points of the cube against the number of "
            "training points, predicted from the kernel's spectrum (lines; Bordelon, Canatar & Pehlevan 2020) "
            f"and measured by kernel regression on {lc['draws']} random training sets per size (circles, bars: "
            "the spread). Right: the learnability of the top eigenmodes, one line per Walsh degree; a mode "
            "counts as learned above ½. “Parity is hard” becomes a number of samples.",
            "learning curves of a low-degree function and of parity"))
    sec.blocks.append(table(
        ["target", "Walsh degree", "eigenvalue", f"samples for error ≤ {level}: predicted", "measured"],
        [[r["target"], r["degree"], fmt(r["eigenvalue"]), _needed(r["samples_needed_predicted"], n),
          _needed(r["samples_needed_measured"], n)] for r in lc["rows"]],
        f"The number of training points each target needs, of the {n} points of the cube (measured: the first of "
        f"the sizes {', '.join(str(int(v)) for v in lc['measured_sizes'])} that reaches it).", "numbers"))


def labels_section(rep: Report, arch, data: Data, seed: int, intro: str) -> None:
    with rep.section("simplicity", "4. Simplicity of your labels", intro) as sec:
        res = labels_study(arch, data, seed, rep.progress).numbers
        rep.results["simplicity"] = res
        yours, shuffled_ = res["labelings"].values()
        rep.finding(f"Squared RKHS norm of your labels: {fmt(yours['rkhs_norm'])}; of the same labels "
                    f"shuffled: {fmt(shuffled_['rkhs_norm'])}.")
        with rep.task("simplicity figure"):
            fig = plots.mode_contributions({k: v["cumulative_share"] for k, v in res["labelings"].items()})
            sec.blocks.append(rep.figure(
                fig, "mode_contributions", "How the squared RKHS norm of the labels accumulates over the NTK's "
                "eigenmodes (largest eigenvalue first), for your labels and for the same values shuffled "
                "across inputs.", "cumulative share of the RKHS norm by eigenmode"))
        rows = [[k, fmt(v["rkhs_norm"]), fmt(v["log_prob"])] for k, v in res["labelings"].items()]
        sec.blocks.append(table(["labeling", "squared RKHS norm", "log p(y) under the NTK prior"], rows,
                                 "A labeling the architecture finds simple has a much smaller norm than its "
                                 "shuffled version.", "numbers"))


# ====================================================================== the two runs: built-in data, the user's data
INTRO = {
    "eigen": "Each column is one kernel on {n} evenly spaced inputs in [−3, 3]: its eigenvalue spectrum (top) "
             "and its first eight eigenvectors drawn as functions of x (bottom). Gradient descent fits the "
             "large-eigenvalue modes first, and the later eigenvectors oscillate more and more like sinusoids — "
             "the i-th changes sign about i − 1 times.",
    "prior": "Five noisy samples of sin(x) (black) and what three kernel models of the document's 3-layer ReLU "
             "network predict from them: Bayesian inference with random networks (NNGP), the NTK-GP, and the "
             "ensemble of infinitely wide networks trained by gradient descent. Candidate labels at test inputs "
             "are then scored by the NTK prior's probability given the training labels, which shows why the "
             "most probable label is the kernel's prediction and why joint densities at different inputs cannot "
             "be compared.",
    "training": "Finite networks, really trained by gradient descent, against what the kernel predicts for the "
                "same training time, then the residual of each eigenmode over training and the distance to the "
                "infinite-width description as the width grows. A diagnosis of each setting checks, with "
                "numbers, whether the trained networks are in the kernel regime and names what breaks it.",
    "cube": "Every function on the cube {{±1}}{power} is a sum of Walsh functions, and the NTK's eigenvalue "
            "depends only on a Walsh function's degree. Parity, a one-line program, is the degree-{d} Walsh "
            "function: it has the smallest eigenvalue and the largest RKHS norm, so the network finds it the "
            "hardest function to learn.",
}
USER_INTRO = {
    "eigen": "The NTK and NNGP of your architecture on your {n} training inputs: eigenvalue spectra (top) and "
             "the first eigenvectors drawn against {coord} (bottom). Gradient descent fits the "
             "large-eigenvalue modes first, so these are the functions the network prefers.",
    "prior": "What three kernel models of your architecture predict from your training data: Bayesian "
             "inference with random networks (NNGP), the NTK-GP, and the ensemble of infinitely wide networks "
             "trained by gradient descent. Candidate test labels, if given, are ranked by the NTK prior's "
             "probability conditioned on the training labels.",
    "training": INTRO["training"],
    "simplicity": "How the squared RKHS norm of your labels (the parameter distance the linearised network "
                  "must travel to fit them) accumulates over the NTK's eigenmodes. Labels the architecture "
                  "finds simple sit in the large-eigenvalue modes and have a far smaller norm than the same "
                  "values shuffled.",
}


def _prior_page_tasks(data: Data) -> int:
    """Progress steps of section 2: the study's and its figures (posteriors; candidate curves)."""
    return prior_tasks(data) + 1 + (sweep_count(data) > 0)


def default_tasks(data: Data, sizes: Sizes) -> int:
    """Progress steps of :func:`run_default` (each section: its study's steps and its figures)."""
    runs = [(0, 0)] * (len(sizes.seed_run[1]) + len(sizes.well_run[1]) + len(sizes.fast_run[1]))
    eigen, training, cube = 3 + 1, training_tasks([Setting("", None, 0, 0, tuple(runs))]) + 1, 4 + 2
    return eigen + _prior_page_tasks(data) + training + cube


def user_tasks(data: Data, trained_widths: int) -> int:
    """Progress steps of :func:`run_user`."""
    maps = 0 if data.x_train.ndim == 2 and data.x_train.shape[1] == 1 else 2     # eigenvector maps (d > 1)
    return 2 + 1 + maps + _prior_page_tasks(data) + trained_widths + 3 + 1 + 1


def run_default(rep: Report, *, data: Data, sizes: Sizes, seed: int) -> dict:
    archs = {k: parse_spec(v) for k, v in DEFAULT_ARCHS.items()}
    grid = datasets.interval_grid(sizes.eigen_points, -3.0, 3.0)
    eigen_section(rep, {"2-layer ReLU NTK": (archs["two_layer"], "ntk"),
                         "4-layer ReLU NTK": (archs["deep"], "ntk"),
                         "2-layer ReLU NNGP": (archs["two_layer"], "nngp")},
                   grid, grid[:, 0].numpy(), "input x", INTRO["eigen"].format(n=sizes.eigen_points))
    truth_x = datasets.interval_grid(201, -4.0, 4.0)
    prior_section(rep, archs["seed"], data, sizes, SEED_STEPS, SEED_LEARNING_RATE, INTRO["prior"],
                   truth=(truth_x[:, 0], torch.sin(truth_x[:, 0])))
    seed_setting = Setting("the document's settings", archs["seed"], SEED_LEARNING_RATE, *sizes.seed_run)
    well = Setting("σ_w = √2, σ_b = 1", archs["well"], WELL_LEARNING_RATE, *sizes.well_run)
    fast = Setting("σ_w = √2, σ_b = 1", archs["well"], SEED_LEARNING_RATE, *sizes.fast_run)
    sweep = replace(well, steps=sizes.sweep_steps, runs=tuple((w, sizes.sweep_seeds) for w in sizes.sweep_widths))
    training_section(rep, data, sizes, [seed_setting, well, fast], well, sweep, seed, INTRO["training"])
    cube_section(rep, archs["cube"], sizes, seed, INTRO["cube"].format(power=superscript(sizes.cube_dim), d=sizes.cube_dim))
    roles = {"two_layer": "2-layer ReLU (section 1)", "deep": "4-layer ReLU (section 1)",
             "seed": "the document's 3-layer ReLU network (sections 2-3)", "well": "σ_w = √2, σ_b = 1 (section 3)",
             "cube": "2-layer ReLU on the cube (section 4)"}
    return {"architectures": {roles[k]: v for k, v in DEFAULT_ARCHS.items()},
            "training data": f"5 inputs uniform on [−π, π] (seed {seed}), labels sin(x) + 0.1·N(0, 1)",
            "the document's training run": f"learning rate {SEED_LEARNING_RATE}, {SEED_STEPS} steps (closed forms); "
                                   f"trained networks here run {sizes.seed_run[0]} steps to fit the time budget"}


def run_user(rep: Report, *, arch, data: Data, sizes: Sizes, seed: int, learning_rate, steps, widths) -> dict:
    lr_max = max_stable_learning_rate(arch.kernel(data.x_train).ntk)
    learning_rate = 0.5 * lr_max if learning_rate is None else learning_rate
    train_widths, sweep_widths = user_widths(arch, widths, sizes)
    coord = data.coordinate_label
    eigen_section(rep, {"NTK": (arch, "ntk"), "NNGP": (arch, "nngp")}, data.x_train,
                   data.coordinate(data.x_train), coord,
                   USER_INTRO["eigen"].format(n=data.x_train.shape[0], coord=coord))
    prior_section(rep, arch, data, sizes, steps, learning_rate, USER_INTRO["prior"])
    setting = Setting("your settings", arch, learning_rate, steps,
                       tuple((w, sizes.user_ensemble) for w in train_widths))
    sweep = replace(setting, steps=min(steps, sizes.sweep_steps),
                    runs=tuple((w, sizes.sweep_seeds) for w in sweep_widths))
    training_section(rep, data, sizes, [setting], setting, sweep, seed, USER_INTRO["training"])
    labels_section(rep, arch, data, seed, USER_INTRO["simplicity"])
    return {"architecture": str(arch), "training inputs": f"{data.x_train.shape[0]} × {data.x_train.shape[1]}",
            "test inputs": "none" if data.x_test is None else f"{data.x_test.shape[0]}",
            "learning rate": f"{learning_rate:.4g} (stable maximum 2m/λ_max = {lr_max:.4g})",
            "steps": steps}


def plan(sizes: Sizes, seed: int, *, arch=None, x_train=None, y_train=None, x_test=None, candidates=None,
         learning_rate=None, steps=None, widths=None) -> Plan:
    """The document's analysis on the built-in data, or (with ``arch``, ``x_train``, ``y_train``) on the
    user's data; see :func:`ntkprior.app.report.build_report` for the options."""
    user = arch is not None or x_train is not None or y_train is not None
    if user and (arch is None or x_train is None or y_train is None):
        raise ValueError("arch, x_train, y_train: a report on your data needs all three "
                         "(--arch, and --train with inputs and labels)")
    if not user:
        if any(v is not None for v in (x_test, candidates, learning_rate, steps, widths)):
            raise ValueError("x_test, candidates, learning_rate, steps, widths: only apply to a report on your "
                             "data; pass arch, x_train and y_train too")
        data = default_data(sizes, seed)
        return Plan("ntkprior report: the NTK as a prior, on the examples of the document that started the project",
                    "Eigenmodes, the prior over labels, trained networks against theory, and simplicity: the "
                    "analysis of", default_tasks(data, sizes), partial(run_default, data=data, sizes=sizes, seed=seed),
                    source=DOCUMENT)
    arch = load_arch(arch) if isinstance(arch, str) else arch
    data = user_data(x_train, y_train, x_test, candidates, sizes)
    steps = sizes.user_steps if steps is None else steps
    return Plan("ntkprior report on your data", f"Architecture: {arch}",
                user_tasks(data, len(user_widths(arch, widths, sizes)[0])),
                partial(run_user, arch=arch, data=data, sizes=sizes, seed=seed, learning_rate=learning_rate,
                        steps=steps, widths=widths))
