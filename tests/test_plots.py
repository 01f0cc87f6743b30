"""ntkprior.app.plots: every figure function returns a Figure with labelled axes, saves a non-empty image,
uses the colour-blind-safe palette, opens no pyplot window, and rejects malformed data by name."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from ntkprior.app import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(rng):
    x = np.linspace(-3, 3, 30)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    values = np.sort(rng.uniform(0.01, 10, 30))[::-1]
    return x, values, q


def _figures(rng):
    """One call of every public figure function on small, well-formed data."""
    x, values, vectors = _data(rng)
    mean, std = np.sin(x), 0.1 + 0.05 * np.abs(x)
    times = np.arange(0, 101)
    residuals = np.exp(-np.outer(times, values[:5]) / 50)
    return {
        "spectrum": plots.spectrum({"NTK": values, "NNGP": values / 2}, floor=1e-12),
        "eigenfunctions": plots.eigenfunctions(torch.from_numpy(x)[:, None], torch.from_numpy(vectors),
                                               eigenvalues=values, sign_changes=np.arange(30)),
        "eigenmode_overview": plots.eigenmode_overview(
            {"a": {"x": x, "values": values, "vectors": vectors},
             "b": {"x": x, "values": values, "vectors": vectors, "sign_changes": np.arange(30), "floor": 1e-9}}),
        "posterior_bands": plots.posterior_bands(
            x, {"NNGP": (mean, std), "NTK": (mean, None)}, x_train=x[::10], y_train=mean[::10],
            candidates={"up": ([0.5, 1.0], [1.0, 2.0]), "down": ([0.5, 1.0], [-1.0, -2.0])},
            truth=(x, np.sin(x))),
        "candidate_log_probs": plots.candidate_log_probs(
            {"x*=0": (x, -x ** 2), "x*=1": (x, -0.5 * (x - 1) ** 2 - 1)},
            candidates={"x*=0": ([0.7, 3.0], [-0.49, -9.0])}, peaks={"x*=0": (0.0, 0.0), "x*=1": (1.0, -1.0)}),
        "trained_vs_kernel": plots.trained_vs_kernel(
            x, mean, std, {"width 64": mean + 0.1 * rng.standard_normal((4, 30)),
                           "width 256": mean + 0.05 * rng.standard_normal((4, 30))},
            x_train=x[::10], y_train=mean[::10]),
        "mode_learning_curves": plots.mode_learning_curves(
            times, residuals, values[:5], measured_times=times[::10], measured=residuals[::10] * 1.1),
        "width_sweep": plots.width_sweep([64, 128, 256, 512], {
            "test_distance": [0.4, 0.28, 0.2, 0.14],
            "kernel_change": np.array([[0.2, 0.22], [0.1, 0.11], [0.05, 0.06], [0.025, 0.03]])},
            {"test_distance": -0.5, "kernel_change": -1.0}),
        "walsh_spectrum": plots.walsh_spectrum(np.arange(9), 10.0 ** -np.arange(9), multiplicities=[
            1, 8, 28, 56, 70, 56, 28, 8, 1], highlight={"parity": 8}),
        "rkhs_norms": plots.rkhs_norms({"x1": 2.0, "parity": 900.0}, highlight=["parity"]),
        "mode_contributions": plots.mode_contributions({"labels": np.linspace(0.1, 1, 30),
                                                        "shuffled": np.linspace(0, 1, 30) ** 4}),
        "learning_curves": plots.learning_curves(
            {"x1": {"n": times[1:], "theory": 1 / times[1:], "measured": ([4, 16], [0.3, 0.07], [0.05, 0.01])}},
            learnability=times[1:, None] / (times[1:, None] + values[:5]), learnability_n=times[1:],
            eigenvalues=values[:5]),
        "similar_inputs": plots.similar_inputs(rng.random((2, 1, 6, 6)), rng.random((2, 2, 1, 6, 6)),
                                               [[0.9, 0.8], [0.7, 0.6]]),
        "accuracy_bars": plots.accuracy_bars({"standard": {"mlp": 0.6, "cnn": 0.9}, "shuffled": {"mlp": 0.6}}),
        "cumulative_shares": plots.cumulative_shares({"CNN": np.full(30, 1 / 30), "MLP": values / values.sum()}),
        "signal_modes": plots.signal_modes({"CNN": vectors[:4], "MLP": vectors[4:8]}),
        "orbit_kernels": plots.orbit_kernels({"a": vectors @ np.diag(values) @ vectors.T},
                                             {"a": (values, values)}),
        "coin_levels": plots.coin_levels([{"walls": np.eye(3, 5, dtype=bool), "start": (1, 0), "coin": (2, 0),
                                           "end": (0, 4), "paths": {"kernel": [(1, 0), (2, 0)]}, "title": t}
                                          for t in ("a", "b", "c")]),
        "coin_agreement": plots.coin_agreement([{"arch": "MLP", "kernel_coin": 0.1, "trained_coin": 0.2,
                                                 "kernel_end": 0.8, "trained_end": 0.5, "gap": -30.0}]),
        "coin_diversity": plots.coin_diversity({"MLP": {"fraction": [0, 0.1, 0.5], "gap": [-30, -10, 2],
                                                        "kernel": [0, 0.4, 0.9], "trained": [0, 0.2, 0.8]}}),
    }


@pytest.fixture(scope="module")
def figures():
    return _figures(np.random.default_rng(0))


def test_every_public_figure_function_is_exercised(figures):
    assert set(figures) == set(plots.__all__) - {"OKABE_ITO"}


def test_figures_have_labelled_axes_and_save_non_empty_images(figures, tmp_path):
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        data_axes = [ax for ax in fig.axes if ax.has_data()]
        assert data_axes, name
        for ax in data_axes:
            assert ax.get_xlabel(), f"{name}: an axis without an x label"
        assert any(ax.get_ylabel() for ax in data_axes), name
        png = tmp_path / f"{name}.png"
        fig.savefig(png, dpi=40)          # low resolution: this checks that drawing works, not looks
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2000, name
    svg = tmp_path / "spectrum.svg"
    figures["spectrum"].savefig(svg)
    assert b"<svg" in svg.read_bytes()[:500]


def test_figures_with_several_series_have_a_legend(figures):
    for name in ("spectrum", "posterior_bands", "candidate_log_probs", "trained_vs_kernel",
                 "mode_learning_curves", "width_sweep", "walsh_spectrum", "mode_contributions"):
        fig = figures[name]
        assert fig.legends or any(ax.get_legend() for ax in fig.axes), name


def test_categorical_colours_are_okabe_ito(figures):
    palette = {c.lower() for c in plots.OKABE_ITO.values()}
    for name in ("spectrum", "width_sweep", "mode_contributions"):
        lines = [line for ax in figures[name].axes for line in ax.get_lines() if line.get_label()[:1] != "_"]
        assert lines, name
        assert {to_hex(line.get_color()) for line in lines} <= palette, name


def test_no_pyplot_figure_is_opened_and_the_backend_is_untouched(figures):
    # the functions build Figure objects directly: nothing is registered with pyplot (no window, no leak)
    assert plt.get_fignums() == []
    backend = matplotlib.get_backend()
    plots.spectrum(np.array([3.0, 2.0, 1.0]))
    assert matplotlib.get_backend() == backend and plt.get_fignums() == []


def test_width_sweep_draws_the_fitted_slope(figures):
    ax = figures["width_sweep"].axes[0]
    fit = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) == 4][0]
    xs, ys = np.log(fit.get_xdata()), np.log(fit.get_ydata())
    # the drawn line has exactly the slope it is labelled with (first metric: -0.5)
    assert np.polyfit(xs, ys, 1)[0] == pytest.approx(-0.5, abs=1e-12)
    assert "-0.50" in ax.get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize("call, message", [
    (lambda: plots.spectrum({}), "values: nothing to plot"),
    (lambda: plots.spectrum(np.ones((2, 2))), "values['eigenvalues']: expected 1-D"),
    (lambda: plots.eigenfunctions(np.ones((5, 2)), np.ones((5, 3))), "x: eigenfunctions are drawn against a 1-D"),
    (lambda: plots.eigenfunctions(np.arange(5.0), np.ones((4, 3))), "vectors: has 4 entries but x has 5"),
    (lambda: plots.posterior_bands(np.arange(3.0), {"a": (np.zeros(2), None)}, x_train=[0.0], y_train=[0.0]),
     "posteriors['a'] mean: has 2 entries but x has 3"),
    (lambda: plots.trained_vs_kernel(np.arange(3.0), np.zeros(3), None, {"w": np.zeros((2, 4))},
                                     x_train=[0.0], y_train=[0.0]), "trained['w']: expected shape (ensemble, 3)"),
    (lambda: plots.width_sweep([1, 2], {"d": [1.0, 2.0, 3.0]}), "metrics['d']: has 3 entries but widths has 2"),
    (lambda: plots.eigenmode_overview({"a": {"x": [0.0]}}), "panels['a']: missing"),
])
def test_malformed_data_is_rejected_by_name(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        call()


def test_eigenvector_maps_colour_each_input_by_its_eigenvector_value(tmp_path):
    """2-D inputs are drawn as they are (issue 13): one panel per mode, colour = eigenvector value."""
    from ntkprior.app import plots
    rng = np.random.default_rng(0)
    xy, vectors = rng.normal(size=(30, 2)), np.linalg.qr(rng.normal(size=(30, 5)))[0]
    fig = plots.eigenvector_maps(xy, vectors, eigenvalues=np.arange(5, 0, -1.0), max_modes=5)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == 5 and panels[0].get_title() == "mode 1 (λ=5)"
    np.testing.assert_allclose(panels[2].collections[0].get_array(), vectors[:, 2] / np.abs(vectors[:, 2]).max())
    with pytest.raises(ValueError, match="xy: expected 2 coordinates"):
        plots.eigenvector_maps(rng.normal(size=(30, 3)), vectors)
