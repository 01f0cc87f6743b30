"""Section 4 of the document's analysis: simplicity — parity against low-degree functions on the
boolean cube (built-in data), or how the user's labels spread over the eigenmodes (user data)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkprior.prior.estimators import NTKRegressor
from ntkprior.prior.prior import KernelPrior
from ntkprior.studies import datasets
from ntkprior.studies.document.cube_curves import cube_curves
from ntkprior.studies.document.settings import Data
from ntkprior.studies.progress import Progress, silent
from ntkprior.studies.result import StudyResult, numbers


def cube_targets(d: int, rng: np.random.Generator) -> dict:
    """name -> (±1 labels on {±1}^d, Walsh degree or None) for the targets compared."""
    cube = datasets.boolean_cube(d)
    return {"constant 1": (datasets.walsh(cube, []), 0), "x₁": (datasets.walsh(cube, [0]), 1),
            "x₁·x₂": (datasets.walsh(cube, [0, 1]), 2), "x₁·x₂·x₃": (datasets.walsh(cube, [0, 1, 2]), 3),
            f"majority of {d} bits": (datasets.majority(cube), None),
            f"parity of {d} bits": (datasets.walsh(cube, range(d)), d),
            "random ±1 labels": (torch.from_numpy(rng.choice([-1.0, 1.0], size=cube.shape[0])), None)}


def cube_study(arch, d: int, seed: int, progress: Progress | None = None, curve_draws: int = 10) -> StudyResult:
    """The NTK's eigenvalue per Walsh degree on {±1}^d, and per target its squared RKHS norm, log p(y)
    and the R² of the NTK-GP fitted on a random half of the cube and scored on the other half; then
    the learning curves of x₁·x₂ and of parity (predicted from the spectrum and measured by kernel
    regression on ``curve_draws`` random subsets per size): the samples each needs."""
    progress = progress or silent()
    cube = datasets.boolean_cube(d)
    rng = np.random.default_rng(seed)
    targets = cube_targets(d, rng)
    with progress.task("kernel on the boolean cube"):
        prior = KernelPrior.from_arch(arch, cube, "ntk")
    by_degree = []
    with progress.task("eigenvalue by Walsh degree"):
        for k in range(d + 1):
            # a Walsh function lies in one eigenspace: the mode carrying its norm has its eigenvalue
            modes = prior.modes(datasets.walsh(cube, range(k)))
            top = int(torch.argmax(modes.contribution))
            by_degree.append({"degree": k, "eigenvalue": float(modes.eigenvalue[top]),
                              "multiplicity": math.comb(d, k)})
    split = rng.permutation(cube.shape[0])
    train_idx, test_idx = split[: cube.shape[0] // 2], split[cube.shape[0] // 2:]
    rows = []
    with progress.task("RKHS norms and half-cube regression"):
        for name, (y, degree) in targets.items():
            r2 = None      # R² is undefined for a constant target (no variance to explain)
            if degree != 0:
                model = NTKRegressor(arch, kind="ntkgp").fit(cube[train_idx].numpy(), y[train_idx].numpy())
                r2 = float(model.score(cube[test_idx].numpy(), y[test_idx].numpy()))
            rows.append({"name": name, "degree": degree, "rkhs_norm": prior.rkhs_norm(y),
                         "log_prob": prior.log_prob(y), "r2_half_cube": r2})
    with progress.task("learning curves on the cube"):
        curves = cube_curves(arch, d, draws=curve_draws, seed=seed)
    learning = {"fraction": curves.fraction, "draws": curves.draws, "rows": curves.rows(),
                "measured_sizes": curves.measured_sizes,
                "targets": {name: {"predicted_at_measured": t.predicted_at_measured, "measured_mean": t.measured_mean,
                                   "measured_std": t.measured_std} for name, t in curves.targets.items()}}
    return StudyResult("simplicity", {"d": d, "n": int(cube.shape[0]), "arch": str(arch), "kernel": "ntk",
                                      "by_degree": by_degree, "targets": rows, "train_points": int(len(train_idx)),
                                      "learning_curves": learning},
                       {"learning_curves": curves.figure_data()})


def labels_study(arch, data: Data, seed: int, progress: Progress | None = None) -> StudyResult:
    """How the squared RKHS norm of the user's labels, and of the same labels shuffled, accumulates
    over the NTK's eigenmodes."""
    progress = progress or silent()
    order = np.random.default_rng(seed).permutation(data.y_train.shape[0])
    shuffled = data.y_train[torch.from_numpy(order)]
    labelings = {"your labels": data.y_train, "the same labels shuffled": shuffled}
    with progress.task("RKHS norm of the labels and of shuffled labels"):
        prior = KernelPrior.from_arch(arch, data.x_train, "ntk")
        modes = {name: prior.modes(y) for name, y in labelings.items()}
    return StudyResult("simplicity", {
        "arch": str(arch), "kernel": "ntk",
        "labelings": {name: {"rkhs_norm": modes[name].total, "log_prob": prior.log_prob(y),
                             "cumulative_share": numbers(modes[name].cumulative_share),
                             "eigenvalue": numbers(modes[name].eigenvalue)} for name, y in labelings.items()}})
