"""The report of one run: its sections, in the words of ``ftmbctl verify``'s text report.

Summary, crash-point map, release-delay CDF (beside a ``--compare`` run's), recovery time
against inputs since the snapshot, and log volume: each a figure (figures.py) with the table
of its numbers, so the page reads without the pictures too.
"""

from __future__ import annotations

import statistics
from typing import Any

from ftmbctl.htmlreport import figures
from ftmbctl.htmlreport.gather import MAP_POINTS, MAX_DELAYS, Delays, MapPoint, RunFacts, spread
from ftmbctl.htmlreport.page import Column, Html, Section, code, document, facts, figure, mark, paragraph, table
from ftmbctl.htmlreport.units import duration, share, size
from ftmbctl.report import invariant_summaries, likely, point_firsts, point_label, short_label, violation_detail
from ftmbctl.verify import INVARIANTS

FAILING_ROWS = 200  # failing crash points listed in the table (each one a row the map links to)
TIP_CHARS = 600  # longest hover text of a crash point
RECOVERY_BINS = 5  # rows of the recovery table: stretches of inputs since the snapshot
RECOVERY_POINTS = 300  # crash points drawn on the recovery figure (three marks each); the table has all


def point_anchor(point: dict[str, Any]) -> str:
    return f"point-{point['event']}-{point['variant']}"


def run_report(facts: RunFacts, compare: Delays | None = None) -> str:
    """The whole page for ``facts`` (its release delays drawn beside ``compare``'s)."""
    sweep = facts.sweep
    sections = [summary_section(facts, compare), map_section(facts), delay_section(facts.delays, compare),
                recovery_section(facts), volume_section(facts)]
    verdict = "consistent" if sweep.consistent else "INCONSISTENT"
    mb = facts.manifest["middlebox"]
    lede = (f"{mb['spec']} on {facts.manifest['trace']['path']}: {len(sweep.points):,} crash points, {verdict}. "
            "Hover over a point of a figure for its numbers; every figure's numbers are also in the table below it.")
    return document(f"ftmbctl report: {facts.path}", lede, sections,
                    f"Written by ftmbctl from {facts.path} (crash/results.json, the logs and the snapshots); "
                    "figures drawn with matplotlib as inline SVG.")


# ---- summary ----
def summary_section(f: RunFacts, compare: Delays | None) -> Section:
    man, sweep = f.manifest, f.sweep
    doc = sweep.as_dict()
    points = doc["crash_points"]
    failed = [p for p in points if not p["consistent"]]
    stats = man.get("stats", {})
    mb = man["middlebox"]
    seeds = doc.get("hash_seeds") or {}
    seconds = float(doc.get("seconds") or 0)
    rows: list[tuple[str, object]] = [
        ("run", code(f.path)),
        ("middlebox", code(" ".join([mb["spec"], *mb.get("options", [])]))),
        ("trace", Html(f"{code(man['trace']['path'])} ({stats.get('packets_in', 0):,} packets in, "
                       f"{stats.get('packets_out', 0):,} out)")),
        ("mode", man.get("mode", "ftmb")),
        ("queues", man["queues"]),
        ("scheduler", f"{man.get('scheduler', '?')}, seed {man.get('seed')}"),
        ("snapshots", f"every {man['snapshot_every']:,} packets ({stats.get('snapshots', 0):,} taken); "
                      f"logs flushed every {man['flush_every']:,} records"),
        ("verdict", mark("consistent" if not failed else "INCONSISTENT", not failed)),
        ("crash points", f"{len(points):,} ({sum(1 for p in points if p.get('chain')):,} check the snapshot chain); "
                         f"{len(points) - len(failed):,} consistent, {len(failed):,} inconsistent"),
        ("seed of the sample", doc["seed"]),
        ("PYTHONHASHSEED", f"record {seeds.get('record', '?')}, recovery {seeds.get('recovery', '?')}"
                           if seeds else "not recorded"),
        ("sweep time", f"{seconds:.2f} s ({len(points) / seconds:.1f} crash points/s)" if seconds else "-"),
    ]
    if compare is not None:
        rows.append(("compared with", Html(f"{code(compare.label)} ({compare.mode}, same trace): release delays")))
    return Section("summary", "Summary", [facts(rows), Html("<h3>Crash points by invariant</h3>"),
                                          invariant_table(points)])


def invariant_table(points: list[dict[str, Any]]) -> Html:
    """Every invariant: how many crash points failed it, the first of them and its first divergence."""
    found = {item.invariant: item for item in invariant_summaries([p for p in points if not p["consistent"]])}
    rows = []
    for invariant in [*INVARIANTS, *(i for i in found if i not in INVARIANTS)]:
        item = found.get(invariant)
        if item is None:
            rows.append([invariant, mark("held at every point", True), "-", "-", "-"])
        else:
            rows.append([invariant, mark(f"{item.points:,} of {len(points):,} failed", False),
                         short_label(item.first_point), violation_detail(item.first), likely(item.first) or "-"])
    return table(["invariant", "crash points", "first failing point", "first divergence", "likely cause"], rows)


