"""`ntkprior report`: the page references every figure it writes, results.json holds every number in
the tables, and those numbers are what the library's functions give when called directly."""

import json
import math
from contextlib import nullcontext
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ntkprior.studies import datasets
from ntkprior.app.cli import app
from ntkprior.prior.prior import KernelPrior, predict, rank_candidates
from ntkprior.app.report import DEFAULT_ARCHS, QUICK, SEED_LEARNING_RATE, SEED_STEPS, build_report
from ntkprior.arch.spec import parse_spec
from ntkprior.prior.spectrum import count_sign_changes, eigenmodes
from ntkprior.dynamics.training import SWEEP_METRICS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `ntkprior report --quick` through the command line; (directory, results, html)."""
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", "--quick", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output
    return out, json.loads((out / "results.json").read_text()), (out / "index.html").read_text()


def test_page_references_every_figure_written_and_each_is_a_non_empty_png(quick):
    out, results, html = quick
    referenced = re.findall(r'<img src="([^"]+)"', html)
    written = sorted(p.relative_to(out).as_posix() for p in (out / "figures").iterdir())
    assert sorted(referenced) == written == sorted(results["meta"]["figures"])
    assert len(written) == 9
    for name in written:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name


def test_page_has_four_sections_each_opening_with_two_sentences(quick):
    _, results, html = quick
    assert set(results) == {"eigenmodes", "prior", "training", "simplicity", "meta"}
    leads = re.findall(r'<h2>([^<]+)</h2><p class="lead">([^<]+)</p>', html)
    assert [t for t, _ in leads] == ["1. Eigenmodes", "2. The prior over labels", "3. Training vs theory",
                                     "4. Simplicity"]
    for title, text in leads:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
        assert len(sentences) == 2, (title, sentences)


def _all_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _all_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _all_numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def test_every_decimal_number_in_the_tables_is_in_results_json(quick):
    _, results, html = quick
    known = np.array(sorted(set(_all_numbers(results))))
    cells = re.findall(r"<td>([^<]+)</td>", html)
    checked = 0
    for cell in cells:
        text = cell.replace("−", "-").replace(" ", "")
        percent = text.endswith("%")
        text = text.rstrip("%")
        if not re.fullmatch(r"-?\d+\.\d+(e[-+]?\d+)?|-?\d(\.\d+)?e[-+]?\d+", text):
            continue      # integers (indices, counts) and words
        shown = float(text) / (100 if percent else 1)
        digits = len(re.sub(r"e.*|[-.]", "", text).lstrip("0")) or 1
        # the displayed value is the stored one rounded to `digits` significant figures
        tolerance = 0.51 * 10 ** (math.floor(math.log10(abs(float(text)) or 1)) - digits + 1)
        tolerance /= 100 if percent else 1
        assert np.min(np.abs(known - shown)) <= tolerance, f"{cell} is not in results.json"
        checked += 1
    assert checked > 100


def test_eigenmodes_agree_with_the_library(quick):
    _, results, _ = quick
    grid = datasets.interval_grid(QUICK.eigen_points, -3.0, 3.0)
    kernels = results["eigenmodes"]["kernels"]
    for title, (spec, kernel) in {"2-layer ReLU NTK": ("two_layer", "ntk"), "4-layer ReLU NTK": ("deep", "ntk"),
                                  "2-layer ReLU NNGP": ("two_layer", "nngp")}.items():
        modes = eigenmodes(parse_spec(DEFAULT_ARCHS[spec]), grid, kernel=kernel)
        np.testing.assert_allclose(kernels[title]["eigenvalues"], modes.values.numpy(), rtol=1e-12, atol=0)
        assert kernels[title]["sign_changes"] == count_sign_changes(modes.vectors[:, :8]).tolist()
        assert kernels[title]["arch"] == str(parse_spec(DEFAULT_ARCHS[spec]))


def test_prior_numbers_agree_with_the_library(quick):
    _, results, _ = quick
    res = results["prior"]
    arch = parse_spec(DEFAULT_ARCHS["seed"])
    x, y = datasets.seed_sin_data(5, 0.1, 0)
    np.testing.assert_allclose(res["x_train"], x.numpy(), rtol=0, atol=0)
    grid = datasets.interval_grid(QUICK.plot_points, -4.0, 4.0)
    for kind, options in {"nngp": {}, "gd-ensemble": dict(t=SEED_STEPS, learning_rate=SEED_LEARNING_RATE)}.items():
        unstable = pytest.warns(UserWarning, match="exceeds 2m / lambda_max")     # lr 0.1 > 2m/lambda_max
        with unstable if kind == "gd-ensemble" else nullcontext():
            post = predict(arch, x, y, grid, kind=kind, cov="diagonal", **options)
        np.testing.assert_allclose(res["posteriors"][kind]["mean"], post.mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(res["posteriors"][kind]["std"], post.std.numpy(), rtol=1e-12, atol=1e-14)
    for kernel in ("nngp", "ntk"):
        prior = KernelPrior.from_arch(arch, x, kernel)
        assert res["label_prior"][kernel]["log_prob"] == pytest.approx(prior.log_prob(y), rel=1e-12)
        assert res["label_prior"][kernel]["rkhs_norm"] == pytest.approx(prior.rkhs_norm(y), rel=1e-12)
    c = res["candidates"]
    named = {row["name"]: row["labels"] for row in c["rows"]}
    ranking = rank_candidates(arch, x, y, torch.tensor(c["x_test"]), named, kernel="ntk")
    for row in c["rows"]:
        assert row["conditional_log_prob"] == pytest.approx(ranking[row["name"]].conditional_log_prob, rel=1e-12)
        # the identity of MATH.md section 3: joint = marginal + conditional
        joint = c["marginal_log_prob"] + row["conditional_log_prob"]
        assert row["joint_log_prob"] == pytest.approx(joint, rel=1e-12)
    assert [r["conditional_log_prob"] for r in c["rows"]] == sorted((r["conditional_log_prob"] for r in c["rows"]),
                                                                  reverse=True)


def test_label_sweeps_peak_at_the_ntk_gp_prediction(quick):
    _, results, _ = quick
    res = results["prior"]
    x, y = datasets.seed_sin_data(5, 0.1, 0)
    x_test = torch.tensor(res["candidates"]["x_test"])
    post = predict(parse_spec(DEFAULT_ARCHS["seed"]), x, y, x_test, kind="ntkgp")
    assert len(res["label_sweeps"]) == 3
    for j, s in enumerate(res["label_sweeps"]):
        # the conditional density of y* is N(mu*, sigma*^2) with the NTK-GP posterior's mean and std
        assert s["mean"] == pytest.approx(float(post.mean[j]), rel=1e-10)
        assert s["std"] == pytest.approx(float(post.std[j]), rel=1e-10)
        assert s["peak_conditional"] == pytest.approx(-0.5 * math.log(2 * math.pi * s["std"] ** 2), rel=1e-10)
        labels, conditional = np.array(s["labels"]), np.array(s["conditional"])
        assert conditional.max() <= s["peak_conditional"] + 1e-12
        step = labels[1] - labels[0]
        assert abs(labels[conditional.argmax()] - s["mean"]) <= step / 2 + 1e-12
        assert s["peak_joint"] - s["peak_conditional"] == pytest.approx(res["candidates"]["marginal_log_prob"])


def test_training_section_holds_the_diagnoses_curves_and_sweep(quick):
    _, results, _ = quick
    res = results["training"]
    runs = [QUICK.seed_run, QUICK.well_run, QUICK.fast_run]
    assert [(s["width"], s["ensemble"], s["steps"]) for s in res["settings"]] == [
        (w, e, steps) for steps, pairs in runs for w, e in pairs]
    assert [s["learning_rate"] for s in res["settings"]] == [0.1] + [0.05] * len(QUICK.well_run[1]) + [0.1]
    seed_setting = res["settings"][0]
    # learning rate 0.1 is above 2m/lambda_max of the seed's kernel on its five points: the diagnosis says so
    assert seed_setting["max_stable_lr_analytic"] < SEED_LEARNING_RATE
    assert not {c["name"]: c["passed"] for c in seed_setting["checks"]}["learning_rate"]
    assert not seed_setting["in_kernel_regime"]
    mc = res["mode_curves"]
    assert np.array(mc["theory"]).shape == (len(mc["times"]), 5)
    assert np.array(mc["measured"]).shape == (len(mc["measured_steps"]), 5)
    assert mc["eigenvalues"] == sorted(mc["eigenvalues"], reverse=True)
    # at step 0 the trained network's residual and the closed form started from its f0 coincide
    assert mc["measured_steps"][0] == 0 and mc["times"][0] == 0
    np.testing.assert_allclose(mc["measured"][0], mc["theory"][0], rtol=1e-12, atol=1e-12)
    ws = res["width_sweep"]
    assert ws["widths"] == list(QUICK.sweep_widths) and set(ws["exponents"]) == set(SWEEP_METRICS)


def test_simplicity_eigenvalues_are_the_walsh_rayleigh_quotients_and_parity_is_hardest(quick):
    _, results, _ = quick
    res = results["simplicity"]
    d = QUICK.cube_dim
    cube = datasets.boolean_cube(d)
    arch = parse_spec(DEFAULT_ARCHS["cube"])
    H = arch.kernel(cube).ntk
    for b in res["by_degree"]:
        chi = datasets.walsh(cube, range(b["degree"]))
        # a Walsh function is an eigenvector: its Rayleigh quotient is its eigenvalue (MATH.md section 5)
        assert b["eigenvalue"] == pytest.approx(float(chi @ H @ chi) / cube.shape[0], rel=1e-8)
        assert b["multiplicity"] == math.comb(d, b["degree"])
    values = [b["eigenvalue"] for b in res["by_degree"]]
    assert values[d] <= min(values) * (1 + 1e-9)
    norms = {t["name"]: t["rkhs_norm"] for t in res["targets"]}
    prior = KernelPrior(H)
    parity = datasets.walsh(cube, range(d))
    assert norms[f"parity of {d} bits"] == pytest.approx(prior.rkhs_norm(parity), rel=1e-10)
    assert norms[f"parity of {d} bits"] == max(norms.values())
    r2 = {t["name"]: t["r2_half_cube"] for t in res["targets"]}
    assert r2["constant 1"] is None and all(isinstance(v, float) for k, v in r2.items() if k != "constant 1")


def _user_inputs(rng, d, n=8, n_test=3):
    x = rng.uniform(-2, 2, (n, d))
    y = np.sin(x.sum(axis=1))
    x_test = rng.uniform(-2, 2, (n_test, d))
    return x, y, x_test


@pytest.mark.parametrize("d", [1, 2])
def test_report_on_user_data(tmp_path, rng, d):
    x, y, x_test = _user_inputs(rng, d)
    cands = {"zeros": np.zeros(3), "ones": np.ones(3)}
    out = build_report(tmp_path, quick=True, arch="dense(16, weight_std=1.4, bias_std=0.5) relu dense(1)",
                       x_train=x, y_train=y, x_test=x_test, candidates=cands, steps=20)
    html = out.index.read_text()
    referenced = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(referenced) == sorted(p.relative_to(tmp_path).as_posix() for p in out.figures)
    assert all((tmp_path / r).stat().st_size > 5000 for r in referenced)
    res = json.loads(out.results_path.read_text())
    assert set(res) == {"eigenmodes", "prior", "training", "simplicity", "meta"}
    assert res["eigenmodes"]["n"] == 8 and len(res["prior"]["candidates"]["rows"]) == 2
    assert [s["width"] for s in res["training"]["settings"]] == [16]
    assert set(res["simplicity"]["labelings"]) == {"your labels", "the same labels shuffled"}
    assert res["eigenmodes"]["coordinate"] == ("input x" if d == 1 else "principal coordinate of the input")
    # sign changes are counted along an interval only; along a principal coordinate they mean nothing
    changes = res["eigenmodes"]["kernels"]["NTK"]["sign_changes"]
    assert (changes is None) == (d > 1)
    # every sentence comes from this run: nothing written for the built-in example
    text = _page_text(html)
    assert "y* = 3" not in text and "diamonds mark the labels" not in text and "the document" not in text


def _page_text(html_text: str) -> str:
    import html as html_module
    return html_module.unescape(re.sub(r"<[^>]+>", " ", html_text))


def test_report_sweeps_say_how_many_test_inputs_they_show(tmp_path, rng):
    x, y, x_test = _user_inputs(rng, 1, n_test=6)
    cands = {f"c{i}": np.full(6, float(i)) for i in range(5)}
    out = build_report(tmp_path, quick=True, arch="dense(16, weight_std=1.4, bias_std=0.5) relu dense(1)",
                       x_train=x, y_train=y, x_test=x_test, candidates=cands, steps=20)
    text = _page_text(out.index.read_text())
    assert "one curve for each of the first 3 of the 6 test inputs" in text
    assert "the 4 most probable of the 5 candidate test labelings" in text


def test_built_in_report_names_its_document_and_what_its_curves_are(quick):
    _, res, html_text = quick
    assert html_text.count("neural-tangent-kernel-distillation") == 1        # named once, with its link
    text = _page_text(html_text)
    assert "seed's" not in text and "seed document" not in text
    tt = res["prior"]["training_time"]
    assert tt["gradient_flow"] and tt["learning_rate"] > tt["max_stable_learning_rate"]
    assert "discrete gradient descent at this rate diverges" in text
    share = res["prior"]["label_prior"]["nngp"]["smallest_mode_share"]
    assert share > 0.5 and f"{100 * share:.1f} % of YᵀK⁻¹Y" in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="dense(8) relu dense(1)", x_train=np.zeros((3, 1))), "needs all three"),
    (dict(x_test=np.zeros((2, 1))), "only apply to a report on your data"),
    (dict(arch="dense(8) relu dense(1)", x_train=np.ones((3, 1)), y_train=np.ones((3, 2))), "one output column"),
    (dict(arch="dense(8) relu dense(1)", x_train=np.ones((3, 1)), y_train=np.ones(3), candidates={"a": [1.0]}),
     "pass x_test"),
    (dict(arch="dense(1)", x_train=np.ones((3, 1)), y_train=np.ones(3)), "no hidden Dense layer"),
    (dict(seed=-1), "seed: expected an integer >= 0"),
])
def test_bad_report_arguments_raise_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_report(tmp_path, quick=True, **kwargs)


def test_built_in_data_sets():
    x, y = datasets.seed_sin_data(5, 0.1, 0)
    assert x.shape == (5, 1) and y.shape == (5,) and x.dtype == torch.float64
    assert bool((x.abs() <= math.pi).all())
    x2, y2 = datasets.seed_sin_data(5, 0.1, 0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # noise 0.1 around sin: residuals of five N(0, 0.01) draws stay well within 5 standard deviations
    assert float((y - torch.sin(x[:, 0])).abs().max()) < 0.5
    cube = datasets.boolean_cube(4)
    assert cube.shape == (16, 4) and len({tuple(r) for r in cube.tolist()}) == 16
    subsets = [(), (0,), (1, 2), (0, 1, 2, 3)]
    gram = torch.stack([datasets.walsh(cube, s) for s in subsets])
    np.testing.assert_array_equal((gram @ gram.T).numpy(), 16 * np.eye(4))     # Walsh functions are orthogonal
    assert set(datasets.majority(cube).tolist()) == {-1.0, 1.0}
    grid = datasets.interval_grid(7, -3, 3)
    assert grid.shape == (7, 1) and float(grid[0]) == -3 and float(grid[-1]) == 3
    with pytest.raises(ValueError, match="subset: expected coordinates in 0..3"):
        datasets.walsh(cube, [4])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_page_renders_in_headless_chromium(quick, tmp_path):
    out, _, _ = quick
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
           (out / "index.html").as_uri()]
    subprocess.run(cmd, timeout=120, capture_output=True, check=False)
    assert shot.exists() and shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 50_000


def test_simplicity_section_counts_the_samples_each_target_needs(quick):
    """The learning curves of the cube (issue 19): the rows agree with the library run directly."""
    from ntkprior.studies.document.cube_curves import cube_curves
    from ntkprior.studies.document.settings import QUICK
    _, res, html_text = quick
    lc = res["simplicity"]["learning_curves"]
    direct = cube_curves(DEFAULT_ARCHS["cube"], QUICK.cube_dim, draws=QUICK.curve_draws, seed=0)
    assert lc["rows"] == [{k: (v if not isinstance(v, float) else pytest.approx(v)) for k, v in r.items()}
                          for r in direct.rows()]
    assert "figures/learning_curves.png" in html_text
