"""The ``ntkprior`` command line: thin commands over the library, one module per group of
commands (``kernel``, ``prior``: eigen/score/predict, ``training``: train/diagnose, ``report``);
what they share (the app, the bad-input contract, file I/O, common options) is in ``base``.

Every command reads .npy/.npz/.csv and writes .npz/.json/.csv; bad input exits with
code 2 and a message naming the problem, never a traceback.
"""

from ntkprior.app.cli import curve, explore, kernel, prior, report, similar, training  # noqa: F401  (registers them)
from ntkprior.app.cli.base import app

__all__ = ["app"]
