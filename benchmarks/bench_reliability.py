"""What the reliability checks of issue #17 cost, each against the same work without it, side by side.

    python benchmarks/bench_reliability.py [--n 6000] [--block 1000] [--dup-n 4000] [--rounds 5]

1. Tile checksums: one streamed product ``K @ v`` over a stored kernel (n × n, tiles of --block,
   read from disk through the page cache) by a freshly opened StoredKernel, which verifies the
   CRC-32 of every tile, against the same pass with verification switched off; and a later pass
   (tiles already verified) against the same. Interleaved rounds; the minimum.
2. Duplicate detection before a solve without a ridge: ``SymmetricPSD.duplicate_rows`` (an O(n²)
   pass over the kernel) against the Cholesky factorisation it precedes, at n = --dup-n.
3. Atomic writes: ``np.savez`` of a 2 × n² float64 result to a temporary name and a rename,
   against ``np.savez`` straight to the final name.

One torch thread (FACTS.md: on this shared machine, more threads only add noise). Ratios are what
to read; absolute seconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ntkprior as ntp  # noqa: E402
from ntkprior.files import atomic_file  # noqa: E402
from ntkprior.prior.linalg import SymmetricPSD  # noqa: E402


def interleaved(fns: dict, rounds: int) -> dict:
    """Minimum seconds of each function, the functions run in turn within every round."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()                                     # warm-up (page cache, allocator)
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def checksums(arch, n: int, block: int, rounds: int, where: Path) -> None:
    from ntkprior.scale.distributed import kernel_matrix, local_cluster
    from dask.distributed import Client
    x = torch.randn(n, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with local_cluster(2, dashboard_address=":0") as cluster, Client(cluster) as client:
        kernel_matrix(arch, x, store=where / "K.zarr", block=block, client=client)
    from ntkprior.scale.stored import StoredKernel
    v = np.random.default_rng(0).standard_normal((n, 1))

    def first_pass(verify: bool):
        stored = StoredKernel(where / "K.zarr", max_memory=1)
        if not verify:
            stored._checksums = None             # the same reads, no CRC-32
        stored._product(v, False)

    again = StoredKernel(where / "K.zarr", max_memory=1)
    again._product(v, False)                     # every tile verified once
    plain = StoredKernel(where / "K.zarr", max_memory=1)
    plain._checksums = None
    t = interleaved({"first verified": lambda: first_pass(True), "first unverified": lambda: first_pass(False),
                     "later verified": lambda: again._product(v, False),
                     "later unverified": lambda: plain._product(v, False)}, rounds)
    print(f"1. streamed K @ v, n = {n}, block = {block} ({n * n * 8 / 2e9:.2f} GB of upper tiles, page-cached): "
          f"first pass of a fresh StoredKernel verified {t['first verified']:.3f} s / unverified "
          f"{t['first unverified']:.3f} s (ratio {t['first verified'] / t['first unverified']:.3f}); later passes "
          f"{t['later verified']:.3f} s / {t['later unverified']:.3f} s "
          f"(ratio {t['later verified'] / t['later unverified']:.3f})")


def duplicates(arch, n: int, rounds: int) -> None:
    x = torch.randn(n, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    k = arch.kernel(x).ntk

    def detect():
        SymmetricPSD(k).duplicate_rows()

    def factorise():
        SymmetricPSD(k).cholesky()

    def construct():
        SymmetricPSD(k)

    t = interleaved({"construct": construct, "detect": detect, "factorise": factorise}, rounds)
    d, c = t["detect"] - t["construct"], t["factorise"] - t["construct"]
    print(f"2. duplicate rows at n = {n}: {d:.3f} s, Cholesky {c:.3f} s (each beyond validation "
          f"{t['construct']:.3f} s); detection / Cholesky = {d / c:.3f}")


def atomic(n: int, rounds: int, where: Path) -> None:
    a = np.random.default_rng(2).standard_normal((n, n))

    def direct():
        np.savez(where / "direct.npz", nngp=a, ntk=a)

    def renamed():
        with atomic_file(where / "atomic.npz") as tmp:
            np.savez(tmp, nngp=a, ntk=a)

    t = interleaved({"direct": direct, "atomic": renamed}, rounds)
    print(f"3. savez of 2 x {n}² float64 ({2 * a.nbytes / 1e6:.0f} MB): direct {t['direct']:.3f} s, "
          f"temporary name + rename {t['atomic']:.3f} s, ratio {t['atomic'] / t['direct']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--dup-n", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch = ntp.parse_spec("[dense(512, weight_std=1.5, bias_std=0.05) relu]*2 dense(1, weight_std=1.5, "
                          "bias_std=0.05)")
    with tempfile.TemporaryDirectory() as tmp:
        checksums(arch, args.n, args.block, args.rounds, Path(tmp))
        duplicates(arch, args.dup_n, args.rounds)
        atomic(2000, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