# ---- the crash-point map ----
def point_tip(m: MapPoint) -> str:
    """Hover text of a crash point: what it is, where, how long; a failing one's first divergence."""
    p = m.point
    lines = [f"{point_label(p)}: {'consistent' if p['consistent'] else 'INCONSISTENT'}",
             f"{m.packets:,} input packets durable; {m.seconds * 1e3:.1f} ms to recover and check"]
    for violation, more in point_firsts(p):
        lines.append(f"{violation['invariant']}: {violation_detail(violation)}" + (f" (+{more} more)" if more else ""))
    text = "\n".join(lines)
    return text if len(text) <= TIP_CHARS else text[:TIP_CHARS - 1] + "…"


def map_section(f: RunFacts) -> Section:
    sweep = f.sweep
    drawn = f.map_points
    failing = [p for p in sweep.points if not p["consistent"]]
    listed = {point_anchor(p) for p in failing[:FAILING_ROWS]}
    links = [f"#{point_anchor(m.point)}" if point_anchor(m.point) in listed else None for m in drawn]
    boundaries = [b for _n, b, _s in f.volume.snapshots]
    svg = figures.crash_map(drawn, boundaries, [point_tip(m) for m in drawn], links,
                            "Crash points along the run: time to recover and check, by verdict")
    note = ""
    if len(drawn) + f.unplaced < len(sweep.points):
        note += (f" The sweep has {len(sweep.points):,} crash points: every failing one (up to {MAP_POINTS:,}) is "
                 f"drawn, and consistent ones spread evenly over the run fill the rest, {len(drawn):,} in all.")
    if f.unplaced:
        note += (f" {f.unplaced:,} real crashes (--kill) left no run to recover, so their place in the run is not "
                 "known: they are not drawn.")
    caption = ("Every crash point of the sweep at the input packets durable when it crashed, against the time its "
               "recovery and check took. Circles: consistent; crosses: inconsistent; dotted lines: snapshot "
               "boundaries. Hover over a point for what it is; click a cross for its first divergence." + note)
    parts = [figure(svg, caption),
             Html('<div id="map-detail" class="detail" hidden aria-live="polite"></div>')]
    if failing:
        packets = {point_anchor(m.point): m.packets for m in drawn}
        parts += [Html("<h3>Failing crash points</h3>"), failing_table(f, failing, packets)]
    else:
        parts.append(paragraph("Every crash point recovered consistently.", "note"))
    return Section("map", "Crash points along the run", parts)


def failing_table(f: RunFacts, failing: list[dict[str, Any]], packets: dict[str, int]) -> Html:
    """A row per failing crash point (the first FAILING_ROWS): the invariants it failed, its first
    divergence (packet, variable, access, expected vs got) and its likely cause. The map's crosses
    link here; each invariant's own first divergence is in the cross's hover text."""
    rows, ids = [], []
    for p in failing[:FAILING_ROWS]:
        firsts = point_firsts(p)
        at = packets.get(point_anchor(p))
        rows.append([short_label(p), "-" if at is None else f"{at:,}",
                     ", ".join(v["invariant"] for v, _more in firsts) or "?",
                     violation_detail(firsts[0][0]) if firsts else "-",
                     likely(firsts[0][0]) if firsts else "-",
                     f"{float(p.get('seconds') or 0) * 1e3:.1f}"])
        ids.append(point_anchor(p))
    more = len(failing) - len(rows)
    extra = paragraph(f"… and {more:,} more failing crash points: `ftmbctl verify {f.path} --json` lists them "
                      "all.", "note") if more > 0 else ""
    columns = ["crash after event", Column("input packets durable", True), "invariants failed",
               "first divergence", "likely cause", Column("time (ms)", True)]
    return Html(table(columns, rows, row_ids=ids) + extra)


# ---- release delays ----
def delay_section(delays: Delays, compare: Delays | None) -> Section:
    runs = [delays] + ([compare] if compare is not None else [])
    notes = []
    if any(d.sampled for d in runs):
        notes.append(f"A run with more than {MAX_DELAYS:,} outputs is read in whole release batches spread evenly "
                     "over it (the table says how many outputs were read).")
    if len({d.clock for d in runs}) > 1:
        notes.append("The two runs were recorded under different schedulers, so their delays are measured on "
                     "different clocks (simulated and wall): compare their shapes, not their values.")
    if any(d.at_once for d in runs):
        notes.append("Outputs released at once (delay 0) have no place on a log axis: a curve starts at their share.")
    caption = ("The share of outputs released within a given delay after their packet was processed, on a log "
               "axis; the median and the 99th percentile of each run are marked. " + " ".join(notes))
    rows = [[d.label, d.mode, d.clock, f"{d.outputs:,}", f"{len(d.sample):,}", share(d.at_once, len(d.sample)),
             duration(d.quantile(0.5)), duration(d.quantile(0.9)), duration(d.quantile(0.99)),
             duration(d.sample[-1] if d.sample else None)] for d in runs]
    columns = ["run", "mode", "clock", Column("outputs", True), Column("read", True), Column("released at once", True),
               Column("median", True), Column("p90", True), Column("p99", True), Column("max", True)]
    parts = [figure(figures.delay_cdf(runs), caption) if any(d.sample for d in runs)
             else paragraph("No output was released: there is no delay to draw.", "note"), table(columns, rows)]
    return Section("delays", "Output release delay", parts)


