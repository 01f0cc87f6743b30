"""Where kernel matrices come from: resolve an ``arch_or_kernel`` argument into kernel blocks.

Every function of :mod:`ntkprior.prior.prior` and :mod:`ntkprior.prior.spectrum` that takes ``arch_or_kernel``
accepts any of

- an **architecture** (anything with a method ``kernel(x1, x2=None, *, diagonal=False)`` returning
  an object with ``.nngp`` and ``.ntk``, e.g. ``ntp.serial(...)``): exact infinite-width kernels;
- a **torch.nn.Module**: its empirical NTK ``J J^T`` at the current parameters
  (:func:`ntkprior.kernels.empirical.empirical_ntk` with ``output="mean"``: the trace over the k outputs
  divided by k, the per-output kernel like ``arch.kernel(...).ntk``); there is no empirical NNGP;
- a **callable** ``k(x1, x2) -> (n1, n2) matrix``: one kernel, used whatever kernel is asked for;
  or ``k(x1, x2) -> object with .nngp / .ntk``: both kernels;
- **precomputed matrices**: a :class:`KernelBlocks` (one kernel), a bare ``(n, n)`` matrix or
  :class:`~ntkprior.prior.linalg.SymmetricPSD`, a tuple ``(train, test_train[, test])``, or a dict
  ``{"ntk": blocks, "nngp": blocks}`` of those;
- **stored kernels** (:class:`ntkprior.scale.stored.StoredKernel`, symmetric): the train-train kernel on
  the store's inputs ``x1``, named by the store's ``kind``; alone, in a dict
  ``{"ntk": stored_ntk, "nngp": stored_nngp}``, or as ``KernelBlocks(stored, test_train, test)``.
  Test blocks not given are computed from the architecture recorded in the store
  (:meth:`~ntkprior.scale.stored.StoredKernel.architecture`); an empirical NTK's must be given.

The result is a :class:`KernelSource` whose :meth:`KernelSource.blocks` returns, per kernel name, the
train-train, test-train and test-test blocks as float64 torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ntkprior.data import Summarized, as_inputs, check_same_features, to_tensor
from ntkprior.prior.linalg import SymmetricPSD, finite_or_raise, is_stored_kernel

__all__ = ["KERNEL_NAMES", "KernelBlocks", "KernelSource", "resolve_kernels", "check_kernel_name",
           "is_kernel_operator"]

KERNEL_NAMES = ("nngp", "ntk")
_DIAGONAL_CHUNK = 512


def check_kernel_name(kernel: str, name: str = "kernel") -> str:
    """The name of an infinite-width kernel: ``"ntk"`` or ``"nngp"``."""
    if kernel not in KERNEL_NAMES:
        raise ValueError(f"{name}: expected 'ntk' or 'nngp', got {kernel!r}")
    return kernel


def _matrix(value, name: str, shape: tuple) -> torch.Tensor:
    """A finite float64 tensor of exactly ``shape`` (entries None are free)."""
    t = to_tensor(value, name)
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    return finite_or_raise(t, name)


@dataclass(frozen=True, repr=False)
class KernelBlocks(Summarized):
    """Precomputed matrices of one kernel (e.g. the NTK) on training inputs X and test inputs X*.

    Parameters
    ----------
    train : (n, n), SymmetricPSD or StoredKernel
        ``H(X, X)``. A :class:`~ntkprior.prior.linalg.SymmetricPSD` (e.g. ``KernelPrior.psd``) is reused
        with its ridge and cached factorisations; a symmetric
        :class:`~ntkprior.scale.stored.StoredKernel` is used out of core.
    test_train : (n*, n), optional
        ``H(X*, X)``. Without it, predictions are made on the training inputs.
    test : (n*, n*) or (n*,), optional
        ``H(X*, X*)``, or only its diagonal (enough for predictive standard deviations).

    numpy arrays and torch tensors are accepted and stored as float64 torch tensors.
    """

    train: Any
    test_train: Any = None
    test: Any = None

    def __post_init__(self):
        if isinstance(self.train, SymmetricPSD) or is_stored_kernel(self.train):   # used as it is
            n = self.train.n
        else:
            train = _matrix(self.train, "train", (None, None))
            n = train.shape[0]
            if train.shape[1] != n:
                raise ValueError(f"train: the train-train kernel must be square, got {tuple(train.shape)}")
            object.__setattr__(self, "train", train)
        if self.test_train is None:
            if self.test is not None:
                raise ValueError("test: a test-test block needs the test-train block too; "
                                 "pass test_train=H(X*, X)")
            return
        cross = _matrix(self.test_train, "test_train", (None, n))
        object.__setattr__(self, "test_train", cross)
        if self.test is not None:
            m = cross.shape[0]
            test = to_tensor(self.test, "test")
            shape = (m,) if test.ndim == 1 else (m, m)
            object.__setattr__(self, "test", _matrix(test, "test", shape))

    @property
    def n_train(self) -> int:
        return self.train.shape[0] if isinstance(self.train, torch.Tensor) else self.train.n

    @property
    def n_test(self) -> int | None:
        return None if self.test_train is None else self.test_train.shape[0]

    @property
    def test_is_diagonal(self) -> bool:
        return self.test is not None and self.test.ndim == 1

    def test_diagonal(self) -> torch.Tensor | None:
        """``diag H(X*, X*)`` whether ``test`` was given whole or as its diagonal."""
        if self.test is None:
            return None
        return self.test if self.test.ndim == 1 else self.test.diagonal()


class KernelSource:
    """Kernel matrices on demand, for one or both of the kernels ``"nngp"`` and ``"ntk"``.

    ``names`` lists the kernels the source can give; ``None`` means a single unnamed kernel that
    is returned whatever name is asked for (a plain callable or one precomputed matrix).
    """

    names: tuple[str, ...] | None = None
    description = "kernel"
    precomputed = False     #: True when the source cannot evaluate the kernel at new inputs

    def blocks(self, names: Iterable[str], x_train=None, x_test=None, *,
               test: str | None = "full") -> dict[str, KernelBlocks]:
        """Train-train, test-train and (``test="full"`` / ``"diagonal"`` / ``None``) test-test blocks.

        ``x_test=None`` gives training-set blocks only (precomputed sources return their own test
        blocks, if any). Returned per requested kernel name.
        """
        raise NotImplementedError

    def label(self, kernel: str) -> str:
        """How messages name the kernel: "NTK" / "NNGP", or "kernel" for a user's single kernel."""
        return kernel.upper() if self.names is not None else "kernel"

    def _check_names(self, names: Iterable[str], single: bool = True) -> tuple[str, ...]:
        """Validate requested kernel names; ``single``: a source without names has one kernel."""
        names = tuple(check_kernel_name(k) for k in names)
        if self.names is not None:
            missing = [k for k in names if k not in self.names]
            if missing:
                raise ValueError(f"arch_or_kernel: {self.description} provides only "
                                 f"{', '.join(self.names)}, not {', '.join(missing)}")
        elif single and len(names) > 1:
            raise self._single_kernel_error()
        return names

    def _single_kernel_error(self) -> ValueError:
        return ValueError(f"arch_or_kernel: {self.description} is a single kernel, but both the "
                          "NNGP and the NTK are needed here; pass an architecture, a callable "
                          "returning an object with .nngp and .ntk, or a dict "
                          "{'nngp': KernelBlocks(...), 'ntk': KernelBlocks(...)}")

    def matrix(self, kernel: str, x) -> torch.Tensor:
        """``H(x, x)`` for one kernel."""
        return self.blocks([kernel], x)[kernel].train

    def cross(self, kernel: str, x_new, x) -> torch.Tensor:
        """``H(x_new, x)`` for one kernel."""
        return self.blocks([kernel], x, x_new, test=None)[kernel].test_train


