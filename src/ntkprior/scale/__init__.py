"""Past one machine: kernels computed blockwise on Dask into zarr stores (``distributed``) and
operators over stored kernels (``stored``). Needs the ``distributed`` extra."""

#: Seconds without a finished tile after which kernel_matrix gives up (the store stays resumable).
STALL_TIMEOUT = 600.0