# ---- recovery time ----
def recovery_row(point: dict[str, Any], snapshot_every: int) -> tuple[int, float, float | None, float | None]:
    """(inputs since the snapshot, whole point s, restore s, replay s) of a recovered point. A
    --kill point's summary names its snapshot but not its boundary: snapshot k is at packet
    k * snapshot_every."""
    r = point["recovery"]
    boundary = r["boundary"] if "boundary" in r else int(r.get("snapshot", 0)) * snapshot_every
    return (int(r.get("durable_inputs", 0)) - int(boundary), float(point.get("seconds") or 0),
            r.get("restore_seconds"), r.get("replay_seconds"))


def recovery_section(f: RunFacts) -> Section:
    title = "Recovery time against inputs since the last snapshot"
    recovered = [p for p in f.sweep.points if p.get("recovery")]
    rows = [recovery_row(p, int(f.manifest["snapshot_every"])) for p in recovered]
    if not rows:
        return Section("recovery", title, [paragraph("No crash point recovered: nothing to draw.", "note")])
    split = all(r[2] is not None and r[3] is not None for r in rows)
    caption = ("For each crash point that recovered, the inputs logged since the snapshot it restored, against the "
               "time to restore (set up the middlebox, load the snapshot, read the logs, compute the causal cut) "
               "and to replay the durable inputs; grey dots are the whole crash point, the check up to the next "
               "snapshot boundary included.")
    if f.manifest.get("mode") == "no-replay":
        caption += " A No-Replay recovery replays nothing: the inputs since the snapshot are lost."
    if not split:
        caption += (" These results do not keep restore and replay apart (those of real crashes, --kill, never do, "
                    f"and those written before ftmbctl did): run `ftmbctl crash-replay {f.path}` to see them.")
    drawn = spread(list(zip(recovered, rows)), RECOVERY_POINTS)
    if len(drawn) < len(rows):
        caption += (f" {len(drawn):,} of the {len(rows):,} crash points are drawn, spread evenly over the sweep; "
                    "the table counts them all.")
    names = [f"event {short_label(p)}" for p, _r in drawn]
    parts = [figure(figures.recovery_times([r for _p, r in drawn], names), caption), recovery_table(rows, split)]
    return Section("recovery", title, parts)


def recovery_table(rows: list[tuple[int, float, float | None, float | None]], split: bool) -> Html:
    """Medians per stretch of inputs since the snapshot (RECOVERY_BINS equal stretches)."""
    top = max(r[0] for r in rows)
    width = max(1, -(-(top + 1) // RECOVERY_BINS))
    body = []
    for low in range(0, top + 1, width):
        group = [r for r in rows if low <= r[0] < low + width]
        if group:
            body.append([f"{low:,}-{min(low + width - 1, top):,}", f"{len(group):,}",
                         _median_ms(group, 2) if split else "-", _median_ms(group, 3) if split else "-",
                         _median_ms(group, 1)])
    columns = ["inputs since the snapshot", Column("crash points", True), Column("median restore (ms)", True),
               Column("median replay (ms)", True), Column("median crash point (ms)", True)]
    return table(columns, body)


def _median_ms(rows: list[tuple[int, float, float | None, float | None]], column: int) -> str:
    return f"{statistics.median(float(r[column] or 0) for r in rows) * 1e3:.1f}"


# ---- log volume ----
def volume_section(f: RunFacts) -> Section:
    volume = f.volume
    packets = max(1, volume.ends[-1] if volume.ends else f.packets)
    caption = (f"Above: how many bytes each log grew by per input packet, over {len(volume.ends):,} stretches of "
               f"about {volume.stretch:,} packets (a log grows in chunks, so short stretches are uneven). Below: the size "
               "of each snapshot at its packet boundary.")
    rows = [[name, f"{total:,}", f"{total / packets:.2f}", size(total)] for name, total in volume.totals.items()]
    sizes = [s for _n, _b, s in volume.snapshots]
    snaps = (f"{len(sizes):,} snapshots: median {size(statistics.median(sizes))}, largest {size(max(sizes))}, "
             f"{size(sum(sizes))} in all") if sizes else "no snapshot was taken"
    columns = ["log", Column("bytes of records", True), Column("bytes per input packet", True), Column("size", True)]
    return Section("volume", "Log volume along the run",
                   [figure(figures.log_volume(volume), caption), table(columns, rows), paragraph(snaps)])
