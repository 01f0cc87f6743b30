"""Kernel matrices computed blockwise on a Dask cluster and stored out of core, resumably.

:func:`kernel_matrix` cuts the (n1, n2) kernel into ``block × block`` tiles, computes
each tile as one Dask task — analytic kernels through ``arch.kernel``, empirical ones
through :func:`ntkprior.kernels.empirical.empirical_ntk`, with the architecture or model and the
inputs shipped once to every worker — and each task writes its tile straight into a
chunked zarr array (one chunk per tile), then marks the tile done. Symmetric kernels
(``x2=None``) compute and store only the tiles on and above the diagonal; readers
mirror them (writing the mirror too doubled the time at n = 8000, where the disk
absorbs about 120 MB/s once the page cache is full). Calling it again with the same
arguments resumes: tiles marked done are skipped, and since a tile is marked only after
its data are written, an interrupted write is recomputed. The store layout is described
in :mod:`ntkprior.scale.stored`; the result is returned as a :class:`~ntkprior.scale.stored.StoredKernel`.

Every path — a worker, or the in-process loop :func:`kernel_blocks_in_memory` — computes
a tile with :func:`kernel_block`, so the stored matrix equals the in-memory one exactly.

Needs ``pip install "ntkprior[distributed]"`` (dask[distributed] and zarr).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import types
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np
import torch

from ntkprior.data import as_inputs, check_same_features
from ntkprior.scale import STALL_TIMEOUT
from ntkprior.scale.stored import (ATTRS_KEY, CHECKSUM, DONE, FORMAT, KERNEL, StoredKernel, block_pairs,
                                   inputs_digest, missing_blocks, require, spans, store_location, tile_checksum)

#: glibc malloc thresholds for workers. Dask sets MALLOC_TRIM_THRESHOLD_=65536, which freezes
#: glibc's dynamic mmap threshold and hands freed heap back at once, so every large torch
#: temporary and every tile written was mapped afresh, page fault by page fault (11.6 s instead
#: of 6.0 s for an N = 8000 kernel on 2 workers, FACTS.md; writing a 32 MB tile took 2900 page
#: faults and 0.03 s instead of 5 faults and 0.02 s). Both at 1 GiB: temporaries come from the
#: heap and freed memory is reused; a worker keeps up to its high-water mark (about 1 GB).
WORKER_MALLOC_THRESHOLD = 1 << 30
#: Seconds to wait for a scheduler address to answer.
CONNECT_TIMEOUT = 5


class TileSource:
    """What computes a tile: an architecture (``.kernel``) or a torch model (empirical NTK).

    Picklable at every moment (``shipped=True``, as :func:`kernel_matrix` makes it): it ships a
    snapshot of the object, pickled (with cloudpickle, which carries lambdas and closures by
    value) when the source is made, never the live object. In the middle of a tile, torch.func
    has swapped a model's parameters for TensorWrappers, which cannot be pickled ("Cannot access
    storage of TensorWrapper"); a worker asked for the scattered source at that moment failed the
    transfer, and the task that needed it waited forever (FACTS.md).

    ``digest`` identifies the kernel beyond its printed ``spec``: the code and closures of the
    functions inside (two ``Elementwise`` layers named alike but wrapping tanh and sin differ),
    and a model's parameters. It is None for an object that cannot be identified; such a
    store is never resumed.
    """

    def __init__(self, arch_or_model, kind: str, *, shipped: bool = False):
        if kind not in ("ntk", "nngp"):
            raise ValueError(f"kind: expected 'ntk' or 'nngp', got {kind!r}")
        self.kind = kind
        self.empirical = isinstance(arch_or_model, torch.nn.Module)
        if self.empirical:
            if kind != "ntk":
                raise ValueError("kind: a torch model has an empirical NTK only; pass kind='ntk', "
                                 "or an architecture for the NNGP")
            self.spec = f"empirical ntk of {type(arch_or_model).__name__}: {arch_or_model!r}"
        elif callable(getattr(arch_or_model, "kernel", None)):
            self.spec = str(arch_or_model)
        else:
            raise ValueError(f"arch_or_model: expected an architecture (such as ntkprior.serial(...)) or "
                             f"a torch.nn.Module, got {type(arch_or_model).__name__}")
        self.digest = source_digest(arch_or_model)
        self._payload = _snapshot(arch_or_model) if shipped else None
        self._obj = arch_or_model

    @property
    def obj(self):
        """The architecture or model: the caller's own object here, the snapshot's copy elsewhere."""
        if self._obj is None:
            self._obj = pickle.loads(self._payload)
        return self._obj

    def __getstate__(self) -> dict:
        payload = self._payload if self._payload is not None else _snapshot(self._obj)
        return {**self.__dict__, "_payload": payload, "_obj": None}


def _snapshot(obj) -> bytes:
    """``obj`` pickled now (cloudpickle: lambdas and closures by value), before anything uses it."""
    try:
        import cloudpickle as pickler
    except ImportError:         # without dask there are no workers to ship it to
        pickler = pickle
    try:
        return pickler.dumps(obj)
    except Exception as exc:
        raise ValueError(f"arch_or_model: cannot be sent to the workers ({type(exc).__name__}: {exc}); "
                         "define it with picklable parts (module-level functions, no open files)") from None


class _Unidentifiable(Exception):
    """A value inside a kernel source whose content cannot be recorded."""


def source_digest(arch_or_model) -> str | None:
    """A SHA-256 of what determines the kernel: the object's class, attributes, the code, constants,
    defaults and closures of its functions, and tensors' values (a model: its submodules'
    classes, forward code and attributes, its parameters and buffers). None when some part
    cannot be identified (then a store of it is not resumed)."""
    digest = hashlib.sha256()
    try:
        _feed(digest, arch_or_model, set(), 0)
    except (_Unidentifiable, RecursionError):
        return None
    return digest.hexdigest()


_MAX_DEPTH = 40


def _feed(digest, value, seen: set, depth: int) -> None:
    """Add ``value``'s identity to ``digest`` (see :func:`source_digest`)."""
    if depth > _MAX_DEPTH:
        raise _Unidentifiable("too deep")
    put = digest.update
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        put(f"{type(value).__name__}:{value!r};".encode())
        return
    if id(value) in seen:
        put(b"<cycle>")
        return
    seen = seen | {id(value)}
    if isinstance(value, torch.Tensor):
        put(f"tensor{tuple(value.shape)}{value.dtype};".encode())
        put(value.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, np.ndarray):
        put(f"array{value.shape}{value.dtype};".encode())
        put(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        put(f"{type(value).__name__}[{len(value)}];".encode())
        for item in value:
            _feed(digest, item, seen, depth + 1)
    elif isinstance(value, (set, frozenset)):
        put(f"set[{len(value)}];".encode())
        for item in sorted(value, key=repr):
            _feed(digest, item, seen, depth + 1)
    elif isinstance(value, dict):
        put(f"dict[{len(value)}];".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key, seen, depth + 1)
            _feed(digest, value[key], seen, depth + 1)
    elif isinstance(value, types.CodeType):
        put(value.co_code)
        _feed(digest, (value.co_consts, value.co_names, value.co_varnames), seen, depth + 1)
    elif isinstance(value, types.FunctionType):
        _feed_function(digest, value, seen, depth)
    elif isinstance(value, types.MethodType):
        _feed(digest, (value.__func__, value.__self__), seen, depth + 1)
    elif isinstance(value, functools.partial):
        _feed(digest, (value.func, value.args, value.keywords), seen, depth + 1)
    elif isinstance(value, torch.nn.Module):
        _feed_module(digest, value, seen, depth)
    elif isinstance(value, type) or callable(value) and not hasattr(value, "__dict__"):
        _feed_by_name(digest, value)        # classes, builtins such as torch.tanh, ufuncs
    elif hasattr(value, "__dict__"):
        put(f"{type(value).__module__}.{type(value).__qualname__};".encode())
        kernel = getattr(type(value), "kernel", None)
        if isinstance(kernel, types.FunctionType):
            _feed_function(digest, kernel, seen, depth)   # an object that only looks like an architecture
        _feed(digest, vars(value), seen, depth + 1)
    else:
        raise _Unidentifiable(type(value).__name__)


def _feed_function(digest, fn: types.FunctionType, seen: set, depth: int) -> None:
    cells = tuple(c.cell_contents for c in fn.__closure__ or () if _cell_is_set(c))
    globals_used = {name: fn.__globals__[name] for name in fn.__code__.co_names
                    if isinstance(fn.__globals__.get(name), (bool, int, float, str))}
    _feed(digest, (fn.__qualname__, fn.__code__, fn.__defaults__, fn.__kwdefaults__, cells, globals_used),
          seen, depth + 1)


def _cell_is_set(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _feed_by_name(digest, value) -> None:
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not (module and name) or "<locals>" in name:
        raise _Unidentifiable(repr(value))
    digest.update(f"{module}.{name};".encode())


def _feed_module(digest, model: torch.nn.Module, seen: set, depth: int) -> None:
    """A model: each submodule's class, forward code and public attributes, then the state dict."""
    for name, module in model.named_modules():
        digest.update(f"module {name}: {type(module).__module__}.{type(module).__qualname__};".encode())
        forward = getattr(type(module), "forward", None)
        if isinstance(forward, types.FunctionType):
            _feed_function(digest, forward, seen, depth)
        public = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}
        _feed(digest, public, seen, depth + 1)
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        _feed(digest, value, seen, depth + 1)


def kernel_block(source: TileSource, x_rows: torch.Tensor, x_cols: torch.Tensor | None) -> np.ndarray:
    """One tile ``K(x_rows, x_cols)`` as a float64 array; ``x_cols=None`` for a diagonal tile.

    The single definition of a tile's arithmetic, shared by the workers and the in-process
    path. A diagonal tile is computed as the symmetric kernel of its rows, so its diagonal
    is exact (angle 0, not round-off), and its upper triangle is mirrored into the lower
    one, so that a symmetric kernel is exactly symmetric. The inputs are copied into fresh (aligned) memory
    first: torch's vectorised loops round differently when a view starts at another
    alignment (measured: 1-ulp differences in the last columns of an edge tile).
    """
    x_rows = x_rows.clone()
    x_cols = None if x_cols is None else x_cols.clone()
    if source.empirical:
        from ntkprior.kernels.empirical import empirical_ntk
        values = empirical_ntk(source.obj, x_rows, x_cols, output="mean")
    else:
        values = source.obj.kernel(x_rows, x_cols)[source.kind]
    tile = values.detach().cpu().to(torch.float64).numpy()
    return np.ascontiguousarray(tile if x_cols is not None else np.triu(tile) + np.triu(tile, 1).T)


def kernel_blocks_in_memory(arch_or_model, x1, x2=None, *, kind: str = "ntk", block: int = 4096,
                            threads: int = 1) -> torch.Tensor:
    """The same tiles as :func:`kernel_matrix`, computed in this process into memory.

    The in-process reference: equal, bit for bit, to the stored matrix when torch runs with
    the same thread count as the workers. ``threads``: tiles computed concurrently on this
    many Python threads (torch releases the GIL; set ``torch.set_num_threads(1)`` to give
    each tile one core, as a worker does).
    """
    source = TileSource(arch_or_model, kind)
    x1, x2, block = _check_inputs(x1, x2, block)
    n2 = (x1 if x2 is None else x2).shape[0]
    out = np.empty((x1.shape[0], n2))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        tiles = pool.map(lambda pair: kernel_tile(source, x1, x2, block, *pair),
                         block_pairs(x1.shape[0], n2, block, x2 is None))
        for rows, cols, tile in tiles:
            out[rows, cols] = tile
            if x2 is None and rows != cols:
                out[cols, rows] = tile.T
    return torch.from_numpy(out)


def kernel_tile(source: TileSource, x1: torch.Tensor, x2: torch.Tensor | None, block: int,
                i: int, j: int) -> tuple[slice, slice, np.ndarray]:
    """Tile (i, j) of ``K(x1, x2)`` (``x2=None``: the symmetric kernel), with its row and column slices."""
    cols = x1 if x2 is None else x2
    (r0, r1), (c0, c1) = spans(x1.shape[0], block)[i], spans(cols.shape[0], block)[j]
    tile = kernel_block(source, x1[r0:r1], None if x2 is None and i == j else cols[c0:c1])
    return slice(r0, r1), slice(c0, c1), tile


def kernel_matrix(arch_or_model, x1, x2=None, *, kind: str = "ntk", store="K.zarr", block: int = 4096,
                  client=None, progress: bool = False, overwrite: bool = False,
                  torch_threads: int = 1, stall_timeout: float = STALL_TIMEOUT) -> StoredKernel:
    """Compute the kernel ``K(x1, x2)`` blockwise on Dask into the zarr ``store``; resume if it exists.

    ``arch_or_model``: an architecture (analytic ``kind="ntk"`` or ``"nngp"``) or a
    ``torch.nn.Module`` (its empirical NTK per output unit, ``output="mean"``: the trace over
    the k outputs divided by k, the convention of ``arch.kernel(...).ntk`` and of every function
    that takes a module as ``arch_or_kernel``).
    ``x2=None`` computes the symmetric K(x1, x1), only the tiles on and above the diagonal.
    ``block``: tile side; a worker holds a few tiles' worth of temporaries (a 4096 tile is
    134 MB). ``client``: None starts a LocalCluster with one single-threaded worker process
    per core (closed afterwards); a string connects to that scheduler address
    (``"tcp://host:8786"``); or a ``dask.distributed.Client``. Workers write into the store
    themselves, so on a real cluster it must be on a file system (or object store) every
    worker sees under the same path. ``torch_threads``: threads torch uses in each task.

    A store that already exists is resumed when its metadata (kind, architecture or model
    — identified by :func:`source_digest`, not only by its printed spec —, inputs, block)
    match, and refused otherwise; ``overwrite=True`` replaces it. A path that exists and is
    not an ntkprior kernel store (a directory holding other files) is always refused, and the
    working directory, its parents and the home directory are never replaced. A new store is
    created under a temporary name and renamed into place, so its metadata are never partial.
    Each tile is written with a CRC-32 checksum, before its completion flag; readers verify it.

    An interrupted call raises after cancelling its tasks; call again to resume. So does a run
    in which no tile finished for ``stall_timeout`` seconds (a lost worker, a task whose inputs
    never arrived): the error says how many tiles are stored. A scheduler address that does
    not answer within :data:`CONNECT_TIMEOUT` seconds is a ``ValueError``.
    Returns the finished store as a :class:`~ntkprior.scale.stored.StoredKernel`.
    """
    source = TileSource(arch_or_model, kind, shipped=True)
    x1, x2, block = _check_inputs(x1, x2, block)
    if not isinstance(torch_threads, int) or isinstance(torch_threads, bool) or torch_threads < 1:
        raise ValueError(f"torch_threads: expected a positive integer, got {torch_threads!r}")
    _check_client(client)
    if isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float)) or not stall_timeout > 0:
        raise ValueError(f"stall_timeout: expected a positive number of seconds, got {stall_timeout!r}")
    kernel_block(source, x1[:2], None)  # fail here, with the model's own error, not inside a worker
    location = store_location(store)
    group = _open_or_create(location, source, x1, x2, block, overwrite)
    todo = missing_blocks(group)
    if todo:
        with _connect(client) as dask_client:
            _run(dask_client, source, x1, x2, location, block, todo, progress, torch_threads, stall_timeout)
    return StoredKernel(location)


