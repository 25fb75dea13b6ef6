"""``ftmbctl report --html`` and ``ftmbctl bench --html``: one self-contained HTML file.

What must hold: the file opens in a real browser (headless Chromium) with the network blocked,
with no console error, every figure drawn and a screenshot that is not blank; the summary and
tables read with JavaScript off; a failing run's map shows its failing points with their first
divergence on hover (SVG titles) and click; a long sweep gives a small file; and bad input gets
one sentence and its exit code. The runs are tiny (120 packets of the small trace, a handful of
crash points), so the file takes seconds; the browser tests are skipped with a reason where
Chromium or playwright is missing, except in CI (``.ci/run`` installs both), where they fail.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.htmlreport import gather, write_bench_report
from ftmbctl.verify import INVARIANTS

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
CHROMIUM = Path("/usr/bin/chromium")
MUTANT = str(Path(__file__).resolve().parent / "mutants" / "monitor_mutants.py") + ":MonitorDirectWrite"
RECORD = ["--queues", "2", "--snapshot-every", "40", "--flush-every", "8", "--seed", "1"]
RUN_FIGURES = {"crash-map": "input packets durable at the crash (packets)",
               "delay-cdf": "release delay: time from the end of processing to release (log scale)",
               "recovery": "inputs since the last snapshot at the crash (packets)",
               "log-volume": "input packets (packets)"}
SECTIONS = ("summary", "map", "delays", "recovery", "volume")


def cli(*args: object) -> Any:
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


def error_line(result: Any, code: int) -> str:
    """A clean failure with exit ``code``: its one sentence."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def record(trace: Path, out: Path, *extra: object) -> Path:
    result = cli("record", trace, "--out", out, *RECORD, *extra)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def crash_replay(run: Path, *extra: object) -> None:
    result = cli("crash-replay", run, "--random", 4, "--chain", 1, "--jobs", 1, *extra)
    assert result.exit_code in (0, 1), (result.output, result.exception)


