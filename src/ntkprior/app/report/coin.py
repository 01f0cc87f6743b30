"""The layout of the coin study (:mod:`ntkprior.studies.coin`): does the NTK predict whether an agent
trained to fetch a coin that always sat at the end of the level goes for the coin or for the end once
the coin is elsewhere? Four sections: the levels, the prior's prediction, trained networks beside it,
and how much diverse data changes the prediction."""

from __future__ import annotations

from functools import partial

from ntkprior.app import plots
from ntkprior.app.report.html import Plan, Report, fmt, paragraph, table, verdict
from ntkprior.studies import coin as study
from ntkprior.studies.document.settings import QUICK

#: The study this layout follows.
SOURCE = {"title": "Goal misgeneralization in deep reinforcement learning",
          "authors": "Lauro Langosco, Jack Koch, Lee Sharkey, Jacob Pfau, David Krueger", "year": 2022,
          "where": "ICML", "url": "https://arxiv.org/abs/2105.14111"}
NAMES = {"mlp": "MLP", "cnn_flatten": "CNN + Flatten", "cnn_gap": "CNN + global average pooling"}
SHORT = {"mlp": "MLP", "cnn_flatten": "CNN-Flatten", "cnn_gap": "CNN-GAP"}
#: Test levels drawn with trajectories.
DRAWN_LEVELS = 4


def _shares(f: dict) -> str:
    return f"coin {100 * f['coin']:.0f} %, end {100 * f['end']:.0f} %, neither {100 * f['neither']:.0f} %"


def _side(gap: float) -> str:
    return "the coin" if gap > 0 else "the end"


LEVELS_INTRO = ("Each level is a grid with walls; training levels always have the coin at the end (the last column), "
                "and the expert walks the shortest path to it. In the test levels the coin lies elsewhere, where the "
                "first move toward the coin and toward the end differ: which goal did the policy learn?")


def levels_page(rep: Report, sec, data, levels_numbers: dict, results: dict) -> None:
    rep.results["levels"] = levels_numbers
    n = levels_numbers
    rep.finding(f"{n['train_levels']} training levels ({n['train_states']} expert states), {n['test_levels']} test "
                f"levels ({n['test_states']} states, {n['deciding_states']} where the two goals need different "
                "moves).")
    with rep.task("level figure"):
        panels, shown = [], data.test_levels[:DRAWN_LEVELS]
        for name, res in results.items():
            widest = list(res.arrays["trained"])[-1]
            for i, level in enumerate(shown):
                paths = {"kernel policy": res.arrays["kernel"].paths[i],
                         "trained network (largest width)": res.arrays["trained"][widest].paths[i]}
                panels.append({"walls": level.walls, "start": level.start, "coin": level.coin, "end": level.end,
                               "paths": paths, "title": f"{SHORT[name]}, test level {i + 1}"})
        fig = plots.coin_levels(panels, ncols=len(shown))
        sec.blocks.append(rep.figure(
            fig, "coin_levels", "Test levels (walls dark, coin orange, end green, start blue) with the episodes "
            "of the kernel policy (argmax of the NTK-GP mean) and of one trained network of the largest width "
            "(kernel-regime learning rate), one row per architecture; × marks where an episode ended (a path "
            "that stops short of both goals looped or "
            "walked into a wall).", "grid levels with trajectories of the policies"))
    sec.blocks.append(table(["", "value"], [
        ["grid (rows × columns)", f"{n['height']} × {n['width']}"], ["random walls per level", n["walls"]],
        ["state encoding", "4 channels: " + ", ".join(n["channels"]) + " (flattened for the MLP)"],
        ["actions (one-hot labels)", ", ".join(n["actions"])], ["training levels", n["train_levels"]],
        ["expert states (training inputs)", n["train_states"]], ["test levels", n["test_levels"]],
        ["test states", n["test_states"]], ["deciding test states", n["deciding_states"]]],
        "The data.", "numbers"))


