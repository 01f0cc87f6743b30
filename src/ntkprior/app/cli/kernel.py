"""``ntkprior kernel``: exact NNGP and NTK matrices, in memory or blockwise into a zarr store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ntkprior.app.cli.base import (SPEC_HELP, app, check_format, emit, fails_cleanly, format_option,
                                   input_shape_option, read_inputs)
from ntkprior.scale import STALL_TIMEOUT


# ============================================================================== kernel
@app.command(epilog='Example: ntkprior kernel --arch "dense(512) relu dense(1)" --x1 x.npy --out K.npz\n\n'
             'Out of core on Dask: ntkprior kernel --arch "dense(512) relu dense(1)" --x1 x.npy '
             '--store K.zarr [--scheduler tcp://host:8786]')
@fails_cleanly
def kernel(arch: str = typer.Option(..., "--arch", help=SPEC_HELP),
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
           input_shape: Optional[str] = input_shape_option(),
           overwrite: bool = typer.Option(False, "--overwrite", help="with --store: replace an existing ntkprior "
                                          "store built from other arguments (never any other directory)"),
           stall_timeout: float = typer.Option(STALL_TIMEOUT, "--stall-timeout", help="with --store: stop (resumably) "
                                               "when no block finished for this many seconds"),
           fmt: str = format_option(),
           ) -> None:
    """Exact infinite-width NNGP and NTK of ARCH between x1 and x2, written to an .npz (or a zarr store)."""
    from ntkprior.arch.spec import load_arch
    from ntkprior.data import check_allocation
    from ntkprior.files import atomic_file, check_output_file
    check_format(fmt)
    if store is None:
        check_output_file(out, "--out", (".npz",))   # write what is printed: never K.json.npz
    architecture = load_arch(arch)
    a1 = read_inputs(x1, "--x1", input_shape)
    a2 = read_inputs(x2, "--x2", input_shape) if x2 is not None else None
    if store is not None:
        if diagonal:
            raise ValueError("--diagonal: not available with --store; the diagonal fits in memory, drop --store")
        from ntkprior.scale.distributed import kernel_matrix
        stored = kernel_matrix(architecture, a1, a2, kind=kind, store=str(store), block=block,
                               client=scheduler, progress=True, overwrite=overwrite,
                               stall_timeout=stall_timeout)
        shape = list(stored.shape)
        emit(fmt, f"{kind.upper()} of {architecture}, {shape[0]} x {shape[1]}, stored in {store}",
             {"store": str(store), "kind": kind, "shape": shape, "arch": str(architecture)})
        return
    n2 = len(a1 if a2 is None else a2)
    check_allocation(2 * 8 * len(a1) * (1 if diagonal else n2), "--x1",
                     f"the {len(a1)} x {1 if diagonal else n2} NNGP and NTK matrices",
                     "pass --diagonal for K(x, x) only, or --store K.zarr to compute them out of core")
    k = architecture.kernel(a1, a2, diagonal=diagonal, max_memory=max_memory)
    with atomic_file(out) as tmp:
        np.savez(tmp, nngp=k.nngp.numpy(), ntk=k.ntk.numpy(), x1_shape=np.array(a1.shape),
                 x2_shape=np.array((a2 if a2 is not None else a1).shape), arch=np.array(str(architecture)))
    shape = list(k.ntk.shape)
    emit(fmt, f"NNGP and NTK of {architecture}, {' x '.join(map(str, shape))}{' (the diagonal)' * diagonal}, "
              f"written to {out}", {"out": str(out), "shape": shape, "arch": str(architecture)})
