"""The records inside the chunks of each log (formats/*.md): one ``struct.Struct`` per type of
the input, output and timeline logs, and the record types of the queue logs, whose chunks are
columns (``queuelog.py``).

Decoded records are NamedTuples: a sweep decodes millions of them, and a tuple is several times
cheaper to build than a frozen dataclass.

Hot paths append packed records to a bytearray and hand whole buffers to ``ChunkWriter.append``;
readers decode a chunk's ``raw`` bytes with the ``iter_*`` functions below.
"""

from __future__ import annotations

import functools
import struct
from typing import Iterator, NamedTuple

# input.log: one record per input packet, followed by its captured bytes.
INPUT = struct.Struct("<IQHII")  # packet id, ts_ns, linktype, orig_len, caplen

# pal-<q>.log: PALs and non-deterministic values of one queue, stored as columns (queuelog.py).

# output.log: released outputs, in release order. The dependency vector follows the fixed part.
OUTPUT = struct.Struct("<IHHQQB")  # input id, output index, linktype, finish_ns, release_ns, queues
OUTPUT_LEN = struct.Struct("<I")  # caplen, after the dependency vector; then the bytes

# timeline.log: durability events. The per-queue part follows the fixed part.
EVENT = struct.Struct("<IBIQiQIQIB")  # index, kind, arg, time_ns, snapshot, input_len, input_records,
#                                        output_len, output_records, queues
EVENT_QUEUE = struct.Struct("<QI")  # pal_len, pal_records

EV_INPUT_FLUSH = 1
EV_QUEUE_FLUSH = 2
EV_SNAPSHOT_BEGIN = 3
EV_SNAPSHOT_DURABLE = 4
EV_RELEASE = 5
EV_END = 6
EVENT_NAMES = {
    EV_INPUT_FLUSH: "input-flush", EV_QUEUE_FLUSH: "queue-flush", EV_SNAPSHOT_BEGIN: "snapshot-begin",
    EV_SNAPSHOT_DURABLE: "snapshot-durable", EV_RELEASE: "release", EV_END: "end",
}


