"""Structured derivatives for the empirical NTK: per-layer Gram products instead of Jacobians.

For a layer ``z_t = s_w · W a_t + s_b · b`` applied at positions ``t`` (one position for a
dense layer on a vector, the patches of a convolution, the tokens of a sequence), the
gradient of an output f_c with respect to W for example i is ``s_w Σ_t g_ict a_itᵀ`` with
``g_ict = ∂f_c(x_i)/∂z_it`` the backprop signal. Its NTK contribution therefore factorises:

    Θ_W(x_i, x_j)_cd = s_w² Σ_{t,u} (a_it · a_ju) (g_ict · g_jdu)
    Θ_b(x_i, x_j)_cd = s_b² Σ_{t,u}            (g_ict · g_jdu)

(Novak, Sohl-Dickstein & Schoenholz 2022, "Fast finite width neural tangent kernel"),
so each layer needs its inputs A (n, groups, T, I) and backprop signals G (n, k, groups, T, O),
collected with forward hooks in one forward pass and k backward passes of a data block. For a
dense layer (T = 1) the term is (s_w² A Aᵀ + s_b²) ⊙ (G Gᵀ) = (Ã Ãᵀ) ⊙ (G Gᵀ) with the augmented
inputs Ã = [s_w A, s_b] (a column of s_b), so each factor is one GEMM.

When T² (I + k O) exceeds k O I (convolutions with few channels) it is cheaper to form
each example's gradients ``s_w Σ_t g_t a_tᵀ`` and ``s_b Σ_t g_t`` (k·O·(I+1) numbers) and
contract those: the "explicit" path. Either way no per-parameter Jacobian of the network is formed.

Supported modules: ``nn.Linear`` (any leading shape), ``nn.Conv1d``, ``nn.Conv2d`` (any
padding, padding mode, stride, dilation and groups), and any module with ``weight``,
``bias``, ``weight_scale`` and ``bias_scale`` that computes
``weight_scale · linear(x, weight) + bias_scale · bias`` (ntkprior's ``DenseModule``).
Whether a module really behaves so inside the model (called through its forward, batch in
the first dimension, parameters not used elsewhere) is verified per layer on a probe batch
against torch.func Jacobians by the caller; modules that fail fall back to Jacobians.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

@dataclass
class Layer:
    """A module handled by the structured path, and which of its parameters are differentiated."""

    name: str
    module: nn.Module
    weight: str | None          # full parameter name, or None when the weight is held fixed
    bias: str | None
    weight_scale: float
    bias_scale: float
    explicit: bool = False      # contract per-example weight gradients instead of Gram products

    @property
    def param_names(self) -> list[str]:
        return [p for p in (self.weight, self.bias) if p is not None]

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, (nn.Conv1d, nn.Conv2d))

    @property
    def groups(self) -> int:
        return self.module.groups if self.is_conv else 1

    def inputs(self, calls: list[torch.Tensor]) -> torch.Tensor:
        """Layer inputs (n, groups, T, I) over all calls: rows of a dense layer, patches of a conv."""
        parts = [self._conv_patches(x) if self.is_conv else x.reshape(x.shape[0], 1, -1, x.shape[-1])
                 for x in calls]
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def gradients(self, a: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
        """Per-example parameter gradients (n, k, D): ``s_w Σ_t g_t a_tᵀ`` and ``s_b Σ_t g_t``."""
        n, k = g.shape[:2]
        grads = []
        if self.weight is not None:
            w = torch.einsum("ncgto,ngti->ncgoi", g, a).reshape(n, k, -1)
            grads.append(w if self.weight_scale == 1 else w.mul_(self.weight_scale))
        if self.bias is not None:
            b = g.sum(dim=3).reshape(n, k, -1)
            grads.append(b if self.bias_scale == 1 else b.mul_(self.bias_scale))
        return grads

    def augmented(self, a: torch.Tensor) -> torch.Tensor:
        """[s_w a, s_b] (n, groups, T, I + 1) for the differentiated parameters (see GramFactors)."""
        if self.bias is None:
            return a if self.weight_scale == 1 else a * self.weight_scale
        if self.weight is None:
            return a.new_full((*a.shape[:3], 1), self.bias_scale)
        out = a.new_empty(*a.shape[:3], a.shape[3] + 1)
        torch.mul(a, self.weight_scale, out=out[..., :-1])            # one pass: scaled and placed
        out[..., -1] = self.bias_scale
        return out

    def signals(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Backprop signals (n, groups, T, O_group) from the gradients w.r.t. each call's output."""
        parts = []
        for g in grads:
            if self.is_conv:
                n, out = g.shape[:2]
                g = g.reshape(n, self.groups, out // self.groups, -1).transpose(2, 3)
            else:
                g = g.reshape(g.shape[0], 1, -1, g.shape[-1])
            parts.append(g)
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def _conv_patches(self, x: torch.Tensor) -> torch.Tensor:
        """im2col: (n, groups, positions, C_in/groups · kernel size), ordered as the weight is."""
        m = self.module
        conv1d = isinstance(m, nn.Conv1d)
        pads = _conv_padding(m)
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        if any(pads):
            x = F.pad(x, pads, mode=mode)
        if conv1d:
            x = x.unsqueeze(2)
            kernel, dilation, stride = (1, *m.kernel_size), (1, *m.dilation), (1, *m.stride)
        else:
            kernel, dilation, stride = m.kernel_size, m.dilation, m.stride
        patches = F.unfold(x, kernel, dilation=dilation, stride=stride)      # (n, C·kernel, L)
        n, ck, positions = patches.shape
        return patches.reshape(n, self.groups, ck // self.groups, positions).transpose(2, 3)


def _conv_padding(m: nn.Module) -> tuple[int, ...]:
    """Padding of a Conv1d/2d in F.pad order (last spatial dimension first)."""
    pads = []
    for d in reversed(range(len(m.kernel_size))):
        if m.padding == "valid":
            left = right = 0
        elif m.padding == "same":
            total = m.dilation[d] * (m.kernel_size[d] - 1)
            left, right = total // 2, total - total // 2
        else:
            left = right = m.padding[d]
        pads += [left, right]
    return tuple(pads)


def _is_scaled_linear(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return (isinstance(w, torch.Tensor) and w.ndim == 2 and hasattr(m, "weight_scale")
            and hasattr(m, "bias_scale"))


def find_layers(model: nn.Module, diff_names) -> list[Layer]:
    """Supported modules owning at least one differentiated parameter, not shared with another module."""
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    diff_names = set(diff_names)
    layers = []
    for name, m in model.named_modules():
        conv = isinstance(m, (nn.Conv1d, nn.Conv2d)) and not m.transposed
        if not (conv or isinstance(m, nn.Linear) or _is_scaled_linear(m)):
            continue
        own = {k: p for k, p in m._parameters.items() if k in ("weight", "bias") and p is not None}
        if set(m._parameters) - {"weight", "bias"} or any(owners[id(p)] > 1 for p in own.values()):
            continue
        prefix = f"{name}." if name else ""
        weight = f"{prefix}weight" if "weight" in own and f"{prefix}weight" in diff_names else None
        bias = f"{prefix}bias" if "bias" in own and f"{prefix}bias" in diff_names else None
        if weight is None and bias is None:
            continue
        scaled = _is_scaled_linear(m) and not isinstance(m, nn.Linear)
        layers.append(Layer(name, m, weight, bias,
                            float(m.weight_scale) if scaled else 1.0,
                            float(m.bias_scale) if scaled else 1.0))
    return layers


@contextmanager
def recording(layers: list[Layer]):
    """Forward hooks saving each layer's inputs and outputs per call (``calls[name]`` lists them).

    The hook returns a copy of the output, so that an in-place operation downstream (ReLU with
    inplace=True) cannot overwrite the tensor the backprop signal is taken with respect to.
    """
    calls: dict[str, list] = {layer.name: [] for layer in layers}

    def hook_for(name):
        def hook(module, args, kwargs, out):
            calls[name].append((args[0] if args else next(iter(kwargs.values())), out))
            return out.clone()
        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer.name), with_kwargs=True)
               for layer in layers]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@dataclass
