"""The explorer's server through FastAPI's test client: every endpoint, bad inputs, limits, and that
the numbers it serves equal direct calls of the library on the architecture itself.

Tolerance of "equal": the server evaluates the kernels once on [X; X*] and hands them to the library
as precomputed blocks, the direct calls evaluate them inside ``predict``/``eigenmodes``; both are the
same float64 formulas, so they differ by round-off (~1e-15 relative) amplified by the training
kernel's condition number (~1e4 for the seed's data): rtol = atol = 1e-9 leaves a wide margin and
still catches any wrong block, kind, time or sign. Standard deviations are square roots of variances
that vanish at the training inputs, where the variance's round-off (condition number x eps x K**
~ 1e4 x 2e-16 x 30 ~ 1e-10) becomes sqrt(1e-10) = 1e-5 in the std: STD_TOL allows that.
"""

import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason='the explorer needs pip install "ntkprior[explore]"')
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402
from scipy.stats import norm  # noqa: E402

import ntkprior as ntp  # noqa: E402
from ntkprior.app.explore import requests as rq  # noqa: E402
from ntkprior.app.explore import views  # noqa: E402
from ntkprior.app.explore.server import CLIENT_COOKIE, create_app, plotly_js  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-9)
STD_TOL = dict(rtol=1e-9, atol=1e-5)
SEED_SPEC = ("dense(512, weight_std=1.5, bias_std=0.05) relu dense(512, weight_std=1.5, bias_std=0.05) relu "
             "dense(1, weight_std=1.5, bias_std=0.05)")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(time_limit=60.0)) as c:
        yield c


@pytest.fixture(scope="module")
def seed_data():
    x, y = ntp.seed_sin_data()
    return {"x": x.tolist(), "y": y.tolist()}


def _ok(response) -> dict:
    assert response.status_code == 200, response.text[:400]
    return response.json()


def _error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text[:400]
    message = response.json()["error"]
    assert "Traceback" not in message and 'File "' not in message
    for word in words:
        assert word in message, message
    return message


# ============================================================================== page and assets
def test_page_sets_a_client_cookie_and_serves_plotly_from_the_installed_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "<script src=\"/plotly.min.js\">" in page.text
    assert "cdn" not in page.text.lower() and "http" not in page.text.split("<body>")[0].lower()
    assert page.cookies.get(CLIENT_COOKIE)
    script = client.get("/plotly.min.js")
    assert script.status_code == 200 and script.content == plotly_js().read_bytes()
    assert client.get("/static/explore.js").status_code == 200
    assert client.get("/static/explore.css").status_code == 200


def test_the_page_script_has_no_external_urls_and_no_kernel_math(client):
    """No CDN, and the script computes no model numbers: it never calls exp/log/sqrt on data (only
    log10/10^ for slider positions and pixel <-> coordinate maps)."""
    script = client.get("/static/explore.js").text
    assert "http://" not in script and "https://" not in script
    for forbidden in ("Math.exp", "Math.sqrt", "Math.log(", "Math.erf"):
        assert forbidden not in script


def test_options_list_the_presets_and_every_activation_of_the_grammar(client):
    out = _ok(client.get("/api/options"))
    from ntkprior.arch.layers import Activation
    from ntkprior.arch.spec import LAYERS
    assert set(out["activations"]) == {n for n, cls in LAYERS.items() if issubclass(cls, Activation)}
    assert {"relu", "erf", "gelu", "tanh", "sin"} <= set(out["activations"])
    x, y = ntp.seed_sin_data()
    np.testing.assert_array_equal(out["presets"]["sin"]["x"], x.numpy())
    np.testing.assert_array_equal(out["presets"]["sin"]["y"], y.numpy())
    assert set(out["presets"]) == {"sin", "step", "alternation"}
    assert out["presets"]["alternation"]["y"][:3] == [1.0, -1.0, 1.0]
    assert out["presets"]["step"]["y"] == np.sign(np.linspace(-3, 3, 8)).tolist()
    assert out["limits"]["width"] == rq.MAX_WIDTH and out["limits"]["steps"] == rq.MAX_STEPS
    page = client.get("/").text
    assert all(f'id="{name}"' in page for name in out["limits"])      # each limit bounds a control