def prior_section(rep: Report, results: dict) -> None:
    intro = ("The two generalisations are two labelings of the deciding test states — the expert's move toward the "
             "coin, or toward the end — scored by their log-probability given the demonstrations under the NTK-GP "
             "and the NNGP prior (rank_candidates). The kernel's own policy, the argmax of the NTK-GP mean "
             "(the mean of infinitely wide networks trained to convergence), is rolled out in every test level.")
    with rep.section("prior", "2. What the prior predicts", intro) as sec:
        rows, hp_rows = [], []
        for name, res in results.items():
            r = res.numbers
            rep.finding(f"{NAMES[name]}: the NTK prior prefers {_side(r['prior_logp_gap'])} "
                        f"(log p(coin) − log p(end) = {fmt(r['prior_logp_gap'])} nats; NNGP "
                        f"{fmt(r['prior_logp_gap_nngp'])}); the kernel policy goes: {_shares(r['kernel_policy'])}.")
            kp, kn = r["kernel_policy"], r["kernel_policy_nngp"]
            rows.append([NAMES[name], fmt(r["prior_logp_gap"]), fmt(r["prior_logp_gap_nngp"]), fmt(kp["coin"], 3),
                         fmt(kp["end"], 3), fmt(kp["neither"], 3), fmt(kn["coin"], 3), fmt(kn["end"], 3)])
            for h in r["hyperparameters"]:
                hp_rows.append([NAMES[name], h["setting"], h["depth"], fmt(h["weight_std"], 3), fmt(h["bias_std"], 3),
                                fmt(h["prior_logp_gap"]), fmt(h["prior_logp_gap_nngp"]), fmt(h["kernel_coin_rate"], 3),
                                fmt(h["kernel_end_rate"], 3)])
        sec.blocks.append(table(
            ["architecture", "gap NTK (nats)", "gap NNGP (nats)", "kernel policy: coin", "end", "neither",
             "NNGP policy: coin", "end"], rows,
            "The prior's log-probability gap log p(coin labeling | data) − log p(end labeling | data) (positive: the "
            "coin is preferred) and the shares of test episodes of the kernel policies.", "numbers"))
        sec.blocks.append(table(
            ["architecture", "setting", "depth", "σ_w", "σ_b", "gap NTK", "gap NNGP", "kernel policy: coin", "end"],
            hp_rows, "The same per hyperparameter setting (kernel only).", "numbers"))
        sec.blocks.append(paragraph(
            "The gaps are large because the labels are one-hot and the demonstrations noiseless: the conditional "
            "covariance of the test labels is small, so a labeling a few standard deviations from the kernel's "
            "prediction at many states costs many nats. The rollout shares are the behavioural prediction; "
            "'neither' counts episodes where the argmax policy loops or walks into a wall.", "explain"))


