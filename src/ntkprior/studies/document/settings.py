"""What the document's analysis runs on: sizes, the built-in architectures and data, the training
settings, and the user's data prepared for the same sections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.data import as_inputs, as_labels, check_same_features
from ntkprior.studies import datasets

#: The document that started the project; pages name it once (with its link) and say "the document" after.
DOCUMENT = {"title": "Neural Tangent Kernel Distillation", "authors": "Thomas Larsen and Jeremy Gillen",
            "year": 2022, "where": "LessWrong, SERI ML Alignment Theory Scholars Program",
            "url": "https://www.lesswrong.com/posts/QzpKq92nXqp8NHM34/neural-tangent-kernel-distillation"}

_W = "weight_std=1.5, bias_std=0.05"
_ROOT2 = "weight_std=1.4142135623730951, bias_std=1.0"
#: The built-in architectures (one-line specs). "seed": the document's 3-Dense-layer ReLU network;
#: "well": the same with sigma_w = sqrt(2), sigma_b = 1, which the kernel describes well.
DEFAULT_ARCHS = {
    "two_layer": f"dense(512, {_W}) relu dense(1, {_W})",
    "deep": f"[dense(512, {_W}) relu]*3 dense(1, {_W})",
    "seed": f"[dense(512, {_W}) relu]*2 dense(1, {_W})",
    "well": f"[dense(512, {_ROOT2}) relu]*2 dense(1, {_ROOT2})",
    "cube": f"dense(512, {_ROOT2}) relu dense(1, {_ROOT2})",
}
#: The document's training run: learning rate 0.1 for 10 000 steps (closed forms use this time).
SEED_LEARNING_RATE, SEED_STEPS = 0.1, 10_000
#: A learning rate safely below 2m / lambda_max (about 0.075 for "well" on the five points).
WELL_LEARNING_RATE = 0.05
#: Test inputs of the candidate labels: either side of 0, where the document saw bumps, and beyond the data.
CANDIDATE_INPUTS = (-0.25, 0.25, 2.75)
#: The document's own candidate labels ("y = 3 looks most probable", "y = 0.7 at the other bump").
SEED_LABELS = (0.7, 3.0)


@dataclass(frozen=True)
class Sizes:
    """How big each study is. :data:`FULL` fits the 3-minute budget on 2 cores; :data:`QUICK` is a smoke test."""

    eigen_points: int          #: grid points for the eigenmodes (section 1)
    plot_points: int           #: grid points for posteriors and trained networks
    seed_run: tuple            #: (steps, ((width, networks), ...)) at the document's settings (it ran 10 000 steps)
    well_run: tuple            #: the same for "well" at learning rate 0.05 (eta lambda_min t / m >= 3 needs 1170)
    fast_run: tuple            #: the same for "well" at the document's learning rate 0.1 (above 2m / lambda_max)
    curve_width: int           #: the single network whose per-mode residuals are tracked
    curve_records: int
    sweep_widths: tuple
    sweep_seeds: int
    sweep_steps: int
    cube_dim: int
    label_sweep_points: int    #: candidate labels per test input in the log-probability curves
    user_steps: int            #: default training steps on the user's data
    user_ensemble: int         #: networks per width on the user's data
    curve_draws: int           #: random training sets per size in the cube's measured learning curves


FULL = Sizes(eigen_points=100, plot_points=161, seed_run=(2000, ((128, 4),)),
             well_run=(1500, ((64, 5), (512, 3))), fast_run=(300, ((512, 2),)), curve_width=256,
             curve_records=30, sweep_widths=(32, 64, 128, 256, 512), sweep_seeds=6, sweep_steps=200,
             cube_dim=8, label_sweep_points=141, user_steps=1000, user_ensemble=4, curve_draws=10)
QUICK = Sizes(eigen_points=40, plot_points=41, seed_run=(60, ((32, 2),)), well_run=(60, ((16, 2), (64, 2))),
              fast_run=(30, ((64, 2),)), curve_width=64, curve_records=8, sweep_widths=(16, 32, 64),
              sweep_seeds=1, sweep_steps=20, cube_dim=5, label_sweep_points=41, user_steps=60,
              user_ensemble=2, curve_draws=3)


@dataclass(frozen=True)
class Setting:
    """One training configuration: label, architecture, learning rate, steps, and (width, networks) pairs."""

    label: str
    arch: object
    learning_rate: float
    steps: int
    runs: tuple

    @property
    def widths(self) -> list:
        return [w for w, _ in self.runs]


def sweep_count(data: "Data") -> int:
    """Test inputs that get a label sweep (at most three)."""
    return 0 if data.x_test is None else min(3, data.x_test.shape[0])


# ====================================================================== data for the report
@dataclass
class Data:
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
        return (a.reshape(len(a), -1) - self.centre) @ self.direction

    def label_range(self, mean: float, std: float) -> tuple[float, float]:
        if self.fixed_label_range is not None:
            return self.fixed_label_range
        width = max(4 * std, 0.5 * float(self.y_train.abs().max()), 1e-3)
        return mean - width, mean + width


def default_data(sizes: Sizes, seed: int) -> Data:
    x, y = datasets.seed_sin_data(5, 0.1, seed)
    x_test = torch.tensor(CANDIDATE_INPUTS, dtype=torch.float64)[:, None]
    candidates = {"sin(x*): the noiseless target": torch.sin(x_test[:, 0]),
                  "y* = 0.7 everywhere": torch.full((len(CANDIDATE_INPUTS),), 0.7, dtype=torch.float64),
                  "y* = 3 everywhere": torch.full((len(CANDIDATE_INPUTS),), 3.0, dtype=torch.float64),
                  "y* = 0 everywhere": torch.zeros(len(CANDIDATE_INPUTS), dtype=torch.float64),
                  "−sin(x*): the mirror image": -torch.sin(x_test[:, 0])}
    return Data(x, y, datasets.interval_grid(sizes.plot_points, -4.0, 4.0), x_test, candidates,
                 marked_labels=SEED_LABELS, fixed_label_range=(-3.0, 4.0))


def user_data(x_train, y_train, x_test, candidates, sizes: Sizes) -> Data:
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
    if x.ndim == 2 and x.shape[1] == 1:
        both = x if test is None else torch.cat([x, test])
        low, high = float(both.min()), float(both.max())
        pad = 0.15 * (high - low) if high > low else 1.0
        return Data(x, y[:, 0], datasets.interval_grid(sizes.plot_points, low - pad, high + pad), test, named)
    from sklearn.decomposition import PCA
    pca = PCA(1).fit(x.reshape(len(x), -1).numpy())   # signals and images: their flattened values
    plot = test if test is not None else x
    return Data(x, y[:, 0], plot, test, named, coordinate_label="principal coordinate of the input",
                 direction=pca.components_[0], centre=pca.mean_)


def user_widths(arch, widths, sizes: Sizes) -> tuple[tuple, tuple]:
    """(widths trained and diagnosed, widths swept): the user's, or the architecture's own and the
    default sweep."""
    if arch.hidden_width is None:
        raise ValueError(f"arch: {arch} has no hidden Dense layer; the report trains networks of several "
                         "widths, so it needs at least one hidden layer, e.g. dense(512) relu dense(1)")
    if widths is None:
        return (arch.hidden_width,), sizes.sweep_widths
    widths = tuple(int(w) for w in widths)
    return widths, widths if len(widths) > 1 else sizes.sweep_widths
