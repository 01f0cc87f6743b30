"""What the explorer's page shows, each number a call into the library (no second implementation).

Every function takes a validated request (:mod:`ntkprior.app.explore.requests`) and returns plain
JSON-able dicts. The kernels of the training points and of the test grid are computed once per
request (``arch.kernel``: train-train, test-train and the test diagonal) and handed to the library
as precomputed :class:`~ntkprior.prior.sources.KernelBlocks`, so the three posteriors and the
stability limit of one picture share them; the numbers are those of ``predict(arch, ...)``,
``eigenmodes(arch, ...)``, ... called on the architecture itself (the API tests check that).
"""

from __future__ import annotations

import math
from dataclasses import replace
import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from ntkprior.app.explore import requests as rq
from ntkprior.arch.layers import Dense, Serial
from ntkprior.arch.spec import parse_spec
from ntkprior.data import load_labelled
from ntkprior.dynamics.linearized import max_stable_learning_rate
from ntkprior.prior.prior import KernelPrior, predict, rank_candidates
from ntkprior.prior.sources import KernelBlocks
from ntkprior.prior.spectrum import eigenmodes
from ntkprior.studies.datasets import interval_grid, seed_sin_data

#: most layers a spec may expand to, and the largest product of its repeat counts
MAX_LAYERS, MAX_REPEAT = 64, 64
#: quadrature degree allowed in a spec (its cost grows like degree²)
MAX_DEGREE = 200
#: a spec's nominal hidden width (the kernels do not depend on it; training sets its own)
SPEC_WIDTH = 512
#: most parameters x networks a training run may hold (about 160 MB of float64 per copy)
MAX_TRAINED_PARAMETERS = 20_000_000
_ONE_AT_A_TIME = threading.Lock()
_REPEAT = re.compile(r"\]\s*\*\s*(\d+)")


# ================================================================================ architecture
def controls_spec(arch: rq.Arch) -> str:
    """The spec string of the page's controls: ``depth`` Dense layers with the activation between them."""
    bias = "None" if arch.bias_std == 0 else repr(arch.bias_std)
    param = "" if arch.parameterization == "ntk" else ", parameterization='standard'"
    dense = f"dense({{}}, weight_std={arch.weight_std!r}, bias_std={bias}{param})"
    hidden = f"{dense.format(SPEC_WIDTH)} {arch.activation}"
    body = "" if arch.depth == 1 else (hidden + " " if arch.depth == 2 else f"[{hidden}]*{arch.depth - 1} ")
    return body + dense.format(1)


def architecture(arch: rq.Arch) -> Serial:
    """Parse the spec box (or the controls' spec) by the grammar and check it fits the explorer.

    Raises ``ValueError`` (a :class:`~ntkprior.arch.spec.SpecError` with its caret for a bad token)
    naming what to change.
    """
    text = arch.spec if arch.spec and arch.spec.strip() else controls_spec(arch)
    repeats = math.prod(int(n) for n in _REPEAT.findall(text))
    if repeats > MAX_REPEAT:
        raise ValueError(f"arch: the repeat counts multiply to {repeats}; the explorer allows at most "
                         f"{MAX_REPEAT} repetitions in all (e.g. [dense(512) relu]*4)")
    net = parse_spec(text)
    if len(net.layers) > MAX_LAYERS:
        raise ValueError(f"arch: {len(net.layers)} layers; the explorer allows at most {MAX_LAYERS}")
    if any(getattr(layer, "degree", 0) > MAX_DEGREE for layer in net.layers):
        raise ValueError(f"arch: a quadrature degree above {MAX_DEGREE} is too slow here; drop degree=")
    dense = [layer for layer in net.layers if isinstance(layer, Dense)]
    if not dense or dense[-1].out_features != 1:
        raise ValueError("arch: the last Dense layer must have 1 output (one label per point), e.g. end "
                         "the spec with dense(1)")
    return net


def spec_view(req: rq.SpecRequest) -> dict:
    """The spec the controls (or the box) stand for, as the grammar writes it back."""
    net = architecture(req.arch)
    return {"spec": str(net), "layers": len(net.layers)}


# ================================================================================ kernels once
def _inputs(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def grid_inputs(req: rq.Problem) -> torch.Tensor:
    """The test points: ``interval_grid`` on a line, or its n x n product on the plane (rows: x2 fastest)."""
    line = interval_grid(req.grid.n, req.grid.low, req.grid.high)
    if req.data.dim == 1:
        return line
    a, b = torch.meshgrid(line[:, 0], line[:, 0], indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], 1)


