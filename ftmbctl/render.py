"""Rendering for the terminal: rich tables on stdout, progress on stderr. Only cli.py imports this."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ftmbctl.report import (invariant_summaries, likely, lost_words, point_firsts, promise_rows, short_label,
                            violation_detail)
from ftmbctl.stats import percentile

PROGRESS_EVERY_S = 5.0  # between two progress lines where there is no terminal

# Markup and emoji codes off: paths, class names and messages come from users, and "[red]" in a
# file name or ":fire:" in a class name must print as written. Styles are given as Text objects.
stdout = Console(highlight=False, markup=False, emoji=False)
stderr = Console(stderr=True, highlight=False, markup=False, emoji=False)


def note(message: str) -> None:
    """A line for the person at the terminal (stderr), never wrapped or interpreted."""
    stderr.print(message, soft_wrap=True)


def say(message: str) -> None:
    """A line of results (stdout), never wrapped or interpreted."""
    stdout.print(message, soft_wrap=True)


@contextmanager
def progress_bar(label: str, unit: str = "") -> Iterator[Callable[[int, int], None]]:
    """Progress on stderr; yields ``update(done, total)`` (total 0: not known). On a terminal, a
    bar; elsewhere (a CI log, a pipe), a line every PROGRESS_EVERY_S seconds with the count, the
    rate and the time left, so a long job is seen to move."""
    if stderr.is_terminal:
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=stderr, transient=True)
        task = bar.add_task(label, total=None)
        with bar:
            yield lambda done, total: bar.update(task, completed=done, total=total or None)
        return
    started = time.monotonic()
    last = [started]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            note(progress_line(label, done, total, now - started, unit))

    yield update


def progress_line(label: str, done: int, total: int, seconds: float, unit: str = "") -> str:
    """"record: 12,288/40,000 packets (31%), 8,150 packets/s, about 3 s left"."""
    what = f" {unit}" if unit else ""
    line = f"{label}: {done:,}" + (f"/{total:,}{what} ({done / total:.0%})" if total else what)
    rate = done / seconds if seconds > 0 else 0.0
    if rate:
        line += f", {rate:,.0f}{what}/s" if rate >= 10 else f", {rate:.1f}{what}/s"
        if total and total > done:
            line += f", about {human_seconds((total - done) / rate)} left"
    return line


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def human_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def record_summary(result: Any, scheduler: str) -> dict[str, Any]:
    delays = result.release_delays_ns
    return {
        "run": str(result.run_dir) if result.run_dir else None,
        "run_id": result.run_id,
        "seed": result.seed,
        "packets_in": result.packets_in,
        "packets_out": result.packets_out,
        "inputs_without_output": result.dropped,
        "pals": result.pals,
        "nondet_values": result.nondet,
        "events": result.events,
        "files": result.files,
        "snapshots": [{"number": n, "boundary": b, "pause_s": round(p, 6)} for n, b, p in result.snapshots],
        "release_delay_ns": {f"p{p}": percentile(delays, p) for p in (50, 90, 99)},
        "release_delay_clock": "simulated" if scheduler == "chaos" else "wall",
        "wall_seconds": round(result.wall_seconds, 3),
        "interrupted": result.interrupted,
    }


def print_record_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"recorded {summary['run']}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("run id", summary["run_id"])
    table.add_row("seed", str(summary["seed"]))
    table.add_row("packets in", f"{summary['packets_in']:,}")
    table.add_row("packets out", f"{summary['packets_out']:,}")
    table.add_row("inputs dropped (no output)", f"{summary['inputs_without_output']:,}")
    table.add_row("PALs", f"{summary['pals']:,}")
    table.add_row("non-deterministic values", f"{summary['nondet_values']:,}")
    table.add_row("durability events", f"{summary['events']:,}")
    for name, size in summary["files"].items():
        table.add_row(f"  {name}", f"{size:,} B")
    snaps = summary["snapshots"]
    pauses = [s["pause_s"] for s in snaps]
    if snaps:
        table.add_row("snapshots", f"{len(snaps)} (pause median {human_ns(int(sorted(pauses)[len(pauses) // 2] * 1e9))},"
                                   f" max {human_ns(int(max(pauses) * 1e9))})")
    else:
        table.add_row("snapshots", "0")
    d = summary["release_delay_ns"]
    table.add_row(f"release delay ({summary['release_delay_clock']} clock)",
                  f"p50 {human_ns(d['p50'])}  p90 {human_ns(d['p90'])}  p99 {human_ns(d['p99'])}")
    table.add_row("wall time", f"{summary['wall_seconds']:.2f} s")
    stdout.print(table)
    if summary.get("interrupted"):
        note(f"interrupted ({summary['interrupted']}): the run records the packets read until then and is "
             "complete for crash-replay and verify")


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


def print_run_description(doc: dict[str, Any]) -> None:
    mb = doc["middlebox"] or {}
    stdout.print(Text.assemble((doc["run"], "bold"), f"  run {doc['run_id']}  ",
                               ("complete", "") if doc["complete"] else ("incomplete", "red")))
    stdout.print(f"middlebox {mb.get('spec')} {' '.join(mb.get('options', []))}  queues {doc['queues']}  "
                 f"scheduler {doc['scheduler']}  seed {doc['seed']}  mode {doc['mode']}")
    table = Table(title="logs", title_justify="left")
    for col in ("file", "bytes", "chunks", "records", "torn bytes"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for f in doc["files"]:
        table.add_row(f["file"], f"{f['bytes']:,}", str(f["chunks"]), f"{f['records']:,}", str(f["torn_bytes"]))
    stdout.print(table)
    snaps = Table(title="snapshots", title_justify="left")
    for col in ("file", "number", "boundary (packets)", "bytes"):
        snaps.add_column(col, justify="left" if col == "file" else "right")
    for s in doc["snapshots"]:
        snaps.add_row(s["file"], str(s["number"]), f"{s['boundary']:,}", f"{s['bytes']:,}")
    stdout.print(snaps)
    variables = ", ".join(f"{v[0]}:{v[1]}" for v in doc["variables"])
    stdout.print(f"shared variables: {variables or 'none'}")


def print_file_description(doc: dict[str, Any]) -> None:
    """Plain lines (fast for long logs), one chunk header then its records, like rr dump."""
    out = stdout.file
    if "chunks" in doc:
        out.write(f"{doc['file']}: {doc['kind']} log, {doc['bytes']:,} bytes, {doc['records']:,} records"
                  f"{', torn tail of %d bytes dropped' % doc['torn_bytes'] if doc['torn_bytes'] else ''}\n")
        for chunk in doc["chunks"]:
            last = chunk["first_seq"] + chunk["count"] - 1
            out.write(f"chunk @{chunk['offset']}  records {chunk['first_seq']}..{last}  "
                      f"{chunk['stored_bytes']} bytes stored, {chunk['raw_bytes']} raw\n")
            for row in chunk["records"]:
                out.write("  " + _row_text(doc["kind"], row) + "\n")
        return
    if "manifest" in doc:
        out.write(json.dumps(doc["manifest"], indent=2) + "\n")
        return
    out.write(f"{doc['file']}: snapshot {doc['number']}{' (final state)' if doc['final'] else ''}, "
              f"boundary {doc['boundary']} packets, queue records {doc['queue_records']}, "
              f"input records {doc['input_records']}, outputs released {doc['outputs_released']}\n")
    for var in doc["variables"]:
        value = json.dumps(var["value"])
        if len(value) > 120:
            value = value[:117] + "..."
        out.write(f"  {var['name']} ({var['kind']}, {var['accesses']} accesses) = {value}\n")
    for q, local in enumerate(doc["local"] or []):
        text = json.dumps(local)
        out.write(f"  queue {q} local: {text[:117] + '...' if len(text) > 120 else text}\n")


def _row_text(kind: str, row: dict[str, Any]) -> str:
    if kind == "input":
        return f"in  #{row['id']}  t={row['ts_ns'] / 1e9:.6f}  linktype {row['linktype']}  {row['caplen']}/{row['orig_len']} B"
    if kind == "queue":
        if row["type"] == "pal":
            return (f"PAL pkt {row['packet']}  var {row['var']} {row['name']}  seq {row['seq']}  "
                    f"{'unchanged' if row['digest'] is None else 'digest ' + row['digest']}")
        return f"ND  pkt {row['packet']}  {row['type']} = {row['value']}"
    if kind == "output":
        oid = row["output_id"]
        return (f"out ({oid[0]},{oid[1]})  deps {row['deps']}  finish {row['finish_ns'] / 1e9:.6f}  "
                f"release {row['release_ns'] / 1e9:.6f}  {row['caplen']} B")
    return (f"ev {row['event']:>5} {row['kind']:<16} arg {row['arg']:<5} snap {row['snapshot']:>3}  "
            f"input {row['input'][1]} rec  output {row['output'][1]} rec  queues {[q[1] for q in row['queues']]}")


SWEEP_POINTS = 10  # failing crash points listed in the table
SWEEP_ROWS = 24  # table rows at most (a point has a row per invariant it failed)
SWEEP_HEADERS = ("crash after event", "invariant", "first violation", "more")


def print_sweep(report: Any) -> None:
    """The verify report: a line per failed invariant (how many crash points, the first divergence
    and its likely cause), a short table of the first failing crash points, then the summary."""
    doc = report.as_dict()
    points = doc["crash_points"]
    failed = [p for p in points if not p["consistent"]]
    for item in invariant_summaries(failed):
        cause = likely(item.first)
        stdout.print(Text.assemble((item.invariant, "bold red"),
                                   f": {item.points:,} of {len(points):,} crash points; first at event "
                                   f"{short_label(item.first_point)}: {violation_detail(item.first)}",
                                   f". {cause}" if cause else ""), soft_wrap=True)
    if failed:
        _print_failing_points(failed)
    lost = lost_words(doc["selection"])
    promises = promise_rows(points)
    if promises is not None:
        _print_promises(promises, lost)
    summary = Table(title=f"verify {doc['run']}", show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value")
    chain = sum(1 for p in points if p.get("chain"))
    summary.add_row("crash points", f"{len(points):,} ({chain:,} check the snapshot chain)")
    summary.add_row("consistent", f"{len(points) - len(failed):,}")
    summary.add_row("inconsistent", Text(f"{len(failed):,}", style="bold red" if failed else ""))
    if lost is not None:
        summary.add_row("lost with the master", f"{lost} (promises counted above, not judged)")
    seeds = doc.get("hash_seeds") or {}
    summary.add_row("PYTHONHASHSEED", f"record {seeds.get('record', '?')}, recovery {seeds.get('recovery', '?')}"
                    if seeds else "not recorded")
    summary.add_row("seed of the sample", str(doc["seed"]))
    seconds = float(doc.get("seconds") or 0)
    rate = len(points) / seconds if seconds else 0
    summary.add_row("time", f"{seconds:.2f} s ({rate:.1f} crash points/s)")
    verdict = Text("consistent", style="bold green") if not failed else Text("INCONSISTENT", style="bold red")
    summary.add_row("verdict", verdict)
    stdout.print(summary)


def _print_promises(rows: list[tuple[str, str, str]], lost: str | None) -> None:
    """The promises to the network that broke when components failed with the master: counted,
    not judged (formats/components.md)."""
    table = Table(title=f"promises broken (lost with the master: {lost})", title_justify="left")
    table.add_column("promise")
    table.add_column("broken at crash points", justify="right")
    table.add_column("in all", justify="right")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)


def _print_failing_points(failed: list[dict[str, Any]]) -> None:
    """The first few failing crash points: a row per invariant with its first violation and how
    many more; each row one line (long text is cut: the lines above have it whole)."""
    shown = _first_failing(failed)
    rows = [(short_label(p) if i == 0 else "", v["invariant"], violation_detail(v), f"+{more:,}" if more else "")
            for p, firsts in shown for i, (v, more) in enumerate(firsts)]
    widths = [max([len(header)] + [len(row[c]) for row in rows]) for c, header in enumerate(SWEEP_HEADERS)]
    # the violation's text gives way (cut with "…"): the other cells always show whole
    room = max(10, stdout.width - widths[0] - widths[1] - widths[3] - 13)  # 13: borders, padding
    table = Table(title="first failing crash points", title_justify="left")
    for c, header in enumerate(SWEEP_HEADERS):
        table.add_column(header, no_wrap=True, overflow="ellipsis", style="red" if c == 1 else None,
                         justify="right" if c == 3 else "left", min_width=None if c == 2 else widths[c],
                         max_width=room if c == 2 else None)
    for row in rows:
        table.add_row(*row)
    stdout.print(table)
    if len(failed) > len(shown):
        say(f"... and {len(failed) - len(shown):,} more crash points")


def _first_failing(failed: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[tuple[dict[str, Any], int]]]]:
    """The first SWEEP_POINTS failing points, fewer if their rows (one per invariant) pass SWEEP_ROWS."""
    shown: list[tuple[dict[str, Any], list[tuple[dict[str, Any], int]]]] = []
    rows = 0
    for point in failed[:SWEEP_POINTS]:
        firsts = point_firsts(point)
        if shown and rows + len(firsts) > SWEEP_ROWS:
            break
        shown.append((point, firsts[:SWEEP_ROWS]))
        rows += len(firsts)
    return shown


def print_recovery(res: Any) -> None:
    table = Table(title=f"recovered into {res.out_dir}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")  # paths in warnings are wrapped, never cut
    table.add_row("snapshot restored", f"{res.snapshot} (boundary {res.boundary:,} packets)" if res.snapshot
                  else "none (initial state)")
    for warning in res.warnings:
        table.add_row("warning", warning)
    torn = {k: v for k, v in res.torn_bytes.items() if v}
    if res.mode == "no-replay":
        _no_replay_rows(table, res, torn)
        stdout.print(table)
        return
    table.add_row("durable inputs", f"{res.durable_inputs:,}")
    table.add_row("torn tails dropped", ", ".join(f"{k}: {v} B" for k, v in torn.items()) or "none")
    table.add_row("logged records per queue", str(res.logged))
    table.add_row("causal cut per queue", f"{res.cut} ({res.cut_rounds} fixpoint rounds)")
    table.add_row("replayed in order", f"{res.replayed:,}")
    table.add_row("free accesses / live values", f"{res.free_accesses:,} / {res.free_nondet:,}")
    table.add_row("released before the crash", f"{res.released_before:,} ({res.duplicates_dropped:,} regenerated "
                  "and dropped as duplicates)")
    table.add_row("output mismatches", str(len(res.output_mismatches)))
    table.add_row("divergences", "; ".join(f"{d['kind']} at packet {d['packet']}: log {d['expected']}, "
                                           f"replay {d['got']}" for d in res.divergences[:3]) or "none")
    table.add_row("inputs processed", f"{res.inputs_processed:,}")
    stdout.print(table)


def _no_replay_rows(table: Table, res: Any, torn: dict[str, int]) -> None:
    """A No-Replay recovery replays nothing: what it lost and whether its promises held."""
    table.add_row("mode", "no-replay: restore only, nothing replayed")
    table.add_row("inputs arrived before the crash", f"{res.durable_inputs:,}")
    table.add_row("inputs lost (after the snapshot)", f"{res.lost_inputs:,}")
    table.add_row("torn tails dropped", ", ".join(f"{k}: {v} B" for k, v in torn.items()) or "none")
    uncovered = res.uncovered_outputs
    table.add_row("released before the crash", f"{res.released_before:,} after the snapshot, "
                  + (f"{len(uncovered):,} of them not covered by it (first {tuple(uncovered[0])})" if uncovered
                     else "all covered by it"))
    table.add_row("inputs processed", f"{res.inputs_processed:,}")


@contextmanager
def step_status(label: str) -> Iterator[Callable[[str], None]]:
    """Progress of work made of named steps, on stderr: one spinner line on a terminal, a line per
    step otherwise (a log keeps them). Yields ``update(message)``."""
    if not stderr.is_terminal:
        yield lambda message: note(f"  {message}")
        return
    with stderr.status(label) as status:
        yield lambda message: status.update(f"{label}: {message}")


def print_bench(result: dict[str, Any]) -> None:
    """The benchmark table: value, target and whether it is met, per metric (ftmbctl.bench)."""
    from ftmbctl.bench import machine_line, table_rows

    c = result["config"]
    table = Table(title=f"ftmbctl bench: {c['middlebox']}, {c['queues']} queues, {c['scheduler']} scheduler, "
                        f"{c['packets']:,} packets of {c['trace']}, snapshot every {c['snapshot_every']:,}"
                        f"{', --quick' if c['quick'] else ''}", title_justify="left")
    for col in ("metric", "value", "target", "met", "details"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for name, value, target, met, details in table_rows(result):
        style = {"met": "green", "not met": "bold red"}.get(met, "")
        table.add_row(name, value, target, Text(met, style=style), details)
    stdout.print(table)
    say(f"machine: {machine_line(result['machine'])}")
    say(f"command: {result['command']}")
    say(f"took {result['seconds']:.1f} s")


def print_lint(report: Any) -> None:
    """One line per finding in compiler form (paths relative to the current directory when they
    are under it) on stdout, and a count on stderr."""
    for finding in report.findings:
        say(finding.compiler_line(_relative(finding.file)))
    checked = _counted(len(report.targets), "middlebox", "middleboxes")
    silenced = f", {len(report.silenced)} silenced" if report.silenced else ""
    if report.clean:
        note(f"lint: clean: {checked}, {_counted(report.functions, 'function', 'functions')} checked{silenced}")
    else:
        note(f"lint: {_counted(len(report.findings), 'finding', 'findings')} in {checked}{silenced}")


def _counted(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def print_record_lint(doc: dict[str, Any]) -> None:
    """What lint says of the middlebox about to be recorded, on stderr: a record's results stay
    the only thing on stdout (--json)."""
    if doc.get("error"):
        note(f"lint: not checked: {doc['error']}")
        return
    for finding in doc.get("findings", []):
        note(f"lint: {_relative(finding['file'])}:{finding['line']}:{finding['col']}: {finding['code']} "
             f"{finding['message']}; {finding['fix']}")
    if doc.get("findings"):
        note("lint: the record goes on; `ftmbctl verify` names these lines beside the crash points they explain")


def print_guard_findings(findings: list[dict[str, Any]]) -> None:
    """The runtime guard's warnings, one line each, on stderr."""
    for finding in findings:
        note(f"guard: {_relative(finding['file'])}:{finding['line']}: {finding['code']} {finding['message']}; "
             f"{finding['fix']}")
