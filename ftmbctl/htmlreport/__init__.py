"""``ftmbctl report --html`` and ``ftmbctl bench --html``: one self-contained HTML file.

The file opens offline (no network, no CDN: style, figures and script are inline) and reads
with JavaScript off. Figures are drawn by matplotlib as SVG: a few tens of KB each, text that
stays text, and hover texts as SVG ``<title>`` elements, which need no script.

- gather.py: what a run directory says (bounded for runs of millions of packets);
- figures.py and svg.py: the figures; page.py: the HTML around them;
- runreport.py and benchreport.py: the two reports, section by section.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftmbctl.errors import UsageError
from ftmbctl.snapshot import write_atomically


@dataclass
class Written:
    path: Path
    bytes: int
    seconds: float


def check_output(path: Path) -> None:
    """Refuse, before any work, an output path that cannot be a file: a directory, or a file in a
    directory that does not exist (a write the machine refuses is a MachineError when it happens)."""
    if path.is_dir():
        raise UsageError(f"--html {path} is a directory; give the path of the HTML file to write")
    if not path.parent.is_dir():
        raise UsageError(f"--html {path}: the directory {path.parent} does not exist")


def _write(path: Path, text: str) -> int:
    data = text.encode("utf-8")
    write_atomically(path, data, sync=False)  # all or nothing; a refused write is a MachineError naming path
    return len(data)


def write_run_report(run: Path, html: Path, compare: Path | None = None) -> Written:
    """Write the report of ``run`` (which must have crash results) to ``html``; with ``compare``,
    another run of the same trace whose release delays are drawn beside ``run``'s."""
    from ftmbctl.htmlreport.gather import compared_delays, gather_run
    from ftmbctl.htmlreport.runreport import run_report

    started = time.perf_counter()
    check_output(html)
    other = compared_delays(run, compare) if compare is not None else None  # a wrong --compare fails first
    size = _write(html, run_report(gather_run(run), other))
    return Written(html, size, time.perf_counter() - started)


def write_bench_report(result: dict[str, Any], html: Path) -> Written:
    """Write the report of a benchmark result (bench.run_benchmarks) to ``html``."""
    from ftmbctl.htmlreport.benchreport import bench_report

    started = time.perf_counter()
    check_output(html)
    size = _write(html, bench_report(result))
    return Written(html, size, time.perf_counter() - started)
