"""Kernel matrices on Dask into zarr stores, and the streamed operators over them.

    python benchmarks/bench_distributed.py [--n 30000] [--overhead-n 8000] [--workers 2]
        [--block 4096] [--overhead-block 2000] [--k 20] [--diag-reg 1e-2] [--test-points 200]
        [--store-dir /tmp]
        [--skip-scale] [--skip-overhead]

Architecture: Dense(512, 1.5, 0.05) ReLU Dense(512, 1.5, 0.05) ReLU Dense(1, 1.5, 0.05) (the
depth-3 ReLU NTK of bench_kernels.py) on X ~ N(0, 1) of shape (n, 10), float64.

1. Overhead (issue 7 target: under 25 %) at n = --overhead-n: the in-process blockwise path
   (``kernel_blocks_in_memory``: the same tiles, same arithmetic, into memory) on --workers
   cores, either as torch threads or as tiles computed --workers at a time with one torch
   thread each (the faster of the two is the baseline; its process runs with the workers'
   malloc settings, so that only Dask and zarr differ), against the distributed path
   (``kernel_matrix`` on a LocalCluster of --workers single-threaded worker processes, writing
   the zarr store). All warmed up; the minimum over --rounds interleaved rounds. On a shared
   machine the CPU seconds of all processes (user + system, from getrusage) are the steadier
   measure of the overhead, and are printed too. The in-process
   path on one core is shown for scale, and neural-tangents' whole-matrix kernel (one process)
   when its venv exists.
2. Scale at n = --n: the kernel into a zarr store on the default LocalCluster, then the top --k
   eigenpairs (block Lanczos) and a CG solve of (K + ridge·I) x = y with the Nyström
   preconditioner, ridge = --diag-reg · mean(diag K); then what a user calls with the store:
   ``KernelPrior(stored).log_prob(y, return_std=True)`` and ``predict(stored, None, y, x_test,
   kind="ntkgp")`` at --test-points points. Wall times, passes over the store, and the
   peak resident memory (``ru_maxrss``) of every process: each worker (asked through
   ``client.run`` before the cluster closes) and the process running the operators. The main
   process's figures come from a fresh process, so nothing else inflates them. Bound stated:
   every process under 2.5 GB, a third of the 7.2 GB that the dense float64 matrix needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkprior.scale.distributed import WORKER_MALLOC_THRESHOLD  # noqa: E402

BOUND_BYTES = 2.5e9


def architecture():
    import ntkprior as ntp
    return ntp.serial(ntp.Dense(512, 1.5, 0.05), ntp.ReLU(), ntp.Dense(512, 1.5, 0.05), ntp.ReLU(),
                      ntp.Dense(1, 1.5, 0.05))


def inputs(n: int, d: int):
    import numpy as np
    import torch
    return torch.from_numpy(np.random.default_rng(0).standard_normal((n, d)))


def worker_peaks(client) -> list[int]:
    import resource
    return sorted(v * 1024 for v in client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values())


def overhead(a) -> dict:
    """Minimum over --rounds rounds, each running every configuration once (interleaved, so that
    load from other users of the machine falls on all of them alike)."""
    import torch
    from dask.distributed import Client

    from ntkprior.scale.distributed import kernel_blocks_in_memory, kernel_matrix, local_cluster
    arch, x = architecture(), inputs(a.overhead_n, a.d)
    store = Path(a.store_dir) / "bench_overhead.zarr"
    t0 = time.perf_counter()
    with local_cluster(a.workers, dashboard_address=":0") as cluster, Client(cluster) as client:
        start = time.perf_counter() - t0

        def distributed(rows=x):
            kernel_matrix(arch, rows, store=store, block=a.overhead_block, client=client, overwrite=True)

        # (torch threads, tiles in parallel): one core; all cores inside torch; all cores over tiles
        runs = {f"in_process_{t}x{p}_s": (t, lambda rows=x, p=p: kernel_blocks_in_memory(
                    arch, rows, block=a.overhead_block, threads=p))
                for t, p in ((1, 1), (a.workers, 1), (1, a.workers))}
        runs["distributed_s"] = (1, distributed)
        times = {name: [] for name in runs}
        cpu = {name: [] for name in runs}
        for name, (threads, fn) in runs.items():                                        # warm-up
            torch.set_num_threads(threads)
            fn(x[:a.overhead_block])
        for _ in range(a.rounds):
            for name, (threads, fn) in runs.items():
                torch.set_num_threads(threads)
                c0, t0 = cpu_seconds(client), time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(cpu_seconds(client) - c0)
    shutil.rmtree(store)
    return {"cluster_start_s": start, **{name: min(values) for name, values in times.items()},
            **{name.replace("_s", "_cpu_s"): min(values) for name, values in cpu.items()}, "all_times": times}


def cpu_seconds(client) -> float:
    """User + system CPU seconds used so far by this process and every worker."""
    import resource

    def used():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    return used() + sum(client.run(used).values())


class CountingKernel:
    """Counts the streamed passes a StoredKernel makes over its store."""

    def __init__(self, stored):
        self.passes = 0
        inner = stored._product

        def product(v, transpose):
            self.passes += 1
            return inner(v, transpose)

        stored._product = product


def scale_store(a) -> dict:
    """Compute the n x n kernel into the store on the default-sized LocalCluster."""
    from dask.distributed import Client

    from ntkprior.scale.distributed import kernel_matrix, local_cluster
    store = Path(a.store_dir) / "bench_scale.zarr"
    x = inputs(a.n, a.d)
    t0 = time.perf_counter()
    with local_cluster(a.workers, dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("ntkprior.arch.layers"))       # worker imports, not the kernel
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        kernel_matrix(architecture(), x, store=store, block=a.block, client=client, overwrite=True,
                      progress=True)
        compute = time.perf_counter() - t0
        peaks = worker_peaks(client)
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    return {"cluster_start_s": start, "kernel_s": compute, "worker_peak_bytes": peaks,
            "client_peak_bytes": common.peak_rss(), "store": str(store), "store_bytes": size}


def scale_operators(a) -> dict:
    """Top-k eigenpairs and a CG solve on the stored kernel, in a fresh process."""
    import numpy as np

    from ntkprior.scale.stored import StoredKernel
    stored = StoredKernel(Path(a.store_dir) / "bench_scale.zarr")
    counter = CountingKernel(stored)
    t0 = time.perf_counter()
    values, _ = stored.eigsh(a.k)
    eig_s, eig_passes = time.perf_counter() - t0, counter.passes
    op = stored.regularised(a.diag_reg)
    x = stored.x1.numpy()
    y = np.sin(x[:, 0]) + 0.1 * np.random.default_rng(1).standard_normal(len(x))
    counter.passes = 0
    t0 = time.perf_counter()
    sol = op.solve(y).numpy()
    solve_s, solve_passes = time.perf_counter() - t0, counter.passes
    residual = float(np.linalg.norm(op.matvec(sol).numpy() - y) / np.linalg.norm(y))
    return {"eigsh_s": eig_s, "eigsh_passes": eig_passes, "top_eigenvalues": values[:3].tolist(),
            "solve_s": solve_s, "solve_passes": solve_passes, "solve_relative_residual": residual,
            **user_calls(a, stored, counter, y), "operators_peak_bytes": common.peak_rss()}


def user_calls(a, stored, counter, y) -> dict:
    """What a user calls with the store: KernelPrior.log_prob (CG + stochastic log det, with its
    standard error) and the converged NTK-GP posterior at --test-points points (one block CG)."""
    from ntkprior.prior.prior import KernelPrior, predict
    counter.passes = 0
    t0 = time.perf_counter()
    value, std = KernelPrior(stored, diag_reg=a.diag_reg).log_prob(y, return_std=True)
    prior_s, prior_passes = time.perf_counter() - t0, counter.passes
    x_test = inputs(a.test_points + 1, a.d)[1:] * 1.1        # new points near the data
    counter.passes = 0
    t0 = time.perf_counter()
    post = predict(stored, None, y, x_test, kind="ntkgp", diag_reg=a.diag_reg)
    predict_s, predict_passes = time.perf_counter() - t0, counter.passes
    return {"log_prob": value, "log_prob_std": std, "log_prob_s": prior_s, "log_prob_passes": prior_passes,
            "predict_s": predict_s, "predict_passes": predict_passes,
            "predict_std_range": [float(post.std.min()), float(post.std.max())]}


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30000)
    p.add_argument("--overhead-n", type=int, default=8000)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--block", type=int, default=4096)
    p.add_argument("--overhead-block", type=int, default=2000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--diag-reg", type=float, default=1e-2)
    p.add_argument("--test-points", type=int, default=200)
    p.add_argument("--store-dir", default="/tmp")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--part", choices=["overhead", "store", "operators"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part:
        print(json.dumps({"overhead": overhead, "store": scale_store, "operators": scale_operators}[a.part](a)))
        return
    forwarded = [arg for arg in sys.argv[1:] if arg not in ("--skip-scale", "--skip-overhead")]

    def part(name: str) -> dict:
        return common.run_isolated(Path(__file__), *forwarded, "--part", name)

    if not a.skip_overhead:
        n = a.overhead_n
        print(f"1. overhead at n = {n}, d = {a.d}, tiles of {a.overhead_block}, {a.workers} workers x 1 thread")
        # the in-process path gets the workers' malloc settings too, so only Dask and zarr differ
        saved = dict(os.environ)
        threshold = str(WORKER_MALLOC_THRESHOLD)
        os.environ.update(MALLOC_MMAP_THRESHOLD_=threshold, MALLOC_TRIM_THRESHOLD_=threshold)
        r = part("overhead")
        os.environ.clear()
        os.environ.update(saved)
        w = a.workers
        best = min(r[f"in_process_{w}x1_s"], r[f"in_process_1x{w}_s"])
        print(f"   in-process blockwise, 1 core               : {r['in_process_1x1_s']:8.2f} s")
        print(f"   in-process blockwise, torch {w} threads      : {r[f'in_process_{w}x1_s']:8.2f} s")
        print(f"   in-process blockwise, {w} tiles at a time    : {r[f'in_process_1x{w}_s']:8.2f} s")
        print(f"   distributed, LocalCluster {w} x 1, into zarr : {r['distributed_s']:8.2f} s   "
              f"(+{r['cluster_start_s']:.1f} s cluster start-up, once)")
        print(f"   overhead vs the faster {w}-core in-process path: "
              f"{100 * (r['distributed_s'] / best - 1):+.0f} %  (target < +25 %)")
        print(f"   CPU seconds (all processes), in-process 1 core {r['in_process_1x1_cpu_s']:.2f}, "
              f"{w} tiles at a time {r[f'in_process_1x{w}_cpu_s']:.2f}, distributed {r['distributed_cpu_s']:.2f}: "
              f"{100 * (r['distributed_cpu_s'] / r['in_process_1x1_cpu_s'] - 1):+.0f} % CPU for the distributed path")
        nt = common.neural_tangents("analytic", "--act", "relu", "--n", str(n), "--d", str(a.d),
                                    "--repeats", "1")
        if nt:
            print(f"   neural-tangents whole matrix (NNGP+NTK, jit, 1 process): {nt['median_s']:8.2f} s")
    if not a.skip_scale:
        n = a.n
        print(f"2. scale at n = {n}, d = {a.d}, tiles of {a.block}, {a.workers} workers; "
              f"dense float64 matrix = {gb(n * n * 8)}")
        s = part("store")
        o = part("operators")
        print(f"   kernel into zarr : {s['kernel_s']:8.1f} s  (+{s['cluster_start_s']:.1f} s cluster start-up "
              f"and worker imports); store on disk {gb(s['store_bytes'])}")
        print(f"   top {a.k} eigenpairs: {o['eigsh_s']:8.1f} s  ({o['eigsh_passes']} passes over the store); "
              f"λ1..3 = {', '.join(f'{v:.5g}' for v in o['top_eigenvalues'])}")
        print(f"   CG solve         : {o['solve_s']:8.1f} s  ({o['solve_passes']} passes incl. the Nyström "
              f"sketch), ridge {a.diag_reg:g}·mean diag, relative residual {o['solve_relative_residual']:.1e}")
        print(f"   KernelPrior.log_prob: {o['log_prob_s']:8.1f} s  ({o['log_prob_passes']} passes: CG + SLQ); "
              f"{o['log_prob']:.6g} ± {o['log_prob_std']:.2g} (stochastic log det)")
        print(f"   predict ntkgp, {a.test_points} test points: {o['predict_s']:8.1f} s  "
              f"({o['predict_passes']} passes, one block CG); posterior std "
              f"{o['predict_std_range'][0]:.3g}..{o['predict_std_range'][1]:.3g}")
        peaks = {**{f"worker {i}": v for i, v in enumerate(s["worker_peak_bytes"])},
                 "client (kernel run)": s["client_peak_bytes"], "operators process": o["operators_peak_bytes"]}
        for name, value in peaks.items():
            print(f"   peak RSS {name:<20}: {gb(value)}")
        print(f"   every process under {gb(BOUND_BYTES)}: {max(peaks.values()) < BOUND_BYTES}")
        shutil.rmtree(s["store"])


if __name__ == "__main__":
    main()
