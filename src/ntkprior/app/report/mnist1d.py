"""The layout of the MNIST-1D study (:mod:`ntkprior.studies.mnist1d`): accuracy of exact kernels and
trained networks beside the published numbers, width agreement, the prior's view, eigenfunctions,
and the circulant structure on a signal's orbit of shifts."""

from __future__ import annotations

import importlib.util
from functools import partial

import numpy as np

from ntkprior.app import plots
from ntkprior.app.report.html import Plan, Report, fmt, paragraph, table
from ntkprior.studies import mnist1d as study
from ntkprior.studies.document.settings import QUICK as DOCUMENT_QUICK

SOURCE = {"title": "Scaling down deep learning", "authors": "Sam Greydanus", "where": "arXiv:2011.14439",
          "year": 2020, "url": "https://arxiv.org/abs/2011.14439"}
NAMES = {"mlp": "MLP", "cnn_flatten": "CNN, Flatten", "cnn_gap": "CNN, GAP"}
VARIANTS = ("standard", "shuffled")


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _kernel_rows(numbers: dict, sizes) -> list:
    rows = []
    for name in study.SPECS:
        for kind in study.KERNELS:
            key = f"{name}_{kind}"
            n = (sizes.n_gap_train, sizes.n_gap_test) if name == "cnn_gap" else (sizes.n_train, sizes.n_test)
            published = numbers["accuracy"]["published"]
            pub = [published[v].get("cnn" if name == "cnn_flatten" else name) if kind == "ntk" else None
                   for v in VARIANTS]
            rows.append([f"{NAMES[name]} {kind.upper()} (exact, kernel regression)", key, f"{n[0]} / {n[1]}",
                         *(_pct(numbers["accuracy"][v][key]) for v in VARIANTS),
                         *(fmt(numbers["ridge"][v][key], 2) for v in VARIANTS), *(_pct(p) for p in pub)])
    return rows


def _trained_rows(numbers: dict, sizes) -> list:
    rows = []
    for key in numbers["accuracy"]["standard"]:
        if not key.startswith("trained_"):
            continue
        name, rest = key[len("trained_"):].rsplit("_w", 1)
        width, loss = rest.split("_")
        rows.append([f"{NAMES[name]} width {width}, trained ({'MSE on one-hot' if loss == 'mse' else 'cross-entropy'})",
                     key, f"{sizes.n_train} / {sizes.n_test}", *(_pct(numbers["accuracy"][v][key]) for v in VARIANTS),
                     "–", "–", "–", "–"])
    return rows


def accuracy_section(rep: Report, sizes, seed: int):
    """Runs the whole study (its time is this section's) and lays out the accuracy table; returns the result."""
    intro = ("Exact infinite-width NNGP and NTK of the MNIST-1D authors' MLP (40-100-100-10) and CNN (three "
             "stride-2 1-D convolutions of 25 channels, Flatten or global-average-pool readout) classify by kernel "
             "regression of one-hot labels; the ridge is chosen on a validation split (the last "
             f"{sizes.n_val} training signals; ridges {', '.join(fmt(r, 1) for r in study.RIDGES)} relative to the mean "
             "diagonal), then refitted on all training signals. Trained finite networks use Adam (lr 0.01, batch 100, "
             f"{sizes.steps} steps) in the same NTK parameterisation. 'shuffled' permutes the 40 positions of every "
             "signal by one fixed permutation. This section's time is the whole study's.")
    with rep.section("classification", "1. Accuracy: kernels, trained networks, published", intro) as sec:
        with rep.task("MNIST-1D study (kernels, networks, modes)"):
            result = study.mnist1d_study(sizes, rep.progress, seed)
        numbers = result.numbers
        rep.results["accuracy"] = numbers["accuracy"]
        rep.results["classification"] = {k: numbers[k] for k in ("ridge", "validation", "sizes", "ridges_tried")}
        a = numbers["accuracy"]
        rep.finding(f"CNN (Flatten) NTK {_pct(a['standard']['cnn_flatten_ntk'])} vs MLP NTK "
                    f"{_pct(a['standard']['mlp_ntk'])}; shuffled: {_pct(a['shuffled']['cnn_flatten_ntk'])} vs "
                    f"{_pct(a['shuffled']['mlp_ntk'])} (published CNN 94 % / 56 %, MLP 68 % / 68 %).")
        rep.finding("The MLP's kernels are identical on the shuffled variant (a dot-product kernel is invariant to "
                    "permuting the coordinates of both inputs): its accuracy cannot change.")
        headers = ["model", "results.json key", "train / test", "standard", "shuffled", "ridge (std)",
                   "ridge (shuf)", "published (std)", "published (shuf)"]
        sec.blocks.append(table(headers, _kernel_rows(numbers, sizes) + _trained_rows(numbers, sizes),
                                "Test accuracy. Published: the authors' trained MLP and CNN (Greydanus 2020), shown on "
                                "the NTK rows for comparison; their logistic regression: 32 %. "
                                "The GAP CNN's kernels carry positions² per pair and run on a subset (train / test "
                                "column).", "numbers"))
        with rep.task("accuracy figure"):
            groups = {v: {k: a[v][k] for k in a[v]} for v in VARIANTS}
            groups["published"] = {"mlp_ntk": a["published"]["standard"]["mlp"],
                                   "cnn_flatten_ntk": a["published"]["standard"]["cnn"]}
            sec.blocks.append(rep.figure(plots.accuracy_bars(groups, title="MNIST-1D test accuracy"), "accuracy",
                                         "Test accuracy of every kernel and trained network, standard and shuffled; "
                                         "the published MLP and CNN numbers (standard) are drawn at the NTK bars.",
                                         "bar chart of test accuracies"))
    return result


