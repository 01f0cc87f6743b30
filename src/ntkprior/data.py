"""Reading and validating inputs at the edge of the library, and the built-in data sets.

Every public function converts what the user hands over (numpy arrays, torch tensors,
lists, file paths) with the helpers here, so that bad input fails early with a
``ValueError`` that names the argument, says what was wrong and how to fix it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch

DEFAULT_DTYPE = torch.float64

_MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def to_tensor(x, name: str, *, dtype: torch.dtype | None = DEFAULT_DTYPE,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Convert array-like ``x`` to a torch tensor, refusing non-numeric data with a clear error."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name}: could not be read as a numeric array ({exc}); "
                             "pass a numpy array or torch tensor") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name}: expected numbers, got an array of dtype {arr.dtype}; "
                             "pass a numeric numpy array or torch tensor")
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = np.array(arr, order="C")  # keeps 0-d values 0-d; torch needs writeable memory
        t = torch.from_numpy(arr)
    if t.is_complex():
        raise ValueError(f"{name}: complex values are not supported; pass real numbers")
    if dtype is not None:
        t = t.to(dtype=dtype)
    elif not t.is_floating_point():
        t = t.to(DEFAULT_DTYPE)
    if device is not None:
        t = t.to(device)
    return t


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``t`` holds NaN or infinity, saying where the first one is."""
    if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
        return t  # one reduction; a finite sum means every element is finite
    bad = ~torch.isfinite(t)
    if bad.any():
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        count = int(bad.sum())
        raise ValueError(f"{name}: contains {count} NaN/inf value(s), the first at index {first}; "
                         "remove or impute them before computing kernels")
    return t


def as_inputs(x, name: str = "x", *, dtype: torch.dtype | None = DEFAULT_DTYPE,
              device=None) -> torch.Tensor:
    """Validate network inputs: a finite, non-empty array of vectors (n, d), or of signals (n, C, L),
    images (n, C, H, W) or volumes (n, C, D, H, W) in PyTorch layout."""
    t = to_tensor(x, name, dtype=dtype, device=device)
    if not 2 <= t.ndim <= 5:
        hint = (f"reshape it with {name}.reshape(-1, 1) for n scalar inputs"
                if t.ndim == 1 else f"flatten it to ({t.shape[0] if t.ndim else 'n'}, -1)")
        raise ValueError(f"{name}: expected a 2-D array of shape (n_samples, n_features) (or signals "
                         f"(n, C, L), images (n, C, H, W)), got shape {tuple(t.shape)}; {hint}")
    if 0 in t.shape:
        raise ValueError(f"{name}: is empty (shape {tuple(t.shape)}); "
                         "pass at least one sample with at least one feature")
    return check_finite(t, name)


def as_labels(y, n: int, name: str = "y", *, dtype=DEFAULT_DTYPE, device=None) -> torch.Tensor:
    """Validate labels for ``n`` samples: shape (n,) or (n, k), finite. Returned as (n, k)."""
    t = to_tensor(y, name, dtype=dtype, device=device)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"{name}: expected shape ({n},) or ({n}, k), got {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"{name}: has {t.shape[0]} rows but there are {n} inputs; "
                         "pass one label (row) per input")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: has no output columns; pass shape ({n},) or ({n}, k) with k >= 1")
    return check_finite(t, name)


def check_same_features(x1: torch.Tensor, x2: torch.Tensor, name1: str = "x1",
                        name2: str = "x2") -> None:
    """Both input sets must have the same number of features (the same per-sample shape)."""
    if x1.shape[1:] != x2.shape[1:] and x1.ndim > 2:
        raise ValueError(f"{name2}: has per-sample shape {tuple(x2.shape[1:])} but {name1} has "
                         f"{tuple(x1.shape[1:])}; both must describe points in the same input space")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"{name2}: has {x2.shape[1]} features but {name1} has {x1.shape[1]}; "
                         "both must describe points in the same input space")


