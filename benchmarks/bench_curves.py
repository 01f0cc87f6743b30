"""Benchmark: learning curves from one eigendecomposition of the pool kernel vs recomputing it.

    python benchmarks/bench_curves.py                   # pools of 500 and 1000 points (about 1 minute)
    python benchmarks/bench_curves.py --pools 1000 2000 --targets 4 --sizes 8

Kernel: the NTK of dense(512, weight_std=1.4142, bias_std=1.0) relu dense(1, ...) on N points of the
sphere S^9 (computed once per pool, outside both timings). Targets: T random functions of the pool
(random combinations of the kernel's first 50 eigenvectors plus noise); sizes: S log-spaced sizes
from 4 to N/2.

  reuse      pool_spectrum(K) once (one dense eigendecomposition), then spectrum.curve(y, sizes) for
             each target: one product U^T y and S scalar root solves per target
  recompute  learning_curve(K, None, y, [p]) for every target and size: the eigendecomposition
             repeated S*T times, what a loop over sizes and targets without the shared spectrum does

Both give the same numbers (checked to 1e-12). Times: the fastest of --repeats runs, the two sides
alternating (the machine is shared); ratio = recompute / reuse. Threads: 1 (torch and BLAS, see
FACTS.md). Peak memory: resident-set growth during each side, sampled (psutil) every 2 ms.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from common import PeakMemory
from ntkprior.arch.spec import parse_spec
from ntkprior.prior.learning_curves import learning_curve, pool_spectrum

ARCH = ("dense(512, weight_std=1.4142135623730951, bias_std=1.0) relu "
        "dense(1, weight_std=1.4142135623730951, bias_std=1.0)")


def problem(n: int, targets: int, seed: int = 0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, 10))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    K = parse_spec(ARCH).kernel(torch.from_numpy(x)).ntk
    _, u = np.linalg.eigh(K.numpy())
    top = u[:, ::-1][:, :50]
    ys = [math.sqrt(n) * top @ g.standard_normal(50) / math.sqrt(50) + 0.1 * g.standard_normal(n)
          for _ in range(targets)]
    return K, ys


def reuse(K, ys, sizes):
    spectrum = pool_spectrum(K)
    return [spectrum.curve(y, sizes).predicted for y in ys]


def recompute(K, ys, sizes):
    return [torch.cat([learning_curve(K, None, y, [p]).predicted for p in sizes]) for y in ys]


def best_of(fn, repeats):
    times, out, memory = [], None, 0
    for _ in range(repeats):
        with PeakMemory() as rss:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        memory = max(memory, rss.growth)
    return min(times), out, memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--sizes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'pool':>6} {'T x S':>6} {'reuse s':>9} {'recompute s':>12} {'ratio':>7} "
          f"{'reuse MB':>9} {'recompute MB':>13} {'per target ms':>14}")
    with threadpool_limits(1):
        for n in args.pools:
            K, ys = problem(n, args.targets)
            sizes = np.unique(np.geomspace(4, n // 2, args.sizes).round().astype(int))
            t_reuse, a, m_reuse = best_of(lambda: reuse(K, ys, sizes), args.repeats)
            t_rec, b, m_rec = best_of(lambda: recompute(K, ys, sizes), args.repeats)
            for u, v in zip(a, b):
                np.testing.assert_allclose(u, v, rtol=1e-12)
            spectrum = pool_spectrum(K)
            t0 = time.perf_counter()
            for y in ys:
                spectrum.curve(y, sizes)
            per_target = (time.perf_counter() - t0) / len(ys)
            print(f"{n:>6} {len(ys)}x{len(sizes):<4} {t_reuse:>9.3f} {t_rec:>12.3f} {t_rec / t_reuse:>7.1f} "
                  f"{m_reuse / 1e6:>9.1f} {m_rec / 1e6:>13.1f} {1e3 * per_target:>14.2f}")


if __name__ == "__main__":
    main()
