"""``ntkprior report``: the whole analysis as an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ntkprior.app.cli.base import (ARCH_HELP, CANDIDATES_HELP, SMALL, TRAIN_HELP, app, candidates_for,
                                   check_format, emit, example, fails_cleanly, format_option,
                                   input_shape_option, load_source, parse_numbers, shaped, test_data,
                                   test_option, train_data)


# ============================================================================== report
@app.command(epilog=example("ntkprior report",
                             "ntkprior report --quick --out /tmp/smoke",
                             f"ntkprior report --arch {SMALL} --train train.csv --test test.csv "
                             "--candidates cands.csv --out my-report"))
@fails_cleanly(directories=("out",))
def report(out: Path = typer.Option(Path("ntkprior-report"), "--out", help="directory for index.html, "
                                    "figures/ and results.json"),
           study: str = typer.Option("document", "--study", help="which study: document (the analysis of the "
                                     "document that started the project; the default), mnist1d, similarity or "
                                     "coin (real data; mnist1d needs the studies extra)"),
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
           input_shape: Optional[str] = input_shape_option(),
           fmt: str = format_option(),
           ) -> None:
    """The whole analysis (eigenmodes, the prior over labels, training vs theory, simplicity) as an HTML report.

    With no data it runs the analysis of the document that started the project on built-in data (about a minute on 2 cores);
    with --arch and --train it runs the same sections on your data. See docs/report.md.
    """
    from ntkprior.app.report import build_report, is_report_directory
    from ntkprior.files import check_output_directory
    check_format(fmt)
    check_output_directory(out, "--out", is_report_directory, "an ntkprior report")
    user = {}
    if arch is not None or train_file is not None:
        if arch is None or train_file is None:
            raise ValueError("--arch, --train: a report on your data needs both")
        x, y = train_data(train_file)
        x_test, y_test = test_data(test_file)
        x, x_test = shaped(x, input_shape, "--train"), shaped(x_test, input_shape, "--test")
        user = dict(arch=load_source(arch, networks=True), x_train=x, y_train=y, x_test=x_test,
                    candidates=candidates_for(candidates_file, x_test, y_test), learning_rate=learning_rate,
                    steps=steps, widths=None if widths is None else parse_numbers(widths, "--widths", int))
    elif any(v is not None for v in (test_file, candidates_file, learning_rate, steps, widths)):
        raise ValueError("--test, --candidates, --learning-rate, --steps, --widths: apply to a report on your "
                         "data; pass --arch and --train too")
    result = build_report(out, study=study, seed=seed, quick=quick, progress=progress, **user)
    emit(fmt, f"report written to {result.index} ({len(result.figures)} figures, results in "
              f"{result.results_path.name}) in {result.runtime_s:.0f} s",
         {"index": str(result.index), "results": str(result.results_path), "runtime_s": result.runtime_s,
          "figures": [str(p) for p in result.figures], "findings": result.results["meta"]["findings"]})
