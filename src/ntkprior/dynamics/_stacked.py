"""Ensembles of ntkprior's own networks as stacked parameters, with a hand-written backward pass.

``arch.build`` makes a ``torch.nn.Sequential`` of ``DenseModule`` (``z = s_w · h Wᵀ + s_b · b``)
and ``ElementwiseModule`` (``h = φ(z)``). For E such networks with parameters stacked along a
leading axis, one training step is a few batched matrix products per layer. Activations are kept
feature-major, ``h`` of shape (E, width, n), so that

- the first layer, whose input x (n, d) all members share, is ONE matrix product
  ``(E·width, d) @ (d, n)``, and so is its weight gradient ``(E·width, n) @ (n, d)``;
- the scale s_w rides in the BLAS ``alpha`` and the bias in its ``beta · C`` term, so a Dense
  layer costs one pass over its output;
- the gradients (backpropagation, Rumelhart et al. 1986)::

      G_L = ∂loss/∂z_L (the cotangent)          ∂loss/∂W_l = s_w · G_l h_{l-1}ᵀ
      ∂loss/∂b_l = s_b · Σ_n G_l                G_{l-1} = s_w · W_lᵀ G_l ⊙ φ'(z_{l-1})

  are written into buffers allocated once (``Workspace``), not by autograd.

Why by hand: autograd allocates every temporary afresh each step; for an ensemble those are
megabytes, which glibc maps and unmaps (page faults on every step), and autograd keeps extra
copies. Preallocated buffers and fused scales made one step of 256 width-512 networks about 3x
faster on these CPUs (benchmarks/bench_training.py). The gradients equal autograd's to round-off
(tests/test_training.py).
"""

from __future__ import annotations

import torch

from ntkprior.arch.layers import DenseModule, ElementwiseModule


def dense_plan(model: torch.nn.Module) -> list | None:
    """ntkprior's own networks (a Sequential of DenseModule and ElementwiseModule) as a list of
    layers: the elementwise function for an activation, ``(weight name, bias name or None, s_w,
    s_b)`` for a Dense layer. None for any other model."""
    if type(model) is not torch.nn.Sequential:
        return None
    plan = []
    for name, m in model.named_children():
        if type(m) is DenseModule:
            plan.append((f"{name}.weight", None if m.bias is None else f"{name}.bias", m.weight_scale, m.bias_scale))
        elif type(m) is ElementwiseModule:
            plan.append(m.fn)
        else:
            return None
    return plan


class Workspace:
    """Tensors reused from step to step, created on first use; the layer inputs of the last
    ``forward`` (``inputs[i]`` is what layer i received), for ``backward``."""

    def __init__(self):
        self._tensors: dict = {}
        self.inputs: list[torch.Tensor] = []

    def get(self, key, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        t = self._tensors.get(key)
        if t is None or t.shape != shape:
            t = self._tensors[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t


def _out(workspace: Workspace | None, key, shape: tuple, like: torch.Tensor):
    return None if workspace is None else workspace.get(key, shape, like)


def forward(plan: list, params: dict, x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
    """Outputs (E, n, k) of every member on x (n, d). With a ``workspace`` the layers compute into
    its buffers and their inputs are kept for :func:`backward`; without, the operations are plain torch
    (differentiable by torch.func, as the linearised networks need)."""
    h = x.T.contiguous()                        # (d, n), shared by every member (row-major: faster products)
    if workspace is not None:
        workspace.inputs = []
    for i, layer in enumerate(plan):
        if workspace is not None:
            workspace.inputs.append(h)
        if callable(layer):
            h = torch.clamp_min(h, 0, out=_out(workspace, i, h.shape, h)) if layer is torch.relu else layer(h)
        else:
            h = _dense(layer, params, h, workspace, i)
    return h.transpose(1, 2)


def _dense(layer: tuple, params: dict, h: torch.Tensor, workspace: Workspace | None, i: int) -> torch.Tensor:
    """``s_w · W h + s_b · b`` for stacked W (E, out, in) and h (E, in, n) or shared h (in, n)."""
    weight, bias, s_w, s_b = layer
    w = params[weight]
    e, out_features, in_features = w.shape
    n = h.shape[-1]
    shift = w.new_zeros(()) if bias is None else (s_b * params[bias])[:, :, None]
    beta = 0.0 if bias is None else 1.0
    z = _out(workspace, i, (e, out_features, n), w)
    if h.dim() == 2:                            # shared inputs: one (E·out, in) @ (in, n) product
        flat = None if z is None else z.view(e * out_features, n)
        shift = shift.reshape(-1, 1) if bias is not None else shift
        z = torch.addmm(shift, w.reshape(e * out_features, in_features), h, beta=beta, alpha=s_w,
                        out=flat).view(e, out_features, n)
    else:
        z = torch.baddbmm(shift, w, h, beta=beta, alpha=s_w, out=z)
    return z


def backward(plan: list, params: dict, workspace: Workspace, cotangent: torch.Tensor) -> None:
    """Set each parameter's ``.grad`` to ``Jᵀ cotangent`` (cotangent (E, n, k) = ∂loss/∂outputs)
    at the parameters and inputs of the last ``forward(..., workspace)``."""
    g = cotangent.transpose(1, 2)               # (E, k, n) = ∂loss/∂z_L
    for i in reversed(range(len(plan))):
        layer, h = plan[i], workspace.inputs[i]
        if callable(layer):
            g = _activation_backward(layer, h, g, workspace, ("g", i))
            continue
        weight, bias, s_w, s_b = layer
        w = params[weight]
        _weight_grad(w, g, h, s_w)
        if bias is not None:
            grad = _grad_buffer(params[bias])
            torch.sum(g, dim=2, out=grad)
            grad.mul_(s_b)
        if i > 0:
            g = _input_grad(w, g, s_w, workspace.get(("g", i), (w.shape[0], w.shape[2], g.shape[2]), g))


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


def _weight_grad(w: torch.Tensor, g: torch.Tensor, h: torch.Tensor, s_w: float) -> None:
    """``.grad = s_w · G hᵀ`` for G (E, out, n) and h (E, in, n) or shared (in, n)."""
    grad = _grad_buffer(w)
    e, out_features, in_features = w.shape
    zero = g.new_zeros(())
    if h.dim() == 2:
        flat = grad.view(e * out_features, in_features)
        torch.addmm(zero, g.reshape(e * out_features, -1), h.T, beta=0.0, alpha=s_w, out=flat)
    else:
        torch.baddbmm(zero, g, h.transpose(1, 2), beta=0.0, alpha=s_w, out=grad)


def _input_grad(w: torch.Tensor, g: torch.Tensor, s_w: float, out: torch.Tensor) -> torch.Tensor:
    """``s_w · Wᵀ G`` (E, in, n); for one output unit an outer product, which a broadcast multiply
    does 4x faster than a batched matrix product of inner dimension 1."""
    if w.shape[1] == 1:
        return torch.mul(w.transpose(1, 2), g * s_w, out=out)
    return torch.baddbmm(g.new_zeros(()), w.transpose(1, 2), g, beta=0.0, alpha=s_w, out=out)


def _activation_backward(fn, z: torch.Tensor, g: torch.Tensor, workspace: Workspace, key) -> torch.Tensor:
    """``g ⊙ φ'(z)``: into the buffer ``key`` for ReLU, by autograd through φ alone otherwise."""
    if fn is torch.relu:
        out = workspace.get(key, z.shape, z)
        return torch.ops.aten.threshold_backward.grad_input(g, z, 0, grad_input=out)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(fn(z), z, g)[0]
