"""What the HTML report shows, read from a run directory: plain data, nothing drawn.

Everything gathered here is bounded whatever the run's length, so that the report of a
1,000,000-packet run is as small and as quick as that of a short one: release delays are read
from at most ``MAX_DELAYS`` outputs (whole release chunks spread evenly over the run), log volume
is summed per stretch of input packets (at most ``VOLUME_STRETCHES`` of them), and the crash-point
map draws at most ``MAP_POINTS`` points (every failing one first). Whatever is sampled says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from ftmbctl import records as rec
from ftmbctl.errors import BadInput
from ftmbctl.rundir import RunDir
from ftmbctl.snapshot import snapshot_name
from ftmbctl.stats import percentile
from ftmbctl.store import FILE_HEADER
from ftmbctl.verify import SweepReport, load_report

MAX_DELAYS = 100_000  # release delays read per run
VOLUME_STRETCHES = 100  # log volume is summed over at most this many stretches of the run
STRETCH_CHUNKS = 4  # and a stretch spans at least this many input chunks
MAP_POINTS = 2_000  # crash points drawn on the map
T = TypeVar("T")


@dataclass
class Delays:
    """Release delays (release_ns - finish_ns) of one run's outputs, sorted."""

    label: str  # the run as named on the command line
    mode: str  # "ftmb" or "no-replay"
    clock: str  # "simulated" (chaos scheduler) or "wall" (threads)
    outputs: int  # outputs the run released
    sample: list[int]  # the delays read, in ns, sorted

    @property
    def sampled(self) -> bool:
        return len(self.sample) < self.outputs

    def quantile(self, p: float) -> int | None:
        """Nearest-rank quantile (p in 0..1) of the delays read, as every report takes it."""
        return percentile(self.sample, p * 100)

    @property
    def at_once(self) -> int:
        """Outputs read that left as soon as they were made (delay 0: no point on a log axis)."""
        return sum(1 for d in self.sample if d <= 0)


@dataclass
class Volume:
    """How the logs grew along the run, per stretch of input packets, and the snapshots."""

    stretch: int  # input packets per stretch (the last may be shorter)
    ends: list[int]  # input packets durable at the end of each stretch (the first starts at 0)
    per_packet: dict[str, list[float]]  # log name -> bytes it grew per input packet, per stretch
    totals: dict[str, int]  # log name -> bytes of records (its 32-byte file header left out)
    snapshots: list[tuple[int, int, int]]  # (number, boundary in packets, bytes), in order


@dataclass
class MapPoint:
    """A crash point on the map: where in the run, how long it took, and the point itself."""

    packets: int  # input packets durable at the crash
    seconds: float
    point: dict[str, Any]  # as in crash/results.json

    @property
    def failed(self) -> bool:
        return not self.point["consistent"]


@dataclass
class RunFacts:
    """Everything the report of one run draws and tabulates."""

    path: Path
    manifest: dict[str, Any]
    delays: Delays
    volume: Volume
    sweep: SweepReport
    map_points: list[MapPoint]  # the crash points drawn on the map
    unplaced: int  # crash points with no known place in the run (not drawn)

    @property
    def packets(self) -> int:
        return int(self.manifest.get("stats", {}).get("packets_in", 0))


def spread(items: Sequence[T], k: int) -> list[T]:
    """At most ``k`` items evenly spaced over ``items`` (the first and last among them)."""
    if len(items) <= k:
        return list(items)
    if k <= 1:
        return list(items[-1:]) if k == 1 else []
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


def no_results(path: Path) -> BadInput:
    return BadInput(f"{path} has no crash results (crash/results.json) to report: run `ftmbctl crash-replay "
                    f"{path}` (or `ftmbctl verify {path}`, which runs the default sweep) first")


def gather_run(path: Path) -> RunFacts:
    """A complete run's facts, its crash results included (which must exist). The run is checked
    against its manifest first, as verify checks it: results about a run that has since been
    damaged mean nothing."""
    sweep = load_report(path)
    if sweep is None:
        raise no_results(path)
    run = RunDir(path)
    volume, packets_at = scan_timeline(run, {p["event"] for p in sweep.points if p.get("variant") != "kill"})
    drawn, unplaced = map_points(sweep.points, packets_at)
    return RunFacts(path, run.manifest, read_delays(run, str(path)), volume, sweep, drawn, unplaced)


def compared_delays(path: Path, other: Path) -> Delays:
    """The release delays of ``other``: a complete, intact run of the same trace as ``path``
    (delays compare only on one trace), which needs no crash results."""
    mine, compared = RunDir(path).manifest["trace"], RunDir(other)
    theirs = compared.manifest["trace"]
    if mine["sha256"] != theirs["sha256"]:
        raise BadInput(f"--compare {other} was recorded from {theirs['path']} and {path} from {mine['path']}, "
                       f"another trace (SHA-256 {theirs['sha256'][:12]}… vs {mine['sha256'][:12]}…): release "
                       "delays compare only on the same trace")
    compared.check_complete()
    return read_delays(compared, str(other))


