"""The one-line architecture grammar, and architecture files (YAML/JSON).

A spec is a sequence of layers separated by spaces (or ``->``)::

    dense(512, weight_std=1.5, bias_std=0.05) relu dense(512, weight_std=1.5) relu dense(1)

Each layer is a name, optionally followed by arguments in parentheses written as in
Python (numbers, strings, lists, ``None``). A block may be repeated: ``[dense(512) relu]*3``.
Branches are written in braces: ``residual{relu conv(16, 3) relu conv(16, 3)}`` (x + block(x);
``residual(alpha=0.5){...}`` scales the block), ``sum{b_1 | b_2}`` and ``concat{b_1 | b_2}``
(an empty branch is the identity; ``sum(scales=[1.0, 0.5]){...}``).
Layer names: see :data:`LAYERS`. ``str(arch)`` gives back a spec that parses to the
same architecture.

A file (``.yaml``, ``.yml``, ``.json``) holds either a spec string, a list of layers, or
a mapping with a ``layers`` list; each layer is a spec string (``"dense(512)"``) or a
mapping ``{dense: {out_features: 512, weight_std: 1.5}}`` / ``{type: dense, out_features: 512}``.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

from ntkprior.arch import layers as L
from ntkprior.arch.attention import SelfAttention
from ntkprior.arch.branching import Sum
from ntkprior.arch.conv import Conv
from ntkprior.arch.normalization import LayerNorm
from ntkprior.arch.pooling import AvgPool, Flatten, GlobalAvgPool

#: spec name -> layer class
LAYERS = {
    "dense": L.Dense, "relu": L.ReLU, "leaky_relu": L.LeakyReLU, "abs": L.Abs, "erf": L.Erf,
    "identity": L.Identity, "gelu": L.Gelu, "tanh": L.Tanh, "sigmoid": L.Sigmoid,
    "softplus": L.Softplus, "silu": L.SiLU, "sin": L.Sin,
}
LAYERS.update({"conv": Conv, "avg_pool": AvgPool, "global_avg_pool": GlobalAvgPool, "flatten": Flatten,
               "layer_norm": LayerNorm})
LAYERS["self_attention"] = SelfAttention
#: branch names written ``name(args){branch | branch}``
GROUPS = ("residual", "sum", "concat")
_ALIASES = {"linear": "identity", "swish": "silu", "leakyrelu": "leaky_relu", "fc": "dense"}

_TOKEN = re.compile(r"""
    (?P<space>\s+|->)
  | (?P<open>\[)
  | (?P<close>\]\s*\*\s*(?P<times>\d+))
  | (?P<group>(?P<gname>(?i:residual|sum|concat))\s*(?:\((?P<gargs>[^()]*)\))?\s*\{)
  | (?P<bar>\|)
  | (?P<gclose>\})
  | (?P<layer>(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\((?P<args>[^()]*)\))?)
""", re.VERBOSE)


#: Most layers a spec may expand to (``[dense(8) relu]*100000000`` is refused before it is built).
MAX_LAYERS = 10_000


class SpecError(ValueError):
    """A spec that cannot be read; the message points at the offending token."""


def _fail(text: str, pos: int, length: int, why: str) -> SpecError:
    caret = " " * pos + "^" * max(1, length)
    return SpecError(f"arch: {why} at position {pos}:\n  {text}\n  {caret}")


def parse_spec(text: str) -> L.Serial:
    """Read a one-line architecture spec into an architecture."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("arch: empty architecture spec; write e.g. \"dense(512) relu dense(1)\"")
    # frames: the top level, '[' repeats and '{' branch groups; each holds branches of layers
    stack: list[dict] = [{"kind": "top", "branches": [[]], "pos": 0}]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _fail(text, pos, 1, f"unexpected character {text[pos]!r}")
        current = stack[-1]["branches"][-1]
        if m.group("open"):
            stack.append({"kind": "repeat", "branches": [[]], "pos": pos})
        elif m.group("close"):
            if stack[-1]["kind"] != "repeat":
                raise _fail(text, pos, 1, "']' without a matching '['")
            block = stack.pop()["branches"][0]
            times, target = int(m.group("times")), stack[-1]["branches"][-1]
            if len(target) + len(block) * times > MAX_LAYERS:
                raise _fail(text, pos, m.end() - pos, f"the repetition makes {len(block) * times} layers, more "
                            f"than the {MAX_LAYERS} a spec may hold; use fewer repetitions")
            target.extend(block * times)
        elif m.group("group"):
            stack.append({"kind": "group", "branches": [[]], "pos": pos, "match": m})
        elif m.group("bar"):
            if stack[-1]["kind"] != "group":
                raise _fail(text, pos, 1, "'|' separates branches only inside sum{...} or concat{...}")
            stack[-1]["branches"].append([])
        elif m.group("gclose"):
            if stack[-1]["kind"] != "group":
                raise _fail(text, pos, 1, "'}' without a matching residual{, sum{ or concat{")
            frame = stack.pop()
            stack[-1]["branches"][-1].append(_make_group(text, frame))
        elif m.group("layer"):
            current.append(_make_layer(text, m))
        pos = m.end()
    if len(stack) > 1:
        what = "'[' is never closed with ']*N'" if stack[-1]["kind"] == "repeat" else "'{' is never closed with '}'"
        raise _fail(text, stack[-1]["pos"], 1, what)
    layers = stack[0]["branches"][0]
    return L.serial(layers) if layers else L.serial()


