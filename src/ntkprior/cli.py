"""The ``ntkprior`` command line: thin commands over the library.

Every command reads .npy/.npz/.csv and writes .npz/.json/.csv; bad input exits with
code 2 and a message naming the problem, never a traceback.

Options mean the same in every command: ``--arch`` (a spec or a .yaml/.json file),
``--train`` (inputs and labels), ``--test`` (inputs), ``--candidates``, ``--kernel``,
``--learning-rate``, ``--steps``, ``--seed``, ``--ensemble``, ``--widths``, ``--diag-reg``,
``--out`` (a file; its suffix picks the format) and ``--format text|json`` (what is printed).
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import typer

app = typer.Typer(help="The Neural Tangent Kernel as a prior: kernels, eigenmodes, "
                       "candidate generalisations, dynamics and reports.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode="markdown")

ARCH_HELP = ('architecture: a one-line spec such as "dense(512, weight_std=1.5, bias_std=0.05) relu '
             'dense(1)", or a .yaml/.json file holding one')
TRAIN_HELP = ("training data: a .csv with a header row whose label column is named y (all other columns "
              "are inputs; no header: the last column is y), or an .npz with arrays x and y")
TEST_HELP = ("test inputs: a .csv (same input columns as --train; a y column, if any, is scored as the "
             "candidate 'labels in the test file'), an .npy, or an .npz with array x")
CANDIDATES_HELP = ("candidate labelings of the test inputs: a .csv with one column per candidate (header = "
                   "names) and one row per test input, a .json {name: [labels]}, an .npz or an .npy "
                   "(n_candidates, n_test)")
FORMAT_HELP = "what to print: text (tables) or json (machine-readable)"
SMALL = '"[dense(512, weight_std=1.5, bias_std=0.05) relu]*2 dense(1)"'


def fails_cleanly(fn):
    """Turn a ValueError from the library into exit code 2 and a one-line message, and print the
    library's warnings as ``warning: ...`` lines on stderr (not Python's file:line format)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            except (ValueError, FileNotFoundError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    typer.echo(f"warning: {message}", err=True)

    return wrapper


def read_inputs(path: Path, name: str) -> np.ndarray:
    from .data import load_array
    return load_array(path, name)


def _example(*lines: str) -> str:
    """An epilog with example command lines, one paragraph each."""
    return ("Example:" if len(lines) == 1 else "Examples:") + "".join(f"\n\n    {line}" for line in lines)


def _check_format(fmt: str) -> str:
    if fmt not in ("text", "json"):
        raise ValueError(f"--format: expected 'text' or 'json', got {fmt!r}")
    return fmt


def _emit(fmt: str, text: str, payload: dict) -> None:
    """Print the text, or the payload as JSON."""
    if fmt == "json":
        from .report import jsonable
        typer.echo(json.dumps(jsonable(payload), indent=1))
    else:
        typer.echo(text)


def _write(out: Optional[Path], payload: dict, csv_table: Optional[tuple] = None) -> None:
    """Write ``payload`` to ``out`` by its suffix: .npz (arrays), .json, or .csv (``csv_table``)."""
    if out is None:
        return
    from .report import jsonable
    suffix = out.suffix.lower()
    if suffix == ".json":
        out.write_text(json.dumps(jsonable(payload), indent=1))
    elif suffix == ".npz":
        np.savez(out, **{k: np.asarray(jsonable(v) if not isinstance(v, np.ndarray) else v)
                         for k, v in payload.items() if v is not None})
    elif suffix == ".csv" and csv_table is not None:
        header, rows = csv_table
        with open(out, "w") as f:
            f.write(",".join(header) + "\n")
            for row in rows:
                f.write(",".join(str(v) for v in row) + "\n")
    else:
        kinds = ".npz, .json" + (" or .csv" if csv_table is not None else "")
        raise ValueError(f"--out: cannot write {out.suffix or 'a file without suffix'!r} here; use {kinds}")


def _numbers(text: str, name: str, cast=float) -> list:
    """A comma-separated list of numbers, e.g. "64,256,1024" or "10,100,inf"."""
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: could not read {text!r}; write numbers separated by commas, "
                         "e.g. 64,256,1024") from None
    if not values:
        raise ValueError(f"{name}: is empty; write numbers separated by commas")
    return values


def _train_data(path: Path):
    from .data import load_labelled
    return load_labelled(path, "--train")