def width_section(rep: Report, result) -> None:
    agreement = result.numbers["agreement_with_cntk"]
    with rep.section("width", "2. Width: trained CNNs against the CNTK",
                     "How often a trained Flatten CNN (MSE) predicts the same class as the exact NTK's kernel "
                     "regression, per width.") as sec:
        rep.results["width"] = {"agreement_with_cntk": agreement}
        rows = [[w, *(_pct(agreement[v].get(w)) for v in VARIANTS)] for w in agreement["standard"]]
        sec.blocks.append(table(["channels", "agreement (standard)", "agreement (shuffled)"], rows,
                                "Share of test signals where argmax of the trained network equals argmax of the "
                                "CNTK regression.", "numbers"))
        for w, v in agreement["standard"].items():
            rep.finding(f"width {w}: the trained CNN agrees with the CNTK on {_pct(v)} of test signals.")


def prior_section(rep: Report, result) -> None:
    variants = result.arrays["variants"]
    numbers = result.numbers
    with rep.section("prior", "3. The prior's view: which eigenmodes carry the labels",
                     "Eigenmodes of each NTK (scaled to mean diagonal 1, plus the chosen ridge) on training signals; "
                     "the share of the centred one-hot labels' energy on the top k modes, and log p(labels) under "
                     "the Gaussian prior N(0, K + r·I), summed over modes.") as sec:
        rep.results["prior"] = {k: numbers[k] for k in ("label_share_top", "log_p_labels")}
        rows = []
        for v in VARIANTS:
            for name, share in numbers["label_share_top"][v].items():
                rows.append([v, name, *(_pct(share[m]) for m in ("1", "10", "30", "100")),
                             fmt(numbers["log_p_labels"][v][name], 6)])
        sec.blocks.append(table(["variant", "kernel", "top 1", "top 10", "top 30", "top 100", "log p(labels)"],
                                rows, "Share of label energy in the top-k eigenmodes.", "numbers"))
        curves = {f"{name} ({v})": variants[v]["prior"][name]["share"] for v in VARIANTS
                  for name in variants[v]["prior"]}
        with rep.task("label-share figure"):
            sec.blocks.append(rep.figure(plots.cumulative_shares(curves, title="Label energy in the top modes"),
                                         "label_share", "Cumulative share of the centred one-hot label energy on the "
                                         "top k eigenmodes of each kernel.", "cumulative label share curves"))
        s = numbers["label_share_top"]["standard"]
        rep.finding(f"top 10 modes hold {_pct(s['cnn_flatten_ntk']['10'])} of the label energy for the CNN NTK, "
                    f"{_pct(s['mlp_ntk']['10'])} for the MLP NTK (standard).")