@pytest.fixture(scope="module")
def runs(small_trace_head, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A consistent FTMB run with crash results, a No-Replay run of the same trace without any,
    a failing run (a monitor that writes shared state behind ctx) with crash results, and a run
    of another trace."""
    base = tmp_path_factory.mktemp("htmlreport")
    trace = small_trace_head(120)
    ftmb = record(trace, base / "ftmb")
    crash_replay(ftmb)
    failing = record(trace, base / "failing", "--middlebox", MUTANT)
    crash_replay(failing, "--middlebox", MUTANT)
    return {"ftmb": ftmb, "no-replay": record(trace, base / "no-replay", "--mode", "no-replay"),
            "failing": failing, "other-trace": record(small_trace_head(60), base / "other")}


@pytest.fixture(scope="module")
def reports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pages")
    made = {"ftmb": out / "ftmb.html", "failing": out / "failing.html"}
    result = cli("report", runs["ftmb"], "--compare", runs["no-replay"], "--html", made["ftmb"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"wrote {made['ftmb']}" in result.stdout
    result = cli("report", runs["failing"], "--html", made["failing"])
    assert result.exit_code == 0, (result.output, result.exception)
    return made


def results(run: Path) -> dict[str, Any]:
    return json.loads((run / "crash" / "results.json").read_text())


def svg(text: str, name: str) -> str:
    """The inline ``<svg id=name>`` of a page."""
    found = re.search(rf'<svg [^>]*id="fig-{name}".*?</svg>', text, re.S)
    assert found, f"no figure {name}"
    return found.group(0)


# ---------------------------------------------------------------- the file itself

def test_report_is_one_file_that_fetches_nothing(reports: dict[str, Path]) -> None:
    for path in reports.values():
        text = path.read_text(encoding="utf-8")
        assert len(text.encode()) < 400_000, "a report of a tiny run stays small"
        assert not re.search(r"<(?:link|img|iframe|object|embed)\b|<script[^>]*\bsrc=|@import|url\(\s*['\"]?(?:https?:)?//",
                             text, re.I)
        links = re.findall(r'(?:\bhref|xlink:href|\bsrc)="([^"]*)"', text)
        assert links and all(link.startswith("#") for link in links), [x for x in links if not x.startswith("#")]


def test_summary_names_the_run_and_every_invariant(runs: dict[str, Path], reports: dict[str, Path]) -> None:
    text = reports["ftmb"].read_text()
    summary = re.search(r'<section id="summary".*?</section>', text, re.S).group(0)
    for fact in ("middlebox", "trace", "queues", "scheduler", "verdict", "crash points", "seed of the sample"):
        assert f'<th scope="row">{fact}</th>' in summary
    assert ">consistent<" in summary and "chaos, seed 1" in summary
    assert f"{len(results(runs['ftmb'])['crash_points'])} (" in summary
    for invariant in INVARIANTS:
        assert f"<td>{invariant}</td>" in summary
    for section in SECTIONS:
        assert f'<section id="{section}"' in text
    for name, axis_label in RUN_FIGURES.items():
        figure = svg(text, name)
        assert 'role="img"' in figure and f'aria-labelledby="{name}-title {name}-desc"' in figure
        assert axis_label in figure  # axis labels stay text, with their unit


def test_compare_draws_both_runs_on_one_cdf(runs: dict[str, Path], reports: dict[str, Path]) -> None:
    cdf = svg(reports["ftmb"].read_text(), "delay-cdf")
    assert f"{runs['ftmb']} (ftmb, simulated clock): median" in cdf
    assert f"{runs['no-replay']} (no-replay, simulated clock): median" in cdf


def test_failing_points_carry_their_first_divergence(runs: dict[str, Path], reports: dict[str, Path]) -> None:
    """Every failing crash point is a cross on the map whose hover text names its first
    divergence (packet, variable, access) and whose link leads to its row in the table."""
    text = reports["failing"].read_text()
    failing = [p for p in results(runs["failing"])["crash_points"] if not p["consistent"]]
    assert failing, "the mutant's sweep must fail somewhere"
    crosses = re.findall(r'<a xlink:href="#(point-\d+-\w+)">\s*<title>(.*?)</title>',
                         svg(text, "crash-map"), re.S)
    assert [anchor for anchor, _ in crosses] == [f"point-{p['event']}-{p['variant']}" for p in failing]
    for (anchor, tip), point in zip(crosses, failing):
        first = point["violations"][0]
        assert "INCONSISTENT" in tip and f"packet {first['packet']}" in tip
        if first.get("variable"):
            assert f"variable {first['variable']}, access {first['seq']}" in tip
        assert f'<tr id="{anchor}">' in text
    assert "protocols (id 0)" in text  # the variable the mutant writes behind ctx
    summary = re.search(r'<section id="summary".*?</section>', text, re.S).group(0)
    assert "INCONSISTENT" in summary and "failed</span>" in summary


def test_recovery_figure_shows_restore_and_replay_apart(runs: dict[str, Path], reports: dict[str, Path]) -> None:
    figure = svg(reports["ftmb"].read_text(), "recovery")
    recovered = [p for p in results(runs["ftmb"])["crash_points"] if p.get("recovery")]
    assert all("restore_seconds" in p["recovery"] and "replay_seconds" in p["recovery"] for p in recovered)
    for column in (1, 2, 3):  # whole point, restore, replay: one group of points each
        assert f'id="recovery-{column}"' in figure
    assert "restore: set-up, snapshot, logs read, cut" in figure and "replay of the durable inputs" in figure


# ---------------------------------------------------------------- in a browser

def _browser_or_skip() -> Any:
    """playwright's sync API and Debian's Chromium; in CI their absence fails the test."""
    def missing(reason: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run installs it)")
        pytest.skip(reason)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: pip install -e '.[test]'")
    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} is not there: apt-get install chromium")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


class OfflinePage:
    """A page whose every request but file: and data: is refused and noted, and whose console
    errors and uncaught exceptions are noted."""

    def __init__(self, browser: Any, javascript: bool = True) -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 900}, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()

    def open(self, path: Path) -> Any:
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        return self.page

    def close(self) -> None:
        self.context.close()


def distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours or [])


def check_rendered(page: Any, figures: dict[str, str]) -> None:
    """Each figure is in the DOM, laid out at a readable size, with its marks and axis label."""
    for name, axis_label in figures.items():
        figure = page.locator(f"svg#fig-{name}")
        assert figure.count() == 1, name
        box = figure.bounding_box()
        assert box and box["width"] > 400 and box["height"] > 150, (name, box)
        assert figure.locator("path, use").count() > 10, name
        assert axis_label in figure.locator("text").all_text_contents(), name


def test_report_renders_offline_in_chromium(browser: Any, reports: dict[str, Path], tmp_path: Path) -> None:
    for name, path in reports.items():
        tab = OfflinePage(browser)
        page = tab.open(path)
        check_rendered(page, RUN_FIGURES)
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        tab.close()
        assert tab.errors == [] and tab.refused == [], (tab.errors, tab.refused)
        assert shot.stat().st_size > 50_000 and distinct_colours(shot) > 64, "the screenshot is blank"


def test_a_click_on_a_failing_point_shows_its_first_divergence(browser: Any, runs: dict[str, Path],
                                                                reports: dict[str, Path]) -> None:
    first = next(p for p in results(runs["failing"])["crash_points"] if not p["consistent"])
    violation = first["violations"][0]
    tab = OfflinePage(browser)
    page = tab.open(reports["failing"])
    detail = page.locator("#map-detail")
    assert not detail.is_visible()
    page.locator("#fig-crash-map a").first.click()
    assert detail.is_visible()
    shown = detail.inner_text()
    assert f"packet {violation['packet']}" in shown and violation["invariant"] in shown
    assert page.url.endswith(".html"), "the click stays where it is, with JavaScript on"
    assert page.locator(f"tr#point-{first['event']}-{first['variant']}.selected").count() == 1
    tab.close()
    assert tab.errors == [] and tab.refused == []


def test_report_reads_with_javascript_off(browser: Any, runs: dict[str, Path], reports: dict[str, Path]) -> None:
    tab = OfflinePage(browser, javascript=False)
    page = tab.open(reports["failing"])
    summary = page.locator("#summary").inner_text()
    assert "verdict" in summary and "INCONSISTENT" in summary and "logged-prefix-state" in summary
    assert page.locator("#map table tbody tr").count() >= 1
    check_rendered(page, RUN_FIGURES)  # SVG needs no script
    page.locator("#fig-crash-map a").first.click()  # a plain link: to the point's row
    first = next(p for p in results(runs["failing"])["crash_points"] if not p["consistent"])
    assert page.url.endswith(f"#point-{first['event']}-{first['variant']}")
    tab.close()
    assert tab.errors == [] and tab.refused == []


def test_bench_report_renders_offline_in_chromium(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "bench.html"
    write_bench_report(canned_bench_result(), path)
    tab = OfflinePage(browser)
    page = tab.open(path)
    check_rendered(page, {"bench-targets": "measured value ÷ target (log scale; 1x = exactly the target)",
                          "bench-release": "release delay (log scale)",
                          "bench-recovery": "inputs since the last snapshot at the crash (packets)"})
    page.screenshot(path=str(tmp_path / "bench.png"), full_page=True)
    tab.close()
    assert tab.errors == [] and tab.refused == []
    assert distinct_colours(tmp_path / "bench.png") > 64


# ---------------------------------------------------------------- long runs

def test_a_long_sweep_gives_a_small_report_quickly(runs: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 crash points and more outputs than are read: the map draws at most MAP_POINTS of
    them (every failing one), the delays are read from a sample that says so, and the file stays
    small. (A 1,000,000-packet run with 46 crash points: 193 KB in 4-6 s, README.)"""
    run = tmp_path / "long"
    shutil.copytree(runs["ftmb"], run)
    doc = results(run)
    template = next(p for p in doc["crash_points"] if p.get("recovery"))
    events = doc["selection"]["events"]
    points = [{**template, "event": i % events, "variant": "torn" if i // events % 2 else "clean"}
              for i in range(20_000)]
    points[7] = {**points[7], "consistent": False, "violations": [
        {"invariant": "full-state", "message": "state differs", "packet": 3, "variable": "flows (id 1)", "seq": 2}],
        "violations_total": {"full-state": 1}}
    doc["crash_points"] = points
    (run / "crash" / "results.json").write_text(json.dumps(doc))
    monkeypatch.setattr(gather, "MAX_DELAYS", 40)
    started = time.perf_counter()
    result = cli("report", run, "--html", tmp_path / "long.html")
    assert result.exit_code == 0, (result.output, result.exception)
    assert time.perf_counter() - started < 30
    text = (tmp_path / "long.html").read_text()
    assert len(text.encode()) < 1_000_000
    drawn = svg(text, "crash-map")
    assert drawn.count("<use") <= gather.MAP_POINTS + 100  # the markers, and the axes' ticks
    assert "The sweep has 20,000 crash points" in text and 'xlink:href="#point-7-clean"' in drawn
    assert "read in whole release batches spread evenly" in text


# ---------------------------------------------------------------- bad input

def test_a_run_without_crash_results_says_what_to_run(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    line = error_line(cli("report", runs["no-replay"], "--html", out), 3)
    assert "has no crash results" in line and f"ftmbctl crash-replay {runs['no-replay']}" in line
    assert not out.exists()


def test_compare_with_a_run_of_another_trace_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    line = error_line(cli("report", runs["ftmb"], "--compare", runs["other-trace"], "--html", out), 3)
    assert "another trace" in line and str(runs["other-trace"]) in line
    assert not out.exists()


def test_a_damaged_run_is_reported_not_drawn(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "damaged"
    shutil.copytree(runs["ftmb"], run)
    data = bytearray((run / "input.log").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "input.log").write_bytes(bytes(data))
    assert "input.log" in error_line(cli("report", run, "--html", tmp_path / "r.html"), 3)


@pytest.mark.parametrize("where, says", [("dir", "is a directory"), ("missing/r.html", "does not exist")])
def test_an_output_path_that_cannot_be_a_file_is_a_usage_error(runs: dict[str, Path], tmp_path: Path, where: str,
                                                               says: str) -> None:
    (tmp_path / "dir").mkdir()
    assert says in error_line(cli("report", runs["ftmb"], "--html", tmp_path / where), 2)
    assert says in error_line(cli("bench", "--only", "pal_bytes", "--html", tmp_path / where), 2)


def test_a_refused_write_is_the_machines_failure(runs: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only disk: exit 4, one sentence naming the file, the old report left as it was."""
    out = tmp_path / "r.html"
    out.write_text("old report")
    real_open = builtins.open

    def refusing(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".html.tmp") and "w" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing)
    line = error_line(cli("report", runs["ftmb"], "--html", out), 4)
    assert str(out) in line and "Read-only file system" in line
    assert out.read_text() == "old report" and not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- bench --html

def canned_bench_result() -> dict[str, Any]:
    """A benchmark result as run_benchmarks gives it (release_delay and recovery_scaling raw
    numbers included), so the bench page is tested without minutes of measuring."""
    def row(since: int, restore: float, replay: float) -> dict[str, Any]:
        return {"since_snapshot": since, "seconds": restore + replay, "restore_seconds": restore,
                "replay_seconds": replay}
    metric = {"unit": "x", "detail": "", "seconds": 1.0}
    return {"machine": {"platform": "Linux", "cpu": "test CPU", "cores": 2, "python": "CPython 3.11"},
            "config": {"trace": "traces/mixed.pcap", "packets": 3000, "middlebox": "nat", "queues": 4,
                       "scheduler": "chaos", "snapshot_every": 1000, "flush_every": 32, "quick": False},
            "command": "ftmbctl bench", "seconds": 60.0,
            "metrics": {
                "record_overhead": {**metric, "value": 2.03, "target": "<= 1.15", "met": False, "raw": {}},
                "release_delay": {**metric, "value": 32.9, "target": ">= 100", "met": False, "raw": {
                    "replay": {"outputs": 2900, "median_us": 333.0, "p99_us": 1713.0},
                    "no_replay": {"outputs": 2900, "median_us": 10939.0, "p99_us": 20364.0},
                    "clock": "wall", "snapshot_every": 1000}},
                "recovery_scaling": {**metric, "value": 1.2, "target": "<= 1.5", "met": True, "raw": {
                    "short_packets": 3000, "long_packets": 30000,
                    "short": [row(200, 0.011, 0.01), row(900, 0.011, 0.03)],
                    "long": [row(650, 0.022, 0.025), row(950, 0.022, 0.034)]}},
                "pal_bytes": {**metric, "unit": "B/PAL", "value": 5.92, "target": "<= 6", "met": True, "raw": {}},
                "sweep_rate": {"value": None, "unit": "points/s", "target": ">= 60", "met": None,
                               "unavailable": "not measured here", "raw": {}, "seconds": 0.0}}}


def test_bench_report_puts_every_metric_beside_its_target_and_the_paper(tmp_path: Path) -> None:
    path = tmp_path / "bench.html"
    written = write_bench_report(canned_bench_result(), path)
    text = path.read_text()
    assert written.bytes == len(text.encode()) < 300_000
    metrics = re.search(r'<section id="metrics".*?</section>', text, re.S).group(0)
    for name, target in (("record_overhead", "&lt;= 1.15"), ("release_delay", "&gt;= 100"),
                         ("recovery_scaling", "&lt;= 1.5"), ("pal_bytes", "&lt;= 6"), ("sweep_rate", "&gt;= 60")):
        assert re.search(rf"<td>{name}</td><td class=num>[^<]*</td><td>{re.escape(target)}</td>", metrics), name
    assert "5-30% throughput cost" in metrics and "recovery 40-275 ms" in metrics
    assert "FTMB adds 30 µs median; snapshot-only designs add 8-50 ms" in metrics
    assert "not measured here" in metrics
    for name in ("bench-targets", "bench-release", "bench-recovery"):
        svg(text, name)
    assert "paper: FTMB median 30 µs" in svg(text, "bench-release")


def test_bench_html_writes_the_report_of_what_it_measured(small_trace_head, tmp_path: Path) -> None:
    out = tmp_path / "bench.html"
    result = cli("bench", "--trace", small_trace_head(120), "--only", "pal_bytes", "--quick",
                 "--snapshot-every", 40, "--html", out, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    measured = json.loads(result.stdout)["metrics"]["pal_bytes"]
    text = out.read_text()
    assert f"wrote {out}" in result.stderr
    assert re.search(r"<td>pal_bytes</td><td class=num>[^<]*B/PAL</td><td>&lt;= 6</td>", text)
    assert measured["target"] == "<= 6" and 'id="fig-bench-targets"' in text
