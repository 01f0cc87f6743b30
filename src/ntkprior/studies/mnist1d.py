"""Spatial priors on MNIST-1D (Greydanus 2020, "Scaling down deep learning"): what a CNN's kernel
knows that an MLP's does not, and why the eigenmodes of a convolutional kernel are sinusoids.

MNIST-1D is generated procedurally by the ``mnist1d`` package (the ``studies`` extra): 4000
training and 1000 test signals of length 40, 10 classes; ``shuffle_seq=True`` permutes the 40
positions of every signal by one fixed permutation (the same signals otherwise). Its authors
report test accuracy: logistic regression 32 %, MLP 68 %, CNN 94 %; shuffled: CNN 56 %, MLP 68 %.

Symmetry and sinusoids. Let S be the circular shift by one position. A convolution with circular
padding and stride 1 commutes with S, so its kernel satisfies k(Sx, Sy) = k(x, y); on the orbit
{S^a x : a = 0..L-1} of one signal the Gram matrix K[a, b] = k(S^a x, S^b x) depends on b − a
(mod L) only: it is **circulant**, and every circulant matrix is diagonalised by the discrete
Fourier basis (eigenvalues: the DFT of its first row; Gray 2006, "Toeplitz and circulant
matrices"). The MLP's kernel is a function of x·y, |x|, |y|, all invariant under S applied to both
arguments, so it is circulant on the orbit too; what tells them apart is that a convolution is
local (its kernel averages functions of nearby positions), and, with global average pooling,
invariant to shifting one argument alone: k(Sx, y) = k(x, y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ntkprior.arch.spec import parse_spec
from ntkprior.prior.linalg import fix_signs
from ntkprior.studies.progress import Progress
from ntkprior.studies.result import StudyResult

__all__ = ["PUBLISHED", "SPECS", "Mnist1d", "load_mnist1d", "kernel_classifier", "KernelClassifier",
           "TrainedClassifier", "train_classifier", "label_modes", "mode_signals", "shift_invariance",
           "Mnist1dSizes", "FULL", "QUICK", "mnist1d_study", "orbit_symmetry",
           "circular_shifts", "circulant_part", "circulant_distance", "circulant_eigenvalues"]

#: Test accuracy reported by Greydanus (2020), "Scaling down deep learning", table 1 (and the
#: shuffled-positions experiment): the numbers this study is compared with.
PUBLISHED = {"standard": {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94},
             "shuffled": {"mlp": 0.68, "cnn": 0.56}}
_ACT = "weight_std=1.4, bias_std=0.1"
_CONVS = (f"conv(25, 5, stride=2, padding=1, {_ACT}) relu conv(25, 3, stride=2, padding=1, {_ACT}) relu "
          f"conv(25, 3, stride=2, padding=1, {_ACT}) relu ")
#: The MNIST-1D authors' models as specs: an MLP 40-100-100-10 and a CNN of three stride-2 1-D
#: convolutions with 25 channels, read out by Flatten (theirs) or by global average pooling.
SPECS = {"mlp": f"dense(100, {_ACT}) relu dense(100, {_ACT}) relu dense(10)",
         "cnn_flatten": _CONVS + "flatten dense(10)",
         "cnn_gap": _CONVS + "global_avg_pool dense(10)"}
#: Ridges tried on the validation split, relative to the mean diagonal of the training kernel.
RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CLASSES = 10


@dataclass(frozen=True)
class Mnist1d:
    """MNIST-1D signals as float64 tensors (n, 1, 40) and integer labels (n,)."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shuffled: bool

    def subset(self, n_train: int, n_test: int) -> "Mnist1d":
        """The first n_train training and n_test test signals (the package's order is already random)."""
        return Mnist1d(self.x[:n_train], self.y[:n_train], self.x_test[:n_test], self.y_test[:n_test], self.shuffled)


