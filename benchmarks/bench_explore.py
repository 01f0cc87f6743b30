"""Benchmark: the explorer's interaction latency — one posterior + eigenmode update for 50 training
points on a 400-point grid (the issue's budget: under 100 ms on these machines).

    python benchmarks/bench_explore.py                  # 50 points, 400-point grid, seed architecture
    python benchmarks/bench_explore.py --points 200 --activation tanh

What one update is (what the page asks after a click or a drag): /api/posterior (NNGP, NTK-GP and
GD-ensemble mean ± std at time t, the stability limit) and /api/eigen (spectrum, first 4
eigenfunctions on the grid, the labels' weight per mode). Three ways, run alternately
(--repeats times each; the fastest kept, because the machine is shared):

  http       both requests through FastAPI's test client: validation, JSON both ways, the views
  views      views.posterior_view + views.eigen_view: kernels evaluated once per view on [X; X*]
             and passed to the library as precomputed KernelBlocks
  library    the baseline a user would write: predict(arch, ...) three times, eigenmodes(arch, x)
             and eigenmodes(arch, x, k=4).functions(grid), KernelPrior.from_arch(...).modes(y), the
             stability limit from arch.kernel(x).ntk — each call evaluates its
             own kernels

Threads: torch.set_num_threads(--threads) (default 1: 2 cores shared with other work, FACTS.md).
Peak memory: the process's peak resident set after the runs (everything is small here).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch


def _fastest(fns: dict, repeats: int) -> dict:
    """Each function once as warm-up, then all in turn ``repeats`` times; the fastest time of each."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--grid", type=int, default=400)
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from fastapi.testclient import TestClient

    import ntkprior as ntp
    from ntkprior.app.explore import requests as rq
    from ntkprior.app.explore import views
    from ntkprior.app.explore.server import create_app

    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-3, 3, args.points))[:, None]
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(args.points)
    body = {"data": {"x": x.tolist(), "y": y.tolist()}, "arch": {"activation": args.activation},
            "grid": {"low": -4, "high": 4, "n": args.grid}, "diag_reg": 1e-6}
    post_req = rq.PosteriorRequest(**body, t=1e4, learning_rate=0.05)
    eigen_req = rq.EigenRequest(**body, k=4)
    arch = views.architecture(post_req.arch)
    xt, yt, grid = torch.tensor(x), torch.tensor(y), ntp.interval_grid(args.grid, -4, 4)

    def library():
        for kind in ("nngp", "ntkgp", "gd-ensemble"):
            timed = {"t": 1e4, "learning_rate": 0.05} if kind == "gd-ensemble" else {}
            ntp.predict(arch, xt, yt, grid, kind, diag_reg=1e-6, cov="diagonal", **timed)
        ntp.max_stable_learning_rate(ntp.SymmetricPSD(arch.kernel(xt).ntk, "theta", diag_reg=1e-6))
        ntp.eigenmodes(arch, xt)                       # the spectrum
        ntp.eigenmodes(arch, xt, k=4).functions(grid)  # the first 4 eigenfunctions
        ntp.KernelPrior.from_arch(arch, xt, diag_reg=1e-6).modes(yt)

    with TestClient(create_app()) as client:
        def http():
            for path, extra in (("/api/posterior", {"t": 1e4, "learning_rate": 0.05}), ("/api/eigen", {"k": 4})):
                response = client.post(path, json={**body, **extra})
                assert response.status_code == 200, response.text[:300]

        best = _fastest({"http": http,
                         "views": lambda: (views.posterior_view(post_req), views.eigen_view(eigen_req)),
                         "library": library}, args.repeats)

    from ntkprior import __file__ as where
    print(f"explorer update: {args.points} points, {args.grid}-point grid, {arch}  "
          f"(threads={args.threads}, load {os.getloadavg()[0]:.1f}; ntkprior from {os.path.dirname(where)})")
    for name, seconds in best.items():
        print(f"  {name:8s} {1e3 * seconds:8.1f} ms   ({seconds / best['library']:.2f} x the library baseline)")
    verdict = "within" if best["http"] < 0.1 else "OVER"
    print(f"  the issue's budget: 100 ms per update through HTTP: {verdict} ({1e3 * best['http']:.1f} ms)")
    import resource
    print(f"  peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
