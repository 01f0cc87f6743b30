"""Is the lion like the husky? Whether a network's kernel calls two images alike for their object or
for their background, measured on scikit-learn's bundled 8x8 digits (Alpaydin & Kaynak 1998).

An image is an "object" (a digit, intensity d in [0, 1]) composed over a "background" texture b
in [0, 1] of contrast c on a larger canvas by alpha compositing with the digit as its own alpha:
``x = (1 − d)·c·b + d``. The contrast decides the answer, so it is swept.
For a query (object A on background 1) and two references, "A on background 2" and "B on
background 1", the kernel votes for the object when

    s(query, A on 2) > s(query, B on 1),   s(x, x') = k(x, x') / sqrt(k(x, x) k(x', x')).

The study reports the fraction of (A, B, background 1, background 2) quadruples where the object
wins, for exact kernels at several depths and σ_w/σ_b, and for the empirical NTK of a finite CNN
before and after training on a task that depends only on the object (the digit's class with
random backgrounds): the change is the part of similarity that feature learning moves and a
fixed kernel cannot (Fort et al. 2020, "Deep learning versus kernel learning").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.arch.spec import parse_spec
from ntkprior.prior.similarity import normalised_kernel
from ntkprior.studies.progress import Progress
from ntkprior.studies.result import StudyResult

__all__ = ["BACKGROUNDS", "backgrounds", "compose", "digits", "quadruples", "same_object_fraction",
           "SimilaritySizes", "similarity_study"]

CANVAS = 12          #: the composed image is CANVAS x CANVAS, the 8x8 digit in its centre
BACKGROUNDS = ("horizontal stripes", "vertical stripes", "diagonal stripes", "anti-diagonal stripes",
               "checkerboard", "gradient", "smooth noise")


def backgrounds(size: int = CANVAS) -> dict[str, np.ndarray]:
    """The textures, deterministic, values in [0, 1]: stripes of period 4 at four orientations, a
    checkerboard of 2x2 squares, a left-to-right gradient, and smooth noise (white noise of a fixed
    seed blurred by a Gaussian of width 1.5 pixels, rescaled to [0, 1])."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    stripes = lambda t: 0.5 + 0.5 * np.cos(2 * np.pi * t / 4)
    noise = np.random.default_rng(0).standard_normal((size, size))
    g = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    g /= g.sum()
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda r: np.convolve(np.pad(r, 4, mode="wrap"), g, mode="valid"), axis, noise)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    out = {"horizontal stripes": stripes(i), "vertical stripes": stripes(j), "diagonal stripes": stripes(i + j),
           "anti-diagonal stripes": stripes(i - j), "checkerboard": ((i // 2 + j // 2) % 2).astype(float),
           "gradient": j / (size - 1), "smooth noise": noise}
    return {name: out[name] for name in BACKGROUNDS}


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 bundled 8x8 digits as intensities in [0, 1], and their classes."""
    from sklearn.datasets import load_digits
    data = load_digits()
    return data.images / 16.0, data.target


def compose(objects: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Objects (n, 8, 8) in [0, 1] over one background (CANVAS, CANVAS): ``(1 − d)·b + d`` with d the
    object placed in the centre (zero elsewhere); returned as images (n, 1, CANVAS, CANVAS)."""
    objects = np.asarray(objects, dtype=float)
    if objects.ndim != 3 or objects.shape[1:] != (8, 8):
        raise ValueError(f"objects: expected (n, 8, 8) digits, got shape {objects.shape}")
    size = background.shape[0]
    d = np.zeros((objects.shape[0], size, size))
    o = (size - 8) // 2
    d[:, o:o + 8, o:o + 8] = objects
    return ((1 - d) * background[None] + d)[:, None]


def quadruples(n: int, labels: np.ndarray, pool: np.ndarray, seed: int) -> np.ndarray:
    """``n`` rows (A, B, background 1, background 2): digits A and B of different classes drawn from
    the indices ``pool``, and two different backgrounds; reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:                       # bounded: a different class is found with probability 0.9
        a, b = rng.choice(pool, 2, replace=False)
        if labels[a] == labels[b]:
            continue
        b1, b2 = rng.choice(len(BACKGROUNDS), 2, replace=False)
        rows.append((a, b, b1, b2))
    return np.array(rows)


def triples(objects: np.ndarray, quads: np.ndarray, contrast: float) -> torch.Tensor:
    """Per quadruple the images (query = A on 1, A on 2, B on 1) with backgrounds of ``contrast``:
    (n, 3, 1, CANVAS, CANVAS)."""
    bg = [contrast * b for b in backgrounds().values()]
    out = [np.concatenate([compose(objects[[a]], bg[b1]), compose(objects[[a]], bg[b2]),
                           compose(objects[[b]], bg[b1])]) for a, b, b1, b2 in quads]
    return torch.tensor(np.stack(out), dtype=torch.float64)


def same_object_fraction(kernel_fn, images: torch.Tensor) -> dict:
    """With ``kernel_fn(x) -> (3, 3)`` a kernel matrix on (query, same object, same background):
    the fraction of triples where the same object is more similar, and both similarities per triple."""
    s = []
    for trio in images:
        k = kernel_fn(trio)
        d = k.diagonal()
        s.append(normalised_kernel(k[:1, 1:], d[:1], d[1:])[0])
    s = torch.stack(s)
    return {"fraction": float((s[:, 0] > s[:, 1]).double().mean()), "similarity": s}


# ====================================================================== the study
@dataclass(frozen=True)
class SimilaritySizes:
    quadruples: int
    train_images: int       #: composed training images of the object-only task
    steps: int
    width: int              #: channels of the finite CNN
    shown: int = 4          #: triptychs drawn per kernel
    sweep: bool = True      #: also the depth / σ_w / σ_b sweep


FULL = SimilaritySizes(quadruples=150, train_images=3000, steps=1500, width=32)
QUICK = SimilaritySizes(quadruples=4, train_images=200, steps=20, width=8, shown=2, sweep=False)
CONTRASTS = (0.25, 0.5, 1.0)     #: background contrasts c: the base kernels are measured at each
SWEEP_CONTRAST = 0.5             #: the depth / σ_w / σ_b sweep and the finite CNN
_ACT = "weight_std={w}, bias_std={b}"


BASE = (2, 1.4, 0.1)             #: (depth, σ_w, σ_b) of the base kernels
SWEEP = ((1, 1.4, 0.1), (3, 1.4, 0.1), (2, 1.0, 0.1), (2, 2.0, 0.1), (2, 1.4, 1.0))


def exact_specs(settings=(BASE,)) -> dict[str, str]:
    """The exact kernels compared, per (depth, σ_w, σ_b): an MLP (256 units per hidden layer, on the
    flattened image), a CNN of 3x3 SAME convolutions (32 channels) read out by Flatten, and by GAP."""
    out = {}
    for depth, w, b in settings:
        act = _ACT.format(w=w, b=b)
        tag = f"depth {depth}, σ_w {w}, σ_b {b}"
        out[f"MLP, {tag}"] = "flatten " + " ".join([f"dense(256, {act}) relu"] * depth) + " dense(1)"
        conv = " ".join([f"conv(32, 3, {act}) relu"] * depth)
        out[f"CNN Flatten, {tag}"] = f"{conv} flatten dense(1)"
        out[f"CNN GAP, {tag}"] = f"{conv} global_avg_pool dense(1)"
    return out


FINITE_CNN = "conv({w}, 3, weight_std=1.4, bias_std=0.1) relu conv({w}, 3, weight_std=1.4, bias_std=0.1) relu " \
             "global_avg_pool dense(10)"


def _train_object_task(net, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> None:
    """Adam (lr 1e-2, batches of 100) on cross-entropy of the digit class: only the object matters."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (min(100, images.shape[0]),), generator=g)
        loss = torch.nn.functional.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def after_kernel(sizes: SimilaritySizes, objects, labels, train_pool, images, progress: Progress, seed: int) -> dict:
    """Same-object fraction of a finite CNN's empirical NTK (mean over its 10 outputs) at
    initialisation and after training on the object-only task, and its held-out accuracy."""
    from ntkprior.kernels.empirical import empirical_ntk
    rng = np.random.default_rng(seed + 1)
    textures = [SWEEP_CONTRAST * b for b in backgrounds().values()]
    pick = rng.choice(train_pool, sizes.train_images)
    which = rng.integers(0, len(textures), sizes.train_images)
    x = torch.tensor(np.concatenate([compose(objects[[i]], textures[t]) for i, t in zip(pick, which)]),
                     dtype=torch.float32)
    y = torch.tensor(labels[pick], dtype=torch.long)
    net = parse_spec(FINITE_CNN.format(w=sizes.width)).build((1, CANVAS, CANVAS), seed=seed, dtype=torch.float32)
    kernel = lambda trio: empirical_ntk(net, trio.float(), output="mean").double()
    with progress.task("finite CNN's NTK at initialisation"):
        before = same_object_fraction(kernel, images)
    with progress.task("train the finite CNN on the object-only task"):
        _train_object_task(net, x, y, sizes.steps, seed)
    with progress.task("finite CNN's NTK after training"):
        after = same_object_fraction(kernel, images)
        with torch.no_grad():
            queries = images[:, 0].float()
            predicted = net(queries).argmax(1).numpy()
    return {"before": before, "after": after, "predicted": predicted}


def _runs(sizes: SimilaritySizes) -> list[tuple[float, str, str]]:
    """(contrast, title, spec): the base kernels at every contrast, the sweep at SWEEP_CONTRAST."""
    base = [(c, t, s) for c in CONTRASTS for t, s in exact_specs().items()]
    return base + ([(SWEEP_CONTRAST, t, s) for t, s in exact_specs(SWEEP).items()] if sizes.sweep else [])


def tasks(sizes: SimilaritySizes) -> int:
    return 1 + len(_runs(sizes)) + 3


def similarity_study(sizes: SimilaritySizes, progress: Progress, seed: int = 0) -> StudyResult:
    """Same-object fractions for the exact kernels (base kernels at every contrast, the depth / σ sweep
    at contrast 0.5) and for the finite CNN before / after training (contrast 0.5).

    Digits 0-999 train the finite CNN; the quadruples use digits 1000-1796 (held out)."""
    with progress.task("compose digits and backgrounds"):
        objects, labels = digits()
        quads = quadruples(sizes.quadruples, labels, np.arange(1000, len(labels)), seed)
        images = {c: triples(objects, quads, c) for c in CONTRASTS}
    exact: dict[float, dict] = {c: {} for c in CONTRASTS}
    for contrast, title, spec in _runs(sizes):
        arch = parse_spec(spec)
        with progress.task(f"exact NTK: {title}, contrast {contrast}"):
            exact[contrast][title] = same_object_fraction(lambda trio: arch.kernel(trio).ntk, images[contrast])
    finite = after_kernel(sizes, objects, labels, np.arange(1000), images[SWEEP_CONTRAST], progress, seed)
    query_labels = labels[quads[:, 0]]
    numbers = {
        "same_object_fraction": {str(c): {t: r["fraction"] for t, r in runs.items()} for c, runs in exact.items()},
        "finite_cnn": {"spec": FINITE_CNN.format(w=sizes.width), "before": finite["before"]["fraction"],
                       "after": finite["after"]["fraction"],
                       "held_out_accuracy": float(np.mean(finite["predicted"] == query_labels))},
        "specs": {**exact_specs(), **(exact_specs(SWEEP) if sizes.sweep else {})}, "quadruples": len(quads),
        "backgrounds": list(BACKGROUNDS), "contrasts": list(CONTRASTS), "sweep_contrast": SWEEP_CONTRAST,
    }
    arrays = {"images": images[SWEEP_CONTRAST], "quadruples": quads,
              "similarity": {**{t: r["similarity"] for t, r in exact[SWEEP_CONTRAST].items()},
                             "finite CNN before training": finite["before"]["similarity"],
                             "finite CNN after training": finite["after"]["similarity"]}}
    return StudyResult("similarity", numbers, arrays)
