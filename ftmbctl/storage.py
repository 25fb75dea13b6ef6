"""Stable storage during record: the logs, the Output Logger and the timeline (DESIGN §2, §5).

Everything that makes something durable goes through ``Storage`` under one lock, so the timeline
is a total order of durability events, each carrying the length of every log at that moment.
"""

from __future__ import annotations

import contextlib
import random
import threading
from operator import ge
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

from ftmbctl import records as rec
from ftmbctl.errors import FtmbError
from ftmbctl.parallel import in_parallel
from ftmbctl.queuelog import QueueEncoder
from ftmbctl.store import KIND_INPUT, KIND_OUTPUT, KIND_QUEUE, KIND_TIMELINE, ChunkWriter

TIMELINE_CHUNK = 256  # events per timeline chunk
RELEASE_ONLY = -1  # in Storage._due: no chunk, only a release check
MAX_CHUNK_BYTES = 8 << 20  # a release batch larger than this is split over several chunks


class QueueLog:
    """One queue's PALs and non-deterministic values, held as tuples until the next flush packs
    them into a chunk (``queuelog.QueueEncoder``).

    Only the queue's own worker appends. Record counts live in two lists shared by all queues,
    ``Storage.totals`` (appended so far: what dependency vectors read) and ``Storage.durables``
    (on stable storage: ``stable[q]``), so that a dependency vector is one ``tuple(totals)``.
    """

    __slots__ = ("queue", "items", "encoder")

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.items: list[tuple] = []
        self.encoder = QueueEncoder()


