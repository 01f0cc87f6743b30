"""The coin study (issue 14): levels, the expert, the encoding, rollouts, the kernel policy against a
brute-force kernel regression, what is (and is not) monotone along the diversity curve, and the report."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

import ntkprior as ntp
from ntkprior.prior.sources import KernelBlocks
from ntkprior.studies import coin

MOVES = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}


def graph_distances(level):
    """Shortest-path lengths between free cells by scipy (an independent reference for the BFS)."""
    h, w = level.shape
    free = ~level.walls
    rows, cols = [], []
    for r in range(h):
        for c in range(w):
            for dr, dc in MOVES.values():
                rr, cc = r + dr, c + dc
                if free[r, c] and 0 <= rr < h and 0 <= cc < w and free[rr, cc]:
                    rows.append(r * w + c), cols.append(rr * w + cc)
    adj = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(h * w, h * w))
    return shortest_path(adj, unweighted=True), w


def dist(d, w, a, b):
    return d[a[0] * w + a[1], b[0] * w + b[1]]


@pytest.fixture(scope="module")
def train_levels():
    return coin.levels(12, seed=3)


@pytest.fixture(scope="module")
def test_levels():
    return coin.levels(8, coin="elsewhere", seed=4)


def test_levels_are_valid(train_levels, test_levels):
    for lv in train_levels + test_levels:
        d, w = graph_distances(lv)
        free = lv.free_cells()
        assert all(np.isfinite(dist(d, w, lv.start, c)) for c in free)          # every free cell reachable
        assert lv.end[1] == lv.shape[1] - 1 and 1 <= lv.start[1] < lv.shape[1] // 2
    assert all(lv.coin == lv.end for lv in train_levels)
    for lv in test_levels:
        assert lv.coin not in (lv.end, lv.start)
        to_coin = set(coin.optimal_actions(lv, lv.start, lv.coin))
        to_end = set(coin.optimal_actions(lv, lv.start, lv.end))
        assert to_coin and to_end and not to_coin & to_end
    assert coin.levels(3, seed=3) == train_levels[:3]                           # the seed fixes the levels


def test_bad_level_arguments():
    with pytest.raises(ValueError, match="coin"):
        coin.levels(2, coin="middle")
    with pytest.raises(ValueError, match="walls"):
        coin.levels(1, height=1, width=3, walls=1)
    with pytest.raises(ValueError, match="n"):
        coin.levels(-1)


def test_bfs_equals_scipy(test_levels):
    for lv in test_levels:
        d, w = graph_distances(lv)
        mine = coin.distances(lv, lv.coin)
        for c in lv.free_cells():
            assert mine[c] == dist(d, w, c, lv.coin)


def test_expert_is_optimal(train_levels, test_levels):
    """The demonstration from the start takes exactly the shortest-path length (scipy's), every move brings the
    agent one step closer, and the last reaches the coin."""
    for lv in train_levels + [replace(t, coin=t.coin) for t in test_levels]:
        demos = coin.demonstrations([lv])
        d, w = graph_distances(lv)
        assert len(demos) == dist(d, w, lv.start, lv.coin)
        cells = [tuple(c) for c in demos.cells] + [lv.coin]
        assert cells[0] == lv.start
        for a, here, there in zip(demos.actions, cells, cells[1:]):
            assert coin.step(lv, here, int(a)) == there
            assert dist(d, w, there, lv.coin) == dist(d, w, here, lv.coin) - 1
        assert torch.equal(demos.y.argmax(1), torch.as_tensor(demos.actions))
        assert torch.equal(demos.y.sum(1), torch.ones(len(demos), dtype=torch.float64))


def test_encoding_round_trips(test_levels):
    for lv in test_levels:
        for cell in lv.free_cells():
            x = coin.encode(lv, cell)
            assert x.shape == (4,) + lv.shape and x.sum() == 3 + lv.walls.sum()
            assert coin.decode(x) == replace(lv, start=cell)
    demos = coin.demonstrations(test_levels)
    assert torch.equal(demos.flat()[0], demos.x[0].reshape(-1))
    with pytest.raises(ValueError, match="agent"):
        coin.decode(np.zeros((4, 3, 7)))
    walled = next(lv for lv in test_levels if lv.walls.any())
    with pytest.raises(ValueError, match="wall"):
        coin.encode(walled, tuple(np.argwhere(walled.walls)[0]))


def walk_right(lv):
    """Where always moving right ends: the first goal on the way, or "neither" at a wall or the border."""
    r, c = lv.start
    while True:
        if (r, c) == lv.coin:
            return "coin"
        if (r, c) == lv.end:
            return "end"
        if c + 1 >= lv.shape[1] or lv.walls[r, c + 1]:
            return "neither"
        c += 1


def test_rollout_of_a_torch_module(test_levels):
    right = torch.nn.Linear(4 * test_levels[0].walls.size, 4).double()
    with torch.no_grad():
        right.weight.zero_()
        right.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    roll = coin.rollout(right, test_levels, flat=True)
    assert roll.outcomes == [walk_right(lv) for lv in test_levels]
    assert math.isclose(sum(roll.fractions.values()), 1.0)
    nan = coin.rollout(lambda x: torch.full((x.shape[0], 4), float("nan")), test_levels)
    assert nan.fractions["neither"] == 1.0
    with pytest.raises(ValueError, match="policy"):
        coin.rollout(lambda x: torch.zeros(x.shape[0], 3), test_levels)
    with pytest.raises(ValueError, match="policy"):
        coin.rollout(np.zeros((2, 4)), test_levels)


def brute_force_episode(arch, flat, demos, lv):
    """Kernel regression written out: at each visited cell encode the state, compute its NTK row against the
    demonstrations, take the argmax of k(x, X) (Θ + ridge)⁻¹ Y, and move (numpy, independent of rollout)."""
    x_train = demos.flat() if flat else demos.x
    theta = arch.kernel(x_train).ntk.numpy()
    ridge = coin.DIAG_REG * np.mean(np.diag(theta))
    alpha = np.linalg.solve(theta + ridge * np.eye(len(theta)), demos.y.numpy())
    cell, path = lv.start, [lv.start]
    for _ in range(lv.walls.size + 1):
        if cell in (lv.coin, lv.end):
            return ("coin" if cell == lv.coin else "end"), path
        x = torch.as_tensor(coin.encode(lv, cell))[None]
        k = arch.kernel(x.flatten(1) if flat else x, x_train).ntk.numpy()
        dr, dc = MOVES[int(np.argmax(k @ alpha))]
        r, c = cell[0] + dr, cell[1] + dc
        if 0 <= r < lv.shape[0] and 0 <= c < lv.shape[1] and not lv.walls[r, c]:
            cell = (r, c)
        if cell in path:
            return "neither", path
        path.append(cell)
    return "neither", path


@pytest.mark.parametrize("name", ["mlp", "cnn_gap"])
def test_kernel_policy_equals_brute_force_kernel_regression(name):
    train = coin.levels(4, height=2, width=5, walls=1, seed=1)
    test = coin.levels(3, coin="elsewhere", height=2, width=5, walls=1, seed=2)
    arch = coin.architecture(name, width=8, depth=1)
    flat = name == "mlp"
    demos = coin.demonstrations(train)
    roll = coin.rollout(coin.kernel_policy(arch, demos, flat=flat), test, flat=flat)
    for lv, outcome, path in zip(test, roll.outcomes, roll.paths):
        expected, visited = brute_force_episode(arch, flat, demos, lv)
        assert outcome == expected
        assert path[:len(visited)] == visited


def test_study_scores_equal_the_kernel_policy():
    """The study's kernel scores from blocks of one pool kernel equal the KernelPolicy on the same states."""
    data = coin.coin_data(coin.QUICK, seed=0)
    arch = coin.architecture("mlp", width=8, depth=1)
    kernels = arch.kernel(data.pool.flatten(1))
    rows, y = data.training_set(0)
    scores = coin.kernel_scores(kernels, rows, y, data.test_index())
    policy = coin.kernel_policy(arch, data.base, flat=True)
    torch.testing.assert_close(scores, policy(data.test_states.x), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------- the diversity curve: what the math says
def conditional(K, train, test, y, labels):
    """log p(labels at test | y at train) under N(0, K), by rank_candidates on blocks of K."""
    blocks = KernelBlocks(K[np.ix_(train, train)], K[np.ix_(test, train)], K[np.ix_(test, test)])
    ranking = ntp.rank_candidates(blocks, None, y, None, {"c": labels}, top_modes=0)
    return ranking["c"].conditional_log_prob, ranking.cov


def test_counterexample_adding_coin_demonstrations_can_lower_the_coin_labeling():
    """The claim "adding demonstrations labelled by the coin goal cannot make the coin labeling less probable under a
    fixed kernel" is false. Bayes: log p(c* | Y, y_new) − log p(c* | Y) = log p(y_new | Y, c*) − log p(y_new | Y),
    which is negative when the new label is surprising given c*. Here a new state b strongly correlated (ρ = 0.9)
    with the test state s gets the coin goal's label −1 while the coin goal labels s with +1."""
    rho = 0.9
    K = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, rho], [0.0, rho, 1.0]], dtype=torch.float64)   # a, b, s
    coin_s, end_s = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    before = [conditional(K, [0], [2], torch.tensor([[1.0]]), lab)[0] for lab in (coin_s, end_s)]
    after = [conditional(K, [0, 1], [2], torch.tensor([[1.0], [-1.0]]), lab)[0] for lab in (coin_s, end_s)]
    # closed forms: before N(·; 0, 1); after N(·; −ρ, 1 − ρ²)
    assert before[0] == pytest.approx(-0.5 - 0.5 * math.log(2 * math.pi), abs=1e-12)
    assert after[0] == pytest.approx(-0.5 * (1 + rho) ** 2 / (1 - rho ** 2) - 0.5 * math.log(2 * math.pi * (1 - rho ** 2)),
                                     abs=1e-12)
    assert after[0] < before[0] - 5                         # the coin labeling is less probable ...
    assert after[0] - after[1] < before[0] - before[1] - 5   # ... and so is its gap over the end labeling


