"""The ``ntkprior`` command line: thin commands over the library.

Every command reads .npy/.npz/.csv and writes .npz/.json/.csv; bad input exits with
code 2 and a message naming the problem, never a traceback.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

app = typer.Typer(help="The Neural Tangent Kernel as a prior: kernels, eigenmodes, "
                       "candidate generalisations, dynamics and reports.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

ARCH_HELP = ('architecture: a one-line spec such as "dense(512, weight_std=1.5, bias_std=0.05) relu '
             'dense(1)", or a .yaml/.json file holding one')


def fails_cleanly(fn):
    """Turn a ValueError from the library into exit code 2 and a one-line message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def read_inputs(path: Path, name: str) -> np.ndarray:
    from .data import load_array
    return load_array(path, name)


@app.command(epilog='Example: ntkprior kernel --arch "dense(512) relu dense(1)" --x1 x.npy --out K.npz')
@fails_cleanly
def kernel(arch: str = typer.Option(..., "--arch", help=ARCH_HELP),
           x1: Path = typer.Option(..., "--x1", help="inputs (n1, d): .npy, .npz or .csv"),
           x2: Optional[Path] = typer.Option(None, "--x2", help="second inputs (n2, d); default x1"),
           out: Path = typer.Option(Path("kernel.npz"), "--out", help="output .npz with nngp and ntk"),
           diagonal: bool = typer.Option(False, "--diagonal", help="only K(x, x) and Θ(x, x)"),
           max_memory: str = typer.Option("1GB", "--max-memory", help="memory budget for temporaries"),
           ) -> None:
    """Exact infinite-width NNGP and NTK of ARCH between x1 and x2, written to an .npz."""
    from .spec import load_arch
    architecture = load_arch(arch)
    a1 = read_inputs(x1, "--x1")
    a2 = read_inputs(x2, "--x2") if x2 is not None else None
    k = architecture.kernel(a1, a2, diagonal=diagonal, max_memory=max_memory)
    np.savez(out, nngp=k.nngp.numpy(), ntk=k.ntk.numpy(), x1_shape=np.array(a1.shape),
             x2_shape=np.array((a2 if a2 is not None else a1).shape), arch=np.array(str(architecture)))
    typer.echo(json.dumps({"out": str(out), "shape": list(k.ntk.shape), "arch": str(architecture)}))


@app.command()
@fails_cleanly
def report() -> None:
    """Run the analysis on the built-in default (grows into the full report)."""
    import torch

    import ntkprior as ntp
    arch = ntp.serial(ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU(),
                      ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU(),
                      ntp.Dense(1, weight_std=1.5, bias_std=0.05))
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    k = arch.kernel(x)
    torch.set_printoptions(precision=4, linewidth=120)
    typer.echo(f"architecture: {arch}\ninputs: {x.squeeze(1).tolist()}")
    typer.echo(f"NNGP:\n{k.nngp}\nNTK:\n{k.ntk}")


def main() -> None:  # pragma: no cover - console entry point
    app()