def _check_inputs(x1, x2, block):
    x1 = as_inputs(x1, "x1")
    if x2 is not None:
        x2 = as_inputs(x2, "x2")
        check_same_features(x1, x2)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block: expected a positive integer tile side, got {block!r}")
    return x1, x2, int(block)


def _metadata(source: TileSource, x1: torch.Tensor, x2: torch.Tensor | None, block: int) -> dict:
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    return {"format": FORMAT, "kind": source.kind, "spec": source.spec, "source_digest": source.digest,
            "inputs_digest": inputs_digest(x1.numpy(), None if x2 is None else x2.numpy()),
            "shape": [x1.shape[0], n2], "block": block, "symmetric": x2 is None}


def _open_or_create(location: str, source, x1, x2, block: int, overwrite: bool):
    """The store's group: checked against these arguments when resuming, else created."""
    zarr = require("zarr")
    expected = _metadata(source, x1, x2, block)
    found = _existing_metadata(location)
    if found is not None and overwrite:
        _remove_store(location)
        found = None
    if found is None:
        _create_store(location, expected, x1, x2, block)
    else:
        _check_same_metadata(location, found, expected)
    group = zarr.open_group(location, mode="r+")
    _create_arrays(group, x1, x2, block, expected["shape"])   # what a store from an older version lacks
    return group