@pytest.fixture(scope="module")
def nested():
    """Pool kernel (with observation noise on every state, so that one Gaussian model serves all conditionals)
    of demonstrations D0 (coins at the end), D1 = D0 + one level with its coin moved, and the deciding states."""
    train = coin.levels(5, height=3, width=5, walls=2, seed=5)
    moved_levels, order = coin.move_coins(train, 1, seed=5)
    test = coin.levels(3, coin="elsewhere", height=3, width=5, walls=2, seed=6)
    d0, extra = coin.demonstrations(train[1:]), coin.demonstrations([moved_levels[order[0]]])
    states = coin.states(test)
    index, coin_y, end_y = coin.deciding_states(test, states)
    x = torch.cat([d0.x, extra.x, states.x[index]]).flatten(1)
    K = coin.architecture("mlp", width=8, depth=2).kernel(x).ntk
    K = K + 1e-2 * K.diagonal().mean() * torch.eye(len(K), dtype=K.dtype)
    n0, n1 = len(d0), len(d0) + len(extra)
    return dict(K=K, D0=list(range(n0)), new=list(range(n0, n1)), D1=list(range(n1)),
                test=list(range(n1, len(K))), y0=d0.y, y_new=extra.y, coin=coin_y, end=end_y)


def test_chain_rule_of_the_gap(nested):
    """What is true instead: the change of log p(c* | ·) when demonstrations are added is exactly
    log p(y_new | Y, c*) − log p(y_new | Y) (Bayes' rule), so the gap grows iff the new demonstrations are better
    explained by the coin labeling of the test states than by the end labeling."""
    n = nested
    y1 = torch.cat([n["y0"], n["y_new"]])
    for labels in (n["coin"], n["end"]):
        change = conditional(n["K"], n["D1"], n["test"], y1, labels)[0] - \
            conditional(n["K"], n["D0"], n["test"], n["y0"], labels)[0]
        given_labels = conditional(n["K"], n["D0"] + n["test"], n["new"], torch.cat([n["y0"], labels]), n["y_new"])[0]
        alone = conditional(n["K"], n["D0"], n["new"], n["y0"], n["y_new"])[0]
        assert change == pytest.approx(given_labels - alone, rel=1e-7, abs=1e-7)