def eigenfunction_section(rep: Report, result) -> None:
    variants = result.arrays["variants"]
    shift = result.numbers["shift_correlation"]
    with rep.section("eigenfunctions", "4. Eigenfunctions over the data",
                     "Each top eigenvector v of the training NTK seen in input space as m = Σ_j v_j x_j: for a "
                     "linear kernel this is the principal direction of the data; for a network's kernel, the "
                     "signal pattern the mode tracks. Shift invariance: the correlation over signals between "
                     "the Nyström eigenfunction φ(x) = k(x, X)v/λ and φ(Sx), S the circular shift by one "
                     "position.") as sec:
        rep.results["eigenfunctions"] = {"shift_correlation": shift}
        panels = {f"{name} ({v})": variants[v]["signals"][name] for v in VARIANTS for name in variants[v]["signals"]}
        with rep.task("eigenfunction figure"):
            sec.blocks.append(rep.figure(plots.signal_modes(panels, title="Top eigenmodes as signals"),
                                         "mode_signals", "The top eigenmodes of each NTK as input-space signals "
                                         "m_i = Σ_j v_ij x_j.", "eigenmode signals"))
        rows = [[v, NAMES[name], *(fmt(c, 3) for c in corr)] for v in VARIANTS for name, corr in shift[v].items()]
        modes = len(next(iter(shift["standard"].values())))
        sec.blocks.append(table(["variant", "kernel", *(f"mode {i + 1}" for i in range(modes))], rows,
                                "corr(φ_i(x), φ_i(Sx)) over signals: 1 = unchanged by a one-position shift.",
                                "numbers"))
        mean = {name: float(np.mean(c)) for name, c in shift["standard"].items()}
        rep.finding("mean shift correlation of the top eigenfunctions (standard): "
                    + ", ".join(f"{NAMES[n]} {fmt(c, 3)}" for n, c in mean.items()) + ".")


def symmetry_section(rep: Report, result) -> None:
    orbit = result.arrays["orbit"]
    with rep.section("symmetry", "5. Symmetry and sinusoids",
                     "The NTK on the 40 circular shifts of one MNIST-1D signal. A circularly padded stride-1 CNN "
                     "commutes with the shift, so this matrix is circulant and its eigenvectors are Fourier modes "
                     "(eigenvalues = the DFT of its first row). The MLP's kernel is circulant on an orbit too "
                     "(x·y is unchanged by shifting both inputs); zero padding and strides break it.") as sec:
        rep.results["symmetry"] = {"circulant_distance": result.numbers["orbit_circulant_distance"]}
        rows = [[t, fmt(o["distance"], 3)] for t, o in orbit.items()]
        rep.finding("distance of the orbit NTK from a circulant matrix: "
                    + ", ".join(f"{t} {fmt(o['distance'], 2)}" for t, o in orbit.items()) + ".")
        sec.blocks.append(table(["kernel", "‖K − circulant(K)‖ / ‖K‖ = off-diagonal share in the Fourier basis"],
                                rows, "0 up to round-off means: Fourier modes are exact eigenvectors.", "numbers"))
        with rep.task("orbit figure"):
            fig = plots.orbit_kernels({t: o["matrix"] for t, o in orbit.items()},
                                      {t: (o["eigenvalues"], o["dft"]) for t, o in orbit.items()},
                                      title="NTK on the circular shifts of one signal")
            sec.blocks.append(rep.figure(fig, "orbit", "Top: each NTK on the orbit of shifts. Bottom: its eigenvalues "
                                         "and the DFT of its circulant part (they coincide for a circulant matrix).",
                                         "orbit kernel matrices and spectra"))
        sec.blocks.append(paragraph("What separates the CNN from the MLP on the data is not this orbit identity but "
                                    "locality and, with GAP, invariance to shifting one input alone; sections 1-4 "
                                    "measure its consequences."))


def run(rep: Report, sizes, seed: int) -> dict:
    result = accuracy_section(rep, sizes, seed)
    width_section(rep, result)
    prior_section(rep, result)
    eigenfunction_section(rep, result)
    symmetry_section(rep, result)
    return {"data": f"MNIST-1D ({sizes.num_samples} signals generated by the mnist1d package, seed 42)",
            "architectures": {NAMES[k]: v for k, v in study.SPECS.items()}}


def plan(sizes, seed: int, **options) -> Plan:
    """``ntkprior report --study mnist1d``: the full study, or a smoke-sized one with ``--quick``."""
    if options:
        raise ValueError(f"{', '.join(options)}: the MNIST-1D study runs on its own data and architectures; "
                         "drop these options")
    if importlib.util.find_spec("mnist1d") is None:
        raise ValueError("study: the MNIST-1D study needs the mnist1d package: pip install 'ntkprior[studies]'")
    mine = study.QUICK if sizes == DOCUMENT_QUICK else study.FULL
    return Plan("MNIST-1D: what a CNN's prior knows that an MLP's does not",
                "Exact kernels, trained networks, eigenmodes and symmetry on the benchmark of",
                study.tasks(mine) + 5, partial(run, sizes=mine, seed=seed), source=SOURCE)
