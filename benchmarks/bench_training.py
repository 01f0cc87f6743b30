"""Benchmark: vectorised ensemble training and closed-form dynamics at many times.

    python benchmarks/bench_training.py            # the issue's sizes (about 15 minutes on 1 thread)
    python benchmarks/bench_training.py --quick    # small sizes, a smoke run (about 20 s)
    python benchmarks/bench_training.py --loaded   # the CLI under load, default vs one thread (~5 min)

1. Training an ensemble of 256 networks of hidden width 512 for 1000 steps of full-batch gradient
   descent on 64 points (inputs N(0, I) in 8 dimensions, labels sin of the first coordinate):
     ntkprior   train(arch, x, y, None, steps, lr, ensemble=256, record=[0, steps], track_kernel=False)
                (stacked parameters in cache-sized groups, batched products, a hand-written backward)
     baseline   a Python loop over 256 torch.nn networks (arch.build), each trained by its own
                torch.optim.SGD: zero_grad, ½·mean loss, backward, step
   Three rows: one hidden layer (dense(512) relu dense(1)); the seed's two hidden layers
   (dense(512) relu dense(512) relu dense(1): the 512 x 512 products dominate); and the ensemble of
   the statistical test, 1024 networks dense(128) erf dense(1) on 4 points in R^8 (per-network
   work is tiny, per-step overhead dominates). Extrapolated, and said so in the output: the loop is
   timed on --loop-nets networks and scaled to the ensemble; the two-hidden-layer ensemble is timed
   for --deep-steps steps and scaled to 1000 (cost per step is constant). float32, as networks are
   usually trained (--dtype float64 to change).
2. Closed-form outputs of the linearised network (ntkprior.dynamics.linearized, discrete GD) at 1000 times for
   n = 4000 training and 500 test points (analytic NTK of the seed's network):
     ntkprior   LinearizedDynamics(theta, y, theta_tx, learning_rate).at(times): one
                eigendecomposition, then two matrix products with 1000 columns
     baseline   the same at each time separately, i.e. a fresh eigendecomposition per time; timed on
                --recompute-times times and scaled to 1000. The outputs of both are compared.
3. ``--loaded``: the command line on a loaded machine (issue #20's target: default settings within
   1.3x of one thread). Two busy processes (``while True: pass``) hold both cores while
   ``ntkprior diagnose`` and ``ntkprior train`` run on the document's five seed points (a CSV written
   to a temporary directory; --arch the two-hidden-layer width-512 ReLU network, every other option
   at its default), alternately with default settings (OMP_WAIT_POLICY, OMP_NUM_THREADS and
   NTKPRIOR_THREADS unset: the command line sets OMP_WAIT_POLICY=PASSIVE, torch picks its threads)
   and with NTKPRIOR_THREADS=1 OMP_NUM_THREADS=1, --loaded-repeats times each; the fastest wall time
   of each is kept and the ratio printed with the load average. The busy processes are killed at
   the end, also on an error. This mode runs alone (sections 1 and 2 are skipped).
No neural-tangents figure: its baseline script (../shared/baselines/nt_baseline.py) has no training or
time-series case.
Threads: torch.set_num_threads(T) and threadpoolctl for scipy's BLAS, T = --threads (default 1: the
machine has 2 cores shared with other work, see FACTS.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ntkprior.dynamics.linearized import LinearizedDynamics
from ntkprior.arch.layers import Dense, Erf, ReLU, serial
from ntkprior.dynamics.training import train

ENSEMBLE, WIDTH, STEPS, POINTS, DIM = 256, 512, 1000, 64, 8
LEARNING_RATE = 0.05


def seed_network(width: int, hidden_layers: int):
    layers = []
    for _ in range(hidden_layers):
        layers += [Dense(width, weight_std=1.5, bias_std=0.05), ReLU()]
    return serial(*layers, Dense(1, weight_std=1.5, bias_std=0.05))


def time_vectorised(arch, x, y, ensemble: int, steps: int, dtype) -> float:
    """Seconds for ``steps`` steps of ``ensemble`` networks trained together (after a warm-up)."""
    train(arch, x, y, None, 2, LEARNING_RATE, ensemble=ensemble, record=[0, 2], track_kernel=False, dtype=dtype)
    t0 = time.perf_counter()
    train(arch, x, y, None, steps, LEARNING_RATE, ensemble=ensemble, record=[0, steps], track_kernel=False,
          dtype=dtype)
    return time.perf_counter() - t0


def time_loop(arch, x, y, nets: int, steps: int, dtype) -> float:
    """Seconds for ``nets`` torch.nn networks trained one after the other by torch.optim.SGD."""
    x, y = x.to(dtype), y.to(dtype)
    models = [arch.build(x.shape[1], seed=s, dtype=dtype) for s in range(nets)]
    t0 = time.perf_counter()
    for net in models:
        opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * (net(x) - y).pow(2).mean()).backward()
            opt.step()
    return time.perf_counter() - t0


def ensemble_cases(args):
    """(description, architecture, inputs, labels, ensemble size, steps to time) per benchmark row."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(POINTS, DIM, generator=g, dtype=torch.float64)
    x4 = torch.randn(4, DIM, generator=g, dtype=torch.float64)
    small = serial(Dense(args.width // 4, weight_std=1.2, bias_std=0.05), Erf(), Dense(1, weight_std=1.2, bias_std=0.05))
    return [
        (f"{args.ensemble} x dense({args.width}) relu dense(1), {POINTS} points",
         seed_network(args.width, 1), x, torch.sin(x[:, :1]), args.ensemble, args.steps),
        (f"{args.ensemble} x the seed's dense({args.width}) relu dense({args.width}) relu dense(1), {POINTS} points",
         seed_network(args.width, 2), x, torch.sin(x[:, :1]), args.ensemble, min(args.deep_steps, args.steps)),
        (f"{4 * args.ensemble} x dense({args.width // 4}) erf dense(1), 4 points (the statistical ensemble test)",
         small, x4, torch.sign(x4[:, :1]), 4 * args.ensemble, args.steps),
    ]


def bench_ensembles(args, dtype) -> None:
    steps = args.steps
    print(f"1. ensembles trained {steps} steps by full-batch gradient descent ({dtype}, {args.threads} thread(s))")
    for title, arch, x, y, ensemble, timed_steps in ensemble_cases(args):
        vec = time_vectorised(arch, x, y, ensemble, timed_steps, dtype) * steps / timed_steps
        loop_steps = min(steps, args.loop_steps)
        loop = time_loop(arch, x, y, args.loop_nets, loop_steps, dtype) * (ensemble / args.loop_nets) * (steps / loop_steps)
        how_vec = "" if timed_steps == steps else f" (timed {timed_steps} steps, scaled x{steps / timed_steps:g})"
        how_loop = (f" (timed {args.loop_nets} networks x {loop_steps} steps, "
                    f"scaled x{ensemble * steps / (args.loop_nets * loop_steps):g})")
        print(f"   {title}")
        print(f"      ntkprior vectorised {vec:8.1f} s{how_vec}")
        print(f"      torch.optim loop    {loop:8.1f} s{how_loop}")
        print(f"      ratio loop / vectorised = {loop / vec:.1f}x")


def bench_closed_form(args) -> None:
    n, n_test, times = args.n, args.n // 8, np.arange(1, args.times + 1) * 100.0     # steps 100, 200, ...
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(n, 10)), rng.normal(size=(n_test, 10))
    y = np.sin(x[:, :1])
    arch = seed_network(WIDTH, 2)
    t0 = time.perf_counter()
    theta, theta_tx = arch.kernel(x).ntk, arch.kernel(xt, x).ntk
    kernel_s = time.perf_counter() - t0
    lr = 0.5 * 2 * n / float(torch.linalg.matrix_norm(theta, ord=2))      # half the stable maximum
    print(f"2. closed-form outputs at {len(times)} times, n = {n} training and {n_test} test points "
          f"(kernel computed once, {kernel_s:.1f} s, not counted)")
    t0 = time.perf_counter()
    all_times = LinearizedDynamics(theta, y, theta_tx, learning_rate=lr).at(times)
    reused = time.perf_counter() - t0
    few = times[:: max(1, len(times) // args.recompute_times)][: args.recompute_times]
    t0 = time.perf_counter()
    singles = [LinearizedDynamics(theta, y, theta_tx, learning_rate=lr).at(t) for t in few]
    per_time = (time.perf_counter() - t0) / len(few)
    worst = max(float((s.test_outputs[0] - all_times.test_outputs[np.searchsorted(times, t)]).abs().max())
                for s, t in zip(singles, few))
    print(f"   one eigendecomposition, reused   {reused:8.1f} s")
    print(f"   recomputed per time              {per_time * len(times):8.1f} s (timed {len(few)} times, "
          f"{per_time:.1f} s each, scaled x{len(times) / len(few):g})")
    print(f"   ratio = {per_time * len(times) / reused:.0f}x; largest difference of the test outputs {worst:.1e}")


LOADED_ARCH = "[dense(512, weight_std=1.5, bias_std=0.05) relu]*2 dense(1)"
#: variables that change the command line's threads: unset for "default settings"
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NTKPRIOR_THREADS")


def busy_processes(count: int) -> list:
    """``count`` Python processes spinning on a core each (the load of other users' work)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def command_seconds(command: list, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=900)                   # a hung command fails the benchmark, not the machine
    return time.perf_counter() - t0


def bench_loaded(args) -> None:
    """Section 3: ``ntkprior diagnose`` and ``train`` under two busy processes, default vs one thread."""
    from ntkprior.studies.datasets import seed_sin_data

    script = Path(sys.executable).with_name("ntkprior")
    default = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    one = {**default, "NTKPRIOR_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        x, y = seed_sin_data(5, 0.1, 0)
        data = Path(tmp) / "train.csv"
        np.savetxt(data, np.c_[x.numpy(), y.numpy()], delimiter=",", header="x,y", comments="")
        commands = {name: [str(script), name, "--arch", LOADED_ARCH, "--train", str(data), "--format", "json"]
                    for name in ("diagnose", "train")}
        load = busy_processes(2)
        try:
            time.sleep(2.0)                           # let the load average see them
            print(f"\n3. the command line with 2 busy processes on the {os.cpu_count()} cores "
                  f"(fastest of {args.loaded_repeats}, alternating)")
            for name, command in commands.items():
                best = {"default": float("inf"), "one thread": float("inf")}
                for _ in range(args.loaded_repeats):
                    for label, env in (("default", default), ("one thread", one)):
                        best[label] = min(best[label], command_seconds(command, env))
                print(f"   ntkprior {name:8s}  default {best['default']:6.1f} s, one thread "
                      f"{best['one thread']:6.1f} s: ratio {best['default'] / best['one thread']:.2f} "
                      f"(target <= 1.3); load average {os.getloadavg()[0]:.1f}")
        finally:
            for process in load:
                process.kill()
                process.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--loop-nets", type=int, default=16, help="networks timed in the loop baseline")
    p.add_argument("--loop-steps", type=int, default=200, help="steps timed per loop network")
    p.add_argument("--deep-steps", type=int, default=50, help="steps timed for the two-hidden-layer ensemble")
    p.add_argument("--recompute-times", type=int, default=2, help="times timed for the per-time baseline")
    p.add_argument("--loaded", action="store_true", help="only section 3: the command line on a loaded machine")
    p.add_argument("--loaded-repeats", type=int, default=3, help="alternating runs per setting in section 3")
    args = p.parse_args()
    if args.loaded:
        bench_loaded(args)
        return
    args.ensemble, args.width, args.steps, args.n, args.times = ENSEMBLE, WIDTH, STEPS, 4000, 1000
    if args.quick:
        args.ensemble, args.width, args.steps, args.n, args.times = 32, 128, 100, 500, 100
        args.loop_nets, args.loop_steps, args.deep_steps = 4, 100, 20
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        bench_ensembles(args, getattr(torch, args.dtype))
        bench_closed_form(args)


if __name__ == "__main__":
    main()
