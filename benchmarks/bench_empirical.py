"""Benchmark: the empirical NTK methods against the PyTorch tutorial baseline and neural-tangents.

    python benchmarks/bench_empirical.py            # the issue's cases (a few minutes)
    python benchmarks/bench_empirical.py --quick    # tiny sizes: checks that the script runs

    python benchmarks/bench_empirical.py --threads 1 2 --sizes 256 512 1024

Cases (issues 3 and 20), float64 and float32, NTK trace over the single output:
  MLP 10-512-512-1 ReLU (ntkprior Dense, NTK parameterisation, weight_std 1.5, bias_std 0.05) on N = 256, 512,
  1024 (--sizes); CNN Conv2d(1,32,3,p=1)-ReLU-Conv2d(32,32,3,p=1)-ReLU-Flatten-Linear(2048,1) on N = 128 8x8
  images. Each ntkprior method (auto, structured, jacobian, ntk-vp; beyond N = 512 only auto and structured,
  and no tutorial) is timed against
  (a) the PyTorch tutorial's Jacobian contraction ("Neural Tangent Kernels" tutorial:
      torch.func vmap(jacrev) per-example Jacobians, then einsum), in this process;
  (b) neural-tangents 0.6.5 structured derivatives (implementation 3, jitted; median of repeats after
      the compiling call) via ../shared/baselines/nt_baseline.py in its own venv, when that exists
      (NTKPRIOR_NT_PYTHON, default /opt/ntvenv/bin/python; NTKPRIOR_NT_BASELINE for the script).
Times: the minimum of 7 calls after a warm-up call (one call when a call takes over 10 s), and
neural-tangents' minimum over its repeats: on a shared machine the minimum is the least disturbed
figure (as timeit recommends); medians are printed alongside.
Threads: torch.set_num_threads(2) here (the machine has 2 cores; --threads 1 2 runs every case with
each); JAX uses its default (all cores), and one thread (XLA_FLAGS: no Eigen thread pool,
intra_op_parallelism_threads=1) in the one-thread runs. On a machine shared with other CPU-bound work 2 OpenMP threads that spin at
barriers can be 10x slower than 1 (FACTS.md); there run it as
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_empirical.py
(measured at load 6 on 2 cores, MLP N = 512 float32: 0.07-0.09 s passive vs 0.34-1.1 s default).
Roofline (MLP, structured path): the GEMMs the structured path performs for Θ(x, x), counted from the
layer widths d_0 .. d_L (10, 512, 512, 1) and k = 1 output, in multiply-adds:
  forward              N·d_{l-1}·d_l                for every layer l
  backward (k times)   N·d_l·d_{l-1}                for l = L .. 2 (the signal into each hidden layer's output)
  Gram products        b_i·b_j·(d_{l-1} + 1 + k·d_l) for every upper tile pair i <= j of the SYMMETRIC_TILE
                                                    tiles (b_i rows each), on every Gram-path layer (its
                                                    inputs augmented with the bias column)
  explicit layers      b_i·b_j·k·d_l·d_{l-1} and b_i·b_j·k·d_l  (weight and bias gradients), the same tile
                                                    pairs, for a layer on the explicit path
FLOPs = 2 × multiply-adds. The roofline is the time plain torch.mm takes for the same (rows, inner,
columns) shapes in the same dtype and thread count, measured in this process (minimum of 10); the
fraction is roofline time / structured time, i.e. the structured path's GFLOP/s over the GEMMs'.
Elementwise work (activations, the Hadamard products, the copies) is not counted: it is the overhead.
Peak memory: MLP N = 4096 float64 with method="auto", in a child process after a warm-up call at
N = 64: the kernel's peak resident set of the process (VmHWM in /proc/self/status, reset just
before the call by writing 5 to /proc/self/clear_refs) minus the resident set before the call
(VmRSS), minus the 134 MB output. (Linux. tracemalloc cannot see torch's allocations, and
getrusage's ru_maxrss is inherited across fork + exec, so it reports the parent's peak.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from ntkprior.kernels import _structured as st  # noqa: E402
from ntkprior.kernels.empirical import empirical_ntk  # noqa: E402
from ntkprior.arch.layers import Dense, ReLU, serial  # noqa: E402

THREADS = 2
METHODS = ("auto", "structured", "jacobian", "ntk-vp")
#: the tutorial and the Jacobian-based methods are timed up to this N (beyond: minutes and gigabytes)
JACOBIAN_MAX = 512


def mlp(dtype):
    arch = serial(Dense(512, weight_std=1.5, bias_std=0.05), ReLU(), Dense(512, weight_std=1.5, bias_std=0.05),
                  ReLU(), Dense(1, weight_std=1.5, bias_std=0.05))
    return arch.build(10, seed=0, dtype=dtype).eval()


def cnn(dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2048, 1)).to(dtype).eval()


def inputs(model_name: str, n: int, dtype) -> torch.Tensor:
    shape = (n, 10) if model_name == "mlp" else (n, 1, 8, 8)
    return torch.from_numpy(np.random.default_rng(0).standard_normal(shape)).to(dtype)


def tutorial_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The PyTorch tutorial's empirical_ntk_jacobian_contraction, trace over outputs."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac1 = [j.flatten(2) for j in vmap(jacrev(fnet_single), (None, 0))(params, x1).values()]
    jac2 = [j.flatten(2) for j in vmap(jacrev(fnet_single), (None, 0))(params, x2).values()]
    return torch.stack([torch.einsum("Naf,Maf->NM", j1, j2) for j1, j2 in zip(jac1, jac2)]).sum(0)


def timed(fn) -> tuple[float, float]:
    """(min, median) seconds of 7 calls after a warm-up call; one call when it takes over 10 s."""
    first = _seconds(fn)
    if first > 10:
        return first, first
    times = [_seconds(fn) for _ in range(7)]
    return min(times), statistics.median(times)


def structured_gemms(model: nn.Module, n: int, k: int = 1) -> list[tuple[int, int, int]]:
    """(rows, inner, columns) of every GEMM the structured path performs for Θ(x, x) of an MLP of
    Dense layers on n inputs (see the module docstring), with its Gram / explicit choice per layer."""
    widths = [model[0].in_features] + [m.out_features for m in model if hasattr(m, "out_features")]
    layers = [st.Layer(str(l), None, "w", "b", 1.0, 1.0) for l in range(1, len(widths))]
    st.choose_paths(layers, {layer.name: (1, 1, widths[l], widths[l + 1]) for l, layer in enumerate(layers)}, k)
    gemms = [(n, widths[l - 1], widths[l]) for l in range(1, len(widths))]
    gemms += [(n, widths[l], widths[l - 1]) for l in range(len(widths) - 1, 1, -1)] * k
    parts = [s.stop - s.start for s in st.tiles(n, st.SYMMETRIC_TILE)]
    for i, bi in enumerate(parts):
        for bj in parts[i:]:
            for l, layer in enumerate(layers):
                d_in, d_out = widths[l], widths[l + 1]
                gemms += [(bi, k * d_out * d_in if layer.explicit else d_in + 1, bj), (bi, k * d_out, bj)]
    return gemms


def roofline(gemms: list[tuple[int, int, int]], dtype) -> tuple[float, float]:
    """(FLOPs, seconds) of the GEMMs as plain torch.mm calls in this process (minimum of 10 per shape)."""
    seconds = 0.0
    for shape in set(gemms):
        m, inner, cols = shape
        a, b = torch.randn(m, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        torch.mm(a, b)
        best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(10))
        seconds += best * gemms.count(shape)
    return 2.0 * sum(m * inner * cols for m, inner, cols in gemms), seconds


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def neural_tangents(model_name: str, n: int, float32: bool, threads: int) -> dict | None:
    """neural-tangents' structured derivatives (implementation 3) on the same case, in its venv; with
    ``threads=1`` XLA is held to one thread (its Eigen pool off, intra-op parallelism 1)."""
    args = ["empirical", "--model", model_name, "--n", str(n), "--impl", "3"] + (["--float32"] if float32 else [])
    env = common.xla_threads(threads)
    return common.neural_tangents(*args, env=env)


def bench_case(model_name: str, n: int, dtype, threads: int) -> dict:
    """Every method (the Jacobian-based ones and the tutorial up to JACOBIAN_MAX), neural-tangents
    before and after ours, and for the MLP the roofline fraction of the structured path."""
    model = (mlp if model_name == "mlp" else cnn)(dtype)
    x = inputs(model_name, n, dtype)
    small = n <= JACOBIAN_MAX
    methods = METHODS if small else ("auto", "structured")
    print(f"\n{model_name} N={n} {str(dtype).replace('torch.', '')}, {threads} thread(s)  "
          f"({sum(p.numel() for p in model.parameters())} parameters)")
    nt = neural_tangents(model_name, n, dtype == torch.float32, threads)
    if nt:
        print(f"  {'neural-tangents impl 3':24s} {nt['min_s']:9.4f} s  (median {nt['median_s']:.4f}; first call "
              f"with compilation {nt['first_s']:.2f} s)")
    results = {"nt": nt["min_s"] if nt else None}
    if small:
        reference = tutorial_ntk(model, x, x)
        results["tutorial"], median = timed(lambda: tutorial_ntk(model, x, x))
        print(f"  {'tutorial vmap(jacrev)':24s} {results['tutorial']:9.4f} s  (median {median:.4f})")
    for method in methods:
        theta = empirical_ntk(model, x, method=method)
        seconds, median = timed(lambda: empirical_ntk(model, x, method=method))
        results[method] = seconds
        versus = (f"{results['tutorial'] / seconds:7.1f}x faster than tutorial (max rel. diff from tutorial "
                  f"{float((theta - reference).abs().max() / reference.abs().max()):.1e})") if small else ""
        print(f"  {method:24s} {seconds:9.4f} s  (median {median:.4f})  {versus}")
    if model_name == "mlp":
        flops, gemm_s = roofline(structured_gemms(model, n), dtype)
        results["roofline"] = gemm_s / results["structured"]
        print(f"  roofline: structured {flops / results['structured'] / 1e9:.1f} GFLOP/s, torch.mm on the same "
              f"GEMMs {flops / gemm_s / 1e9:.1f} GFLOP/s ({flops / 1e9:.2f} GFLOP): fraction {results['roofline']:.2f}")
    again = neural_tangents(model_name, n, dtype == torch.float32, threads) if nt else None
    if again:   # on a shared machine, neural-tangents gets the better of two windows
        results["nt"] = min(results["nt"], again["min_s"])
        print(f"  {'neural-tangents again':24s} {again['min_s']:9.4f} s  -> best {results['nt']:.4f} s; "
              + ", ".join(f"{m} {results['nt'] / results[m]:.2f}x" for m in methods) + " neural-tangents' speed")
    return results


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_memory_child(n: int) -> None:
    torch.set_num_threads(THREADS)
    model = mlp(torch.float64)
    empirical_ntk(model, inputs("mlp", 64, torch.float64))
    x = inputs("mlp", n, torch.float64)
    with open("/proc/self/clear_refs", "w") as f:      # reset this process's peak (VmHWM) to now
        f.write("5")
    resident_before = _status_bytes("VmRSS")
    theta = empirical_ntk(model, x, method="auto", max_memory="2GB")
    peak = _status_bytes("VmHWM")
    out = theta.numel() * theta.element_size()
    print(json.dumps({"n": n, "peak_rise_bytes": peak - resident_before, "output_bytes": out}))


def peak_memory(n: int) -> None:
    done = subprocess.run([sys.executable, __file__, "--peak-memory-child", str(n)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        print(f"peak memory run failed: {done.stderr.strip()[-500:]}")
        return
    r = json.loads(done.stdout.strip().splitlines()[-1])
    beyond = r["peak_rise_bytes"] - r["output_bytes"]
    print(f"\npeak memory, MLP N={n} float64, method='auto', max_memory='2GB': peak RSS rise "
          f"{r['peak_rise_bytes'] / 1e9:.3f} GB, of which output {r['output_bytes'] / 1e9:.3f} GB; "
          f"beyond the output {beyond / 1e9:.3f} GB (target < 2 GB)")


_FIRST_CALL = """
import time, torch
from ntkprior.kernels.empirical import empirical_ntk
torch.set_num_threads({threads})
model = torch.nn.Sequential(torch.nn.Linear(10, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                            torch.nn.ReLU(), torch.nn.Linear(512, 1)).double()
x = torch.randn(256, 10, dtype=torch.float64)
t0 = time.perf_counter(); empirical_ntk(model, x); first = time.perf_counter() - t0
t0 = time.perf_counter(); empirical_ntk(model, x); second = time.perf_counter() - t0
print(first, second)
"""


def first_call(threads: int) -> None:
    """Issue #20's target: the first empirical_ntk of a fresh process (imports excluded) under 0.5 s."""
    done = subprocess.run([sys.executable, "-c", _FIRST_CALL.format(threads=threads)], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        print(f"first-call run failed: {done.stderr.strip()[-300:]}")
        return
    first, second = (float(v) for v in done.stdout.split())
    print(f"\nfirst call in a fresh process, MLP 10-512-512-1 N=256 float64 (imports excluded): {first:.3f} s; "
          f"second call {second:.3f} s (target: first < 0.5 s); load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    p.add_argument("--threads", type=int, nargs="+", default=[THREADS],
                   help="torch thread counts, one run of every case each (default 2, the machine's cores)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="MLP sizes N")
    p.add_argument("--peak-memory-child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.peak_memory_child:
        peak_memory_child(a.peak_memory_child)
        return
    print(f"torch {torch.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; times are "
          f"minima of 7 after a warm-up; load average {os.getloadavg()[0]:.1f} at the start")
    sizes = {"mlp": (16,), "cnn": 8} if a.quick else {"mlp": tuple(a.sizes), "cnn": 128}
    summary = {}
    for threads in a.threads:
        torch.set_num_threads(threads)
        for dtype in (torch.float64, torch.float32):
            for n in sizes["mlp"]:
                summary[("mlp", n, dtype, threads)] = bench_case("mlp", n, dtype, threads)
            summary[("cnn", sizes["cnn"], dtype, threads)] = bench_case("cnn", sizes["cnn"], dtype, threads)
    print(f"\nSummary (seconds; load average {os.getloadavg()[0]:.1f} at the end)\n"
          "| case | threads | neural-tangents | auto | structured | roofline fraction | auto vs NT |\n"
          "|---|---|---|---|---|---|---|")
    for (name, n, dtype, threads), r in summary.items():
        nt = f"{r['nt']:.4f}" if r["nt"] else "-"
        fraction = f"{r['roofline']:.2f}" if "roofline" in r else "-"
        ratio = f"{r['nt'] / r['auto']:.2f}x" if r["nt"] else "-"
        print(f"| {name.upper()} N={n} {str(dtype).replace('torch.', '')} | {threads} | {nt} | {r['auto']:.4f} | "
              f"{r['structured']:.4f} | {fraction} | {ratio} |")
    print("(auto vs NT >= 1 means no slower; targets: roofline fraction >= 0.8 at N >= 512, auto vs NT >= 1)")
    first_call(a.threads[0])
    peak_memory(256 if a.quick else 4096)


if __name__ == "__main__":
    main()