# ============================================================================== architecture
def test_controls_give_the_seed_spec_and_parse_back_to_it():
    arch = rq.Arch()
    assert views.controls_spec(arch) == "[dense(512, weight_std=1.5, bias_std=0.05) relu]*2 " \
                                        "dense(1, weight_std=1.5, bias_std=0.05)"
    assert str(views.architecture(arch)) == SEED_SPEC
    one = views.architecture(rq.Arch(depth=1, bias_std=0, parameterization="standard"))
    assert str(one) == "dense(1, weight_std=1.5, bias_std=None, parameterization='standard')"
    two = views.architecture(rq.Arch(depth=2, activation="erf"))
    assert [type(layer).__name__ for layer in two.layers] == ["Dense", "Erf", "Dense"]


def test_spec_endpoint_returns_the_spec_or_the_grammars_caret_message(client):
    assert _ok(client.post("/api/spec", json={"arch": {"spec": "dense(8) tanh dense(1)"}}))["spec"] == \
        "dense(8) tanh dense(1)"
    message = _error(client.post("/api/spec", json={"arch": {"spec": "dense(8) rellu dense(1)"}}), 400,
                     "unknown layer 'rellu'")
    assert message.splitlines()[-1].strip() == "^^^^^" and message.splitlines()[-2].strip() == "dense(8) rellu dense(1)"


@pytest.mark.parametrize("spec, words", [
    ("dense(8) relu dense(3)", ["last Dense layer must have 1 output"]),
    ("[[dense(8) relu]*9]*9 dense(1)", ["repeat counts multiply to 81"]),
    ("tanh(degree=1000) dense(1)", ["quadrature degree"]),
    ("dense(8) relu dense(1, weight_std=os.system)", ["Python literals"]),
    ("relu", ["last Dense layer"]),
])
def test_specs_the_explorer_refuses(client, seed_data, spec, words):
    _error(client.post("/api/posterior", json={"data": seed_data, "arch": {"spec": spec}}), 400, *words)


# ============================================================================== posterior
def _direct_posterior(spec, x, y, grid, t, lr, diag_reg=0.0):
    arch = ntp.parse_spec(spec)
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    return {kind: ntp.predict(arch, x, y, grid, kind, diag_reg=diag_reg,
                              **({"t": t, "learning_rate": lr} if kind == "gd-ensemble" else {}))
            for kind in ("nngp", "ntkgp", "gd-ensemble")}


@pytest.mark.parametrize("t, lr, diag_reg", [(10_000.0, 0.05, 0.0), (37.5, 0.01, 1e-3), (None, 0.05, 0.0)])
def test_posteriors_equal_predict_on_the_architecture(client, seed_data, t, lr, diag_reg):
    out = _ok(client.post("/api/posterior", json={"data": seed_data, "t": t, "learning_rate": lr,
                                                  "diag_reg": diag_reg, "grid": {"low": -4, "high": 4, "n": 50}}))
    grid = ntp.interval_grid(50, -4, 4)
    np.testing.assert_allclose(out["x_test"], grid.numpy(), rtol=0, atol=0)
    direct = _direct_posterior(SEED_SPEC, seed_data["x"], seed_data["y"], grid, t, lr, diag_reg)
    for kind, post in direct.items():
        np.testing.assert_allclose(out[kind]["mean"], post.mean.numpy(), **TOL)
        np.testing.assert_allclose(out[kind]["std"], post.std.numpy(), **STD_TOL)
        np.testing.assert_allclose(out[kind]["upper"], (post.mean + 2 * post.std).numpy(), **STD_TOL)
        np.testing.assert_allclose(out[kind]["lower"], (post.mean - 2 * post.std).numpy(), **STD_TOL)
    theta = ntp.parse_spec(SEED_SPEC).kernel(torch.tensor(seed_data["x"], dtype=torch.float64)).ntk
    limit = ntp.max_stable_learning_rate(ntp.SymmetricPSD(theta, "theta", diag_reg=diag_reg))
    assert out["max_stable_learning_rate"] == pytest.approx(limit, rel=1e-9)
    assert out["lambda_max"] == pytest.approx(2 * 5 / limit, rel=1e-9) and out["m"] == 5
    assert out["spec"] == SEED_SPEC and out["warnings"] == []


