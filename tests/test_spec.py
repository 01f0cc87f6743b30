"""The one-line architecture grammar and architecture files."""

import json

import pytest

import ntkprior as ntp
from ntkprior.arch.spec import SpecError, load_arch, parse_spec


def test_spec_round_trips_through_str():
    arch = ntp.serial(ntp.Dense(512, weight_std=1.5, bias_std=0.05), ntp.ReLU(),
                      ntp.Dense(64, weight_std=2 ** 0.5, bias_std=None, parameterization="standard"),
                      ntp.LeakyReLU(0.1), ntp.Erf(2.0, 0.5, 0.1), ntp.Tanh(degree=30), ntp.Dense(1))
    assert parse_spec(str(arch)) == arch


def test_spec_grammar_with_repetition_and_arrows():
    arch = parse_spec("[dense(16, weight_std=1.5) relu]*3 -> dense(1)")
    assert arch == ntp.serial(*[ntp.Dense(16, weight_std=1.5), ntp.ReLU()] * 3, ntp.Dense(1))
    assert parse_spec("Dense(3) ReLU linear swish") == ntp.serial(ntp.Dense(3), ntp.ReLU(), ntp.Identity(),
                                                                  ntp.SiLU())


@pytest.mark.parametrize("spec, message, caret", [
    ("dense(512) rleu dense(1)", "unknown layer 'rleu'", "           ^^^^"),
    ("dense(512, wieght_std=1) relu", "bad arguments for dense", "  ^"),
    ("dense(512", "never closed", "       ^"),
    ("[dense(4) relu", r"'\[' is never closed", "  ^"),
    ("dense(4) # relu", "unexpected character '#'", "           ^"),
    ("dense(foo) relu", "Python literals", "  ^"),
    ("dense(-3)", "out_features must be a positive integer", "  ^"),
    ("   ", "empty architecture spec", None),
])
def test_bad_specs_point_at_the_token(spec, message, caret):
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(spec)
    assert str(info.value).startswith("arch: ")
    if caret:
        assert caret in str(info.value)


def test_architecture_files(tmp_path):
    spec = "dense(32, weight_std=1.5, bias_std=0.05) relu dense(1)"
    expected = parse_spec(spec)
    (tmp_path / "a.yaml").write_text("layers:\n  - dense: {out_features: 32, weight_std: 1.5, bias_std: 0.05}\n"
                                     "  - relu\n  - {type: dense, out_features: 1}\n")
    (tmp_path / "b.json").write_text(json.dumps([{"dense": {"out_features": 32, "weight_std": 1.5,
                                                            "bias_std": 0.05}}, "relu", "dense(1)"]))
    (tmp_path / "c.yml").write_text(json.dumps(spec))
    for name in ("a.yaml", "b.json", "c.yml"):
        assert load_arch(str(tmp_path / name)) == expected
    (tmp_path / "bad.yaml").write_text("- {dense: {width: 3}}\n")
    with pytest.raises(SpecError, match="layer 0: bad arguments for dense"):
        load_arch(str(tmp_path / "bad.yaml"))
    with pytest.raises(SpecError, match="does not exist"):
        load_arch(str(tmp_path / "missing.yaml"))
    assert load_arch(expected) is expected