def trained_section(rep: Report, results: dict) -> None:
    intro = ("Ensembles of finite networks trained by full-batch gradient descent on the same demonstrations "
             "(½·mean squared error on one-hot moves), at half the kernel's stable maximum learning rate 2m/λ_max "
             "(the kernel regime) and at 1.5 times it (above it: no kernel regime), then rolled out like the kernel.")
    with rep.section("trained", "3. What trained networks do", intro) as sec:
        rows, points = [], []
        for name, res in results.items():
            r = res.numbers
            widths = list(r["trained"])
            for regime, label in (("trained", "kernel regime"), ("trained_large_lr", "larger")):
                for k, w in enumerate(widths):
                    t = r[regime][w]
                    rows.append([NAMES[name], w, label, fmt(t["learning_rate"], 3), t["networks"], t["diverged"],
                                 fmt(t["coin"], 3), fmt(t["end"], 3), fmt(t["neither"], 3),
                                 fmt(r["kernel_policy"]["coin"], 3), fmt(r["kernel_policy"]["end"], 3),
                                 fmt(r["kernel_policy_at_t"]["end"], 3),
                                 fmt(r["disagreement"][f"{regime} width {w}"], 3)])
                    points.append({"arch": NAMES[name], "kernel_coin": r["kernel_policy"]["coin"],
                                   "trained_coin": t["coin"], "kernel_end": r["kernel_policy"]["end"],
                                   "trained_end": t["end"], "gap": r["prior_logp_gap"],
                                   "large_lr": regime != "trained", "size": 1 + k})
            wide = r["trained"][widths[-1]]
            tv = r["disagreement"][f"trained width {widths[-1]}"]
            verdict_text = (f"they agree (total variation {fmt(tv, 2)})" if tv <= study.AGREEMENT else
                            f"they disagree (total variation {fmt(tv, 2)})")
            rep.finding(f"{NAMES[name]}: trained networks of width {widths[-1]} (kernel regime) go: {_shares(wide)}; "
                        f"the kernel policy: {_shares(r['kernel_policy'])}; {verdict_text}. The kernel at the "
                        f"networks' training time goes: {_shares(r['kernel_policy_at_t'])} (total variation "
                        f"{fmt(r['disagreement_at_t'][widths[-1]], 2)}).")
        with rep.task("agreement figure"):
            fig = plots.coin_agreement(points)
            sec.blocks.append(rep.figure(
                fig, "coin_agreement", "The prior's prediction against trained networks: left, the kernel policy's "
                "share of episodes reaching the coin against the trained networks' (the dotted diagonal is "
                "agreement); right, the prior's log-probability gap against the networks' share. Filled: the "
                "kernel regime's learning rate; hollow: the larger one; small and large markers: the two widths.",
                "predicted against measured coin rates"))
        sec.blocks.append(table(
            ["architecture", "width", "learning rate", "η", "networks", "diverged", "coin", "end", "neither",
             "kernel policy: coin", "end", "kernel at t: end", "disagreement (TV)"], rows,
            "Shares of test episodes of the trained networks (averaged over the ensemble) beside the kernel "
            "policy (converged) and the kernel policy at the networks' training time t (the GD-ensemble mean of "
            "infinitely wide networks after the same steps at the kernel-regime learning rate); the last column is "
            "the total-variation distance between the trained and the converged kernel policy's outcomes.",
            "numbers"))
        for name, res in results.items():
            d = res.numbers["diagnosis"]
            if d is None:
                sec.blocks.append(paragraph(f"{NAMES[name]}: every trained ensemble is within {study.AGREEMENT} "
                                            "(total variation) of the kernel policy; no diagnosis needed."))
                continue
            sec.blocks.append(verdict(
                f"{NAMES[name]}, width {d['width']}, η = {fmt(d['learning_rate'], 3)} (disagreement "
                f"{fmt(d['disagreement'], 3)})", d["answers"], d["in_kernel_regime"], d["checks"], d["notes"]))


def _first_half(curve: list, key: str, who: str) -> str:
    """When ``who`` first reaches the coin in at least half the test levels along the diversity curve."""
    reached = [p["fraction"] for p in curve if p[key] >= 0.5]
    verb = "reaches" if who.startswith("the ") else "reach"
    if not reached:
        return (f"{who} {verb} the coin in fewer than half the test levels up to "
                f"{fmt(100 * curve[-1]['fraction'], 3)} % diverse levels")
    return f"{who} {verb} the coin in at least half the test levels from {fmt(100 * min(reached), 3)} % diverse levels on"


