"""scikit-learn interop: an sklearn kernel for an architecture's NTK / NNGP, and an NTK regressor.

``NeuralKernel(arch, "ntk")`` is a ``sklearn.gaussian_process.kernels.Kernel`` without
hyperparameters, so it works wherever scikit-learn takes a kernel::

    GaussianProcessRegressor(NeuralKernel(arch, "nngp"), optimizer=None)
    KernelRidge(kernel=NeuralKernel(arch))          # sklearn evaluates Kernel objects whole
    SVC(kernel=NeuralKernel(arch))                  # any callable (X, Y) -> Gram matrix

and composes with sklearn's kernels (``NeuralKernel(arch) + WhiteKernel(1e-3)``).
:class:`NTKRegressor` is an estimator (``fit``, ``predict(return_std=True)``, ``score``) for the
predictions of :func:`ntkprior.prior.prior.predict`, factorising the training kernel once in ``fit``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils.validation import check_is_fitted, validate_data

from ntkprior.prior.linalg import SymmetricPSD
from ntkprior.prior.prior import KINDS, predict
from ntkprior.prior.sources import KernelBlocks, check_kernel_name, resolve_kernels

__all__ = ["NeuralKernel", "NTKRegressor"]


def _function_source(arch, name: str = "arch"):
    source = resolve_kernels(arch)
    if source.precomputed:
        raise ValueError(f"{name}: needs a kernel that can be evaluated at new inputs (an "
                         "architecture, a callable k(x1, x2) or a torch module), not precomputed matrices")
    return source


class NeuralKernel(Kernel):
    """An architecture's infinite-width NTK (``kernel="ntk"``) or NNGP (``"nngp"``) as an sklearn kernel.

    Parameters
    ----------
    arch : architecture, callable ``k(x1, x2)``, or torch.nn.Module (empirical NTK)
    kernel : "ntk" or "nngp"

    The kernel has no hyperparameters (``theta`` is empty): fitting a GaussianProcessRegressor does
    not change it. Returns float64 numpy arrays, as scikit-learn expects.
    """

    def __init__(self, arch, kernel: str = "ntk"):
        self.arch = arch
        self.kernel = kernel

    def _source(self):
        check_kernel_name(self.kernel)
        return _function_source(self.arch)

    def __call__(self, X, Y=None, eval_gradient=False):
        if eval_gradient and Y is not None:
            raise ValueError("Y: the gradient can only be evaluated when Y is None")
        source = self._source()
        if Y is None or Y is X or (np.shape(Y) == np.shape(X) and np.array_equal(Y, X)):
            # H(X, X) by the symmetric path: exact diagonal (sklearn passes Y = X explicitly)
            k = source.matrix(self.kernel, X)
        else:
            k = source.cross(self.kernel, X, Y)
        k = k.cpu().numpy()
        if eval_gradient:
            return k, np.empty((k.shape[0], k.shape[0], 0))
        return k

    def diag(self, X):
        return self._source().diagonal(self.kernel, X).cpu().numpy()

    def is_stationary(self):
        return False

    @property
    def requires_vector_input(self):
        return True

    def __repr__(self):
        return f"NeuralKernel({str(self.arch)!r}, kernel={self.kernel!r})"


class NTKRegressor(RegressorMixin, BaseEstimator):
    """Regression with the predictions of infinitely wide networks (scikit-learn estimator).

    Parameters
    ----------
    arch : architecture (or callable / torch module, see :mod:`ntkprior.prior.sources`)
    kind : str, default "gd-ensemble"
        Which row of MATH.md section 4 (see :func:`ntkprior.prior.prior.predict`): "gd-ensemble" (mean
        and spread of networks trained by gradient descent), "ntkgp", "nngp", "readout", or "ntk"
        (mean only; ``return_std`` is then unavailable).
    t : float or None
        One training time in steps (None: converged).
    learning_rate : float
    diag_reg : float, default 1e-10
        Ridge relative to the mean diagonal of the inverted training kernel, like
        ``GaussianProcessRegressor(alpha=1e-10)``: it keeps duplicate training inputs from making the
        kernel singular. 0 for none.

    Attributes
    ----------
    X_train_, y_train_, n_features_in_
    """

    def __init__(self, arch=None, kind: str = "gd-ensemble", t=None, learning_rate: float = 1.0,
                 diag_reg: float = 1e-10):
        self.arch = arch
        self.kind = kind
        self.t = t
        self.learning_rate = learning_rate
        self.diag_reg = diag_reg

    def _names(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {list(KINDS)}, got {self.kind!r}")
        return KINDS[self.kind]

    def fit(self, X, y):
        """Compute and factorise the training kernel(s) once."""
        if self.arch is None:
            raise ValueError("arch: pass an architecture, e.g. NTKRegressor(ntp.serial(...))")
        if np.ndim(self.t) != 0:
            raise ValueError(f"t: NTKRegressor takes one training time (or None), got {self.t!r}; "
                             "use ntkprior.prior.prior.predict for an array of times")
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        names = self._names()
        source = _function_source(self.arch)
        train = source.blocks(names, X)
        self.X_train_, self.y_train_ = X, y
        self._train = {k: b.train for k, b in train.items()}
        self._train[names[0]] = SymmetricPSD(train[names[0]].train,
                                             f"{source.label(names[0])} of the training inputs",
                                             diag_reg=self.diag_reg)
        if self.t is None:
            self._train[names[0]].cholesky()
        else:
            self._train[names[0]].eigh()
        return self

    def predict(self, X, return_std: bool = False, return_cov: bool = False):
        """Predictive mean (n,) or (n, k); with ``return_std`` / ``return_cov`` also those
        (the same for every output column)."""
        check_is_fitted(self, "X_train_")
        if return_std and return_cov:
            raise ValueError("return_std, return_cov: ask for at most one of them")
        if (return_std or return_cov) and self.kind == "ntk":
            raise ValueError("return_std: kind='ntk' predicts the mean only; use kind='gd-ensemble' "
                             "for the spread of trained networks or 'ntkgp' for the NTK-GP posterior")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        names = self._names()
        cov = "full" if return_cov else ("diagonal" if return_std else None)
        if cov is None:
            names = names[:1]
        tests = _function_source(self.arch).test_blocks(names, self.X_train_, X, test=cov)
        blocks = {k: KernelBlocks(self._train[k], *tests[k]) for k in names}
        post = predict(blocks, None, self.y_train_, kind=self.kind, t=self.t,
                       learning_rate=self.learning_rate, cov=cov)
        mean = post.mean.numpy()
        if return_cov:
            return mean, post.cov.numpy()
        if return_std:
            return mean, post.std.numpy()
        return mean

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
