"""Matplotlib figures of kernel spectra, eigenfunctions, posteriors, learning curves and width sweeps.

Each function takes the numbers (numpy arrays or torch tensors, as returned by the library) and
returns a :class:`matplotlib.figure.Figure`; nothing here computes a result. The figures are
created without ``pyplot``, so they never open a window and work under any backend: save one with
``fig.savefig("spectrum.png")``, or show it in a notebook by leaving it as the cell's value.

Defaults: labelled axes, legends, the Okabe–Ito colour-blind-safe palette for categories and the
``cividis`` colour map (readable with any colour vision) for ordered families such as eigenmodes.

Examples
--------
>>> modes = eigenmodes(arch, x)                                      # doctest: +SKIP
>>> plots.spectrum({"NTK": modes.values}).savefig("spectrum.png")    # doctest: +SKIP
>>> plots.eigenfunctions(x, modes.vectors, eigenvalues=modes.values) # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["OKABE_ITO", "spectrum", "eigenfunctions", "eigenmode_overview", "posterior_bands",
           "candidate_log_probs", "trained_vs_kernel", "mode_learning_curves", "width_sweep",
           "walsh_spectrum", "rkhs_norms", "mode_contributions"]

#: The Okabe–Ito palette (Okabe & Ito 2008), distinguishable with every common colour-vision deficiency.
OKABE_ITO = {"blue": "#0072B2", "vermillion": "#D55E00", "green": "#009E73", "orange": "#E69F00",
             "purple": "#CC79A7", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000"}
#: Category colours in the order they are used (yellow last: it is faint on white).
CYCLE = tuple(OKABE_ITO[c] for c in ("blue", "vermillion", "green", "orange", "purple", "sky",
                                     "black", "yellow"))
SEQUENTIAL = "cividis"

_STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.6, "axes.spines.top": False, "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=CYCLE), "lines.linewidth": 1.6,
    "legend.frameon": False, "savefig.dpi": 120, "savefig.bbox": "tight",
}


def _styled(fn):
    """Run a figure function under the package style (rc parameters are read when artists are made)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.0, **kwargs):
    """A constrained-layout figure and a 2-D array of its axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _array(a, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """A float numpy array from a tensor / array / list, with an optional check of its dimension."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    out = np.asarray(a, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and out.ndim not in allowed:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in allowed)} data, "
                         f"got shape {out.shape}")
    return out


def _named(values, name: str, default: str) -> dict[str, np.ndarray]:
    """``{label: 1-D array}`` from a mapping or a single array."""
    items = values.items() if isinstance(values, Mapping) else [(default, values)]
    out = {str(k): _array(v, f"{name}[{k!r}]", 1) for k, v in items}
    if not out:
        raise ValueError(f"{name}: nothing to plot; pass at least one array")
    return out


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_b}: has {b.shape[0]} entries but {name_a} has {a.shape[0]}; "
                         "pass one value per point")


def _finish(fig: Figure, title: str | None) -> Figure:
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


# ================================================================================== spectra
def _draw_spectrum(ax, spectra: dict[str, np.ndarray], floor: float | None) -> None:
    for i, (label, values) in enumerate(spectra.items()):
        index = np.arange(1, values.shape[0] + 1)
        positive = values > 0
        ax.semilogy(index[positive], values[positive], "o-", ms=3, color=CYCLE[i % len(CYCLE)],
                    label=label)
    if floor is not None:
        ax.axhline(floor, color=OKABE_ITO["black"], ls=":", lw=1,
                   label=f"round-off level ({floor:.1e})")
    ax.set_xlabel("eigenvalue index i (largest first)")
    ax.set_ylabel("eigenvalue λᵢ of the Gram matrix")
    ax.legend()


@_styled
def spectrum(values, *, title: str | None = None, floor: float | None = None) -> Figure:
    """Eigenvalues against their index on a log scale, one line per kernel.

    ``values``: a descending 1-D array, or ``{label: array}`` to compare kernels. ``floor``: an
    optional level (e.g. ``n * eps * lambda_max``) drawn as a dotted line; eigenvalues below it are
    round-off. Zero eigenvalues are left out (log scale).
    """
    fig, axes = _figure()
    _draw_spectrum(axes[0, 0], _named(values, "values", "eigenvalues"), floor)
    return _finish(fig, title)


def _draw_waterfall(ax, x: np.ndarray, vectors: np.ndarray, eigenvalues, sign_changes,
                    max_modes: int, xlabel: str, connect: bool = True) -> None:
    order = np.argsort(x, kind="stable")
    k = min(max_modes, vectors.shape[1])
    colors = matplotlib.colormaps[SEQUENTIAL](np.linspace(0.0, 0.85, max(k, 2)))
    labels = []
    for i in range(k):
        v = vectors[order, i]
        scale = np.abs(v).max() or 1.0
        ax.axhline(-i, color="0.8", lw=0.6, zorder=1)
        ax.plot(x[order], -i + 0.42 * v / scale, "-" if connect else "o", color=colors[i], lw=1.5, ms=3,
                zorder=2)
        text = f"v{i + 1}"
        if eigenvalues is not None:
            text += f"  λ={eigenvalues[i]:.3g}"
        if sign_changes is not None:
            text += f"\n{int(sign_changes[i])} sign change{'s' if sign_changes[i] != 1 else ''}"
        labels.append(text)
    ax.set_yticks(-np.arange(k), labels, fontsize=7.5)
    ax.set_ylim(-k + 0.45, 0.55)
    ax.grid(False, axis="y")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eigenvector vᵢ (each scaled to the same height)")


def _eigen_arrays(x, vectors, eigenvalues, sign_changes):
    x = _array(x, "x", (1, 2))
    if x.ndim == 2:
        if x.shape[1] != 1:
            raise ValueError(f"x: eigenfunctions are drawn against a 1-D coordinate; got inputs of "
                             f"shape {x.shape}: pass x[:, 0], a principal coordinate or the index")
        x = x[:, 0]
    vectors = _array(vectors, "vectors", 2)
    _same_length(x, vectors, "x", "vectors")
    values = None if eigenvalues is None else _array(eigenvalues, "eigenvalues", 1)
    changes = None if sign_changes is None else _array(sign_changes, "sign_changes", 1)
    return x, vectors, values, changes


