"""Process-wide settings the command line makes for itself (never the library for a user's process).

- ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy: torch's OpenMP threads then sleep
  instead of spinning; measured, spinning threads made ``ntkprior train`` 5x slower on a loaded
  machine. The OpenMP runtime reads the variable once, when torch loads it, so this runs before
  any import of torch.
- glibc's malloc keeps freed memory up to 256 MiB for reuse (``mallopt``: trim threshold 256 MiB,
  allocations below 64 MiB from the heap) instead of returning it to the system after each kernel
  block or training step and faulting it in again: the analytic kernel of a depth-10 MLP at
  N = 4000 took 0.59 s instead of 0.67 s (benchmarks/bench_kernels.py's case, one thread). The
  environment variables ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` win when set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: glibc's mallopt parameters (malloc.h) and the values the command line sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD, MMAP_THRESHOLD = 256 << 20, 64 << 20


def configure_command_line() -> bool:
    """Apply the settings above; True when malloc was tuned (glibc found, the user set neither
    variable)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):                 # not glibc (macOS, Windows, musl): leave it
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
