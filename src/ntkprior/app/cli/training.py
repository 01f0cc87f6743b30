"""``ntkprior train`` and ``diagnose``: really trained networks and why they depart from the kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ntkprior.app.cli.base import (SMALL, app, arch_option, emit, example, fails_cleanly, format_option,
                                   input_shape_option, learning_rate_option, load_problem, out_option,
                                   parse_numbers, seed_option, steps_option, test_option, train_option,
                                   write_outputs)


# ============================================================================== train
@app.command("train", epilog=example(
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
                  input_shape: Optional[str] = input_shape_option(),
                  track_kernel: bool = typer.Option(True, "--track-kernel/--no-track-kernel",
                                                    help="record the empirical NTK's change at the recorded "
                                                    "steps (one empirical NTK per network and step)"),
                  ) -> None:
    """Train finite networks of ARCH by gradient descent beside the kernel's prediction, or sweep the width.

    One width: the trained outputs, loss, parameter and kernel change, and the infinite-width
    GD-ensemble mean ± std at the same time. Several widths: a width sweep with fitted exponents.
    """
    from ntkprior.prior.prior import predict as kernel_predict
    from ntkprior.dynamics.training import train, width_sweep
    architecture, x, y, x_test, _ = load_problem(fmt, arch, train_file, test_file, input_shape, networks=True)
    chosen = None if widths is None else parse_numbers(widths, "--widths", int)
    if chosen is not None and len(chosen) > 1:
        if x_test is None:
            raise ValueError("--test: a width sweep compares test outputs; pass --test")
        sweep = width_sweep(architecture, x, y, x_test, chosen, tuple(range(seed, seed + ensemble)), steps,
                            learning_rate, progress=fmt == "text")
        payload = {"arch": str(architecture), **sweep.summary()}
        write_outputs(out, payload)
        emit(fmt, str(sweep), payload)
        return
    net = architecture if chosen is None else architecture.with_width(chosen[0])
    result = train(net, x, y, x_test, steps, learning_rate, seed, ensemble=ensemble, track_kernel=track_kernel,
                   progress=fmt == "text")
    kernel_pred = kernel_predict(net, x, y, x_test, kind="gd-ensemble", t=steps, learning_rate=learning_rate,
                                 cov="diagonal")
    payload = {"arch": str(net), "steps": result.steps, "learning_rate": learning_rate,
               "seeds": list(result.seeds), "loss": result.loss, "param_change": result.param_change,
               "kernel_change": result.kernel_change, "train_outputs": result.train_outputs,
               "test_outputs": result.test_outputs, "kernel_mean": kernel_pred.mean,
               "kernel_std": kernel_pred.std, "diverged_at": result.diverged_at}
    write_outputs(out, payload)
    emit(fmt, _train_table(result, net, steps, learning_rate, saved=out is not None),
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
@app.command(epilog=example(f"ntkprior diagnose --arch {SMALL} --train train.csv --test test.csv "
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
             input_shape: Optional[str] = input_shape_option(),
             ) -> None:
    """Will networks of ARCH trained like this match the kernel's prediction, and if not, why?"""
    from ntkprior.dynamics.diagnose import diagnose as run_diagnosis
    architecture, x, y, x_test, _ = load_problem(fmt, arch, train_file, test_file, input_shape, networks=True)
    d = run_diagnosis(architecture, x, y, x if x_test is None else x_test, steps, learning_rate, width=width,
                      seed=seed, ensemble=ensemble, progress=fmt == "text")
    payload = {"learning_rate": d.learning_rate, "steps": d.steps, "width": d.width, **d.summary()}
    if out is not None and out.suffix.lower() == ".npz":
        write_outputs(out, {**{k: v for k, v in payload.items() if k not in ("checks", "reasons", "notes")},
                     "verdict": str(d)})   # .npz holds arrays: the sentences go in as the printed verdict
    else:
        write_outputs(out, payload)
    emit(fmt, str(d), payload)