def parse_memory(value, name: str = "max_memory") -> int:
    """Parse a memory budget: an int number of bytes or a string such as ``"2GB"``, ``"512MiB"``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        nbytes = int(value)
    elif isinstance(value, float) and math.isfinite(value):
        nbytes = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        unit = m.group(2).upper() if m else None
        if not m or unit not in _MEMORY_UNITS:
            raise ValueError(f"{name}: could not read {value!r} as a memory size; "
                             "write it like '2GB', '512MB', '1GiB' or give a number of bytes")
        nbytes = int(float(m.group(1)) * _MEMORY_UNITS[unit])
    else:
        raise ValueError(f"{name}: expected bytes (int) or a string like '2GB', got {value!r}")
    if nbytes <= 0:
        raise ValueError(f"{name}: must be positive, got {value!r}")
    return nbytes


def load_array(path, name: str = "input file", *, key: str | None = None) -> np.ndarray:
    """Read an array from ``.npy``, ``.npz`` (``key`` or its only / first array) or ``.csv``.

    CSV files may have a header row (detected when the first row is not numeric).
    """
    from ntkprior.files import check_input_file
    p = check_input_file(path, name)
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            check_npy_header(p, name)
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            check_npz_headers(p, name)
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if not keys:
                    raise ValueError(f"{name}: {str(p)!r} holds no arrays")
                if key is None:
                    key = "x" if "x" in keys else keys[0]
                if key not in keys:
                    raise ValueError(f"{name}: {str(p)!r} has no array {key!r}; it has {keys}")
                return z[key]
        if suffix in (".csv", ".txt"):
            return _load_csv(p, name)
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: could not read {str(p)!r}: {exc}") from None
    raise ValueError(f"{name}: unsupported file type {suffix!r} for {str(p)!r}; "
                     "use .npy, .npz or .csv")


def physical_memory() -> int | None:
    """Bytes of physical memory on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_allocation(nbytes: int, name: str, what: str, fix: str) -> None:
    """Refuse, before allocating, ``nbytes`` for ``what`` when they exceed the machine's physical memory."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise ValueError(f"{name}: {what} would need {_bytes(nbytes)}, more than this machine's "
                         f"{_bytes(total)} of memory; {fix}")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def _claimed_array(f, name: str, where: str) -> tuple[tuple, np.dtype, int] | None:
    """(shape, dtype, data bytes) that an .npy header claims, read from the open file ``f``
    (None for a format version without a public reader: numpy checks it itself)."""
    from numpy.lib import format as npy
    try:
        version = npy.read_magic(f)
        reader = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if reader is None:
            return None
        shape, _, dtype = reader(f)
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{name}: {where} is not a valid .npy array ({exc})") from None
    return shape, dtype, math.prod(shape) * dtype.itemsize


def _check_claim(name: str, where: str, shape, dtype, claimed: int, available: int) -> None:
    if claimed > available:
        raise ValueError(f"{name}: the header of {where} claims an array of shape {shape} ({dtype}, "
                         f"{_bytes(claimed)}) but the file holds only {_bytes(available)} of data; it is "
                         "truncated or damaged: write it again")
    check_allocation(claimed, name, f"the array of shape {shape} in {where}", "pass a smaller array")


def check_npy_header(p: Path, name: str) -> None:
    """An .npy file's header must agree with its size (and fit in memory) before numpy allocates."""
    with open(p, "rb") as f:
        claim = _claimed_array(f, name, repr(str(p)))
        if claim is not None and not claim[1].hasobject:   # np.load refuses object arrays itself
            _check_claim(name, repr(str(p)), *claim, os.fstat(f.fileno()).st_size - f.tell())


def check_npz_headers(p: Path, name: str) -> None:
    """Each array of an .npz must agree with its stored size (and fit in memory) before numpy allocates."""
    import zipfile
    try:
        archive = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{name}: {str(p)!r} is not a valid .npz file ({exc})") from None
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            where = f"{info.filename!r} in {str(p)!r}"
            try:
                with archive.open(info) as f:
                    claim = _claimed_array(f, name, where)
                    offset = f.tell()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ValueError(f"{name}: {where} is damaged ({exc}); write the file again") from None
            if claim is not None and not claim[1].hasobject:
                _check_claim(name, where, *claim, info.file_size - offset)


def _load_csv(p: Path, name: str) -> np.ndarray:
    with open(p) as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",") if v.strip()]
        skip = 0
    except ValueError:
        skip = 1
    arr = np.loadtxt(p, delimiter=",", skiprows=skip, ndmin=2)
    if arr.size == 0:
        raise ValueError(f"{name}: {str(p)!r} holds no numbers")
    return arr


# ---------------------------------------------------------------------------------------------
# Labelled tables and candidate labelings (appended for the command line and the report).
_LABEL_COLUMN = re.compile(r"y(_?\d+)?")


def csv_columns(path) -> tuple[list[str], list[str]] | None:
    """(input column names, label column names) of a CSV file with a header, None without one: a
    column named ``y``, ``y1``, ``y_1``, ... is a label everywhere, every other column an input."""
    header = _csv_header(Path(path))
    if header is None:
        return None
    return ([h for h in header if not _LABEL_COLUMN.fullmatch(h.lower())],
            [h for h in header if _LABEL_COLUMN.fullmatch(h.lower())])


def _csv_header(p: Path) -> list[str] | None:
    """The column names of a CSV file, or None when its first row is numeric (no header)."""
    with open(p) as f:
        first = f.readline().strip()
    cells = [c.strip().strip('"').strip("'") for c in first.split(",")]
    try:
        [float(c) for c in cells if c]
        return None
    except ValueError:
        return cells


