"""The explorer in a real browser (headless Chromium driven by Playwright): load the page, add a
training point with the mouse, drag it, move the time slider, read the plotted posterior back and
compare it with the library, see the spec box's caret error, train a small ensemble and see it
finish, pick a candidate label, reload the shared link; a screenshot is saved (and kept in the
directory $NTKPRIOR_SCREENSHOTS when set: ``NTKPRIOR_SCREENSHOTS=docs`` refreshes docs/explore.png).

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` package
(whose own browser download cannot reach the internet here: it is pointed at /usr/bin/chromium).
Tolerance of "equal": as in test_explore_api.py (rtol = atol = 1e-9; atol 1e-5 for standard
deviations, square roots of variances that vanish at the training points); the numbers pass
through JSON, which keeps float64 exactly (17 significant digits).
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason='the explorer needs pip install "ntkprior[explore]"')
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs pip install playwright")

import ntkprior as ntp  # noqa: E402
from test_explore_cli import running_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOL = dict(rtol=1e-9, atol=1e-9)
STD_TOL = dict(rtol=1e-9, atol=1e-5)
WAIT_MS = 60_000
SEED_SPEC = ("dense(512, weight_std=1.5, bias_std=0.05) relu dense(512, weight_std=1.5, bias_std=0.05) relu "
             "dense(1, weight_std=1.5, bias_std=0.05)")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (apt-get update && apt-get install -y "
                                       "chromium); the browser test drives it headless")


@pytest.fixture(scope="module")
def page():
    with running_server() as (url, _), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1250})
        errors = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(url)
        _settled(tab, 0)
        yield tab
        browser.close()
        assert errors == [], errors


def _settled(page, since: int) -> int:
    """Wait until the page has drawn a response newer than ``since`` and nothing is in flight."""
    page.wait_for_function("v => window.explore && window.explore.version() > v && window.explore.idle()",
                           arg=since, timeout=WAIT_MS)
    return page.evaluate("window.explore.version()")


def _trace(page, meta: str, plot: str = "posterior") -> dict:
    return page.evaluate("([plot, meta]) => { const t = document.getElementById(plot).data.find(d => d.meta === meta);"
                         " return t ? {x: Array.from(t.x), y: Array.from(t.y)} : null; }", [plot, meta])


def _library(page, kind: str, **timed):
    """The library's posterior for the data the page holds now, at the plotted inputs."""
    data = page.evaluate("window.explore.state.data")
    x, y = torch.tensor(data["x"], dtype=torch.float64), torch.tensor(data["y"], dtype=torch.float64)
    return ntp.predict(ntp.parse_spec(SEED_SPEC), x, y, ntp.interval_grid(200, -4, 4), kind, **timed)


def _plot_area(page):
    return page.locator("#posterior .nsewdrag").bounding_box()


def test_page_loads_the_seed_points_and_plots_the_librarys_posteriors(page):
    data = page.evaluate("window.explore.state.data")
    x, y = ntp.seed_sin_data()
    np.testing.assert_array_equal(data["x"], x.numpy())
    plotted = _trace(page, "ntkgp mean")
    np.testing.assert_allclose(plotted["x"], ntp.interval_grid(200, -4, 4)[:, 0].numpy(), atol=1e-15)
    np.testing.assert_allclose(plotted["y"], _library(page, "ntkgp").mean.numpy(), **TOL)
    nngp = _library(page, "nngp")
    np.testing.assert_allclose(_trace(page, "nngp lower")["y"], (nngp.mean - 2 * nngp.std).numpy(), **STD_TOL)
    limit = page.inner_text("#lr-max")
    theta = ntp.parse_spec(SEED_SPEC).kernel(x).ntk
    assert float(limit) == pytest.approx(ntp.max_stable_learning_rate(theta), rel=1e-3)   # shown to 4 digits
    assert page.is_visible("#lr-limit")


