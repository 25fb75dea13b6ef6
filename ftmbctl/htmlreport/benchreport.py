"""The report of ``ftmbctl bench``: every metric beside its target and the paper's figure.

Made from the benchmark's result (bench.run_benchmarks, the same object ``--json`` prints): a
table of every metric, a figure of each metric against its target, and where the benchmark
measured what the paper measured (release delay, recovery time), a figure beside the paper's.
"""

from __future__ import annotations

import re
from typing import Any

from ftmbctl.bench import (PAPER, PAPER_FTMB_DELAY_US, PAPER_RECOVERY_MS, PAPER_SNAPSHOT_DELAY_MS, machine_line,
                           table_rows)
from ftmbctl.htmlreport import figures
from ftmbctl.htmlreport.page import Column, Html, Section, code, document, facts, figure, mark, paragraph, table

TARGET = re.compile(r"^\s*(<=|>=)\s*([0-9]+(?:\.[0-9]+)?)")  # "<= 1.15", ">= 60", "<= 1.3 and < 300 MB"


def target_rows(metrics: dict[str, Any]) -> list[tuple[str, float, float, str, bool]]:
    """(metric, value, target, "<=" or ">=", met) for every measured metric whose target is a
    bound on its value (its first bound, for a target of two)."""
    rows = []
    for name, m in metrics.items():
        found = TARGET.match(str(m.get("target", "")))
        if m.get("value") is None or m.get("met") is None or not found or float(found.group(2)) <= 0 \
                or m["value"] <= 0:
            continue
        rows.append((name, float(m["value"]), float(found.group(2)), found.group(1), bool(m["met"])))
    return rows


def bench_report(result: dict[str, Any]) -> str:
    """The whole page for one benchmark result."""
    c = result["config"]
    metrics = result["metrics"]
    sections = [summary_section(result), metrics_section(result)]
    release = metrics.get("release_delay", {}).get("raw", {})
    if release.get("replay") and release.get("no_replay"):
        sections.append(release_section(release))
    scaling = metrics.get("recovery_scaling", {}).get("raw", {})
    if scaling.get("short") and scaling.get("long"):
        sections.append(recovery_section(scaling))
    met = sum(1 for m in metrics.values() if m.get("met"))
    lede = (f"{c['middlebox']} with {c['queues']} queues on {c['packets']:,} packets of {c['trace']}: "
            f"{met} of {len(metrics)} targets met. A missed target is a result, not an error.")
    return document("ftmbctl bench", lede, sections,
                    "Written by ftmbctl bench; the FTMB paper's figures are from its SIGCOMM 2015 evaluation (C++ on "
                    "Click); figures drawn with matplotlib as inline SVG.")


def summary_section(result: dict[str, Any]) -> Section:
    c = result["config"]
    rows = [("machine", machine_line(result["machine"])),
            ("middlebox", f"{c['middlebox']}, {c['queues']} queues, {c['scheduler']} scheduler"),
            ("trace", Html(f"{code(c['trace'])} ({c['packets']:,} packets)")),
            ("snapshots", f"every {c['snapshot_every']:,} packets; logs flushed every {c['flush_every']:,} records"),
            ("command", code(result.get("command", "ftmbctl bench"))),
            ("took", f"{float(result.get('seconds', 0)):.1f} s{', --quick' if c.get('quick') else ''}")]
    return Section("summary", "Summary", [facts(rows)])


def metrics_section(result: dict[str, Any]) -> Section:
    rows = [[name, value, target, mark(met, None if met == "-" else met == "met"), details, PAPER.get(name, "-")]
            for name, value, target, met, details in table_rows(result)]
    columns = ["metric", Column("value", True), "target", "met", "details", "FTMB paper"]
    parts: list[str] = [table(columns, rows)]
    plotted = target_rows(result["metrics"])
    if plotted:
        caption = ("Each metric's measured value divided by its target, on a log axis: at 1x a metric is exactly "
                   "at its target; a lower-is-better metric meets it left of the line, a higher-is-better one "
                   "right of it. Circles met their target, crosses missed it.")
        parts.insert(0, figure(figures.bench_targets(plotted), caption))
    else:
        parts.append(paragraph("No metric with a numeric target was measured: nothing to draw.", "note"))
    return Section("metrics", "Metrics against their targets", parts)


def release_section(raw: dict[str, Any]) -> Section:
    replay, no_replay = raw["replay"], raw["no_replay"]
    rows = [("FTMB median", replay["median_us"]), ("FTMB p99", replay["p99_us"]),
            ("No-Replay median", no_replay["median_us"]), ("No-Replay p99", no_replay["p99_us"])]
    caption = (f"Median and 99th-percentile release delays of FTMB and of the No-Replay baseline ({raw.get('clock', '?')} "
               f"clock, snapshot every {raw.get('snapshot_every', '?'):,} packets), beside the paper's: FTMB adds "
               f"{PAPER_FTMB_DELAY_US:g} µs at the median, snapshot-only designs {PAPER_SNAPSHOT_DELAY_MS[0]:g}-"
               f"{PAPER_SNAPSHOT_DELAY_MS[1]:g} ms.")
    svg = figures.bench_release(rows, PAPER_FTMB_DELAY_US, PAPER_SNAPSHOT_DELAY_MS)
    return Section("release", "Release delay beside the paper", [figure(svg, caption)])


def recovery_section(raw: dict[str, Any]) -> Section:
    series = [(f"{raw['short_packets']:,}-packet trace", raw["short"]),
              (f"{raw['long_packets']:,}-packet trace", raw["long"])]
    caption = ("Each crash the benchmark recovered from, by inputs since the snapshot: restore (squares), replay "
               "(triangles) and the whole recovery (circles); filled for the short trace, hollow for the long one. "
               f"The shaded band is the paper's range of recovery times, {PAPER_RECOVERY_MS[0]:g}-"
               f"{PAPER_RECOVERY_MS[1]:g} ms.")
    return Section("recovery", "Recovery time beside the paper",
                   [figure(figures.bench_recovery(series, PAPER_RECOVERY_MS), caption)])