def diversity_section(rep: Report, results: dict) -> None:
    intro = ("The same question as the share of training levels with the coin elsewhere grows: how much diverse "
             "data makes the prior prefer the coin, and the policies go for it? The fraction of levels changes at a "
             "fixed number of levels, so both the demonstrations and their labels change: no theorem makes the curve "
             "monotone (see docs/coin.md for a counterexample and what is true).")
    with rep.section("diversity", "4. How much diverse data", intro) as sec:
        curves, rows = {}, []
        for name, res in results.items():
            c = res.numbers["diversity_curve"]
            curves[NAMES[name]] = {"fraction": [p["fraction"] for p in c], "gap": [p["prior_logp_gap"] for p in c],
                                   "kernel": [p["kernel_coin_rate"] for p in c],
                                   "trained": [p["trained_coin_rate"] for p in c]}
            flips = [p["fraction"] for p in c if p["prior_logp_gap"] > 0]
            rep.finding(f"{NAMES[name]}: the NTK prior prefers the coin from {fmt(100 * min(flips), 3)} % diverse "
                        "levels on." if flips else f"{NAMES[name]}: the NTK prior prefers the end at every fraction "
                        f"up to {fmt(100 * c[-1]['fraction'], 3)} %.")
            rep.finding(f"{NAMES[name]}: {_first_half(c, 'kernel_coin_rate', 'the kernel policy')}; "
                        f"{_first_half(c, 'trained_coin_rate', 'trained networks')}.")
            rows += [[NAMES[name], fmt(100 * p["fraction"], 3), p["n_train_states"], fmt(p["prior_logp_gap"]),
                      fmt(p["prior_logp_gap_nngp"]), fmt(p["kernel_coin_rate"], 3), fmt(p["trained_coin_rate"], 3)]
                     for p in c]
        with rep.task("diversity figure"):
            fig = plots.coin_diversity(curves)
            sec.blocks.append(rep.figure(
                fig, "coin_diversity", "Left: the NTK prior's log-probability gap (coin − end, nats; above 0 the coin "
                "is preferred) against the share of training levels with the coin elsewhere. Right: the share of test "
                "episodes reaching the coin, kernel policy (solid) and trained networks of the largest width in the "
                "kernel regime (dashed).", "diversity curves"))
        sec.blocks.append(table(["architecture", "diverse levels (%)", "training states", "gap NTK", "gap NNGP",
                                 "kernel policy: coin", "trained: coin"], rows, "The diversity curve.", "numbers"))


def run(rep: Report, sizes, seed: int) -> dict:
    data = study.coin_data(sizes, seed)
    with rep.section("levels", "1. The levels", LEVELS_INTRO) as sec:
        results = {name: study.arch_study(name, data, sizes, seed, rep.progress) for name in study.ARCHITECTURES}
        rep.results.update({name: r.numbers for name, r in results.items()})   # results.json: one key per architecture
        levels_page(rep, sec, data, study.levels_result(data, sizes).numbers, results)
        sec.blocks.append(paragraph("Every computation of the study (kernels, rollouts, training, diagnoses) runs in "
                                    "this section: its time below is the study's, and the library's warnings from "
                                    "them are listed here."))
    prior_section(rep, results)
    trained_section(rep, results)
    diversity_section(rep, results)
    return {"architectures": {NAMES[n]: r.numbers["spec"] for n, r in results.items()},
            "training": f"{sizes.steps} steps of full-batch gradient descent, {sizes.ensemble} networks per setting"}


def plan(sizes, seed: int, **options) -> Plan:
    """The coin study on built-in levels (``sizes`` is the report's: its quick size gives :data:`study.QUICK`)."""
    if options:
        raise ValueError(f"{', '.join(options)}: the coin study runs on its built-in levels; these options are for "
                         "the document study (--study document)")
    coin_sizes = study.QUICK if sizes == QUICK else study.FULL
    tasks = len(study.ARCHITECTURES) * study.study_tasks(coin_sizes) + 3
    return Plan("ntkprior report: the coin — does the NTK predict goal misgeneralisation?",
                "An agent learns to fetch a coin that always lies at the end of the level; the prior of its network "
                "decides what it does when the coin is elsewhere. The example of",
                tasks, partial(run, sizes=coin_sizes, seed=seed), source=SOURCE)