def _test_data(path: Optional[Path]):
    """(test inputs, test labels or None); (None, None) without a test file."""
    if path is None:
        return None, None
    from .data import load_labelled
    return load_labelled(path, "--test", labels="optional")


def _load(fmt: str, arch: str, train_file: Path, test_file: Optional[Path]):
    """Check --format and read --arch, --train and --test: (architecture, x, y, x_test, y_test)."""
    from .spec import load_arch
    _check_format(fmt)
    architecture = load_arch(arch)
    x, y = _train_data(train_file)
    x_test, y_test = _test_data(test_file)
    return architecture, x, y, x_test, y_test


def _candidates(path: Optional[Path], x_test, y_test) -> Optional[dict]:
    """Named candidate labelings of the test inputs: the --candidates file, plus the test file's labels."""
    if x_test is None:
        if path is not None:
            raise ValueError("--candidates: candidate labels are for test inputs; pass --test too")
        return None
    out = {}
    if path is not None:
        from .data import load_candidates
        out.update(load_candidates(path, x_test.shape[0]))
    if y_test is not None:
        if y_test.shape[1] != 1:
            raise ValueError(f"--test: has {y_test.shape[1]} label columns; candidates have one label per "
                             "test input")
        out["labels in the test file"] = y_test[:, 0]
    return out or None


# ============================================================================== shared options
def arch_option(extra: str = ""):
    return typer.Option(..., "--arch", help=ARCH_HELP + extra)


def train_option():
    return typer.Option(..., "--train", help=TRAIN_HELP)


def test_option(extra: str = ""):
    return typer.Option(None, "--test", help=TEST_HELP + extra)


def format_option():
    return typer.Option("text", "--format", help=FORMAT_HELP)


def out_option(what: str):
    return typer.Option(None, "--out", help=f"write {what}")


def learning_rate_option(default: float):
    return typer.Option(default, "--learning-rate", help="learning rate η of gradient descent on ½·mean "
                        "squared error")


def steps_option(default: int):
    return typer.Option(default, "--steps", help="gradient-descent steps")


def seed_option():
    return typer.Option(0, "--seed", help="seed of the first network (the others: seed+1, seed+2, ...)")


def diag_reg_option():
    return typer.Option(0.0, "--diag-reg", help="ridge on the training kernel, relative to its mean diagonal")


# ============================================================================== kernel
@app.command(epilog='Example: ntkprior kernel --arch "dense(512) relu dense(1)" --x1 x.npy --out K.npz\n\n'
             'Out of core on Dask: ntkprior kernel --arch "dense(512) relu dense(1)" --x1 x.npy '
             '--store K.zarr [--scheduler tcp://host:8786]')
@fails_cleanly
def kernel(arch: str = typer.Option(..., "--arch", help=ARCH_HELP),
           x1: Path = typer.Option(..., "--x1", help="inputs (n1, d): .npy, .npz or .csv"),
           x2: Optional[Path] = typer.Option(None, "--x2", help="second inputs (n2, d); default x1"),
           out: Path = typer.Option(Path("kernel.npz"), "--out", help="output .npz with nngp and ntk"),
           diagonal: bool = typer.Option(False, "--diagonal", help="only K(x, x) and Θ(x, x)"),
           max_memory: str = typer.Option("1GB", "--max-memory", help="memory budget for temporaries"),
           store: Optional[Path] = typer.Option(None, "--store", help="compute blockwise on Dask into this zarr "
                                                "store instead of --out (resumes an interrupted run)"),
           kind: str = typer.Option("ntk", "--kernel", help="with --store: ntk or nngp"),
           scheduler: Optional[str] = typer.Option(None, "--scheduler", help="with --store: a Dask scheduler "
                                                   "address; default a LocalCluster on this machine"),
           block: int = typer.Option(4096, "--block", help="with --store: block size (rows and columns)"),
           ) -> None:
    """Exact infinite-width NNGP and NTK of ARCH between x1 and x2, written to an .npz (or a zarr store)."""
    from .spec import load_arch
    architecture = load_arch(arch)
    a1 = read_inputs(x1, "--x1")
    a2 = read_inputs(x2, "--x2") if x2 is not None else None
    if store is not None:
        if diagonal:
            raise ValueError("--diagonal: not available with --store; the diagonal fits in memory, drop --store")
        from .distributed import kernel_matrix
        stored = kernel_matrix(architecture, a1, a2, kind=kind, store=str(store), block=block,
                               client=scheduler, progress=True)
        typer.echo(json.dumps({"store": str(store), "kind": kind, "shape": list(stored.shape),
                               "arch": str(architecture)}))
        return
    k = architecture.kernel(a1, a2, diagonal=diagonal, max_memory=max_memory)
    np.savez(out, nngp=k.nngp.numpy(), ntk=k.ntk.numpy(), x1_shape=np.array(a1.shape),
             x2_shape=np.array((a2 if a2 is not None else a1).shape), arch=np.array(str(architecture)))
    typer.echo(json.dumps({"out": str(out), "shape": list(k.ntk.shape), "arch": str(architecture)}))