def load_mnist1d(shuffled: bool = False, seed: int = 42, num_samples: int = 5000) -> Mnist1d:
    """Generate MNIST-1D with the ``mnist1d`` package (offline, ~5 s): the authors' default arguments
    (seed 42 and 5000 samples, 80 % for training: the published data set), positions permuted by one
    fixed permutation when ``shuffled``; fewer ``num_samples`` make a smaller data set of the same
    kind (for smoke tests). The package seeds numpy's global generator; its state is restored."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ImportError("the MNIST-1D study needs the mnist1d package: pip install 'ntkprior[studies]'") from None
    args = get_dataset_args()
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"num_samples: expected an integer >= 10, got {num_samples!r}")
    args.shuffle_seq, args.seed, args.num_samples = bool(shuffled), int(seed), num_samples
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    signal = lambda a: torch.tensor(a, dtype=torch.float64)[:, None, :]
    label = lambda a: torch.tensor(a, dtype=torch.long)
    return Mnist1d(signal(data["x"]), label(data["y"]), signal(data["x_test"]), label(data["y_test"]), bool(shuffled))


def model_inputs(name: str, x: torch.Tensor) -> torch.Tensor:
    """What model ``name`` reads: signals (n, 1, 40) for the CNNs, flat vectors (n, 40) for the MLP."""
    return x.reshape(x.shape[0], -1) if name == "mlp" else x


def one_hot(y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, CLASSES).to(torch.float64)


def _ridge_solve(train: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """``(K + ridge · mean diag K · I)^{-1} Y`` by Cholesky."""
    scale = float(train.diagonal().mean())
    chol = torch.linalg.cholesky(train + ridge * scale * torch.eye(train.shape[0], dtype=train.dtype))
    return torch.cholesky_solve(targets, chol)


@dataclass(frozen=True)
class KernelClassifier:
    """Kernel regression of one-hot labels, classified by argmax: the ridge chosen on a validation split."""

    accuracy: float                 #: on the test signals, refit on all training signals
    ridge: float                    #: chosen, relative to the mean diagonal
    validation: dict                #: ridge -> validation accuracy
    predictions: torch.Tensor       #: (n_test,) argmax classes
    outputs: torch.Tensor           #: (n_test, 10) regression outputs


def kernel_classifier(joint: torch.Tensor, y: torch.Tensor, y_test: torch.Tensor, *, n_val: int,
                      ridges=RIDGES) -> KernelClassifier:
    """Classify by kernel regression of one-hot labels, ``f(X*) = K(X*, X)(K(X, X) + r·I)^{-1} Y``
    (the posterior mean of the GP / the infinite-width network trained to convergence with ridge r).

    ``joint``: the kernel on [training; test] signals ((n + n*)²). The ridge r (relative to the mean
    diagonal) is the one of ``ridges`` with the best accuracy on the last ``n_val`` training signals
    when fitted on the others (ties: the larger ridge); then it is refitted on all n.
    """
    n = y.shape[0]
    if not 1 <= n_val < n:
        raise ValueError(f"n_val: expected between 1 and the training size {n} - 1, got {n_val}")
    fit, val = slice(0, n - n_val), slice(n - n_val, n)
    targets = one_hot(y)
    scores = {}
    for r in ridges:
        alpha = _ridge_solve(joint[fit, fit], targets[fit], r)
        scores[r] = float(((joint[val, fit] @ alpha).argmax(1) == y[val]).double().mean())
    best = max(scores.values())
    ridge = max(r for r, v in scores.items() if v == best)
    outputs = joint[n:, :n] @ _ridge_solve(joint[:n, :n], targets, ridge)
    predictions = outputs.argmax(1)
    return KernelClassifier(float((predictions == y_test).double().mean()), ridge, scores, predictions, outputs)


# ====================================================================== symmetry and sinusoids
def circular_shifts(signal) -> torch.Tensor:
    """All L circular shifts ``S^a x`` (a = 0..L-1) of one signal x of shape (C, L) or (L,): (L, *x.shape)."""
    x = torch.as_tensor(signal, dtype=torch.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"signal: expected one signal of shape (C, L) or (L,), got shape {tuple(x.shape)}")
    return torch.stack([torch.roll(x, a, dims=-1) for a in range(x.shape[-1])])


def _square(matrix, name: str = "matrix") -> torch.Tensor:
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {tuple(m.shape)}")
    return m


def circulant_part(matrix) -> torch.Tensor:
    """The circulant matrix nearest to K in Frobenius norm: ``C[i, j] = c[(j − i) mod L]`` with
    ``c[d] = mean_i K[i, (i + d) mod L]`` (the orthogonal projection onto circulant matrices)."""
    k = _square(matrix)
    n = k.shape[0]
    i = torch.arange(n)
    offsets = (i[None, :] - i[:, None]) % n               # offsets[i, j] = (j - i) mod n
    c = torch.zeros(n, dtype=k.dtype).index_add_(0, offsets.reshape(-1), k.reshape(-1)) / n
    return c[offsets]


def circulant_distance(matrix) -> float:
    """``‖K − circulant_part(K)‖_F / ‖K‖_F``: 0 exactly when K is circulant. It is also how far the
    Fourier modes are from being K's eigenvectors: with the unitary DFT matrix F, ``F^H C F`` is the
    diagonal of ``F^H K F``, so this is the off-diagonal share ``‖offdiag(F^H K F)‖_F / ‖K‖_F``."""
    k = _square(matrix)
    return float(torch.linalg.norm(k - circulant_part(k)) / torch.linalg.norm(k))


def circulant_eigenvalues(matrix) -> torch.Tensor:
    """The eigenvalues of a circulant K: the DFT of its first row, ``λ_m = Σ_d c[d] e^{−2πi d m/L}``
    (real for symmetric K), of the circulant part of K, in descending order."""
    c = circulant_part(matrix)[0]
    return torch.sort(torch.fft.fft(c).real, descending=True).values


# ====================================================================== trained finite networks
@dataclass(frozen=True)
class TrainedClassifier:
    """A finite network trained by Adam on mini-batches; its test accuracy and argmax predictions."""

    accuracy: float
    predictions: torch.Tensor
    width: int
    loss: str


def train_classifier(name: str, data: Mnist1d, width: int, *, loss: str = "mse", steps: int = 2000,
                     batch_size: int = 100, learning_rate: float = 1e-2, seed: int = 0) -> TrainedClassifier:
    """Train ``SPECS[name]`` at ``width`` hidden units/channels (``arch.with_width``: the same NTK
    parameterisation as the kernels) as the MNIST-1D authors did: Adam (lr 1e-2), mini-batches of
    100, a fixed number of steps; ``loss`` "mse" (½·mean squared error on one-hot labels, the loss of
    the kernel theory) or "ce" (cross-entropy, for reference). float32; batches drawn from ``seed``."""
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss: expected 'mse' or 'ce', got {loss!r}")
    x, x_test = model_inputs(name, data.x).float(), model_inputs(name, data.x_test).float()
    net = parse_spec(SPECS[name]).with_width(width).build(tuple(x.shape[1:]) if x.ndim > 2 else x.shape[1],
                                                          seed=seed, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    targets = one_hot(data.y).float()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
        out = net(x[idx])
        value = (0.5 * ((out - targets[idx]) ** 2).mean() if loss == "mse"
                 else torch.nn.functional.cross_entropy(out, data.y[idx]))
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        predictions = net(x_test).argmax(1)
    return TrainedClassifier(float((predictions == data.y_test).double().mean()), predictions, width, loss)


# ====================================================================== the prior's view
def label_modes(train: torch.Tensor, y: torch.Tensor, ridge: float) -> dict:
    """Which eigenmodes of the training kernel carry the labels, and what the prior says of them.

    With the kernel scaled to mean diagonal 1 plus the ridge r (the GP prior N(0, K + r·I) whose
    posterior mean is the classifier), eigenpairs (λ_i, v_i) and centred one-hot labels Y (n, 10):
    ``log p(Y) = Σ_i Σ_c [−½ (v_i·y_c)²/λ_i − ½ log(2π λ_i)]`` splits per mode; ``share`` is the
    fraction ``Σ_c (v_i·y_c)² / ‖Y‖²`` of the label energy on mode i.
    """
    from ntkprior.prior.prior import KernelPrior
    labels = one_hot(y)
    labels = labels - labels.mean(0)
    table = KernelPrior(train / train.diagonal().mean(), diag_reg=ridge).modes(labels)
    energy = (table.projection ** 2).sum(1)
    log_p = -0.5 * energy / table.eigenvalue - 0.5 * CLASSES * torch.log(2 * math.pi * table.eigenvalue)
    return {"eigenvalue": table.eigenvalue, "share": energy / energy.sum(), "log_p": log_p}


def mode_signals(train: torch.Tensor, x: torch.Tensor, modes: int) -> torch.Tensor:
    """Each top eigenvector v_i seen in input space: ``m_i = Σ_j v_ij x_j`` (modes, 40).

    For the linear kernel XXᵀ this is sqrt(λ_i)·u_i, the i-th principal direction of the data; for
    a network's kernel it is the input pattern whose presence the mode's function tracks (the mean
    signal weighted by how much each example loads on the mode).
    """
    _, v = torch.linalg.eigh(train)
    top = fix_signs(v[:, -modes:].flip(1))          # the library's sign convention for eigenvectors
    return top.T @ x.reshape(x.shape[0], -1)


def shift_invariance(arch, x: torch.Tensor, modes: int, flat: bool) -> torch.Tensor:
    """Correlation over the data of each top Nyström eigenfunction φ_i(x) = k(x, X)·v_i/λ_i with
    φ_i(Sx), S the circular shift by one position: 1 for a shift-invariant eigenfunction."""
    shifted = torch.roll(x, 1, dims=-1)
    inputs = (lambda t: t.reshape(t.shape[0], -1)) if flat else (lambda t: t)
    train = arch.kernel(inputs(x)).ntk
    cross = arch.kernel(inputs(shifted), inputs(x)).ntk
    w, v = torch.linalg.eigh(train)
    w, v = w[-modes:].flip(0), v[:, -modes:].flip(1)
    phi, phi_shifted = (train @ v) / w, (cross @ v) / w
    a, b = phi - phi.mean(0), phi_shifted - phi_shifted.mean(0)
    return (a * b).sum(0) / torch.sqrt((a * a).sum(0) * (b * b).sum(0))


# ====================================================================== the study
@dataclass(frozen=True)
class Mnist1dSizes:
    """How much of MNIST-1D each part uses. The GAP CNN's kernel carries positions² per pair (35x the
    Flatten CNN's cost, docs/architectures.md), so it runs on a subset."""

    n_train: int                #: training signals for the MLP and Flatten-CNN kernels and networks
    n_test: int
    n_val: int                  #: the last n_val training signals choose the ridge
    n_gap_train: int            #: the GAP CNN's kernels
    n_gap_test: int
    n_prior: int                #: training signals in the prior's view (an eigendecomposition)
    n_shift: int                #: signals in the shift-invariance of eigenfunctions
    widths: tuple               #: trained networks' hidden width (CNN channels; the MLP gets 4x)
    steps: int
    num_samples: int = 5000     #: signals generated (80 % training): 5000 is the published data set
    modes: int = 6              #: eigenfunctions drawn


