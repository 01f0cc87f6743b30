"""Benchmark: the infinite-width NNGP+NTK of a two-block transformer on 8-token sequences, N = 256.

    python benchmarks/bench_attention.py [--n 256] [--threads 1] [--repeats 2] [--no-nt]

The network (issue 15): a per-token dense layer, then twice [residual softmax self-attention
(4 heads, linear scaling), layer norm, residual per-token MLP, layer norm], global average pool over
the tokens, dense readout; inputs (N, 16, 8), float64. ntkprior runs in a fresh process (its peak
memory is its own); neural-tangents' jitted ``kernel_fn`` of the same network runs
``benchmarks/nt_attention_baseline.py`` in its venv (/opt/ntvenv, or $NTKPRIOR_NT_PYTHON) when
present, at the same thread count (XLA limited to one thread when --threads 1), and both kernels
are compared. Compare the ratio within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

ATTENTION = "self_attention(64, 64, 64, n_heads=4, query_std=1.5)"
BLOCK = f"residual{{{ATTENTION}}} layer_norm residual{{conv(64, 1) relu conv(64, 1)}} layer_norm"
SPEC = f"conv(64, 1) {BLOCK} {BLOCK} global_avg_pool dense(1)"
NT_ATTENTION = dict(n_chan_out=64, n_chan_key=64, n_chan_val=64, n_heads=4, W_query_std=1.5)
NT_BLOCK = [["residual_attention", NT_ATTENTION], ["layer_norm", {}], ["residual_mlp", {"width": 64}],
            ["layer_norm", {}]]
NT_LAYERS = [["conv1", {"width": 64}]] + NT_BLOCK * 2 + [["global_avg_pool", {}], ["dense", {"width": 1}]]
SHAPE = (16, 8)


def inputs(n):
    import numpy as np
    return np.random.default_rng(0).standard_normal((n,) + SHAPE)


def one(n: int, threads: int, repeats: int, save: str | None) -> dict:
    import numpy as np
    import torch
    import ntkprior as ntp
    torch.set_num_threads(threads)
    arch = ntp.parse_spec(SPEC)
    x = torch.from_numpy(inputs(n))
    before = common.current_rss()
    t0 = time.perf_counter()
    k = arch.kernel(x)
    first = time.perf_counter() - t0
    peak = common.peak_rss() - before
    res = common.timed(lambda: arch.kernel(x), repeats) if repeats else {"median_s": first}
    if save:
        np.savez(save, nngp=k.nngp.numpy(), ntk=k.ntk.numpy())
    res.update(n=n, first_s=first, peak_extra_bytes=peak, load=os.getloadavg()[0])
    return res


def fresh(n, threads, repeats, save) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--one", str(n), "--threads", str(threads), "--repeats",
                          str(repeats), "--save", save], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def neural_tangents(n, threads, repeats, workdir: Path) -> dict | None:
    """neural-tangents' jitted kernel_fn on the same inputs (its venv; None when absent)."""
    import numpy as np
    spec, x, out = workdir / "spec.json", workdir / "x.npy", workdir / "nt.npz"
    spec.write_text(json.dumps({"cases": [NT_LAYERS]}))
    np.save(x, inputs(n))
    env = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"} if threads == 1 else {}
    result = common.neural_tangents(str(spec), str(x), str(out), "--repeats", str(repeats),
                                    script=HERE / "nt_attention_baseline.py", timeout=1800, env=env)
    return None if result is None else result | {"path": str(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-nt", action="store_true")
    p.add_argument("--save")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.threads, a.repeats, a.save)))
        return
    print(f"analytic NNGP+NTK of a two-block transformer, float64, {a.threads} thread(s): {SPEC} on (N, 16, 8)")
    with tempfile.TemporaryDirectory() as d:
        ours_path = str(Path(d) / "ours.npz")
        ours = fresh(a.n, a.threads, a.repeats, ours_path)
        line = (f"  N={a.n}: ntkprior {ours['median_s']:.3f} s (first {ours['first_s']:.3f} s, load "
                f"{ours['load']:.1f}), peak +{ours['peak_extra_bytes'] / 1e6:.0f} MB")
        nt = None if a.no_nt else neural_tangents(a.n, a.threads, a.repeats, Path(d))
        if nt is not None:
            import numpy as np
            mine, ref = np.load(ours_path), np.load(nt["path"])
            diff = max(float(np.abs(mine[k] - ref[f"{k}_0"]).max() / np.abs(ref[f"{k}_0"]).max())
                       for k in ("nngp", "ntk"))
            line += (f"; neural-tangents {nt['median_s']:.3f} s (first, compiling, {nt['first_s']:.1f} s): "
                     f"ratio {nt['median_s'] / ours['median_s']:.2f}x; max |difference| / max = {diff:.1e}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