# ============================================================================== eigen
@app.command(epilog=_example(f"ntkprior eigen --arch {SMALL} --x grid.csv --k 8 --figure eigen.png "
                             "--out eigen.npz"))
@fails_cleanly
def eigen(arch: str = arch_option(),
          x: Path = typer.Option(..., "--x", help="inputs (n, d): .npy, .npz (array x) or .csv"),
          kernel: str = typer.Option("ntk", "--kernel", help="ntk or nngp"),
          k: int = typer.Option(20, "--k", help="number of eigenpairs (largest first)"),
          figure: Optional[Path] = typer.Option(None, "--figure", help="write the spectrum and eigenfunction "
                                                "figure (.png, .svg, .pdf)"),
          out: Optional[Path] = out_option("values, vectors, sign changes: .npz, .json or .csv"),
          fmt: str = format_option(),
          ) -> None:
    """Eigenvalues and eigenvectors of ARCH's kernel on the inputs, and a figure of them.

    Eigenvectors are drawn against x for 1-D inputs, else against the input's principal coordinate;
    for 1-D inputs the sign changes of each eigenvector along x are counted.
    """
    from . import plots
    from .spec import load_arch
    from .spectrum import count_sign_changes, eigenmodes
    _check_format(fmt)
    architecture = load_arch(arch)
    inputs = read_inputs(x, "--x")
    modes = eigenmodes(architecture, inputs, k=min(k, len(inputs)) if k >= 1 else k, kernel=kernel)
    one_d = inputs.ndim == 2 and inputs.shape[1] == 1
    changes = None
    if one_d:      # counted along the sorted inputs
        changes = count_sign_changes(modes.vectors[np.argsort(inputs[:, 0], kind="stable")]).tolist()
    payload = {"arch": str(architecture), "kernel": kernel, "n": len(inputs), "values": modes.values,
               "vectors": modes.vectors, "sign_changes": changes}
    rows = [[i + 1, f"{float(v):.6g}", "" if changes is None else changes[i]] for i, v in enumerate(modes.values)]
    _write(out, payload, (["mode", "eigenvalue", "sign_changes"], rows))
    if figure is not None:
        if one_d:
            coordinate, label = inputs[:, 0], "input x"
        else:
            from sklearn.decomposition import PCA
            coordinate, label = PCA(1).fit_transform(inputs)[:, 0], "principal coordinate of the input"
        title = f"{kernel.upper()} of {architecture}"
        fig = plots.eigenmode_overview({title if len(title) <= 60 else title[:57] + "...": {
            "x": coordinate, "values": modes.values, "vectors": modes.vectors, "sign_changes": changes}},
            xlabel=label)
        fig.savefig(figure, dpi=110)
    text = "\n".join([f"{kernel.upper()} of {architecture} on {len(inputs)} inputs: top {len(modes)} eigenpairs",
                      "mode  eigenvalue" + ("  sign changes" if one_d else "")]
                     + [f"{r[0]:>4}  {r[1]:>10}" + (f"  {r[2]:>12}" if one_d else "") for r in rows])
    _emit(fmt, text, {k: v for k, v in payload.items() if k != "vectors"})


# ============================================================================== score
@app.command(epilog=_example(f"ntkprior score --arch {SMALL} --train train.csv --test test.csv "
                             "--candidates cands.csv --out ranking.csv"))
