"""``ntkprior curve``: the learning curve of a target from the kernel's spectrum on a pool of inputs,
beside kernel regression on subsets of the pool and trained networks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ntkprior.app.cli.base import (SMALL, app, arch_option, check_format, emit, example, fails_cleanly,
                                   format_option, load_source, out_option, parse_numbers, read_inputs,
                                   seed_option, steps_option, write_outputs)


def _sizes(text: str) -> list[int]:
    values = parse_numbers(text, "--n")
    if any(v != int(v) for v in values):
        raise ValueError(f"--n: training-set sizes must be whole numbers, got {text!r}")
    return [int(v) for v in values]


def _trained(architecture, x, y, sizes, width, steps, learning_rate, ensemble, seed, draws):
    from ntkprior.dynamics.learning_curves import trained_learning_curve
    arch = architecture if width is None else architecture.with_width(width)
    return trained_learning_curve(arch, x, y, sizes, steps=steps, learning_rate=learning_rate, ensemble=ensemble,
                                  seed=seed, draws=draws)


def _payload(architecture, kind, curve, trained) -> dict:
    payload = {"arch": str(architecture), "kind": kind, "pool_size": curve.pool_size, "n_train": curve.n_train,
               "target_power": curve.target_power, "ridge": curve.ridge, "noise": curve.noise,
               "predicted": curve.predicted, "held_out": curve.held_out, "kappa": curve.kappa,
               "learned_modes": curve.learned_modes, "eigenvalues": curve.eigenvalues[:50],
               "learnability": curve.learnability[:, :50]}
    if curve.measured is not None:
        payload.update(measured_mean=curve.measured.mean, measured_std=curve.measured.std,
                       measured_draws=curve.measured.draws)
    if trained is not None:
        payload.update(trained_mean=trained.mean, trained_std=trained.std, trained_train_loss=trained.train_loss,
                       trained_steps=trained.steps, trained_ensemble=trained.ensemble)
    return payload


def _csv(payload: dict) -> tuple:
    columns = [k for k in ("predicted", "held_out", "measured_mean", "measured_std", "trained_mean", "trained_std")
               if payload.get(k) is not None]
    rows = [[int(n)] + [float(payload[k][i]) for k in columns] + [int(payload["learned_modes"][i])]
            for i, n in enumerate(payload["n_train"])]
    return ["n"] + columns + ["learned_modes"], rows


def _text(payload: dict, curve) -> str:
    lines = [f"{payload['kind'].upper()} of {payload['arch']} on a pool of {payload['pool_size']} inputs",
             curve.to_text()]
    if payload.get("trained_mean") is not None:
        lines.append(f"trained networks ({payload['trained_ensemble']} per subset, {payload['trained_steps']} "
                     "steps): test MSE of the ensemble mean")
        lines += [f"{int(n):>7}  {float(m):>10.4g}  ± {float(s):.2g}   final train loss "
                  f"{float(payload['trained_train_loss'][i].mean()):.2g}"
                  for i, (n, m, s) in enumerate(zip(payload["n_train"], payload["trained_mean"],
                                                    payload["trained_std"]))]
    return "\n".join(lines)


@app.command(epilog=example(
    f"ntkprior curve --arch {SMALL} --x pool.npy --y target.npy --n 10,20,50,100,200 --measure "
    "--figure curve.png --out curve.json",
    f"ntkprior curve --arch {SMALL} --x pool.npy --y target.npy --n 10,50 --train-networks --steps 2000 "
    "--ensemble 8 --format json"))
@fails_cleanly
def curve(arch: str = arch_option(),
          x: Path = typer.Option(..., "--x", help="the pool of inputs (N, d) standing for the data distribution: "
                                 ".npy, .npz (array x) or .csv"),
          y: Path = typer.Option(..., "--y", help="the target on the pool, (N,) or (N, k): .npy, .npz or .csv"),
          n: str = typer.Option(..., "--n", help="training-set sizes, comma-separated, each below N"),
          kernel: str = typer.Option("ntk", "--kernel", help="ntk (trained wide networks) or nngp (Bayesian "
                                     "posterior of random networks)"),
          ridge: float = typer.Option(0.0, "--ridge", help="ridge of the regression, relative to the mean "
                                      "diagonal of the pool kernel"),
          noise: float = typer.Option(0.0, "--noise", help="standard deviation of label noise on the training labels"),
          measure: bool = typer.Option(False, "--measure", help="also run kernel regression on random subsets "
                                       "of the pool, tested on the rest"),
          draws: int = typer.Option(10, "--draws", help="random subsets per size (--measure, --train-networks)"),
          train_networks: bool = typer.Option(False, "--train-networks", help="also train ensembles of ARCH on "
                                              "the subsets (gradient descent) and test them on the rest"),
          width: Optional[int] = typer.Option(None, "--width", help="hidden width of the trained networks "
                                              "(default: ARCH's)"),
          steps: int = steps_option(1000),
          learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="learning rate of the "
                                                        "trained networks (default: half the largest stable)"),
          ensemble: int = typer.Option(4, "--ensemble", help="networks trained per subset"),
          seed: int = seed_option(),
          figure: Optional[Path] = typer.Option(None, "--figure", help="write the learning-curve figure "
                                                "(.png, .svg, .pdf)"),
          out: Optional[Path] = out_option("the curves: .json, .npz or .csv"),
          fmt: str = format_option(),
          ) -> None:
    """The test error of ARCH's kernel regression against the number of training points, predicted
    from the kernel's eigenvalues on the pool (Bordelon, Canatar & Pehlevan), and measured.

    "held out" is the prediction for the pool points left out of training, which is what --measure
    and --train-networks measure (given at zero ridge and noise; otherwise compare with "predicted"
    where n is small against N). See docs/learning_curves.md.
    """
    from ntkprior.data import load_array
    from ntkprior.prior.learning_curves import check_train_sizes, pool_spectrum
    from ntkprior.prior.sources import check_kernel_name
    check_format(fmt)
    check_kernel_name(kernel, "--kernel")
    architecture = load_source(arch, networks=train_networks)
    pool, target = read_inputs(x, "--x"), load_array(y, "--y")
    sizes = _sizes(n)
    check_train_sizes(sizes, len(pool), "--n")
    spectrum = pool_spectrum(architecture, pool, kernel)
    result = spectrum.curve(target, sizes, ridge=ridge, noise=noise, measured=measure, draws=draws, seed=seed)
    trained = _trained(architecture, pool, target, sizes, width, steps, learning_rate, ensemble, seed,
                       draws) if train_networks else None
    payload = _payload(architecture, kernel, result, trained)
    write_outputs(out, payload, _csv(payload))
    if figure is not None:
        import numpy as np
        from ntkprior.app import plots
        grid = np.unique(np.geomspace(min(sizes), max(sizes), 200).round().astype(int))
        fine = spectrum.curve(target, grid, ridge=ridge, noise=noise)       # the theory is cheap: a fine line
        entry = {"n": grid, "theory": fine.held_out if fine.held_out is not None else fine.predicted}
        if result.measured is not None:
            entry["measured"] = (result.n_train, result.measured.mean, result.measured.std)
        if trained is not None:
            entry["trained"] = (trained.n_train, trained.mean, trained.std)
        plots.learning_curves({y.stem: entry}, learnability=fine.learnability, learnability_n=grid,
                              eigenvalues=fine.eigenvalues,
                              title=f"{kernel.upper()} learning curve on {result.pool_size} pool points"
                              ).savefig(figure, dpi=110)
    emit(fmt, _text(payload, result), {k: v for k, v in payload.items() if k != "learnability"})