FULL = Mnist1dSizes(n_train=4000, n_test=1000, n_val=500, n_gap_train=800, n_gap_test=400, n_prior=1000,
                    n_shift=300, widths=(25, 100), steps=1500)
QUICK = Mnist1dSizes(n_train=160, n_test=40, n_val=40, n_gap_train=40, n_gap_test=20, n_prior=80, n_shift=30,
                     widths=(4, 8), steps=20, num_samples=250)
KERNELS = ("nngp", "ntk")
#: The symmetry check on one signal's orbit: circularly padded stride-1 CNNs, the authors' CNN
#: (zero padding, strides 2) and the MLP.
ORBIT_SPECS = {"circular CNN, Flatten": (f"conv(25, 5, padding='circular', {_ACT}) relu "
                                         f"conv(25, 3, padding='circular', {_ACT}) relu flatten dense(10)"),
               "circular CNN, GAP": (f"conv(25, 5, padding='circular', {_ACT}) relu "
                                     f"conv(25, 3, padding='circular', {_ACT}) relu global_avg_pool dense(10)"),
               "authors' CNN (zero padding, stride 2)": SPECS["cnn_flatten"],
               "MLP": SPECS["mlp"]}


def tasks(sizes: Mnist1dSizes) -> int:
    """Progress steps of :func:`mnist1d_study`."""
    per_variant = 1 + len(SPECS) + 2 * 2 * len(sizes.widths) + 2 + 1
    return 2 * per_variant + 1


