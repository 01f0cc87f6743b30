"""Section 3 of the document's analysis: trained networks against the kernel's prediction (with a
diagnosis of each setting), one network's residual per eigenmode against the closed form, and a
width sweep."""

from __future__ import annotations

import numpy as np

from ntkprior.dynamics.diagnose import diagnose
from ntkprior.dynamics.linearized import linearized_dynamics
from ntkprior.dynamics.training import train, width_sweep
from ntkprior.studies.document.settings import Data, Setting, Sizes
from ntkprior.studies.progress import Progress, silent
from ntkprior.studies.result import StudyResult, numbers


def mode_curves(arch, data: Data, sizes: Sizes, learning_rate: float, steps: int, seed: int) -> dict:
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
            "eigenvalues": numbers(dyn.eigenvalues), "times": times, "theory": theory,
            "measured_steps": result.steps, "measured": measured,
            "max_stable_learning_rate": dyn.max_stable_learning_rate}


def training_study(data: Data, sizes: Sizes, settings: list[Setting], curve_setting: Setting,
                   sweep_setting: Setting, seed: int, progress: Progress | None = None) -> StudyResult:
    """Diagnose every (setting, width) on ``data.x_plot``; per-mode curves of ``curve_setting``; a
    width sweep of ``sweep_setting``. ``arrays`` holds, per panel title, the trained networks'
    outputs and the kernel's (Lee et al.) mean and std."""
    progress = progress or silent()
    res = {"settings": []}
    panels = {}
    for s in settings:
        for width, networks in s.runs:
            with progress.task(f"diagnose {s.label} at width {width}"):
                d = diagnose(s.arch, data.x_train, data.y_train, data.x_plot, s.steps, s.learning_rate,
                             width=width, seed=seed, ensemble=networks)
            entry = {"label": s.label, "arch": str(s.arch.with_width(width)), "width": width,
                     "learning_rate": s.learning_rate, "steps": s.steps, "ensemble": networks, **d.summary()}
            res["settings"].append(entry)
            panels[(s.label, s.learning_rate, width)] = {"networks": d.training.test_outputs[:, -1, :, 0],
                                                         "kernel_mean": entry["lee_mean"],
                                                         "kernel_std": entry["lee_std"]}
    with progress.task("per-mode learning curves"):
        res["mode_curves"] = mode_curves(curve_setting.arch, data, sizes, curve_setting.learning_rate,
                                         curve_setting.steps, seed)
    with progress.task("width sweep"):
        seeds = tuple(range(seed, seed + sweep_setting.runs[0][1]))
        sweep = width_sweep(sweep_setting.arch, data.x_train, data.y_train, data.x_plot, sweep_setting.widths,
                            seeds, sweep_setting.steps, sweep_setting.learning_rate)
    res["width_sweep"] = {"label": sweep_setting.label, "arch": str(sweep_setting.arch), **sweep.summary()}
    return StudyResult("training", res, {"panels": panels})


def training_tasks(settings: list[Setting]) -> int:
    """Progress steps of :func:`training_study`."""
    return sum(len(s.runs) for s in settings) + 2
