"""The on-disk formats against their specs in formats/*.md.

Every ```hex title=X``` vector in the specs is decoded with the real code, compared with its
```json title=X``` expectation and re-encoded byte for byte. Then round trips (Hypothesis), the
reader's torn-tail and corruption cases by name, the snapshot reader, and one small recorded run
checked against what the specs promise.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftmbctl import codec
from ftmbctl import records as rec
from ftmbctl.errors import DamagedRun
from ftmbctl.hashing import MASK64, fold32
from ftmbctl.queuelog import FLAG_KEYFRAME, QueueDecoder, QueueEncoder, decode_chunk, encode_records, fold16
from ftmbctl.shared import Counter, Map
from ftmbctl.snapshot import FLAG_FINAL, HEADER, decode_snapshot, encode_snapshot
from ftmbctl.store import (CHUNK_HEADER, FILE_HEADER, KIND_INPUT, KIND_NAMES, KIND_OUTPUT, KIND_QUEUE,
                           KIND_TIMELINE, MAX_CHUNK, ChunkWriter, FileHeader, LogScan, iter_chunks,
                           pack_chunk, pack_file_header, read_file_header)

FORMATS = Path(__file__).resolve().parents[1] / "formats"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RUN_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_RUN = bytes(16)
VECTOR_PATH = Path("vector")

# ---------------------------------------------------------------- vectors out of the specs

_BLOCK = re.compile(r"^```(hex|json) title=([\w-]+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def _spec_blocks() -> dict[str, dict[str, tuple[str, str]]]:
    """{"hex"|"json": {title: (spec file name, block text)}}; a title may appear once per kind."""
    found: dict[str, dict[str, tuple[str, str]]] = {"hex": {}, "json": {}}
    for spec in sorted(FORMATS.glob("*.md")):
        for kind, title, body in _BLOCK.findall(spec.read_text(encoding="utf-8")):
            assert title not in found[kind], f"{spec.name}: second ```{kind} title={title}``` block"
            found[kind][title] = (spec.name, body)
    return found


BLOCKS = _spec_blocks()
REQUIRED = {"file-header", "chunk", "log-file", "input-record", "queue-chunk", "output-record",
            "timeline-event", "codec-value", "codec-bytearray", "snapshot-file"}


def parse_hex(text: str) -> bytes:
    out = bytearray()
    for line in text.splitlines():
        for token in line.split("#", 1)[0].split():
            assert re.fullmatch(r"[0-9a-fA-F]{2}", token), f"bad hex token {token!r}"
            out.append(int(token, 16))
    return bytes(out)


def hex32(n: int) -> str:
    return f"0x{n:08x}"


def to_typed(value: Any) -> Any:
    """A codec value in the typed JSON notation of formats/snapshot.md."""
    kind = type(value)
    if value is None:
        return {"none": None}
    if kind is bool:
        return {"bool": value}
    if kind is int:
        return {"int": value}
    if kind is float:
        return {"float": value}
    if kind is str:
        return {"str": value}
    if kind in (bytes, bytearray):
        return {kind.__name__: value.hex()}
    if kind in (tuple, list):
        return {kind.__name__: [to_typed(v) for v in value]}
    if kind is dict:
        return {"dict": [[to_typed(k), to_typed(v)] for k, v in value.items()]}
    if kind in (set, frozenset):
        return {kind.__name__: [to_typed(v) for v in sorted(value, key=codec.encode)]}
    raise TypeError(kind)


def from_typed(typed: Any) -> Any:
    ((name, inner),) = typed.items()
    if name == "none":
        return None
    if name in ("bool", "int", "float", "str"):
        return inner
    if name == "bytes":
        return bytes.fromhex(inner)
    if name == "bytearray":
        return bytearray.fromhex(inner)
    if name == "tuple":
        return tuple(from_typed(v) for v in inner)
    if name == "list":
        return [from_typed(v) for v in inner]
    if name == "dict":
        return {from_typed(k): from_typed(v) for k, v in inner}
    if name == "set":
        return {from_typed(v) for v in inner}
    if name == "frozenset":
        return frozenset(from_typed(v) for v in inner)
    raise ValueError(name)


def queue_record_json(r: rec.PalRecord | rec.NdRecord) -> dict[str, Any]:
    if isinstance(r, rec.PalRecord):
        digest = None if r.digest is None else f"0x{r.digest:04x}"
        return {"record": "pal", "packet": r.packet, "var": r.var, "seq": r.seq, "digest": digest}
    return {"record": "nd", "packet": r.packet, "kind": r.kind, "value": r.value}


def read_log(path: Path, data: bytes, kind: int | None = None, run_id: bytes | None = None):
    header = read_file_header(path, data, kind, run_id)
    scan = LogScan(header)
    return header, list(iter_chunks(path, data, scan)), scan


def _only(items: list) -> Any:
    assert len(items) == 1, items
    return items[0]


# Each decoder: (bytes, tmp dir) -> (decoded JSON value, bytes re-encoded from the decoded values).
def _file_header(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    assert len(data) == FILE_HEADER.size
    head = read_file_header(VECTOR_PATH, data)
    magic, version, kind, flags, run_id, aux, crc = FILE_HEADER.unpack(data)
    assert head == FileHeader(kind, run_id, aux)
    got = {"magic": magic.decode(), "version": version, "kind": kind, "kind_name": KIND_NAMES[kind],
           "flags": flags, "run_id": run_id.hex(), "aux": aux, "header_crc": hex32(crc)}
    return got, pack_file_header(kind, run_id, aux)


def _chunk(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    length, raw_length, first_seq, count, payload_crc, header_crc = CHUNK_HEADER.unpack_from(data)
    scan = LogScan(FileHeader(KIND_QUEUE, RUN_ID, 0))
    chunk = _only(list(iter_chunks(VECTOR_PATH, data, scan, start=0, first_seq=first_seq)))
    assert (scan.end, scan.torn_bytes, chunk.stored) == (len(data), 0, len(data))
    records = QueueDecoder()(chunk.raw)
    assert len(records) == count
    got = {"length": length, "raw_length": raw_length, "first_seq": first_seq, "count": count,
           "payload_crc": hex32(payload_crc), "header_crc": hex32(header_crc),
           "records": [queue_record_json(r) for r in records]}
    return got, pack_chunk(encode_records(records), first_seq, count)


def _log_file(data: bytes, tmp: Path) -> tuple[Any, bytes]:
    header, chunks, scan = read_log(VECTOR_PATH, data)
    decode = QueueDecoder()
    decoded = [decode(c.raw) for c in chunks]
    got = {"header": {"kind": header.kind, "run_id": header.run_id.hex(), "aux": header.aux},
           "chunks": [{"offset": c.offset, "first_seq": c.first_seq, "count": c.count, "stored": c.stored,
                       "records": [queue_record_json(r) for r in records]} for c, records in zip(chunks, decoded)],
           "end": scan.end, "records": scan.records, "torn_bytes": scan.torn_bytes}
    path = tmp / "log-file.log"
    writer = ChunkWriter(path, header.kind, header.run_id, header.aux)
    encoder = QueueEncoder()  # one encoder for the log: the second chunk continues the first
    for c, records in zip(chunks, decoded):
        writer.append(encode_records(records, encoder), c.count)
    writer.close()
    assert writer.length == len(data) and writer.records == scan.records
    return got, path.read_bytes()


def _input_record(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    r = _only(list(rec.iter_inputs(data)))
    got = {"id": r.id, "ts_ns": r.ts_ns, "linktype": r.linktype, "orig_len": r.orig_len,
           "caplen": len(r.data), "data": r.data.hex()}
    return got, rec.pack_input(r.id, r.ts_ns, r.linktype, r.orig_len, r.data)


def _queue_chunk(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    records, state = decode_chunk(data, None)
    got = {"keyframe": bool(data[0] & FLAG_KEYFRAME),
           "state_after": {"packet": state.packet, "seq": {str(v): s for v, s in sorted(state.seqs.items())},
                           "clock": state.clock},
           "records": [queue_record_json(r) for r in records]}
    return got, encode_records(records)


def _output_record(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    r = _only(list(rec.iter_outputs(data)))
    got = {"input_id": r.input_id, "index": r.index, "linktype": r.linktype, "finish_ns": r.finish_ns,
           "release_ns": r.release_ns, "queues": len(r.deps), "deps": list(r.deps), "caplen": len(r.data),
           "data": r.data.hex()}
    return got, rec.pack_output(r)


def _timeline_event(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    e = _only(list(rec.iter_events(data)))
    got = {"index": e.index, "kind": e.kind, "name": e.name, "arg": e.arg, "time_ns": e.time_ns,
           "snapshot": e.snapshot, "input_len": e.input_len, "input_records": e.input_records,
           "output_len": e.output_len, "output_records": e.output_records, "queues": len(e.queue_len),
           "queue_len": list(e.queue_len), "queue_records": list(e.queue_records)}
    return got, rec.pack_event(e)


def _codec_value(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    value = codec.decode(data)
    return to_typed(value), codec.encode(value)


def _snapshot_file(data: bytes, _tmp: Path) -> tuple[Any, bytes]:
    magic, version, flags, run_id, number, boundary, length, raw_length, body_crc, head_crc = HEADER.unpack_from(data)
    snap = decode_snapshot(VECTOR_PATH, data, run_id)
    assert (snap.number, snap.boundary, snap.flags) == (number, boundary, flags)
    got = {"magic": magic.decode(), "version": version, "flags": flags, "run_id": run_id.hex(), "number": number,
           "boundary": boundary, "length": length, "raw_length": raw_length, "body_crc": hex32(body_crc),
           "header_crc": hex32(head_crc), "state": to_typed(snap.state)}
    return got, encode_snapshot(run_id, number, boundary, snap.state, flags)


DECODERS: dict[str, Callable[[bytes, Path], tuple[Any, bytes]]] = {
    "file-header": _file_header, "chunk": _chunk, "log-file": _log_file, "input-record": _input_record,
    "queue-chunk": _queue_chunk, "output-record": _output_record,
    "timeline-event": _timeline_event, "codec-value": _codec_value, "codec-bytearray": _codec_value,
    "snapshot-file": _snapshot_file,
}


def vector(title: str) -> bytes:
    return parse_hex(BLOCKS["hex"][title][1])


def test_every_required_vector_is_in_the_specs() -> None:
    assert REQUIRED <= set(BLOCKS["hex"]), sorted(REQUIRED - set(BLOCKS["hex"]))
    assert set(BLOCKS["hex"]) <= set(BLOCKS["json"]), "a hex vector without its json expectation"
    assert set(BLOCKS["hex"]) <= set(DECODERS), "a hex vector this test does not know how to decode"


@pytest.mark.parametrize("title", sorted(set(BLOCKS["hex"]) | REQUIRED))
def test_vector_decodes_and_reencodes_byte_for_byte(title: str, tmp_path: Path) -> None:
    spec, body = BLOCKS["hex"][title]
    data = parse_hex(body)
    expected = json.loads(BLOCKS["json"][title][1])
    got, again = DECODERS[title](data, tmp_path)
    assert got == expected, f"{spec}: ```hex title={title}``` decodes differently from its json"
    assert again.hex() == data.hex(), f"{spec}: ```hex title={title}``` does not re-encode byte for byte"


def test_digest_examples_match_the_spec_formulas_and_the_code() -> None:
    doc = json.loads(BLOCKS["json"]["digest-examples"][1])
    for case in doc["counters"]:
        v = case["value"]
        formula = (((v & MASK64) * 0x9E3779B97F4A7C15) & MASK64) >> 32
        assert hex32(formula) == case["digest"] == hex32(Counter("c", 0, v).digest32())
        assert f"0x{fold16(formula):04x}" == case["stored"]
    for case in doc["maps"]:
        entries = [(from_typed(k), from_typed(v)) for k, v in case["entries"]]
        assert [repr(e) for e in entries] == case["reprs"]
        hashes = [int.from_bytes(hashlib.blake2b(r.encode("utf-8"), digest_size=8).digest(), "little")
                  for r in case["reprs"]]
        assert [f"0x{h:016x}" for h in hashes] == case["hashes"]
        total = sum(hashes) & MASK64
        assert f"0x{total:016x}" == case["digest64"]
        assert hex32(((total >> 32) ^ total) & 0xFFFFFFFF) == case["digest"] == hex32(fold32(total))
        built = Map("m", 0)
        for key, value in entries:
            built.op_put(key, value)
        assert (f"0x{built.digest64():016x}", hex32(built.digest32())) == (case["digest64"], case["digest"])
        restored = Map("m", 0)
        restored.load(dict(entries), 1)
        assert restored.digest64() == built.digest64()


def test_struct_sizes_match_the_field_tables() -> None:
    sizes = {"file header": FILE_HEADER.size, "chunk header": CHUNK_HEADER.size, "input": rec.INPUT.size,
             "output": rec.OUTPUT.size, "event": rec.EVENT.size,
             "event queue part": rec.EVENT_QUEUE.size, "snapshot header": HEADER.size}
    assert sizes == {"file header": 32, "chunk header": 28, "input": 22, "output": 25,
                     "event": 46, "event queue part": 12, "snapshot header": 48}
    assert MAX_CHUNK == 64 << 20


# ---------------------------------------------------------------- Hypothesis round trips

u8, u16 = st.integers(0, 0xFF), st.integers(0, 0xFFFF)
u32, u64 = st.integers(0, 0xFFFFFFFF), st.integers(0, MASK64)
small_bytes = st.binary(max_size=80)
opaque_records = st.binary(min_size=1, max_size=20)  # the container never looks inside its records
input_records = st.builds(rec.InputRecord, u32, u64, u16, u32, small_bytes)
output_records = st.builds(rec.OutputRecord, u32, u16, u16, u64, u64,
                           st.lists(u32, max_size=64).map(tuple), small_bytes)


@st.composite
def events(draw) -> rec.Event:
    queues = draw(st.integers(0, 64))
    return rec.Event(draw(u32), draw(st.sampled_from(sorted(rec.EVENT_NAMES))), draw(u32), draw(u64),
                     draw(st.integers(-(1 << 31), (1 << 31) - 1)), draw(u64), draw(u32), draw(u64), draw(u32),
                     tuple(draw(st.lists(u64, min_size=queues, max_size=queues))),
                     tuple(draw(st.lists(u32, min_size=queues, max_size=queues))))


@FUZZ
@given(st.lists(input_records, max_size=8))
def test_input_records_round_trip(items: list[rec.InputRecord]) -> None:
    raw = b"".join(rec.pack_input(r.id, r.ts_ns, r.linktype, r.orig_len, r.data) for r in items)
    assert list(rec.iter_inputs(raw)) == items


@FUZZ
@given(st.lists(output_records, max_size=6))
def test_output_records_round_trip(items: list[rec.OutputRecord]) -> None:
    raw = b"".join(rec.pack_output(r) for r in items)
    assert list(rec.iter_outputs(raw)) == items


@FUZZ
@given(st.lists(events(), max_size=6))
def test_events_round_trip(items: list[rec.Event]) -> None:
    raw = b"".join(rec.pack_event(e) for e in items)
    assert list(rec.iter_events(raw)) == items


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(1 << 200), 1 << 200),
                    st.floats(allow_nan=False), st.text(max_size=12), st.binary(max_size=12))
hashables = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
codec_values = st.recursive(
    st.one_of(scalars, st.floats(), st.binary(max_size=12).map(bytearray)),  # bytearray: unhashable
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4), st.frozensets(hashables, max_size=4)),
    max_leaves=20)


def strict(value: Any) -> Any:
    """A comparable form that tells every codec type apart (bool from int, float bits, container kinds)."""
    kind = type(value)
    if kind is float:
        return ("float", struct.pack("<d", value))
    if kind in (tuple, list):
        return (kind.__name__, tuple(strict(v) for v in value))
    if kind is dict:
        return ("dict", tuple((strict(k), strict(v)) for k, v in value.items()))
    if kind in (set, frozenset):
        return (kind.__name__, tuple(strict(v) for v in sorted(value, key=codec.encode)))
    return (kind.__name__, value)


@FUZZ
@given(codec_values)
def test_codec_values_round_trip(value: Any) -> None:
    data = codec.encode(value)
    back = codec.decode(data)
    assert strict(back) == strict(value)
    assert codec.encode(back) == data


def test_codec_keeps_bytearray_and_refuses_other_types() -> None:
    back = codec.decode(codec.encode(bytearray(b"ab")))
    assert type(back) is bytearray and back == b"ab"
    assert type(codec.decode(codec.encode(b"ab"))) is bytes
    for bad in (object(), 1j, range(3), memoryview(b"x")):
        with pytest.raises(codec.UnstorableValue):
            codec.encode(bad)
    for tag in (b"e", b"E"):  # a bytearray is unhashable: never a set member
        with pytest.raises(codec.CodecError, match="unhashable set member"):
            codec.decode(tag + b"\x01B\x00")


@FUZZ
@given(st.binary(max_size=64))
def test_codec_decoder_fails_only_with_codec_error(data: bytes) -> None:
    try:
        value = codec.decode(data)
    except codec.CodecError:
        return
    codec.encode(value)  # whatever decodes can be stored again


@FUZZ
@given(st.lists(st.lists(opaque_records, min_size=1, max_size=6), max_size=6), u32, st.data())
def test_chunked_log_round_trip(batches: list[list[bytes]], aux: int, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pal-0.log"
        writer = ChunkWriter(path, KIND_QUEUE, RUN_ID, aux)
        for batch in batches:
            writer.append(b"".join(batch), len(batch))
        writer.close()
        raw = path.read_bytes()
    assert writer.length == len(raw)
    header, chunks, scan = read_log(path, raw, KIND_QUEUE, RUN_ID)
    assert header == FileHeader(KIND_QUEUE, RUN_ID, aux)
    assert [c.raw for c in chunks] == [b"".join(batch) for batch in batches]
    assert [c.count for c in chunks] == [len(b) for b in batches]
    assert (scan.end, scan.records, scan.torn_bytes) == (len(raw), sum(map(len, batches)), 0)
    if chunks:  # resuming at any chunk boundary reads the rest
        k = data.draw(st.integers(0, len(chunks) - 1))
        rest = list(iter_chunks(path, raw, LogScan(header), chunks[k].offset, chunks[k].first_seq))
        assert [c.raw for c in rest] == [c.raw for c in chunks[k:]]


# ---------------------------------------------------------------- the chunked-log reader, by case

def pal(packet: int, seq: int) -> bytes:
    """15 opaque bytes standing for a record: the container tests never decode what they hold."""
    return struct.pack("<BIHII", 1, packet, 1, seq, seq * 7)


def write_log(path: Path, batches: list[list[bytes]], kind: int = KIND_QUEUE) -> tuple[bytes, list[int]]:
    """A log of ``batches`` (lists of packed records); returns its bytes and its chunk offsets."""
    writer = ChunkWriter(path, kind, RUN_ID, 0)
    offsets = []
    for batch in batches:
        offsets.append(writer.length)
        writer.append(b"".join(batch), len(batch))
    writer.close()
    return path.read_bytes(), offsets


THREE_CHUNKS = [[pal(0, 1), pal(0, 2)], [pal(1, 3)], [pal(2, 4), pal(2, 5), pal(3, 6)]]


def damaged(path: Path, data: bytes) -> str:
    with pytest.raises(DamagedRun) as info:
        read_log(path, data)
    return str(info.value)


def test_truncated_trailing_chunk_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    data, offsets = write_log(path, THREE_CHUNKS)
    last = offsets[-1]
    for cut in range(last, len(data)):
        _, chunks, scan = read_log(path, data[:cut])
        assert [c.raw for c in chunks] == [b"".join(b) for b in THREE_CHUNKS[:2]]
        assert (scan.end, scan.records, scan.torn_bytes) == (last, 3, cut - last)
    _, chunks, scan = read_log(path, data)
    assert len(chunks) == 3 and scan.torn_bytes == 0


def test_truncated_inside_chunk_header_is_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    data, offsets = write_log(path, THREE_CHUNKS)
    for start in offsets:
        for cut in range(start + 1, start + CHUNK_HEADER.size):
            _, chunks, scan = read_log(path, data[:cut])
            assert len(chunks) == offsets.index(start)
            assert (scan.end, scan.torn_bytes) == (start, cut - start)


def test_checksum_mismatch_mid_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    data, offsets = write_log(path, THREE_CHUNKS)
    middle = offsets[1]
    for pos in range(middle + CHUNK_HEADER.size, offsets[2]):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        message = damaged(path, bytes(bad))
        assert message == f"{path}: chunk payload checksum mismatch at byte {middle}"


def test_header_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    data, offsets = write_log(path, THREE_CHUNKS)
    for pos in range(offsets[1], offsets[1] + CHUNK_HEADER.size):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert damaged(path, bytes(bad)) == f"{path}: chunk header checksum mismatch at byte {offsets[1]}"
    for pos in range(4, FILE_HEADER.size):  # bytes 0-3 are the magic, reported as such
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert damaged(path, bytes(bad)) == f"{path}: log header checksum mismatch at byte 0"
    # a complete chunk is checked even when it is the last one in the file
    bad = bytearray(data)
    bad[offsets[2] + 3] ^= 0x01
    assert damaged(path, bytes(bad)) == f"{path}: chunk header checksum mismatch at byte {offsets[2]}"


def test_sequence_gap_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    head = pack_file_header(KIND_QUEUE, RUN_ID, 0)
    first = pack_chunk(pal(0, 1) + pal(0, 2), 0, 2)
    for wrong in (0, 1, 3, 1 << 40):
        data = head + first + pack_chunk(pal(1, 3), wrong, 1)
        assert damaged(path, data) == (f"{path}: chunk at byte {len(head) + len(first)} starts at record "
                                       f"{wrong}, expected 2")
    assert len(read_log(path, head + first + pack_chunk(pal(1, 3), 2, 1))[1]) == 2


def _forged_chunk(payload: bytes, raw_length: int, first_seq: int = 0, count: int = 1,
                  length: int | None = None) -> bytes:
    """A chunk with correct CRCs around whatever fields and payload the test wants."""
    length = len(payload) if length is None else length
    head = CHUNK_HEADER.pack(length, raw_length, first_seq, count, zlib.crc32(payload), 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def test_oversize_length_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    head = pack_file_header(KIND_QUEUE, RUN_ID, 0)
    too_long = _forged_chunk(b"", 15, length=MAX_CHUNK + 1)
    assert damaged(path, head + too_long) == f"{path}: chunk at byte 32 claims {MAX_CHUNK + 1} bytes"
    payload = lz4.block.compress(pal(0, 1), store_size=False)
    too_raw = _forged_chunk(payload, MAX_CHUNK + 1)
    assert damaged(path, head + too_raw) == f"{path}: chunk at byte 32 claims {MAX_CHUNK + 1} bytes"


def test_undecompressable_payload_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    head = pack_file_header(KIND_QUEUE, RUN_ID, 0)
    assert damaged(path, head + _forged_chunk(b"\xff\xff\xff", 15)) == f"{path}: chunk at byte 32 does not decompress"
    payload = lz4.block.compress(pal(0, 1), store_size=False)
    assert damaged(path, head + _forged_chunk(payload, 14)) == f"{path}: chunk at byte 32 does not decompress"


def test_raw_length_mismatch_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    head = pack_file_header(KIND_QUEUE, RUN_ID, 0)
    payload = lz4.block.compress(pal(0, 1), store_size=False)
    assert damaged(path, head + _forged_chunk(payload, 16)) == (
        f"{path}: chunk at byte 32 decompresses to 15 bytes, header says 16")


def test_wrong_kind_and_wrong_run_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "pal-0.log"
    data, _ = write_log(path, THREE_CHUNKS)
    read_log(path, data, KIND_QUEUE, RUN_ID)
    for kind in (KIND_INPUT, KIND_OUTPUT, KIND_TIMELINE):
        with pytest.raises(DamagedRun) as info:
            read_log(path, data, kind, RUN_ID)
        assert str(info.value) == f"{path}: holds a queue log, expected a {KIND_NAMES[kind]} log"
    with pytest.raises(DamagedRun) as info:
        read_log(path, data, KIND_QUEUE, OTHER_RUN)
    assert str(info.value) == f"{path}: belongs to run {RUN_ID.hex()}, not to this run ({OTHER_RUN.hex()})"


def test_short_file_wrong_magic_and_other_version_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "input.log"
    data = pack_file_header(KIND_INPUT, RUN_ID, 4)
    for cut in range(FILE_HEADER.size):
        assert damaged(path, data[:cut]) == f"{path}: {cut} bytes, shorter than the 32-byte log header"
    assert damaged(path, b"GIF8" + data[4:]).startswith(f"{path}: not an ftmbctl log (starts with 47494638")
    for version in (1, 3):  # 1: fixed-width queue records, which this reader no longer decodes
        body = FILE_HEADER.pack(b"FTMB", version, KIND_INPUT, 0, RUN_ID, 4, 0)[:-4]
        other = body + struct.pack("<I", zlib.crc32(body))
        assert damaged(path, other) == f"{path}: log format version {version}, this ftmbctl reads version 2"


def test_flip_every_byte_of_a_small_log(tmp_path: Path) -> None:
    """Every byte of a log is under a CRC: any change to any one byte is reported, never read."""
    path = tmp_path / "pal-0.log"
    data, offsets = write_log(path, [[pal(0, 1), pal(0, 2)], [pal(1, 3)]])
    assert len(offsets) == 2
    for pos in range(len(data)):
        for flip in range(1, 256):
            bad = bytearray(data)
            bad[pos] ^= flip
            with pytest.raises(DamagedRun):
                read_log(path, bytes(bad))


def test_record_decoders_report_every_truncation() -> None:
    samples = [
        (rec.iter_inputs, rec.pack_input(1, 2, 1, 60, b"abcdef")),
        (rec.iter_outputs, rec.pack_output(rec.OutputRecord(1, 0, 1, 2, 3, (4, 5), b"xyz"))),
        (rec.iter_events, rec.pack_event(rec.Event(0, rec.EV_END, 0, 1, -1, 32, 0, 32, 0, (32,), (0,)))),
    ]
    for decode, raw in samples:
        for cut in range(1, len(raw)):
            with pytest.raises(rec.RecordError):
                list(decode(raw[:cut]))


def test_unknown_event_kind_is_reported() -> None:
    bad_event = rec.pack_event(rec.Event(0, 7, 0, 0, -1, 32, 0, 32, 0, (), ()))
    with pytest.raises(rec.RecordError, match="unknown timeline event kind 7"):
        list(rec.iter_events(bad_event))


# ---------------------------------------------------------------- snapshots

SMALL_STATE = {"boundary": 4, "shared": [("hits", "counter", 3, 3)], "local": [{"seen": 3}],
               "queue_records": [3], "queue_bytes": [107], "input_records": 4, "input_bytes": 391,
               "outputs_released": 4, "outputs_bytes": 451, "time_ns": 5}


def test_truncated_snapshot_is_rejected_at_every_length() -> None:
    for data in (encode_snapshot(RUN_ID, 1, 4, SMALL_STATE), vector("snapshot-file")):
        decode_snapshot(VECTOR_PATH, data, RUN_ID)
        for cut in range(len(data)):
            with pytest.raises(DamagedRun):
                decode_snapshot(VECTOR_PATH, data[:cut], RUN_ID)
        with pytest.raises(DamagedRun, match="snapshot body is"):
            decode_snapshot(VECTOR_PATH, data + b"\x00", RUN_ID)


def test_snapshot_of_another_run_is_rejected() -> None:
    data = encode_snapshot(RUN_ID, 1, 4, SMALL_STATE)
    with pytest.raises(DamagedRun) as info:
        decode_snapshot(VECTOR_PATH, data, OTHER_RUN)
    assert str(info.value) == f"{VECTOR_PATH}: belongs to run {RUN_ID.hex()}, not to this run ({OTHER_RUN.hex()})"
    assert decode_snapshot(VECTOR_PATH, data).state == SMALL_STATE  # no run id given: not checked


def test_flip_every_byte_of_a_snapshot() -> None:
    data = encode_snapshot(RUN_ID, 1, 4, SMALL_STATE)
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            with pytest.raises(DamagedRun):
                decode_snapshot(VECTOR_PATH, bytes(bad), RUN_ID)


def test_snapshot_header_fields_and_final_flag() -> None:
    data = encode_snapshot(RUN_ID, 0xFFFFFFFF, 300, SMALL_STATE, flags=FLAG_FINAL)
    snap = decode_snapshot(VECTOR_PATH, data, RUN_ID)
    assert (snap.number, snap.boundary, snap.flags, snap.state) == (0xFFFFFFFF, 300, 1, SMALL_STATE)
    body = codec.encode([1, 2])  # a body that decodes to something other than a dict
    packed = lz4.block.compress(body, store_size=False)
    head = HEADER.pack(b"FTMS", 1, 0, RUN_ID, 1, 4, len(packed), len(body), zlib.crc32(packed), 0)[:-4]
    with pytest.raises(DamagedRun, match="not a state record"):
        decode_snapshot(VECTOR_PATH, head + struct.pack("<I", zlib.crc32(head)) + packed)


def test_version_1_snapshots_are_still_read() -> None:
    """Version 2 only added the bytearray tag: the spec's file with version 1 in its header (and
    the header CRC redone) decodes to the same state; versions 0 and 3 are refused."""
    current = vector("snapshot-file")
    want = decode_snapshot(VECTOR_PATH, current, RUN_ID).state
    for version in (0, 1, 3):
        head = bytearray(current[:HEADER.size])
        head[4:6] = struct.pack("<H", version)
        head[44:48] = struct.pack("<I", zlib.crc32(bytes(head[:44])))
        data = bytes(head) + current[HEADER.size:]
        if version == 1:
            assert strict(decode_snapshot(VECTOR_PATH, data, RUN_ID).state) == strict(want)
            continue
        with pytest.raises(DamagedRun) as info:
            decode_snapshot(VECTOR_PATH, data, RUN_ID)
        assert str(info.value) == (f"{VECTOR_PATH}: snapshot format version {version}, "
                                   "this ftmbctl reads versions 1 and 2")


@FUZZ
@given(st.dictionaries(st.text(max_size=8), codec_values, max_size=5), u32, u32)
def test_snapshots_round_trip(state: dict, number: int, boundary: int) -> None:
    data = encode_snapshot(RUN_ID, number, boundary, state)
    snap = decode_snapshot(VECTOR_PATH, data, RUN_ID)
    assert (snap.number, snap.boundary, snap.flags) == (number, boundary, 0)
    assert strict(snap.state) == strict(state)


# ---------------------------------------------------------------- a real run against the specs

def _udp_frame(src: int, dst: int, sport: int, dport: int) -> bytes:
    payload = b"ftmb"
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp


def _small_trace(path: Path, count: int) -> None:
    from ftmbctl.pcapio import RawPacket, write_pcap

    inside, outside = 0x0A000000, 0x5DB8D822  # 10.0.0.0, 93.184.216.34
    packets = []
    for i in range(count):
        host = inside + 1 + i % 5
        frame = (_udp_frame(host, outside, 40000 + i % 5, 53) if i % 3 else
                 _udp_frame(outside, host, 53, 40000 + i % 5))
        if i % 11 == 10:
            frame = b"\xff" * 6 + b"\x02" + bytes(5) + b"\x08\x06" + bytes(28)  # ARP: not IP
        packets.append(RawPacket(i, 1_767_225_600_000_000_000 + i * 1_000_000, 1, len(frame), frame))
    write_pcap(path, packets)


def test_recorded_run_matches_the_specs(tmp_path: Path) -> None:
    from ftmbctl.record import RecordConfig, record

    trace, run = tmp_path / "t.pcap", tmp_path / "run"
    _small_trace(trace, 23)
    record(RecordConfig(trace=trace, out=run, middlebox="nat", mb_opts=["timeout=0.005"], queues=2,
                        snapshot_every=5, flush_every=3, seed=3))
    manifest = json.loads((run / "manifest.json").read_text())
    run_id, queues = bytes.fromhex(manifest["run_id"]), manifest["queues"]
    names = ["input.log", *(f"pal-{q}.log" for q in range(queues)), "output.log", "reference.snap",
             *(f"snapshots/snap-{k:06d}.snap" for k in range(1, 5)), "timeline.log"]
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == sorted(
        names + ["manifest.json"])
    assert sorted(manifest["files"]) == sorted(names)
    for name, entry in manifest["files"].items():
        blob = (run / name).read_bytes()
        assert entry == {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    assert set(manifest) == {"format_version", "ftmbctl_version", "complete", "run_id", "mode", "trace",
                             "middlebox", "queues", "scheduler", "seed", "snapshot_every", "flush_every",
                             "variables", "python_hash_seed", "lint", "guard", "files", "stats"}
    assert manifest["complete"] is True and manifest["stats"]["packets_in"] == 23
    assert manifest["lint"]["clean"] is True and manifest["lint"]["findings"] == []  # the built-in nat
    assert manifest["guard"] == {"mode": "warn", "findings": []}

    def log(name: str, kind: int, aux: int) -> list:
        data = (run / name).read_bytes()
        header, chunks, scan = read_log(run / name, data, kind, run_id)
        assert header.aux == aux and scan.end == len(data) and scan.torn_bytes == 0
        return chunks

    inputs = log("input.log", KIND_INPUT, queues)
    assert [r.id for c in inputs for r in rec.iter_inputs(c.raw)] == list(range(23))
    assert all(c.count <= 3 for c in inputs)
    pal_chunks = [log(f"pal-{q}.log", KIND_QUEUE, q) for q in range(queues)]
    outputs = log("output.log", KIND_OUTPUT, queues)
    events = [e for c in log("timeline.log", KIND_TIMELINE, queues) for e in rec.iter_events(c.raw)]
    assert [e.index for e in events] == list(range(len(events)))
    assert events[-1].kind == rec.EV_END and events[-1].arg == events[-1].output_records
    assert events[-1].input_len == (run / "input.log").stat().st_size

    # between two events at most one log grows, by exactly the chunk the event names
    by_offset = {("input", c.offset): c for c in inputs} | {("output", c.offset): c for c in outputs}
    by_offset |= {(q, c.offset): c for q in range(queues) for c in pal_chunks[q]}
    before = rec.Event(-1, 0, 0, 0, -1, 32, 0, 32, 0, (32,) * queues, (0,) * queues)
    for e in events:
        grew = {key: (getattr(before, key + "_len"), getattr(e, key + "_len")) for key in ("input", "output")}
        grew |= {q: (before.queue_len[q], e.queue_len[q]) for q in range(queues)}
        grew = {key: span for key, span in grew.items() if span[0] != span[1]}
        expected = {rec.EV_INPUT_FLUSH: "input", rec.EV_QUEUE_FLUSH: e.arg, rec.EV_RELEASE: "output"}.get(e.kind)
        assert list(grew) == ([] if expected is None else [expected]), e
        if expected is not None:
            chunk = by_offset[(expected, grew[expected][0])]
            assert chunk.stored == grew[expected][1] - grew[expected][0]
            if e.kind != rec.EV_QUEUE_FLUSH:
                assert e.arg == chunk.count
        if e.kind == rec.EV_RELEASE:  # the release rule
            for out in rec.iter_outputs(by_offset[("output", before.output_len)].raw):
                assert out.input_id < e.input_records
                assert all(d <= s for d, s in zip(out.deps, e.queue_records))
        if e.kind == rec.EV_SNAPSHOT_BEGIN:
            assert events[e.index + 1].kind == rec.EV_SNAPSHOT_DURABLE and events[e.index + 1].arg == e.arg
        assert e.snapshot == (e.arg if e.kind == rec.EV_SNAPSHOT_DURABLE else before.snapshot)
        before = e

    # PAL sequence numbers: per variable 1..N over all queues, increasing within a queue log
    seqs: dict[int, list[int]] = {}
    for q in range(queues):
        decode = QueueDecoder()
        mine = [r for c in pal_chunks[q] for r in decode(c.raw)]
        assert pal_chunks[q][0].raw[0] & FLAG_KEYFRAME  # and one after each snapshot, below
        assert [r.packet for r in mine] == sorted(r.packet for r in mine)
        for var in {r.var for r in mine if isinstance(r, rec.PalRecord)}:
            own = [r.seq for r in mine if isinstance(r, rec.PalRecord) and r.var == var]
            assert own == sorted(own)
            seqs.setdefault(var, []).extend(own)
    assert seqs and all(sorted(s) == list(range(1, len(s) + 1)) for s in seqs.values())

    durable = {e.arg: e for e in events if e.kind == rec.EV_SNAPSHOT_DURABLE}
    keys = ["boundary", "shared", "local", "queue_records", "queue_bytes", "input_records", "input_bytes",
            "outputs_released", "outputs_bytes", "time_ns"]
    for k in range(1, 5):
        snap = decode_snapshot(run, (run / f"snapshots/snap-{k:06d}.snap").read_bytes(), run_id)
        assert (snap.number, snap.boundary, snap.flags) == (k, 5 * k, 0)
        assert list(snap.state) == keys and snap.state["input_records"] == 5 * k
        e = durable[k]
        assert (snap.state["queue_records"], snap.state["queue_bytes"]) == (list(e.queue_records), list(e.queue_len))
        assert (snap.state["input_bytes"], snap.state["outputs_released"], snap.state["outputs_bytes"]) == (
            e.input_len, e.output_records, e.output_len)
        assert [v[:2] for v in snap.state["shared"]] == [tuple(v[1:]) for v in manifest["variables"]]
        for q in range(queues):  # the chunk at a snapshot's queue position is a keyframe
            after = [c for c in pal_chunks[q] if c.offset == snap.state["queue_bytes"][q]]
            assert all(c.raw[0] & FLAG_KEYFRAME for c in after)
    final = decode_snapshot(run, (run / "reference.snap").read_bytes(), run_id)
    assert (final.number, final.boundary, final.flags) == (0xFFFFFFFF, 23, FLAG_FINAL)
    assert final.state["outputs_released"] == events[-1].output_records == manifest["stats"]["packets_out"]
