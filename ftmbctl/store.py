"""The chunked log file format shared by input.log, pal-<q>.log, output.log and timeline.log.

Normative spec: formats/chunked-log.md. In short::

    file   := file_header chunk*
    header := magic "FTMB" | version u16 | kind u8 | flags u8 | run_id 16s | aux u32 | crc u32
    chunk  := length u32 | raw_length u32 | first_seq u64 | count u32 | payload_crc u32
              | header_crc u32 | payload (lz4 block of `count` records, `length` bytes)

All integers little-endian; every CRC is CRC-32 (zlib). A chunk cut off by the end of the file is
a torn tail: the writer died while writing it, and the reader stops cleanly before it. A bad CRC, a
bad length or a record count that does not match, anywhere a whole chunk is present, is
corruption and is reported with the file and byte offset.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import lz4.block

from ftmbctl.errors import DamagedRun, writes_to
from ftmbctl.safeio import open_regular

MAGIC = b"FTMB"
VERSION = 2  # 2: queue logs store columns (formats/queue-log.md)
FILE_HEADER = struct.Struct("<4sHBB16sII")  # magic, version, kind, flags, run_id, aux, crc
CHUNK_HEADER = struct.Struct("<IIQIII")  # length, raw_length, first_seq, count, payload_crc, header_crc
MAX_CHUNK = 64 << 20  # a chunk larger than this is not something ftmbctl wrote
LZ4_MAX_RATIO = 256  # an lz4 block gives at most about 255 bytes per byte (formats/chunked-log.md)

KIND_INPUT = 1
KIND_QUEUE = 2
KIND_OUTPUT = 3
KIND_TIMELINE = 4
KIND_NAMES = {KIND_INPUT: "input", KIND_QUEUE: "queue", KIND_OUTPUT: "output", KIND_TIMELINE: "timeline"}


def pack_file_header(kind: int, run_id: bytes, aux: int) -> bytes:
    body = FILE_HEADER.pack(MAGIC, VERSION, kind, 0, run_id, aux, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def pack_chunk(raw: bytes | bytearray, first_seq: int, count: int) -> bytes:
    """One chunk: header and lz4-compressed payload."""
    payload = lz4.block.compress(raw, store_size=False)
    head = CHUNK_HEADER.pack(len(payload), len(raw), first_seq, count, zlib.crc32(payload), 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head)) + payload


class ChunkWriter:
    """Appends chunks to one log file. ``extent`` is (bytes, records) on disk so far.

    ``extent`` is replaced as one tuple after each write, so another thread reading it sees a
    length and a record count that belong together, and never a length whose bytes are not
    written yet.
    """

    def __init__(self, path: Path, kind: int, run_id: bytes, aux: int = 0) -> None:
        self.path = path
        header = pack_file_header(kind, run_id, aux)
        # Every write names its file when the OS refuses it (a MachineError, exit 4): a worker
        # thread's flush that fails this way is the disk's failure, never the middlebox's.
        with writes_to(path):
            self._file: BinaryIO = open(path, "wb")
            self._file.write(header)
            self._file.flush()
        self.extent = (len(header), 0)

    @property
    def length(self) -> int:
        return self.extent[0]

    @property
    def records(self) -> int:
        return self.extent[1]

    def append(self, raw: bytes | bytearray, count: int) -> None:
        length, records = self.extent
        chunk = pack_chunk(raw, records, count)
        with writes_to(self.path):
            self._file.write(chunk)
            self._file.flush()
        self.extent = (length + len(chunk), records + count)

    def sync(self) -> None:
        with writes_to(self.path):
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with writes_to(self.path):
            self._file.close()


@dataclass(frozen=True, slots=True)
class FileHeader:
    kind: int
    run_id: bytes
    aux: int


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int  # byte offset of the chunk header in the file
    first_seq: int  # sequence number (record index in the log) of the first record
    count: int
    raw: bytes  # the decompressed records
    stored: int  # bytes the chunk takes in the file, header included


@dataclass
class LogScan:
    """What reading a log found: where the intact part ends and whether a torn tail followed."""

    header: FileHeader
    end: int = 0  # offset just past the last intact chunk
    records: int = 0
    torn_bytes: int = 0  # bytes of a cut-off chunk after ``end`` (dropped)


def read_file_header(path: Path, data: bytes, kind: int | None = None,
                     run_id: bytes | None = None) -> FileHeader:
    if len(data) < FILE_HEADER.size:
        raise DamagedRun(f"{path}: {len(data)} bytes, shorter than the {FILE_HEADER.size}-byte log header")
    magic, version, got_kind, _flags, got_run, aux, crc = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise DamagedRun(f"{path}: not an ftmbctl log (starts with {data[:4].hex()}, expected {MAGIC.hex()})")
    if zlib.crc32(data[:FILE_HEADER.size - 4]) != crc:
        raise DamagedRun(f"{path}: log header checksum mismatch at byte 0")
    if version != VERSION:
        raise DamagedRun(f"{path}: log format version {version}, this ftmbctl reads version {VERSION}")
    if kind is not None and got_kind != kind:
        raise DamagedRun(f"{path}: holds a {KIND_NAMES.get(got_kind, got_kind)} log, expected a {KIND_NAMES[kind]} log")
    if run_id is not None and got_run != run_id:
        raise DamagedRun(f"{path}: belongs to run {got_run.hex()}, not to this run ({run_id.hex()})")
    return FileHeader(got_kind, got_run, aux)


def _chunk_header(path: Path, data: bytes, pos: int, expect_seq: int) -> tuple[int, int, int, int, int]:
    """The chunk header at ``pos``, checked (its CRC, its sizes, its first record number):
    (length, raw_length, first_seq, count, payload_crc)."""
    length, raw_length, seq, count, payload_crc, header_crc = CHUNK_HEADER.unpack_from(data, pos)
    if zlib.crc32(data[pos:pos + CHUNK_HEADER.size - 4]) != header_crc:
        raise DamagedRun(f"{path}: chunk header checksum mismatch at byte {pos}")
    if length > MAX_CHUNK or raw_length > MAX_CHUNK:
        raise DamagedRun(f"{path}: chunk at byte {pos} claims {max(length, raw_length)} bytes")
    if raw_length > LZ4_MAX_RATIO * length:  # refused before the decompressor allocates it
        raise DamagedRun(f"{path}: chunk at byte {pos} claims {raw_length} bytes of records from {length} "
                         "stored bytes, more than lz4 can give")
    if seq != expect_seq:
        raise DamagedRun(f"{path}: chunk at byte {pos} starts at record {seq}, expected {expect_seq}")
    return length, raw_length, seq, count, payload_crc


def iter_chunks(path: Path, data: bytes, scan: LogScan, start: int = FILE_HEADER.size,
                first_seq: int = 0, size: int | None = None) -> Iterator[Chunk]:
    """Decode the chunks of ``data`` from ``start``; fill ``scan`` as it goes (torn tail, end)."""
    pos = start
    expect_seq = first_seq
    size = len(data) if size is None else min(size, len(data))  # a crash image's durable length
    scan.end = pos
    scan.records = first_seq
    while pos < size:
        if size - pos < CHUNK_HEADER.size:
            scan.torn_bytes = size - pos
            return
        length, raw_length, seq, count, payload_crc = _chunk_header(path, data, pos, expect_seq)
        body = pos + CHUNK_HEADER.size
        if size - body < length:
            scan.torn_bytes = size - pos
            return
        payload = data[body:body + length]
        if zlib.crc32(payload) != payload_crc:
            raise DamagedRun(f"{path}: chunk payload checksum mismatch at byte {pos}")
        try:
            raw = lz4.block.decompress(payload, uncompressed_size=raw_length)
        except lz4.block.LZ4BlockError:
            raise DamagedRun(f"{path}: chunk at byte {pos} does not decompress") from None
        if len(raw) != raw_length:
            raise DamagedRun(f"{path}: chunk at byte {pos} decompresses to {len(raw)} bytes, header says {raw_length}")
        chunk = Chunk(pos, seq, count, raw, CHUNK_HEADER.size + length)
        pos = body + length
        expect_seq += count
        scan.end = pos
        scan.records = expect_seq
        yield chunk


def iter_chunk_heads(path: Path, data: bytes, start: int, first_seq: int, size: int) -> Iterator[tuple[int, int, int]]:
    """(offset, first_seq, count) of each whole chunk from ``start``, reading only the chunk
    headers (checked like ``iter_chunks`` does) and skipping the payloads, which whoever reads a
    chunk later checks: finding where record N is costs microseconds per chunk, not a decompression."""
    pos, expect_seq = start, first_seq
    size = min(size, len(data))
    while size - pos >= CHUNK_HEADER.size:
        length, _raw_length, seq, count, _payload_crc = _chunk_header(path, data, pos, expect_seq)
        if size - pos - CHUNK_HEADER.size < length:
            return  # a torn tail
        yield pos, seq, count
        pos += CHUNK_HEADER.size + length
        expect_seq += count


def read_log_bytes(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a log file (its first ``limit`` bytes), as one clear error when unreadable."""
    try:
        with open_regular(path) as handle:
            return handle.readall() if limit is None else handle.read(limit)
    except FileNotFoundError:
        raise DamagedRun(f"{path}: file is missing") from None
    except IsADirectoryError:
        raise DamagedRun(f"{path}: is a directory, expected a log file") from None
    except OSError as exc:
        raise DamagedRun(f"{path}: cannot be read ({exc.strerror})") from None