def _existing_metadata(location: str) -> dict | None:
    """The ntkprior metadata of the store at ``location``; None where there is nothing (or an empty
    directory). Anything else there is refused: it is the user's data, never overwritten."""
    if "://" in location:
        return _existing_remote_metadata(location)
    if not os.path.exists(location):
        return None
    if not os.path.isdir(location):
        raise ValueError(f"store: {location!r} is a file, not an ntkprior kernel store; pass a new path")
    if not os.listdir(location):
        return None
    try:
        attrs = require("zarr").open_group(location, mode="r").attrs
    except (FileNotFoundError, KeyError, ValueError, TypeError):   # no zarr metadata: a plain directory
        attrs = {}
    if ATTRS_KEY not in attrs:
        raise _other_data(location)
    return dict(attrs[ATTRS_KEY])


def _existing_remote_metadata(location: str) -> dict | None:
    """As :func:`_existing_metadata`, for a URL (no directories to look at: the zarr group itself)."""
    try:
        group = require("zarr").open_group(location, mode="r")
    except FileNotFoundError:
        return None
    if ATTRS_KEY in group.attrs:
        return dict(group.attrs[ATTRS_KEY])
    if list(group.keys()) or dict(group.attrs):
        raise _other_data(location)
    return None


def _other_data(location: str) -> ValueError:
    return ValueError(f"store: {location!r} holds other data, not an ntkprior kernel store; pass a new path")


