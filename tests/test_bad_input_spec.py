"""The spec grammar and architecture files (issue #17): an argument given is an argument used (or an
error), absurd sizes are refused before anything is built, files that are directories or not UTF-8 are
named, and no spec evaluates code."""

import pytest

import ntkprior as ntp


@pytest.mark.parametrize("spec, message", [
    ("[dense(8) relu]*100000000 dense(1)", "more than the 10000 a spec may hold"),
    ("[[dense(8) relu]*100]*1000 dense(1)", "more than the 10000 a spec may hold"),
    ("dense(8) tanh(degree=100000) dense(1)", "degree must be an integer from 2 to 1000"),
    ("dense(100000000000) relu dense(1)", r"out_features must be a positive integer \(at most 1e\+09\)"),
    ("dense(10**11) relu dense(1)", "arguments must be Python literals"),
    ("dense(__import__('os').getcwd())", "never closed"),
    ("dense(os.getcwd)", "arguments must be Python literals"),
])
def test_absurd_or_hostile_specs_are_refused_at_once(spec, message):
    with pytest.raises(ntp.SpecError, match=message):
        ntp.parse_spec(spec)


@pytest.mark.parametrize("text, expected", [
    ("- dense: 16\n- leaky_relu: 0.2\n- dense: {out_features: 1}\n", "dense(16) leaky_relu(0.2) dense(1)"),
    ("- dense: [16, 1.5]\n- leaky_relu: 0\n- dense: 1\n", "dense(16, weight_std=1.5) leaky_relu(0.0) dense(1)"),
    ("layers:\n  - {type: dense, out_features: 4}\n  - relu\n  - dense(1)\n", "dense(4) relu dense(1)"),
])
def test_yaml_layer_arguments_are_used(tmp_path, text, expected):
    (tmp_path / "a.yaml").write_text(text)
    assert str(ntp.load_arch(str(tmp_path / "a.yaml"))) == expected


def test_yaml_degree_is_used_and_a_surplus_argument_is_an_error(tmp_path):
    (tmp_path / "b.yaml").write_text("- dense: 16\n- tanh: 200\n- dense: [1]\n")
    assert ntp.load_arch(str(tmp_path / "b.yaml")).layers[1].degree == 200
    (tmp_path / "c.yaml").write_text("- dense: 4\n- relu: 3\n")
    with pytest.raises(ntp.SpecError, match="layer 1: bad arguments for relu"):
        ntp.load_arch(str(tmp_path / "c.yaml"))


def test_architecture_files_that_are_not_text_files_are_named(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes("- dense(3)  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ntp.SpecError, match="arch: .*dir.yaml' is a directory"):
        ntp.load_arch(str(tmp_path / "dir.yaml"))
    with pytest.raises(ntp.SpecError, match="arch: .*latin1.yaml' is not UTF-8 text .* save the architecture file"):
        ntp.load_arch(str(tmp_path / "latin1.yaml"))
    (tmp_path / "many.yaml").write_text("- relu\n" * 10001)
    with pytest.raises(ntp.SpecError, match="lists 10001 layers"):
        ntp.load_arch(str(tmp_path / "many.yaml"))