@fails_cleanly
def score(arch: str = arch_option(),
          train_file: Path = train_option(),
          test_file: Path = typer.Option(..., "--test", help=TEST_HELP),
          candidates_file: Optional[Path] = typer.Option(None, "--candidates", help=CANDIDATES_HELP),
          kernel: str = typer.Option("ntk", "--kernel", help="ntk (the NTK-GP prior) or nngp (random networks)"),
          diag_reg: float = diag_reg_option(),
          out: Optional[Path] = out_option("the ranking: .csv, .json or .npz"),
          fmt: str = format_option(),
          ) -> None:
    """Rank candidate labelings of the test inputs by log p(y* | training data) under ARCH's kernel prior.

    The joint log p(Y, y*) is shown beside it; it is comparable only between candidates of the same
    test inputs (see docs/prior.md).
    """
    from .prior import rank_candidates
    architecture, x, y, x_test, y_test = _load(fmt, arch, train_file, test_file)
    named = _candidates(candidates_file, x_test, y_test)
    if named is None:
        raise ValueError("--candidates: nothing to rank; pass --candidates, or a --test file with a y column")
    ranking = rank_candidates(architecture, x, y, x_test, named, kernel=kernel, diag_reg=diag_reg)
    rows = [{"rank": i + 1, "name": r.name, "conditional_log_prob": r.conditional_log_prob, "delta": r.delta,
             "joint_log_prob": r.joint_log_prob, "mahalanobis": r.mahalanobis,
             "max_abs_z": r.max_abs_residual} for i, r in enumerate(ranking.rows)]
    payload = {"arch": str(architecture), "kernel": kernel, "marginal_log_prob": ranking.marginal_log_prob,
               "peak_log_prob": ranking.peak_log_prob, "mean": ranking.mean,
               "std": ranking.cov.diagonal().sqrt(), "rows": rows}
    header = list(rows[0])
    _write(out, payload, (header, [[json.dumps(r[h]) if h == "name" else r[h] for h in header] for r in rows]))
    _emit(fmt, ranking.to_text(), payload)


# ============================================================================== predict
@app.command(epilog=_example(f"ntkprior predict --arch {SMALL} --train train.csv --test test.csv "
                             "--kind gd-ensemble --t 100,1000,inf --learning-rate 0.05 --out pred.npz"))
@fails_cleanly
def predict(arch: str = arch_option(),
            train_file: Path = train_option(),
            test_file: Optional[Path] = test_option("; default: the training inputs"),
            kind: str = typer.Option("nngp", "--kind", help="nngp, ntkgp, ntk, gd-ensemble or readout "
                                     "(docs/prior.md)"),
            t: Optional[str] = typer.Option(None, "--t", help="training time(s) in steps, comma-separated; "
                                            "inf: converged (for ntk, gd-ensemble, readout)"),
            learning_rate: float = learning_rate_option(1.0),
            diag_reg: float = diag_reg_option(),
            out: Optional[Path] = out_option("mean and std: .npz, .json, or .csv (one time)"),
            fmt: str = format_option(),
            ) -> None:
    """Posterior or training-dynamics prediction of ARCH's kernel models at the test inputs."""
    from .prior import predict as kernel_predict
    architecture, x, y, x_test, _ = _load(fmt, arch, train_file, test_file)
    times = None if t is None else _numbers(t, "--t")
    post = kernel_predict(architecture, x, y, x_test, kind=kind, learning_rate=learning_rate, diag_reg=diag_reg,
                          t=None if times is None else (times if len(times) > 1 else times[0]), cov="diagonal")
    mean = post.mean.numpy()
    std = None if post.std is None else post.std.numpy()
    payload = {"arch": str(architecture), "kind": kind, "t": times, "learning_rate": learning_rate,
               "mean": mean, "std": std, "on_train": post.on_train}
    several = times is not None and len(times) > 1
    csv_rows = None
    if not several:
        cols = mean.reshape(mean.shape[0], -1)
        header = [f"mean_{j}" for j in range(cols.shape[1])] + ([] if std is None else ["std"])
        csv_rows = (header, [list(cols[i]) + ([] if std is None else [std[i]]) for i in range(cols.shape[0])])
    elif out is not None and out.suffix.lower() == ".csv":
        raise ValueError("--out: a .csv holds one training time; use .npz or .json for several --t")
    _write(out, payload, csv_rows)
    where = "training inputs" if post.on_train else f"{mean.shape[-2] if several else len(mean)} test inputs"
    lines = [f"{kind} prediction of {architecture} at the {where}"
             + ("" if times is None else f", t = {', '.join(f'{v:g}' for v in times)} steps")]
    for j, row in enumerate(mean.reshape(len(times) if several else 1, -1)):
        label = f"t = {times[j]:g}: " if several else ""
        lines.append(label + "mean " + " ".join(f"{v:.4g}" for v in row[:12]) + (" ..." if len(row) > 12 else ""))
    if std is not None:
        lines.append("std  " + " ".join(f"{v:.4g}" for v in np.asarray(std).reshape(-1)[:12]))
    _emit(fmt, "\n".join(lines), payload)