class GramFactors:
    """A Gram-path layer on a block: its term is Σ_{t,u} (ã_it·ã_ju)(g_ict·g_jdu).

    ``a``: the augmented inputs ã = [s_w a, s_b] (n, groups, T, I + 1), so that ã_it·ã_ju =
    s_w² a_it·a_ju + s_b² is one GEMM; the s_w a part is absent when the weight is held fixed, the
    s_b column when the bias is (or the layer has none). ``g``: backprop signals (n, k, groups, T, O).
    """

    a: torch.Tensor
    g: torch.Tensor


@dataclass
class Features:
    """What one data block contributes to kernel blocks: Gram-path layers and flat per-example features.

    ``flats``: (n, k, D) per-example derivative features (explicit-path layers, Jacobians).
    """

    grams: list[GramFactors] = field(default_factory=list)
    flats: list[torch.Tensor] = field(default_factory=list)

    def rows(self, s: slice) -> Features:
        """The features of examples ``s`` (views, no copy)."""
        return Features([GramFactors(f.a[s], f.g[s]) for f in self.grams], [j[s] for j in self.flats])


def layer_features(layers: list[Layer], inputs: dict, grads_per_output: list[dict]) -> Features:
    """Features of the structured layers from their inputs per call and the k backward passes.

    ``inputs[name]``: the layer's input per call; ``grads_per_output[c][name]``: ∂Σ_i f_c(x_i)/∂z
    for the layer's output z per call.
    """
    feats = Features()
    for layer in layers:
        a = layer.inputs(inputs[layer.name])
        signals = [layer.signals(grads[layer.name]) for grads in grads_per_output]
        g = signals[0].unsqueeze(1) if len(signals) == 1 else torch.stack(signals, dim=1)
        if layer.explicit:
            feats.flats += layer.gradients(a, g)
        else:
            feats.grams.append(GramFactors(layer.augmented(a), g))
    return feats


