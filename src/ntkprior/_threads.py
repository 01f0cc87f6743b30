"""How many threads the library's own hot loops use, chosen per operation size.

torch's OpenMP threads spin while they wait for work; on a machine shared with other work two
threads made small operations 10-50x slower than one (FACTS.md: a 64x64 matmul 22 ms vs 0.4 ms;
``ntkprior train`` 5x slower). The library therefore runs loops over small pieces (quadrature
chunks, validation tiles, small-network training steps) with one thread, and leaves large
operations (kernel tiles of megabytes, Cholesky factorisations, eigendecompositions) at torch's
setting. The thread count is set around the library's own loop and restored after it, so the
rest of the user's process keeps its setting.

Override: ``NTKPRIOR_THREADS=n`` in the environment makes every library loop use n threads
(``NTKPRIOR_THREADS=0``: leave torch's setting alone everywhere).

The command line also sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning)
unless the user set it; see ``ntkprior/_process.py``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

#: operations on fewer elements than this run with one thread (a 2 MB float64 temporary)
SMALL_OP = 1 << 18


def _override() -> int | None:
    """``NTKPRIOR_THREADS`` as an integer >= 0, or None when it is not set."""
    override = os.environ.get("NTKPRIOR_THREADS", "").strip()
    if not override:
        return None
    try:
        n = int(override)
    except ValueError:
        raise ValueError(f"NTKPRIOR_THREADS: expected an integer >= 0, got {override!r}; unset it "
                         "to let ntkprior choose per operation size") from None
    if n < 0:
        raise ValueError(f"NTKPRIOR_THREADS: expected an integer >= 0, got {n}")
    return n


def threads_for(elements: int) -> int | None:
    """The thread count for an operation on ``elements`` values (None: torch's own setting)."""
    n = _override()
    if n is not None:
        return None if n == 0 else n
    return 1 if elements < SMALL_OP else None


def tile_workers(tiles: int) -> int:
    """Threads that compute ``tiles`` independent kernel tiles side by side, each tile's operations
    on one torch thread: torch's thread count (``NTKPRIOR_THREADS=n``: n; 0: one, leaving torch's
    threads to each operation), at most one per tile. Tiles in parallel scale where one tile's
    memory-bound passes over two threads did not (the analytic kernel at N = 4000: 1.09x faster
    with two threads inside each operation, 1.6x with a tile per thread; benchmarks/bench_kernels.py)."""
    n = _override()
    wanted = torch.get_num_threads() if n is None else max(n, 1)
    return max(1, min(wanted, tiles))


def tile_map(fn: Callable, items, workers: int) -> Iterator:
    """``map(fn, items)`` in order, on ``workers`` threads each running torch with one thread. The
    first item runs alone first: it compiles what is compiled, fills caches and raises an error in
    the caller's thread before any thread starts. An error cancels the items not yet started."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    yield fn(items[0])
    # torch's thread count is per OS thread (OpenMP's nthreads ICV): each worker sets its own, and
    # the caller's thread and the rest of the process keep theirs
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ntkprior-tile", initializer=torch.set_num_threads,
                              initargs=(1,))
    try:
        yield from pool.map(fn, items[1:])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def op_threads(elements: int):
    """Run the enclosed library loop with :func:`threads_for` ``(elements)`` torch threads, then
    restore the caller's setting."""
    wanted, before = threads_for(elements), torch.get_num_threads()
    if wanted is None or wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