def _kernel_accuracies(data: Mnist1d, sizes: Mnist1dSizes, progress: Progress, out: dict, kernels: dict):
    for name, spec in SPECS.items():
        n_train, n_test = (sizes.n_gap_train, sizes.n_gap_test) if name == "cnn_gap" else (sizes.n_train, sizes.n_test)
        part = data.subset(n_train, n_test)
        with progress.task(f"{name} kernels on {n_train + n_test} signals"):
            joint = parse_spec(spec).kernel(model_inputs(name, torch.cat([part.x, part.x_test])))
            n_val = max(1, round(sizes.n_val * n_train / sizes.n_train))
            for kind in KERNELS:
                clf = kernel_classifier(getattr(joint, kind), part.y, part.y_test, n_val=n_val)
                out[f"{name}_{kind}"] = clf
                kernels[f"{name}_{kind}"] = getattr(joint, kind)[:n_train, :n_train]


def variant_study(data: Mnist1d, sizes: Mnist1dSizes, progress: Progress, seed: int) -> dict:
    """Kernels, trained networks, agreement and the prior's view on one variant (standard or shuffled)."""
    data = data.subset(sizes.n_train, sizes.n_test)
    classifiers, kernels, trained = {}, {}, {}
    _kernel_accuracies(data, sizes, progress, classifiers, kernels)
    for name in ("mlp", "cnn_flatten"):
        for width in sizes.widths:
            w = 4 * width if name == "mlp" else width
            for loss in ("mse", "ce"):
                with progress.task(f"train {name} width {w} ({loss})"):
                    trained[f"{name}_w{w}_{loss}"] = train_classifier(name, data, w, loss=loss, steps=sizes.steps,
                                                                      seed=seed)
    reference = classifiers["cnn_flatten_ntk"].predictions
    agreement = {t.width: float((t.predictions == reference).double().mean())
                 for key, t in trained.items() if key.startswith("cnn_flatten") and t.loss == "mse"}
    prior, signals, shift = {}, {}, {}
    y_prior = data.y[:sizes.n_prior]
    for name in ("mlp_ntk", "cnn_flatten_ntk"):
        with progress.task(f"prior's view: {name}"):
            train = kernels[name][:sizes.n_prior, :sizes.n_prior]
            prior[name] = label_modes(train, y_prior, classifiers[name].ridge)
            signals[name] = mode_signals(train, data.x[:sizes.n_prior], sizes.modes)
    with progress.task("shift invariance of the eigenfunctions"):
        for name in SPECS:
            shift[name] = shift_invariance(parse_spec(SPECS[name]), data.x[:sizes.n_shift], sizes.modes,
                                           flat=name == "mlp")
    return {"classifiers": classifiers, "trained": trained, "agreement": agreement, "prior": prior,
            "signals": signals, "shift": shift}


