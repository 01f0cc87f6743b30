"""neural-tangents' jitted kernel_fn on the architectures of bench_conv.py (run with the NT venv's Python).

    /opt/ntvenv/bin/python nt_conv_baseline.py CASE INPUTS.npy [--save OUT.npz] [--batch B] [--repeats R]

CASE: gap2d (conv 3x3 SAME relu conv relu GlobalAvgPool dense), flat1d (3 x [conv 5 SAME relu]
Flatten dense), resmlp (dense residual{relu dense} x2 relu dense); W_std 1.4, b_std 0.1, float64.
INPUTS are in PyTorch layout (N, C, *S) and transposed to channels-last here. Prints one JSON line
(first call with compilation, then median / min of the repeats); --save writes nngp and ntk.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def arch(stax, case, width):
    w, b = 1.4, 0.1
    if case == "gap2d":
        return stax.serial(stax.Conv(width, (3, 3), padding="SAME", W_std=w, b_std=b), stax.Relu(),
                           stax.Conv(width, (3, 3), padding="SAME", W_std=w, b_std=b), stax.Relu(),
                           stax.GlobalAvgPool(), stax.Dense(1, W_std=w, b_std=b))
    if case == "flat1d":
        layers = []
        for _ in range(3):
            layers += [stax.Conv(width, (5,), padding="SAME", W_std=w, b_std=b), stax.Relu()]
        return stax.serial(*layers, stax.Flatten(), stax.Dense(1, W_std=w, b_std=b))
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), stax.Dense(width, W_std=w, b_std=b)),
                                                       stax.Identity()), stax.FanInSum())
    return stax.serial(stax.Dense(width, W_std=w, b_std=b), block, block, stax.Relu(), stax.Dense(1, W_std=w, b_std=b))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case")
    p.add_argument("inputs")
    p.add_argument("--save")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax
    x = np.load(a.inputs)
    if x.ndim > 2:
        x = np.moveaxis(x, 1, -1)   # NCHW -> NHWC
    _, _, kernel_fn = arch(stax, a.case, 512)
    fn = jax.jit(kernel_fn, static_argnames=("get",))
    if a.batch:
        fn = nt.batch(fn, batch_size=a.batch, store_on_device=False)
    x = jax.numpy.asarray(x)

    def run():
        out = fn(x, None, ("nngp", "ntk"))
        jax.block_until_ready(out)
        return out

    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats if first < 60 else 0):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    times = sorted(times) or [first]
    if a.save:
        np.savez(a.save, nngp=np.asarray(out[0]), ntk=np.asarray(out[1]))
    print(json.dumps({"case": a.case, "n": int(x.shape[0]), "first_s": first, "median_s": times[len(times) // 2],
                      "min_s": times[0]}))


if __name__ == "__main__":
    main()