def load_labelled(path, name: str = "--train", *, labels: str = "required"
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read inputs x (n, d) and labels y (n, k) from one file.

    - ``.csv``: with a header row, the label column is named ``y`` (several outputs: ``y1``, ``y2``,
      ... or ``y_1``, ...) and every other column is an input; without a header the last column is
      the label (when labels are required) or every column is an input (when they are optional).
    - ``.npz``: arrays ``x`` and ``y``.
    - ``.npy``: inputs only.

    ``labels``: ``"required"`` (error when there are none) or ``"optional"`` (y may be None).
    """
    if labels not in ("required", "optional"):
        raise ValueError(f"labels: expected 'required' or 'optional', got {labels!r}")
    from ntkprior.files import check_input_file
    p = check_input_file(path, name)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        x = load_array(p, name, key="x")
        with np.load(p, allow_pickle=False) as z:
            y = z["y"] if "y" in z.files else None
    elif suffix in (".csv", ".txt"):
        table = load_array(p, name)
        header = _csv_header(p)
        if header is not None and len(header) != table.shape[1]:
            raise ValueError(f"{name}: the header of {str(p)!r} names {len(header)} columns but the rows "
                             f"have {table.shape[1]}")
        if header is not None:
            is_label = np.array([_LABEL_COLUMN.fullmatch(h.lower()) is not None for h in header])
        else:
            is_label = np.zeros(table.shape[1], dtype=bool)
            if labels == "required":
                is_label[-1] = True
        x, y = table[:, ~is_label], (table[:, is_label] if is_label.any() else None)
    else:
        x, y = load_array(p, name), None
    if labels == "required" and y is None:
        raise ValueError(f"{name}: {str(p)!r} holds no labels; write a .csv whose label column is named "
                         "'y' (the other columns are inputs), or an .npz with arrays 'x' and 'y'")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if not 2 <= x.ndim <= 5 or 0 in x.shape[1:]:
        raise ValueError(f"{name}: expected inputs of shape (n, d) (or signals (n, C, L), images (n, C, H, W)) "
                         f"in {str(p)!r}, got {x.shape}")
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        y = y[:, None] if y.ndim == 1 else y
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{name}: {str(p)!r} has {x.shape[0]} inputs but {y.shape[0]} labels")
    return x, y


def load_candidates(path, n_test: int, name: str = "--candidates") -> dict[str, np.ndarray]:
    """Read named candidate labelings of ``n_test`` test inputs: ``{name: labels (n_test,)}``.

    - ``.csv``: one column per candidate, one row per test input (in the order of the test file);
      a header row names the candidates (without one they are "candidate 1", "candidate 2", ...).
    - ``.json``: an object ``{"name": [labels...], ...}``.
    - ``.npz``: one array of n_test labels per candidate, named by its key.
    - ``.npy``: an array (n_candidates, n_test).
    """
    import json

    from ntkprior.files import check_input_file
    p = check_input_file(path, name)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".txt"):
        table = load_array(p, name)
        header = _csv_header(p) or [f"candidate {i + 1}" for i in range(table.shape[1])]
        if len(header) != table.shape[1]:
            raise ValueError(f"{name}: the header of {str(p)!r} names {len(header)} candidates but the "
                             f"rows have {table.shape[1]} columns")
        items = {h: table[:, i] for i, h in enumerate(header)}
    elif suffix == ".json":
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: {str(p)!r} is not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{name}: {str(p)!r} must hold an object {{\"name\": [labels], ...}}")
        items = raw
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            items = {k: z[k] for k in z.files}
    else:
        arr = load_array(p, name)
        arr = arr[None] if arr.ndim == 1 else arr
        items = {f"candidate {i + 1}": row for i, row in enumerate(arr)}
    if not items:
        raise ValueError(f"{name}: {str(p)!r} holds no candidate labelings")
    out = {}
    for key, value in items.items():
        labels = check_finite(to_tensor(value, f"{name} candidate {key!r}"), f"{name} candidate {key!r}")
        labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
        if labels.ndim != 1 or labels.shape[0] != n_test:
            raise ValueError(f"{name}: candidate {key!r} has shape {tuple(labels.shape)} but there are "
                             f"{n_test} test inputs; give one label per test input (csv: one row each)")
        out[str(key)] = labels.numpy()
    return out


def jsonable(value):
    """Tensors, arrays and numpy scalars as plain JSON values (non-finite floats as strings)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


def describe(value) -> str:
    """A value in a few characters: tensors and arrays by shape and dtype, long sequences by length."""
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, np.ndarray):
        return f"array{value.shape} {value.dtype}" if value.size > 6 else np.array2string(value, precision=4)
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Summarized:
    """A dataclass mixin: ``repr`` lists each field in a few characters (:func:`describe`), so a
    result printed in a notebook is a short summary, not a dump of its tensors."""

    def __repr__(self) -> str:
        import dataclasses
        fields = ", ".join(f"{f.name}={describe(getattr(self, f.name))}" for f in dataclasses.fields(self)
                           if f.repr)
        return f"{type(self).__name__}({fields})"
