"""Convolutional kernels: ntkprior vs neural-tangents' jitted kernel_fn, side by side in one run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_conv.py [--cases a b c d] [--threads 2] [--check]
    python benchmarks/bench_conv.py --uniform      # the uniform-vs-Gaussian first-layer effect (docs)

Cases (issue #12), weight_std 1.4, bias_std 0.1, float64, inputs N(0, 1):
  a  conv(512, 3) relu conv(512, 3) relu global_avg_pool dense(1) on (N, 3, 8, 8), N = 256, 512
     (full position covariance: 64² per pair)
  b  [conv(512, 5) relu]*3 flatten dense(1) on MNIST-1D-shaped (N, 1, 40), N = 1000, 4000
     (position diagonal only)
  c  dense(512) [residual{relu dense(512)}]*2 relu dense(1) on (N, 10), N = 4000
  d  case b at N = 5000: the whole MNIST-1D Flatten-CNTK, NNGP and NTK (target < 60 s on 2 cores)
Each size runs in a fresh process: steady-state median of the repeats after a warm-up, CPU seconds
(the machine is shared: wall time includes other work), and peak resident memory above the inputs
(the output is 2·N²·8 bytes). neural-tangents runs ``benchmarks/nt_conv_baseline.py`` in its venv
(/opt/ntvenv, or $NTKPRIOR_NT_PYTHON) when present; ``--check`` also compares both kernels at a
small N (max relative difference).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
SPECS = {
    "gap2d": "conv(512, 3, weight_std=1.4, bias_std=0.1) relu conv(512, 3, weight_std=1.4, bias_std=0.1) relu "
             "global_avg_pool dense(1, weight_std=1.4, bias_std=0.1)",
    "flat1d": "[conv(512, 5, weight_std=1.4, bias_std=0.1) relu]*3 flatten dense(1, weight_std=1.4, bias_std=0.1)",
    "resmlp": "dense(512, weight_std=1.4, bias_std=0.1) [residual{relu dense(512, weight_std=1.4, bias_std=0.1)}]*2 "
              "relu dense(1, weight_std=1.4, bias_std=0.1)",
}
CASES = {"a": ("gap2d", (3, 8, 8), (256, 512)), "b": ("flat1d", (1, 40), (1000, 4000)),
         "c": ("resmlp", (10,), (4000,)), "d": ("flat1d", (1, 40), (5000,))}
NT_BATCH = {"gap2d": 32, "flat1d": 500, "resmlp": 1000}


def inputs(shape, n):
    import numpy as np
    return np.random.default_rng(0).standard_normal((n,) + tuple(shape))


def one(case: str, shape, n: int, threads: int, repeats: int) -> dict:
    import torch
    import ntkprior as ntp
    torch.set_num_threads(threads)
    arch = ntp.parse_spec(SPECS[case])
    x = torch.from_numpy(inputs(shape, n))
    before = common.current_rss()
    cpu0, t0 = time.process_time(), time.perf_counter()
    arch.kernel(x)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = common.peak_rss() - before
    res = common.timed(lambda: arch.kernel(x), repeats) if repeats else {"median_s": first, "min_s": first}
    res.update(case=case, n=n, first_s=first, first_cpu_s=first_cpu, peak_extra_bytes=peak,
               output_bytes=2 * n * n * 8, load=os.getloadavg()[0])
    return res


def fresh(case, shape, n, threads, repeats) -> dict:
    """``one`` in a fresh process, so that its peak memory is its own."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--one", case, ",".join(map(str, shape)), str(n),
                          "--threads", str(threads), "--repeats", str(repeats)],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def neural_tangents(case, shape, n, repeats, save=None) -> dict | None:
    """neural-tangents' jitted kernel_fn on the same inputs (its venv; None when absent)."""
    import numpy as np
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.npy"
        np.save(path, inputs(shape, n))
        batch = math.gcd(n, NT_BATCH[case])
        args = [case, str(path), "--batch", str(batch), "--repeats", str(repeats)] + (["--save", save] if save else [])
        return common.neural_tangents(*args, script=HERE / "nt_conv_baseline.py", timeout=1200)


