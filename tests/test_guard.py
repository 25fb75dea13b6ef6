"""The runtime guard of ``record`` (guard.py): what it catches, where it says it was, what it costs
the run (nothing when it stops: the run is discarded), and that it leaves the process as it was."""

from __future__ import annotations

import json
import os
import random
import textwrap
import time
from pathlib import Path

import pytest

from ftmbctl.errors import MiddleboxError
from ftmbctl.lint import lint_spec
from ftmbctl.record import RecordConfig, record

TRACE = Path(__file__).resolve().parents[1] / "traces" / "small.pcap"

BOXES = textwrap.dedent('''
    import os
    import random as rnd
    import time
    import uuid
    from time import time as now

    from ftmbctl.middlebox import Middlebox


    class Base(Middlebox):
        name = "guarded"

        def declare(self, shared):
            self.hits = shared.counter("hits")


    class WallClock(Base):
        def process(self, ctx, pkt):
            time.time()  # MARK-time
            ctx.add(self.hits)
            ctx.emit(pkt.data)


    class Everything(Base):
        def process(self, ctx, pkt):
            now()  # MARK-alias
            os.environ.get("HOME")  # MARK-environ
            os.getenv("PATH")  # MARK-getenv
            rnd.random()  # MARK-random
            uuid.uuid4()  # MARK-uuid
            self.helper()
            ctx.emit(pkt.data)

        def helper(self):
            return os.urandom(4)  # MARK-urandom


    class Clean(Base):
        started = time.time()  # at import time: a constant, not a packet-time read

        def process(self, ctx, pkt):
            ctx.clock()
            ctx.random()
            ctx.add(self.hits)
            ctx.emit(pkt.data)


    class Swallows(Base):
        def process(self, ctx, pkt):
            try:
                time.time()  # MARK-swallowed
            except Exception:
                pass
            ctx.emit(pkt.data)
''')


@pytest.fixture(scope="module")
def boxes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("boxes") / "guarded_boxes.py"
    path.write_text(BOXES)
    return path


def line_of(path: Path, marker: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if f"# {marker}" in text)


def run(boxes: Path, tmp_path: Path, cls: str, **options: object):
    cfg = RecordConfig(trace=TRACE, out=tmp_path / cls, middlebox=f"{boxes}:{cls}", queues=2, force=True, **options)
    return record(cfg)


@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_a_wall_clock_read_is_reported_once_with_its_file_and_line(boxes, tmp_path, scheduler):
    result = run(boxes, tmp_path, "WallClock", scheduler=scheduler)
    assert result.packets_in > 1
    [finding] = result.guard  # once, though every packet made the call
    assert (finding["file"], finding["line"]) == (str(boxes), line_of(boxes, "MARK-time"))
    assert finding["code"] == "FTMB101" and finding["call"] == "time.time()"
    assert "ctx.clock()" in finding["fix"]
    manifest = json.loads((tmp_path / "WallClock" / "manifest.json").read_text())
    assert manifest["guard"] == {"mode": "warn", "findings": result.guard}


@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_ctx_clock_and_import_time_constants_give_nothing(boxes, tmp_path, scheduler):
    assert run(boxes, tmp_path, "Clean", scheduler=scheduler).guard == []


def test_every_kind_of_call_and_alias_is_caught_where_the_middlebox_makes_it(boxes, tmp_path):
    found = {(f["line"], f["code"]) for f in run(boxes, tmp_path, "Everything").guard}
    assert found == {(line_of(boxes, "MARK-alias"), "FTMB101"), (line_of(boxes, "MARK-environ"), "FTMB121"),
                     (line_of(boxes, "MARK-getenv"), "FTMB121"), (line_of(boxes, "MARK-random"), "FTMB111"),
                     (line_of(boxes, "MARK-uuid"), "FTMB112"), (line_of(boxes, "MARK-urandom"), "FTMB112")}


def test_guard_error_stops_the_record_with_exit_1_and_keeps_no_run(boxes, tmp_path):
    with pytest.raises(MiddleboxError) as caught:
        run(boxes, tmp_path, "WallClock", guard="error")
    assert caught.value.exit_code == 1
    message = str(caught.value)
    assert message.startswith(f"record stopped by --guard error: {boxes}:{line_of(boxes, 'MARK-time')}: FTMB101")
    assert not (tmp_path / "WallClock").exists()


