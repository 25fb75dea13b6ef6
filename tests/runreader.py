"""Read a whole run directory into plain Python lists, for tests.

``read_run(run_dir)`` decodes every log of a complete (failure-free) run with the store's own
readers and checks the framing on the way: a complete run has no torn tail, every chunk holds as
many records as its header says, and every chunk starts where the previous one ended. The helpers
below it answer the questions the record tests ask of a run: which outputs a release event
released, when a queue's records became durable, and what the causal cut of the durable logs is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ftmbctl import records as rec
from ftmbctl.queuelog import QueueDecoder
from ftmbctl.snapshot import Snapshot, read_snapshot
from ftmbctl.store import (FILE_HEADER, KIND_INPUT, KIND_OUTPUT, KIND_QUEUE, KIND_TIMELINE, Chunk, FileHeader,
                           LogScan, iter_chunks, read_file_header, read_log_bytes)


@dataclass
class LogFile:
    """One chunked log: its header, its chunks and where each chunk ends."""

    path: Path
    header: FileHeader
    chunks: list[Chunk]
    size: int
    # byte offset just past the header or a whole chunk -> records in the log up to there
    ends: dict[int, int] = field(default_factory=dict)


@dataclass
class Run:
    dir: Path
    manifest: dict
    run_id: bytes
    queues: int
    logs: dict[str, LogFile]
    inputs: list[rec.InputRecord]
    queue_records: list[list[rec.PalRecord | rec.NdRecord]]  # per queue, in log order
    outputs: list[rec.OutputRecord]  # in release order
    events: list[rec.Event]
    snapshots: dict[int, Snapshot]  # number -> snapshot
    reference: Snapshot

    def pals(self, q: int) -> list[rec.PalRecord]:
        return [r for r in self.queue_records[q] if isinstance(r, rec.PalRecord)]

    def all_pals(self) -> Iterator[tuple[int, rec.PalRecord]]:
        for q in range(self.queues):
            for r in self.pals(q):
                yield q, r


def read_log(path: Path, kind: int, run_id: bytes) -> LogFile:
    data = read_log_bytes(path)
    header = read_file_header(path, data, kind, run_id)
    scan = LogScan(header)
    chunks = list(iter_chunks(path, data, scan))
    if scan.torn_bytes or scan.end != len(data):
        raise AssertionError(f"{path}: complete run has a torn tail ({scan.torn_bytes} bytes after {scan.end})")
    log = LogFile(path, header, chunks, len(data))
    pos, records = FILE_HEADER.size, 0
    log.ends[pos] = 0
    for chunk in chunks:
        if chunk.offset != pos:
            raise AssertionError(f"{path}: chunk at {chunk.offset}, previous ended at {pos}")
        pos += chunk.stored
        records += chunk.count
        log.ends[pos] = records
    return log


def _decode(log: LogFile, decoder) -> list:
    out = []
    for chunk in log.chunks:
        items = list(decoder(chunk.raw))
        if len(items) != chunk.count:
            raise AssertionError(f"{log.path}: chunk at {chunk.offset} says {chunk.count} records, holds {len(items)}")
        out.extend(items)
    return out


def read_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    run_id = bytes.fromhex(manifest["run_id"])
    queues = manifest["queues"]
    logs = {"input": read_log(run_dir / "input.log", KIND_INPUT, run_id),
            "output": read_log(run_dir / "output.log", KIND_OUTPUT, run_id),
            "timeline": read_log(run_dir / "timeline.log", KIND_TIMELINE, run_id)}
    for q in range(queues):
        logs[f"pal-{q}"] = read_log(run_dir / f"pal-{q}.log", KIND_QUEUE, run_id)
    snapshots = {}
    for path in sorted((run_dir / "snapshots").glob("snap-*.snap")):
        snap = read_snapshot(path, run_id)
        snapshots[snap.number] = snap
    return Run(
        dir=run_dir, manifest=manifest, run_id=run_id, queues=queues, logs=logs,
        inputs=_decode(logs["input"], rec.iter_inputs),
        queue_records=[_decode(logs[f"pal-{q}"], QueueDecoder()) for q in range(queues)],
        outputs=_decode(logs["output"], rec.iter_outputs),
        events=_decode(logs["timeline"], rec.iter_events),
        snapshots=snapshots,
        reference=read_snapshot(run_dir / "reference.snap", run_id),
    )


# ---- questions about a run ----

def release_batches(run: Run) -> Iterator[tuple[rec.Event, list[rec.OutputRecord]]]:
    """Each release event with the output.log records it released (those between the previous
    event's output_records and its own)."""
    before = 0
    for ev in run.events:
        if ev.kind == rec.EV_RELEASE:
            yield ev, run.outputs[before:ev.output_records]
        before = ev.output_records


def first_event_with(run: Run, q: int, records: int) -> rec.Event:
    """The first timeline event at which queue q had at least ``records`` durable records."""
    for ev in run.events:
        if ev.queue_records[q] >= records:
            return ev
    raise AssertionError(f"queue {q} never had {records} durable records in the timeline")


def causal_cut(run: Run, prefix: tuple[int, ...] | list[int], durable_inputs: int) -> list[int]:
    """DESIGN §6.3: the largest per-queue prefixes of ``prefix`` that are closed under
    happens-before: every variable's accesses in the cut form a gap-free 1..k, and every record's
    packet is a durable input. Iterated to a fixpoint."""
    cut = list(prefix)
    while True:
        present: dict[int, set[int]] = {}
        for q in range(run.queues):
            for r in run.queue_records[q][:cut[q]]:
                if isinstance(r, rec.PalRecord):
                    present.setdefault(r.var, set()).add(r.seq)
        gap_free: dict[int, int] = {}
        for var, seqs in present.items():
            k = 0
            while k + 1 in seqs:
                k += 1
            gap_free[var] = k
        new = []
        for q in range(run.queues):
            n = cut[q]
            for i, r in enumerate(run.queue_records[q][:cut[q]]):
                if r.packet >= durable_inputs or (isinstance(r, rec.PalRecord) and r.seq > gap_free[r.var]):
                    n = i
                    break
            new.append(n)
        if new == cut:
            return cut
        cut = new


def recorded_middlebox(run_dir: Path) -> str:
    """The middlebox spec a test's own run was recorded with: the test wrote the run and names its
    code, as a user passes ``--middlebox`` (ftmbctl itself never takes it from a run directory)."""
    return json.loads((Path(run_dir) / "manifest.json").read_text())["middlebox"]["spec"]
