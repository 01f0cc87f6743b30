"""The empirical NTK's cached plan and verification, and that the user's module is left untouched."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from ntkprior.kernels import empirical as em
from ntkprior.kernels.empirical import empirical_ntk

F64 = torch.float64
# torch scripts its forward-mode decompositions on the first jvp of a process (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _snapshot(model: nn.Module) -> dict:
    """Everything a call could change: attributes, hooks, flags, values, gradients, modes."""
    snap = {}
    for name, m in model.named_modules():
        snap[name] = {
            "dict": sorted(m.__dict__),
            "hooks": [len(h) for h in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                                       m._backward_pre_hooks, m._forward_hooks_with_kwargs,
                                       m._state_dict_hooks, m._load_state_dict_pre_hooks)],
            "training": m.training,
        }
    snap["params"] = {n: (p.detach().clone(), p.requires_grad, p.grad) for n, p in model.named_parameters()}
    snap["buffers"] = {n: b.clone() for n, b in model.named_buffers()}
    return snap


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "params":
            for n, (value, flag, grad) in a[key].items():
                v2, f2, g2 = b[key][n]
                assert torch.equal(value, v2) and flag == f2 and (grad is None) == (g2 is None), n
        elif key == "buffers":
            for n in a[key]:
                assert torch.equal(a[key][n], b[key][n]), n
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntk-vp"])
def test_empirical_ntk_leaves_the_module_exactly_as_it_found_it(method):
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 2)).double()
    model.eval()
    model[0].weight.requires_grad_(False)                 # a frozen layer stays frozen
    model[3].bias.grad = None
    x = torch.randn(6, 5, dtype=F64)
    before = _snapshot(model)
    empirical_ntk(model, x, method=method)
    empirical_ntk(model, x, x[:2], method=method, output="full")
    _assert_same(before, _snapshot(model))
    assert all(p.grad is None for p in model.parameters())


def test_the_verification_runs_once_per_model_and_structure(monkeypatch):
    model, x = _mlp(), torch.randn(8, 5, dtype=F64)
    calls = []
    real = em._verified
    monkeypatch.setattr(em, "_verified", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(em, "_PLAN_CACHE", {})
    first = empirical_ntk(model, x, method="structured")
    with torch.no_grad():
        model[0].weight.mul_(1.5)                         # new values, same structure: no new check
    second = empirical_ntk(model, x[:5], method="structured")
    assert len(calls) == 1
    reference = empirical_ntk(model, x[:5], method="jacobian")
    torch.testing.assert_close(second, reference, rtol=1e-10, atol=0)
    assert not torch.equal(first[:5, :5], second)
    model.append(nn.Tanh())                               # a new structure is verified again
    empirical_ntk(model, x, method="structured")
    assert len(calls) == 2


def test_the_probe_runs_once_per_model_structure_and_input_shape(monkeypatch):
    model, x = _mlp(), torch.randn(8, 5, dtype=F64)
    forwards = []
    real = em._Problem._forward_named
    monkeypatch.setattr(em._Problem, "_forward_named", lambda self, *a, **kw: forwards.append(1) or real(self, *a, **kw))
    monkeypatch.setattr(em, "_PROBED", {})
    empirical_ntk(model, x)
    probed = len(forwards)
    assert probed == 2                                    # the measured forward and the repeat
    empirical_ntk(model, x[:5], x[5:], output="full")
    empirical_ntk(model, x, method="jacobian")
    assert len(forwards) == probed                        # same model, structure and input shape
    empirical_ntk(model, x[:, :4] @ torch.ones(4, 5, dtype=F64))
    assert len(forwards) == probed
    model.append(nn.Tanh())                               # a new structure is probed again
    empirical_ntk(model, x)
    assert len(forwards) == 2 * probed


def test_the_probe_cache_keeps_every_check(monkeypatch):
    monkeypatch.setattr(em, "_PROBED", {})
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.Linear(4, 1)).double().eval()
    x = torch.randn(4, 5, dtype=F64)
    empirical_ntk(model, x)
    model.train()                                         # the mode is part of the structure
    with pytest.raises(ValueError, match=r"Dropout.*model\.eval\(\)"):
        empirical_ntk(model, x)
    class Centred(nn.Module):                             # subtracts the batch mean
        def forward(self, z):
            return z - z.mean(0)

    centred = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), Centred(), nn.Linear(4, 1)).double().eval()
    empirical_ntk(centred, x[:1])                         # one example cannot show batch dependence ...
    with pytest.raises(ValueError, match="depends on the other examples"):
        empirical_ntk(centred, x)                         # ... so it is not cached: this batch is checked
    with pytest.raises(ValueError, match="x1: the model could not be applied"):
        empirical_ntk(model.eval(), torch.randn(4, 6, dtype=F64))


def test_a_cached_plan_is_not_reused_for_a_model_that_uses_a_layer_differently(monkeypatch):
    # Same module types and shapes, but the second model scales the Linear's output in forward:
    # the structured path would be wrong for it, so its own verification must run and reject it.
    class Scaled(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.fc, self.scale = nn.Linear(5, 1).double(), scale

        def forward(self, x):
            return self.fc(x) * self.scale if self.scale != 1 else self.fc(x)

    monkeypatch.setattr(em, "_PLAN_CACHE", {})
    x = torch.randn(4, 5, dtype=F64)
    plain, scaled = Scaled(1), Scaled(3)
    empirical_ntk(plain, x)
    torch.testing.assert_close(empirical_ntk(scaled, x), empirical_ntk(scaled, x, method="jacobian"),
                               rtol=1e-10, atol=0)


def test_the_structured_path_does_not_import_torch_dynamo():
    # torch.func's first use imports torch._dynamo (801 modules, 1.6-2.8 s): the structured path of
    # a model whose layers are all supported must not need it. Checked in a fresh process.
    code = ("import sys, torch\nfrom torch import nn\nfrom ntkprior.kernels.empirical import empirical_ntk\n"
            "m = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)).double()\n"
            "empirical_ntk(m, torch.randn(6, 5, dtype=torch.float64))\n"
            "print(any(k.startswith('torch._dynamo') for k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=True)
    assert out.stdout.strip() == "False"
