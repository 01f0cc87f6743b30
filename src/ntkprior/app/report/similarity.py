"""The layout of the similarity study (:mod:`ntkprior.studies.similarity`): is the lion like the husky?"""

from __future__ import annotations

from functools import partial

from ntkprior.app import plots
from ntkprior.app.report.html import Plan, Report, paragraph, table
from ntkprior.studies import similarity as study
from ntkprior.studies.document.settings import QUICK as DOCUMENT_QUICK

COLUMNS = ["query: A on background 1", "A on background 2", "B on background 1"]


def _pct(v) -> str:
    return f"{100 * v:.1f} %"


def _triptych(rep: Report, sec, result, kernel: str, name: str, shown: int) -> None:
    images = result.arrays["images"][:shown]
    s = result.arrays["similarity"][kernel][:shown]
    fig = plots.similar_inputs(images[:, 0], images[:, 1:], s, labels=COLUMNS[1:], title=kernel)
    sec.blocks.append(rep.figure(fig, name, f"{kernel}: each query beside the same object on another background and "
                                 "another object on the same background, with the normalised kernel s of each to the "
                                 "query; the larger s is what the kernel calls similar.",
                                 "image triptychs with kernel similarities"))


def run(rep: Report, sizes, seed: int) -> dict:
    contrasts = [str(c) for c in study.CONTRASTS]
    base = list(study.exact_specs())
    intro = (f"{sizes.quadruples} quadruples (A, B, background 1, background 2) of held-out digits A, B of different "
             "classes and two of the backgrounds " + ", ".join(study.BACKGROUNDS) + ". A kernel votes for the object "
             "when the query (A on 1) is more similar to A on 2 than to B on 1 by s = k(x,x')/sqrt(k(x,x)k(x',x')). "
             "The background's contrast c decides much of the answer, so it is swept. This section's time is the "
             "whole study's.")
    with rep.section("objects", "1. Same object or same background?", intro) as sec:
        with rep.task("similarity study (kernels, finite CNN)"):
            result = study.similarity_study(sizes, rep.progress, seed)
        numbers = result.numbers
        fractions = numbers["same_object_fraction"]
        rep.results["same_object_fraction"] = fractions
        rows = [[t, *(_pct(fractions[c][t]) for c in contrasts)] for t in base]
        sec.blocks.append(table(["exact NTK", *(f"contrast {c}" for c in contrasts)], rows,
                                "Fraction of queries where the same object wins.", "numbers"))
        for t in base:
            rep.finding(f"{t}: same object wins in " + ", ".join(f"{_pct(fractions[c][t])} at c = {c}" for c in contrasts)
                        + ".")
        with rep.task("triptych figure (exact kernel)"):
            _triptych(rep, sec, result, base[-1], "triptych_exact", sizes.shown)
    sweep = [t for t in fractions[str(study.SWEEP_CONTRAST)] if t not in base]
    if sweep:
        with rep.section("sweep", f"2. Depth, σ_w and σ_b (contrast {study.SWEEP_CONTRAST})",
                         "The same fraction for other depths and weight / bias scales.") as sec:
            c = str(study.SWEEP_CONTRAST)
            sec.blocks.append(table(["exact NTK", "same object wins"], [[t, _pct(fractions[c][t])] for t in base + sweep],
                                    "Fraction of queries where the same object wins.", "numbers"))
    finite = numbers["finite_cnn"]
    with rep.section("after", "3. After training: does learning move similarity to the object?",
                     f"The empirical NTK (mean over the 10 outputs) of a finite CNN, {finite['spec']}, at initialisation and "
                     f"after Adam on cross-entropy of the digit class ({sizes.train_images} images of digits 0-999 on random "
                     f"backgrounds of contrast {study.SWEEP_CONTRAST}, {sizes.steps} steps): a task that depends only on "
                     "the object.") as sec:
        rep.results["after"] = finite
        sec.blocks.append(table(["kernel", "same object wins"],
                                [["finite CNN, initialisation", _pct(finite["before"])],
                                 ["finite CNN, after training", _pct(finite["after"])]],
                                f"Held-out accuracy of the trained CNN on the queries: {_pct(finite['held_out_accuracy'])}.",
                                "numbers"))
        rep.finding(f"training moved the same-object fraction of the finite CNN's NTK from {_pct(finite['before'])} to "
                    f"{_pct(finite['after'])} (held-out accuracy {_pct(finite['held_out_accuracy'])}).")
        sec.blocks.append(paragraph("A fixed kernel cannot change its answer with training; the difference between the "
                                    "two rows is what feature learning did to similarity."))
        with rep.task("triptych figure (after training)"):
            _triptych(rep, sec, result, "finite CNN after training", "triptych_after", sizes.shown)
    return {"data": "scikit-learn's 8x8 digits composed over deterministic backgrounds (12x12 canvas)",
            "architectures": numbers["specs"]}


def plan(sizes, seed: int, **options) -> Plan:
    """``ntkprior report --study similarity``: the full study, or a smoke-sized one with ``--quick``."""
    if options:
        raise ValueError(f"{', '.join(options)}: the similarity study runs on its own data and architectures; "
                         "drop these options")
    mine = study.QUICK if sizes == DOCUMENT_QUICK else study.FULL
    return Plan("Is the lion like the husky? Object against background in a network's kernel",
                "Digits on textures: which images exact and trained kernels call similar", study.tasks(mine) + 3,
                partial(run, sizes=mine, seed=seed))