@pytest.mark.parametrize("activation", rq.ACTIVATIONS)
def test_every_activation_of_the_controls_gives_the_librarys_posterior(client, seed_data, activation):
    """Inputs scaled into [-1, 1], where the quadrature of the smooth activations is accurate (the
    library warns beyond), and a ridge, because a linear network's kernel on 1-D inputs has rank 2."""
    data = {"x": (0.3 * np.array(seed_data["x"])).tolist(), "y": seed_data["y"]}
    arch = {"depth": 2, "activation": activation, "weight_std": 1.3, "bias_std": 0.4}
    out = _ok(client.post("/api/posterior", json={"data": data, "arch": arch, "diag_reg": 1e-6,
                                                  "grid": {"low": -1, "high": 1, "n": 15}}))
    assert out["warnings"] == []
    spec = views.controls_spec(rq.Arch(**arch))
    assert out["spec"] == str(ntp.parse_spec(spec)) and activation in spec
    direct = _direct_posterior(spec, data["x"], data["y"], ntp.interval_grid(15, -1, 1), 1e4, 0.05,
                               diag_reg=1e-6)
    np.testing.assert_allclose(out["gd-ensemble"]["mean"], direct["gd-ensemble"].mean.numpy(), **TOL)
    np.testing.assert_allclose(out["nngp"]["std"], direct["nngp"].std.numpy(), **STD_TOL)


def test_gd_ensemble_moves_with_time_and_reaches_the_ntk_gp_mean(client, seed_data):
    means = [_ok(client.post("/api/posterior", json={"data": seed_data, "t": t}))["gd-ensemble"]["mean"]
             for t in (10.0, 1e4, 1e12)]
    assert np.max(np.abs(np.subtract(means[0], means[1]))) > 0.1
    converged = _ok(client.post("/api/posterior", json={"data": seed_data, "t": None}))
    np.testing.assert_allclose(means[2], converged["ntkgp"]["mean"], rtol=1e-6, atol=1e-6)


