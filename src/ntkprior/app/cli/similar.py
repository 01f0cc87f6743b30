"""``ntkprior similar``: the pool inputs a network's kernel finds most similar to each query."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ntkprior.app.cli.base import (app, arch_option, check_format, emit, example, fails_cleanly, format_option,
                                   input_shape_option, out_option, read_inputs, write_outputs)


def _text(result) -> str:
    lines = [f"{len(result.indices)} queries, the {result.indices.shape[1]} most similar pool inputs by the "
             f"normalised {result.kernel.upper()} k(x,x')/sqrt(k(x,x)k(x',x')):"]
    for i, (idx, s) in enumerate(zip(result.indices, result.similarity)):
        lines.append(f"  query {i}: " + ", ".join(f"pool[{j}] {v:.4f}" for j, v in zip(idx, s)))
    return "\n".join(lines)


@app.command(epilog=example(
    'ntkprior similar --arch "conv(64, 3) relu conv(64, 3) relu flatten dense(1)" --query q.npy --pool pool.npy '
    '--k 5 --figure similar.png --out similar.json'))
@fails_cleanly
def similar(arch: str = arch_option(),
            query: Path = typer.Option(..., "--query", help="query inputs (n_q, ...): .npy, .npz or .csv"),
            pool: Path = typer.Option(..., "--pool", help="pool inputs (n_p, ...) to search: .npy, .npz or .csv"),
            k: int = typer.Option(5, "--k", help="neighbours per query"),
            kernel: str = typer.Option("ntk", "--kernel", help="ntk or nngp"),
            figure: Optional[Path] = typer.Option(None, "--figure", help="write the queries beside their "
                                                  "neighbours (.png, .svg, .pdf)"),
            out: Optional[Path] = out_option("indices and similarities: .json or .npz"),
            input_shape: Optional[str] = input_shape_option(),
            fmt: str = format_option(),
            ) -> None:
    """The K pool inputs most similar to each query under ARCH's exact kernel, by the normalised kernel
    k(x, x')/sqrt(k(x, x) k(x', x')) (the cosine of the two inputs' features). See docs/studies.md."""
    from ntkprior.arch.spec import load_arch
    from ntkprior.prior.similarity import similar as nearest
    from ntkprior.prior.sources import check_kernel_name
    check_format(fmt)
    check_kernel_name(kernel, "--kernel")
    architecture = load_arch(arch)
    queries = read_inputs(query, "--query", input_shape)
    inputs = read_inputs(pool, "--pool", input_shape)
    if k < 1 or k > len(inputs):
        raise ValueError(f"--k: expected between 1 and the pool size {len(inputs)}, got {k}")
    result = nearest(architecture, queries, inputs, k, kernel=kernel)
    payload = {"arch": str(architecture), "kernel": kernel, "indices": result.indices,
               "similarity": result.similarity}
    write_outputs(out, payload)
    if figure is not None:
        from ntkprior.app import plots
        shown = min(len(queries), 8)
        plots.similar_inputs(queries[:shown], inputs[result.indices[:shown]], result.similarity[:shown],
                             title=f"most similar pool inputs by the normalised {kernel.upper()}"
                             ).savefig(figure, dpi=110)
    emit(fmt, _text(result), payload)