@_styled
def eigenfunctions(x, vectors, *, eigenvalues=None, sign_changes=None, max_modes: int = 8,
                   xlabel: str = "input x", connect: bool = True, title: str | None = None) -> Figure:
    """The first ``max_modes`` eigenvectors drawn as functions of the 1-D input, one above the other.

    ``x`` (n,) or (n, 1); ``vectors`` (n, k), column i the i-th eigenvector (largest eigenvalue
    first). Each curve is scaled to the same height; its label gives the eigenvalue and, when
    given, the number of sign changes (on an interval the i-th has about i - 1: MATH.md section 5).
    ``connect=False`` draws points, for x a coordinate of higher-dimensional inputs.
    """
    x, vectors, values, changes = _eigen_arrays(x, vectors, eigenvalues, sign_changes)
    k = min(max_modes, vectors.shape[1])
    fig, axes = _figure(width=6.4, height=1.0 + 0.62 * k)
    _draw_waterfall(axes[0, 0], x, vectors, values, changes, max_modes, xlabel, connect)
    return _finish(fig, title)


@_styled
def eigenmode_overview(panels: Mapping[str, Mapping], *, max_modes: int = 8, xlabel: str = "input x",
                       connect: bool = True, title: str | None = None) -> Figure:
    """Kernels side by side: the spectrum on top and the first eigenvectors below, one column each.

    ``panels``: ``{column title: {"x", "values", "vectors", optional "sign_changes", "floor"}}``;
    ``connect``: as in :func:`eigenfunctions`.
    """
    if not panels:
        raise ValueError("panels: nothing to plot; pass {title: {'x': ..., 'values': ..., 'vectors': ...}}")
    k = max_modes
    fig, axes = _figure(2, len(panels), width=4.3 * len(panels), height=3.2 + 0.62 * k,
                        gridspec_kw={"height_ratios": [3.0, 0.62 * k]})
    for j, (name, p) in enumerate(panels.items()):
        missing = {"x", "values", "vectors"} - set(p)
        if missing:
            raise ValueError(f"panels[{name!r}]: missing {sorted(missing)}")
        x, vectors, values, changes = _eigen_arrays(p["x"], p["vectors"], p["values"], p.get("sign_changes"))
        _draw_spectrum(axes[0, j], {"eigenvalues": values}, p.get("floor"))
        axes[0, j].set_title(name)
        _draw_waterfall(axes[1, j], x, vectors, values, changes, max_modes, xlabel, connect)
        if j:
            axes[0, j].set_ylabel("")
            axes[1, j].set_ylabel("")
    return _finish(fig, title)


@_styled
def eigenvector_maps(xy, vectors, *, eigenvalues=None, max_modes: int = 8, xlabel: str = "x₁",
                     ylabel: str = "x₂", title: str | None = None) -> Figure:
    """Eigenvectors over 2-D inputs: one scatter panel per mode, each input coloured by the
    eigenvector's value there (a diverging map centred at 0, so sign changes are the colour flips).

    ``xy`` (n, 2): the inputs, or two coordinates of them (e.g. the first two principal
    coordinates of higher-dimensional inputs); ``vectors`` (n, k), largest eigenvalue first.
    """
    xy = _array(xy, "xy", 2)
    if xy.shape[1] != 2:
        raise ValueError(f"xy: expected 2 coordinates per input, got shape {xy.shape}")
    vectors = _array(vectors, "vectors", 2)
    _same_length(xy, vectors, "xy", "vectors")
    values = None if eigenvalues is None else _array(eigenvalues, "eigenvalues", 1)
    k = min(max_modes, vectors.shape[1])
    ncols = min(4, k)
    nrows = -(-k // ncols)
    fig, axes = _figure(nrows, ncols, width=2.9 * ncols, height=2.7 * nrows + 0.5, sharex=True, sharey=True)
    for ax in axes.flat[k:]:
        ax.set_visible(False)
    for i in range(k):
        ax = axes.flat[i]
        v = vectors[:, i]
        v = v / (float(np.max(np.abs(v))) or 1.0)          # each mode on the one colour scale [-1, 1]
        points = ax.scatter(xy[:, 0], xy[:, 1], c=v, cmap="RdBu_r", vmin=-1.0, vmax=1.0, s=22,
                            edgecolors="0.3", linewidths=0.3)
        ax.set_title(f"mode {i + 1}" + ("" if values is None else f" (λ={values[i]:.3g})"), fontsize=9)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)
        if i // ncols == nrows - 1 or i + ncols >= k:
            ax.set_xlabel(xlabel)
    fig.colorbar(points, ax=axes.ravel().tolist(), shrink=0.8, label="eigenvector value / its largest |value|")
    return _finish(fig, title)


# ================================================================================== posteriors
def _draw_training_points(ax, x_train, y_train) -> None:
    ax.plot(x_train, y_train, "o", color=OKABE_ITO["black"], ms=6, zorder=5, label="training points")


def _draw_band(ax, x, mean, std, n_std: float, color, label: str, connect: bool) -> None:
    """Mean and ± n_std band: a line and a shaded band, or (connect=False) points with error bars."""
    if not connect:
        ax.errorbar(x, mean, yerr=None if std is None else n_std * std, fmt="o", ms=4, color=color,
                    elinewidth=1, capsize=2, label=label if std is None else f"{label} ± {n_std:g} std",
                    zorder=3)
        return
    ax.plot(x, mean, color=color, lw=2, label=label, zorder=3)
    if std is not None:
        ax.fill_between(x, mean - n_std * std, mean + n_std * std, color=color, alpha=0.22, lw=0,
                        label=f"± {n_std:g} std", zorder=2)


