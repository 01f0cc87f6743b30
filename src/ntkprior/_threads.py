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
unless the user set it; see ``ntkprior/__init__.py``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

#: operations on fewer elements than this run with one thread (a 2 MB float64 temporary)
SMALL_OP = 1 << 18


def threads_for(elements: int) -> int | None:
    """The thread count for an operation on ``elements`` values (None: torch's own setting)."""
    override = os.environ.get("NTKPRIOR_THREADS", "").strip()
    if override:
        try:
            n = int(override)
        except ValueError:
            raise ValueError(f"NTKPRIOR_THREADS: expected an integer >= 0, got {override!r}; unset it "
                             "to let ntkprior choose per operation size") from None
        if n < 0:
            raise ValueError(f"NTKPRIOR_THREADS: expected an integer >= 0, got {n}")
        return None if n == 0 else n
    return 1 if elements < SMALL_OP else None


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
