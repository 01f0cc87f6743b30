"""Branches: residual sums and concatenations of parallel sub-networks.

``residual(*layers, shortcut=None, alpha=1.0)`` is ``shortcut(x) + alpha·block(x)`` (the
shortcut is the identity by default). In general ``FanOut(n), parallel(b_1, ..., b_n),
FanInSum()`` (or ``FanInConcat()``) inside ``serial`` apply the branches to copies of the
signal and add (or concatenate along channels) their outputs; ``Sum`` is the layer they make.

Kernel maps (MATH.md section 6): branches that are independent with mean 0 (every branch but
at most one ends with its own weighted layer) add their kernels, ``K = Σ_b s_b² K_b``,
``Θ = Σ_b s_b² Θ_b`` with the branch scales s_b; concatenation averages them weighted by
channel counts, ``K = Σ_b (C_b / ΣC) K_b`` (the layer after sees every channel once).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ntkprior.arch.layers import Flow, Layer, Serial, _check_float, apply_layer, check_composition
from ntkprior.kernels import spatial


def _branch(layers, name: str) -> tuple:
    """A branch as a tuple of layers: a Layer, a Serial, a list/tuple of layers, or None (identity)."""
    if layers is None:
        return ()
    if isinstance(layers, Serial):
        return layers.layers
    if isinstance(layers, Layer):
        return (layers,)
    if isinstance(layers, (list, tuple)) and all(isinstance(layer, Layer) for layer in layers):
        from ntkprior.arch.layers import serial
        return serial(list(layers)).layers if layers else ()
    raise ValueError(f"{name}: expected layers (a layer, serial(...), a list of layers, or None for the "
                     f"identity), got {layers!r}")


class BranchModule(nn.Module):
    """Applies each branch to the same input and adds (scaled) or concatenates the outputs."""

    def __init__(self, branches: list[nn.Module], combine: str, scales: tuple):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.combine, self.scales = combine, scales

    def forward(self, x):
        outs = [branch(x) for branch in self.branches]
        if self.combine == "concat":
            return torch.cat(outs, dim=1)
        total = outs[0] * self.scales[0] if self.scales[0] != 1.0 else outs[0]
        for out, s in zip(outs[1:], self.scales[1:]):
            total = total + (out * s if s != 1.0 else out)
        return total


class Sum(Layer):
    """Parallel branches whose outputs are added (``combine="sum"``, each scaled by ``scales``) or
    concatenated along channels (``combine="concat"``). An empty branch is the identity."""

    kind = "branch"

    def __init__(self, branches, combine: str = "sum", scales=None):
        if combine not in ("sum", "concat"):
            raise ValueError(f"Sum: combine must be 'sum' or 'concat', got {combine!r}")
        self.branches = tuple(_branch(b, f"branches[{i}]") for i, b in enumerate(branches))
        if len(self.branches) < 2:
            raise ValueError(f"Sum: needs at least 2 branches, got {len(self.branches)}")
        scales = (1.0,) * len(self.branches) if scales is None else tuple(scales)
        if len(scales) != len(self.branches):
            raise ValueError(f"Sum: scales has {len(scales)} entries for {len(self.branches)} branches")
        if combine == "concat" and any(s != 1.0 for s in scales):
            raise ValueError("Sum: scales apply to sums only; pass scales=None with combine='concat'")
        self.scales = tuple(_check_float(s, "scales", "Sum") for s in scales)
        self.combine = combine
        self.needs_full = any(layer.needs_full for b in self.branches for layer in b)

    # --- shapes and modules ------------------------------------------------------------------
    def _branch_shapes(self, in_shape, where):
        shapes = []
        for j, branch in enumerate(self.branches):
            shape = in_shape
            for k, layer in enumerate(branch):
                shape = layer.out_shape(shape, f"{where}, branch {j}, layer {k}")
            shapes.append(shape)
        return shapes

    def out_shape(self, in_shape, where):
        shapes = self._branch_shapes(in_shape, where)
        if self.combine == "sum":
            if any(s != shapes[0] for s in shapes):
                listed = ", ".join(f"branch {j} gives {s}" for j, s in enumerate(shapes))
                raise ValueError(f"{where} ({self.spec()}): the branches' shapes differ at the sum ({listed}); "
                                 "make them match, e.g. give the shortcut a conv(C, 1) or dense(d) of the "
                                 "block's width")
            return shapes[0]
        if any(s[1:] != shapes[0][1:] for s in shapes):
            listed = ", ".join(f"branch {j} gives {s}" for j, s in enumerate(shapes))
            raise ValueError(f"{where} ({self.spec()}): concatenated branches need the same positions "
                             f"({listed}); use the same strides and padding in every branch")
        return (sum(s[0] for s in shapes),) + shapes[0][1:]

    def build_module(self, in_shape, generator, dtype):
        modules = []
        for branch in self.branches:
            shape, seq = in_shape, []
            for layer in branch:
                seq.append(layer.build_module(shape, generator, dtype))
                shape = layer.out_shape(shape, "branch")
            modules.append(nn.Sequential(*seq))
        return BranchModule(modules, self.combine, self.scales)

    def with_width(self, width):
        return Sum([[layer.with_width(width) for layer in b] for b in self.branches], self.combine,
                   self.scales)

    # --- the kernel map -----------------------------------------------------------------------
    def check_composition(self, where: str, flow: Flow) -> Flow:
        flows = [check_composition(b, f"{where}, branch {j}, layer ", copy.copy(flow), top=False)
                 for j, b in enumerate(self.branches)]
        shared = [j for j, b in enumerate(self.branches) if not (flows[j].fresh and _has_weighted(b))]
        if self.combine == "sum" and len(shared) > 1:
            raise ValueError(f"{where} ({self.spec()}): branches {shared} have no weighted layer of their own "
                             "at their end, so the branches are correlated and the kernel of their sum is not "
                             "the sum of their kernels; end all but one branch with a dense or conv layer")
        return Flow(gaussian=all(f.gaussian for f in flows), raw=all(f.raw for f in flows),
                    fresh=all(f.fresh for f in flows), weighted=any(f.weighted for f in flows),
                    previous=self, scaled=any(f.scaled for f in flows))

    def map_kernel(self, state, previous=None):
        copies = [spatial.copy_state(state) for _ in self.branches[1:]]
        states = [state] + copies
        for branch, st in zip(self.branches, states):
            prev = previous
            for layer in branch:
                prev = apply_layer(layer, st, prev)
        if self.combine == "sum":
            spatial.combine(states, [s * s for s in self.scales])
        else:
            widths = [st.width for st in states]
            spatial.combine(states, [w / sum(widths) for w in widths], widths)

    # --- the spec -----------------------------------------------------------------------------
    def spec(self) -> str:
        def body(branch):
            return " ".join(layer.spec() for layer in branch)

        if self.combine == "sum" and len(self.branches) == 2 and not self.branches[0] and self.scales[0] == 1.0:
            alpha = "" if self.scales[1] == 1.0 else f"(alpha={self.scales[1]!r})"
            return f"residual{alpha}{{{body(self.branches[1])}}}"
        scales = "" if all(s == 1.0 for s in self.scales) else f"(scales={list(self.scales)!r})"
        return f"{self.combine}{scales}{{{' | '.join(body(b) for b in self.branches)}}}"


def _has_weighted(branch) -> bool:
    return any(layer.kind == "weighted" or (layer.kind == "branch" and all(_has_weighted(b) for b in layer.branches))
               for layer in branch)


def residual(*layers, shortcut=None, alpha: float = 1.0) -> Sum:
    """``shortcut(x) + alpha · block(x)`` with ``block = serial(*layers)`` and the identity as the
    default shortcut. Exact when the sum stays Gaussian: the pre-activation form
    ``residual(ReLU(), Conv(C, 3), ReLU(), Conv(C, 3))`` (He et al. 2016, identity mappings)."""
    if not layers:
        raise ValueError("residual: needs the layers of its block, e.g. residual(ReLU(), Dense(512))")
    return Sum([shortcut, list(layers)], "sum", (1.0, _check_float(alpha, "alpha", "residual")))


class FanOut(Layer):
    """Copies the signal into ``n`` branches; must be followed by ``parallel`` and a fan-in."""

    kind = "marker"

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"FanOut: n must be an integer >= 2, got {n!r}")
        self.n = n

    def spec(self):
        return f"FanOut({self.n})"


class Parallel(Layer):
    """Branches applied side by side (made by :func:`parallel`); between FanOut and a fan-in."""

    kind = "marker"

    def __init__(self, branches):
        self.branches = tuple(_branch(b, f"parallel: branch {i}") for i, b in enumerate(branches))

    def spec(self):
        return f"parallel({len(self.branches)} branches)"


def parallel(*branches) -> Parallel:
    """The branches of a ``FanOut(n), parallel(...), FanInSum()`` block: each a layer, a
    ``serial(...)``, a list of layers, or None (the identity)."""
    return Parallel(branches)


class FanInSum(Layer):
    """Adds the branches' outputs (after ``FanOut(n), parallel(...)``)."""

    kind, combine = "marker", "sum"

    def spec(self):
        return "FanInSum()"


class FanInConcat(Layer):
    """Concatenates the branches' outputs along channels/features (after ``FanOut(n), parallel(...)``)."""

    kind, combine = "marker", "concat"

    def spec(self):
        return "FanInConcat()"


def collapse_branches(layers: list) -> list:
    """Replace each ``FanOut(n), parallel(...), FanInSum()/FanInConcat()`` run by one :class:`Sum`."""
    out, i = [], 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, (Parallel, FanInSum, FanInConcat)):
            raise ValueError(f"layers[{i}]: {layer.spec()} must follow FanOut(n) (and parallel(...)); "
                             "write FanOut(n), parallel(b_1, ..., b_n), FanInSum()")
        if not isinstance(layer, FanOut):
            out.append(layer)
            i += 1
            continue
        group = layers[i + 1:i + 3]
        if (len(group) != 2 or not isinstance(group[0], Parallel) or len(group[0].branches) != layer.n
                or not isinstance(group[1], (FanInSum, FanInConcat))):
            raise ValueError(f"layers[{i}]: FanOut({layer.n}) must be followed by parallel(...) with {layer.n} "
                             "branches and then FanInSum() or FanInConcat()")
        out.append(Sum(group[0].branches, group[1].combine))
        i += 3
    return out
