"""The CUDA code paths, checked against the CPU and timed: a short script for a machine with a GPU.

    python benchmarks/check_cuda.py                 # on a machine with a GPU (about 2 minutes)
    python benchmarks/check_cuda.py --device cpu    # a dry run of the same checks on the CPU

CI machines have no GPU, so the unit tests run on the CPU only; this script is what checks that
every function that accepts CUDA tensors or modules gives the CPU's answer there. Each check prints
PASS/FAIL with the largest relative difference from the CPU result (float64 on both sides, so the
differences are round-off: the tolerance is 1e-9 relative, which allows for different summation
orders in cuBLAS and MKL over a few thousand terms), and a few timings (GPU vs CPU, same process).
Exit status 1 when any check fails.

1. analytic kernels ``arch.kernel`` (closed-form ReLU/erf and Gauss–Hermite tanh) on CUDA inputs;
2. ``empirical_ntk`` of an ntkprior MLP and a torch CNN on a CUDA module, every method and output;
3. ``train`` on ``device="cuda"``: ensembles (gd, sgd with momentum, linearised, kernel tracking);
4. ``SymmetricPSD`` (Cholesky, solve, log-determinant, eigh) of a CUDA matrix;
5. ``KernelPrior``, ``predict`` (every kind), ``eigenmodes``, ``linearized_dynamics`` on CUDA inputs;
6. timings: analytic kernel n = 8192, empirical NTK of an MLP, the 256 x width-512 ensemble.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings

import torch

import ntkprior as ntp
from ntkprior.kernels.empirical import empirical_ntk
from ntkprior.prior.linalg import SymmetricPSD
from ntkprior.dynamics.training import train

RTOL = 1e-9
FAILURES: list[str] = []


def report(name: str, gpu, cpu, rtol: float = RTOL) -> None:
    """Print PASS/FAIL for ``gpu`` against ``cpu`` (tensors, or tuples of tensors)."""
    pairs = zip(gpu, cpu) if isinstance(gpu, (tuple, list)) else [(gpu, cpu)]
    worst = 0.0
    for a, b in pairs:
        a, b = torch.as_tensor(a).double().cpu(), torch.as_tensor(b).double().cpu()
        scale = float(b.abs().max()) or 1.0
        worst = max(worst, float((a - b).abs().max()) / scale)
    ok = worst <= rtol
    if not ok:
        FAILURES.append(name)
    print(f"  {'PASS' if ok else 'FAIL'}  {name:62s} max rel diff {worst:.1e} (tol {rtol:.0e})", flush=True)


def timed(fn, device: str, repeats: int = 3) -> float:
    """Fastest of ``repeats`` calls, synchronising the device."""
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def mlp(width: int = 64, activation=ntp.ReLU):
    return ntp.serial(ntp.Dense(width, weight_std=1.5, bias_std=0.05), activation(),
                      ntp.Dense(width, weight_std=1.5, bias_std=0.05), activation(), ntp.Dense(3))


def check_analytic(device: str) -> None:
    print("1. analytic kernels on CUDA inputs")
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(300, 5, generator=g, dtype=torch.float64), torch.randn(70, 5, generator=g, dtype=torch.float64)
    for act in (ntp.ReLU, ntp.Erf, ntp.Tanh):
        arch = mlp(activation=act)
        warnings.filterwarnings("ignore", message="Gauss-Hermite")     # the same warning on both devices
        for label, args in (("symmetric", (x1,)), ("cross", (x1, x2))):
            cpu = arch.kernel(*args)
            gpu = arch.kernel(*(a.to(device) for a in args))
            if gpu.ntk.device.type != device:
                FAILURES.append(f"kernel on {device}")
                print(f"  FAIL  kernel result on {gpu.ntk.device}, expected {device}")
            report(f"{act.__name__} {label} nngp/ntk", (gpu.nngp, gpu.ntk), (cpu.nngp, cpu.ntk))
        cpu = arch.kernel(x1, diagonal=True)
        gpu = arch.kernel(x1.to(device), diagonal=True)
        report(f"{act.__name__} diagonal", (gpu.nngp, gpu.ntk), (cpu.nngp, cpu.ntk))
    # the compiled whole-MLP tile (Triton on a GPU; NTKPRIOR_FUSED): against the CPU's eager layers
    from ntkprior.kernels import fused
    for act in (ntp.ReLU, ntp.Erf):
        arch, x = mlp(activation=act), torch.randn(400, 5, generator=g, dtype=torch.float64)
        cpu = arch.kernel(x)
        fused.set_fused(True)
        try:
            gpu = arch.kernel(x.to(device))
        finally:
            fused.set_fused(None)
        if any(f.failed for f in fused._CHAINS.values()):
            FAILURES.append("fused chain compile")
            print("  FAIL  the fused chain did not compile (eager fallback ran)")
        report(f"{act.__name__} fused chain nngp/ntk", (gpu.nngp, gpu.ntk), (cpu.nngp, cpu.ntk))


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3)
        self.fc = torch.nn.Linear(8 * 6 * 6, 2)

    def forward(self, x):
        h = torch.tanh(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


def check_empirical(device: str) -> None:
    print("2. empirical NTK of CUDA modules")
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    net = mlp().build(5, seed=0)
    torch.manual_seed(0)
    cnn = SmallCNN().double().eval()
    images = torch.randn(12, 1, 8, 8, generator=g, dtype=torch.float64)
    cases = [("mlp", net, (x1, x2)), ("cnn", cnn, (images, images[:5]))]
    for name, model, (a, b) in cases:
        on_gpu = copy.deepcopy(model).to(device)
        for method in ("structured", "jacobian", "ntk-vp"):
            for output in ("trace", "mean", "full"):
                cpu = empirical_ntk(model, a, b, method=method, output=output)
                gpu = empirical_ntk(on_gpu, a.to(device), b.to(device), method=method, output=output)
                report(f"{name} method={method} output={output}", gpu, cpu)
            cpu = empirical_ntk(model, a, method=method, output="diagonal")
            gpu = empirical_ntk(on_gpu, a.to(device), method=method, output="diagonal")
            report(f"{name} method={method} output=diagonal", gpu, cpu)


def check_training(device: str) -> None:
    print("3. train on the device")
    g = torch.Generator().manual_seed(2)
    x, xt = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :2])
    arch = ntp.serial(ntp.Dense(32, weight_std=1.5, bias_std=0.05), ntp.Erf(), ntp.Dense(2, weight_std=1.5, bias_std=0.05))
    options = [("gd ensemble 8", dict(ensemble=8)),
               ("sgd batch 4 momentum 0.9", dict(ensemble=3, optimizer="sgd", batch_size=4, momentum=0.9)),
               ("linearised ensemble 4", dict(ensemble=4, linearized=True)),
               ("kernel tracking", dict(ensemble=2, track_kernel=True))]
    for label, kw in options:
        kw.setdefault("track_kernel", False)
        cpu = train(arch, x, y, xt, 50, 0.1, record=[0, 10, 50], **kw)
        gpu = train(arch, x, y, xt, 50, 0.1, record=[0, 10, 50], device=device, **kw)
        fields = ("train_outputs", "test_outputs", "loss", "param_change")
        fields += ("kernel_change",) if kw["track_kernel"] else ()
        report(f"train {label}", [getattr(gpu, f) for f in fields], [getattr(cpu, f) for f in fields], 1e-7)


def check_linalg(device: str) -> None:
    print("4. SymmetricPSD of a CUDA matrix")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64)
    k = mlp().kernel(x).ntk
    b = torch.randn(400, 2, generator=g, dtype=torch.float64)
    cpu, gpu = SymmetricPSD(k, diag_reg=1e-6), SymmetricPSD(k.to(device), diag_reg=1e-6)
    report("solve", gpu.solve(b.to(device)), cpu.solve(b), 1e-7)
    report("logdet", torch.tensor(gpu.logdet()), torch.tensor(cpu.logdet()), 1e-9)
    report("eigenvalues", gpu.eigh()[0], cpu.eigh()[0], 1e-8)
    report("quad_form", torch.tensor(gpu.quad_form(b[:, 0].to(device))), torch.tensor(cpu.quad_form(b[:, 0])), 1e-7)


def check_prior(device: str) -> None:
    print("5. prior, predict, eigenmodes and closed-form dynamics on CUDA inputs")
    g = torch.Generator().manual_seed(5)
    x, xt = torch.randn(60, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :2])
    arch = mlp()
    on = [t.to(device) for t in (x, y, xt)]
    cpu, gpu = ntp.KernelPrior.from_arch(arch, x), ntp.KernelPrior.from_arch(arch, on[0])
    report("KernelPrior log_prob, rkhs_norm", (torch.tensor(gpu.log_prob(on[1])), torch.tensor(gpu.rkhs_norm(on[1]))),
           (torch.tensor(cpu.log_prob(y)), torch.tensor(cpu.rkhs_norm(y))), 1e-8)
    for kind in ("nngp", "ntkgp", "ntk", "gd-ensemble", "readout"):
        t = None if kind in ("nngp", "ntkgp") else [10.0, 1e4]
        a = ntp.predict(arch, x, y, xt, kind, t=t, learning_rate=0.5)
        b = ntp.predict(arch, *on, kind, t=t, learning_rate=0.5)
        fields = [f for f in ("mean", "cov") if getattr(a, f) is not None]
        report(f"predict kind={kind}", [getattr(b, f) for f in fields], [getattr(a, f) for f in fields], 1e-7)
    for method in ("dense", "lanczos"):
        a, b = ntp.eigenmodes(arch, x, k=5, method=method), ntp.eigenmodes(arch, on[0], k=5, method=method)
        report(f"eigenmodes method={method} values, vectors", (b.values, b.vectors), (a.values, a.vectors), 1e-7)
    times = [1.0, 100.0, float("inf")]
    a = ntp.linearized_dynamics(arch, x, y, xt, learning_rate=0.5)
    b = ntp.linearized_dynamics(arch, *on, learning_rate=0.5)
    report("linearized_dynamics outputs", (b.at(times).train_outputs, b.at(times).test_outputs),
           (a.at(times).train_outputs, a.at(times).test_outputs), 1e-7)
    report("linearized_dynamics decay, mode_convergence", (b.decay(times[:2]), b.mode_convergence(times[:2])),
           (a.decay(times[:2]), a.mode_convergence(times[:2])), 1e-9)


def timings(device: str) -> None:
    print("6. timings (fastest of 3; CPU with this process's threads: "
          f"{torch.get_num_threads()})")
    g = torch.Generator().manual_seed(4)
    arch = ntp.serial(*[ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU()] * 3, ntp.Dense(1))
    x = torch.randn(8192, 10, generator=g, dtype=torch.float64)
    t_gpu = timed(lambda: arch.kernel(x.to(device)), device)
    t_cpu = timed(lambda: arch.kernel(x[:2048]), "cpu") * 16      # n² scaling, said below
    print(f"  analytic depth-3 ReLU kernel n=8192 float64: {device} {t_gpu:.3f} s; "
          f"cpu {t_cpu:.1f} s (timed n=2048, x16)")
    net = mlp(512).build(10, seed=0, dtype=torch.float32)
    xs = x[:4096].float()
    on_gpu = net.to(device)
    t_gpu = timed(lambda: empirical_ntk(on_gpu, xs.to(device), output="mean"), device)
    net_cpu = mlp(512).build(10, seed=0, dtype=torch.float32)
    t_cpu = timed(lambda: empirical_ntk(net_cpu, xs[:1024], output="mean"), "cpu", 1) * 16
    print(f"  empirical NTK, MLP width 512, n=4096 float32: {device} {t_gpu:.3f} s; "
          f"cpu {t_cpu:.1f} s (timed n=1024, x16)")
    xe = torch.randn(64, 8, generator=g)
    ye = torch.sin(xe[:, :1])
    one = ntp.serial(ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU(), ntp.Dense(1, weight_std=1.5, bias_std=0.05))
    t_gpu = timed(lambda: train(one, xe, ye, None, 1000, 0.05, ensemble=256, record=[0, 1000],
                                track_kernel=False, dtype=torch.float32, device=device), device, 1)
    print(f"  ensemble 256 x dense(512) relu dense(1), 64 points, 1000 steps float32: {device} {t_gpu:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--skip-timings", action="store_true")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a dry run")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {args.device} ({name})")
    check_analytic(args.device)
    check_empirical(args.device)
    check_training(args.device)
    check_linalg(args.device)
    check_prior(args.device)
    if not args.skip_timings:
        timings(args.device)
    print(f"{len(FAILURES)} failure(s)" + (": " + ", ".join(FAILURES) if FAILURES else ""))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
