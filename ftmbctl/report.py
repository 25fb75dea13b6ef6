"""Machine-readable verify reports (JSON, JUnit XML) and the plain-text pieces of the human one.

Plain data in, text out (no terminal): render.print_sweep lays these pieces out with rich.
Reports are read through ``SweepReport.as_dict()`` (the schema of crash/results.json).
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple
from xml.etree import ElementTree as ET

from ftmbctl.causes import describe, describe_suspects, likely_causes
from ftmbctl.promises import KINDS, WORDS, promise_totals
from ftmbctl.verify import INVARIANTS

if TYPE_CHECKING:
    from ftmbctl.verify import SweepReport

SUITE_NAME = "ftmbctl verify"
BODY_VIOLATIONS = 5  # violations spelled out in a JUnit failure's body (the first one included)


def report_json(report: SweepReport) -> str:
    """The results, and with --also-lose the promises broken over all crash points (``promises_broken``)."""
    doc = report.as_dict()
    totals = promise_totals(doc["crash_points"])
    if totals is not None:
        doc["promises_broken"] = totals
    return json.dumps(doc, indent=2)


# ---- promises broken (crash-replay --also-lose) ----
def lost_words(selection: dict[str, Any]) -> str | None:
    """What failed with the master in a sweep that measured promises ("il, ol", "nothing: the
    master alone"); None for a plain sweep."""
    lost = selection.get("also_lose")
    if lost is None:
        return None
    return ", ".join(str(c) for c in lost) if lost else "nothing: the master alone"


def promise_rows(points: list[dict[str, Any]]) -> list[tuple[str, str, str]] | None:
    """One row per kind of promise: (what, at how many crash points "3 of 40 (7.5%)", how many in
    all), and one for any kind; None when no point was measured."""
    totals = promise_totals(points)
    if totals is None:
        return None
    measured = totals["crash_points"]

    def share(n: int) -> str:
        return f"{n:,} of {measured:,} ({100 * n / measured:.1f}%)"

    rows = [(WORDS[kind], share(totals["by_kind"][kind]["crash_points"]), f"{totals['by_kind'][kind]['count']:,}")
            for kind in KINDS]
    rows.append(("any of them", share(totals["broke_any"]), ""))
    return rows


def point_promises(point: dict[str, Any]) -> str:
    """The promises one crash point broke, in words ("" for none)."""
    found = point.get("promises_broken")
    if not isinstance(found, dict):
        return ""
    counts = [(kind, found.get(kind)) for kind in KINDS]
    return ", ".join(f"{n:,} {WORDS[kind]}" for kind, n in counts if type(n) is int and n > 0)


# ---- words for one crash point and one violation ----
def point_label(point: dict[str, Any]) -> str:
    variant = "" if point["variant"] == "clean" else f" {point['variant']}"
    chain = " [snapshot chain]" if point.get("chain") else ""
    return f"crash after event {point['event']} ({point['kind']}){variant}{chain}"


def short_label(point: dict[str, Any]) -> str:
    """The crash point in a table cell: "412 torn (queue-flush) chain"."""
    variant = "" if point["variant"] == "clean" else f" {point['variant']}"
    return f"{point['event']}{variant} ({point['kind']}){' chain' if point.get('chain') else ''}"


def violation_where(violation: dict[str, Any]) -> str:
    """The fields that say where: "packet 17, queue 1, variable flows (id 3), access 5, output (17, 0)"."""
    parts = []
    if violation.get("packet") is not None:
        parts.append(f"packet {violation['packet']}")
    if violation.get("queue") is not None:
        parts.append(f"queue {violation['queue']}")
    if violation.get("variable"):
        parts.append(f"variable {violation['variable']}")
    if violation.get("seq") is not None:
        parts.append(f"access {violation['seq']}")
    oid = violation.get("output_id")
    if oid is not None and len(oid) == 2:
        parts.append(f"output ({oid[0]}, {oid[1]})")
    return ", ".join(parts)


def violation_detail(violation: dict[str, Any]) -> str:
    """Where, then expected vs got (or the exception, or the message): one line."""
    if violation.get("expected") is not None and violation.get("got") is not None:
        what = f"expected {violation['expected']}, got {violation['got']}"
    elif violation.get("exception"):
        what = f"raised {violation['exception']}"
    else:
        what = violation.get("message", "")
    where = violation_where(violation)
    return f"{where}: {what}" if where else what


def likely(violation: dict[str, Any]) -> str:
    """The likely causes, and the source lines lint or the guard found for them."""
    cause = describe(likely_causes(violation))
    lines = describe_suspects(violation.get("suspects") or [])
    return f"{cause}; {lines}" if cause and lines else cause or lines


def violation_totals(point: dict[str, Any]) -> dict[str, int]:
    """Violations per invariant, those not listed included (``violations_total``; older results
    without it count what is listed)."""
    totals = point.get("violations_total")
    if totals:
        return {inv: int(n) for inv, n in totals.items() if n}
    counted: dict[str, int] = {}
    for violation in point["violations"]:
        counted[violation["invariant"]] = counted.get(violation["invariant"], 0) + 1
    return counted


def _by_design_order(invariants: Any) -> list[str]:
    found = list(dict.fromkeys(invariants))
    return [i for i in INVARIANTS if i in found] + [i for i in found if i not in INVARIANTS]


class InvariantSummary(NamedTuple):
    invariant: str
    points: int  # crash points that failed it
    first_point: dict[str, Any]
    first: dict[str, Any]  # its first violation


def invariant_summaries(points: list[dict[str, Any]]) -> list[InvariantSummary]:
    """One per invariant that failed anywhere, in DESIGN order: how many crash points, and the first."""
    counts: dict[str, int] = {}
    first: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for point in points:
        if point["consistent"]:
            continue
        for invariant in violation_totals(point):
            counts[invariant] = counts.get(invariant, 0) + 1
        for violation in point["violations"]:
            first.setdefault(violation["invariant"], (point, violation))
    return [InvariantSummary(inv, counts.get(inv, 1), *first[inv])
            for inv in _by_design_order(list(counts) + list(first)) if inv in first]


def point_firsts(point: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(first violation, how many more) per invariant the point failed, in DESIGN order."""
    firsts: dict[str, dict[str, Any]] = {}
    for violation in point["violations"]:
        firsts.setdefault(violation["invariant"], violation)
    totals = violation_totals(point)
    return [(firsts[inv], max(0, totals.get(inv, 1) - 1)) for inv in _by_design_order(firsts)]


# ---- JUnit ----
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: Any) -> str:
    """Text XML 1.0 can hold: a control character (from a file name, say) is written escaped."""
    return _XML_INVALID.sub(lambda m: repr(m.group())[1:-1], str(text))


def junit_classname(middlebox: dict[str, Any] | None) -> str:
    """``ftmbctl.verify.<name>``: the built-in's name, or the class name of a file or module spec
    (never a path, which a reporter would split on its dots)."""
    mb = middlebox or {}
    spec = str(mb.get("spec") or mb.get("name") or "")
    name = spec.rsplit(":", 1)[-1] if ":" in spec else spec
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"ftmbctl.verify.{name}" if name else "ftmbctl.verify"


def _failure_body(point: dict[str, Any]) -> str:
    violations = point["violations"]
    lines = [violation_detail(violations[0])]
    cause = likely(violations[0])
    if cause:
        lines.append(cause)
    shown: dict[str, int] = {}
    for violation in violations[:BODY_VIOLATIONS]:
        shown[violation["invariant"]] = shown.get(violation["invariant"], 0) + 1
    lines += [f"{v['invariant']}: {violation_detail(v)}" for v in violations[1:BODY_VIOLATIONS]]
    totals = violation_totals(point)
    more = [f"+{totals[inv] - shown.get(inv, 0)} more {inv}" for inv in _by_design_order(totals)
            if totals[inv] > shown.get(inv, 0)]
    if more:
        lines.append(", ".join(more))
    return "\n".join(lines)


def _now(timestamp: datetime | None) -> str:
    when = timestamp or datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _suites(cases: list[ET.Element], properties: dict[str, Any], timestamp: datetime | None,
            hostname: str | None) -> str:
    """``<testsuites>`` holding one ``<testsuite>``; every count and time is that of the elements."""
    totals = {"tests": len(cases),
              "failures": sum(1 for c in cases if c.find("failure") is not None),
              "errors": sum(1 for c in cases if c.find("error") is not None),
              "skipped": 0}
    seconds = f"{sum(float(c.get('time', 0)) for c in cases):.3f}"
    counts = {k: str(v) for k, v in totals.items()}
    root = ET.Element("testsuites", name=SUITE_NAME, **counts, time=seconds)
    suite = ET.SubElement(root, "testsuite", name=SUITE_NAME, **counts, time=seconds, timestamp=_now(timestamp),
                          hostname=_xml(hostname or socket.gethostname() or "localhost"))
    props = ET.SubElement(suite, "properties")
    for name, value in properties.items():
        ET.SubElement(props, "property", name=name, value=_xml(value))
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def report_junit(report: SweepReport, timestamp: datetime | None = None, hostname: str | None = None) -> str:
    """One test case per crash point, with at most one ``<failure>``: the first violation (type: its
    invariant), the next few and the counts of the rest in its body. The suite's ``time`` is the sum
    of the cases' (crash points run in parallel: the wall time is the ``wall_seconds`` property)."""
    doc = report.as_dict()
    classname = junit_classname(doc.get("middlebox"))
    cases = []
    for point in doc["crash_points"]:
        case = ET.Element("testcase", classname=classname, name=_xml(point_label(point)),
                          time=f"{float(point.get('seconds') or 0):.3f}")
        if not point["consistent"]:
            first = point["violations"][0] if point["violations"] else {
                "invariant": next(iter(violation_totals(point)), "inconsistent"), "message": "inconsistent"}
            failure = ET.SubElement(case, "failure", message=_xml(first.get("message", "")),
                                    type=_xml(first["invariant"]))
            failure.text = _xml(_failure_body(point)) if point["violations"] else None
        broken = point_promises(point)
        if broken:  # counted, not failed (--also-lose): said beside the case
            ET.SubElement(case, "system-out").text = _xml(f"promises broken: {broken}")
        cases.append(case)
    seeds = doc.get("hash_seeds") or {}
    mb = doc.get("middlebox") or {}
    properties = {"run": doc["run"], "middlebox": mb.get("spec", ""), "seed": doc["seed"],
                  "record_hash_seed": seeds.get("record", ""), "recovery_hash_seed": seeds.get("recovery", ""),
                  "wall_seconds": f"{float(doc.get('seconds') or 0):.3f}"}
    lost = lost_words(doc.get("selection") or {})
    totals = promise_totals(doc["crash_points"])
    if lost is not None and totals is not None:
        properties["also_lose"] = lost
        for kind in KINDS:
            found = totals["by_kind"][kind]
            properties[f"promises_broken.{kind}"] = (f"{found['count']} at {found['crash_points']} of "
                                                     f"{totals['crash_points']} crash points")
    return _suites(cases, properties, timestamp, hostname)


def error_junit(run: str, message: str, error_type: str, timestamp: datetime | None = None,
                hostname: str | None = None) -> str:
    """A run that could not be verified (damaged, bad input): one test case holding one ``<error>``."""
    case = ET.Element("testcase", classname="ftmbctl.verify", name=_xml(f"verify {run}"), time="0.000")
    ET.SubElement(case, "error", message=_xml(message), type=_xml(error_type))
    return _suites([case], {"run": run}, timestamp, hostname)
