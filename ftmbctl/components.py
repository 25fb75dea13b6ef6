"""The new points of failure: what the Input Logger, the stable storage and the Output Logger
hold at each timeline event, and what a crash that takes one of them down with the master loses
(``crash-replay --also-lose``; formats/components.md).

FTMB lets the master crash anywhere because these three survive it (DESIGN §5). What each one
holds right after event e is read off the run's own files, never assumed:

- the IL holds ``input.log`` up to ``e.input_len``. The packets before the latest snapshot durable
  at e are held elsewhere too (the snapshot holds their effect); the ones after it are held by the
  IL alone: its buffer, which a replay needs.
- the stable storage holds each ``pal-<q>.log`` up to ``e.queue_len[q]``; a recovery needs only
  the records after that snapshot.
- the OL holds ``output.log`` up to ``e.output_len``: its record of what left the box, of which
  the part after the snapshot is what it suppresses regenerated duplicates with; and the outputs
  it holds unreleased, which a recovery discards whether the OL survives or not.

Where each log stood at the snapshot is in the timeline: the event that made snapshot k durable
carries the lengths its ``snapshot-begin k`` had (nothing is written in between), which are the
positions snapshot k itself records.

``lose`` turns a crash point's image spec into the image a recovery on a replacement component
finds (the lost component's logs cut back to that snapshot's position) and adds what the outside
world knows, which a check needs and a recovery never reads from the image: where the packets
that arrive after the crash begin, and which outputs had left the box.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ftmbctl import records as rec
from ftmbctl.crash import CrashPoint, ImageSpec
from ftmbctl.errors import DamagedRun, UsageError
from ftmbctl.rundir import RunDir
from ftmbctl.store import FILE_HEADER

IL, STORAGE, OL = "il", "storage", "ol"
COMPONENTS = (IL, STORAGE, OL)
NONE = "none"  # --also-lose none: the master alone crashes, and the promises are measured all the same


def parse_components(names: Iterable[str]) -> tuple[str, ...]:
    """The components ``--also-lose`` names, in COMPONENTS order without repeats; ``none`` (alone)
    is the empty tuple: a crash of the master only, measured like the others (the baseline)."""
    chosen = set()
    for name in names:
        if name not in (*COMPONENTS, NONE):
            raise UsageError(f"--also-lose {name!r} is not a component: choose il, storage or ol (or none)")
        chosen.add(name)
    if NONE in chosen and len(chosen) > 1:
        raise UsageError("--also-lose none means no component fails with the master: do not combine it with "
                         f"{', '.join(sorted(chosen - {NONE}))}")
    return tuple(c for c in COMPONENTS if c in chosen)


@dataclass(frozen=True)
class Holdings:
    """What each component holds right after event ``at`` that the latest snapshot durable then
    does not cover: every log from its position at that snapshot (``since``: the event that made
    it durable, or None before the first snapshot) to its length at ``at``."""

    at: rec.Event
    since: rec.Event | None

    def start(self, name: str) -> int:
        """Where ``name`` stood when the snapshot was taken (a log's header when there is none)."""
        if self.since is None:
            return FILE_HEADER.size
        if name == "input.log":
            return self.since.input_len
        if name == "output.log":
            return self.since.output_len
        return self.since.queue_len[int(name[4:-4])]


def holdings(events: Sequence[rec.Event], index: int) -> Holdings:
    """What each component holds right after event ``index`` beyond the latest durable snapshot."""
    at = events[index]
    if at.snapshot < 0:
        return Holdings(at, None)
    # The first event whose latest snapshot is at.snapshot is the one that made it durable.
    first = bisect_left(events, at.snapshot, 0, index + 1, key=lambda ev: ev.snapshot)
    since = events[first]
    if since.kind != rec.EV_SNAPSHOT_DURABLE or since.arg != at.snapshot:
        raise DamagedRun(f"timeline.log: no snapshot-durable event for snapshot {at.snapshot} before event "
                         f"{index}, so the logs cannot tell what each component held after it")
    return Holdings(at, since)


def released_between(run: RunDir, held: Holdings) -> dict[tuple[int, int], bytes]:
    """The outputs that left the box after the snapshot and by the crash, read from the run's
    complete output log (the outside world's record, which survives any component)."""
    log = run.log("output.log")
    first_seq = held.since.output_records if held.since else 0
    released: dict[tuple[int, int], bytes] = {}
    for chunk in log.chunks(held.start("output.log"), first_seq):
        if chunk.offset >= held.at.output_len:
            break
        released.update(rec.iter_output_data(chunk.raw))
    return released


@dataclass(frozen=True)
class Loss:
    """One crash point at which ``components`` failed with the master (none: the master alone):
    the image that survives, and what the outside world knows then, which a check reads and a
    recovery takes only as the world's doing (the packets that arrive) or for judging."""

    components: tuple[str, ...]
    spec: ImageSpec
    resume_at: int  # the first input to arrive after the crash: the IL had taken every one before it
    released: dict[tuple[int, int], bytes]  # outputs that left the box after the snapshot, by the crash

    def lost(self, component: str) -> bool:
        return component in self.components


def lose(run: RunDir, events: Sequence[rec.Event], point: CrashPoint, spec: ImageSpec,
         components: tuple[str, ...]) -> Loss:
    """The crash image of ``point`` when ``components`` fail with the master: each lost log is
    cut back to where it stood at the snapshot (a torn tail in it goes too). Recovery never reads
    a log before that position, so the cut log is what a replacement component, which holds
    nothing, looks like to it."""
    held = holdings(events, point.event)
    names = {IL: ["input.log"], STORAGE: run.queue_log_names(), OL: ["output.log"]}
    limits = dict(spec.limits)
    for component in components:
        for name in names[component]:
            limits[name] = held.start(name)
    torn = spec.torn_file
    if torn is not None and limits[torn] != spec.limits[torn]:  # its torn tail went with the component
        torn = None
    return Loss(components, replace(spec, limits=limits, torn_file=torn, lost=components),
                held.at.input_records, released_between(run, held))
