"""ntp.from_torch: the analytic kernel of a user's torch module against Monte Carlo over copies
initialised by torch itself (uniform weights), and the errors for what has no closed form."""

import copy

import pytest
import torch
from torch import nn

import ntkprior as ntp
from reference import jacobian_rows, relative_frobenius

F64 = torch.float64


def torch_copies(module: nn.Module, seeds):
    """Fresh copies of ``module`` initialised by torch's own ``reset_parameters`` under each seed."""
    for seed in seeds:
        torch.manual_seed(seed)
        net = copy.deepcopy(module).double()
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        yield net


def mc_ntk(module, x, seeds, units=2):
    total = torch.zeros(len(x), len(x), dtype=F64)
    for net in torch_copies(module, seeds):
        for unit in range(units):
            j = jacobian_rows(net, x, unit)
            total += j @ j.T
    return total / (len(seeds) * units)


def mc_nngp(module, x, seeds):
    total, count = torch.zeros(len(x), len(x), dtype=F64), 0
    with torch.no_grad():
        for net in torch_copies(module, seeds):
            f = net(x).reshape(len(x), -1)
            total += f @ f.T
            count += f.shape[1]
    return total / count


def mlp(d, width, out):
    return nn.Sequential(nn.Linear(d, width), ntp.Residual(nn.Sequential(nn.ReLU(), nn.Linear(width, width))),
                         nn.Tanh(), nn.Dropout(0.1), nn.Linear(width, out)).eval()


def cnn(width, out):
    return nn.Sequential(nn.Conv1d(2, width, 3, padding=1), nn.GELU(),
                         nn.Sequential(nn.Conv1d(width, width, 3, stride=2), nn.ReLU()),
                         nn.AvgPool1d(2), nn.Flatten(), nn.Linear(width * 2, out)).eval()


def cnn2d(width, out):
    return nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 2, padding_mode="zeros"),
                         nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, out)).eval()


CASES = [(lambda w, k: mlp(16, w, k), 16, lambda g: torch.randn(5, 16, dtype=F64, generator=g)),
         (cnn, (2, 9), lambda g: torch.randn(5, 2, 9, dtype=F64, generator=g)),
         (cnn2d, (2, 4, 4), lambda g: torch.randn(4, 2, 4, 4, dtype=F64, generator=g))]


@pytest.mark.slow
@pytest.mark.parametrize("make, shape, inputs", CASES)
def test_kernel_matches_monte_carlo_over_torch_initialised_copies(make, shape, inputs):
    # Width 256, 12 copies x 2 units (NTK, autograd Jacobians) and 24 copies x 128 readouts
    # (NNGP): the same budget as the Gaussian Monte Carlo tests (test_conv.py), measured <= 0.05
    # here. d = 16 / 18 / 32 input numbers per first-layer unit, where the uniform first layer's
    # non-Gaussianity is below that (docs/architectures.md: 0.25 % at d = 16, 1.4 % at d = 2).
    x = inputs(torch.Generator().manual_seed(0))
    arch = ntp.from_torch(make(256, 2), shape)
    exact = arch.kernel(x)
    assert relative_frobenius(mc_ntk(make(256, 2), x, range(12)), exact.ntk) < 0.1
    assert relative_frobenius(mc_nngp(make(256, 128), x, range(24)), exact.nngp) < 0.1


def test_reads_layers_at_the_module_widths_with_torch_init_and_prints_a_spec():
    arch = ntp.from_torch(cnn(8, 3), (2, 9))
    assert ntp.parse_spec(str(arch)) == arch
    conv = arch.layers[0]
    assert (conv.out_channels, conv.kernel_size, conv.padding, conv.parameterization) == (8, 3, 1, "standard")
    assert conv.weight_std == pytest.approx(3 ** -0.5) and conv.bias_std == pytest.approx((3 * 2 * 3) ** -0.5)
    # the finite network that arch builds has the same shapes as the torch module
    x = torch.randn(4, 2, 9, dtype=F64)
    assert arch.build((2, 9))(x).shape == cnn(8, 3).double()(x).shape
    assert str(ntp.from_torch(mlp(4, 8, 1), 4)).count("residual{relu dense(8") == 1


def test_from_parameters_estimates_the_stds_with_their_uncertainty():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(50, 400), nn.ReLU(), nn.Linear(400, 1))
    with torch.no_grad():
        module[0].weight.normal_(0.0, 2.0 / 50 ** 0.5)   # σ_w = 2 by construction
    arch = ntp.from_torch(module, 50, from_parameters=True)
    w, w_se, b, b_se = arch.estimates["0"]
    assert abs(w - 2.0) < 4 * w_se and w_se < 0.01
    assert abs(b - (1 / 150) ** 0.5) < 4 * b_se
    assert arch.layers[0].weight_std == w


@pytest.mark.parametrize("module, shape, match", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2))), (3, 8, 8),
     r"^2\.1: nn\.MaxPool2d has no closed-form kernel; use ntp\.empirical_ntk\(module, x\) for this model$"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 3, r"^1: nn\.BatchNorm1d has no closed-form kernel"),
    (nn.Sequential(nn.Linear(3, 4)), 5, r"0: nn\.Linear expects 3 features but receives 5"),
    (nn.Sequential(nn.Conv1d(2, 4, 3, dilation=2)), (2, 9), r"0: nn\.Conv1d with groups or dilation"),
    (nn.Sequential(nn.Conv1d(2, 4, 3), nn.Linear(4, 1)), (2, 9), r"1 \(dense.*\): its input is a signal"),
    (nn.Sequential(nn.Linear(3, 4), nn.AdaptiveAvgPool1d(2)), 3, r"1: nn\.AdaptiveAvgPool1d\(2\)"),
    (nn.Sequential(nn.Conv1d(2, 4, 3), nn.LayerNorm(7)), (2, 9), r"1: nn\.LayerNorm\(7,\) on per-sample shape"),
    (nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh")), 3, r"1: nn\.GELU has no closed-form kernel"),
])
def test_unsupported_modules_are_named_with_their_path(module, shape, match):
    with pytest.raises(ValueError, match=match):
        ntp.from_torch(module, shape)
