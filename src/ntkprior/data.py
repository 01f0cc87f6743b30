"""Reading and validating inputs at the edge of the library, and the built-in data sets.

Every public function converts what the user hands over (numpy arrays, torch tensors,
lists, file paths) with the helpers here, so that bad input fails early with a
``ValueError`` that names the argument, says what was wrong and how to fix it.
"""

from __future__ import annotations

import math
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
        t = torch.from_numpy(np.ascontiguousarray(arr))
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
    bad = ~torch.isfinite(t)
    if bad.any():
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        count = int(bad.sum())
        raise ValueError(f"{name}: contains {count} NaN/inf value(s), the first at index {first}; "
                         "remove or impute them before computing kernels")
    return t


def as_inputs(x, name: str = "x", *, dtype: torch.dtype | None = DEFAULT_DTYPE,
              device=None) -> torch.Tensor:
    """Validate network inputs: a finite, non-empty 2-D array of shape (n, d)."""
    t = to_tensor(x, name, dtype=dtype, device=device)
    if t.ndim != 2:
        hint = (f"reshape it with {name}.reshape(-1, 1) for n scalar inputs"
                if t.ndim == 1 else f"flatten it to ({t.shape[0] if t.ndim else 'n'}, -1)")
        raise ValueError(f"{name}: expected a 2-D array of shape (n_samples, n_features), "
                         f"got shape {tuple(t.shape)}; {hint}")
    if t.shape[0] == 0 or t.shape[1] == 0:
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
    """Both input sets must have the same number of features."""
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
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{name}: file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
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
