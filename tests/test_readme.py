"""The README's quick tour runs as written (keeps the front door true)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_quick_tour_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md: no ```python block (the quick tour) found"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md quick tour", "exec"), namespace)
    out = capsys.readouterr().out
    # what the tour prints: the mode table, the candidate ranking, the diagnosis
    assert "y^T H^-1 y" in out and "Ranked by log p(y*|Y)" in out and "Diagnosis" in out
    assert namespace["post"].mean.shape == (2,) and namespace["modes"].values.shape[0] > 0