def test_adding_demonstrations_shrinks_the_conditional_covariance(nested):
    """Also true: Σ*(D1) ⪯ Σ*(D0) (Loewner order) whatever the labels, so the density's peak −½ log det 2πΣ* never
    falls. Tolerance: round-off of a float64 kernel of condition ~1e3 (ridge 1e-2 of the mean diagonal)."""
    n = nested
    _, cov0 = conditional(n["K"], n["D0"], n["test"], n["y0"], n["coin"])
    _, cov1 = conditional(n["K"], n["D1"], n["test"], torch.cat([n["y0"], n["y_new"]]), n["coin"])
    assert torch.linalg.eigvalsh(cov0 - cov1).min() > -1e-10 * cov0.diagonal().max()
    assert torch.logdet(cov1) <= torch.logdet(cov0)


def test_move_coins_is_nested(train_levels):
    small, first = coin.move_coins(train_levels, 2, seed=1)
    large, more = coin.move_coins(train_levels, 5, seed=1)
    assert more[:2] == first and all(small[i] == large[i] for i in first)
    assert all(large[i].coin != large[i].end for i in more)
    with pytest.raises(ValueError, match="count"):
        coin.move_coins(train_levels[:1], 3)


def test_diagnose_takes_images_with_several_outputs():
    """diagnose's ensemble-mean message on (n, C, H, W) inputs and one-hot (n, 4) labels (was a crash)."""
    demos = coin.demonstrations(coin.levels(2, height=2, width=4, walls=0, seed=0))
    test = coin.states(coin.levels(1, coin="elsewhere", height=2, width=4, walls=0, seed=1))
    d = ntp.diagnose(coin.architecture("cnn_flatten", width=4, depth=1), demos.x, demos.y, test.x[:3],
                     steps=3, learning_rate=0.5, width=4, ensemble=1)
    assert "test input" in next(c.sentence for c in d.checks if c.name == "ensemble_mean")


