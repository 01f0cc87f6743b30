"""The plain result every study returns: numbers for results.json and arrays for its figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class StudyResult:
    """What one study computed.

    ``numbers`` is JSON-ready (``ntkprior.data.jsonable``) and is what a report stores in
    results.json; ``arrays`` holds what its figures draw (not stored).
    """

    name: str
    numbers: dict
    arrays: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"StudyResult({self.name!r}, numbers: {', '.join(self.numbers)})"


def numbers(t) -> list:
    """A tensor or array as a flat list of floats."""
    return np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=float).reshape(-1).tolist()
