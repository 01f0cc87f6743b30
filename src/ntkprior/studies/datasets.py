"""Built-in data sets: the ones the seed document's analysis runs on (``ntkprior report``).

- :func:`seed_sin_data`: a few inputs uniform on [-pi, pi] with labels ``sin(x) + noise`` (the
  seed's 5-point experiment);
- :func:`interval_grid`: evenly spaced 1-D inputs on an interval (the seed's eigenvector plots);
- :func:`boolean_cube`, :func:`walsh`: the cube {-1, +1}^d and its Walsh functions
  ``chi_S(x) = prod_{i in S} x_i``; parity is ``chi`` of all d coordinates (MATH.md section 5).

Everything is float64 torch, (n, d) inputs and (n,) labels, reproducible from an explicit seed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

__all__ = ["seed_sin_data", "interval_grid", "boolean_cube", "walsh", "majority"]


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def seed_sin_data(n: int = 5, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inputs uniform on [-pi, pi] (shape (n, 1)) and labels ``sin(x) + noise * N(0, 1)`` (n,).

    The seed document's experiment: five points, noise 0.1. Drawn with
    ``numpy.random.default_rng(seed)``: the inputs first, then the noise.
    """
    n = _check_count(n, "n")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise: expected a standard deviation >= 0, got {noise!r}")
    rng = np.random.default_rng(_check_count(seed, "seed", minimum=0))
    x = rng.uniform(-math.pi, math.pi, n)
    y = np.sin(x) + noise * rng.standard_normal(n)
    return torch.from_numpy(x)[:, None], torch.from_numpy(y)


def interval_grid(n: int = 100, low: float = -3.0, high: float = 3.0) -> torch.Tensor:
    """``n`` evenly spaced points from ``low`` to ``high`` inclusive, shape (n, 1)."""
    n = _check_count(n, "n", minimum=2)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low, high: expected finite numbers with low < high, got {low!r}, {high!r}")
    return torch.linspace(low, high, n, dtype=torch.float64)[:, None]


def boolean_cube(d: int) -> torch.Tensor:
    """All ``2**d`` points of {-1, +1}^d, shape (2**d, d), in lexicographic order (-1 before +1)."""
    d = _check_count(d, "d")
    if d > 20:
        raise ValueError(f"d: {d} gives 2**{d} points; use d <= 20")
    points = list(itertools.product((-1.0, 1.0), repeat=d))
    return torch.tensor(points, dtype=torch.float64)


def walsh(x, subset) -> torch.Tensor:
    """The Walsh function ``chi_S(x) = prod_{i in S} x_i`` on the rows of x (n, d); S = () gives 1.

    On the boolean cube the Walsh functions of degree |S| = k span an eigenspace of every kernel
    ``Phi(<x, x'>)`` (MATH.md section 5). Parity is ``walsh(x, range(d))``.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 2:
        raise ValueError(f"x: expected shape (n, d), got {tuple(x.shape)}")
    subset = list(subset)
    if any(not isinstance(i, (int, np.integer)) or not 0 <= i < x.shape[1] for i in subset):
        raise ValueError(f"subset: expected coordinates in 0..{x.shape[1] - 1}, got {subset!r}")
    if not subset:
        return torch.ones(x.shape[0], dtype=torch.float64)
    return x[:, subset].prod(dim=1)


def majority(x) -> torch.Tensor:
    """``sign(sum_i x_i)`` on the rows of x (n, d), with ties (even d) broken towards +1."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.where(x.sum(dim=1) >= 0, 1.0, -1.0).to(torch.float64)
