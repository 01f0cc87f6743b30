"""Large output matrices on huge pages.

Writing into a freshly allocated matrix costs a page fault per 4 KiB page the first time each page
is touched: for a 256 MB kernel that was 62 500 faults and 40 % of ``Serial.kernel``'s time at
N = 4000 (issue #20). numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``)
on every allocation of 4 MiB or more, torch's CPU allocator does not (unless the process was
started with ``THP_MEM_ALLOC_ENABLE=1``), so large CPU outputs are allocated by numpy and shared
with torch without a copy (``torch.from_numpy``): 2 MiB pages, 512x fewer faults.
"""

from __future__ import annotations

import numpy as np
import torch

#: outputs of at least this many bytes are allocated on huge pages (numpy's own threshold)
HUGE_PAGE_BYTES = 4 << 20

_NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16,
                 torch.complex128: np.complex128, torch.complex64: np.complex64,
                 torch.int64: np.int64, torch.int32: np.int32}


def empty_output(*shape: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``, on transparent huge pages when it is a CPU
    tensor of at least ``HUGE_PAGE_BYTES`` and numpy has the dtype (fewer first-touch page faults)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    np_dtype = _NUMPY_DTYPES.get(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or np_dtype is None or size < HUGE_PAGE_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=np_dtype))