class _FunctionSource(KernelSource):
    """Kernels computed by a function ``fn(x1, x2)`` (x2 None means x1): arch, callable or module."""

    def __init__(self, fn: Callable, description: str, names: tuple[str, ...] | None,
                 diagonal: Callable | None = None, symmetric_call: bool = False):
        self._fn = fn
        self._diagonal = diagonal
        self._symmetric_call = symmetric_call     # pass x2=None for H(x, x) (exact diagonals)
        self.description = description
        self.names = names

    def _split(self, result, names, shape, what: str) -> dict[str, torch.Tensor]:
        """Read the function's result: a matrix, or an object with .nngp / .ntk."""
        out = {}
        single = not any(hasattr(result, j) for j in KERNEL_NAMES)
        if single and len(names) > 1:
            raise self._single_kernel_error()
        for k in names:
            if hasattr(result, k):
                value = getattr(result, k)
            elif single:
                value = result
            else:
                raise ValueError(f"arch_or_kernel: {self.description} returned "
                                 f"{type(result).__name__} without a .{k} attribute")
            out[k] = _matrix(value, f"{self.description} {what}", shape)
        return out

    def _call(self, x1, x2, names, what):
        result = self._fn(x1, None if x2 is None and self._symmetric_call else (x1 if x2 is None else x2))
        n2 = x1.shape[0] if x2 is None else x2.shape[0]
        return self._split(result, names, (x1.shape[0], n2), what)

    def _call_diagonal(self, x, names) -> dict[str, torch.Tensor]:
        if self._diagonal is not None:
            return self._split(self._diagonal(x), names, (x.shape[0],), "diagonal")
        parts = [self._call(x[i:i + _DIAGONAL_CHUNK], None, names, "test-test block")
                 for i in range(0, x.shape[0], _DIAGONAL_CHUNK)]
        return {k: torch.cat([p[k].diagonal() for p in parts]) for k in names}

    def blocks(self, names, x_train=None, x_test=None, *, test="full"):
        names = self._check_names(names, single=False)    # a callable's result tells later
        if x_train is None:
            raise ValueError("x_train: is required to compute kernels; pass the training inputs")
        train = self._call(as_inputs(x_train, "x_train"), None, names, "train-train block")
        if x_test is None:
            return {k: KernelBlocks(train[k]) for k in names}
        tests = self.test_blocks(names, x_train, x_test, test=test)
        return {k: KernelBlocks(train[k], *tests[k]) for k in names}

    def test_blocks(self, names, x_train, x_test, *, test: str | None = "full"):
        """Per kernel name, ``(H(X*, X), H(X*, X*) or its diagonal or None)`` without ``H(X, X)``."""
        names = self._check_names(names, single=False)
        x_train, x_test = as_inputs(x_train, "x_train"), as_inputs(x_test, "x_test")
        check_same_features(x_train, x_test, "x_train", "x_test")
        cross = self._call(x_test, x_train, names, "test-train block")
        tt = {k: None for k in names}
        if test == "full":
            tt = self._call(x_test, None, names, "test-test block")
        elif test == "diagonal":
            tt = self._call_diagonal(x_test, names)
        return {k: (cross[k], tt[k]) for k in names}

    def cross(self, kernel, x_new, x):
        return self.test_blocks([kernel], x, x_new, test=None)[kernel][0]

    def diagonal(self, kernel: str, x) -> torch.Tensor:
        """``diag H(x, x)`` for one kernel, in O(n) memory where the source allows."""
        names = self._check_names([kernel], single=False)
        return self._call_diagonal(as_inputs(x, "x"), names)[kernel]