def check(case, shape, n=48) -> None:
    """Max relative difference between ntkprior and neural-tangents at a small N."""
    import numpy as np
    import torch
    import ntkprior as ntp
    with tempfile.TemporaryDirectory() as d:
        save = str(Path(d) / "k.npz")
        if neural_tangents(case, shape, n, 0, save=save) is None:
            return
        ref = np.load(save)
        k = ntp.parse_spec(SPECS[case]).kernel(torch.from_numpy(inputs(shape, n)))
        for name in ("nngp", "ntk"):
            diff = np.abs(k[name].numpy() - ref[name]).max() / np.abs(ref[name]).max()
            print(f"  check {case} N={n} {name}: max |ntkprior - neural-tangents| / max = {diff:.1e}")


def uniform_effect() -> None:
    """One-hidden-layer ReLU network at infinite width: Gaussian-moment NNGP vs torch's uniform init."""
    import torch
    import ntkprior as ntp
    torch.manual_seed(0)
    for d in (1, 2, 4, 16):
        x = torch.randn(6, d, dtype=torch.float64)
        net = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        arch = ntp.from_torch(net, d)
        exact = arch.kernel(x).nngp
        bound, total, m = 1 / math.sqrt(d), torch.zeros(6, 6, dtype=torch.float64), 0
        for _ in range(40):            # 10^7 draws of (w, b) ~ U(±1/sqrt(d)): E[relu(z) relu(z')]
            w = (torch.rand(250_000, d, dtype=torch.float64) * 2 - 1) * bound
            b = (torch.rand(250_000, 1, dtype=torch.float64) * 2 - 1) * bound
            h = torch.relu(w @ x.T + b)
            total, m = total + h.T @ h, m + h.shape[0]
        readout = arch.layers[-1]
        mc = readout.weight_std ** 2 * total / m + readout.bias_std ** 2
        rel = float(torch.linalg.norm(mc - exact) / torch.linalg.norm(exact))
        worst = float(((mc - exact) / exact).abs().max())
        print(f"d={d:>2}: relative Frobenius {rel:.4f}, largest relative entry {worst:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["a", "b", "c", "d"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--check", action="store_true")
    p.add_argument("--no-nt", action="store_true")
    p.add_argument("--uniform", action="store_true")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        case, shape, n = a.one
        print(json.dumps(one(case, tuple(int(v) for v in shape.split(",")), int(n), a.threads, a.repeats)))
        return
    if a.uniform:
        uniform_effect()
        return
    print(f"analytic NNGP+NTK of CNNs, float64, {a.threads} threads (OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')})")
    for key in a.cases:
        case, shape, sizes = CASES[key]
        print(f"case {key}: {SPECS[case]} on (N, {', '.join(map(str, shape))})")
        if a.check and key != "d":
            check(case, shape)
        for n in sizes:
            repeats = 0 if key == "d" else a.repeats
            ours = fresh(case, shape, n, a.threads, repeats)
            line = (f"  N={n:>5}: ntkprior {ours['median_s']:7.2f} s (first {ours['first_s']:.2f} s, "
                    f"{ours['first_cpu_s']:.1f} CPU s, load {ours['load']:.1f}), peak +{ours['peak_extra_bytes'] / 1e6:.0f} MB "
                    f"(output {ours['output_bytes'] / 1e6:.0f} MB)")
            nt = None if a.no_nt or key == "d" else neural_tangents(case, shape, n, a.repeats)
            if nt is not None:
                line += (f"; neural-tangents {nt['median_s']:.2f} s (first {nt['first_s']:.1f} s): "
                         f"ratio {nt['median_s'] / ours['median_s']:.2f}x")
            print(line, flush=True)


if __name__ == "__main__":
    main()