def _make_group(text: str, frame: dict) -> L.Layer:
    """``residual(alpha=a){block}``, ``sum(scales=[...]){b | b}`` or ``concat{b | b}``."""
    m = frame["match"]
    name = m.group("gname").lower()
    fail = lambda why: _fail(text, m.start(), m.end() - m.start(), why)  # noqa: E731
    args, kwargs = _literal_args(text, m, m.group("gargs"))
    branches = frame["branches"]
    try:
        if name == "residual":
            if len(branches) != 1 or not branches[0]:
                raise fail("residual{...} holds the layers of one block (no '|'); write sum{a | b} for more")
            inspect.signature(_residual_args).bind(*args, **kwargs)
            return Sum([[], branches[0]], "sum", (1.0, _residual_args(*args, **kwargs)))
        inspect.signature(_sum_args).bind(*args, **kwargs)
        return Sum(branches, name, _sum_args(*args, **kwargs) if name == "sum" else None)
    except TypeError as exc:
        raise fail(f"bad arguments for {name} ({exc}); residual takes (alpha), sum takes (scales)") from None
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise fail(str(exc)) from None


def _residual_args(alpha=1.0):
    return alpha


def _sum_args(scales=None):
    return scales


def _literal_args(text: str, m: re.Match, source: str | None):
    try:
        call = ast.parse(f"f({source or ''})", mode="eval").body
        return [ast.literal_eval(a) for a in call.args], {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError):
        raise _fail(text, m.start(), m.end() - m.start(),
                    "arguments must be Python literals such as 512, 1.5, None or 'standard'") from None


def _make_layer(text: str, m: re.Match) -> L.Layer:
    if m.group("args") is None and text[m.end():].lstrip().startswith("("):
        paren = text.index("(", m.end())
        raise _fail(text, paren, 1, "'(' is never closed (or holds nested parentheses)")
    name = m.group("name").lower()
    name = _ALIASES.get(name, name)
    if name not in LAYERS:
        hint = f" (write {name}{{...}} for a branch)" if name in GROUPS else ""
        raise _fail(text, m.start(), len(m.group("name")),
                    f"unknown layer {m.group('name')!r}{hint} (known: {', '.join(sorted(LAYERS))})")
    args, kwargs = _literal_args(text, m, m.group("args"))
    return _construct(name, args, kwargs, lambda why: _fail(text, m.start(), m.end() - m.start(), why))


def _construct(name: str, args, kwargs, fail) -> L.Layer:
    cls = LAYERS[name]
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        params = ", ".join(inspect.signature(cls).parameters)
        raise fail(f"bad arguments for {name} ({exc}); {name} takes ({params})") from None
    try:
        return cls(*args, **kwargs)
    except ValueError as exc:
        raise fail(str(exc)) from None


def load_arch(spec) -> L.Serial:
    """An architecture from a spec string, a path to a YAML/JSON file, or an architecture."""
    if isinstance(spec, L.Serial):
        return spec
    if isinstance(spec, Path) or (isinstance(spec, str) and re.search(r"\.(ya?ml|json)\s*$", spec)):
        return _load_file(Path(spec))
    return parse_spec(spec)


def _load_file(path: Path) -> L.Serial:
    from ntkprior.files import check_input_file
    try:
        check_input_file(path, "arch")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"arch: {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "save the architecture file as UTF-8") from None
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import yaml
            doc = yaml.safe_load(text)
    except Exception as exc:
        raise SpecError(f"arch: could not parse {str(path)!r}: {exc}") from None
    if isinstance(doc, dict) and "layers" in doc:
        doc = doc["layers"]
    if isinstance(doc, str):
        return parse_spec(doc)
    if not isinstance(doc, list):
        raise SpecError(f"arch: {str(path)!r} must hold a spec string, a list of layers, "
                        "or a mapping with a 'layers' list")
    if len(doc) > MAX_LAYERS:
        raise SpecError(f"arch: {str(path)!r} lists {len(doc)} layers, more than the {MAX_LAYERS} an "
                        "architecture may hold")
    return L.serial([_layer_from_entry(entry, i, path) for i, entry in enumerate(doc)])


def _layer_from_entry(entry, i: int, path: Path) -> L.Layer:
    where = f"arch: {str(path)!r}, layer {i}"
    if isinstance(entry, str):
        layers = parse_spec(entry).layers
        if len(layers) != 1:
            raise SpecError(f"{where}: {entry!r} holds {len(layers)} layers; write one per entry")
        return layers[0]
    if isinstance(entry, dict):
        entry = dict(entry)
        if "type" in entry:
            name, kwargs = entry.pop("type"), entry
        elif len(entry) == 1:
            (name, kwargs), = entry.items()
            kwargs = {} if kwargs is None else kwargs
        else:
            raise SpecError(f"{where}: a mapping needs a 'type' key or a single layer name")
        name = _ALIASES.get(str(name).lower(), str(name).lower())
        if name not in LAYERS:
            raise SpecError(f"{where}: unknown layer {name!r} (known: {', '.join(sorted(LAYERS))})")
        args = []
        if isinstance(kwargs, list):       # {leaky_relu: [0.2]}: positional arguments
            args, kwargs = kwargs, {}
        elif not isinstance(kwargs, dict):  # {leaky_relu: 0.2}, {tanh: 200}: the first argument
            args, kwargs = [kwargs], {}
        return _construct(name, args, kwargs, lambda why: SpecError(f"{where}: {why}"))
    raise SpecError(f"{where}: expected a string or a mapping, got {entry!r}")