class _PrecomputedSource(KernelSource):
    """Matrices the user computed: per kernel name, or one unnamed kernel."""

    def __init__(self, blocks: dict[str | None, KernelBlocks]):
        sizes = {k: (b.n_train, b.n_test) for k, b in blocks.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"arch_or_kernel: the precomputed kernels describe different inputs "
                             f"((n_train, n_test) per kernel: {sizes}); compute them on the same inputs")
        self._blocks = blocks
        self.names = None if None in blocks else tuple(blocks)
        self.description = "the precomputed kernel matrices"
        self.precomputed = True

    def blocks(self, names, x_train=None, x_test=None, *, test="full"):
        names = self._check_names(names)
        out = {k: self._blocks[None if self.names is None else k] for k in names}
        for k, b in out.items():
            self._check_rows(x_train, b.n_train, "x_train", "train")
            if x_test is not None:
                if b.test_train is None:
                    raise ValueError("x_test: the precomputed kernel has no test_train block; pass "
                                     "KernelBlocks(train, test_train=H(X*, X), test=H(X*, X*))")
                self._check_rows(x_test, b.n_test, "x_test", "test_train")
            if test == "full" and b.test_train is not None and (b.test is None or b.test_is_diagonal):
                raise ValueError("arch_or_kernel: a full test-test block H(X*, X*) of the precomputed "
                                 "kernel is needed here; pass KernelBlocks(..., test=H(X*, X*))")
            if test == "diagonal" and b.test_train is not None and b.test is None:
                raise ValueError("arch_or_kernel: the test-test block (or its diagonal) of the "
                                 "precomputed kernel is needed here; pass KernelBlocks(..., test=...)")
        return out

    @staticmethod
    def _check_rows(x, n: int, name: str, block: str) -> None:
        if x is None:
            return
        rows = as_inputs(x, name).shape[0]
        if rows != n:
            raise ValueError(f"{name}: has {rows} rows but the precomputed {block} block is for "
                             f"{n} inputs; pass the inputs the matrices were computed on")


