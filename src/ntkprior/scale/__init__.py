"""Past one machine: kernels computed blockwise on Dask into zarr stores (``distributed``) and
operators over stored kernels (``stored``). Needs the ``distributed`` extra."""
