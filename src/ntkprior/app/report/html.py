"""The report's page: HTML building blocks (numbers, tables, verdicts, figures), the collector of
sections while studies run, and the page itself. Layout only: it computes nothing."""

from __future__ import annotations

import contextlib
import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ntkprior.studies.progress import Progress

# ====================================================================== page model and helpers
def fmt(value, digits: int = 4) -> str:
    """A number as the page shows it (the same number is stored unrounded in results.json)."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ")
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}".replace("-", "−")


def superscript(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def escape(text) -> str:
    return html.escape(str(text), quote=True)


def cell(value) -> str:
    """A table cell: numbers right-aligned, words left-aligned."""
    text = str(value)
    words = bool(text) and text[0].isalpha() and text not in ("nan", "yes", "no")
    return f'<td class="t">{escape(text)}</td>' if words else f"<td>{escape(text)}</td>"


def table(headers: list, rows: list, caption: str | None = None, cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{escape(text)}</p>' if cls else f"<p>{escape(text)}</p>"


def verdict(title: str, answers: list, ok: bool, checks: list, notes: list) -> str:
    """A diagnosis: its headline answer (green when ``ok``), the other answers, then every check and note."""
    items = "".join(f"<li><b>{escape(a)}</b></li>" for a in answers[1:])
    items += "".join(f'<li class="{"ok" if c["passed"] else "fail"}"><b>{"ok" if c["passed"] else "FAIL"}'
                     f' {escape(c["name"])}</b>: {escape(c["sentence"])}</li>' for c in checks)
    items += "".join(f'<li class="note"><b>note</b>: {escape(n)}</li>' for n in notes)
    return (f'<div class="verdict {"good" if ok else "bad"}"><h4>{escape(title)}: {escape(answers[0])}</h4>'
            f"<ul>{items}</ul></div>")


@dataclass
class Plan:
    """What a study's layout will run: the page's title and subtitle, the number of progress steps, and
    ``run(report) -> meta`` (facts listed at the top of the page)."""

    title: str
    subtitle: str
    tasks: int
    run: Callable[["Report"], dict]
    source: dict | None = None      #: the document a study follows: title, authors, year, where, url


@dataclass
class Section:
    key: str
    title: str
    intro: str
    blocks: list = field(default_factory=list)
    findings: list = field(default_factory=list)     #: one line per result, listed at the top of the page
    warnings: list = field(default_factory=list)
    seconds: float = 0.0


class Report:
    """Collects sections, figures and numbers while the studies run; writes the page at the end.

    ``progress`` is the studies' :class:`~ntkprior.studies.progress.Progress`: a section gathers
    the warnings its steps recorded.
    """

    def __init__(self, out: Path, progress: Progress, dpi: int = 110):
        self.out = out
        self.figure_dir = out / "figures"
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        self.dpi = dpi
        self.progress = progress
        self.sections: list[Section] = []
        self.results: dict = {}
        self.figures: list[Path] = []

    @contextlib.contextmanager
    def section(self, key: str, title: str, intro: str):
        sec = Section(key, title, intro)
        self.sections.append(sec)
        start = time.perf_counter()
        self.progress.take_warnings()
        yield sec
        sec.seconds = time.perf_counter() - start
        sec.warnings = self.progress.take_warnings()
        self.results.setdefault(key, {})["seconds"] = sec.seconds
        self.results[key]["warnings"] = sec.warnings

    def task(self, description: str):
        """One step of the progress bar (see :meth:`Progress.task`)."""
        return self.progress.task(description)

    def finding(self, text: str) -> None:
        """A one-line result of the current section, for the list at the top of the page."""
        self.sections[-1].findings.append(text)

    def figure(self, fig, name: str, caption: str, alt: str) -> str:
        """Save a figure as figures/<name>.png and return its HTML."""
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, dpi=self.dpi)
        self.figures.append(path)
        rel = path.relative_to(self.out).as_posix()
        return (f'<figure><img src="{escape(rel)}" alt="{escape(alt)}" loading="lazy">'
                f"<figcaption>{escape(caption)}</figcaption></figure>")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1.2em;color:#1b1b1b;line-height:1.5}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2.2em}
p.lead{font-size:1.08em;color:#333;background:#f4f8fb;border-left:4px solid #0072B2;padding:.6em .9em}
p.explain{background:#fff8ec;border-left:4px solid #E69F00;padding:.6em .9em}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.92em;color:#444;margin-top:.3em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}caption{caption-side:top;text-align:left;
color:#444;padding-bottom:.3em;max-width:1100px}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#eef3f7}td:first-child,th:first-child,td.t{text-align:left}
.verdict{border:1px solid #ccc;border-radius:6px;padding:.3em 1em;margin:1em 0}
.verdict.good{border-left:6px solid #009E73}.verdict.bad{border-left:6px solid #D55E00}
.verdict li.ok b{color:#007a5a}.verdict li.fail b{color:#b34700}.verdict li.note b{color:#555}
.verdict li{margin:.25em 0}.meta{color:#555;font-size:.92em}details{margin:1em 0;color:#555;font-size:.9em}
nav a{margin-right:1em}code{background:#f2f2f2;padding:0 .25em}
table.specs{font-size:.85em;margin:.3em 0}table.specs td{text-align:left;font-family:ui-monospace,monospace}
table.specs td:first-child{font-family:inherit}table.specs th{text-align:left}
.findings{background:#f3faf7;border-left:4px solid #009E73;padding:.2em 1em;margin:1em 0}
.findings h3{margin:.4em 0}.findings li{margin:.2em 0}
"""


def citation(source: dict) -> str:
    """A document named once: “title” (authors, where, year), linked."""
    return (f'“<a href="{escape(source["url"])}">{escape(source["title"])}</a>” ({escape(source["authors"])}, '
            f'{escape(source["where"])}, {source["year"]})')


def page(rep: Report, title: str, subtitle: str, meta: dict, source: dict | None = None) -> str:
    nav = "".join(f'<a href="#{s.key}">{escape(s.title)}</a>' for s in rep.sections)
    findings = "".join(f"<li><b>{escape(s.title)}</b><ul>" + "".join(f"<li>{escape(f)}</li>" for f in s.findings)
                       + "</ul></li>" for s in rep.sections if s.findings)
    body = []
    for s in rep.sections:
        body.append(f'<section id="{s.key}"><h2>{escape(s.title)}</h2>{paragraph(s.intro, "lead")}')
        body.extend(s.blocks)
        if s.warnings:
            items = "".join(f"<li>{escape(w)}</li>" for w in s.warnings)
            body.append(f"<details><summary>{len(s.warnings)} warning(s) from the library while this section "
                        f"ran</summary><ul>{items}</ul></details>")
        body.append(f'<p class="meta">Section computed in {s.seconds:.1f} s.</p></section>')
    facts = "".join(f"<li><b>{escape(k)}</b>: " + (table(["used for", "spec"], list(v.items()), cls="specs")
                                                if isinstance(v, dict) else escape(v)) + "</li>"
                    for k, v in meta.items())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{escape(title)}</h1><p>{escape(subtitle)}{' ' + citation(source) if source else ''}</p><ul class=\"meta\">{facts}</ul>"
            f'<div class="findings"><h3>Findings</h3><ul>{findings}</ul></div><nav>{nav}</nav>'
            + "".join(body) + "</body></html>")