def _remove_store(location: str) -> None:
    """Discard an ntkprior store (``overwrite=True``); never the working directory, its parents or home."""
    if "://" in location:
        require("zarr").open_group(location, mode="w")
        return
    from ntkprior.files import remove_tree
    remove_tree(location, "store")


def _create_store(location: str, expected: dict, x1, x2, block: int) -> None:
    """A new store with all its metadata and arrays, built under a temporary name and renamed into place."""
    zarr = require("zarr")
    if "://" in location:
        _create_arrays(zarr.open_group(location, mode="w", attributes={ATTRS_KEY: expected}),
                       x1, x2, block, expected["shape"])
        return
    from ntkprior.files import atomic_directory
    with atomic_directory(location, "store") as tmp:
        group = zarr.open_group(str(tmp), mode="w", attributes={ATTRS_KEY: expected})
        _create_arrays(group, x1, x2, block, expected["shape"])


def _check_same_metadata(location: str, found: dict, expected: dict) -> None:
    labels = {"kind": "the kernel kind", "source_digest": "the architecture or model parameters",
              "inputs_digest": "the inputs x1/x2", "block": "the block size", "format": "the store format",
              "shape": "the shape", "symmetric": "symmetric vs cross"}
    differ = [labels.get(key, key) for key in expected if found.get(key) != expected[key]]
    if differ:
        raise ValueError(f"store: {location!r} was built from different arguments ({', '.join(differ)} "
                         "differ), so it cannot be resumed; pass a new store path, or overwrite=True "
                         "(ntkprior kernel --overwrite) to discard it")
    if expected["source_digest"] is None:
        raise ValueError(f"store: {location!r} was built from {found.get('spec')!r}, whose parts cannot all "
                         "be identified (an object of a kind ntkprior cannot fingerprint), so resuming "
                         "could mix tiles of two kernels; pass a new store path, or overwrite=True "
                         "(ntkprior kernel --overwrite) to recompute it")