def test_guard_error_stops_even_when_the_middlebox_swallows_the_exception(boxes, tmp_path):
    with pytest.raises(MiddleboxError, match=f":{line_of(boxes, 'MARK-swallowed')}: FTMB101"):
        run(boxes, tmp_path, "Swallows", guard="error", scheduler="threads")


def test_guard_off_watches_nothing(boxes, tmp_path):
    result = run(boxes, tmp_path, "WallClock", guard="off")
    assert result.guard == []
    assert "guard" not in json.loads((tmp_path / "WallClock" / "manifest.json").read_text())


def test_the_process_is_left_as_it_was(boxes, tmp_path):
    originals = (time.time, time.perf_counter, random.random, os.urandom, os.getenv, os.environ)
    run(boxes, tmp_path, "Everything")
    with pytest.raises(MiddleboxError):
        run(boxes, tmp_path, "WallClock", guard="error")
    assert (time.time, time.perf_counter, random.random, os.urandom, os.getenv, os.environ) == originals
    assert type(os.environ).__name__ == "_Environ"


def test_the_guard_and_lint_name_the_same_rule_on_the_same_line(boxes, tmp_path):
    guard = {(f["line"], f["code"]) for f in run(boxes, tmp_path, "Everything").guard}
    lint = {(f.line, f.code) for f in lint_spec(f"{boxes}:Everything").findings}
    assert guard <= lint, f"the guard found what lint did not: {sorted(guard - lint)}"


# ---- record keeps what lint and the guard found; verify names the line beside the crash point ----

MUTANTS = Path(__file__).resolve().parent / "mutants" / "nat_mutants.py"


def test_record_lints_first_and_keeps_the_findings(boxes, tmp_path):
    seen = []
    cfg = RecordConfig(trace=TRACE, out=tmp_path / "run", middlebox=f"{boxes}:WallClock", queues=2)
    result = record(cfg, on_lint=lambda doc: seen.append((doc, (tmp_path / "run" / "input.log").exists())))
    [(doc, recording_had_started)] = seen
    assert not recording_had_started  # shown before the record runs
    assert [(f["code"], f["line"]) for f in doc["findings"]] == [("FTMB101", line_of(boxes, "MARK-time"))]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["lint"] == doc == result.lint


def test_a_failing_crash_point_names_the_line_that_probably_did_it(tmp_path):
    from ftmbctl.verify import SweepConfig, sweep

    spec = f"{MUTANTS}:NatWallClock"
    record(RecordConfig(trace=TRACE, out=tmp_path / "run", middlebox=spec, queues=2))
    report = sweep(tmp_path / "run", SweepConfig(middlebox=spec, every=7, jobs=1))
    assert not report.consistent
    culprit = next(i for i, text in enumerate(MUTANTS.read_text().splitlines(), 1)
                   if "return time.time()  # BUG" in text)
    failed = [v for p in report.points for v in p["violations"]]
    assert failed and all(v["suspects"][0]["line"] == culprit and v["suspects"][0]["code"] == "FTMB101"
                          for v in failed if "clock" in v["likely_causes"])
    assert {s["source"] for v in failed for s in v.get("suspects", [])} == {"lint"}  # lint's, with its column


def test_cli_guard_error_exits_1_and_a_bad_mode_exits_2(boxes, tmp_path):
    from typer.testing import CliRunner

    from ftmbctl.cli import app

    runner = CliRunner()
    stopped = runner.invoke(app, ["record", str(TRACE), "-m", f"{boxes}:WallClock", "-o", str(tmp_path / "a"),
                                  "--guard", "error"])
    assert stopped.exit_code == 1
    assert "record stopped by --guard error" in " ".join(stopped.stderr.split())
    assert "FTMB101" in stopped.stderr and "Traceback" not in stopped.stderr
    warned = runner.invoke(app, ["record", str(TRACE), "-m", f"{boxes}:WallClock", "-o", str(tmp_path / "b")])
    assert warned.exit_code == 0 and "guard: " in warned.stderr and "lint: " in warned.stderr
    bad = runner.invoke(app, ["record", str(TRACE), "-m", f"{boxes}:WallClock", "-o", str(tmp_path / "c"),
                              "--guard", "loud"])
    assert bad.exit_code == 2
