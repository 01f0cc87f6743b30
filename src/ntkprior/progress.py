"""Progress bars that behave in a terminal and in a log.

In a terminal a bar redraws in place, as tqdm does. Anywhere else — a file, a CI log, a pipe —
tqdm's carriage-return redraws would pile up as hundreds of updates, so the bar writes a whole
line at most every 30 seconds, and one at the end. In a Jupyter kernel tqdm's widget is used.
"""

from __future__ import annotations

import sys

#: seconds between the lines a bar writes into a log
LOG_INTERVAL = 30.0


class _Lines:
    """A text stream for tqdm that turns its in-place redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def in_terminal() -> bool:
    """Whether progress goes to a terminal or a notebook (redraw in place) rather than a log."""
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def progress_bar(iterable=None, *, enabled: bool = True, **options):
    """``tqdm(iterable, **options)`` that shows nothing unless ``enabled``, redraws in a terminal, and
    writes a line every :data:`LOG_INTERVAL` seconds (and at the end) into a log."""
    from tqdm.auto import tqdm
    if not enabled:
        return tqdm(iterable, disable=True, **options)
    if in_terminal():
        return tqdm(iterable, **options)
    return tqdm(iterable, file=_Lines(sys.stderr), mininterval=LOG_INTERVAL, maxinterval=2 * LOG_INTERVAL,
                ascii=True, ncols=100, **options)
