"""Independent references shared by the tests: direct autograd Jacobians and Monte Carlo kernels."""

import torch


def jacobian_rows(net: torch.nn.Module, x: torch.Tensor, unit: int = 0) -> torch.Tensor:
    """d f_unit(x_i) / d θ for each input row, by plain autograd: shape (n, n_params)."""
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = net(x[i:i + 1])[0, unit]
        grads = torch.autograd.grad(out, params, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, params)]))
    return torch.stack(rows)


def in_shape(x: torch.Tensor):
    """What ``arch.build`` takes for inputs ``x``: d for vectors, (C, L) / (C, H, W) for signals/images."""
    return x.shape[1] if x.ndim == 2 else tuple(x.shape[1:])


def monte_carlo_ntk(arch, x: torch.Tensor, seeds, units: int = 4) -> torch.Tensor:
    """Mean over seeds and output units of the empirical NTK J Jᵀ of finite networks."""
    total = torch.zeros(x.shape[0], x.shape[0], dtype=x.dtype)
    for seed in seeds:
        net = arch.build(in_shape(x), seed=seed)
        for unit in range(units):
            j = jacobian_rows(net, x, unit)
            total += j @ j.T
    return total / (len(seeds) * units)


def monte_carlo_nngp(arch, x: torch.Tensor, seeds) -> torch.Tensor:
    """E[f(x) f(x')] estimated from the many independent output units of wide readouts."""
    total, count = torch.zeros(x.shape[0], x.shape[0], dtype=x.dtype), 0
    with torch.no_grad():
        for seed in seeds:
            f = arch.build(in_shape(x), seed=seed)(x)
            total += f @ f.T
            count += f.shape[1]
    return total / count


def relative_frobenius(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))