def orbit_symmetry(signal: torch.Tensor) -> dict:
    """Per ORBIT_SPECS kernel: the NTK on the 40 circular shifts of one signal, its distance from the
    nearest circulant matrix (= the off-diagonal share in the Fourier basis), and its top eigenvalues
    beside the DFT of its circulant part."""
    orbit = circular_shifts(signal)
    out = {}
    for title, spec in ORBIT_SPECS.items():
        inputs = orbit.reshape(orbit.shape[0], -1) if spec == SPECS["mlp"] else orbit
        k = parse_spec(spec).kernel(inputs).ntk
        out[title] = {"distance": circulant_distance(k), "matrix": k,
                      "eigenvalues": torch.linalg.eigvalsh(k).flip(0), "dft": circulant_eigenvalues(k)}
    return out


def _top_share(share: torch.Tensor, k: int) -> float:
    return float(share[:k].sum())


def mnist1d_study(sizes: Mnist1dSizes, progress: Progress, seed: int = 0) -> StudyResult:
    """The whole MNIST-1D study on the standard and the shuffled variant (module docstring)."""
    variants, first = {}, None
    for variant, shuffled in (("standard", False), ("shuffled", True)):
        with progress.task(f"generate MNIST-1D ({variant})"):
            data = load_mnist1d(shuffled, num_samples=sizes.num_samples)
        first = data.x[0] if first is None else first
        variants[variant] = variant_study(data, sizes, progress, seed)
    with progress.task("circulant check on one signal's orbit"):
        orbit = orbit_symmetry(first)
    accuracy = {v: {**{k: c.accuracy for k, c in r["classifiers"].items()},
                    **{f"trained_{k}": t.accuracy for k, t in r["trained"].items()}} for v, r in variants.items()}
    accuracy["published"] = PUBLISHED
    numbers = {
        "accuracy": accuracy,
        "ridge": {v: {k: c.ridge for k, c in r["classifiers"].items()} for v, r in variants.items()},
        "validation": {v: {k: {str(a): b for a, b in c.validation.items()} for k, c in r["classifiers"].items()}
                       for v, r in variants.items()},
        "agreement_with_cntk": {v: r["agreement"] for v, r in variants.items()},
        "label_share_top": {v: {k: {str(m): _top_share(p["share"], m) for m in (1, 10, 30, 100)}
                                for k, p in r["prior"].items()} for v, r in variants.items()},
        "log_p_labels": {v: {k: float(p["log_p"].sum()) for k, p in r["prior"].items()} for v, r in variants.items()},
        "shift_correlation": {v: {k: s.tolist() for k, s in r["shift"].items()} for v, r in variants.items()},
        "orbit_circulant_distance": {t: o["distance"] for t, o in orbit.items()},
        "sizes": {k: getattr(sizes, k) for k in sizes.__dataclass_fields__},
        "ridges_tried": list(RIDGES),
    }
    return StudyResult("mnist1d", numbers, {"variants": variants, "orbit": orbit})
