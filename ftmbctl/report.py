"""Machine-readable verify reports: JSON and JUnit XML. Plain data in, text out (no terminal)."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from ftmbctl.verify import SweepReport


def report_json(report: SweepReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


def point_label(point: dict[str, Any]) -> str:
    variant = "" if point["variant"] == "clean" else f" {point['variant']}"
    chain = " [snapshot chain]" if point.get("chain") else ""
    return f"crash after event {point['event']} ({point['kind']}){variant}{chain}"


def report_junit(report: SweepReport) -> str:
    """One test case per crash point; a failure element per broken invariant."""
    failures = sum(1 for p in report.points if not p["consistent"])
    suite = ET.Element("testsuite", name="ftmbctl verify", tests=str(len(report.points)), failures=str(failures),
                       errors="0", time=f"{report.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run", value=report.run)
    ET.SubElement(props, "property", name="seed", value=str(report.seed))
    for point in report.points:
        case = ET.SubElement(suite, "testcase", classname=report.run, name=point_label(point),
                             time=f"{point.get('seconds', 0):.4f}")
        for violation in point["violations"]:
            failure = ET.SubElement(case, "failure", type=violation["invariant"], message=violation["message"])
            failure.text = json.dumps(violation, indent=1)
        if point.get("allowed"):
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(a["message"] for a in point["allowed"])
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
