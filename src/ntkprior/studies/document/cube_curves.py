"""The simplicity study as samples needed: learning curves of a low-degree function and of parity
on the boolean cube {-1, +1}^d, predicted from the kernel's spectrum and measured.

On the cube a kernel ``Phi(<x, x'>)`` is diagonalised by the Walsh functions, with an eigenvalue
that depends only on the degree |S| (MATH.md section 5); parity (degree d) has the smallest. The
spectral theory of learning curves (:mod:`ntkprior.prior.learning_curves`) turns that eigenvalue into
a number of training points: a mode is learned once p exceeds roughly the number of modes with a
larger eigenvalue, so a degree-2 function needs about ``1 + d + C(d, 2)`` points, parity nearly the
whole cube. The pool is the whole cube; kernel regression is trained on random subsets and tested
on the rest, and the theory's held-out prediction ``E_g / (1 - p/N)`` is what it is compared with.

Runtime (one thread, this machine, shared, load ~4): quick (d = 6, 64 points, 5 draws) 0.1 s; full
(d = 8, 256 points, 10 draws at 9 sizes) 2 s; ``train_networks=True`` adds about 40 s in full (2 targets
x 3 sizes x 4 networks of width 512, 2000 steps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ntkprior.arch.spec import parse_spec
from ntkprior.dynamics.learning_curves import trained_learning_curve
from ntkprior.prior.learning_curves import pool_spectrum
from ntkprior.studies.datasets import boolean_cube, walsh

__all__ = ["CubeTarget", "CubeCurves", "cube_curves", "QUICK", "FULL", "DEFAULT_ARCH"]

#: the report's boolean-cube architecture: 2-layer ReLU, NTK parameterisation, with bias
DEFAULT_ARCH = ("dense(512, weight_std=1.4142135623730951, bias_std=1.0) relu "
                "dense(1, weight_std=1.4142135623730951, bias_std=1.0)")
#: sizes of the study: cube dimension, kernel-regression draws per size, and whether to train networks
QUICK = {"d": 6, "draws": 5}
FULL = {"d": 8, "draws": 10}


@dataclass(frozen=True)
class CubeTarget:
    """One target's learning curve.

    ``held_out`` (N - 1,): predicted test MSE on held-out points at every size p = 1..N-1;
    ``predicted_at_measured``: the same at ``measured_sizes``; ``measured_mean`` / ``measured_std``:
    kernel regression over draws; ``samples_needed``: the smallest p whose error is at most
    ``fraction * E[y^2]`` (predicted: any p; measured: the first of ``measured_sizes``; None: not
    within the cube); ``trained_mean`` / ``trained_std``: trained ensembles, when asked for.
    """

    name: str
    degree: int
    eigenvalue: float
    target_power: float
    held_out: torch.Tensor
    predicted_at_measured: torch.Tensor
    measured_mean: torch.Tensor
    measured_std: torch.Tensor
    samples_needed_predicted: int | None
    samples_needed_measured: int | None
    trained_sizes: np.ndarray | None = None
    trained_mean: torch.Tensor | None = None
    trained_std: torch.Tensor | None = None


@dataclass(frozen=True)
class CubeCurves:
    """What the report's section needs: per target a curve, and the learnability of the top modes."""

    d: int
    n_pool: int
    arch: str
    kind: str
    fraction: float
    sizes: np.ndarray                   #: 1..N-1, the theory's sizes
    measured_sizes: np.ndarray
    draws: int
    targets: dict[str, CubeTarget]
    learnability: torch.Tensor          #: (N - 1, modes) at ``sizes``
    eigenvalues: torch.Tensor           #: eta of the pool kernel, descending
    degree_eigenvalues: dict[int, float]  #: eta of each Walsh degree
    seconds: float = field(default=0.0, compare=False)

    def figure_data(self) -> dict:
        """Keyword arguments for :func:`ntkprior.app.plots.learning_curves` (figures compute nothing)."""
        curves = {}
        for name, t in self.targets.items():
            curves[name] = {"n": self.sizes, "theory": t.held_out,
                            "measured": (self.measured_sizes, t.measured_mean, t.measured_std)}
            if t.trained_mean is not None:
                curves[name]["trained"] = (t.trained_sizes, t.trained_mean, t.trained_std)
        return {"curves": curves, "learnability": self.learnability, "learnability_n": self.sizes,
                "eigenvalues": self.eigenvalues, "ylabel": "test MSE on held-out points",
                "title": f"Learning curves on the boolean cube $\\{{\\pm 1\\}}^{{{self.d}}}$ ({self.kind.upper()})"}

    def rows(self) -> list[dict]:
        """One table row per target: degree, eigenvalue, samples needed predicted and measured."""
        return [{"target": t.name, "degree": t.degree, "eigenvalue": t.eigenvalue,
                 "samples_needed_predicted": t.samples_needed_predicted,
                 "samples_needed_measured": t.samples_needed_measured} for t in self.targets.values()]