class Reservoir:
    """A uniform sample of at most ``size`` values (Vitter's algorithm R, seeded so that a chaos
    run stays reproducible): release-delay percentiles without memory growing with the trace."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.size = size
        self.values: list[int] = []
        self.seen = 0
        self._rng = random.Random(0)

    def add(self, value: int) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value


class OutputLogger:
    """Holds outputs until everything they depend on is durable, then releases them.

    An output of queue q depends on a vector D (every queue's record count when q finished the
    packet). Outputs of one queue have non-decreasing D, so each queue's held outputs form a FIFO
    and release checks only the fronts.
    """

    def __init__(self, queues: int) -> None:
        self.held: list[deque[tuple]] = [deque() for _ in range(queues)]
        self.released = 0
        self.delays_ns = Reservoir()

    def release(self, stable: list[int], durable_inputs: int, now_ns: int) -> list[tuple[bytes, int]]:
        """Pop every releasable output; returns them packed as output.log chunks: (records, count)."""
        chunks: list[tuple[bytes, int]] = []
        packed = bytearray()
        count = 0
        delays = self.delays_ns
        pack_head, pack_len, deps_struct = rec.OUTPUT.pack, rec.OUTPUT_LEN.pack, rec.deps_struct
        for fifo in self.held:
            while fifo:
                input_id, index, linktype, finish_ns, deps, data = fifo[0]
                if input_id >= durable_inputs or not all(map(ge, stable, deps)):
                    break
                fifo.popleft()
                # field by field into one buffer: the packet's bytes are copied once
                packed += pack_head(input_id, index, linktype, finish_ns, now_ns, len(deps))
                packed += deps_struct(len(deps)).pack(*deps)
                packed += pack_len(len(data))
                packed += data
                delays.add(now_ns - finish_ns)
                count += 1
                self.released += 1
                if len(packed) >= MAX_CHUNK_BYTES:
                    chunks.append((bytes(packed), count))
                    packed, count = bytearray(), 0
        if count:
            chunks.append((bytes(packed), count))
        return chunks



class Storage:
    """The files of a run being recorded, and the one lock that orders their durability events."""

    def __init__(self, run_dir: Path, run_id: bytes, queues: int, now_ns, input_base: int = 0,
                 hold_until_snapshot: bool = False, handoff: Callable[[], None] | None = None) -> None:
        self.lock = threading.RLock()
        self.handoff = handoff  # the scheduler's, called after a queue flush (see flush_queue)
        self.input_base = input_base  # id of the first input this run logs (a recovery starts mid-trace)
        # No-Replay (DESIGN §8): an output waits for a durable snapshot that covers its input,
        # not for logs; ``covered`` is the boundary of the latest durable snapshot.
        self.hold_until_snapshot = hold_until_snapshot
        self.covered = input_base
        self.queues = queues
        self.now_ns = now_ns
        self.input = ChunkWriter(run_dir / "input.log", KIND_INPUT, run_id, queues)
        self.queue_files = [ChunkWriter(run_dir / f"pal-{q}.log", KIND_QUEUE, run_id, q) for q in range(queues)]
        self.output = ChunkWriter(run_dir / "output.log", KIND_OUTPUT, run_id, queues)
        self.timeline = ChunkWriter(run_dir / "timeline.log", KIND_TIMELINE, run_id, queues)
        self.logs = [QueueLog(q) for q in range(queues)]
        self.totals = [0] * queues  # records each queue appended so far
        self.durables = [0] * queues  # records of each queue on stable storage: stable[q]
        self.ol = OutputLogger(queues)
        # Queues whose chunk is written but whose event is not made yet (or RELEASE_ONLY): a worker
        # leaves them here rather than wait for the lock, and whoever holds it commits them.
        self._due: deque[int] = deque()
        self.snapshot = -1
        self.events = 0
        self._event_buf = bytearray()
        self._event_pending = 0

    # ---- durability events ----
    def _event(self, kind: int, arg: int) -> None:
        in_len, in_rec = self.input.extent
        out_len, out_rec = self.output.extent
        buf = self._event_buf
        buf += rec.EVENT.pack(self.events, kind, arg, self.now_ns(), self.snapshot, in_len, in_rec, out_len,
                              out_rec, self.queues)
        for writer in self.queue_files:
            buf += rec.EVENT_QUEUE.pack(*writer.extent)
        self.events += 1
        self._event_pending += 1
        if self._event_pending >= TIMELINE_CHUNK:
            self._flush_timeline()

    def _flush_timeline(self) -> None:
        if self._event_pending:
            self.timeline.append(bytes(self._event_buf), self._event_pending)
            self._event_buf.clear()
            self._event_pending = 0

    # Compressing and writing a chunk happen outside the lock (only one thread ever writes a given
    # log: the master the input log, queue q's worker, or the master while q is drained, the PAL
    # log); the lock orders only what makes it count: stable[q], the event and the release.
    def flush_input(self, raw: bytes | bytearray, count: int) -> None:
        self.input.append(raw, count)
        with self._locked():
            self._event(rec.EV_INPUT_FLUSH, count)
            self._release()

    def flush_queue(self, q: int) -> None:
        log = self.logs[q]
        items = log.items
        if not items:
            return
        log.items = []
        self.queue_files[q].append(log.encoder.encode(items), len(items))
        self._due.append(q)
        self._commit()
        if self.handoff is not None:  # now, while this queue holds no record that is not durable
            self.handoff()

    def flush_for_snapshot(self) -> None:
        """Flush every queue (they are drained) and make each one's next chunk a keyframe: a
        snapshot's queue positions are where recovery starts decoding (formats/queue-log.md)."""
        for q, log in enumerate(self.logs):
            self.flush_queue(q)
            log.encoder.restart()

    def hold_output(self, q: int, items: list[tuple]) -> None:
        """Hand a packet's outputs to the Output Logger.

        Only queue q appends to its FIFO, so this takes no lock (deque appends are atomic). The
        storage lock is tried only when the outputs are already releasable; otherwise the flush
        that makes their dependencies durable releases them. The check comes after the append,
        so a concurrent flush either sees the new outputs or this check sees its effect.
        """
        fifo = self.ol.held[q]
        fifo.extend(items)
        deps = items[-1][4]
        if items[-1][0] < self._release_bound() and all(map(ge, self.durables, deps)):
            self._due.append(RELEASE_ONLY)
            self._commit()

    def _commit(self) -> None:
        """Make the events of the chunks in ``_due`` and release what they made releasable.

        A thread that finds the lock taken leaves this to the holder, which calls ``_commit`` once
        it has let go of the lock (``_locked``, or the loop below): the entry went in before the
        failed try, so the holder sees it. Nobody waits for the lock here: under the GIL, a thread
        woken from a lock gets the interpreter back only once the running one blocks or is
        switched out, which kept a flush waiting a median half millisecond (and every output
        waiting on it) after its chunk was written.
        """
        due = self._due
        while due:
            if not self.lock.acquire(blocking=False):
                return
            try:
                while due:
                    q = due.popleft()
                    if q != RELEASE_ONLY:
                        self.durables[q] = self.queue_files[q].records
                        self._event(rec.EV_QUEUE_FLUSH, q)
                self._release()
            finally:
                self.lock.release()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The storage lock, and on the way out the commits left while it was held."""
        with self.lock:
            yield
        self._commit()

    def _release_bound(self) -> int:
        """Outputs of inputs below this id may go out (given their dependency vectors): inputs on
        stable storage, or, in No-Replay, inputs the latest durable snapshot covers."""
        return self.covered if self.hold_until_snapshot else self.input_base + self.input.records

    def _release(self) -> None:
        chunks = self.ol.release(self.durables, self._release_bound(), self.now_ns())
        if chunks:
            for packed, count in chunks:
                self.output.append(packed, count)
            self._event(rec.EV_RELEASE, sum(count for _, count in chunks))

    def snapshot_begin(self, number: int) -> None:
        with self._locked():
            self._event(rec.EV_SNAPSHOT_BEGIN, number)

    def snapshot_durable(self, number: int, boundary: int) -> None:
        with self._locked():
            self.snapshot = number
            self._event(rec.EV_SNAPSHOT_DURABLE, number)
            if self.hold_until_snapshot:
                self.covered = boundary
                self._release()

    def finish(self, sync: bool = True) -> None:
        with self._locked():
            for q in range(self.queues):
                self.flush_queue(q)
            self._release()
            self._event(rec.EV_END, self.ol.released)
            self._flush_timeline()
            writers = [self.input, self.output, self.timeline, *self.queue_files]
            if sync:
                in_parallel(ChunkWriter.sync, writers)
            for writer in writers:
                writer.close()

    def close(self) -> None:
        """Close files after a failed run, keeping what was written (as much as the disk takes:
        the run is failing already, maybe because the disk is full)."""
        with self.lock:
            with contextlib.suppress(FtmbError):
                self._flush_timeline()
            for writer in (self.input, self.output, self.timeline, *self.queue_files):
                with contextlib.suppress(FtmbError):
                    writer.close()
