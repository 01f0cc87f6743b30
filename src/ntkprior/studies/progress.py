"""Steps of a long study: a progress bar, and the library's warnings kept per step instead of printed.

A study calls ``with progress.task("what it does"): ...`` around each step. The warnings raised
inside are collected in :attr:`Progress.warnings` (as "step: Category: message", once each), so
a report can show them beside the numbers they concern; a notebook can read them the same way.
"""

from __future__ import annotations

import contextlib
import warnings

from ntkprior.progress import in_terminal, progress_bar


class Progress:
    """A tqdm bar of ``total`` steps (shown only when ``enabled``) and the warnings of each step."""

    def __init__(self, total: int = 0, *, enabled: bool = False, description: str = "ntkprior"):
        self.bar = progress_bar(total=total, desc=description, unit="task", enabled=enabled,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}")
        self.redraw = in_terminal()
        self.warnings: list[str] = []

    @contextlib.contextmanager
    def task(self, description: str):
        """One step: shown on the bar; its warnings are recorded, not printed."""
        self.bar.set_postfix_str(description, refresh=self.redraw)     # a log gets lines, not redraws
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            text = f"{description}: {w.category.__name__}: {w.message}"
            if text not in self.warnings:
                self.warnings.append(text)
        self.bar.update(1)

    def take_warnings(self) -> list[str]:
        """The warnings recorded since the last call (and forget them)."""
        taken, self.warnings = self.warnings, []
        return taken

    def close(self) -> None:
        self.bar.close()


def silent() -> Progress:
    """A progress tracker that shows nothing (for studies run from a notebook or a test)."""
    return Progress(enabled=False)
