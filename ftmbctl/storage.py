"""Stable storage during record: the logs, the Output Logger and the timeline (DESIGN §2, §5).

Everything that makes something durable goes through ``Storage`` under one lock, so the timeline
is a total order of durability events, each carrying the length of every log at that moment.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from ftmbctl import records as rec
from ftmbctl.store import KIND_INPUT, KIND_OUTPUT, KIND_QUEUE, KIND_TIMELINE, ChunkWriter

TIMELINE_CHUNK = 256  # events per timeline chunk


class QueueLog:
    """One queue's PALs and non-deterministic values, buffered until the next flush.

    Only the queue's own worker appends; ``total`` is what the dependency vectors read.
    """

    __slots__ = ("queue", "buf", "pending", "total", "durable")

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.buf = bytearray()
        self.pending = 0  # records in buf
        self.total = 0  # records appended so far
        self.durable = 0  # records on stable storage: stable[q]


class OutputLogger:
    """Holds outputs until everything they depend on is durable, then releases them.

    An output of queue q depends on a vector D (every queue's record count when q finished the
    packet). Outputs of one queue have non-decreasing D, so each queue's held outputs form a FIFO
    and release checks only the fronts.
    """

    def __init__(self, queues: int) -> None:
        self.held: list[deque[tuple]] = [deque() for _ in range(queues)]
        self.released = 0
        self.delays_ns: list[int] = []

    def hold(self, q: int, item: tuple) -> None:
        self.held[q].append(item)

    def releasable(self, stable: list[int], durable_inputs: int, now_ns: int) -> list[rec.OutputRecord]:
        out: list[rec.OutputRecord] = []
        for fifo in self.held:
            while fifo:
                input_id, index, linktype, finish_ns, deps, data = fifo[0]
                if input_id >= durable_inputs or any(d > s for d, s in zip(deps, stable)):
                    break
                fifo.popleft()
                out.append(rec.OutputRecord(input_id, index, linktype, finish_ns, now_ns, deps, data))
                self.delays_ns.append(now_ns - finish_ns)
        self.released += len(out)
        return out

    def held_count(self) -> int:
        return sum(len(fifo) for fifo in self.held)


class Storage:
    """The files of a run being recorded, and the one lock that orders their durability events."""

    def __init__(self, run_dir: Path, run_id: bytes, queues: int, now_ns) -> None:
        self.lock = threading.RLock()
        self.queues = queues
        self.now_ns = now_ns
        self.input = ChunkWriter(run_dir / "input.log", KIND_INPUT, run_id, queues)
        self.queue_files = [ChunkWriter(run_dir / f"pal-{q}.log", KIND_QUEUE, run_id, q) for q in range(queues)]
        self.output = ChunkWriter(run_dir / "output.log", KIND_OUTPUT, run_id, queues)
        self.timeline = ChunkWriter(run_dir / "timeline.log", KIND_TIMELINE, run_id, queues)
        self.logs = [QueueLog(q) for q in range(queues)]
        self.ol = OutputLogger(queues)
        self.snapshot = -1
        self.events = 0
        self._event_buf = bytearray()
        self._event_pending = 0

    # ---- durability events ----
    def _event(self, kind: int, arg: int) -> None:
        ev = rec.Event(self.events, kind, arg, self.now_ns(), self.snapshot, self.input.length, self.input.records,
                       self.output.length, self.output.records, tuple(f.length for f in self.queue_files),
                       tuple(f.records for f in self.queue_files))
        self._event_buf += rec.pack_event(ev)
        self.events += 1
        self._event_pending += 1
        if self._event_pending >= TIMELINE_CHUNK:
            self._flush_timeline()

    def _flush_timeline(self) -> None:
        if self._event_pending:
            self.timeline.append(bytes(self._event_buf), self._event_pending)
            self._event_buf.clear()
            self._event_pending = 0

    def flush_input(self, raw: bytes, count: int) -> None:
        with self.lock:
            self.input.append(raw, count)
            self._event(rec.EV_INPUT_FLUSH, count)
            self._release()

    def flush_queue(self, q: int) -> None:
        with self.lock:
            log = self.logs[q]
            if not log.pending:
                return
            self.queue_files[q].append(bytes(log.buf), log.pending)
            log.buf.clear()
            log.pending = 0
            log.durable = self.queue_files[q].records
            self._event(rec.EV_QUEUE_FLUSH, q)
            self._release()

    def hold_output(self, q: int, items: list[tuple]) -> None:
        with self.lock:
            for item in items:
                self.ol.hold(q, item)
            self._release()

    def _release(self) -> None:
        out = self.ol.releasable([log.durable for log in self.logs], self.input.records, self.now_ns())
        if out:
            self.output.append(b"".join(rec.pack_output(o) for o in out), len(out))
            self._event(rec.EV_RELEASE, len(out))

    def snapshot_begin(self, number: int) -> None:
        with self.lock:
            self._event(rec.EV_SNAPSHOT_BEGIN, number)

    def snapshot_durable(self, number: int) -> None:
        with self.lock:
            self.snapshot = number
            self._event(rec.EV_SNAPSHOT_DURABLE, number)

    def finish(self) -> None:
        with self.lock:
            for q in range(self.queues):
                self.flush_queue(q)
            self._release()
            self._event(rec.EV_END, self.ol.released)
            self._flush_timeline()
            for writer in (self.input, self.output, self.timeline, *self.queue_files):
                writer.sync()
                writer.close()

    def close(self) -> None:
        """Close files after a failed run, keeping what was written."""
        with self.lock:
            self._flush_timeline()
            for writer in (self.input, self.output, self.timeline, *self.queue_files):
                writer.close()