def read_delays(run: RunDir, label: str) -> Delays:
    """Release delays of the run's outputs: all of them, or whole chunks of ``output.log`` spread
    evenly over it until ``MAX_DELAYS`` are read (a chunk is one release batch: taking whole
    ones keeps every part of the run, and the chunk index finds them from chunk headers alone)."""
    log, index = run.log("output.log"), run.chunk_index("output.log")
    chunks = len(index.offsets)
    keep = chunks if index.records <= MAX_DELAYS else max(1, chunks * MAX_DELAYS // max(index.records, 1))
    delays: list[int] = []
    for number in spread(range(chunks), keep):
        chunk = log.chunk_at(index.offsets[number], index.firsts[number])
        delays.extend(o.release_ns - o.finish_ns for o in log.decode(chunk, rec.iter_outputs))
    delays.sort()
    scheduler = run.manifest.get("scheduler", "chaos")
    return Delays(label, run.manifest.get("mode", "ftmb"), "simulated" if scheduler == "chaos" else "wall",
                  index.records, delays)


def _lengths(event: rec.Event) -> tuple[int, ...]:
    return (event.input_len, *event.queue_len, event.output_len)


def scan_timeline(run: RunDir, wanted: set[int]) -> tuple[Volume, dict[int, int]]:
    """One pass over the timeline: each log's length at the end of every stretch of input
    packets, the snapshots (each made durable right after the input flush at its boundary), and
    the input packets durable at each ``wanted`` event (the crash points)."""
    names = ["input.log", *run.queue_log_names(), "output.log"]
    packets = max(1, int(run.manifest.get("stats", {}).get("packets_in", 0)))
    # a stretch shorter than a few chunks would show the chunking, not the log's growth
    stretch = max(-(-packets // VOLUME_STRETCHES), STRETCH_CHUNKS * int(run.manifest["flush_every"]))
    last: dict[int, tuple[int, tuple[int, ...]]] = {}  # stretch -> (input records, lengths) at its last event
    snapshots: list[tuple[int, int, int]] = []
    packets_at: dict[int, int] = {}
    for event in run.log("timeline.log").records(rec.iter_events):
        inputs = event.input_records
        last[max(0, inputs - 1) // stretch] = (inputs, _lengths(event))
        if event.index in wanted:
            packets_at[event.index] = inputs
        if event.kind == rec.EV_SNAPSHOT_DURABLE:
            path = run.path / "snapshots" / snapshot_name(event.arg)
            snapshots.append((event.arg, inputs, path.stat().st_size if path.is_file() else 0))
    ends: list[int] = []
    grown: dict[str, list[float]] = {name: [] for name in names}
    before_inputs, before = 0, (FILE_HEADER.size,) * len(names)
    for _stretch, (inputs, lengths) in sorted(last.items()):
        span = max(1, inputs - before_inputs)  # a stretch without an input flush joins the next
        ends.append(inputs)
        for i, name in enumerate(names):
            grown[name].append((lengths[i] - before[i]) / span)
        before_inputs, before = inputs, lengths
    totals = {name: before[i] - FILE_HEADER.size for i, name in enumerate(names)}
    return Volume(stretch, ends, grown, totals, snapshots), packets_at


def place(point: dict[str, Any], packets_at: dict[int, int]) -> int | None:
    """Input packets durable at a crash point: the timeline's at its event, or for a real crash
    (``crash-replay --kill``, whose "event" counts kills) what its recovery found durable."""
    if point.get("variant") != "kill":
        return packets_at.get(point["event"])
    recovery = point.get("recovery") or {}
    return recovery.get("durable_inputs")


def map_points(points: list[dict[str, Any]], packets_at: dict[int, int]) -> tuple[list[MapPoint], int]:
    """The crash points to draw: every failing one (up to ``MAP_POINTS``), then consistent ones
    spread evenly over the rest of the room; in timeline order. A point with no known place (a
    killed record that left nothing to recover) is not drawn: how many, second."""
    placed = [MapPoint(at, float(p.get("seconds") or 0), p) for p in points
              if (at := place(p, packets_at)) is not None]
    failing = [m for m in placed if m.failed][:MAP_POINTS]
    consistent = spread([m for m in placed if not m.failed], MAP_POINTS - len(failing))
    drawn = sorted(failing + consistent, key=lambda m: (m.point["event"], m.point["variant"]))
    return drawn, len(points) - len(placed)
