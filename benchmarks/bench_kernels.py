"""Analytic NNGP + NTK of the depth-3 ReLU MLP: ntkprior vs neural-tangents, side by side.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_kernels.py [--sizes 1000 2000 4000] [--threads 2]

(OMP_WAIT_POLICY=PASSIVE keeps 2-thread torch from spinning against other work on a shared machine.)

Architecture: Dense(512, 1.5, 0.05) ReLU Dense(512, 1.5, 0.05) ReLU Dense(1, 1.5, 0.05) on
X ~ N(0, 1) of shape (N, 10), float64. Steady state after a warm-up (median of 3). Each N runs
in a fresh process so its peak resident memory (ru_maxrss, minus the memory before the call)
is the kernel's own. Target (issue 2): ratio >= 1.0 at N = 4000; peak < 4·N²·8 bytes + const.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def one(n: int, threads: int) -> dict:
    import numpy as np
    import torch

    import ntkprior as ntp
    torch.set_num_threads(threads)
    arch = ntp.serial(ntp.Dense(512, 1.5, 0.05), ntp.ReLU(), ntp.Dense(512, 1.5, 0.05), ntp.ReLU(),
                      ntp.Dense(1, 1.5, 0.05))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, 10)))
    before = common.current_rss()
    arch.kernel(x)
    peak = common.peak_rss() - before
    res = common.timed(lambda: arch.kernel(x))
    res.update(n=n, peak_extra_bytes=peak, output_bytes=2 * n * n * 8)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.threads)))
        return
    print(f"analytic NNGP+NTK, depth-3 ReLU MLP, d=10, float64, {a.threads} threads")
    print(f"{'N':>6} {'ntkprior s':>11} {'neural-tangents s':>18} {'speed ratio':>12} "
          f"{'peak extra MB':>14} {'4N²·8 MB':>9}")
    for n in a.sizes:
        ours = common.run_isolated(Path(__file__), "--one", str(n), "--threads", str(a.threads))
        nt = common.neural_tangents("analytic", "--act", "relu", "--n", str(n))
        nt_s = nt["median_s"] if nt else float("nan")
        print(f"{n:>6} {ours['median_s']:>11.3f} {nt_s:>18.3f} {nt_s / ours['median_s']:>12.2f} "
              f"{ours['peak_extra_bytes'] / 1e6:>14.0f} {4 * n * n * 8 / 1e6:>9.0f}")


if __name__ == "__main__":
    main()