def test_the_plane_gives_heatmaps_in_image_order(client):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (6, 2))
    y = x[:, 0] * x[:, 1]
    out = _ok(client.post("/api/posterior", json={"data": {"x": x.tolist(), "y": y.tolist()},
                                                  "grid": {"low": -3, "high": 3, "n": 7}}))
    line = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(out["axis"], line, atol=1e-15)
    test = np.array(out["x_test"])
    assert test.shape == (49, 2)
    direct = _direct_posterior(SEED_SPEC, x.tolist(), y.tolist(), torch.tensor(test), 1e4, 0.05)
    for kind, post in direct.items():
        image, mean = np.array(out[kind]["mean_image"]), post.mean.numpy()
        np.testing.assert_allclose(out[kind]["mean"], mean, **TOL)
        for i, j in [(0, 0), (2, 5), (6, 1)]:     # row j is x2 = line[j], column i is x1 = line[i]
            np.testing.assert_allclose(test[i * 7 + j], [line[i], line[j]], atol=1e-15)
            assert image[j, i] == pytest.approx(mean[i * 7 + j], rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(np.array(out[kind]["std_image"]).T.reshape(-1), post.std.numpy(), **STD_TOL)


# ============================================================================== eigenmodes
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_eigenmodes_equal_the_library(client, seed_data, kernel):
    out = _ok(client.post("/api/eigen", json={"data": seed_data, "k": 3, "kernel": kernel,
                                              "grid": {"low": -4, "high": 4, "n": 40}}))
    arch, x = ntp.parse_spec(SEED_SPEC), torch.tensor(seed_data["x"], dtype=torch.float64)
    y = torch.tensor(seed_data["y"], dtype=torch.float64)
    modes = ntp.eigenmodes(arch, x, kernel=kernel)
    np.testing.assert_allclose(out["eigenvalues"], modes.values.numpy(), **TOL)
    grid = ntp.interval_grid(40, -4, 4)
    top = ntp.eigenmodes(arch, x, k=3, kernel=kernel)
    np.testing.assert_allclose(np.array(out["functions"]).T, top.functions(grid).numpy(), **TOL)
    table = ntp.KernelPrior.from_arch(arch, x, kernel=kernel).modes(y)
    np.testing.assert_allclose(out["contribution"], table.contribution.numpy(), **TOL)
    np.testing.assert_allclose(out["projection"], table.projection.numpy(), **TOL)
    assert out["rkhs_norm2"] == pytest.approx(table.total, rel=1e-9)
    # against the Cholesky quadratic form (another method): they agree to round-off x condition number
    condition = float(modes.values[0] / modes.values[-1])
    cholesky = ntp.KernelPrior.from_arch(arch, x, kernel=kernel).rkhs_norm(y)
    assert out["rkhs_norm2"] == pytest.approx(cholesky, rel=100 * condition * np.finfo(float).eps)


def test_eigenfunctions_on_the_plane_come_as_images_too(client):
    x = [[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [0.3, 0.1]]
    out = _ok(client.post("/api/eigen", json={"data": {"x": x, "y": [1, 1, -1, -1, 0]}, "k": 2,
                                              "grid": {"low": -2, "high": 2, "n": 5}}))
    functions, images = np.array(out["functions"]), np.array(out["function_images"])
    assert functions.shape == (2, 25) and images.shape == (2, 5, 5)
    test = np.array(out["x_test"])
    direct = ntp.eigenmodes(ntp.parse_spec(SEED_SPEC), torch.tensor(x, dtype=torch.float64), k=2).functions(
        torch.tensor(test, dtype=torch.float64))
    np.testing.assert_allclose(functions, direct.numpy().T, **TOL)
    for i, j in [(0, 4), (3, 1)]:                 # row j is x2 = axis[j], column i is x1 = axis[i]
        assert test[i * 5 + j].tolist() == [out["axis"][i], out["axis"][j]]
        np.testing.assert_allclose(images[:, j, i], functions[:, i * 5 + j], rtol=0, atol=0)


def test_eigenmodes_ask_for_more_than_the_data_have(client, seed_data):
    out = _ok(client.post("/api/eigen", json={"data": seed_data, "k": 12}))
    assert len(out["functions"]) == 5 and len(out["eigenvalues"]) == 5


# ============================================================================== candidates
def test_candidate_equals_rank_candidates_and_explains_the_seeds_y3(client, seed_data):
    out = _ok(client.post("/api/candidate", json={"data": seed_data, "x_star": [2.75], "y_star": 3.0}))
    arch = ntp.parse_spec(SEED_SPEC)
    x, y = torch.tensor(seed_data["x"], dtype=torch.float64), torch.tensor(seed_data["y"], dtype=torch.float64)
    ranking = ntp.rank_candidates(arch, x, y, torch.tensor([[2.75]], dtype=torch.float64), {"three": [3.0]})
    row = ranking["three"]
    assert out["conditional_log_prob"] == pytest.approx(row.conditional_log_prob, rel=1e-9)
    assert out["joint_log_prob"] == pytest.approx(row.joint_log_prob, rel=1e-9)
    assert out["peak_log_prob"] == pytest.approx(ranking.peak_log_prob, rel=1e-9)
    post = ntp.predict(arch, x, y, torch.tensor([[2.75]], dtype=torch.float64), "ntkgp")
    assert out["mean"] == pytest.approx(float(post.mean[0]), rel=1e-9)
    assert out["std"] == pytest.approx(float(post.std[0]), rel=1e-9)
    z = (3.0 - float(post.mean[0])) / float(post.std[0])
    assert out["z"] == pytest.approx(z, rel=1e-9)
    assert out["quantile"] == pytest.approx(norm.cdf(z), rel=1e-9)
    # the puzzle: the conditional density is a parabola in y* peaking at mu* with height peak_log_prob
    at_mean = _ok(client.post("/api/candidate", json={"data": seed_data, "x_star": [2.75], "y_star": out["mean"]}))
    assert at_mean["conditional_log_prob"] == pytest.approx(out["peak_log_prob"], rel=1e-9)
    assert at_mean["conditional_log_prob"] - out["conditional_log_prob"] == pytest.approx(0.5 * z * z, rel=1e-9)


def test_candidate_needs_as_many_coordinates_as_the_data(client, seed_data):
    _error(client.post("/api/candidate", json={"data": seed_data, "x_star": [1.0, 2.0], "y_star": 0}), 400,
           "x_star", "has 2 coordinates")


# ============================================================================== bad requests
@pytest.mark.parametrize("body, status, words", [
    ({"data": {"x": [[0.0]], "y": [1.0, 2.0]}}, 422, ["data", "one label per point"]),
    ({"data": {"x": [[0.0, 1.0], [1.0]], "y": [1.0, 2.0]}}, 422, ["same number of coordinates"]),
    ({"data": {"x": [[0.0, 1.0, 2.0]], "y": [1.0]}}, 422, ["1 (a line) or 2 (a plane)"]),
    ({"data": {"x": [[float(i)] for i in range(rq.MAX_POINTS + 1)], "y": [0.0] * (rq.MAX_POINTS + 1)}}, 422,
     ["data.x", "at most 300"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "grid": {"n": rq.MAX_GRID + 1}}, 422, ["grid.n", "less than or equal to 400"]),
    ({"data": {"x": [[0.0, 0.0]], "y": [1.0]}, "grid": {"n": 41}}, 422, ["grid.n", "at most 40"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "grid": {"low": 2, "high": 1}}, 422, ["low must be below high"]),
    ({"data": {"x": [[1e9]], "y": [1.0]}}, 422, ["data", "[-1000, 1000]"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "arch": {"depth": 99}}, 422, ["arch.depth"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "arch": {"activation": "eval"}}, 422, ["arch.activation"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "arch": {"spec": "x" * 401}}, 422, ["arch.spec"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "learning_rate": 0}, 422, ["learning_rate"]),
    ({"data": {"x": [[0.0]], "y": [1.0]}, "typo": 1}, 422, ["typo", "Extra inputs"]),
    ({"data": {"x": [[1.0], [1.0]], "y": [1.0, 2.0]}}, 400, ["singular", "diag_reg"]),
])
def test_bad_requests_get_one_json_line_naming_the_field(client, body, status, words):
    _error(client.post("/api/posterior", json=body), status, *words)


def test_non_finite_numbers_are_refused(client):
    response = client.post("/api/posterior", content=b'{"data": {"x": [[1.0]], "y": [NaN]}}',
                           headers={"content-type": "application/json"})
    _error(response, 422, "data.y.0", "finite")
    response = client.post("/api/posterior", content=b'{"data": {"x": [[Infinity]], "y": [1]}}',
                           headers={"content-type": "application/json"})
    _error(response, 422, "finite")
    _error(client.post("/api/posterior", content=b"{not json", headers={"content-type": "application/json"}), 422)


def test_only_json_bodies_are_read_so_other_sites_cannot_post(client, seed_data):
    import json
    body = json.dumps({"data": seed_data}).encode()
    _ok(client.post("/api/posterior", content=body, headers={"content-type": "application/json"}))
    for path in ("/api/posterior", "/api/train"):          # a form or text/plain post needs no preflight
        _error(client.post(path, content=body, headers={"content-type": "text/plain"}), 422)


def test_library_warnings_reach_the_page(client):
    out = _ok(client.post("/api/posterior", json={"data": {"x": [[0.0], [0.5]], "y": [0.0, 1.0]},
                                                  "learning_rate": 1000.0}))
    assert any("learning_rate" in w or "stable" in w for w in out["warnings"]), out["warnings"]


# ============================================================================== CSV
def test_csv_is_read_by_the_librarys_loader(client):
    out = _ok(client.post("/api/csv", json={"text": "x,y\n0.5,1\n-1,2.5\n"}))
    assert out == {"x": [[0.5], [-1.0]], "y": [1.0, 2.5]}
    two = _ok(client.post("/api/csv", json={"text": "1,2,3\n4,5,6\n"}))
    assert two == {"x": [[1.0, 2.0], [4.0, 5.0]], "y": [3.0, 6.0]}
    message = _error(client.post("/api/csv", json={"text": "a,b\n1,2\n"}), 400, "csv", "the uploaded file", "'y'")
    assert "/tmp" not in message and "ntkprior-explore" not in message
    _error(client.post("/api/csv", json={"text": "x,y\n1,oops\n"}), 400, "csv")
    _error(client.post("/api/csv", json={"text": "a,b,c,y\n1,2,3,4\n"}), 400, "csv: ", "1 (a line) or 2 (a plane)")
    _error(client.post("/api/csv", json={"text": ""}), 422, "text")


# ============================================================================== training jobs
def _wait(client, seconds=120.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = _ok(client.get("/api/train"))
        if status["state"] != "running":
            return status
        time.sleep(0.2)
    raise AssertionError(f"training still running after {seconds} s: {status}")


SMALL_RUN = {"width": 16, "steps": 60, "learning_rate": 0.05, "ensemble": 2, "seed": 3}


def test_training_runs_in_the_background_and_equals_diagnose(client, seed_data):
    grid = {"low": -4, "high": 4, "n": 25}
    started = _ok(client.post("/api/train", json={"data": seed_data, "grid": grid, **SMALL_RUN}))
    assert started["state"] == "running"
    _error(client.post("/api/train", json={"data": seed_data, "grid": grid, **SMALL_RUN}), 400, "still going")
    status = _wait(client)
    assert status["state"] == "done", status
    assert status["done"] == status["total"] == 61
    result = status["result"]
    x, y = torch.tensor(seed_data["x"], dtype=torch.float64), torch.tensor(seed_data["y"], dtype=torch.float64)
    direct = ntp.diagnose(ntp.parse_spec(SEED_SPEC), x, y, ntp.interval_grid(25, -4, 4), 60, 0.05, width=16,
                          seed=3, ensemble=2)
    np.testing.assert_allclose(result["mean"], direct.ensemble_mean[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["members"], direct.training.test_outputs[:, -1, :, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["lee_mean"], direct.lee_mean[:, 0], **TOL)
    assert result["in_kernel_regime"] == direct.in_kernel_regime and result["reasons"] == direct.reasons
    assert [c["name"] for c in result["checks"]] == [c.name for c in direct.checks]


def test_training_is_cancellable_and_one_client_does_not_see_anothers_job(seed_data):
    with TestClient(create_app(time_limit=60.0)) as c, TestClient(create_app(time_limit=60.0)) as other:
        _ok(c.post("/api/train", json={"data": seed_data, **SMALL_RUN, "steps": 20_000, "width": 512, "ensemble": 16}))
        assert _ok(other.get("/api/train"))["state"] == "none"
        job = c.app.state.jobs._jobs[c.cookies[CLIENT_COOKIE]]
        cancelled = _ok(c.delete("/api/train"))
        assert cancelled["state"] == "cancelled"
        assert job.process.poll() is not None            # the child process is gone


def test_training_is_stopped_at_the_time_limit(seed_data):
    with TestClient(create_app(time_limit=1.0)) as c:
        _ok(c.post("/api/train", json={"data": seed_data, **SMALL_RUN, "steps": 20_000, "width": 512}))
        status = _wait(c, 60)
        assert status["state"] == "timed out" and "limit of 1 s" in status["error"]


def test_at_most_max_jobs_run_on_a_server(seed_data):
    app = create_app(time_limit=60.0, max_jobs=1)
    with TestClient(app) as a, TestClient(app) as b:
        a.get("/"), b.get("/")
        assert a.cookies[CLIENT_COOKIE] != b.cookies[CLIENT_COOKIE]
        _ok(a.post("/api/train", json={"data": seed_data, **SMALL_RUN, "steps": 20_000}))
        _error(b.post("/api/train", json={"data": seed_data, **SMALL_RUN}), 400, "1 training runs are going")
        _ok(a.delete("/api/train"))


@pytest.mark.parametrize("change, words", [
    ({"width": rq.MAX_WIDTH + 1}, ["width"]), ({"steps": rq.MAX_STEPS + 1}, ["steps"]),
    ({"ensemble": rq.MAX_ENSEMBLE + 1}, ["ensemble"]), ({"ensemble": 1}, ["ensemble"]),
])
def test_training_sizes_are_bounded(client, seed_data, change, words):
    _error(client.post("/api/train", json={"data": seed_data, **{**SMALL_RUN, **change}}), 422, *words)


def test_training_memory_is_bounded_by_parameters_times_networks(client, seed_data):
    deep = {"depth": 8}
    _error(client.post("/api/train", json={"data": seed_data, "arch": deep, **{**SMALL_RUN, "width": 1024,
                                                                                 "ensemble": 16}}),
           400, "width, ensemble", "parameters exceed")


def test_the_training_child_reports_the_librarys_error_as_one_message(seed_data):
    import io
    import json
    from ntkprior.app.explore.jobs import run_diagnosis
    out = io.StringIO()
    plan = {"spec": "dense(8) relu dense(1)", "x": seed_data["x"], "y": seed_data["y"], "x_test": [[0.0, 1.0]],
            "steps": 5, "learning_rate": 0.05, "ensemble": 2, "seed": 0, "width": 8}
    run_diagnosis(plan, out)
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert list(messages[-1]) == ["error"] and "x_test" in messages[-1]["error"]


def test_no_job_status_and_cancel_are_harmless(seed_data):
    with TestClient(create_app()) as c:
        assert _ok(c.get("/api/train")) == {"state": "none"}
        assert _ok(c.delete("/api/train")) == {"state": "none"}



def test_finished_jobs_of_old_clients_are_forgotten_beyond_a_bound(monkeypatch):
    from ntkprior.app.explore import jobs

    class Finished:
        running = False

        def __init__(self, plan, time_limit):
            self.plan = plan

        def status(self):
            return {"state": "done", "plan": self.plan}

    monkeypatch.setattr(jobs, "Job", Finished)
    monkeypatch.setattr(jobs.TrainingJobs, "KEEP_FINISHED", 2)
    pool = jobs.TrainingJobs()
    for i in range(5):
        pool.start(f"client {i}", {"i": i})
    assert list(pool._jobs) == ["client 2", "client 3", "client 4"]     # 2 finished + the newest
    assert pool.status("client 0") == {"state": "none"} and pool.status("client 4")["plan"] == {"i": 4}
