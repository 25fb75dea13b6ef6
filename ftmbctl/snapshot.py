"""Snapshot files: the whole middlebox state at a packet boundary (formats/snapshot.md).

    file := magic "FTMS" | version u16 | flags u16 | run_id 16s | number u32 | boundary u32
            | length u32 | raw_length u32 | body_crc u32 | header_crc u32 | body

``body`` is the lz4 block of the codec encoding (codec.py) of the state dict. A snapshot is
written to ``<name>.tmp``, fsynced and renamed, so a crash while it is written leaves only a
``.tmp`` file, which readers never open; a file whose length or checksum is wrong is rejected.
Version 2 added the codec's bytearray tag; version 1 files (the same grammar without it) are read
too. State the codec refuses is reported as ``MiddleboxStateError``, naming where it sits.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.block

from ftmbctl import codec, store
from ftmbctl.errors import DamagedRun, MiddleboxStateError, writes_to
from ftmbctl.safeio import read_regular

MAGIC = b"FTMS"
VERSION = 2  # 2: the codec's bytearray tag "B" (formats/snapshot.md)
READS = (1, 2)  # a version 1 body is a version 2 body that holds no bytearray
HEADER = struct.Struct("<4sHH16sIIIIII")
FLAG_FINAL = 1  # the failure-free run's final state (reference.snap), not a periodic snapshot
MAX_STATE = 1 << 30  # a snapshot claiming more state than this is not one ftmbctl wrote
# An lz4 block gives at most about 255 bytes per byte (a match's length grows by 255 per extra
# byte): a header claiming more state than that from its body lies, and is refused before the
# decompressor allocates what it claims.
LZ4_MAX_RATIO = store.LZ4_MAX_RATIO
MAX_FILE = HEADER.size + MAX_STATE + MAX_STATE // 255 + 16  # lz4's worst case for MAX_STATE bytes


def snapshot_name(number: int) -> str:
    return f"snap-{number:06d}.snap"


def encode_snapshot(run_id: bytes, number: int, boundary: int, state: dict[str, Any], flags: int = 0) -> bytes:
    try:
        raw = codec.encode(state)
    except codec.UnstorableValue as exc:
        which = "the final snapshot (reference.snap)" if flags & FLAG_FINAL else f"snapshot {number}"
        raise MiddleboxStateError(f"{which}: {_describe(state, exc)}") from None
    body = lz4.block.compress(raw, store_size=False)
    head = HEADER.pack(MAGIC, VERSION, flags, run_id, number, boundary, len(body), len(raw), zlib.crc32(body), 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    return head + body


def _describe(state: dict[str, Any], exc: codec.UnstorableValue) -> str:
    """Where a refused value sits, in the words of the state dict (formats/snapshot.md): ``queue Q
    local state [...]``, ``shared variable NAME`` (``key K`` for a map entry), else the field."""
    path = exc.path
    top = path[0][1] if path and path[0][0] == "value" else None
    if top == "local" and len(path) >= 2 and path[1][0] == "index":
        return exc.describe(f"queue {path[1][1]} local state", path[2:])
    if top == "shared" and len(path) >= 3 and path[1][0] == "index" and path[2] == ("index", 3):
        name, kind = state["shared"][path[1][1]][:2]
        rest = path[3:]
        if kind == "map" and rest and rest[0][0] == "value":  # an entry's value: name the entry's key
            where = f"shared variable {name!r} key {codec.short_repr(rest[0][1])}"
            return exc.describe(where + (" value" if len(rest) > 1 else ""), rest[1:], "holds")
        return exc.describe(f"shared variable {name!r}", rest, "holds")
    return exc.describe("state", path)


def write_atomically(path: Path, data: bytes, sync: bool = True) -> None:
    """temp file, fsync, rename, fsync the directory: all or nothing.

    ``sync=False`` keeps the rename (readers still never see a partial file) but skips the
    fsyncs: for scratch runs such as a recovery under verification.

    A write the OS refuses (disk full, read-only, ...) leaves ``path`` as it was, removes the
    temp file and raises ``MachineError`` naming ``path``.
    """
    tmp = path.with_name(path.name + ".tmp")
    with writes_to(path):
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.replace(tmp, path)
        if not sync:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True)
class Snapshot:
    number: int
    boundary: int  # packets 0 .. boundary-1 are reflected in the state
    flags: int
    state: dict[str, Any]


def decode_snapshot(path: Path, data: bytes, run_id: bytes | None = None) -> Snapshot:
    if len(data) < HEADER.size:
        raise DamagedRun(f"{path}: {len(data)} bytes, shorter than the {HEADER.size}-byte snapshot header")
    magic, version, flags, got_run, number, boundary, length, raw_length, body_crc, head_crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DamagedRun(f"{path}: not an ftmbctl snapshot (starts with {data[:4].hex()})")
    if zlib.crc32(data[:HEADER.size - 4]) != head_crc:
        raise DamagedRun(f"{path}: snapshot header checksum mismatch at byte 0")
    if version not in READS:
        raise DamagedRun(f"{path}: snapshot format version {version}, this ftmbctl reads versions 1 and 2")
    if run_id is not None and got_run != run_id:
        raise DamagedRun(f"{path}: belongs to run {got_run.hex()}, not to this run ({run_id.hex()})")
    body = data[HEADER.size:]
    if len(body) != length:
        raise DamagedRun(f"{path}: snapshot body is {len(body)} bytes, header says {length}")
    if zlib.crc32(body) != body_crc:
        raise DamagedRun(f"{path}: snapshot body checksum mismatch at byte {HEADER.size}")
    if raw_length > MAX_STATE:
        raise DamagedRun(f"{path}: snapshot header claims {raw_length} bytes of state (at most {MAX_STATE})")
    if raw_length > LZ4_MAX_RATIO * length:
        raise DamagedRun(f"{path}: snapshot header claims {raw_length} bytes of state from a {length}-byte body, "
                         f"more than lz4 can give (at most {LZ4_MAX_RATIO} times the body)")
    try:
        raw = lz4.block.decompress(body, uncompressed_size=raw_length)
        if len(raw) != raw_length:
            raise DamagedRun(f"{path}: snapshot body decompresses to {len(raw)} bytes, header says {raw_length}")
        state = codec.decode(raw)  # the codec bounds what it builds by len(raw) (codec.decode_budget)
    except (lz4.block.LZ4BlockError, codec.CodecError) as exc:
        raise DamagedRun(f"{path}: snapshot body does not decode ({exc})") from None
    if not isinstance(state, dict):
        raise DamagedRun(f"{path}: snapshot body is not a state record")
    return Snapshot(number, boundary, flags, state)


def read_snapshot(path: Path, run_id: bytes | None = None) -> Snapshot:
    """A snapshot file of a run, its state checked against the state dict's layout (``check_state``)."""
    try:
        data = read_regular(path, MAX_FILE)  # a FIFO or a device is refused, never waited on
    except FileNotFoundError:
        raise DamagedRun(f"{path}: file is missing") from None
    except OSError as exc:
        raise DamagedRun(f"{path}: cannot be read ({exc.strerror})") from None
    snap = decode_snapshot(path, data, run_id)
    check_state(path, snap)
    return snap