class _StoredSource(_PrecomputedSource):
    """Stored train-train kernels, one per kind, on the inputs of the stores; test blocks given
    in a KernelBlocks, or computed from the architecture each store records."""

    def __init__(self, blocks: dict[str, KernelBlocks]):
        self._blocks = blocks
        self.names = tuple(blocks)
        self.description = "the stored kernel" + ("s" if len(blocks) > 1 else "")
        self.x = next(iter(blocks.values())).train.x1
        if any(not torch.equal(b.train.x1, self.x) for b in blocks.values()):
            raise ValueError("arch_or_kernel: the stored kernels were computed on different inputs "
                             "(their x1 differ); compute them on the same inputs")

    def blocks(self, names, x_train=None, x_test=None, *, test="full"):
        names = self._check_names(names)
        if x_train is not None and not torch.equal(as_inputs(x_train, "x_train"), self.x):
            raise ValueError("x_train: differs from the inputs the stored kernel was computed on; pass "
                             "None (the store's own inputs, stored.x1) or exactly those inputs")
        chosen = {k: self._blocks[k] for k in names}
        missing = [k for k in names if chosen[k].test_train is None]
        if x_test is not None and missing:
            computed = self._test_blocks_from_architecture(missing, x_test, test)
            chosen.update({k: KernelBlocks(chosen[k].train, *computed[k]) for k in missing})
        return _PrecomputedSource(chosen).blocks(names, None, x_test, test=test)

    def _test_blocks_from_architecture(self, names, x_test, test):
        """``(H(X*, X), H(X*, X*) or its diagonal or None)`` per name, one kernel call per architecture."""
        by_spec: dict[str, list[str]] = {}
        for k in names:
            by_spec.setdefault(self._blocks[k].train.spec, []).append(k)
        out = {}
        for group in by_spec.values():
            arch = self._blocks[group[0]].train.architecture()
            out.update(resolve_kernels(arch).test_blocks(group, self.x, x_test, test=test))
        return out


def _holds_store(value) -> bool:
    return is_stored_kernel(value) or (isinstance(value, KernelBlocks) and is_stored_kernel(value.train))


def _stored_source(entries: dict[str | None, Any]) -> _StoredSource:
    """Name each stored kernel by its kind (a dict key must agree with it)."""
    blocks = {}
    for key, value in entries.items():
        name = "arch_or_kernel" if key is None else f"arch_or_kernel[{key!r}]"
        if not _holds_store(value):
            raise ValueError(f"{name}: mixes an in-memory kernel with stored ones; store both kernels, or "
                             "load the stored one into memory (stored.load())")
        block = value if isinstance(value, KernelBlocks) else KernelBlocks(value)
        store = block.train
        if not store.symmetric:
            raise ValueError(f"{name}: {store.location!r} is a cross kernel of shape {store.shape}; a "
                             "stored kernel is used as the train-train kernel K(x, x): compute it with "
                             "x2=None (pass cross kernels as KernelBlocks(stored, test_train=...))")
        if key is not None and key != store.kind:
            raise ValueError(f"{name}: {store.location!r} holds the {store.kind}, not the {key}; "
                             f"pass it as {{{store.kind!r}: ...}}")
        if store.kind in blocks:
            raise ValueError(f"arch_or_kernel: two stored kernels are both the {store.kind}; pass one "
                             "NTK and one NNGP")
        blocks[store.kind] = block
    return _StoredSource(blocks)