def kernel_blocks(net: Serial, x: torch.Tensor, x_test: torch.Tensor) -> dict:
    """``{"ntk": KernelBlocks, "nngp": KernelBlocks}`` on training inputs x and test inputs x_test
    (test-test block: only its diagonal, enough for predictive standard deviations)."""
    k_train = net.kernel(x)
    k_cross = net.kernel(x_test, x)
    k_diag = net.kernel(x_test, diagonal=True)
    return {name: KernelBlocks(getattr(k_train, name), getattr(k_cross, name), getattr(k_diag, name))
            for name in ("ntk", "nngp")}


class Picture:
    """One request's architecture, data, test grid and kernel blocks, shared by its views."""

    def __init__(self, req: rq.Problem):
        self.net = architecture(req.arch)
        self.x = _inputs(req.data.x)
        self.y = torch.tensor(req.data.y, dtype=torch.float64)
        self.x_test = grid_inputs(req)
        self.blocks = kernel_blocks(self.net, self.x, self.x_test)
        self.diag_reg = req.diag_reg

    def prior(self, kernel: str) -> KernelPrior:
        return KernelPrior(self.blocks[kernel].train, diag_reg=self.diag_reg, name=f"{kernel} of the data")


def _listed(t) -> list:
    return np.asarray(t.detach() if isinstance(t, torch.Tensor) else t, dtype=float).tolist()


def _warned(fn, *args):
    """``fn(*args)`` and the library's warnings as one-line messages (the page shows them).

    One computation at a time: ``warnings.catch_warnings`` is process-global (two requests at once
    would swap their warnings), and on two cores a second computation would only slow the first.
    """
    with _ONE_AT_A_TIME, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, list(dict.fromkeys(str(w.message) for w in caught))


# ================================================================================ views
def posterior_view(req: rq.PosteriorRequest) -> dict:
    """Mean and std on the grid of the NNGP and NTK-GP posteriors and of the GD ensemble at time t
    (``predict`` kinds "nngp", "ntkgp", "gd-ensemble"), and the stability limit 2m/λ_max(Θ)."""
    return _with_warnings(_posterior, req)


def _posterior(req: rq.PosteriorRequest) -> dict:
    pic = Picture(req)
    out = {"spec": str(pic.net), "x_test": _listed(pic.x_test), "t": req.t, "learning_rate": req.learning_rate,
           "axis": _listed(interval_grid(req.grid.n, req.grid.low, req.grid.high)[:, 0])}
    for kind in rq.KINDS:
        timed = {"t": req.t, "learning_rate": req.learning_rate} if kind == "gd-ensemble" else {}
        post = predict(pic.blocks, pic.x, pic.y, None, kind, diag_reg=pic.diag_reg, cov="diagonal", **timed)
        out[kind] = _summary(post, req.grid.n if req.data.dim == 2 else None)
    psd = pic.prior("ntk").psd
    out["max_stable_learning_rate"] = max_stable_learning_rate(psd, pic.x.shape[0])
    out["lambda_max"] = float(psd.eigh()[0][-1])
    out["m"] = pic.x.shape[0]
    return out


def _summary(post, side: int | None) -> dict:
    """Mean, std and the band mean ± 2 std; on the plane also as (side, side) images, rows along x2."""
    out = {"mean": _listed(post.mean), "std": _listed(post.std),
           "lower": _listed(post.mean - 2 * post.std), "upper": _listed(post.mean + 2 * post.std)}
    if side is not None:
        out["mean_image"] = _listed(post.mean.reshape(side, side).T)
        out["std_image"] = _listed(post.std.reshape(side, side).T)
    return out


def options() -> dict:
    """What the page's controls offer, and the explorer's limits."""
    return {"activations": list(rq.ACTIVATIONS), "presets": presets(),
            "limits": {"depth": rq.MAX_DEPTH, "width": rq.MAX_WIDTH, "steps": rq.MAX_STEPS,
                       "ensemble": rq.MAX_ENSEMBLE, "eigen-k": rq.MAX_MODES, "weight-std": rq.MAX_STD,
                       "bias-std": rq.MAX_STD}}


def eigen_view(req: rq.EigenRequest) -> dict:
    """The spectrum of the kernel on the training inputs, the first k eigenfunctions on the grid
    (Nyström, ``Eigenmodes.functions``) and the labels' weight per mode (``KernelPrior.modes``)."""
    return _with_warnings(_eigen, req)


def _eigen(req: rq.EigenRequest) -> dict:
    pic = Picture(req)
    blocks = pic.blocks[req.kernel]
    k = min(req.k, pic.x.shape[0])
    modes = eigenmodes(blocks.train, kernel=req.kernel)
    shown = replace(modes, values=modes.values[:k], vectors=modes.vectors[:, :k])
    table = pic.prior(req.kernel).modes(pic.y)
    functions = shown.functions(cross=blocks.test_train).T                 # (k, n_test)
    out = {"spec": str(pic.net), "kernel": req.kernel, "x_test": _listed(pic.x_test),
           "eigenvalues": _listed(modes.values), "functions": _listed(functions),
           "projection": _listed(table.projection), "contribution": _listed(table.contribution),
           "cumulative": _listed(table.cumulative_share), "rkhs_norm2": table.total}
    if req.data.dim == 2:
        side = req.grid.n
        out["axis"] = _listed(interval_grid(side, req.grid.low, req.grid.high)[:, 0])
        out["function_images"] = _listed(functions.reshape(k, side, side).transpose(1, 2))
    return out