# ============================================================================== train
@app.command("train", epilog=_example(
    f"ntkprior train --arch {SMALL} --train train.csv --test test.csv --steps 1000 --learning-rate 0.05 "
    "--ensemble 8 --out trained.npz",
    f"ntkprior train --arch {SMALL} --train train.csv --test test.csv --widths 64,256,1024 --format json"))
@fails_cleanly
def train_command(arch: str = arch_option(),
                  train_file: Path = train_option(),
                  test_file: Optional[Path] = test_option(),
                  steps: int = steps_option(1000),
                  learning_rate: float = learning_rate_option(0.1),
                  ensemble: int = typer.Option(4, "--ensemble", help="networks trained together (per width)"),
                  seed: int = seed_option(),
                  widths: Optional[str] = typer.Option(None, "--widths", help="hidden widths, comma-separated: "
                                                       "one retrains at that width; several run a width sweep"),
                  out: Optional[Path] = out_option("the results: .npz or .json"),
                  fmt: str = format_option(),
                  ) -> None:
    """Train finite networks of ARCH by gradient descent beside the kernel's prediction, or sweep the width.

    One width: the trained outputs, loss, parameter and kernel change, and the infinite-width
    GD-ensemble mean ± std at the same time. Several widths: a width sweep with fitted exponents.
    """
    from .prior import predict as kernel_predict
    from .report import sweep_summary
    from .training import train, width_sweep
    architecture, x, y, x_test, _ = _load(fmt, arch, train_file, test_file)
    chosen = None if widths is None else _numbers(widths, "--widths", int)
    if chosen is not None and len(chosen) > 1:
        if x_test is None:
            raise ValueError("--test: a width sweep compares test outputs; pass --test")
        sweep = width_sweep(architecture, x, y, x_test, chosen, tuple(range(seed, seed + ensemble)), steps,
                            learning_rate, progress=fmt == "text")
        payload = {"arch": str(architecture), **sweep_summary(sweep)}
        _write(out, payload)
        _emit(fmt, str(sweep), payload)
        return
    net = architecture if chosen is None else architecture.with_width(chosen[0])
    result = train(net, x, y, x_test, steps, learning_rate, seed, ensemble=ensemble, progress=fmt == "text")
    kernel_pred = kernel_predict(net, x, y, x_test, kind="gd-ensemble", t=steps, learning_rate=learning_rate,
                                 cov="diagonal")
    payload = {"arch": str(net), "steps": result.steps, "learning_rate": learning_rate,
               "seeds": list(result.seeds), "loss": result.loss, "param_change": result.param_change,
               "kernel_change": result.kernel_change, "train_outputs": result.train_outputs,
               "test_outputs": result.test_outputs, "kernel_mean": kernel_pred.mean,
               "kernel_std": kernel_pred.std, "diverged_at": result.diverged_at}
    _write(out, payload)
    _emit(fmt, _train_table(result, net, steps, learning_rate, saved=out is not None),
          {k: v for k, v in payload.items() if k not in ("train_outputs", "test_outputs")})


def _train_table(result, net, steps: int, learning_rate: float, saved: bool) -> str:
    """The final loss, parameter and kernel change of each trained network, as printed text."""
    lines = [f"trained {result.ensemble} network(s) of {net} for {steps} steps at learning rate {learning_rate:g}",
             "network  final loss  ‖θ−θ0‖/‖θ0‖  kernel change"]
    for i in range(result.ensemble):
        change = "–" if result.kernel_change is None else f"{float(result.kernel_change[i, -1]):.4g}"
        lines.append(f"{i:>7}  {float(result.loss[i, -1]):>10.4g}  {float(result.param_change[i, -1]):>11.4g}"
                     f"  {change:>13}")
    lines.append("the kernel's prediction (GD-ensemble mean ± std at the same time) is saved as kernel_mean, "
                 "kernel_std" if saved else "pass --out to save the outputs and the kernel's prediction")
    return "\n".join(lines)