def _xy(x, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = _array(x, f"{name} x", (1, 2)).reshape(-1)
    y = _array(y, f"{name} y", (1, 2)).reshape(-1)
    _same_length(x, y, f"{name} x", f"{name} y")
    return x, y


@_styled
def posterior_bands(x, posteriors: Mapping[str, tuple], *, x_train, y_train,
                    candidates: Mapping[str, tuple] | None = None, truth: tuple | None = None,
                    n_std: float = 2.0, xlabel: str = "input x", ylabel: str = "output f(x)",
                    connect: bool = True, title: str | None = None) -> Figure:
    """Posterior mean ± ``n_std`` standard deviations over 1-D inputs, one panel per posterior.

    ``posteriors``: ``{name: (mean, std)}`` on the points ``x`` (std may be None); the training
    points are drawn in black, ``truth = (x, y)`` as a dashed line (e.g. the noiseless target),
    and ``candidates = {label: (x*, y*)}`` as markers (candidate test labels). ``connect=False``
    draws points with error bars instead of a line and a band (for x a coordinate of
    higher-dimensional inputs, e.g. the principal one, where neighbours need not be close).
    """
    x = _array(x, "x", (1, 2)).reshape(-1)
    xt, yt = _xy(x_train, y_train, "training")
    if not posteriors:
        raise ValueError("posteriors: nothing to plot; pass {name: (mean, std)}")
    order = np.argsort(x, kind="stable")
    fig, axes = _figure(1, len(posteriors), width=4.2 * len(posteriors), height=3.8, sharey=True)
    for j, (name, (mean, std)) in enumerate(posteriors.items()):
        ax = axes[0, j]
        mean = _array(mean, f"posteriors[{name!r}] mean", 1)
        _same_length(x, mean, "x", f"posteriors[{name!r}] mean")
        std = None if std is None else _array(std, f"posteriors[{name!r}] std", 1)
        _draw_band(ax, x[order], mean[order], None if std is None else std[order], n_std,
                   CYCLE[j % len(CYCLE)], "posterior mean", connect)
        if truth is not None:
            tx, ty = _xy(*truth, "truth")
            ax.plot(tx, ty, "--", color="0.45", lw=1.2, label="noiseless target", zorder=1)
        _draw_training_points(ax, xt, yt)
        _draw_candidates(ax, candidates or {}, float(np.ptp(x)) if x.size else 1.0)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        if j == 0:
            ax.set_ylabel(ylabel)
    _legend_below(fig, axes[0, 0])
    return _finish(fig, title)


def _draw_candidates(ax, candidates: Mapping[str, tuple], x_range: float) -> None:
    """Candidate labelings as open diamonds, each set nudged sideways so that sets at one input stay apparent."""
    c = len(candidates)
    for i, (label, (cx, cy)) in enumerate(candidates.items()):
        cx, cy = _xy(cx, cy, f"candidates[{label!r}]")
        nudge = (i - (c - 1) / 2) * 0.012 * x_range
        ax.plot(cx + nudge, cy, "D", ms=5.5, mfc="white", mew=1.5, color=CYCLE[(i + 3) % len(CYCLE)],
                label=label, zorder=6)


def _legend_below(fig: Figure, ax) -> None:
    """One legend for the whole figure, below the panels, from the handles of ``ax``; as many columns
    as fit the figure's width (about 1.7 inches each), so that no entry is clipped."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fits = max(1, int(fig.get_figwidth() // 1.7))
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles), fits))


@_styled
def candidate_log_probs(curves: Mapping[str, tuple], *, candidates: Mapping[str, tuple] | None = None,
                        peaks: Mapping[str, tuple] | None = None, xlabel: str = "candidate label y*",
                        ylabel: str = "log p(y* | training labels)",
                        title: str | None = None) -> Figure:
    """Log-probability of a candidate test label as a function of the label, one curve per test input.

    ``curves``: ``{test input: (labels, log_probs)}``; ``candidates``: ``{test input: (labels,
    log_probs)}`` drawn as diamonds; ``peaks``: ``{test input: (argmax label, peak value)}`` drawn as
    triangles and written in the legend. The left panel shows the whole range, the right one the
    tops of the curves: curves for different test inputs peak at different heights, so their values
    cannot be compared across inputs (MATH.md section 3).
    """
    if not curves:
        raise ValueError("curves: nothing to plot; pass {test input: (labels, log_probs)}")
    fig, axes = _figure(1, 2, width=10.5, height=4.0)
    tops = []
    for ax in axes[0]:
        for i, (name, (ys, lp)) in enumerate(curves.items()):
            color = CYCLE[i % len(CYCLE)]
            ys, lp = _xy(ys, lp, f"curves[{name!r}]")
            label = name
            if peaks and name in peaks:
                mu, peak = peaks[name]
                ax.plot([mu], [peak], "^", ms=8, color=color, zorder=5)
                label = f"{name}: peak {peak:.3g} at y* = {mu:.3g}"
                tops.append(peak)
            else:
                tops.append(float(np.max(lp)))
            ax.plot(ys, lp, color=color, label=label)
            if candidates and name in candidates:
                cy, clp = _xy(*candidates[name], f"candidates[{name!r}]")
                ax.plot(cy, clp, "D", ms=5.5, mfc="white", mew=1.5, color=color, zorder=6)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].set_title("all candidate labels")
    axes[0, 1].set_title("the tops of the curves")
    axes[0, 1].set_ylim(min(tops) - 3.0, max(tops) + 0.6)
    _legend_below(fig, axes[0, 0])
    return _finish(fig, title)


@_styled
def trained_vs_kernel(x, kernel_mean, kernel_std, trained: Mapping[str, object], *, x_train, y_train,
                      n_std: float = 2.0, kernel_label: str = "kernel prediction",
                      xlabel: str = "input x", ylabel: str = "output f(x)", connect: bool = True,
                      title: str | None = None) -> Figure:
    """Really trained networks over the kernel's prediction, one panel per ensemble (e.g. per width).

    ``kernel_mean``, ``kernel_std`` (n,) on ``x`` (the kernel's mean ± ``n_std`` std as a band);
    ``trained``: ``{panel title: outputs (ensemble, n)}`` — each member a thin line, their mean a
    dashed line. A single dict of kernel predictions per panel is also accepted:
    ``kernel_mean={title: mean}``, ``kernel_std={title: std}``. ``connect=False``: points, not lines
    (see :func:`posterior_bands`).
    """
    x = _array(x, "x", (1, 2)).reshape(-1)
    xt, yt = _xy(x_train, y_train, "training")
    if not trained:
        raise ValueError("trained: nothing to plot; pass {title: outputs (ensemble, n)}")
    order = np.argsort(x, kind="stable")
    ncols = 2 if len(trained) == 4 else min(len(trained), 3)
    nrows = -(-len(trained) // ncols)
    fig, axes = _figure(nrows, ncols, width=max(4.2 * ncols, 6.0), height=3.4 * nrows + 0.9, sharey=True)
    for ax in axes.flat[len(trained):]:
        ax.set_visible(False)
    for j, (name, outputs) in enumerate(trained.items()):
        ax = axes.flat[j]
        mean = kernel_mean[name] if isinstance(kernel_mean, Mapping) else kernel_mean
        std = kernel_std[name] if isinstance(kernel_std, Mapping) else kernel_std
        mean = _array(mean, "kernel_mean", 1)
        std = None if std is None else _array(std, "kernel_std", 1)
        _draw_band(ax, x[order], mean[order], None if std is None else std[order], n_std,
                   OKABE_ITO["blue"], kernel_label, connect)
        nets = _array(outputs, f"trained[{name!r}]", 2)
        if nets.shape[1] != x.shape[0]:
            raise ValueError(f"trained[{name!r}]: expected shape (ensemble, {x.shape[0]}), got {nets.shape}")
        member, average = ("-", "--") if connect else (".", "x")
        for i, net in enumerate(nets):
            ax.plot(x[order], net[order], member, color=OKABE_ITO["vermillion"], lw=0.9, alpha=0.6,
                    label="trained networks" if i == 0 else None, zorder=4)
        ax.plot(x[order], nets.mean(axis=0)[order], average, color=OKABE_ITO["vermillion"], lw=1.8,
                label="their mean", zorder=4)
        _draw_training_points(ax, xt, yt)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        if j % ncols == 0:
            ax.set_ylabel(ylabel)
    _legend_below(fig, axes[0, 0])
    return _finish(fig, title)


# ================================================================================== dynamics
@_styled
def mode_learning_curves(times, residuals, eigenvalues, *, measured_times=None, measured=None,
                         max_modes: int = 8, xlabel: str = "training step t",
                         ylabel: str = "|residual along mode i|", title: str | None = None) -> Figure:
    """How fast each eigenmode of the training residual is learned: ``|v_i · (f_t(X) - Y)|`` against t.

    ``residuals`` (T, M): the closed-form per-mode residual at ``times`` (T,); ``eigenvalues`` (M,)
    descending. Large-eigenvalue modes fall first (``e^{-eta lambda_i t / m}``). ``measured`` (T', M)
    at ``measured_times``: the same projections for a really trained network, drawn as markers.
    Time and residual are on log scales (t = 0 and exact zeros are not drawn).
    """
    times = _array(times, "times", 1)
    residuals = np.abs(_array(residuals, "residuals", 2))
    values = _array(eigenvalues, "eigenvalues", 1)
    _same_length(times, residuals, "times", "residuals")
    k = min(max_modes, residuals.shape[1], values.shape[0])
    # categorical colours: a mode's markers must be told apart from its neighbours' (a sequential
    # map made adjacent modes near-identical); each mode also gets its own marker shape
    colors, markers = [CYCLE[i % len(CYCLE)] for i in range(k)], "osD^vP*X"
    fig, axes = _figure(width=6.8, height=4.2)
    ax = axes[0, 0]
    keep = times > 0
    for i in range(k):
        ax.loglog(times[keep], np.where(residuals[keep, i] > 0, residuals[keep, i], np.nan),
                  color=colors[i], label=f"mode {i + 1} (λ={values[i]:.3g})", marker=markers[i % len(markers)],
                  markevery=[], mfc="none")      # the marker only in the legend: it names the mode's markers
    if measured is not None:
        mt = _array(measured_times, "measured_times", 1)
        meas = np.abs(_array(measured, "measured", 2))
        _same_length(mt, meas, "measured_times", "measured")
        keep = mt > 0
        for i in range(min(k, meas.shape[1])):
            ax.loglog(mt[keep], np.where(meas[keep, i] > 0, meas[keep, i], np.nan), markers[i % len(markers)],
                      ms=4, color=colors[i], mfc="none")
        ax.plot([], [], "o", mfc="none", color="0.3", label="trained network (markers)")
    top = np.nanmax(residuals[:, :k]) if residuals.size else 1.0
    if top > 0:
        ax.set_ylim(top * 1e-6, top * 3)     # below a millionth of the start a mode is learned
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower left", ncols=2)
    return _finish(fig, title)


@_styled
def width_sweep(widths, metrics: Mapping[str, object], exponents: Mapping[str, float] | None = None,
                *, xlabel: str = "hidden width n", ylabel: str = "relative distance",
                title: str | None = None) -> Figure:
    """Distances from the infinite-width prediction against width, log–log, with fitted slopes.

    ``metrics``: ``{name: values}``, values (W,) or (W, seeds) (each seed a faint marker, the mean a
    solid marker); ``exponents``: ``{name: fitted slope}``, drawn as a line of that slope through
    the geometric mean of the points and written in the legend (``∝ width^slope``).
    """
    widths = _array(widths, "widths", 1)
    if not metrics:
        raise ValueError("metrics: nothing to plot; pass {name: values per width}")
    fig, axes = _figure(width=6.4, height=4.2)
    ax = axes[0, 0]
    for i, (name, values) in enumerate(metrics.items()):
        color = CYCLE[i % len(CYCLE)]
        v = _array(values, f"metrics[{name!r}]", (1, 2))
        _same_length(widths, v, "widths", f"metrics[{name!r}]")
        per_seed = v if v.ndim == 2 else v[:, None]
        for s in range(per_seed.shape[1] if per_seed.shape[1] > 1 else 0):
            ax.loglog(widths, per_seed[:, s], ".", color=color, alpha=0.35, ms=5)
        mean = np.exp(np.nanmean(np.log(np.where(per_seed > 0, per_seed, np.nan)), axis=1))
        slope = None if exponents is None else exponents.get(name)
        label = name if slope is None else f"{name}  $\\propto n^{{{slope:.2f}}}$"
        ax.loglog(widths, mean, "o", color=color, ms=6, label=label)
        if slope is not None and np.isfinite(slope) and np.isfinite(mean).any():
            ok = np.isfinite(mean)
            lw, lm = np.log(widths[ok]).mean(), np.log(mean[ok]).mean()
            ax.loglog(widths, np.exp(lm + slope * (np.log(widths) - lw)), "-", color=color, lw=1.2)
    ax.set_xticks(widths, [f"{w:g}" for w in widths])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    return _finish(fig, title)


# ================================================================================== simplicity
@_styled
def walsh_spectrum(degrees, eigenvalues, *, multiplicities=None, highlight: Mapping[str, int] | None = None,
                   xlabel: str = "Walsh degree |S|", ylabel: str = "eigenvalue of the Gram matrix",
                   title: str | None = None) -> Figure:
    """The eigenvalue of each Walsh degree on the boolean cube, log scale.

    ``highlight``: ``{label: degree}`` marks named functions, e.g. ``{"parity": d}``.
    ``multiplicities`` (number of Walsh functions of each degree, C(d, k)) are written above points.
    """
    degrees = _array(degrees, "degrees", 1)
    values = _array(eigenvalues, "eigenvalues", 1)
    _same_length(degrees, values, "degrees", "eigenvalues")
    fig, axes = _figure(width=6.0, height=4.0)
    ax = axes[0, 0]
    ax.semilogy(degrees, values, "o-", color=OKABE_ITO["blue"], label="eigenvalue λ(|S|)")
    if multiplicities is not None:
        mult = _array(multiplicities, "multiplicities", 1)
        _same_length(degrees, mult, "degrees", "multiplicities")
        for d, v, m in zip(degrees, values, mult):     # right of the point, clear of highlight squares
            ax.annotate(f"×{int(m)}", (d, v), xytext=(9, 3), textcoords="offset points",
                        ha="left", va="bottom", fontsize=7.5, color="0.35")
        ax.margins(x=0.06, y=0.12)
    for i, (label, degree) in enumerate((highlight or {}).items()):
        hit = degrees == degree
        ax.plot(degrees[hit], values[hit], "s", ms=11, mfc="none", mew=2,
                color=CYCLE[(i + 1) % len(CYCLE)], label=f"{label} (degree {degree})")
    ax.set_xticks(degrees)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    return _finish(fig, title)


@_styled
def rkhs_norms(values: Mapping[str, float], *, highlight: Sequence[str] = (),
               xlabel: str = "squared RKHS norm yᵀH⁻¹y", title: str | None = None) -> Figure:
    """Horizontal bars of the squared RKHS norm of each target (log scale): longer is harder to learn.

    Targets named in ``highlight`` are drawn in vermillion, the others in blue.
    """
    if not values:
        raise ValueError("values: nothing to plot; pass {target: norm}")
    names = list(values)
    v = _array([values[n] for n in names], "values", 1)
    fig, axes = _figure(width=6.4, height=1.2 + 0.42 * len(names))
    ax = axes[0, 0]
    ax.barh(np.arange(len(names)), v, color=[OKABE_ITO["vermillion"] if n in highlight else OKABE_ITO["blue"]
                                             for n in names])
    for i, value in enumerate(v):
        ax.annotate(f"{value:.3g}", (value, i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_yticks(np.arange(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("target")
    ax.grid(False, axis="y")
    return _finish(fig, title)


@_styled
def mode_contributions(cumulative_share: Mapping[str, object], *,
                       xlabel: str = "eigenmode i (largest eigenvalue first)",
                       ylabel: str = "cumulative share of yᵀH⁻¹y", title: str | None = None) -> Figure:
    """How a labeling's squared RKHS norm accumulates over the eigenmodes, one line per labeling.

    The curve rises where the labeling's cost sits: one that stays low until the last modes owes
    its norm to small-eigenvalue modes, directions the kernel finds hard to fit.
    """
    curves = _named(cumulative_share, "cumulative_share", "labels")
    fig, axes = _figure(width=6.4, height=4.0)
    ax = axes[0, 0]
    for i, (name, share) in enumerate(curves.items()):
        ax.plot(np.arange(1, share.shape[0] + 1), share, "-", color=CYCLE[i % len(CYCLE)], label=name)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    return _finish(fig, title)


# ================================================================================== learning curves
def _mode_groups(values: np.ndarray, max_groups: int) -> list[tuple[int, int]]:
    """``(first, last)`` index ranges of consecutive modes with the same eigenvalue (rel. 1e-6)."""
    groups, start = [], 0
    for i in range(1, values.shape[0] + 1):
        if i == values.shape[0] or not np.isclose(values[i], values[start], rtol=1e-6, atol=0):
            groups.append((start, i - 1))
            start = i
            if len(groups) == max_groups:
                break
    return groups


def _size_axis(ax, sizes: np.ndarray) -> None:
    """Training-set sizes as plain numbers on a log axis: the sizes themselves when there are few."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    unique = np.unique(sizes)
    if unique.shape[0] <= 10:
        ax.set_xticks(unique, [f"{v:g}" for v in unique])
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        few_decades = unique[-1] < 100 * unique[0]
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if few_decades and f"{v:.0e}"[0] in "25" else ""))


def _draw_error_points(ax, points, color, marker: str) -> None:
    """``(n, mean, std)`` as markers with error bars; non-positive values are left out (log scale)."""
    n, mean, std = (_array(a, "points", 1) for a in points)
    _same_length(n, mean, "n", "mean")
    keep = np.isfinite(mean) & (mean > 0)
    lower = np.minimum(std, mean * (1 - 1e-3))          # bars stay above 0 on the log axis
    ax.errorbar(n[keep], mean[keep], yerr=[lower[keep], std[keep]], fmt=marker, ms=5, color=color,
                mfc="none" if marker == "o" else color, capsize=2, lw=1)


@_styled
def learning_curves(curves: Mapping[str, Mapping], *, learnability=None, learnability_n=None, eigenvalues=None,
                    max_modes: int = 6, xlabel: str = "training-set size n", ylabel: str = "test MSE",
                    title: str | None = None) -> Figure:
    """Test error against the number of training points (log–log), and the learnability of the top
    eigenmodes against it.

    ``curves``: ``{target: {"n": (S,), "theory": (S,), "measured": (n, mean, std), "trained": (n, mean,
    std)}}`` — the theory as a line, kernel regression on subsets as open circles and trained networks
    as squares (bars: the spread over draws); "measured" and "trained" are optional. ``learnability``
    (S', M) at sizes ``learnability_n`` (S'), with ``eigenvalues`` (M,): a second panel with one line
    per distinct eigenvalue among the top modes (tied modes, e.g. on the boolean cube, drawn once) and
    the level 1/2 at which a mode counts as learned. Non-positive and infinite errors are not drawn.
    """
    if not curves:
        raise ValueError("curves: nothing to plot; pass {target: {'n': sizes, 'theory': errors}}")
    panels = 1 if learnability is None else 2
    fig, axes = _figure(1, panels, width=5.2 * panels + 0.6, height=4.2)
    ax = axes[0, 0]
    for i, (name, curve) in enumerate(curves.items()):
        color = CYCLE[i % len(CYCLE)]
        n, theory = _array(curve["n"], f"curves[{name!r}]['n']", 1), _array(curve["theory"], f"curves[{name!r}]['theory']", 1)
        _same_length(n, theory, "n", "theory")
        keep = np.isfinite(theory) & (theory > 0)
        ax.loglog(n[keep], theory[keep], "-", color=color, label=name)
        for key, marker in (("measured", "o"), ("trained", "s")):
            if curve.get(key) is not None:
                _draw_error_points(ax, curve[key], color, marker)
    ax.legend(loc="lower left", title="target")
    sources = [Line2D([], [], ls="-", color="0.3", label="theory (spectrum)"),
               Line2D([], [], ls="none", marker="o", mfc="none", color="0.3", label="kernel regression on subsets"),
               Line2D([], [], ls="none", marker="s", color="0.3", label="trained networks (ensemble mean)")]
    shown = [sources[0]] + [h for h, key in zip(sources[1:], ("measured", "trained"))
                            if any(c.get(key) is not None for c in curves.values())]
    fig.legend(handles=shown, loc="outside lower center", ncols=len(shown))
    _size_axis(ax, np.concatenate([_array(c["n"], "n", 1) for c in curves.values()]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if learnability is not None:
        _draw_learnability(axes[0, 1], learnability, learnability_n, eigenvalues, max_modes, xlabel)
    return _finish(fig, title)


def _draw_learnability(ax, learnability, sizes, eigenvalues, max_modes: int, xlabel: str) -> None:
    L = _array(learnability, "learnability", 2)
    n = _array(sizes, "learnability_n", 1)
    _same_length(n, L, "learnability_n", "learnability")
    values = _array(eigenvalues, "eigenvalues", 1) if eigenvalues is not None else np.arange(L.shape[1], 0, -1.0)
    groups = _mode_groups(values[:L.shape[1]], max_modes)
    colors = matplotlib.colormaps[SEQUENTIAL](np.linspace(0.0, 0.85, max(len(groups), 2)))
    for color, (a, b) in zip(colors, groups):
        which = f"mode {a + 1}" if a == b else f"modes {a + 1}–{b + 1}"
        label = which + (f" (η={values[a]:.3g})" if eigenvalues is not None else "")
        ax.semilogx(n, L[:, a], "-", color=color, label=label)
    ax.axhline(0.5, color=OKABE_ITO["black"], ls=":", lw=1, label="learned (L = 1/2)")
    _size_axis(ax, n)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("learnability L = pη/(pη + κ)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7.5)


__all__ += ["learning_curves"]


# ================================================================================== similarity
def _draw_input(ax, x: np.ndarray, label: str) -> None:
    """One input: an image (C, H, W) as a grey map of its channel mean, else a line over its features;
    ``label`` below it."""
    if x.ndim == 3:
        ax.imshow(x.mean(axis=0), cmap="gray", interpolation="nearest")
        ax.set_yticks([])
        ax.grid(False)
    else:
        ax.plot(x.reshape(-1), "-", lw=1.0, color=CYCLE[0])
        ax.tick_params(labelsize=7)
    ax.set_xticks([])
    ax.set_xlabel(label, fontsize=8)


@_styled
def similar_inputs(queries, neighbours, similarity, *, labels: Sequence[str] | None = None,
                   title: str | None = None) -> Figure:
    """Each query (first column) beside its most similar pool inputs, titled with the normalised
    kernel value s = k(x, x')/sqrt(k(x, x) k(x', x')).

    queries (q, ...); neighbours (q, k, ...) the pool inputs shown per query; similarity (q, k).
    Images (C, H, W) are drawn as pictures (channel mean), vectors and signals as lines.
    ``labels`` (k,) names the columns (default "neighbour 1", ...).
    """
    q_in = _array(queries, "queries")
    nb = _array(neighbours, "neighbours")
    s = _array(similarity, "similarity", 2)
    if nb.shape[:2] != s.shape or nb.shape[0] != q_in.shape[0]:
        raise ValueError(f"neighbours: expected shape (queries, k, ...) = {s.shape} + input shape, got {nb.shape}")
    n_q, k = s.shape
    names = list(labels) if labels is not None else [f"neighbour {j + 1}" for j in range(k)]
    fig, axes = _figure(n_q, k + 1, width=1.5 * (k + 1), height=1.5 * n_q + 0.4)
    for i in range(n_q):
        axes[i, 0].set_ylabel(f"query {i + 1}", fontsize=8)
        _draw_input(axes[i, 0], q_in[i], "query")
        for j in range(k):
            _draw_input(axes[i, j + 1], nb[i, j], f"s = {s[i, j]:.4f}")
    for j, name in enumerate(["query"] + names):
        axes[0, j].set_title(name, fontsize=8)
    return _finish(fig, title)


__all__ += ["similar_inputs"]


# ================================================================================== MNIST-1D
@_styled
def accuracy_bars(groups: Mapping[str, Mapping[str, float]], *, title: str | None = None,
                  ylabel: str = "test accuracy") -> Figure:
    """Grouped bars: ``groups[group][label] = accuracy`` (one colour per group, e.g. standard / shuffled)."""
    labels = list(dict.fromkeys(k for g in groups.values() for k in g))
    fig, axes = _figure(width=max(6.4, 0.55 * len(labels) + 2), height=4.2)
    ax = axes[0, 0]
    step = 0.8 / max(len(groups), 1)
    for i, (group, values) in enumerate(groups.items()):
        pos = [j + (i - (len(groups) - 1) / 2) * step for j, k in enumerate(labels) if k in values]
        ax.bar(pos, [values[k] for k in labels if k in values], width=step, color=CYCLE[i % len(CYCLE)], label=group)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("model")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend()
    return _finish(fig, title)


@_styled
def cumulative_shares(curves: Mapping[str, object], *, title: str | None = None,
                      ylabel: str = "share of the label energy in the top k modes") -> Figure:
    """``curves[name]`` (n,) per-mode shares, drawn cumulatively against k (log scale)."""
    fig, axes = _figure(width=6.4, height=4.2)
    ax = axes[0, 0]
    for i, (name, share) in enumerate(curves.items()):
        s = _array(share, f"curves[{name!r}]", 1)
        ax.semilogx(np.arange(1, s.size + 1), np.cumsum(s), "-", color=CYCLE[i % len(CYCLE)], label=name)
    ax.set_xlabel("k (modes, largest eigenvalue first)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.legend()
    return _finish(fig, title)


@_styled
def signal_modes(panels: Mapping[str, object], *, title: str | None = None, xlabel: str = "position") -> Figure:
    """One panel per ``panels[name]`` (modes, L): each mode's input-space pattern as a signal, scaled to
    the same height and stacked, mode 1 on top."""
    arrays = {k: _array(v, f"panels[{k!r}]", 2) for k, v in panels.items()}
    rows = max(a.shape[0] for a in arrays.values())
    fig, axes = _figure(1, len(arrays), width=3.2 * len(arrays), height=0.75 * rows + 1.2)
    for j, (name, a) in enumerate(arrays.items()):
        ax = axes[0, j]
        for i in range(a.shape[0]):
            scale = np.abs(a[i]).max() or 1.0
            ax.plot(a[i] / scale - 2.4 * i, "-", color=CYCLE[j % len(CYCLE)], lw=1.2)
        ax.set_yticks(-2.4 * np.arange(a.shape[0]), [f"mode {i + 1}" for i in range(a.shape[0])], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("each mode scaled to max |m| = 1")
    return _finish(fig, title)


@_styled
def orbit_kernels(matrices: Mapping[str, object], spectra: Mapping[str, tuple], *,
                  title: str | None = None) -> Figure:
    """Top row: each kernel on the L circular shifts of one signal (a circulant matrix is constant
    along its wrapped diagonals). Bottom: its eigenvalues beside the DFT of its circulant part."""
    fig, axes = _figure(2, len(matrices), width=3.0 * len(matrices), height=5.6)
    for j, (name, k) in enumerate(matrices.items()):
        m = _array(k, f"matrices[{name!r}]", 2)
        ax = axes[0, j]
        ax.imshow(m, cmap=SEQUENTIAL, interpolation="nearest", vmin=min(0.0, m.min()), vmax=m.max())
        ax.grid(False)
        ax.set_title(name, fontsize=8.5)
        ax.set_xlabel("shift b")
        ax.set_ylabel("shift a")
        eig, dft = (_array(v, name, 1) for v in spectra[name])
        ax = axes[1, j]
        idx = np.arange(1, eig.size + 1)
        ax.semilogy(idx, np.clip(eig, 1e-16, None), "o", ms=3.5, mfc="none", color=CYCLE[0], label="eigenvalues")
        ax.semilogy(idx, np.clip(dft, 1e-16, None), ".", ms=3, color=CYCLE[1], label="DFT of the circulant part")
        ax.set_xlabel("index")
        if j == 0:
            ax.legend(fontsize=7)
    return _finish(fig, title)


__all__ += ["accuracy_bars", "cumulative_shares", "signal_modes", "orbit_kernels"]


# ================================================================================== the coin
#: How the coin study draws each object of a level.
_COIN_STYLE = {"coin": dict(marker="o", color=OKABE_ITO["orange"], ms=13, mec="black"),
               "end": dict(marker="s", color=OKABE_ITO["green"], ms=13, mec="black"),
               "start": dict(marker="^", color=OKABE_ITO["blue"], ms=10, mec="black")}


def _draw_level(ax, walls: np.ndarray, start, coin, end, paths: Mapping[str, Sequence], title: str) -> None:
    h, w = walls.shape
    ax.imshow(walls, cmap="Greys", vmin=0, vmax=1.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xticks(np.arange(-0.5, w, 1.0), labels=[])
    ax.set_yticks(np.arange(-0.5, h, 1.0), labels=[])
    ax.tick_params(length=0)
    ax.grid(True, color="#999999", alpha=0.6, linewidth=0.6)
    for name, cell in (("end", end), ("coin", coin), ("start", start)):
        ax.plot(cell[1], cell[0], ls="none", zorder=3, **_COIN_STYLE[name])
    n = max(len(paths), 1)
    for k, (label, path) in enumerate(paths.items()):
        cells = np.asarray(path, dtype=float).reshape(-1, 2)
        offset = (k - (n - 1) / 2) * 0.14           # paths over the same cells drawn side by side
        ax.plot(cells[:, 1] + offset, cells[:, 0] + offset, "-", color=CYCLE[(k + 1) % len(CYCLE)], lw=2.2,
                zorder=4, label=label, alpha=0.9)
        ax.plot(cells[-1, 1] + offset, cells[-1, 0] + offset, "x", color=CYCLE[(k + 1) % len(CYCLE)], ms=8,
                mew=2, zorder=5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column", fontsize=8, labelpad=1)
    ax.set_ylabel("row", fontsize=8, labelpad=1)


@_styled
def coin_levels(panels: Sequence[Mapping], *, ncols: int = 3, title: str | None = None) -> Figure:
    """Levels with trajectories. Each panel: ``walls`` (h, w) bool, ``start``, ``coin``, ``end`` (row, column),
    ``paths`` ({label: [(row, column), ...]}, each ending where its episode ended, marked ×) and ``title``.
    Walls are dark cells, the coin an orange disc, the end a green square, the start a blue triangle."""
    if not panels:
        raise ValueError("panels: nothing to draw; pass at least one level")
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    h, w = np.asarray(panels[0]["walls"]).shape
    fig, axes = _figure(nrows, ncols, width=2.4 * ncols * max(w / 6, 0.8), height=1.45 * nrows * max(h / 3, 0.8) + 0.6)
    for ax, panel in zip(axes.flat, panels):
        _draw_level(ax, np.asarray(panel["walls"], dtype=float), panel["start"], panel["coin"], panel["end"],
                    panel.get("paths", {}), panel.get("title", ""))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], ls="none", label=k, **v) for k, v in _COIN_STYLE.items()]
    labels = list(panels[0].get("paths", {}))
    handles += [Line2D([], [], color=CYCLE[(k + 1) % len(CYCLE)], lw=2.2, label=lab) for k, lab in enumerate(labels)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    return _finish(fig, title)


@_styled
def coin_agreement(points: Sequence[Mapping], *, title: str | None = None) -> Figure:
    """The prior's prediction against trained networks. Each point: ``arch``, ``kernel_coin`` / ``kernel_end`` (the
    kernel policy's shares of episodes to the coin / the end), ``trained_coin`` / ``trained_end`` (the networks'),
    ``gap`` (the prior's log p(coin) − log p(end), nats), ``size`` (1 narrow, 2 wide) and ``large_lr`` (bool:
    hollow marker). Left and middle: shares, with the diagonal of agreement; right: the gap against the
    networks' coin share (symmetric log scale)."""
    if not points:
        raise ValueError("points: nothing to draw; pass at least one comparison")
    archs = list(dict.fromkeys(p["arch"] for p in points))
    markers = ("o", "s", "D", "^", "v")
    fig, axes = _figure(1, 3, width=13.0, height=4.2)
    coin_ax, end_ax, gap_ax = axes[0]
    for p in points:
        a = archs.index(p["arch"])
        style = dict(marker=markers[a % len(markers)], ms=4 + 2 * p.get("size", 1), ls="none", mec=CYCLE[a],
                     mfc="none" if p.get("large_lr") else CYCLE[a], mew=1.5, alpha=0.85)
        jitter = 0.012 * (p.get("size", 1) - 1.5)
        coin_ax.plot(p["kernel_coin"] + jitter, p["trained_coin"], **style)
        end_ax.plot(p["kernel_end"] + jitter, p["trained_end"], **style)
        gap_ax.plot(p["gap"], p["trained_coin"], **style)
    for ax, goal in ((coin_ax, "coin"), (end_ax, "end")):
        ax.plot([0, 1], [0, 1], ":", color=OKABE_ITO["black"], lw=1)
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel(f"kernel policy (NTK-GP mean): share to the {goal}")
        ax.set_ylabel(f"trained networks: share to the {goal}")
    for ax in axes[0]:
        ax.set_ylim(-0.05, 1.05)
    gap_ax.set_ylabel("trained networks: share to the coin")
    gap_ax.set_xscale("symlog", linthresh=1.0)
    gap_ax.axvline(0, color=OKABE_ITO["black"], lw=1, ls=":")
    gap_ax.set_xlabel("prior: log p(coin labeling) − log p(end labeling)  [nats]")
    handles = [Line2D([], [], marker=markers[a % len(markers)], ls="none", color=CYCLE[a], label=name)
               for a, name in enumerate(archs)]
    handles += [Line2D([], [], marker="o", ls="none", mfc="none", mec="gray", label="larger learning rate"),
                Line2D([], [], marker="o", ls="none", color="gray", ms=4, label="narrow"),
                Line2D([], [], marker="o", ls="none", color="gray", ms=8, label="wide")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return _finish(fig, title)


@_styled
def coin_diversity(curves: Mapping[str, Mapping], *, title: str | None = None) -> Figure:
    """The diversity curve per architecture: ``fraction`` (share of training levels with the coin elsewhere),
    ``gap`` (the prior's log-probability gap, nats), ``kernel`` (the kernel policy's coin rate) and ``trained``
    (trained networks' coin rate). Left: the gap (symmetric log scale, 0 dotted); right: the coin rates."""
    if not curves:
        raise ValueError("curves: nothing to draw; pass at least one architecture's curve")
    fig, axes = _figure(1, 2, width=10.0, height=4.0)
    left, right = axes[0]
    for a, (name, c) in enumerate(curves.items()):
        f = 100 * _array(c["fraction"], f"curves[{name!r}]['fraction']", 1)
        left.plot(f, _array(c["gap"], "gap", 1), "o-", color=CYCLE[a], label=name)
        right.plot(f, _array(c["kernel"], "kernel", 1), "o-", color=CYCLE[a], label=f"{name}: kernel policy")
        right.plot(f, _array(c["trained"], "trained", 1), "s--", color=CYCLE[a], mfc="none",
                   label=f"{name}: trained networks")
    for ax in (left, right):
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("training levels with the coin elsewhere [%]")
    left.set_yscale("symlog", linthresh=1.0)
    left.axhline(0, color=OKABE_ITO["black"], lw=1, ls=":")
    left.set_ylabel("log p(coin) − log p(end)  [nats]")
    left.legend(loc="best")
    right.set_ylim(-0.05, 1.05)
    right.set_ylabel("share of test episodes to the coin")
    right.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _finish(fig, title)


__all__ += ["coin_levels", "coin_agreement", "coin_diversity"]