def _as_blocks(value, name: str) -> KernelBlocks:
    if isinstance(value, KernelBlocks):
        return value
    if isinstance(value, (tuple, list)):
        if not 1 <= len(value) <= 3:
            raise ValueError(f"{name}: a tuple of precomputed blocks is (train, test_train[, test]), "
                             f"got {len(value)} entries")
        return KernelBlocks(*value)
    return KernelBlocks(value)


def _is_matrix(obj) -> bool:
    return isinstance(obj, (np.ndarray, torch.Tensor, SymmetricPSD))


def is_kernel_operator(obj) -> bool:
    """A matrix-free kernel: an object with ``.shape`` and ``.matvec(v)`` that is not an array."""
    return hasattr(obj, "shape") and hasattr(obj, "matvec") and not _is_matrix(obj)


def _module_source(model: torch.nn.Module, progress: bool) -> KernelSource:
    def ntk(x1, x2):
        from ntkprior.kernels.empirical import empirical_ntk        # lazy: torch.func machinery
        # "mean" = trace / k: the per-output kernel, the convention of arch.kernel(...).ntk and of
        # the dynamics (MATH.md section 4); identical to "trace" for single-output models
        return empirical_ntk(model, x1, x2, output="mean", progress=progress)

    return _FunctionSource(ntk, f"the empirical NTK of {type(model).__name__}", ("ntk",),
                           symmetric_call=True)


def resolve_kernels(arch_or_kernel, *, progress: bool = False) -> KernelSource:
    """Turn an ``arch_or_kernel`` argument into a :class:`KernelSource` (see the module docstring)."""
    obj = arch_or_kernel
    if isinstance(obj, KernelSource):
        return obj
    if is_stored_kernel(obj):
        return _stored_source({None: obj})
    if isinstance(obj, dict):
        unknown = [k for k in obj if k not in KERNEL_NAMES]
        if unknown or not obj:
            raise ValueError(f"arch_or_kernel: a dict of precomputed kernels needs keys 'nngp' and/or "
                             f"'ntk', got {list(obj)}")
        blocks = {k: _as_blocks(v, f"arch_or_kernel[{k!r}]") for k, v in obj.items()}
        if any(_holds_store(b) for b in blocks.values()):
            return _stored_source(blocks)
        return _PrecomputedSource(blocks)
    if isinstance(obj, (KernelBlocks, tuple, list)) or _is_matrix(obj):
        blocks = _as_blocks(obj, "arch_or_kernel")
        return _stored_source({None: blocks}) if _holds_store(blocks) else _PrecomputedSource({None: blocks})
    if isinstance(obj, torch.nn.Module):
        return _module_source(obj, progress)
    kernel_method = getattr(obj, "kernel", None)
    if callable(kernel_method):
        options = {"progress": True} if progress else {}
        return _FunctionSource(lambda x1, x2: kernel_method(x1, x2, **options),
                               f"architecture {str(obj)!r}", KERNEL_NAMES,
                               diagonal=lambda x: kernel_method(x, diagonal=True),
                               symmetric_call=True)
    if is_kernel_operator(obj):
        raise ValueError(f"arch_or_kernel: {type(obj).__name__} is a matrix-free kernel operator; "
                         "only eigenmodes() accepts those (an ntkprior.scale.stored.StoredKernel is accepted "
                         "everywhere). Load it as a matrix for this function")
    if callable(obj):
        return _FunctionSource(obj, f"kernel function {getattr(obj, '__name__', type(obj).__name__)}",
                               None)
    raise ValueError(f"arch_or_kernel: expected an architecture (ntp.serial(...)), a torch.nn.Module, "
                     f"a callable k(x1, x2), a kernel matrix or KernelBlocks, got {type(obj).__name__}")
