"""What every ``ntkprior`` command shares: the Typer app, the bad-input contract, reading and
writing files, and the options that mean the same everywhere.

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

SPEC_HELP = ('architecture: a one-line spec such as "dense(512, weight_std=1.5, bias_std=0.05) relu '
             'dense(1)", or a .yaml/.json file holding one')
ARCH_HELP = SPEC_HELP + ", or a kernel store K.zarr written by kernel --store"
TRAIN_HELP = ("training data: a .csv with a header row whose label column is named y (all other columns "
              "are inputs; no header: the last column is y), or an .npz with arrays x and y")
TEST_HELP = ("test inputs: a .csv (same input columns as --train; a y column, if any, is scored as the "
             "candidate 'labels in the test file'), an .npy, or an .npz with array x")
CANDIDATES_HELP = ("candidate labelings of the test inputs: a .csv with one column per candidate (header = "
                   "names) and one row per test input, a .json {name: [labels]}, an .npz or an .npy "
                   "(n_candidates, n_test)")
FORMAT_HELP = "what to print: text (tables) or json (machine-readable)"
INPUT_SHAPE_HELP = ("per-sample shape C,L or C,H,W of signals/images stored as flat rows (e.g. a .csv): each "
                    "row of C·L or C·H·W numbers is reshaped to it, channels first as in torch")
SMALL = '"[dense(512, weight_std=1.5, bias_std=0.05) relu]*2 dense(1)"'


#: options naming files a command writes; every other Path option names a file it reads
OUTPUT_FILES = ("out", "figure")


def fails_cleanly(fn=None, *, directories: tuple[str, ...] = ()):
    """The bad-input contract at the CLI edge: every Path option is checked before any work
    (inputs readable files, outputs writable; ``directories``: options naming an output
    directory, checked by the command), and a ValueError, an OSError or an impossible allocation
    becomes exit code 2 with a one-line message. The library's warnings are printed as
    ``warning: ...`` lines on stderr (not Python's file:line format)."""
    if fn is None:
        return functools.partial(fails_cleanly, directories=directories)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                check_paths(kwargs, directories)
                return fn(*args, **kwargs)
            except (ValueError, OSError) as exc:
                typer.echo(f"error: {_one_line(exc)}", err=True)
                raise typer.Exit(2) from None
            except (MemoryError, RuntimeError) as exc:   # torch's allocator raises RuntimeError
                if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
                    raise
                typer.echo(f"error: not enough memory ({_one_line(exc) or type(exc).__name__}); use smaller "
                           "inputs, or compute kernels out of core (ntkprior kernel --store)", err=True)
                raise typer.Exit(2) from None
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    typer.echo(f"warning: {message}", err=True)

    return wrapper


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (spec errors point at a token on the next lines: kept, indented)."""
    text = str(exc)
    return text if isinstance(exc, ValueError) else " ".join(text.split())


def check_paths(kwargs: dict, directories: tuple[str, ...] = ()) -> None:
    """Check every Path option of a command before it runs: what it reads must be a readable
    file, what it writes (:data:`OUTPUT_FILES`) a file name in a writable directory (a figure's
    suffix one that matplotlib writes). ``--store`` and ``directories`` are checked by the library."""
    from ntkprior.files import check_input_file, check_output_file
    for key, value in kwargs.items():
        if not isinstance(value, Path) or key in directories or key == "store":
            continue
        option = "--" + key.removesuffix("_file").replace("_", "-")
        if key == "figure":
            check_output_file(value, option, figure_suffixes())
        elif key in OUTPUT_FILES:
            check_output_file(value, option)
        else:
            check_input_file(value, option)


def figure_suffixes() -> tuple[str, ...]:
    """The file suffixes matplotlib can write (.png, .svg, .pdf, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase
    return tuple(f".{ext}" for ext in FigureCanvasBase.get_supported_filetypes())


def read_inputs(path: Path, name: str, input_shape: Optional[str] = None) -> np.ndarray:
    """Inputs from .npy/.npz/.csv, reshaped by --input-shape. In a CSV, columns named y, y1, ... are
    labels, as for --train: they are left out of the inputs, and a note says which columns were used."""
    from ntkprior.data import csv_columns, load_array, load_labelled
    if Path(path).suffix.lower() not in (".csv", ".txt"):
        return shaped(load_array(path, name), input_shape, name)
    x, y = load_labelled(path, name, labels="optional")
    if y is not None:
        inputs, labels = csv_columns(path)
        typer.echo(f"note: {name}: {path} has label column(s) {', '.join(labels)}, left out; the inputs are "
                   f"its {len(inputs)} other column(s): {', '.join(inputs)}", err=True)
    return shaped(x, input_shape, name)


def input_shape_option():
    return typer.Option(None, "--input-shape", help=INPUT_SHAPE_HELP)


def shaped(array, input_shape: Optional[str], name: str):
    """``array`` (n, ...) reshaped to (n, *input_shape) when --input-shape is given (else unchanged)."""
    if input_shape is None or array is None:
        return array
    shape = tuple(parse_numbers(input_shape, "--input-shape", int))
    if any(v < 1 for v in shape):
        raise ValueError(f"--input-shape: {input_shape!r} must be positive integers such as 1,8,8")
    per_row, want = int(np.prod(array.shape[1:])), int(np.prod(shape))
    if per_row != want:
        raise ValueError(f"--input-shape: {name} has {per_row} numbers per row but {input_shape} holds {want}; "
                         "give the shape of one sample (channels first)")
    return array.reshape((array.shape[0],) + shape)


def example(*lines: str) -> str:
    """An epilog with example command lines, one paragraph each."""
    return ("Example:" if len(lines) == 1 else "Examples:") + "".join(f"\n\n    {line}" for line in lines)


def check_format(fmt: str) -> str:
    if fmt not in ("text", "json"):
        raise ValueError(f"--format: expected 'text' or 'json', got {fmt!r}")
    return fmt


def emit(fmt: str, text: str, payload: dict) -> None:
    """Print the text, or the payload as JSON."""
    if fmt == "json":
        from ntkprior.data import jsonable
        typer.echo(json.dumps(jsonable(payload), indent=1))
    else:
        typer.echo(text)


def write_outputs(out: Optional[Path], payload: dict, csv_table: Optional[tuple] = None) -> None:
    """Write ``payload`` to ``out`` by its suffix: .npz (arrays), .json, or .csv (``csv_table``)."""
    if out is None:
        return
    from ntkprior.data import jsonable
    from ntkprior.files import atomic_file
    suffix = out.suffix.lower()
    if suffix not in (".json", ".npz") and not (suffix == ".csv" and csv_table is not None):
        kinds = ".npz, .json" + (" or .csv" if csv_table is not None else "")
        raise ValueError(f"--out: cannot write {out.suffix or 'a file without suffix'!r} here; use {kinds}")
    with atomic_file(out) as tmp:
        if suffix == ".json":
            tmp.write_text(json.dumps(jsonable(payload), indent=1), encoding="utf-8")
        elif suffix == ".npz":
            np.savez(tmp, **{k: np.asarray(jsonable(v) if not isinstance(v, np.ndarray) else v)
                             for k, v in payload.items() if v is not None})
        else:
            header, rows = csv_table
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(",".join(header) + "\n")
                for row in rows:
                    f.write(",".join(str(v) for v in row) + "\n")


def parse_numbers(text: str, name: str, cast=float) -> list:
    """A comma-separated list of numbers, e.g. "64,256,1024" or "10,100,inf"."""
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: could not read {text!r}; write numbers separated by commas, "
                         "e.g. 64,256,1024") from None
    if not values:
        raise ValueError(f"{name}: is empty; write numbers separated by commas")
    return values


def train_data(path: Path):
    from ntkprior.data import load_labelled
    return load_labelled(path, "--train")


def test_data(path: Optional[Path]):
    """(test inputs, test labels or None); (None, None) without a test file."""
    if path is None:
        return None, None
    from ntkprior.data import load_labelled
    return load_labelled(path, "--test", labels="optional")


def load_source(arch: str, *, networks: bool = False):
    """--arch: a spec, a .yaml/.json architecture file, or a kernel store written by ``ntkprior kernel
    --store`` (a directory). A store stands for its kernel, used out of core on the inputs it was
    computed on; where networks are built (``networks``), for the architecture it records (read back
    from its spec and checked to reproduce its entries)."""
    if Path(arch).is_dir():
        from ntkprior.scale.stored import StoredKernel
        stored = StoredKernel(arch)
        return stored.architecture() if networks else stored
    from ntkprior.arch.spec import load_arch
    return load_arch(arch)


def load_problem(fmt: str, arch: str, train_file: Path, test_file: Optional[Path],
                 input_shape: Optional[str] = None, *, networks: bool = False):
    """Check --format and read --arch (see :func:`load_source`), --train and --test (rows reshaped to
    --input-shape): (architecture or stored kernel, x, y, x_test, y_test)."""
    check_format(fmt)
    architecture = load_source(arch, networks=networks)
    x, y = train_data(train_file)
    x_test, y_test = test_data(test_file)
    return architecture, shaped(x, input_shape, "--train"), y, shaped(x_test, input_shape, "--test"), y_test


def candidates_for(path: Optional[Path], x_test, y_test) -> Optional[dict]:
    """Named candidate labelings of the test inputs: the --candidates file, plus the test file's labels."""
    if x_test is None:
        if path is not None:
            raise ValueError("--candidates: candidate labels are for test inputs; pass --test too")
        return None
    out = {}
    if path is not None:
        from ntkprior.data import load_candidates
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