def choose_paths(layers: list[Layer], shapes: dict[str, tuple[int, int, int, int]], k: int) -> None:
    """Per layer, the cheaper contraction per pair of examples: Gram products or explicit gradients.

    ``shapes[name] = (groups, T, I, O)``. Gram: groups·T²·(I + k·O + 1) multiply-adds per pair;
    explicit: k·groups·O·I, and forming the gradients costs k·groups·T·O·I per example, memory-bound
    work that the count per pair does not see. The explicit path is taken when it needs at most half
    the Gram path's multiply-adds per pair: so a dense layer with a single output (I + 1 against
    I + 2) stays on the Gram path (measured: MLP 10-512-512-1 at N = 256-1024, 1-8 % faster than with
    its last layer explicit), while convolutions with few channels (a 3x3 conv with 32 channels on
    8x8 images: 9 216 against 1.3 million) take the explicit one.
    """
    for layer in layers:
        groups, t, i, o = shapes[layer.name]
        layer.explicit = 2 * k * groups * o * i <= groups * t * t * (i + k * o + 1)


def kernel_block(f1: Features, f2: Features, output: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Θ block (b1, b2) summed over outputs ("trace"), or (b1, b2, k, k) for "full"; written into
    ``out`` (e.g. a view of the whole result) when given, each term accumulated in place."""
    total = None if out is None else out.zero_()
    for l1, l2 in zip(f1.grams, f2.grams):
        total = _add_gram_term(total, l1, l2, output)
    for j1, j2 in zip(f1.flats, f2.flats):
        total = _add_flat_term(total, j1, j2, output)
    return total


#: rows per tile of a symmetric block Θ(x, x): only the upper tiles are contracted and each lower tile
#: is the transpose of its mirror, which saves up to half of the Gram products' arithmetic (measured
#: on 2 cores, the 512-wide Gram at N = 1024: 7.1 ms in tiles of 256 against 12.1 ms whole); tiles
#: much smaller than this make the GEMMs less efficient than the saving
SYMMETRIC_TILE = 256


def tiles(n: int, tile: int) -> list[slice]:
    """n rows in round(n / tile) (at least one) nearly equal consecutive slices."""
    count = max(1, round(n / tile))
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def symmetric_block(f: Features, output: str, out: torch.Tensor) -> torch.Tensor:
    """Θ(x, x) for one block, ``kernel_block(f, f, output)``, into ``out`` from its upper tiles
    (see ``SYMMETRIC_TILE``)."""
    parts = tiles(feature_rows(f), SYMMETRIC_TILE)
    for i, si in enumerate(parts):
        for sj in parts[i:]:
            kernel_block(f.rows(si), f.rows(sj), output, out=out[si, sj])
            if sj != si:
                mirror(out, si, sj)
    return out


def mirror(result: torch.Tensor, si: slice, sj: slice) -> None:
    """Θ(x_sj, x_si) from Θ(x_si, x_sj) in ``result``: the transpose (outputs swapped too for (n1, n2, k, k))."""
    block = result[si, sj]
    result[sj, si] = block.transpose(0, 1) if block.ndim == 2 else block.permute(1, 0, 3, 2)


def feature_rows(f: Features) -> int:
    """The number of examples the features describe."""
    return f.grams[0].g.shape[0] if f.grams else f.flats[0].shape[0]


def kernel_diagonal(f: Features) -> torch.Tensor:
    """Θ(x_i, x_i) summed over outputs, shape (b,)."""
    total = None
    for layer in f.grams:
        n, _, groups, t, _ = layer.g.shape
        g = layer.g.permute(0, 2, 3, 1, 4).reshape(n * groups, t, -1)
        a = layer.a.reshape(n * groups, t, -1)
        term = (a @ a.transpose(1, 2)).mul_(g @ g.transpose(1, 2))
        total = _accumulate(total, term.reshape(n, -1).sum(1))
    for j in f.flats:
        total = _accumulate(total, j.reshape(j.shape[0], -1).pow(2).sum(1))
    return total


def _accumulate(total, term):
    return term if total is None else total.add_(term)


def _add_flat_term(total, j1: torch.Tensor, j2: torch.Tensor, output: str) -> torch.Tensor:
    b1, k, d = j1.shape
    b2 = j2.shape[0]
    if output == "full":
        term = (j1.reshape(b1 * k, d) @ j2.reshape(b2 * k, d).T).reshape(b1, k, b2, k).permute(0, 2, 1, 3)
        return _accumulate(total, term)
    rows1, rows2 = j1.reshape(b1, k * d), j2.reshape(b2, k * d)
    return rows1 @ rows2.T if total is None else total.addmm_(rows1, rows2.T)


def _add_gram_term(total, l1: GramFactors, l2: GramFactors, output: str) -> torch.Tensor:
    """total + Σ_{t,u} (ã_it·ã_ju)(g_ict·g_jdu), summed over groups; traced over c = d unless "full"."""
    b1, k, groups, t1, _ = l1.g.shape
    b2, t2 = l2.g.shape[0], l2.g.shape[3]
    aa = _by_group(l1.a) @ _by_group(l2.a).transpose(1, 2)                     # (groups, b1·t1, b2·t2)
    if output == "full":
        gg = _by_group(l1.g, split_outputs=True) @ _by_group(l2.g, split_outputs=True).transpose(1, 2)
        prod = gg.reshape(groups, b1, t1, k, b2, t2, k).mul_(aa.reshape(groups, b1, t1, 1, b2, t2, 1))
        return _accumulate(total, prod.sum(dim=(0, 2, 5)).permute(0, 2, 1, 3))
    gg = _by_group(l1.g) @ _by_group(l2.g).transpose(1, 2)
    if groups * t1 * t2 == 1:                                                    # dense layer: (Ã Ãᵀ) ⊙ (G Gᵀ)
        aa, gg = aa.reshape(b1, b2), gg.reshape(b1, b2)
        return aa.mul_(gg) if total is None else total.addcmul_(aa, gg)
    return _accumulate(total, aa.mul_(gg).reshape(groups, b1, t1, b2, t2).sum(dim=(0, 2, 4)))


def _by_group(t: torch.Tensor, split_outputs: bool = False) -> torch.Tensor:
    """Rows per group: A (n, groups, T, I) -> (groups, n·T, I); G (n, k, groups, T, O) ->
    (groups, n·T, k·O), or (groups, n·T·k, O) with ``split_outputs``."""
    if t.ndim == 4:
        return t.transpose(0, 1).reshape(t.shape[1], -1, t.shape[3])
    n, k, groups, positions, o = t.shape
    rows = t.permute(2, 0, 3, 1, 4)                                              # (groups, n, T, k, O)
    return rows.reshape(groups, -1, o) if split_outputs else rows.reshape(groups, n * positions, k * o)
