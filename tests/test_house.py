"""The package's rooms and arrows (docs/design.md), checked on the source: imports point down the
picture, and ``import ntkprior`` stays light."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "ntkprior"

#: room -> rooms it must never import (the arrows of docs/design.md)
FORBIDDEN = {
    "kernels": {"arch", "prior", "dynamics", "scale", "studies", "app"},
    "arch": {"prior", "dynamics", "scale", "studies", "app"},
    "prior": {"arch", "dynamics", "scale", "studies", "app"},
    "dynamics": {"scale", "studies", "app"},
    "scale": {"dynamics", "studies", "app"},
    "studies": {"app"},
}


def imported_rooms(path: pathlib.Path) -> set[str]:
    """The ntkprior subpackages a module imports (at any depth of the file)."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ntkprior" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_point_down(room):
    bad = {f"{p.relative_to(PACKAGE)} imports ntkprior.{r}"
           for p in (PACKAGE / room).rglob("*.py") for r in imported_rooms(p) & FORBIDDEN[room]}
    assert not bad, sorted(bad)


def test_the_rule_sees_an_upward_import(tmp_path):
    """The check above can fail: an upward import is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ntkprior.app import plots\n")
    assert imported_rooms(module) == {"app"}


def test_import_ntkprior_loads_no_heavy_dependency():
    code = ("import sys, ntkprior; heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'matplotlib', 'sklearn', 'dask', 'distributed', 'zarr', 'typer'}); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""


def test_public_lazy_modules_resolve():
    import ntkprior as ntp
    assert ntp.report.build_report is not None
    assert ntp.plots.posterior_bands is not None
    assert ntp.estimators.NTKRegressor is ntp.NTKRegressor


def test_report_names_an_unknown_study(tmp_path):
    import ntkprior as ntp
    with pytest.raises(ValueError, match="study: unknown study 'mnist'; choose one of document"):
        ntp.report.build_report(tmp_path / "r", study="mnist", quick=True)
    assert not (tmp_path / "r").exists()


def test_the_command_line_starts_without_torch():
    """``ntkprior --help`` answers at once: building the CLI imports no torch (issue 13)."""
    code = "import sys, ntkprior.app.cli; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_public_name_resolves():
    import ntkprior as ntp
    missing = [name for name in ntp.__all__ if getattr(ntp, name, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ntp.nope


def test_results_print_as_short_summaries():
    """print(result) in a notebook is a summary (shapes, key numbers), never a dump of tensors (issue 13)."""
    import ntkprior as ntp
    x, y = ntp.seed_sin_data()
    arch = ntp.serial(ntp.Dense(32), ntp.ReLU(), ntp.Dense(1))
    xt = ntp.interval_grid(300)
    results = {
        "Kernels": arch.kernel(x, xt),
        "Trajectory": ntp.linearized_dynamics(arch, x, y, xt, learning_rate=0.05).at(list(range(0, 400, 2))),
        "TrainResult": ntp.train(arch, x, y, xt, steps=20, learning_rate=0.05, ensemble=2, record=20),
        "KernelBlocks": ntp.KernelBlocks(arch.kernel(x).ntk, arch.kernel(xt, x).ntk),
    }
    for name, result in results.items():
        text = repr(result)
        assert text.startswith(name) and "tensor(" in text, text
        assert len(text) < 800 and text.count("\n") == 0, (name, text)
