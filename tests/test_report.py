"""verify's reports: the text a person reads, the JUnit XML a CI reporter reads, the likely causes.

Reports are built by hand (``sweep_report``) in the schema of crash/results.json, so these tests
pin the reports' words and counts without running a sweep. One test records a tiny run and damages
it, to check the JUnit file of a run that cannot be verified.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from junitparser import Error, Failure, JUnitXml
from rich.console import Console
from typer.testing import CliRunner

from ftmbctl import render
from ftmbctl.causes import CAUSES, MOST_LIKELY, RULES, describe, likely_causes
from ftmbctl.cli import app
from ftmbctl.report import error_junit, junit_classname, report_junit
from ftmbctl.verify import SweepReport

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
NAT = {"name": "nat", "spec": "nat"}
SEEDS = {"record": "0", "recovery": "4242"}
WHEN = datetime(2024, 5, 1, 12, 30, 5, tzinfo=timezone.utc)


# ---------------------------------------------------------------- hand-built reports

def sweep_report(points: list[dict[str, Any]], middlebox: dict[str, str] = NAT,
                 hash_seeds: dict[str, str] = SEEDS, seconds: float = 2.5) -> SweepReport:
    return SweepReport(run="runs/nat", points=points, seed=7, selection={"random": len(points), "torn": True},
                       seconds=seconds, middlebox=middlebox, hash_seeds=hash_seeds)


def point(event: int, *violations: dict[str, Any], totals: dict[str, int] | None = None, variant: str = "clean",
          kind: str = "queue-flush", chain: bool = False, seconds: float = 0.25) -> dict[str, Any]:
    counted: dict[str, int] = {}
    for v in violations:
        counted[v["invariant"]] = counted.get(v["invariant"], 0) + 1
    found = {"event": event, "variant": variant, "kind": kind, "consistent": not violations, "seconds": seconds,
             "violations": list(violations), "violations_total": totals or counted}
    if chain:
        found["chain"] = True
    return found


def digest_violation(packet: int, seq: int, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"invariant": "logged-prefix-state", "packet": packet, "queue": 1, "variable": "flows (id 3)",
            "seq": seq, "expected": "digest 1a2b", "got": "digest 3c4d",
            "message": f"replay of packet {packet} diverged at variable flows (id 3), access {seq}",
            "evidence": evidence or {"kind": "digest", "restored": True, "after_restore": True,
                                     "hash_seeds_differ": True, "scheduler": "chaos"}}


def output_violation(packet: int) -> dict[str, Any]:
    return {"invariant": "output-commit", "packet": packet, "output_id": [packet, 0],
            "message": f"output ({packet}, 0) was released before the crash, but recovery regenerated different "
                       "bytes (first difference at byte 40)",
            "evidence": {"kind": "output-bytes", "restored": False, "hash_seeds_differ": True}}


def state_violation() -> dict[str, Any]:
    return {"invariant": "full-state", "message": "variable flows (id 3) differs from the failure-free run at "
                                                  "snapshot 2", "variable": "flows (id 3)",
            "expected": "value 7", "got": "value unchanged",
            "evidence": {"kind": "state", "restored": True, "after_restore": False, "hash_seeds_differ": True}}


def consistent_report() -> SweepReport:
    return sweep_report([point(e) for e in (3, 10, 17)] + [point(20, chain=True)])


def three_failing_report() -> SweepReport:
    return sweep_report([
        point(3),
        point(12, digest_violation(17, 5), digest_violation(18, 6), output_violation(17), output_violation(19),
              output_violation(21), state_violation(), variant="torn",
              totals={"logged-prefix-state": 2, "output-commit": 9, "full-state": 1}),
        point(15, output_violation(30), totals={"output-commit": 1}),
        point(40, {"invariant": "recovery-completes", "packet": 44, "queue": 0, "exception": "KeyError: 'flow'",
                   "message": "the middlebox raised KeyError: 'flow' at packet 44 on queue 0",
                   "evidence": {"kind": "exception", "exception_type": "KeyError", "restored": True}},
              kind="snapshot-durable", chain=True),
        point(41),
    ])


def many_failing_report(count: int = 2000) -> SweepReport:
    points = []
    for i in range(count):
        violations = [digest_violation(100 + i, 2 + i), output_violation(100 + i)]
        if i % 3 == 0:
            violations.append(state_violation())
        if i % 7 == 0:
            violations.append({"invariant": "snapshot-chain", "message": "replay of complete logs from snapshot 1 "
                                                                         "does not give snapshot 2"})
        totals = {v["invariant"]: 3 for v in violations}
        points.append(point(i, *violations, totals=totals, variant="torn" if i % 2 else "clean"))
    return sweep_report(points, seconds=400.0)


# ---------------------------------------------------------------- JUnit

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "verify.xml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("build, tests, failures", [(consistent_report, 4, 0), (three_failing_report, 5, 3),
                                                    (many_failing_report, 2000, 2000)])
def test_junitparser_recounts_what_the_attributes_say(tmp_path: Path, build, tests: int, failures: int) -> None:
    xml = JUnitXml.fromfile(str(_write(tmp_path, report_junit(build(), timestamp=WHEN, hostname="ci-1"))))
    assert xml._elem.tag == "testsuites"
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    stated = [(s.tests, s.failures, s.errors, s.skipped, s.time) for s in (xml, suite)]
    assert stated[0] == stated[1]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (tests, failures, 0, 0)
    xml.update_statistics()  # recount from the test cases, as a reporter does
    assert [(s.tests, s.failures, s.errors, s.skipped) for s in (xml, suite)] == [s[:4] for s in stated]
    assert suite.time == pytest.approx(stated[1][4], abs=1e-6) and xml.time == pytest.approx(stated[0][4], abs=1e-6)
    assert suite.time == pytest.approx(0.25 * tests, abs=1e-6)  # the cases' times, not the wall time


def test_each_case_has_at_most_one_failure_with_the_first_violation(tmp_path: Path) -> None:
    report = three_failing_report()
    xml = JUnitXml.fromfile(str(_write(tmp_path, report_junit(report, timestamp=WHEN, hostname="ci-1"))))
    cases = list(next(iter(xml)))
    assert [c.name for c in cases] == [
        "crash after event 3 (queue-flush)", "crash after event 12 (queue-flush) torn",
        "crash after event 15 (queue-flush)", "crash after event 40 (snapshot-durable) [snapshot chain]",
        "crash after event 41 (queue-flush)"]
    assert [len(c.result) for c in cases] == [0, 1, 1, 1, 0]
    failure = cases[1].result[0]
    assert isinstance(failure, Failure)
    assert failure.type == "logged-prefix-state"
    assert failure.message == "replay of packet 17 diverged at variable flows (id 3), access 5"
    assert failure.text.splitlines() == [
        "packet 17, queue 1, variable flows (id 3), access 5: expected digest 1a2b, got digest 3c4d",
        describe(["hidden-state", "bypass-write", "clock", "random"]),
        "logged-prefix-state: packet 18, queue 1, variable flows (id 3), access 6: expected digest 1a2b, "
        "got digest 3c4d",
        "output-commit: packet 17, output (17, 0): output (17, 0) was released before the crash, but recovery "
        "regenerated different bytes (first difference at byte 40)",
        "output-commit: packet 19, output (19, 0): output (19, 0) was released before the crash, but recovery "
        "regenerated different bytes (first difference at byte 40)",
        "output-commit: packet 21, output (21, 0): output (21, 0) was released before the crash, but recovery "
        "regenerated different bytes (first difference at byte 40)",
        "+6 more output-commit, +1 more full-state"]
    assert (cases[3].result[0].type, cases[3].result[0].message) == (
        "recovery-completes", "the middlebox raised KeyError: 'flow' at packet 44 on queue 0")
    assert not any(c.system_out for c in cases)  # no "allowed" differences written anywhere


def test_many_violations_still_give_one_failure_per_case(tmp_path: Path) -> None:
    root = ET.fromstring(report_junit(many_failing_report(50), timestamp=WHEN, hostname="ci-1"))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 50
    assert all(len(case.findall("failure")) == 1 for case in cases)
    assert cases[0].find("failure").text.splitlines()[-1] == (
        "+2 more output-commit, +2 more logged-prefix-state, +2 more full-state, +2 more snapshot-chain")


def test_timestamp_and_hostname(tmp_path: Path) -> None:
    suite = ET.fromstring(report_junit(three_failing_report(), timestamp=WHEN, hostname="ci-1")).find("testsuite")
    assert (suite.get("timestamp"), suite.get("hostname")) == ("2024-05-01T12:30:05+00:00", "ci-1")
    suite = ET.fromstring(report_junit(three_failing_report())).find("testsuite")
    stamp = datetime.fromisoformat(suite.get("timestamp"))
    assert stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 60
    assert suite.get("hostname") == socket.gethostname()
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"run": "runs/nat", "middlebox": "nat", "seed": "7", "record_hash_seed": "0",
                     "recovery_hash_seed": "4242", "wall_seconds": "2.500"}


@pytest.mark.parametrize("spec, classname", [
    ("nat", "ftmbctl.verify.nat"),
    ("examples/port_scan_counter.py:PortScanCounter", "ftmbctl.verify.PortScanCounter"),
    ("/home/me/boxes/v1.2/mb.py:Counter", "ftmbctl.verify.Counter"),
    (r"C:\boxes\mb.py:Counter", "ftmbctl.verify.Counter"),
    ("mypkg.boxes:Nat2", "ftmbctl.verify.Nat2"),
])
def test_classname_names_the_middlebox_never_a_path(spec: str, classname: str) -> None:
    assert junit_classname({"name": "x", "spec": spec}) == classname
    root = ET.fromstring(report_junit(sweep_report([point(1), point(2, output_violation(3))],
                                                   middlebox={"name": "x", "spec": spec})))
    assert {c.get("classname") for c in root.iter("testcase")} == {classname}


def test_control_characters_in_messages_stay_well_formed_xml(tmp_path: Path) -> None:
    bad = {"invariant": "recovery-completes", "message": "open('a\x00b\x1b[31m') failed",
           "exception": "OSError: a\x00b"}
    xml = JUnitXml.fromfile(str(_write(tmp_path, report_junit(sweep_report([point(1, bad)])))))
    failure = next(iter(next(iter(xml)))).result[0]
    assert failure.message == "open('a\\x00b\\x1b[31m') failed"


def test_error_junit_holds_one_error(tmp_path: Path) -> None:
    xml = JUnitXml.fromfile(str(_write(tmp_path, error_junit("runs/x", "runs/x/input.log: bad CRC at byte 88",
                                                             "DamagedRun", timestamp=WHEN, hostname="h"))))
    suite = next(iter(xml))
    assert (xml.tests, xml.errors, xml.failures, suite.tests, suite.errors, suite.failures) == (1, 1, 0, 1, 1, 0)
    (case,) = list(suite)
    (error,) = case.result
    assert isinstance(error, Error)
    assert (error.message, error.type, case.classname) == ("runs/x/input.log: bad CRC at byte 88", "DamagedRun",
                                                           "ftmbctl.verify")


@pytest.fixture(scope="module")
def damaged_run(small_trace_head, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("damaged") / "run"
    result = CliRunner().invoke(app, ["record", str(small_trace_head(60)), "--out", str(run), "--queues", "2",
                                      "--snapshot-every", "20", "--seed", "3"], env=ENV)
    assert result.exit_code == 0, result.output
    log = run / "input.log"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    return run


def test_damaged_run_writes_a_junit_error_and_exits_3(damaged_run: Path, tmp_path: Path) -> None:
    junit = tmp_path / "verify.xml"
    result = CliRunner().invoke(app, ["verify", str(damaged_run), "--junit", str(junit)], env=ENV)
    assert result.exit_code == 3, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "1", "failures": "0", "errors": "1", "skipped": "0"}
    (case,) = suite.findall("testcase")
    (error,) = case.findall("error")
    assert not case.findall("failure")
    assert error.get("message") == line.removeprefix("error: ")
    assert error.get("type") == "DamagedRun"
    assert "input.log" in error.get("message")


def test_damaged_run_with_an_unwritable_junit_still_reports_the_damage(damaged_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["verify", str(damaged_run), "--junit", str(tmp_path)], env=ENV)
    assert result.exit_code == 3, result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "input.log" in errors[0]
    assert f"warning: {tmp_path}: cannot write the JUnit file" in result.stderr


# ---------------------------------------------------------------- the text report

@pytest.fixture
def text(monkeypatch: pytest.MonkeyPatch):
    """``text(report) -> list of lines`` print_sweep writes, on a 120-column terminal without colour."""
    def run(report: SweepReport) -> list[str]:
        out = io.StringIO()
        monkeypatch.setattr(render, "stdout", Console(file=out, width=120, highlight=False, markup=False,
                                                      emoji=False, no_color=True))
        render.print_sweep(report)
        return [line.rstrip() for line in out.getvalue().splitlines()]
    return run


def test_text_report_starts_with_one_line_per_failed_invariant(text) -> None:
    lines = text(three_failing_report())
    assert lines[0] == (
        "output-commit: 2 of 5 crash points; first at event 12 torn (queue-flush): packet 17, output (17, 0): output "
        "(17, 0) was released before the crash, but recovery regenerated different bytes (first difference at "
        "byte 40). " + describe(["clock", "random", "set-order", "str-hash"]))
    assert lines[1] == ("logged-prefix-state: 1 of 5 crash points; first at event 12 torn (queue-flush): packet 17, "
                        "queue 1, variable flows (id 3), access 5: expected digest 1a2b, got digest 3c4d. "
                        + describe(["hidden-state", "bypass-write", "clock", "random"]))
    assert lines[2].startswith("full-state: 1 of 5 crash points; first at event 12 torn (queue-flush): variable flows "
                               "(id 3): expected value 7, got value unchanged. likely: ")
    assert lines[3] == ("recovery-completes: 1 of 5 crash points; first at event 40 (snapshot-durable) chain: "
                        "packet 44, queue 0: raised KeyError: 'flow'. "
                        + describe(["hidden-state", "exception", "cache"]))
    assert lines[4] == "first failing crash points"


def test_text_report_table_lists_first_violation_per_invariant_and_counts(text) -> None:
    lines = text(three_failing_report())
    table = lines[lines.index("first failing crash points"):lines.index("verify runs/nat")]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table if line.startswith("│")]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("12 torn (queue-flush)", "output-commit", "+8"), ("", "logged-prefix-state", "+1"),
        ("", "full-state", ""), ("15 (queue-flush)", "output-commit", ""),
        ("40 (snapshot-durable) chain", "recovery-completes", "")]
    assert all(len(line) <= 120 for line in lines[4:])
    assert "more crash points" not in "\n".join(lines)
    assert not any("allowed" in line for line in lines)


def test_text_report_of_2000_failing_points_stays_short(text) -> None:
    lines = text(many_failing_report())
    assert len(lines) < 60, "\n".join(lines)
    assert [line.split(":")[0] for line in lines[:4]] == ["output-commit", "logged-prefix-state", "full-state",
                                                          "snapshot-chain"]
    assert lines[0].startswith("output-commit: 2,000 of 2,000 crash points; first at event 0 (queue-flush): packet 100")
    assert lines[2].startswith("full-state: 667 of 2,000 crash points; first at event 0 (queue-flush)")
    assert lines[3].startswith("snapshot-chain: 286 of 2,000 crash points; first at event 0 (queue-flush): replay of")
    listed = [line for line in lines if re.match(r"│ \d+ ", line)]
    # rows per point (one per invariant): 4 2 2 3 2 2 3 3 2 make 23; the 10th point's 3 would pass 24
    assert [line.split("│")[1].strip() for line in listed] == [
        "0 (queue-flush)", "1 torn (queue-flush)", "2 (queue-flush)", "3 torn (queue-flush)", "4 (queue-flush)",
        "5 torn (queue-flush)", "6 (queue-flush)", "7 torn (queue-flush)", "8 (queue-flush)"]
    assert len([line for line in lines if line.startswith("│ ")]) == 23 + 7  # and 7 summary rows
    assert "... and 1,991 more crash points" in lines
    summary = "\n".join(lines)
    assert re.search(r"│ inconsistent\s+│ 2,000\s+│", summary)
    assert re.search(r"│ verdict\s+│ INCONSISTENT", summary)


def test_consistent_report_is_the_summary_alone(text) -> None:
    lines = text(consistent_report())
    assert len(lines) == 10, "\n".join(lines)
    assert lines[0] == "verify runs/nat"
    values = dict(tuple(cell.strip() for cell in line.split("│")[1:-1]) for line in lines if line.startswith("│"))
    assert values == {"crash points": "4 (1 check the snapshot chain)", "consistent": "4", "inconsistent": "0",
                      "PYTHONHASHSEED": "record 0, recovery 4242", "seed of the sample": "7",
                      "time": "2.50 s (1.6 crash points/s)", "verdict": "consistent"}


# ---------------------------------------------------------------- likely causes

@pytest.mark.parametrize("invariant, evidence, codes", [
    # same access, other value after a restore: state the snapshot did not hold comes first
    ("logged-prefix-state", {"kind": "digest", "restored": True, "after_restore": True, "hash_seeds_differ": True},
     ["hidden-state", "bypass-write", "clock", "random"]),
    ("full-state", {"kind": "state", "after_restore": True}, ["hidden-state", "clock", "random", "str-hash"]),
    # no restore: state on self cannot have been lost; the salted hash is a candidate when seeds differ
    ("logged-prefix-state", {"kind": "order", "restored": False, "hash_seeds_differ": True},
     ["clock", "random", "str-hash", "set-order"]),
    ("logged-prefix-state", {"kind": "order", "restored": False, "hash_seeds_differ": False},
     ["clock", "random", "environ", "object-id"]),
    ("logged-prefix-state", {"kind": "digest", "restored": False, "hash_seeds_differ": False},
     ["clock", "random", "bypass-write", "environ"]),
    # the recovery's other hash seed: set order and hash() are candidates without a restore
    ("logged-prefix-state", {"kind": "digest", "restored": False, "hash_seeds_differ": True},
     ["clock", "random", "str-hash", "set-order"]),
    # only the bytes differ: a value the log does not hold, or (after a restore) state it lost
    ("output-commit", {"kind": "output-bytes", "restored": False, "hash_seeds_differ": True},
     ["clock", "random", "set-order", "str-hash"]),
    ("full-state", {"kind": "output-bytes", "restored": True, "hash_seeds_differ": True},
     ["hidden-state", "clock", "random", "set-order"]),
    ("recovery-completes", {"kind": "exception", "exception_type": "KeyError", "restored": True},
     ["hidden-state", "exception", "cache"]),
    ("recovery-completes", {"kind": "exception", "exception_type": "ZeroDivisionError", "restored": True},
     ["exception", "hidden-state", "cache"]),
    ("recovery-completes", {"kind": "exception", "exception_type": "AttributeError", "restored": False},
     ["exception"]),
    ("recovery-completes", {"kind": "hang", "restored": True}, ["endless-loop", "hidden-state", "clock"]),
    ("recovery-completes", {"kind": "hang", "restored": False}, ["endless-loop", "clock"]),
    ("exactly-once-output", {}, ["ftmbctl"]),
    ("output-commit", {"kind": "release", "restored": True, "hash_seeds_differ": True}, ["ftmbctl"]),
    ("snapshot-chain", {"kind": "state", "restored": True}, ["unsnapshottable", "hidden-state", "bypass-write", "clock"]),
    ("snapshot-chain", {"kind": "state", "restored": False}, ["clock", "random", "environ", "object-id"]),
    ("output-commit", {}, ["clock", "random", "hidden-state"]),
])
def test_likely_causes_rank_by_evidence(invariant: str, evidence: dict[str, Any], codes: list[str]) -> None:
    assert likely_causes({"invariant": invariant, "message": "m", "evidence": evidence}) == codes


def test_exception_text_alone_is_enough_evidence() -> None:
    violation = {"invariant": "recovery-completes", "message": "m", "exception": "AttributeError: 'Nat' has no x",
                 "evidence": {"after_restore": True}}
    assert likely_causes(violation) == ["hidden-state", "exception", "cache"]


def test_describe_is_one_sentence_with_the_best_fix() -> None:
    assert describe(["str-hash", "set-order"]) == (
        "likely: hash() of a str or bytes (salted per process), or iterating a set or frozenset of str (its order "
        "follows the salted hash); fix: hash with zlib.crc32 or hashlib, which are the same in every process")
    assert describe([]) == ""


def test_catalogue_covers_the_causes_design_names() -> None:
    assert set(CAUSES) == {"str-hash", "set-order", "object-id", "cache", "hidden-state", "clock", "random", "environ",
                           "unsnapshottable", "bypass-write", "exception", "endless-loop", "ftmbctl"}
    words = " ".join(c.what for c in CAUSES.values())
    for needle in ("hash()", "set", "id()", "lru_cache", "self", "module", "threading.local", "time.time",
                   "datetime.now", "os.urandom", "uuid", "environment variable", "snapshots cannot keep",
                   "bypassing ctx", "exception"):
        assert needle in words, needle
    for cause in CAUSES.values():
        assert ". " not in cause.what + cause.fix and not cause.fix.endswith(".")  # one sentence each
    for _, codes in RULES:
        assert 1 <= len(codes) <= MOST_LIKELY and set(codes) <= set(CAUSES)
    assert RULES[-1][0] == {}  # a last rule that holds for every violation


def test_causes_and_report_need_no_terminal() -> None:
    code = ("import sys, ftmbctl.causes, ftmbctl.report; "
            "print(sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
