"""ntkprior: the Neural Tangent Kernel as an instrument for describing the prior of a deep network.

Write an architecture once and get the finite PyTorch network, its exact infinite-width
NNGP and NTK, the empirical NTK of any model, the prior over labelings, eigenmodes,
training dynamics and comparisons with really trained networks. See README.md and docs/.

Every public name loads on first use: ``import ntkprior`` itself imports nothing heavy.
``ntp.plots`` (matplotlib), ``ntp.report``, ``ntp.estimators`` (scikit-learn), ``ntp.distributed``
and ``ntp.stored`` (Dask, zarr: the ``distributed`` extra) are the modules ``app.plots``,
``app.report``, ``prior.estimators``, ``scale.distributed`` and ``scale.stored``.
"""

import importlib
import os as _os
import sys as _sys

# The command line (console script ``ntkprior``) tunes its own process (``_process``: OpenMP threads
# that sleep instead of spinning, malloc that keeps freed memory for reuse). Importing
# ``ntkprior.app.cli`` imports this package first, before any import of torch: so it happens here,
# and only when this process is the command line.
if _sys.argv and _os.path.basename(_sys.argv[0]).lower() in ("ntkprior", "ntkprior.exe", "ntkprior-script.py"):
    from ntkprior import _process
    _process.configure_command_line()

__version__ = "0.1.0"

#: public name -> the module that defines it. Everything loads on first use (PEP 562), so
#: ``import ntkprior`` is instant and ``ntkprior --help`` does not wait for torch.
_PUBLIC = {
    "ntkprior.data": ["load_array"],
    "ntkprior.studies.datasets": ["boolean_cube", "interval_grid", "seed_sin_data", "walsh"],
    "ntkprior.dynamics.diagnose": ["Diagnosis", "diagnose"],
    "ntkprior.dynamics.linearized": ["LinearizedDynamics", "Trajectory", "linearized_dynamics",
                                     "max_stable_learning_rate"],
    "ntkprior.kernels.empirical": ["empirical_ntk", "empirical_ntk_vp"],
    "ntkprior.arch.layers": ["Abs", "Dense", "DenseModule", "Elementwise", "Erf", "Gelu", "Identity", "Kernels",
                             "LeakyReLU", "ReLU", "Serial", "SiLU", "Sigmoid", "Sin", "Softplus", "Tanh", "serial"],
    "ntkprior.prior.linalg": ["DuplicateInputsWarning", "IllConditionedWarning", "JitterWarning", "SymmetricPSD"],
    "ntkprior.prior.prior": ["CandidateRanking", "CandidateScore", "KernelPrior", "LearningRateWarning", "ModeTable",
                             "Posterior", "predict", "rank_candidates"],
    "ntkprior.prior.sources": ["KernelBlocks"],
    "ntkprior.arch.spec": ["SpecError", "load_arch", "parse_spec"],
    "ntkprior.arch.conv": ["Conv"],
    "ntkprior.arch.pooling": ["AvgPool", "Flatten", "GlobalAvgPool"],
    "ntkprior.arch.normalization": ["LayerNorm"],
    "ntkprior.arch.branching": ["FanInConcat", "FanInSum", "FanOut", "Sum", "parallel", "residual"],
    "ntkprior.arch.from_torch": ["Residual", "from_torch"],
    "ntkprior.prior.spectrum": ["Eigenmodes", "count_sign_changes", "eigenmodes"],
    "ntkprior.dynamics.training": ["TrainResult", "WidthSweep", "train", "width_sweep"],
    "ntkprior.prior.estimators": ["NeuralKernel", "NTKRegressor"],
    "ntkprior.prior.learning_curves": ["LearningCurve", "MeasuredCurve", "PoolSpectrum", "TruncationWarning",
                                       "learning_curve", "measure_learning_curve", "pool_spectrum",
                                       "spectral_learning_curve"],
    "ntkprior.dynamics.learning_curves": ["TrainedCurve", "trained_learning_curve"],
    "ntkprior.arch.attention": ["SelfAttention"],
    "ntkprior.prior.similarity": ["Similarity", "similar"],
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
#: public module names kept from the flat layout
_MODULES = {"distributed": "scale.distributed", "stored": "scale.stored", "plots": "app.plots",
            "report": "app.report", "estimators": "prior.estimators"}
_MODULES["studies"] = "studies"          # ntp.studies.coin (issue 14): studies load on first use


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
    else:
        raise AttributeError(f"module 'ntkprior' has no attribute {name!r}")
    globals()[name] = value          # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_MODULES))


__all__ = sorted(_WHERE)