def _measured_sizes(n: int) -> np.ndarray:
    """Sizes from 4 up to N - 4, doubling, then closing in on N (where parity is learned)."""
    sizes = [4 * 2 ** i for i in range(int(math.log2(n)) - 2) if 4 * 2 ** i < n // 2]
    sizes += [n // 2, (3 * n) // 4, n - max(4, n // 16), n - 4]
    return np.unique(np.array([s for s in sizes if 1 <= s < n]))


def _walsh_name(subset) -> str:
    """x₁·x₂ for (0, 1); "constant 1" for ()."""
    return "·".join("x" + "".join(chr(0x2080 + int(c)) for c in str(i + 1)) for i in subset) or "constant 1"


def _degree_eigenvalues(spectrum, cube: torch.Tensor, d: int) -> dict[int, float]:
    """eta of Walsh degree k: the Rayleigh quotient ``chi^T K chi / (N chi^T chi)`` of chi_{0..k-1}."""
    K = spectrum.kernel_matrix()
    out = {}
    for k in range(d + 1):
        chi = walsh(cube, range(k))
        out[k] = float(chi @ K @ chi / (chi @ chi)) / cube.shape[0]
    return out


def cube_curves(arch=None, d: int = FULL["d"], *, kind: str = "ntk", fraction: float = 0.1, draws: int = FULL["draws"],
                seed: int = 0, train_networks: bool = False, steps: int = 2000, ensemble: int = 4,
                low_degree: tuple[int, ...] = (0, 1)) -> CubeCurves:
    """Learning curves of the low-degree Walsh function ``chi_S`` (``S = low_degree``, default x1·x2) and of
    parity on the whole cube {-1, +1}^d, predicted and measured; ``samples_needed`` at ``fraction`` of
    the target power. ``arch``: an architecture or spec (default :data:`DEFAULT_ARCH`). With
    ``train_networks``, ensembles of ``arch`` trained for ``steps`` at three of the measured sizes.
    Sizes: ``cube_curves(**QUICK)`` or ``cube_curves(**FULL)``.
    """
    start = time.perf_counter()
    if arch is None or isinstance(arch, str):
        arch = parse_spec(DEFAULT_ARCH if arch is None else arch)
    cube = boolean_cube(d)
    n = cube.shape[0]
    if n < 8:
        raise ValueError(f"d: the cube {{±1}}^{d} has {n} points; use d >= 3 for a learning curve")
    spectrum = pool_spectrum(arch, cube, kind)
    by_degree = _degree_eigenvalues(spectrum, cube, d)
    sizes, measured_sizes = np.arange(1, n), _measured_sizes(n)
    chosen = {_walsh_name(low_degree): tuple(low_degree), f"parity of {d} bits": tuple(range(d))}
    trained_sizes = measured_sizes[np.linspace(0, len(measured_sizes) - 2, 3).astype(int)] if train_networks else None
    targets, theory = {}, None
    for name, subset in chosen.items():
        y = walsh(cube, subset)
        theory = spectrum.curve(y, sizes)
        measured = spectrum.curve(y, measured_sizes, measured=True, draws=draws, seed=seed)
        trained = None
        if train_networks:
            trained = trained_learning_curve(arch, cube, y, trained_sizes, steps=steps, ensemble=ensemble, seed=seed)
        targets[name] = CubeTarget(
            name=name, degree=len(subset), eigenvalue=by_degree[len(subset)], target_power=theory.target_power,
            held_out=theory.held_out, predicted_at_measured=measured.held_out,
            measured_mean=measured.measured.mean, measured_std=measured.measured.std,
            samples_needed_predicted=theory.samples_needed(fraction, source="held_out"),
            samples_needed_measured=measured.samples_needed(fraction, source="measured"),
            trained_sizes=trained_sizes, trained_mean=None if trained is None else trained.mean,
            trained_std=None if trained is None else trained.std)
    return CubeCurves(d=d, n_pool=n, arch=str(arch), kind=kind, fraction=fraction, sizes=sizes,
                      measured_sizes=measured_sizes, draws=draws, targets=targets, learnability=theory.learnability,
                      eigenvalues=theory.eigenvalues, degree_eigenvalues=by_degree,
                      seconds=time.perf_counter() - start)