# ============================================================================== diagnose
@app.command(epilog=_example(f"ntkprior diagnose --arch {SMALL} --train train.csv --test test.csv "
                             "--steps 10000 --learning-rate 0.1 --width 256"))
@fails_cleanly
def diagnose(arch: str = arch_option(),
             train_file: Path = train_option(),
             test_file: Optional[Path] = test_option("; default: the training inputs"),
             steps: int = steps_option(1000),
             learning_rate: float = learning_rate_option(0.1),
             width: Optional[int] = typer.Option(None, "--width", help="hidden width to train at (default: "
                                                 "ARCH's own)"),
             ensemble: int = typer.Option(8, "--ensemble", help="networks trained for the diagnosis"),
             seed: int = seed_option(),
             out: Optional[Path] = out_option("the verdict and its figures: .json or .npz"),
             fmt: str = format_option(),
             ) -> None:
    """Will networks of ARCH trained like this match the kernel's prediction, and if not, why?"""
    from .diagnose import diagnose as run_diagnosis
    from .report import diagnosis_summary
    architecture, x, y, x_test, _ = _load(fmt, arch, train_file, test_file)
    d = run_diagnosis(architecture, x, y, x if x_test is None else x_test, steps, learning_rate, width=width,
                      seed=seed, ensemble=ensemble, progress=fmt == "text")
    payload = {"learning_rate": d.learning_rate, "steps": d.steps, "width": d.width, **diagnosis_summary(d)}
    if out is not None and out.suffix.lower() == ".npz":
        _write(out, {**{k: v for k, v in payload.items() if k not in ("checks", "reasons", "notes")},
                     "verdict": str(d)})   # .npz holds arrays: the sentences go in as the printed verdict
    else:
        _write(out, payload)
    _emit(fmt, str(d), payload)


# ============================================================================== report
@app.command(epilog=_example("ntkprior report",
                             "ntkprior report --quick --out /tmp/smoke",
                             f"ntkprior report --arch {SMALL} --train train.csv --test test.csv "
                             "--candidates cands.csv --out my-report"))
@fails_cleanly
def report(out: Path = typer.Option(Path("ntkprior-report"), "--out", help="directory for index.html, "
                                    "figures/ and results.json"),
           seed: int = typer.Option(0, "--seed", help="seed of the data and of the trained networks"),
           quick: bool = typer.Option(False, "--quick", help="a smoke-sized run (seconds, not minutes)"),
           arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP + " (your data only)"),
           train_file: Optional[Path] = typer.Option(None, "--train", help=TRAIN_HELP),
           test_file: Optional[Path] = test_option(),
           candidates_file: Optional[Path] = typer.Option(None, "--candidates", help=CANDIDATES_HELP),
           learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="your data: learning "
                                                         "rate (default half the stable maximum 2m/λ_max)"),
           steps: Optional[int] = typer.Option(None, "--steps", help="your data: training steps (default 1000; "
                                               "60 with --quick)"),
           widths: Optional[str] = typer.Option(None, "--widths", help="your data: hidden widths trained and "
                                                "swept, comma-separated (default ARCH's own; sweep 32-512)"),
           progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
           ) -> None:
    """The whole analysis (eigenmodes, the prior over labels, training vs theory, simplicity) as an HTML report.

    With no data it runs the seed document's analysis on built-in data (about a minute on 2 cores);
    with --arch and --train it runs the same sections on your data. See docs/report.md.
    """
    from .report import build_report
    user = {}
    if arch is not None or train_file is not None:
        if arch is None or train_file is None:
            raise ValueError("--arch, --train: a report on your data needs both")
        x, y = _train_data(train_file)
        x_test, y_test = _test_data(test_file)
        user = dict(arch=arch, x_train=x, y_train=y, x_test=x_test,
                    candidates=_candidates(candidates_file, x_test, y_test), learning_rate=learning_rate,
                    steps=steps, widths=None if widths is None else _numbers(widths, "--widths", int))
    elif any(v is not None for v in (test_file, candidates_file, learning_rate, steps, widths)):
        raise ValueError("--test, --candidates, --learning-rate, --steps, --widths: apply to a report on your "
                         "data; pass --arch and --train too")
    result = build_report(out, seed=seed, quick=quick, progress=progress, **user)
    typer.echo(f"report written to {result.index} ({len(result.figures)} figures, results in "
               f"{result.results_path.name}) in {result.runtime_s:.0f} s")