def _create_arrays(group, x1, x2, block: int, shape) -> None:
    """Create whichever arrays a (possibly interrupted) creation left missing."""
    present = set(group.keys())
    if KERNEL not in present:
        group.create_array(KERNEL, shape=tuple(shape), chunks=(block, block), dtype="float64",
                           compressors=None, fill_value=np.nan)
    grid = tuple(len(spans(n, block)) for n in shape)
    if DONE not in present:
        group.create_array(DONE, shape=grid, chunks=(1, 1), dtype="uint8", compressors=None, fill_value=0)
    if CHECKSUM not in present:
        group.create_array(CHECKSUM, shape=grid, chunks=(1, 1), dtype="uint64", compressors=None,
                           fill_value=0)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and name not in present:
            group.create_array(name, data=x.numpy(), compressors=None)


def _store_block(source: TileSource, x1: torch.Tensor, x2: torch.Tensor | None, location: str,
                 block: int, i: int, j: int, torch_threads: int) -> tuple[int, int]:
    """Worker task: compute tile (i, j), write it and its checksum, then mark it done."""
    zarr = require("zarr")
    torch.set_num_threads(torch_threads)
    rows, cols, tile = kernel_tile(source, x1, x2, block, i, j)
    group = zarr.open_group(location, mode="r+")
    group[KERNEL][rows, cols] = tile
    group[CHECKSUM][i, j] = tile_checksum(tile)
    group[DONE][i, j] = 1  # only after the data: an interrupted write is never marked complete
    return i, j


#: times the shared inputs are sent again when the scheduler loses them before the tiles ran
RESEND = 2