def test_clicking_adds_a_point_and_the_gd_posterior_follows(page):
    before = _trace(page, "gd-ensemble mean")["y"]
    version = page.evaluate("window.explore.version()")
    box = _plot_area(page)
    page.mouse.click(box["x"] + 0.8 * box["width"], box["y"] + 0.3 * box["height"])
    _settled(page, version)
    data = page.evaluate("window.explore.state.data")
    assert len(data["x"]) == 6 and 1.5 < data["x"][-1][0] < 3.0
    after = _trace(page, "gd-ensemble mean")["y"]
    assert np.max(np.abs(np.subtract(after, before))) > 0.05
    np.testing.assert_allclose(after, _library(page, "gd-ensemble", t=1e4, learning_rate=0.05).mean.numpy(), **TOL)


def test_dragging_moves_the_point_and_right_click_removes_it(page):
    box = _plot_area(page)
    start = (box["x"] + 0.8 * box["width"], box["y"] + 0.3 * box["height"])      # the point added above
    version = page.evaluate("window.explore.version()")
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0], start[1] + 0.2 * box["height"], steps=5)
    page.mouse.up()
    version = _settled(page, version)
    data = page.evaluate("window.explore.state.data")
    assert len(data["x"]) == 6
    moved_y = data["y"][-1]
    page.wait_for_timeout(200)
    np.testing.assert_allclose(_trace(page, "ntkgp mean")["y"], _library(page, "ntkgp").mean.numpy(), **TOL)
    # right-click where the point now is removes it
    pixel = page.evaluate("() => { const gd = document.getElementById('posterior'), l = gd._fullLayout,"
                          " b = gd.getBoundingClientRect(), s = window.explore.state;"
                          " return [b.left + l.xaxis._offset + l.xaxis.l2p(s.data.x[5][0]), b.top + l.yaxis._offset + l.yaxis.l2p(s.data.y[5])]; }")
    assert moved_y < 1.0
    page.mouse.click(*pixel, button="right")
    _settled(page, version)
    assert len(page.evaluate("window.explore.state.data")["x"]) == 5


def test_the_time_slider_moves_the_gd_ensemble(page):
    version = page.evaluate("window.explore.version()")
    page.locator("#log-t").fill("2")
    _settled(page, version)
    assert page.inner_text("#t-value") == "100"
    plotted = _trace(page, "gd-ensemble mean")["y"]
    np.testing.assert_allclose(plotted, _library(page, "gd-ensemble", t=100.0, learning_rate=0.05).mean.numpy(), **TOL)
    assert "#log-t" and "%22logT%22%3A2" in page.url         # the state is in the URL


def test_the_spec_box_shows_the_grammars_caret_inline(page):
    page.fill("#spec", "dense(8) rellu dense(1)")
    page.wait_for_selector("#spec-error:not([hidden])", timeout=WAIT_MS)
    message = page.inner_text("#spec-error")
    assert "unknown layer 'rellu'" in message and "^^^^^" in message
    page.click("#use-controls")
    page.wait_for_selector("#spec-error", state="hidden", timeout=WAIT_MS)


def test_training_networks_runs_in_the_background_and_overlays_them(page):
    for field, value in (("#width", "32"), ("#steps", "100"), ("#ensemble", "4")):
        page.fill(field, value)
        page.dispatch_event(field, "change")
    page.click("#train")
    page.wait_for_function("document.getElementById('train-state').textContent !== ''", timeout=WAIT_MS)
    # the page keeps answering while the networks train (they train in another process)
    version = page.evaluate("window.explore.version()")
    page.locator("#log-t").fill("3")
    _settled(page, version)
    np.testing.assert_allclose(_trace(page, "gd-ensemble mean")["y"],
                               _library(page, "gd-ensemble", t=1000.0, learning_rate=0.05).mean.numpy(), **TOL)
    page.wait_for_function("document.getElementById('train-state').dataset.state === 'done'", timeout=180_000)
    assert page.is_visible("#verdict") and "diagnose: 4 networks, 100 steps" in page.inner_text("#verdict")
    mean = _trace(page, "trained mean")
    result = page.evaluate("window.explore.trained().result")
    np.testing.assert_allclose(mean["y"], result["mean"], rtol=0, atol=0)
    assert len(result["members"]) == 4
    assert page.evaluate("document.getElementById('posterior').data.filter(d => d.meta === 'trained member').length") == 4


