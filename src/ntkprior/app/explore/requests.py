"""What the explorer's page may ask for: validated request bodies with bounded sizes.

Every number is finite (``allow_inf_nan=False``) and every size is bounded, so that no request can
make the server compute for long or hold much memory: at most :data:`MAX_POINTS` training points,
:data:`MAX_GRID` test points on a line (:data:`MAX_GRID_SIDE` per side of a square), networks of at
most :data:`MAX_WIDTH` units, :data:`MAX_STEPS` steps and :data:`MAX_ENSEMBLE` members. Unknown
fields are refused (a typo is an error, not a silent default).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ntkprior.arch.layers import Activation
from ntkprior.arch.spec import LAYERS

#: most training points a request may carry ("a few hundred")
MAX_POINTS = 300
#: most test points on the 1-D line, and per side of the 2-D square
MAX_GRID, MAX_GRID_SIDE = 400, 40
#: inputs and labels must lie in [-BOUND, BOUND]
BOUND = 1e3
#: bounds on the architecture controls
MAX_DEPTH, MAX_STD, MAX_SPEC_CHARS = 8, 10.0, 400
#: bounds on a training run
MAX_WIDTH, MAX_STEPS, MAX_ENSEMBLE = 1024, 20_000, 16
#: most eigenmodes returned
MAX_MODES = 12
#: activations of the architecture controls: every activation layer of the grammar (each has a kernel)
ACTIVATIONS = tuple(name for name, cls in LAYERS.items() if issubclass(cls, Activation))
KINDS = ("nngp", "ntkgp", "gd-ensemble")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Data(_Strict):
    """Training points: ``x`` (n, d) with d = 1 (a line) or 2 (a plane), labels ``y`` (n,)."""

    x: list[list[float]] = Field(min_length=1, max_length=MAX_POINTS)
    y: list[float] = Field(min_length=1, max_length=MAX_POINTS)

    @model_validator(mode="after")
    def _shapes(self):
        dims = {len(row) for row in self.x}
        if len(dims) != 1 or dims.pop() not in (1, 2):
            raise ValueError("data.x: every point needs the same number of coordinates, 1 (a line) or 2 (a plane)")
        if len(self.y) != len(self.x):
            raise ValueError(f"data.y: has {len(self.y)} labels for {len(self.x)} points; give one label per point")
        if any(abs(v) > BOUND for row in self.x for v in row) or any(abs(v) > BOUND for v in self.y):
            raise ValueError(f"data: inputs and labels must lie in [-{BOUND:g}, {BOUND:g}]")
        return self

    @property
    def dim(self) -> int:
        return len(self.x[0])


class Arch(_Strict):
    """The architecture: the controls, or a spec string of the grammar (which then wins)."""

    depth: int = Field(3, ge=1, le=MAX_DEPTH, description="number of Dense layers, the readout included")
    activation: str = "relu"
    weight_std: float = Field(1.5, gt=0, le=MAX_STD)
    bias_std: float = Field(0.05, ge=0, le=MAX_STD)
    parameterization: Literal["ntk", "standard"] = "ntk"
    spec: Optional[str] = Field(None, max_length=MAX_SPEC_CHARS)

    @field_validator("activation")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ACTIVATIONS:
            raise ValueError(f"expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
        return name


class Grid(_Strict):
    """Test points: ``n`` evenly spaced on [low, high] (a line), or n x n on the square [low, high]²."""

    low: float = Field(-4.0, ge=-BOUND, le=BOUND)
    high: float = Field(4.0, ge=-BOUND, le=BOUND)
    n: int = Field(200, ge=2, le=MAX_GRID)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"grid: low must be below high, got low={self.low:g}, high={self.high:g}")
        return self


class Problem(_Strict):
    data: Data
    arch: Arch = Arch()
    grid: Grid = Grid()
    diag_reg: float = Field(0.0, ge=0, le=1.0, description="ridge relative to the mean diagonal")

    @model_validator(mode="after")
    def _square_grid(self):
        if self.data.dim == 2 and self.grid.n > MAX_GRID_SIDE:
            raise ValueError(f"grid.n: a plane is sampled n x n; n must be at most {MAX_GRID_SIDE}, got {self.grid.n}")
        return self


class PosteriorRequest(Problem):
    t: Optional[float] = Field(10_000.0, gt=0, le=1e12, description="training time in steps; null: converged")
    learning_rate: float = Field(0.05, gt=0, le=1e6)


class EigenRequest(Problem):
    k: int = Field(4, ge=1, le=MAX_MODES)
    kernel: Literal["ntk", "nngp"] = "ntk"


class CandidateRequest(Problem):
    x_star: list[float] = Field(min_length=1, max_length=2)
    y_star: float = Field(ge=-BOUND, le=BOUND)
    kernel: Literal["ntk", "nngp"] = "ntk"


class TrainRequest(Problem):
    width: int = Field(256, ge=1, le=MAX_WIDTH)
    steps: int = Field(1000, ge=1, le=MAX_STEPS)
    learning_rate: float = Field(0.05, gt=0, le=1e6)
    ensemble: int = Field(8, ge=2, le=MAX_ENSEMBLE)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class SpecRequest(_Strict):
    arch: Arch


class CsvRequest(_Strict):
    text: str = Field(min_length=1, max_length=200_000)