def _run(client, source, x1, x2, location, block, todo, progress, torch_threads, stall_timeout) -> None:
    """Submit one task per missing tile; raise, after cancelling the rest, if one fails or none
    finishes for ``stall_timeout`` seconds. When the scheduler loses the scattered inputs (a worker
    died, or a replication failed under load: "lost dependencies"), the missing tiles are sent
    again with fresh copies, at most :data:`RESEND` times, before the error."""
    from ntkprior.progress import progress_bar

    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    total = len(block_pairs(n1, n2, block, x2 is None))
    bar = progress_bar(total=total, initial=total - len(todo), desc="kernel blocks", unit="block",
                       enabled=progress)
    try:
        for attempt in range(RESEND + 1):
            try:
                _submit_and_wait(client, source, x1, x2, location, block, todo, torch_threads, stall_timeout,
                                 total, bar)
                return
            except CancelledError as exc:   # e.g. "lost dependencies": the workers holding the inputs died
                reason = " ".join(str(exc).split())
                todo = missing_blocks(require("zarr").open_group(location, mode="r"))
                if attempt == RESEND:
                    raise RuntimeError(f"kernel_matrix: the scheduler cancelled block tasks ({reason}), "
                                       f"{RESEND + 1} times; {_resume_hint(location, total)}") from None
    finally:
        bar.close()


def _submit_and_wait(client, source, x1, x2, location, block, todo, torch_threads, stall_timeout, total,
                     bar) -> None:
    """One round: scatter the inputs, one task per tile in ``todo``, wait for all of them."""
    from dask.distributed import wait

    shared = [client.scatter(obj, broadcast=True) for obj in (source, x1)]
    x2_shared = None if x2 is None else client.scatter(x2, broadcast=True)
    futures = [client.submit(_store_block, *shared, x2_shared, location, block, i, j, torch_threads,
                             pure=False) for i, j in todo]
    tile_of = {future.key: pair for future, pair in zip(futures, todo)}
    pending = set(futures)
    try:
        while pending:
            try:
                finished, pending = wait(pending, timeout=stall_timeout, return_when="FIRST_COMPLETED")
            except TimeoutError:
                raise RuntimeError(f"kernel_matrix: no block finished for {stall_timeout:g} s "
                                   f"({len(pending)} still to do; a lost worker, or a task whose inputs "
                                   f"never reached its worker); {_resume_hint(location, total)}") from None
            for future in finished:
                if future.status == "cancelled":
                    raise CancelledError(f"block {tile_of[future.key]} was cancelled")
                if future.status != "finished":
                    i, j = tile_of[future.key]
                    exc = future.exception() if future.status == "error" else future.status
                    raise RuntimeError(f"kernel_matrix: block ({i}, {j}) failed: {exc!r}; "
                                       f"{_resume_hint(location, total)}") \
                        from (exc if isinstance(exc, BaseException) else None)
            bar.update(len(finished))
    finally:
        client.cancel(futures)


def _resume_hint(location: str, total: int) -> str:
    stored = total - len(missing_blocks(require("zarr").open_group(location, mode="r")))
    return (f"{stored} of {total} blocks are stored in {location!r}; call kernel_matrix again with the "
            "same arguments (ntkprior kernel: the same command) to resume")


def local_cluster(n_workers: int | None = None, **kwargs):
    """A LocalCluster of single-threaded worker processes, one per core, tuned for torch.

    Workers start with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set (see
    :data:`WORKER_MALLOC_THRESHOLD`).
    Extra keyword arguments go to ``dask.distributed.LocalCluster``.
    """
    dask = require("dask")
    distributed = require("distributed")
    if n_workers is None:
        n_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ["MALLOC_MMAP_THRESHOLD_"] = environ["MALLOC_TRIM_THRESHOLD_"] = WORKER_MALLOC_THRESHOLD
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **kwargs)


def _check_client(client) -> None:
    if not (client is None or isinstance(client, (str, require("distributed").Client))):
        raise ValueError(f"client: expected None (start a LocalCluster), a scheduler address such as "
                         f"'tcp://host:8786', or a dask.distributed.Client; got {type(client).__name__}")


@contextlib.contextmanager
def _connect(client):
    """Yield a dask Client: a new LocalCluster (None), a scheduler address (str), or the one given."""
    distributed = require("distributed")
    if client is None:
        with local_cluster() as cluster, distributed.Client(cluster) as new:
            yield new
    elif isinstance(client, str):
        try:
            new = distributed.Client(client, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"client: no Dask scheduler answered at {client!r} within {CONNECT_TIMEOUT} s "
                             f"({type(exc).__name__}); start one (dask scheduler) or pass its address, or "
                             "omit it (--scheduler) to start a local cluster") from None
        with new:
            yield new
    else:
        yield client
