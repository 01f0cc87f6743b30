"""Will this trained network match the kernel's prediction, and if not, why?

``diagnose`` trains a small ensemble of the finite network and checks, with figures, the
reasons MATH.md section 4 lists for a trained network to disagree with its NTK:

- ``learning_rate``: η against the stable maximum 2m/λ_max of the analytic NTK and of each
  network's empirical NTK. Above it the linearised dynamics diverge along the top mode and
  the network leaves the kernel regime (it diverges, or "catapults" into feature learning:
  Lewkowycz et al. 2020).
- ``unconverged_modes``: mode i is learned once ηλ_i t/m exceeds a few; small-eigenvalue modes
  may not be, so the network is still far from the kernel's converged prediction.
- ``conditioning``: the finite-width (empirical) NTK can be far worse conditioned than the
  analytic one (1-D inputs with small biases), so its small modes are learned much later.
- ``kernel_drift``: the empirical NTK's relative change during training; the kernel
  description assumes it stays put (lazy training).
- ``ensemble_mean``: the trained ensemble's mean on the test inputs against the Lee et al.
  (2019) GD-ensemble mean ± std of infinitely wide networks at the same time.

The checks answer three questions, each with its own verdict (``Diagnosis.verdicts``):

1. does the trained ensemble match the kernel's prediction at this time? (``ensemble_mean``) —
   the headline;
2. has training converged? (``unconverged_modes``) — a network can match the kernel's
   prediction at time t while both are still far from the labels;
3. will it keep matching? (``learning_rate``, ``conditioning``, ``kernel_drift``) — what makes a
   later or longer run depart from the kernel.

Informational notes: the size of the initial function f0 (single networks scatter around the
kernel mean by the Lee et al. std) and each network's distance from the infinite-width closed
form started at its own f0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ntkprior.data import Summarized, as_inputs, as_labels
from ntkprior.dynamics.linearized import max_stable_learning_rate
from ntkprior.prior.linalg import SymmetricPSD
from ntkprior.prior.prior import predict
from ntkprior.dynamics.training import TrainResult, rms, same_f0_prediction, train

#: a mode counts as learned once η λ t / m reaches this (its residual is then e^-3 ≈ 5 % of the start)
LEARNED = 3.0
#: training counts as unconverged when more than this fraction of RMS(y) is left in the residual
RESIDUAL_TOL = 0.1
#: the empirical kernel is "far worse conditioned" beyond this ratio of condition numbers
CONDITION_RATIO = 10.0
#: largest tolerated relative change of the empirical NTK during training (lazy regime)
DRIFT_TOL = 0.1
#: ensemble mean vs Lee et al. mean: allowed |gap| = MEAN_Z · σ/√E + MEAN_BIAS · RMS(y)
MEAN_Z, MEAN_BIAS = 3.0, 0.1


#: question -> (the checks that answer it, its wording when yes, when no)
QUESTIONS = {
    "matches_kernel": (("ensemble_mean",), "the trained ensemble matches the kernel's prediction at this time",
                       "the trained ensemble does NOT match the kernel's prediction at this time"),
    "converged": (("unconverged_modes",), "training has converged", "training has not converged"),
    "keeps_matching": (("learning_rate", "conditioning", "kernel_drift"),
                       "nothing predicts a departure from the kernel in longer training",
                       "it may not keep matching"),
}


@dataclass
class Check:
    """One question of the diagnosis: its name, whether it passed, and a sentence with its figures."""

    name: str
    passed: bool
    sentence: str


@dataclass(repr=False)
class Diagnosis(Summarized):
    """The verdict of :func:`diagnose` and the figures behind it.

    ``verdicts`` answers the three questions of :data:`QUESTIONS` (``matches_kernel``, the
    headline; ``converged``; ``keeps_matching``), each True when all of its checks passed.
    ``in_kernel_regime`` is True when the ensemble matches the kernel, the learning rate is stable
    and the kernel stays put (lazy training); conditioning and convergence do not decide it.
    ``reasons`` holds the sentences of the failed checks (empty otherwise), ``checks`` all of them,
    ``notes`` informational sentences.
    Arrays over networks have the ensemble as first axis; eigenvalues and per-mode figures are
    in descending eigenvalue order. RMS figures are relative to RMS(y_train).

    Figures
    -------
    learning_rate, steps, width (None: the architecture's own), m (= n·k training outputs)
    max_stable_lr_analytic : 2m/λ_max of the analytic NTK.
    max_stable_lr_empirical : (E,) the same for each network's empirical NTK at initialisation.
    eigenvalues_analytic : (n,); eigenvalues_empirical : (E, n).
    mode_convergence_analytic : (n,) ηλ_i t/m; mode_convergence_empirical : (E, n).
    label_share : (n,) share of ‖y‖² along each analytic eigenvector.
    condition_analytic : float; condition_empirical : (E,).
    unlearned_analytic : RMS of the residual left at t by the infinite-width linearised network
        started at f0 = 0 (discrete GD, stable modes only), relative to RMS(y).
    train_residual : (E,) RMS(f_t(X) − y) / RMS(y) of the trained networks.
    kernel_drift : (E,) ‖Θ̂_t − Θ̂_0‖_F / ‖Θ̂_0‖_F. param_change : (E,) ‖θ_t − θ_0‖ / ‖θ_0‖.
    f0_size : (E,) RMS(f0(X*)) / RMS(y).
    diverged : number of networks whose training loss became non-finite.
    network_distance : (E,) RMS(f_t(X*) − f_lin,t(X*)) / RMS(y), against the analytic closed form
        from the network's own f0.
    ensemble_mean : (n*, k) mean of the trained networks' test outputs.
    lee_mean : (n*, k), lee_std : (n*,) Lee et al. GD-ensemble mean and std at t (gradient flow).
    mean_gap : largest |ensemble_mean − lee_mean| / (MEAN_Z σ/√E + MEAN_BIAS RMS(y)); ≤ 1 passes.
    training : the TrainResult of the ensemble.
    """

    reasons: list[str]
    checks: list[Check]
    notes: list[str]
    learning_rate: float
    steps: int
    width: int | None
    m: int
    max_stable_lr_analytic: float
    max_stable_lr_empirical: np.ndarray
    eigenvalues_analytic: np.ndarray
    eigenvalues_empirical: np.ndarray
    mode_convergence_analytic: np.ndarray
    mode_convergence_empirical: np.ndarray
    label_share: np.ndarray
    condition_analytic: float
    condition_empirical: np.ndarray
    unlearned_analytic: float
    train_residual: np.ndarray
    kernel_drift: np.ndarray
    param_change: np.ndarray
    f0_size: np.ndarray
    diverged: int
    network_distance: np.ndarray
    ensemble_mean: np.ndarray
    lee_mean: np.ndarray
    lee_std: np.ndarray
    mean_gap: float
    training: TrainResult = field(repr=False)

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks."""
        return [c.name for c in self.checks if not c.passed]

    @property
    def in_kernel_regime(self) -> bool:
        """The ensemble matches the kernel, the learning rate is stable and the kernel stays put."""
        return not {"ensemble_mean", "learning_rate", "kernel_drift"} & set(self.failed)

    @property
    def verdicts(self) -> dict[str, bool]:
        """question -> True when every check answering it passed (see :data:`QUESTIONS`)."""
        return {q: not set(names) & set(self.failed) for q, (names, _, _) in QUESTIONS.items()}

    def answers(self) -> list[str]:
        """One sentence per question, the headline first, naming the failed checks."""
        out = []
        for q, ok in self.verdicts.items():
            names, yes, no = QUESTIONS[q]
            failed = [n for n in names if n in self.failed]
            out.append(yes if ok else f"{no} ({', '.join(failed)})")
        return out

    def summary(self) -> dict:
        """The verdict, checks and figures as a JSON-ready dict (without the training record)."""
        return {"in_kernel_regime": self.in_kernel_regime, "verdicts": self.verdicts, "answers": self.answers(),
                "reasons": self.reasons,
                "checks": [{"name": c.name, "passed": c.passed, "sentence": c.sentence} for c in self.checks],
                "notes": self.notes, "m": self.m, "max_stable_lr_analytic": self.max_stable_lr_analytic,
                "max_stable_lr_empirical": self.max_stable_lr_empirical,
                "condition_analytic": self.condition_analytic, "condition_empirical": self.condition_empirical,
                "kernel_drift": self.kernel_drift, "param_change": self.param_change,
                "train_residual": self.train_residual, "mean_gap": self.mean_gap,
                "mode_convergence_analytic": self.mode_convergence_analytic,
                "eigenvalues_analytic": self.eigenvalues_analytic,
                "ensemble_mean": np.asarray(self.ensemble_mean).reshape(-1),
                "lee_mean": np.asarray(self.lee_mean).reshape(-1), "lee_std": self.lee_std}

    def __str__(self) -> str:
        size = f"width {self.width}, " if self.width is not None else ""
        head = (f"Diagnosis ({size}{self.training.ensemble} networks, {self.steps} steps, "
                f"learning_rate={self.learning_rate:g}): ")
        answers = self.answers()
        lines = [head + answers[0]] + [f"  {a}" for a in answers[1:]]
        lines += [f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.sentence}" for c in self.checks]
        lines += [f"  note {n}" for n in self.notes]
        return "\n".join(lines)


def diagnose(arch, x_train, y_train, x_test, steps: int, learning_rate: float, *, width: int | None = None,
             seed: int = 0, ensemble: int = 8, dtype: torch.dtype = torch.float64,
             progress: bool = False) -> Diagnosis:
    """Train ``ensemble`` networks of ``arch`` (at hidden ``width`` if given) for ``steps`` steps of
    full-batch gradient descent on ``½ · mean`` squared error, and say whether they match the
    kernel's prediction — and if not, why — with the figures behind each answer.

    The analytic figures come from ``arch.kernel``; the empirical ones from each network's NTK at
    initialisation (``ntkprior.kernels.empirical``); the reference prediction is the Lee et al. (2019)
    GD-ensemble mean ± std at time t = ``steps`` (``ntkprior.prior.prior.predict``). The checks and their
    thresholds are the module constants (see the module docstring).
    """
    if x_test is None:
        raise ValueError("x_test: the diagnosis compares predictions on test inputs; pass x_test")
    net = arch if width is None else arch.with_width(width)
    x_train = as_inputs(x_train, "x_train")
    y = as_labels(y_train, x_train.shape[0], "y_train")
    x_test = as_inputs(x_test, "x_test")
    result = train(net, x_train, y, x_test, steps, learning_rate, seed, ensemble=ensemble,
                   record=[0, steps], dtype=dtype, progress=progress)
    theta = SymmetricPSD(net.kernel(x_train).ntk, "analytic NTK of the training inputs")
    with warnings.catch_warnings():        # the diagnosis reports an unstable learning rate itself
        warnings.simplefilter("ignore", UserWarning)
        lee = predict(net, x_train, y, x_test, kind="gd-ensemble", t=steps, learning_rate=result.learning_rate)
        lin = same_f0_prediction(theta, net.kernel(x_test, x_train).ntk, y, result)
    return _assess(result, theta, y, lee, lin, width, x_test)


def _assess(result: TrainResult, theta: SymmetricPSD, y: torch.Tensor, lee, lin, width,
            x_test: torch.Tensor) -> Diagnosis:
    lr, steps, m = result.learning_rate, int(result.steps[-1]), y.numel()
    scale = float(rms(y))
    lam, vec = (a.flip(-1) for a in theta.eigh())
    empirical = [SymmetricPSD(k, f"empirical NTK of network {i}") for i, k in enumerate(result.initial_kernel)]
    lam_emp = torch.stack([psd.eigh()[0].flip(0) for psd in empirical])
    lr_max = max_stable_learning_rate(theta, m)
    f = dict(
        learning_rate=lr, steps=steps, width=width, m=m, max_stable_lr_analytic=lr_max,
        max_stable_lr_empirical=np.array([max_stable_learning_rate(psd, m) for psd in empirical]),
        eigenvalues_analytic=lam.numpy(), eigenvalues_empirical=lam_emp.numpy(),
        mode_convergence_analytic=(lr * lam * steps / m).numpy(),
        mode_convergence_empirical=(lr * lam_emp * steps / m).numpy(),
        label_share=((vec.T @ y).pow(2).sum(1) / y.pow(2).sum()).numpy(),
        condition_analytic=_condition(lam), condition_empirical=np.array([_condition(l) for l in lam_emp]),
        unlearned_analytic=_unlearned(lam, vec, y, lr, steps, m) / scale,
        train_residual=(rms(result.train_outputs[:, -1] - y) / scale).numpy(),
        kernel_drift=result.kernel_change[:, -1].numpy(), param_change=result.param_change[:, -1].numpy(),
        f0_size=(rms(result.test_outputs[:, 0]) / scale).numpy(),
        diverged=int((result.diverged_at >= 0).sum()),
        network_distance=_network_distance(result, lin, scale, lr < lr_max),
        ensemble_mean=result.test_outputs[:, -1].mean(0).numpy(),
        lee_mean=lee.mean.reshape(lin.shape[1:]).numpy(), lee_std=lee.std.numpy(),
    )
    e = result.ensemble
    allowed = MEAN_Z * f["lee_std"][:, None] / math.sqrt(e) + MEAN_BIAS * scale
    gaps = np.abs(f["ensemble_mean"] - f["lee_mean"]) / allowed
    f["mean_gap"] = float(np.max(gaps)) if np.all(np.isfinite(gaps)) else math.inf
    checks = [_check_learning_rate(f), _check_convergence(f), _check_conditioning(f),
              _check_drift(f), _check_ensemble_mean(f, gaps, allowed, e, x_test)]
    reasons = [c.sentence for c in checks if not c.passed]
    return Diagnosis(reasons=reasons, checks=checks, notes=_notes(f, e),
                     training=result, **f)


def _network_distance(result: TrainResult, lin: torch.Tensor, scale: float, stable: bool) -> np.ndarray:
    """RMS(f_t(X*) − f_lin,t(X*)) / RMS(y) per network; NaN where the closed form diverges."""
    if not stable:
        return np.full(result.ensemble, math.nan)
    return (rms(result.test_outputs[:, -1] - lin) / scale).numpy()


def _finite(values: np.ndarray, reduce=np.median) -> float:
    """``reduce`` over the finite values (diverged networks give NaN/inf); NaN when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(reduce(v)) if v.size else math.nan


def _condition(lam_desc: torch.Tensor) -> float:
    return math.inf if float(lam_desc[-1]) <= 0 else float(lam_desc[0] / lam_desc[-1])


def _unlearned(lam, vec, y, lr, steps, m) -> float:
    """RMS residual left after ``steps`` discrete steps from f0 = 0, over the stable modes
    (|1 − ηλ/m| < 1; the unstable ones are the learning-rate check's business)."""
    factor = 1 - lr * lam / m
    stable = factor.abs() < 1
    left = (factor.abs() ** steps)[:, None] * (vec.T @ y)
    return float(left[stable].pow(2).sum().div(y.numel()).sqrt())


def _check_learning_rate(f: dict) -> Check:
    lr, analytic, empirical = f["learning_rate"], f["max_stable_lr_analytic"], f["max_stable_lr_empirical"]
    over, diverged = int((lr >= empirical).sum()), f["diverged"]
    passed = lr < analytic and over == 0 and diverged == 0
    figures = (f"2m/λ_max = {analytic:.4g} for the analytic NTK (λ_max = {f['eigenvalues_analytic'][0]:.4g}, "
               f"m = {f['m']}) and {empirical.min():.4g}-{empirical.max():.4g} for the {len(empirical)} "
               "networks' empirical NTKs")
    if passed:
        return Check("learning_rate", True, f"learning rate {lr:g} is below the stable maximum: {figures}.")
    safe = 0.9 * min(analytic, float(empirical.min()))
    consequence = (f"{diverged} network(s) diverged" if diverged else
                   f"the networks escape the kernel regime instead (their NTK moved by up to "
                   f"{_finite(f['kernel_drift'], np.max):.0%})")
    return Check("learning_rate", False,
                 f"learning rate {lr:g} is at or above the largest stable rate, {figures} ({over} of "
                 f"{len(empirical)} over): the linearised dynamics multiply the top mode by "
                 f"1 − ηλ_max/m = {1 - lr * f['eigenvalues_analytic'][0] / f['m']:.2f} per step and diverge, "
                 f"so {consequence}. Use learning_rate below about {safe:.3g}.")


def _check_convergence(f: dict) -> Check:
    residual = _finite(f["train_residual"])
    slow_analytic = [i for i, (c, s) in enumerate(zip(f["mode_convergence_analytic"], f["label_share"]))
                     if c < LEARNED and s > 0.01]
    slow_empirical = (f["mode_convergence_empirical"] < LEARNED).sum(axis=1)
    if math.isnan(residual):
        return Check("unconverged_modes", False, "convergence cannot be assessed: every network diverged.")
    passed = residual <= RESIDUAL_TOL and f["unlearned_analytic"] <= RESIDUAL_TOL
    modes = (", ".join(f"{i + 1} (ηλt/m = {f['mode_convergence_analytic'][i]:.2g}, {f['label_share'][i]:.0%} of ‖y‖²)"
                       for i in slow_analytic) or "none")
    slowest = float(np.min(f["mode_convergence_empirical"][:, -1]))
    figures = (f"after {f['steps']} steps the trained networks leave {residual:.1%} of the labels unfit "
               f"(RMS residual / RMS y, median), the infinite-width network {f['unlearned_analytic']:.1%}; "
               f"analytic modes with ηλt/m < {LEARNED:g} carrying labels: {modes}; the empirical NTKs "
               f"have {int(np.median(slow_empirical))} such mode(s) (median), the slowest at ηλ̂t/m = "
               + (f"{slowest:.2g}" if slowest > 0 else
                  f"{slowest:.2g} (the empirical NTK is numerically singular: its smallest eigenvalue is ≤ 0)"))
    if passed:
        return Check("unconverged_modes", True, f"training has converged: {figures}.")
    if f["unlearned_analytic"] >= 0.5 * residual:
        figures += ("; the infinite-width network is as unconverged at this time, so this is not a departure "
                    "from the kernel's prediction, only an unfinished fit")
    lam_min = float(np.median(f["eigenvalues_empirical"][:, -1]))
    needed = LEARNED * f["m"] / (f["learning_rate"] * lam_min) if lam_min > 0 else math.inf
    return Check("unconverged_modes", False,
                 f"training has not converged along small-eigenvalue modes: {figures}. The slowest modes "
                 f"need about {needed:.3g} steps (ηλ_min t/m = {LEARNED:g}).")


def _check_conditioning(f: dict) -> Check:
    emp, ana = float(np.median(f["condition_empirical"])), f["condition_analytic"]
    ratio = emp / ana
    passed = ratio <= CONDITION_RATIO
    figures = (f"condition number {_cond_text(emp)} (median over networks) against {_cond_text(ana)} "
               f"analytic{'' if math.isinf(ratio) else f' (×{ratio:.3g})'}; smallest eigenvalue "
               f"{np.median(f['eigenvalues_empirical'][:, -1]):.3g} against {f['eigenvalues_analytic'][-1]:.3g}")
    if passed:
        return Check("conditioning", True, f"the finite-width NTK is about as well conditioned as the analytic one: {figures}.")
    return Check("conditioning", False,
                 f"the finite-width NTK is far worse conditioned than the analytic one: {figures}; directions "
                 "the infinite network learns quickly, the finite one learns slowly or not at all "
                 "(a wider network or larger biases help).")


def _cond_text(cond: float) -> str:
    return "∞ (numerically singular)" if math.isinf(cond) else f"{cond:.3g}"


def _check_drift(f: dict) -> Check:
    drift = _finite(f["kernel_drift"], np.max)
    if math.isnan(drift):
        return Check("kernel_drift", False, "the kernel's motion cannot be assessed: every network diverged.")
    passed = drift <= DRIFT_TOL and f["diverged"] == 0
    figures = (f"the empirical NTK moved by {drift:.2%} during training (relative Frobenius, largest over "
               f"networks{_diverged_note(f)}; parameters by {_finite(f['param_change'], np.max):.2%})")
    if passed:
        return Check("kernel_drift", True, f"{figures}: training is lazy.")
    return Check("kernel_drift", False,
                 f"{figures}, more than {DRIFT_TOL:.0%}: the networks learn features, a fixed kernel does "
                 "not describe their training.")


def _diverged_note(f: dict) -> str:
    return f" that did not diverge; {f['diverged']} did" if f["diverged"] else ""


def _input_name(x_test: torch.Tensor, j: int) -> str:
    """A test input as a reader can find it: a vector by its value (up to three coordinates), a
    signal or an image by its number."""
    if x_test.ndim > 2:
        return f"at test input {j + 1} of {x_test.shape[0]}"
    x = x_test[j].tolist()
    if len(x) == 1:
        return f"at x = {x[0]:.4g}"
    coords = ", ".join(f"{v:.3g}" for v in x[:3]) + (", ..." if len(x) > 3 else "")
    return f"at test input {j + 1} of {x_test.shape[0]}, x = ({coords})"


def _check_ensemble_mean(f: dict, gaps: np.ndarray, allowed: np.ndarray, e: int, x_test: torch.Tensor) -> Check:
    if f["diverged"]:
        return Check("ensemble_mean", False, f"the ensemble mean is not finite: {f['diverged']} of {e} "
                     "networks diverged.")
    passed = f["mean_gap"] <= 1.0
    j = np.unravel_index(np.nanargmax(np.where(np.isfinite(gaps), gaps, np.inf)), gaps.shape)
    diff = abs(f["ensemble_mean"][j] - f["lee_mean"][j])
    figures = (f"the mean of the {e} trained networks differs from the Lee et al. GD-ensemble mean by up to "
               f"{diff:.3g} ({_input_name(x_test, j[0])}, Lee et al. std {f['lee_std'][j[0]]:.3g}; allowed "
               f"{MEAN_Z:g}σ/√{e} + {MEAN_BIAS:g}·RMS(y) = {np.broadcast_to(allowed, gaps.shape)[j]:.3g})")
    if passed:
        return Check("ensemble_mean", True, f"{figures}.")
    return Check("ensemble_mean", False, f"{figures}: the trained networks do not follow the kernel's prediction.")


def _notes(f: dict, e: int) -> list[str]:
    f0 = float(np.median(f["f0_size"]))
    notes = [f"f0: the networks' initial functions have RMS {f0:.2g}× RMS(y) on the test inputs: a single network "
             f"scatters around the kernel mean with the Lee et al. std (up to {np.max(f['lee_std']):.3g} here); "
             "compare ensembles, or subtract f0."]
    distance = _finite(f["network_distance"])
    if math.isnan(distance):
        notes.append("single networks cannot be compared with the infinite-width closed form: at this "
                     "learning rate it diverges.")
    else:
        notes.append(f"single networks are {distance:.1%} of RMS(y) (median) from the "
                     "infinite-width closed form started at their own f0.")
    return notes
