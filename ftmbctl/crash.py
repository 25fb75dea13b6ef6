"""The crash model (DESIGN §5): crash points, and the crash image each one leaves.

A crash point is a timeline event e: the crash happens right after e became durable, so the
image holds each log cut at its length at e, the snapshots durable at e, and the outputs
released up to e. Variants:
- ``torn``: part of the next durability event's bytes also reached the disk: half of the
  next chunk of the log that event grows (a torn tail recovery must drop), or, when the next
  event makes a snapshot durable, half of that snapshot's temporary file (a crash while the
  snapshot was being written, which recovery must ignore).

An image is usually a view of the run directory with byte limits (``image_view``), so a crash
point costs nothing to make; ``write_image`` writes one out as a directory holding only the
durable bytes, which ``ftmbctl recover`` reads on its own.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftmbctl import records as rec
from ftmbctl.errors import UsageError
from ftmbctl.manifest import MANIFEST
from ftmbctl.rundir import SNAPSHOT_CACHE, BoundedCache, RunDir, snapshot_number
from ftmbctl.snapshot import snapshot_name
from ftmbctl.store import FILE_HEADER

CLEAN = "clean"
TORN = "torn"


@dataclass(frozen=True, order=True)
class CrashPoint:
    event: int
    variant: str = CLEAN

    @property
    def label(self) -> str:
        return f"{self.event}" if self.variant == CLEAN else f"{self.event}/{self.variant}"


@dataclass(frozen=True)
class ImageSpec:
    """What survives a crash point: byte limits per log, snapshots, a partial snapshot file, and
    the components that failed with the master (components.lose cut their logs back)."""

    limits: dict[str, int]
    max_snapshot: int
    partial_snapshot: tuple[int, int] | None = None  # (number, bytes of its .tmp that reached disk)
    torn_file: str | None = None
    lost: tuple[str, ...] = ()


def _log_lengths(run: RunDir, event: rec.Event) -> dict[str, int]:
    lengths = {"input.log": event.input_len, "output.log": event.output_len}
    for q, length in enumerate(event.queue_len):
        lengths[f"pal-{q}.log"] = length
    return lengths


def image_spec(run: RunDir, events: Sequence[rec.Event], point: CrashPoint) -> ImageSpec:
    if not 0 <= point.event < len(events):
        raise UsageError(f"crash point {point.event} is out of range: this run has events 0..{len(events) - 1}")
    event = events[point.event]
    limits = _log_lengths(run, event)
    if point.variant == CLEAN:
        return ImageSpec(limits, event.snapshot)
    if point.event + 1 >= len(events):
        raise UsageError(f"crash point {point.event} is the last event: nothing follows it to tear")
    following = events[point.event + 1]
    if following.kind == rec.EV_SNAPSHOT_DURABLE:
        size = (run.path / "snapshots" / snapshot_name(following.arg)).stat().st_size
        return ImageSpec(limits, event.snapshot, partial_snapshot=(following.arg, max(1, size // 2)))
    grown = _log_lengths(run, following)
    for name, length in grown.items():
        if length > limits[name]:
            limits[name] += max(1, (length - limits[name]) // 2)
            return ImageSpec(limits, event.snapshot, torn_file=name)
    raise UsageError(f"crash point {point.event}: the next event ({following.name}) writes nothing to tear")


def can_tear(events: Sequence[rec.Event], index: int) -> bool:
    if index + 1 >= len(events):
        return False
    nxt, cur = events[index + 1], events[index]
    return (nxt.kind == rec.EV_SNAPSHOT_DURABLE or nxt.input_len > cur.input_len or nxt.output_len > cur.output_len
            or any(a > b for a, b in zip(nxt.queue_len, cur.queue_len)))


def image_view(run: RunDir, spec: ImageSpec) -> RunDir:
    """The crash image as a read-only view of the run directory (no bytes copied; the views of
    one run share its last decoded snapshots: neighbouring crash points restore the same one)."""
    if run.snapshot_cache is None:
        run.snapshot_cache = BoundedCache(SNAPSHOT_CACHE)
    return RunDir(run.path, limits=spec.limits, max_snapshot=spec.max_snapshot, snapshot_cache=run.snapshot_cache)


def write_image(run: RunDir, point: CrashPoint, spec: ImageSpec, dest: Path) -> Path:
    """Write the crash image as a directory holding only the durable bytes."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "snapshots").mkdir(parents=True)
    manifest = dict(run.manifest)
    for key in ("files", "stats"):
        manifest.pop(key, None)
    manifest["complete"] = False
    manifest["crash"] = {"event": point.event, "variant": point.variant, "source_run": str(run.path)}
    if spec.lost:
        manifest["crash"]["lost"] = list(spec.lost)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for name, limit in spec.limits.items():
        with open(run.path / name, "rb") as src:
            (dest / name).write_bytes(src.read(max(limit, FILE_HEADER.size)))
    for path in run.snapshot_paths():
        number = snapshot_number(path)
        if number is not None and number <= spec.max_snapshot:
            shutil.copyfile(path, dest / "snapshots" / path.name)
    if spec.partial_snapshot is not None:
        number, size = spec.partial_snapshot
        source = run.path / "snapshots" / snapshot_name(number)
        with open(source, "rb") as src:
            (dest / "snapshots" / (snapshot_name(number) + ".tmp")).write_bytes(src.read(size))
    return dest


def select_points(events: Sequence[rec.Event], at: list[int], every: int | None, sample: int | None, seed: int,
                  everything: bool, torn: bool) -> list[CrashPoint]:
    """The crash points a sweep visits, sorted and without duplicates."""
    count = len(events)
    chosen: set[int] = set()
    for index in at:
        if not 0 <= index < count:
            raise UsageError(f"--at {index} is out of range: this run has events 0..{count - 1}")
        chosen.add(index)
    if every is not None:
        if every < 1:
            raise UsageError(f"--every must be at least 1, got {every}")
        chosen.update(range(0, count, every))
    if sample is not None:
        if sample < 0:
            raise UsageError(f"--random must not be negative, got {sample}")
        chosen.update(random.Random(seed).sample(range(count), min(sample, count)))
    if everything:
        chosen.update(range(count))
    points = {CrashPoint(index) for index in chosen}
    if torn:
        points.update(CrashPoint(index, TORN) for index in chosen if can_tear(events, index))
    return sorted(points)


def chain_points(events: Sequence[rec.Event], sample: int | None = None, seed: int = 1) -> list[CrashPoint]:
    """Crash points that check the snapshot chain: just before each snapshot is begun (every log
    flushed, so replay from the previous snapshot covers everything) and after the last event.

    ``sample`` keeps that many of the snapshots, drawn with ``seed`` (the end is always kept): a
    long run has a snapshot every few thousand packets, and each link costs a recovery."""
    points = [CrashPoint(i) for i, ev in enumerate(events) if ev.kind == rec.EV_SNAPSHOT_BEGIN]
    if sample is not None and sample < len(points):
        points = sorted(random.Random(seed).sample(points, sample))
    if events:
        points.append(CrashPoint(len(events) - 1))
    return points