# ------------------------------------------------------------- the report
@pytest.mark.slow
def test_quick_report_writes_the_files(tmp_path):
    from ntkprior.app.report import build_report
    out = build_report(tmp_path / "coin", study="coin", quick=True)
    assert out.index.exists() and out.results_path.exists() and len(out.figures) == 3
    assert all(p.exists() and p.stat().st_size > 10_000 for p in out.figures)
    results = json.loads(out.results_path.read_text())
    for name in ("mlp", "cnn_flatten", "cnn_gap"):
        r = results[name]
        assert isinstance(r["prior_logp_gap"], float)
        for fr in [r["kernel_policy"]] + list(r["trained"].values()) + list(r["trained_large_lr"].values()):
            assert sum(fr[o] for o in ("coin", "end", "neither")) == pytest.approx(1.0)
        curve = r["diversity_curve"]
        assert max(p["fraction"] for p in curve) >= 0.5
        assert {"fraction", "prior_logp_gap", "kernel_coin_rate", "trained_coin_rate"} <= set(curve[0])
        assert curve[0]["prior_logp_gap"] == r["prior_logp_gap"]
    html = out.index.read_text()
    assert "What the prior predicts" in html and "figures/coin_levels.png" in html
    with pytest.raises(ValueError, match="coin study"):
        build_report(tmp_path / "bad", study="coin", quick=True, steps=3)


def test_public_path_is_lazy():
    """``ntp.studies.coin`` works from a bare ``import ntkprior``, which still loads no matplotlib."""
    import subprocess
    import sys
    code = ("import sys, ntkprior as ntp; assert 'matplotlib' not in sys.modules; "
            "print(len(ntp.studies.coin.levels(2, seed=0)), 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["2", "False"]
    with pytest.raises(AttributeError, match="no_such_study"):
        ntp.studies.no_such_study


def test_coin_figures_refuse_nothing_to_draw():
    from ntkprior.app import plots
    for figure, arg in ((plots.coin_levels, []), (plots.coin_agreement, []), (plots.coin_diversity, {})):
        with pytest.raises(ValueError, match="nothing to draw"):
            figure(arg)