def candidate_view(req: rq.CandidateRequest) -> dict:
    """log p(y* | data) of one label y* at one test input x* (``rank_candidates``), the kernel's
    prediction μ*, σ* there, z = (y* − μ*)/σ*, and the joint log p(Y, y*) with its ceiling."""
    return _with_warnings(_candidate, req)


def _candidate(req: rq.CandidateRequest) -> dict:
    if len(req.x_star) != req.data.dim:
        raise ValueError(f"x_star: has {len(req.x_star)} coordinates; the data have {req.data.dim}")
    net = architecture(req.arch)
    x, y = _inputs(req.data.x), torch.tensor(req.data.y, dtype=torch.float64)
    x_star = _inputs([req.x_star])
    ranking = rank_candidates(net, x, y, x_star, {"y*": [req.y_star]}, req.kernel, diag_reg=req.diag_reg,
                              top_modes=0)
    row = ranking["y*"]
    z = float(row.residuals[0, 0])
    mean, std = float(ranking.mean[0, 0]), math.sqrt(max(float(ranking.cov[0, 0]), 0.0))
    return {"spec": str(net), "kernel": req.kernel, "x_star": req.x_star, "y_star": req.y_star,
            "conditional_log_prob": row.conditional_log_prob, "joint_log_prob": row.joint_log_prob,
            "marginal_log_prob": ranking.marginal_log_prob, "peak_log_prob": ranking.peak_log_prob,
            "mean": mean, "std": std, "lower": mean - 2 * std, "upper": mean + 2 * std,
            "z": z, "quantile": 0.5 * (1 + math.erf(z / math.sqrt(2)))}


def _with_warnings(fn, req) -> dict:
    out, caught = _warned(fn, req)
    out["warnings"] = caught
    return out


# ================================================================================ data
def presets() -> dict:
    """The data the preset menu offers: the seed's sin points, a step, an alternation (parity-like)."""
    x, y = seed_sin_data()
    grid = np.linspace(-3, 3, 8)
    return {"sin": {"x": _listed(x), "y": _listed(y), "label": "the seed's 5 points: sin(x) + noise"},
            "step": {"x": [[v] for v in grid.tolist()], "y": np.sign(grid).tolist(),
                     "label": "a step: sign(x) at 8 points"},
            "alternation": {"x": [[v] for v in grid.tolist()], "y": [(-1.0) ** i for i in range(8)],
                            "label": "alternation: +1, -1, +1, ... (parity-like)"}}


def csv_view(req: rq.CsvRequest) -> dict:
    """Training points from an uploaded CSV, read by the library's own loader (``load_labelled``: a
    header with a y column, or the last column as y) from a temporary copy."""
    with tempfile.TemporaryDirectory(prefix="ntkprior-explore-") as tmp:
        path = Path(tmp) / "upload.csv"
        path.write_text(req.text)
        try:
            x, y = load_labelled(path, "csv")
        except ValueError as exc:
            raise ValueError(str(exc).replace(repr(str(path)), "the uploaded file")) from None
    if y.shape[1] != 1:
        raise ValueError(f"csv: has {y.shape[1]} label columns; the explorer needs one (named y)")
    try:
        data = rq.Data(x=np.asarray(x, dtype=float).tolist(), y=np.asarray(y[:, 0], dtype=float).tolist())
    except ValidationError as exc:
        raise ValueError("csv: " + "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    return {"x": data.x, "y": data.y}


# ================================================================================ training
def training_plan(req: rq.TrainRequest) -> dict:
    """Check a training request and return what a training job needs (plain values, picklable)."""
    net = architecture(req.arch).with_width(req.width)
    size = sum(p.numel() for p in net.build(req.data.dim, seed=0, dtype=torch.float32).parameters())
    if size * req.ensemble > MAX_TRAINED_PARAMETERS:
        raise ValueError(f"width, ensemble: {req.ensemble} networks of {size} parameters exceed the "
                         f"explorer's {MAX_TRAINED_PARAMETERS:.0e}; use a smaller width or fewer networks")
    return {"spec": str(net), "x": req.data.x, "y": req.data.y, "x_test": _listed(grid_inputs(req)),
            "steps": req.steps, "learning_rate": req.learning_rate, "ensemble": req.ensemble,
            "seed": req.seed, "width": req.width}