def test_a_candidate_label_shows_log_p_from_the_library(page):
    version = page.evaluate("window.explore.version()")
    page.select_option("#mouse", "candidate")
    version = _settled(page, version)
    box = _plot_area(page)
    page.mouse.click(box["x"] + 0.85 * box["width"], box["y"] + 0.15 * box["height"])
    _settled(page, version)
    shown = page.evaluate("window.explore.last.candidate")
    data = page.evaluate("window.explore.state.data")
    x, y = torch.tensor(data["x"], dtype=torch.float64), torch.tensor(data["y"], dtype=torch.float64)
    ranking = ntp.rank_candidates(ntp.parse_spec(SEED_SPEC), x, y, torch.tensor([shown["x_star"]], dtype=torch.float64),
                                  {"y*": [shown["y_star"]]})
    assert shown["conditional_log_prob"] == pytest.approx(ranking["y*"].conditional_log_prob, rel=1e-9)
    text = page.inner_text("#candidate")
    assert "log p(y* | data)" in text and "y = 3" in text
    assert _trace(page, "candidate") is not None


def test_downloads_give_the_figure_and_the_numbers(page, tmp_path):
    with page.expect_download() as download:
        page.click("#json")
    saved = tmp_path / "numbers.json"
    download.value.save_as(saved)
    numbers = json.loads(saved.read_text())
    assert numbers["posterior"] == page.evaluate("window.explore.last.posterior")
    assert numbers["state"]["data"] == page.evaluate("window.explore.state.data")
    assert numbers["training"]["mean"] == page.evaluate("window.explore.trained().result.mean")
    for fmt, magic in (("png", b"\x89PNG"), ("svg", b"<svg")):
        with page.expect_download() as download:
            page.click(f"#{fmt}")
        path = tmp_path / f"figure.{fmt}"
        download.value.save_as(path)
        assert path.read_bytes()[:4] == magic[:4] and path.stat().st_size > 10_000


def test_the_link_reproduces_the_page_and_a_screenshot_is_kept(page, tmp_path):
    page.wait_for_timeout(300)
    shot = tmp_path / "explore.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    kept = os.environ.get("NTKPRIOR_SCREENSHOTS")     # a directory to keep it in (CI artifact, docs/)
    if kept:
        partial = Path(kept) / "explore.png.partial"
        shutil.copyfile(shot, partial)
        os.replace(partial, Path(kept) / "explore.png")
    state = page.evaluate("window.explore.state")
    page.goto(page.url)
    page.reload()
    _settled(page, 0)
    again = page.evaluate("window.explore.state")
    assert again["data"] == state["data"] and again["logT"] == state["logT"] and again["candidate"] == state["candidate"]


def test_the_plane_shows_heatmaps_and_a_click_adds_a_point_where_it_lands(page):
    version = page.evaluate("window.explore.version()")
    page.select_option("#mouse", "points")
    version = _settled(page, version)
    page.select_option("#dim", "2")
    version = _settled(page, version)
    assert page.is_visible("#heat-mean") and not page.is_visible("#posterior")
    # the pixel of (x1, x2) = (1, -1) on the mean heatmap, from plotly's own axes
    pixel = page.evaluate("() => { const gd = document.getElementById('heat-mean'), l = gd._fullLayout,"
                          " b = gd.getBoundingClientRect();"
                          " return [b.left + l.xaxis._offset + l.xaxis.l2p(1), b.top + l.yaxis._offset + l.yaxis.l2p(-1)]; }")
    page.mouse.click(*pixel)
    _settled(page, version)
    data = page.evaluate("window.explore.state.data")
    assert len(data["x"]) == 5
    np.testing.assert_allclose(data["x"][-1], [1.0, -1.0], atol=0.05)       # within a pixel or two
    image = page.evaluate("Array.from(document.getElementById('heat-mean').data[0].z, r => Array.from(r))")
    x, y = torch.tensor(data["x"], dtype=torch.float64), torch.tensor(data["y"], dtype=torch.float64)
    line = ntp.interval_grid(30, -4, 4)[:, 0]
    grid = torch.cartesian_prod(line, line)                                 # rows: x1 slow, x2 fast
    t = page.evaluate("window.explore.last.posterior.t")                   # as the slider left it
    mean = ntp.predict(ntp.parse_spec(SEED_SPEC), x, y, grid, "gd-ensemble", t=t, learning_rate=0.05).mean
    np.testing.assert_allclose(np.array(image).T.reshape(-1), mean.numpy(), **TOL)
