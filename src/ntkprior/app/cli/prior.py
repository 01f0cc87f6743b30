"""``ntkprior eigen``, ``score``, ``predict``: the spectrum, candidate ranking and posteriors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ntkprior.app.cli.base import (CANDIDATES_HELP, SMALL, TEST_HELP, app, arch_option, candidates_for,
                                   check_format, diag_reg_option, emit, example, fails_cleanly, format_option,
                                   input_shape_option, learning_rate_option, load_problem, load_source,
                                   out_option, parse_numbers, read_inputs, test_option, train_option,
                                   write_outputs)


# ============================================================================== eigen
@app.command(epilog=example(f"ntkprior eigen --arch {SMALL} --x grid.csv --k 8 --figure eigen.png "
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
          input_shape: Optional[str] = input_shape_option(),
          ) -> None:
    """Eigenvalues and eigenvectors of ARCH's kernel on the inputs, and a figure of them.

    Eigenvectors are drawn against x for 1-D inputs, else against the input's principal coordinate;
    for 1-D inputs the sign changes of each eigenvector along x are counted.
    """
    from ntkprior.app import plots
    from ntkprior.prior.spectrum import count_sign_changes, eigenmodes
    check_format(fmt)
    architecture = load_source(arch)
    inputs = read_inputs(x, "--x", input_shape)
    modes = eigenmodes(architecture, inputs, k=min(k, len(inputs)) if k >= 1 else k, kernel=kernel)
    one_d = inputs.ndim == 2 and inputs.shape[1] == 1
    changes = None
    if one_d:      # counted along the sorted inputs
        changes = count_sign_changes(modes.vectors[np.argsort(inputs[:, 0], kind="stable")]).tolist()
    payload = {"arch": str(architecture), "kernel": kernel, "n": len(inputs), "values": modes.values,
               "vectors": modes.vectors, "sign_changes": changes}
    rows = [[i + 1, f"{float(v):.6g}", "" if changes is None else changes[i]] for i, v in enumerate(modes.values)]
    write_outputs(out, payload, (["mode", "eigenvalue", "sign_changes"], rows))
    if figure is not None:
        import textwrap
        title = "\n".join(textwrap.wrap(f"{kernel.upper()} of {architecture}", 70))
        if one_d:
            fig = plots.eigenmode_overview({title: {"x": inputs[:, 0], "values": modes.values,
                                                    "vectors": modes.vectors, "sign_changes": changes}})
        else:       # 2-D inputs drawn as they are; more dimensions on their first two principal coordinates
            if inputs.ndim == 2 and inputs.shape[1] == 2:
                xy, labels = inputs, ("x₁", "x₂")
            else:       # signals and images: the principal coordinates of their flattened values
                from sklearn.decomposition import PCA
                xy = PCA(2).fit_transform(inputs.reshape(len(inputs), -1))
                labels = ("principal coordinate 1", "principal coordinate 2")
            fig = plots.eigenvector_maps(xy, modes.vectors, eigenvalues=modes.values, xlabel=labels[0],
                                         ylabel=labels[1], title=title)
        from ntkprior.files import atomic_file
        with atomic_file(figure, "--figure") as tmp:
            fig.savefig(tmp, dpi=110)
    text = "\n".join([f"{kernel.upper()} of {architecture} on {len(inputs)} inputs: top {len(modes)} eigenpairs",
                      "mode  eigenvalue" + ("  sign changes" if one_d else "")]
                     + [f"{r[0]:>4}  {r[1]:>10}" + (f"  {r[2]:>12}" if one_d else "") for r in rows])
    emit(fmt, text, {k: v for k, v in payload.items() if k != "vectors"})


# ============================================================================== score
@app.command(epilog=example(f"ntkprior score --arch {SMALL} --train train.csv --test test.csv "
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
          input_shape: Optional[str] = input_shape_option(),
          ) -> None:
    """Rank candidate labelings of the test inputs by log p(y* | training data) under ARCH's kernel prior.

    The joint log p(Y, y*) is shown beside it; it is comparable only between candidates of the same
    test inputs (see docs/prior.md).
    """
    from ntkprior.prior.prior import rank_candidates
    architecture, x, y, x_test, y_test = load_problem(fmt, arch, train_file, test_file, input_shape)
    named = candidates_for(candidates_file, x_test, y_test)
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
    write_outputs(out, payload, (header, [[json.dumps(r[h]) if h == "name" else r[h] for h in header] for r in rows]))
    emit(fmt, ranking.to_text(), payload)


# ============================================================================== predict
@app.command(epilog=example(f"ntkprior predict --arch {SMALL} --train train.csv --test test.csv "
                             "--kind gd-ensemble --t 100,1000,inf --learning-rate 0.05 --out pred.npz"))
@fails_cleanly
def predict(arch: str = arch_option(),
            train_file: Path = train_option(),
            test_file: Optional[Path] = test_option("; default: the training inputs"),
            kind: str = typer.Option("nngp", "--kind", help="nngp, ntkgp, ntk, gd-ensemble or readout "
                                     "(docs/prior.md)"),
            t: Optional[str] = typer.Option(None, "--t", help="training time(s) in steps, comma-separated; "
                                            "inf: converged (for ntk, gd-ensemble, readout)"),
            learning_rate: float = learning_rate_option(0.1),
            diag_reg: float = diag_reg_option(),
            out: Optional[Path] = out_option("mean and std: .npz, .json, or .csv (one time)"),
            fmt: str = format_option(),
            input_shape: Optional[str] = input_shape_option(),
            ) -> None:
    """Posterior or training-dynamics prediction of ARCH's kernel models at the test inputs."""
    from ntkprior.prior.prior import predict as kernel_predict
    architecture, x, y, x_test, _ = load_problem(fmt, arch, train_file, test_file, input_shape)
    times = None if t is None else parse_numbers(t, "--t")
    post = kernel_predict(architecture, x, y, x_test, kind=kind, learning_rate=learning_rate, diag_reg=diag_reg,
                          t=None if times is None else (times if len(times) > 1 else times[0]), cov="diagonal")
    mean = post.mean.numpy()
    # one shape for both: std is shared by the k outputs, so it is broadcast to mean's (T,) n*, k
    std = None if post.std is None else np.broadcast_to(post.std.numpy()[..., None], mean.shape).copy()
    payload = {"arch": str(architecture), "kind": kind, "t": times, "learning_rate": learning_rate,
               "mean": mean, "std": std, "on_train": post.on_train}
    several = times is not None and len(times) > 1
    csv_rows = None
    if not several:
        cols = mean.reshape(mean.shape[0], -1)
        header = [f"mean_{j}" for j in range(cols.shape[1])] + ([] if std is None else ["std"])
        csv_rows = (header, [list(cols[i]) + ([] if std is None else [std[i, 0]]) for i in range(cols.shape[0])])
    elif out is not None and out.suffix.lower() == ".csv":
        raise ValueError("--out: a .csv holds one training time; use .npz or .json for several --t")
    write_outputs(out, payload, csv_rows)
    emit(fmt, _prediction_text(kind, architecture, post.on_train, times, mean, std), payload)


def _prediction_text(kind: str, architecture, on_train: bool, times, mean: np.ndarray, std) -> str:
    """The prediction as a table: one line per input (at most 12), and per time when there are several."""
    per_time = mean if mean.ndim == 3 else mean[None]
    stds = None if std is None else (std if std.ndim == 3 else std[None])
    n = per_time.shape[1]
    where = "training inputs" if on_train else f"{n} test inputs"
    lines = [f"{kind} prediction of {architecture} at the {where}"
             + ("" if times is None else f", t = {', '.join(f'{v:g}' for v in times)} steps")]
    for j in range(per_time.shape[0]):
        if per_time.shape[0] > 1:
            lines.append(f"t = {times[j]:g}:")
        for i in range(min(n, 12)):
            row = f"  input {i}: mean " + " ".join(f"{v:.4g}" for v in per_time[j, i])
            lines.append(row + ("" if stds is None else f"  std {stds[j, i, 0]:.4g}"))
        if n > 12:
            lines.append(f"  ... {n - 12} more inputs (all of them with --format json or --out)")
    return "\n".join(lines)