class RecordError(ValueError):
    """A chunk's records do not parse; ``offset`` is within the chunk's raw bytes."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class InputRecord(NamedTuple):
    id: int
    ts_ns: int
    linktype: int
    orig_len: int
    data: bytes


class PalRecord(NamedTuple):
    packet: int
    var: int
    seq: int
    digest: int | None  # 16 bits of the value's digest after the access; None: the access left it unchanged


class NdRecord(NamedTuple):
    packet: int
    kind: int
    value: int


class OutputRecord(NamedTuple):
    input_id: int
    index: int
    linktype: int
    finish_ns: int
    release_ns: int
    deps: tuple[int, ...]
    data: bytes

    @property
    def output_id(self) -> tuple[int, int]:
        return (self.input_id, self.index)


class Event(NamedTuple):
    index: int
    kind: int
    arg: int
    time_ns: int
    snapshot: int  # latest durable snapshot number, -1 when none yet
    input_len: int
    input_records: int
    output_len: int
    output_records: int
    queue_len: tuple[int, ...]
    queue_records: tuple[int, ...]

    @property
    def name(self) -> str:
        return EVENT_NAMES.get(self.kind, str(self.kind))


def pack_input(pid: int, ts_ns: int, linktype: int, orig_len: int, data: bytes) -> bytes:
    return INPUT.pack(pid, ts_ns, linktype, orig_len, len(data)) + data


def pack_output_fields(input_id: int, index: int, linktype: int, finish_ns: int, release_ns: int,
                       deps: tuple[int, ...], data: bytes) -> bytes:
    return (OUTPUT.pack(input_id, index, linktype, finish_ns, release_ns, len(deps))
            + deps_struct(len(deps)).pack(*deps) + OUTPUT_LEN.pack(len(data)) + data)


def pack_output(rec: OutputRecord) -> bytes:
    return pack_output_fields(rec.input_id, rec.index, rec.linktype, rec.finish_ns, rec.release_ns, rec.deps, rec.data)


@functools.cache
def deps_struct(queues: int) -> struct.Struct:
    return struct.Struct(f"<{queues}I")


def pack_event(ev: Event) -> bytes:
    head = EVENT.pack(ev.index, ev.kind, ev.arg, ev.time_ns, ev.snapshot, ev.input_len, ev.input_records,
                      ev.output_len, ev.output_records, len(ev.queue_len))
    return head + b"".join(EVENT_QUEUE.pack(n, r) for n, r in zip(ev.queue_len, ev.queue_records))


def _need(raw: bytes, pos: int, n: int, what: str) -> None:
    if len(raw) - pos < n:
        raise RecordError(f"{what} record needs {n} bytes, {len(raw) - pos} left", pos)


def iter_inputs(raw: bytes) -> Iterator[InputRecord]:
    pos, size, unpack, head = 0, len(raw), INPUT.unpack_from, INPUT.size
    while pos < size:
        if size - pos < head:  # the checks are inlined: a sweep decodes millions of records
            _need(raw, pos, head, "input")
        pid, ts_ns, linktype, orig_len, caplen = unpack(raw, pos)
        pos += head
        if size - pos < caplen:
            _need(raw, pos, caplen, "input packet")
        yield InputRecord(pid, ts_ns, linktype, orig_len, raw[pos:pos + caplen])
        pos += caplen


def iter_outputs(raw: bytes) -> Iterator[OutputRecord]:
    pos, size, head = 0, len(raw), OUTPUT.size
    while pos < size:
        if size - pos < head:
            _need(raw, pos, head, "output")
        input_id, index, linktype, finish_ns, release_ns, queues = OUTPUT.unpack_from(raw, pos)
        pos += head
        if size - pos < 4 * queues + 4:
            _need(raw, pos, 4 * queues + 4, "output dependency vector")
        deps = deps_struct(queues).unpack_from(raw, pos)
        pos += 4 * queues
        (caplen,) = OUTPUT_LEN.unpack_from(raw, pos)
        pos += 4
        if size - pos < caplen:
            _need(raw, pos, caplen, "output packet")
        yield OutputRecord(input_id, index, linktype, finish_ns, release_ns, deps, raw[pos:pos + caplen])
        pos += caplen


def iter_output_data(raw: bytes) -> Iterator[tuple[tuple[int, int], bytes]]:
    """Only (output id, bytes) of each output: what recovery compares regenerated outputs with."""
    pos, size, head = 0, len(raw), OUTPUT.size
    while pos < size:
        if size - pos < head:
            _need(raw, pos, head, "output")
        input_id, index, _lt, _fin, _rel, queues = OUTPUT.unpack_from(raw, pos)
        pos += head + 4 * queues
        if size - pos < 4:
            _need(raw, pos, 4, "output dependency vector")
        (caplen,) = OUTPUT_LEN.unpack_from(raw, pos)
        pos += 4
        if size - pos < caplen:
            _need(raw, pos, caplen, "output packet")
        yield (input_id, index), raw[pos:pos + caplen]
        pos += caplen


def iter_events(raw: bytes) -> Iterator[Event]:
    pos, size = 0, len(raw)
    while pos < size:
        _need(raw, pos, EVENT.size, "timeline event")
        start = pos
        index, kind, arg, time_ns, snap, in_len, in_rec, out_len, out_rec, queues = EVENT.unpack_from(raw, pos)
        pos += EVENT.size
        _need(raw, pos, EVENT_QUEUE.size * queues, "timeline event queue part")
        lens, recs = [], []
        for _ in range(queues):
            n, r = EVENT_QUEUE.unpack_from(raw, pos)
            pos += EVENT_QUEUE.size
            lens.append(n)
            recs.append(r)
        if kind not in EVENT_NAMES:
            raise RecordError(f"unknown timeline event kind {kind}", start)
        yield Event(index, kind, arg, time_ns, snap, in_len, in_rec, out_len, out_rec, tuple(lens), tuple(recs))
