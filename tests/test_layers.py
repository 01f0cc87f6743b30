"""Finite networks built from an architecture: parameterisation, initialisation, validation."""

import math

import pytest
import torch

import ntkprior as ntp

F64 = torch.float64


def test_ntk_parameterised_dense_computes_the_documented_formula():
    arch = ntp.serial(ntp.Dense(7, weight_std=1.5, bias_std=0.3))
    net = arch.build(in_features=4, seed=3)
    layer = net[0]
    x = torch.randn(5, 4, dtype=F64)
    expected = (1.5 / math.sqrt(4)) * x @ layer.weight.T + 0.3 * layer.bias
    torch.testing.assert_close(net(x), expected)


def test_standard_parameterisation_initialises_with_scaled_variance():
    arch = ntp.serial(ntp.Dense(2000, weight_std=2.0, bias_std=0.5, parameterization="standard"))
    layer = arch.build(in_features=400, seed=0)[0]
    # 800 000 weights: the sample std is within 0.5 % of σ_w/sqrt(n_in) = 0.1 with overwhelming probability
    assert float(layer.weight.detach().std()) == pytest.approx(2.0 / math.sqrt(400), rel=5e-3)
    assert float(layer.bias.detach().std()) == pytest.approx(0.5, rel=0.1)  # 2000 biases: ~1.6 % sd
    x = torch.randn(3, 400, dtype=F64)
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)


def test_same_seed_same_network_and_no_bias_when_none():
    arch = ntp.serial(ntp.Dense(5, bias_std=None), ntp.ReLU(), ntp.Dense(1))
    a, b = arch.build(3, seed=11), arch.build(3, seed=11)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a[0].bias is None and a[2].bias is not None
    assert len(list(a.parameters())) == 3
    c = arch.build(3, seed=12)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert a[0].weight.dtype == F64
    assert arch.build(3, dtype=torch.float32)[0].weight.dtype == torch.float32


def test_activation_modules_match_their_functions():
    x = torch.linspace(-3, 3, 13, dtype=F64)
    cases = [(ntp.ReLU(), torch.relu(x)), (ntp.LeakyReLU(0.2), torch.nn.functional.leaky_relu(x, 0.2)),
             (ntp.Abs(), x.abs()), (ntp.Identity(), x), (ntp.Erf(2.0, 0.5, 0.1), 2 * torch.erf(0.5 * x) + 0.1),
             (ntp.Tanh(), torch.tanh(x)), (ntp.Gelu(), torch.nn.functional.gelu(x)), (ntp.Sin(), torch.sin(x))]
    for layer, expected in cases:
        torch.testing.assert_close(ntp.serial(layer).build(1)(x[:, None])[:, 0], expected)


def test_named_quadrature_derivatives_match_autograd():
    x = torch.linspace(-3, 3, 41, dtype=F64)
    from ntkprior.kernels import derivative
    for layer in (ntp.Tanh(), ntp.Sigmoid(), ntp.Softplus(), ntp.SiLU(), ntp.Sin(), ntp.Gelu()):
        torch.testing.assert_close(layer.derivative(x), derivative(layer.fn)(x))


def test_with_width_changes_hidden_layers_only():
    arch = ntp.serial(ntp.Dense(512, 1.5, 0.05), ntp.ReLU(), ntp.Dense(512, 1.5, 0.05), ntp.ReLU(),
                      ntp.Dense(3, 1.5, 0.05))
    narrow = arch.with_width(16)
    assert [d.out_features for d in narrow.dense_layers] == [16, 16, 3]
    assert narrow.out_features == 3
    assert str(narrow).startswith("dense(16, weight_std=1.5, bias_std=0.05) relu")
    with pytest.raises(ValueError, match="width: must be a positive integer"):
        arch.with_width(0)


def test_layer_arguments_are_validated():
    with pytest.raises(ValueError, match="Dense: out_features must be a positive integer"):
        ntp.Dense(0)
    with pytest.raises(ValueError, match="Dense: weight_std must be >= 0"):
        ntp.Dense(3, weight_std=-1.0)
    with pytest.raises(ValueError, match="Dense: bias_std must be a finite number"):
        ntp.Dense(3, bias_std=float("nan"))
    with pytest.raises(ValueError, match="parameterization must be one of"):
        ntp.Dense(3, parameterization="mup")
    with pytest.raises(ValueError, match="Elementwise: fn must return a tensor of the same shape"):
        ntp.Elementwise(lambda x: x.sum())
    with pytest.raises(ValueError, match="Elementwise: fn must be a callable"):
        ntp.Elementwise(3)


def test_serial_rejects_sequences_that_cannot_work():
    with pytest.raises(ValueError, match="layers: an architecture needs at least one layer"):
        ntp.serial()
    with pytest.raises(ValueError, match=r"layers\[1\]: got the class ReLU; instantiate it: ReLU\(\)"):
        ntp.serial(ntp.Dense(3), ntp.ReLU)
    with pytest.raises(ValueError, match=r"layers\[0\]: expected a layer"):
        ntp.serial(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="in_features: must be a positive integer"):
        ntp.serial(ntp.Dense(3)).build(0)
    # an activation first acts on the deterministic inputs, not on Gaussian pre-activations: the
    # arc-cosine map does not describe it, so the kernel refuses it (issue #17); the network still builds
    with pytest.raises(ValueError, match=r"layer 0 \(relu\): .* raw inputs"):
        ntp.serial(ntp.ReLU(), ntp.Dense(2)).kernel(torch.randn(4, 3, dtype=F64))
    assert ntp.serial(ntp.ReLU(), ntp.Dense(2)).build(3)(torch.randn(4, 3, dtype=F64)).shape == (4, 2)


def test_nested_serials_flatten_and_compare_equal():
    block = ntp.serial(ntp.Dense(8), ntp.ReLU())
    arch = ntp.serial(block, block, ntp.Dense(1))
    assert len(arch.layers) == 5
    assert arch == ntp.serial(ntp.Dense(8), ntp.ReLU(), ntp.Dense(8), ntp.ReLU(), ntp.Dense(1))
