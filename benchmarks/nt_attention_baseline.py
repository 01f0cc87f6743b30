"""neural-tangents' ``GlobalSelfAttention`` kernels (run with the NT venv's Python), for tests and the benchmark.

    /opt/ntvenv/bin/python nt_attention_baseline.py SPEC.json INPUTS.npy OUT.npz [--repeats R]

SPEC.json: {"cases": [LAYERS, ...]} (several networks, one process: JAX starts once), each LAYERS a
list [[name, {kwargs}], ...] with names ``attention`` (GlobalSelfAttention),
``conv1`` (a per-token Conv(out, (1,))), ``dense``, ``relu``, ``layer_norm``, ``residual_attention``
(x + attention(x)), ``residual_mlp`` (x + conv1 relu conv1), ``global_avg_pool``, ``flatten``.
INPUTS are (N, C, T) (PyTorch layout), transposed to channels-last here. Writes nngp, ntk and the
seconds of the first (compiling) call and the median of the repeats, per case (nngp_0, ntk_0, ...);
prints one JSON line per case.
"""
import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(stax, layers):
    out = []
    for name, kw in layers:
        if name == "attention":
            out.append(stax.GlobalSelfAttention(**kw))
        elif name == "residual_attention":
            out.append(stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.GlobalSelfAttention(**kw)),
                                   stax.FanInSum()))
        elif name == "residual_mlp":
            w = kw["width"]
            block = stax.serial(stax.Conv(w, (1,)), stax.Relu(), stax.Conv(w, (1,)))
            out.append(stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), block), stax.FanInSum()))
        elif name == "conv1":
            out.append(stax.Conv(kw["width"], (1,), W_std=kw.get("W_std", 1.0), b_std=kw.get("b_std")))
        elif name == "dense":
            out.append(stax.Dense(kw["width"], W_std=kw.get("W_std", 1.0), b_std=kw.get("b_std")))
        elif name == "relu":
            out.append(stax.Relu())
        elif name == "layer_norm":
            out.append(stax.LayerNorm(axis=-1))
        elif name == "global_avg_pool":
            out.append(stax.GlobalAvgPool())
        elif name == "flatten":
            out.append(stax.Flatten())
        else:
            raise SystemExit(f"unknown layer {name}")
    return stax.serial(*out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("inputs")
    p.add_argument("out")
    p.add_argument("--repeats", type=int, default=0)
    a = p.parse_args()
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from neural_tangents import stax
    warnings.simplefilter("ignore")
    with open(a.spec) as f:
        cases = json.load(f)["cases"]
    x = jax.numpy.asarray(np.moveaxis(np.load(a.inputs), 1, -1))   # (N, C, T) -> (N, T, C)
    results = {}
    for i, layers in enumerate(cases):
        fn = jax.jit(build(stax, layers)[2], static_argnames=("get",))

        def run():
            out = fn(x, None, ("nngp", "ntk"))
            jax.block_until_ready(out)
            return out

        t0 = time.perf_counter()
        nngp, ntk = run()
        first = time.perf_counter() - t0
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        median = float(np.median(times)) if times else float("nan")
        results.update({f"nngp_{i}": np.asarray(nngp), f"ntk_{i}": np.asarray(ntk), f"first_{i}": first,
                        f"median_{i}": median})
        print(json.dumps({"case": i, "first_s": first, "median_s": median}))
    np.savez(a.out, **results)


if __name__ == "__main__":
    main()
