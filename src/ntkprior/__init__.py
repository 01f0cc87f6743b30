"""ntkprior: the Neural Tangent Kernel as an instrument for describing the prior of a deep network.

Write an architecture once and get the finite PyTorch network, its exact infinite-width
NNGP and NTK, the empirical NTK of any model, the prior over labelings, eigenmodes,
training dynamics and comparisons with really trained networks. See README.md and docs/.

Loaded on first use (heavier dependencies): ``NeuralKernel`` and ``NTKRegressor``
(scikit-learn), ``ntkprior.app.plots`` (matplotlib),
``ntkprior.app.report``, ``ntkprior.scale.distributed`` and ``ntkprior.scale.stored`` (Dask, zarr:
``pip install "ntkprior[distributed]"``); ``ntp.distributed`` is loaded on first use.
"""

import importlib
import os as _os
import sys as _sys

# The command line (console script ``ntkprior``) makes torch's OpenMP threads sleep instead of
# spinning, unless the user chose a policy: measured, spinning threads made ``ntkprior train`` 5x
# slower on a loaded machine. The OpenMP runtime reads the variable once, when torch loads it, and
# importing ``ntkprior.app.cli`` imports this package (and torch) first: so it is set here, before
# any import of torch, and only when this process is the command line.
if _sys.argv and _os.path.basename(_sys.argv[0]).lower() in ("ntkprior", "ntkprior.exe", "ntkprior-script.py"):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ntkprior.data import load_array
from ntkprior.studies.datasets import boolean_cube, interval_grid, seed_sin_data, walsh
from ntkprior.dynamics.diagnose import Diagnosis, diagnose
from ntkprior.dynamics.linearized import LinearizedDynamics, Trajectory, linearized_dynamics, max_stable_learning_rate
from ntkprior.kernels.empirical import empirical_ntk, empirical_ntk_vp
from ntkprior.arch.layers import (Abs, Dense, DenseModule, Elementwise, Erf, Gelu, Identity, Kernels, LeakyReLU,
                     ReLU, Serial, SiLU, Sigmoid, Sin, Softplus, Tanh, serial)
from ntkprior.prior.linalg import IllConditionedWarning, JitterWarning, SymmetricPSD
from ntkprior.prior.prior import (CandidateRanking, CandidateScore, KernelPrior, LearningRateWarning, ModeTable, Posterior,
                    predict, rank_candidates)
from ntkprior.prior.sources import KernelBlocks
from ntkprior.arch.spec import SpecError, load_arch, parse_spec
from ntkprior.prior.spectrum import Eigenmodes, count_sign_changes, eigenmodes
from ntkprior.dynamics.training import TrainResult, WidthSweep, train, width_sweep

__version__ = "0.1.0"

#: public module names kept from the flat layout, loaded on first use (heavy dependencies)
_LAZY_MODULES = {"distributed": "scale.distributed", "stored": "scale.stored", "plots": "app.plots",
                 "report": "app.report", "estimators": "prior.estimators"}
#: names re-exported from modules with heavy imports (scikit-learn), loaded on first use
_LAZY_NAMES = {"NeuralKernel": "prior.estimators", "NTKRegressor": "prior.estimators"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{_LAZY_MODULES[name]}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'ntkprior' has no attribute {name!r}")


__all__ = [
    "Abs", "CandidateRanking", "CandidateScore", "Dense", "DenseModule", "Diagnosis", "Eigenmodes", "Elementwise", "Erf",
    "Gelu", "IllConditionedWarning", "Identity", "JitterWarning", "KernelBlocks", "KernelPrior", "Kernels", "LearningRateWarning", "LeakyReLU", "LinearizedDynamics",
    "ModeTable", "NTKRegressor", "NeuralKernel", "Posterior", "ReLU", "Serial", "SiLU", "Sigmoid", "Sin",
    "Softplus", "SpecError", "SymmetricPSD", "Tanh", "TrainResult", "Trajectory", "WidthSweep",
    "boolean_cube", "count_sign_changes", "diagnose", "eigenmodes", "empirical_ntk", "empirical_ntk_vp",
    "interval_grid", "linearized_dynamics", "load_arch", "load_array", "max_stable_learning_rate",
    "parse_spec", "predict", "rank_candidates", "seed_sin_data", "serial", "train", "walsh",
    "width_sweep",
]
