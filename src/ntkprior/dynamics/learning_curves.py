"""Learning curves of really trained networks: the third source beside the theory and kernel
regression (:mod:`ntkprior.prior.learning_curves`).

For each training-set size p, the same random subsets of the pool as the measured kernel
regression (:func:`ntkprior.prior.learning_curves.training_subsets` with the same seed) train an
ensemble of finite networks by full-batch gradient descent (:func:`ntkprior.dynamics.training.train`,
loss ½·mean); the test error is that of the ensemble mean on the rest of the pool. In the wide, lazy
limit and at convergence the ensemble mean is NTK regression (Lee et al. 2019; MATH.md section 4):
its curve then follows the NTK's. Finite width, a finite number of steps (small-eigenvalue modes
converge last: eta lambda_i t / m must exceed a few) and feature learning make it depart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.data import as_inputs, as_labels
from ntkprior.dynamics.linearized import max_stable_learning_rate
from ntkprior.dynamics.training import train
from ntkprior.prior.learning_curves import check_count, check_seed, check_train_sizes, training_subsets

__all__ = ["TrainedCurve", "trained_learning_curve"]

#: learning rate as a share of the largest stable one, 2m / lambda_max, when none is given
_SAFE_SHARE = 0.5


@dataclass(frozen=True)
class TrainedCurve:
    """Test errors of trained ensembles on the held-out pool points.

    ``mse`` (sizes, draws): of the ensemble-mean prediction; ``member_mse`` (sizes, draws, ensemble):
    of each network alone; ``train_loss`` (sizes, draws): final ½·mean training loss, averaged over
    members (near 0 when training converged); ``mean`` / ``std`` over draws of ``mse``.
    """

    n_train: np.ndarray
    mse: torch.Tensor
    member_mse: torch.Tensor
    train_loss: torch.Tensor
    learning_rates: torch.Tensor
    steps: int
    ensemble: int
    seed: int

    @property
    def mean(self) -> torch.Tensor:
        return self.mse.mean(dim=1)

    @property
    def std(self) -> torch.Tensor:
        return self.mse.std(dim=1) if self.mse.shape[1] > 1 else torch.zeros(self.mse.shape[0], dtype=self.mse.dtype)

    def __repr__(self) -> str:
        return (f"TrainedCurve(n_train={self.n_train.tolist()}, ensemble={self.ensemble}, steps={self.steps}, "
                f"mean=[{', '.join(f'{float(v):.3g}' for v in self.mean)}])")


def _learning_rate(arch, x_train: torch.Tensor, learning_rate) -> float:
    """The given rate, or half the largest stable one of the analytic NTK on these inputs."""
    if learning_rate is not None:
        return learning_rate
    return _SAFE_SHARE * max_stable_learning_rate(arch.kernel(x_train).ntk)


def trained_learning_curve(arch, x_pool, target, n_train, steps: int = 1000, learning_rate: float | None = None,
                           ensemble: int = 4, seed: int = 0, *, draws: int = 1, dtype: torch.dtype = torch.float64,
                           device=None, progress: bool = False) -> TrainedCurve:
    """Train ensembles of ``arch`` on random subsets of the pool and test them on the rest.

    Parameters
    ----------
    arch : an architecture (``ntp.serial(...)``); its hidden width is the width trained.
    x_pool (N, d), target (N,) or (N, k) : the pool and the function to learn on it.
    n_train : sizes, each 1 <= p < N.
    steps, learning_rate : full-batch gradient descent on ½·mean squared error. ``learning_rate``
        None: for each subset, half the largest stable rate ``2p / lambda_max`` of the analytic NTK.
    ensemble : networks per subset (seeds ``seed + 1000 * (i * draws + j) + member`` for size i,
        draw j), whose mean prediction is scored.
    seed, draws : subsets as in ``learning_curve(..., measured=True, seed=seed, draws=draws)``.
    """
    x_pool = as_inputs(x_pool, "x_pool")
    y = as_labels(target, x_pool.shape[0], "target")
    sizes = check_train_sizes(n_train, x_pool.shape[0])
    ensemble, draws, seed = check_count(ensemble, "ensemble"), check_count(draws, "draws"), check_seed(seed)
    if ensemble > 1000:
        raise ValueError(f"ensemble: at most 1000 networks per subset (their seeds are spaced by 1000), "
                         f"got {ensemble}")
    if not hasattr(arch, "build") or (learning_rate is None and not hasattr(arch, "kernel")):
        raise ValueError(f"arch: expected an architecture from ntkprior.serial(...) (with .build, and .kernel "
                         f"for the default learning rate), got {type(arch).__name__}")
    shape = (sizes.shape[0], draws)
    mse, loss, rates = torch.empty(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64), \
        torch.empty(shape, dtype=torch.float64)
    member_mse = torch.empty(shape + (ensemble,), dtype=torch.float64)
    for i, n in enumerate(sizes):
        for j, (train_idx, test_idx, _) in enumerate(training_subsets(x_pool.shape[0], int(n), draws, seed)):
            x_train, x_test = x_pool[train_idx], x_pool[test_idx]
            rates[i, j] = rate = _learning_rate(arch, x_train, learning_rate)
            result = train(arch, x_train, y[train_idx], x_test, steps=steps, learning_rate=rate,
                           seed=seed + 1000 * (i * draws + j), ensemble=ensemble, record=[steps],
                           track_kernel=False, dtype=dtype, device=device, progress=progress)
            outputs = result.test_outputs[:, -1].to(torch.float64).cpu()           # (ensemble, n_test, k)
            truth = y[test_idx]
            mse[i, j] = ((outputs.mean(dim=0) - truth) ** 2).mean()
            member_mse[i, j] = ((outputs - truth) ** 2).mean(dim=(1, 2))
            loss[i, j] = result.loss[:, -1].to(torch.float64).mean()
    return TrainedCurve(n_train=sizes, mse=mse, member_mse=member_mse, train_loss=loss, learning_rates=rates,
                        steps=int(steps), ensemble=ensemble, seed=seed)