_COUNTS = ("input_records", "input_bytes", "outputs_released", "outputs_bytes", "time_ns")


def check_state(path: Path, snap: Snapshot) -> None:
    """The state dict as formats/snapshot.md lays it out (record.py's ``Recorder._state``), so that
    no reader meets a missing key or a value of another type later: one ``DamagedRun`` naming the
    file and the first field that is wrong. The queue count is checked against the manifest's by
    whoever restores the state (the manifest, which has no checksum, is then the one named). A
    counter's value and the queue-local states are the middlebox's and are not checked here."""
    state = snap.state

    def bad(field: str, what: str) -> DamagedRun:
        return DamagedRun(f"{path}: snapshot state field {field!r} {what}")

    def whole(value: Any) -> bool:
        return type(value) is int and value >= 0

    for key in ("boundary", "shared", "local", "queue_records", "queue_bytes", *_COUNTS):
        if key not in state:
            raise bad(key, "is missing")
    if not whole(state["boundary"]) or state["boundary"] != snap.boundary:
        raise bad("boundary", f"is {codec.short_repr(state['boundary'])}, the header says {snap.boundary}")
    shared = state["shared"]
    if type(shared) is not list:
        raise bad("shared", "is not a list")
    for i, var in enumerate(shared):
        if type(var) is not tuple or len(var) != 4:
            raise bad("shared", f"entry {i} is not a (name, kind, count, value) tuple")
        name, kind, count, value = var
        if type(name) is not str or not whole(count):
            raise bad("shared", f"entry {i} has no name or access count")
        if kind == "map" and type(value) is not dict:
            raise bad("shared", f"entry {i} ({name!r}) is a map whose value is not a dict")
        if kind not in ("counter", "map"):
            raise bad("shared", f"entry {i} ({name!r}) has kind {codec.short_repr(kind)}, not counter or map")
    local, records, sizes = state["local"], state["queue_records"], state["queue_bytes"]
    for key, value in (("local", local), ("queue_records", records), ("queue_bytes", sizes)):
        if type(value) is not list:
            raise bad(key, "is not a list")
        if key != "local" and not all(whole(n) for n in value):
            raise bad(key, "holds something other than counts")
        if len(value) != len(local) or not 1 <= len(local) <= 64:
            raise bad(key, f"has {len(value)} entries for {len(local)} queues")
    for key in _COUNTS:
        if not whole(state[key]):
            raise bad(key, f"is {codec.short_repr(state[key])}, not a count")
