"""Progress bars in a log (issue 13): a few whole lines, no carriage-return redraws, no stray comma."""

import io
import sys

from ntkprior.progress import progress_bar
from ntkprior.studies.progress import Progress


class _Log(io.StringIO):
    def isatty(self):
        return False


def test_a_bar_in_a_log_writes_a_few_whole_lines(monkeypatch):
    log = _Log()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(5000), desc="work"):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("work: 100%") and "5000/5000" in lines[-1]


def test_study_steps_in_a_log_are_not_printed_twice(monkeypatch):
    log = _Log()
    monkeypatch.setattr(sys, "stderr", log)
    progress = Progress(40, enabled=True, description="report")
    for i in range(40):
        with progress.task(f"step {i}"):
            pass
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3 and lines[-1].startswith("report: 100%")
    assert "] , " not in lines[-1] and lines[-1].endswith("], step 39")


def test_disabled_bars_print_nothing(monkeypatch):
    log = _Log()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(10), enabled=False):
        pass
    assert log.getvalue() == ""
