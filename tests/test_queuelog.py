"""Queue-log chunks (formats/queue-log.md): round trips, keyframes, and every decoding error by name.

The vectors of the spec are checked in test_formats.py; here the encoder and decoder meet
arbitrary valid records (Hypothesis), arbitrary bytes, and each damaged case the spec lists.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftmbctl.queuelog import (FLAG_KEYFRAME, QueueDecoder, QueueEncoder, decode_chunk, encode_records, fold16,
                              put_varint, unzigzag, zigzag)
from ftmbctl.records import NdRecord, PalRecord, RecordError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MASK64 = (1 << 64) - 1


@st.composite
def queue_logs(draw) -> list[list[PalRecord | NdRecord]]:
    """Chunks of valid records for one log: packets never decrease, each variable's access numbers
    increase, clocks may step back (threads scheduler), ids and values reach their limits."""
    packet, seqs, chunks = 0, {}, []
    for _ in range(draw(st.integers(0, 6))):
        chunk = []
        for _ in range(draw(st.integers(1, 12))):
            packet += draw(st.one_of(st.just(0), st.integers(1, 3), st.integers(0, 1 << 40)))
            kind = draw(st.sampled_from(["pal", "pal", "same", "clock", "random"]))
            if kind in ("pal", "same"):
                var = draw(st.one_of(st.integers(0, 30), st.integers(0, (1 << 32) - 1)))
                seqs[var] = seqs.get(var, 0) + draw(st.one_of(st.integers(1, 4), st.integers(1, 1 << 40)))
                digest = draw(st.integers(0, 0xFFFF)) if kind == "pal" else None
                chunk.append(PalRecord(packet, var, seqs[var], digest))
            else:
                chunk.append(NdRecord(packet, 1 if kind == "clock" else 2, draw(st.integers(0, MASK64))))
        chunks.append(chunk)
    return chunks


def encode_log(chunks: list[list], restarts: set[int] = frozenset()) -> list[bytes]:
    encoder = QueueEncoder()
    out = []
    for i, chunk in enumerate(chunks):
        if i in restarts:
            encoder.restart()
        out.append(encode_records(chunk, encoder))
    return out


@FUZZ
@given(queue_logs())
def test_a_log_round_trips_chunk_by_chunk(chunks: list[list]) -> None:
    decode = QueueDecoder()
    assert [decode(raw) for raw in encode_log(chunks)] == chunks


@FUZZ
@given(queue_logs(), st.data())
def test_a_reader_can_start_at_any_keyframe(chunks: list[list], data: st.DataObject) -> None:
    """Where the writer restarted (a snapshot's position), a fresh decoder reads the rest."""
    if not chunks:
        return
    restarts = set(data.draw(st.lists(st.integers(0, len(chunks) - 1), max_size=3)))
    raws = encode_log(chunks, restarts)
    assert [bool(raw[0] & FLAG_KEYFRAME) for raw in raws] == [i == 0 or i in restarts for i in range(len(chunks))]
    for start in sorted(restarts | {0}):
        decode = QueueDecoder()
        assert [decode(raw) for raw in raws[start:]] == chunks[start:]


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_decode_or_raise_record_error(raw: bytes, after_keyframe: bool) -> None:
    decode = QueueDecoder()
    if after_keyframe:
        decode(encode_records([PalRecord(3, 1, 2, 5)]))
    try:
        records = decode(raw)
    except RecordError as exc:
        assert 0 <= exc.offset <= len(raw) and str(exc)
        return
    # whatever decodes is a log a queue could have written: deltas cannot go back
    packets = [r.packet for r in records]
    assert packets == sorted(packets)
    seqs = {}
    for r in records:
        if type(r) is PalRecord:
            assert r.seq > seqs.get(r.var, 0) and (r.digest is None or 0 <= r.digest <= 0xFFFF)
            seqs[r.var] = r.seq
        else:
            assert r.kind in (1, 2) and 0 <= r.value <= MASK64


@FUZZ
@given(queue_logs(), st.data())
def test_every_truncation_of_a_chunk_is_an_error(chunks: list[list], data: st.DataObject) -> None:
    raws = encode_log(chunks)
    if not raws:
        return
    k = data.draw(st.integers(0, len(raws) - 1))
    state = None
    for raw in raws[:k]:
        _records, state = decode_chunk(raw, state)
    raw = raws[k]
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(RecordError):
        decode_chunk(raw[:cut], state)


def test_a_failed_chunk_leaves_the_state_as_it_was() -> None:
    first = [PalRecord(4, 2, 7, 0x1234)]
    second = [PalRecord(5, 2, 9, None)]
    encoder = QueueEncoder()
    raw1, raw2 = encode_records(first, encoder), encode_records(second, encoder)
    decode = QueueDecoder()
    assert decode(raw1) == first
    with pytest.raises(RecordError):
        decode(raw2[:-1])
    assert decode(raw2) == second


def test_varints_and_zigzag() -> None:
    for value in (0, 1, 63, 64, 300, 1 << 35, MASK64):
        out = bytearray()
        put_varint(out, zigzag(value))
        assert len(out) == max(1, (zigzag(value).bit_length() + 6) // 7)
        records, _ = decode_chunk(bytes([FLAG_KEYFRAME, 0, 1, 2, 0]) + bytes(out), None)  # a clock
        assert records == [NdRecord(0, 1, value)]
    assert [zigzag(n) for n in (0, -1, 1, -2, 2)] == [0, 1, 2, 3, 4]
    assert all(unzigzag(zigzag(n)) == n for n in range(-1000, 1000))


def test_fold16_of_a_16_bit_value_is_itself() -> None:
    """So a decoded record's 16 stored bits re-encode to the same bits (encode_records relies on it)."""
    assert all(fold16(d) == d for d in (0, 1, 0x8000, 0xFFFF))
    assert fold16(0x9E3779B9) == 0xE78E


# ---------------------------------------------------------------- each error of the spec's table, by name

KEY = FLAG_KEYFRAME


def error(raw: bytes, state=None) -> RecordError:
    with pytest.raises(RecordError) as info:
        decode_chunk(raw, state)
    return info.value


def test_chunk_shorter_than_its_head() -> None:
    assert str(error(b"\x01\x00")) == "queue-log chunk needs at least 3 bytes, has 2"


def test_unknown_flags() -> None:
    e = error(bytes([0x03, 0, 0]))
    assert (str(e), e.offset) == ("unknown queue-log chunk flags 0x03", 0)


def test_continuation_without_the_chunk_before_it() -> None:
    raw = encode_log([[PalRecord(1, 0, 1, 7)], [PalRecord(2, 0, 2, 8)]])[1]
    assert "continues an earlier chunk of the log" in str(error(raw))
    records, _ = decode_chunk(raw, decode_chunk(encode_log([[PalRecord(1, 0, 1, 7)]])[0], None)[1])
    assert records == [PalRecord(2, 0, 2, 8)]


def test_variable_id_width_over_32_bits() -> None:
    e = error(bytes([KEY, 33, 0]))
    assert (str(e), e.offset) == ("variable ids of 33 bits, at most 32", 1)


def test_varint_past_the_end() -> None:
    assert str(error(bytes([KEY, 0, 0x80]))) == "varint at byte 2 runs past the end of the chunk"


def test_varint_longer_than_fourteen_bytes() -> None:
    assert str(error(bytes([KEY, 0]) + b"\x80" * 14 + b"\x01")) == "varint at byte 2 is longer than 14 bytes"
    word = bytearray()
    put_varint(word, ((1 << 64) - 2 << 32) | 5)  # the largest access word: 14 bytes
    assert len(word) == 14 and decode_chunk(bytes([KEY, 32, 1, 0, 0]) + bytes(word) + b"\0\0", None)


def test_codes_that_do_not_fit() -> None:
    e = error(bytes([KEY, 0, 9, 0]))  # 9 records need 3 code bytes and 2 new-packet bytes
    assert (str(e), e.offset) == ("9 records need 5 bytes of codes, 1 left", 3)


def test_unused_code_bits_set() -> None:
    assert str(error(bytes([KEY, 0, 1, 0b0100, 0, 0]))) == "unused bits of the last record-code byte are not zero"


def test_unused_new_packet_bits_set() -> None:
    assert str(error(bytes([KEY, 0, 1, 0, 0b10, 0]))) == "unused bits of the last new-packet byte are not zero"


def test_access_number_out_of_range() -> None:
    word = bytearray()
    put_varint(word, (1 << 64) - 1 << 1)  # vbits 1: variable 0, step 2^64 - 1
    e = error(bytes([KEY, 1, 1, 0, 0]) + bytes(word) + b"\0\0")
    assert str(e) == "access number of variable 0 out of range"


def test_packet_id_out_of_range() -> None:
    word = bytearray()
    put_varint(word, 1 << 64)
    assert str(error(bytes([KEY, 0, 1, 2, 1]) + bytes(word) + b"\0")) == f"packet id {(1 << 64) + 1} out of range"


def test_digests_that_do_not_fit() -> None:
    assert str(error(bytes([KEY, 0, 2, 0, 0, 0, 0, 0]))) == "digest column needs 4 bytes, 1 left"


def test_clock_out_of_range() -> None:
    assert str(error(bytes([KEY, 0, 1, 2, 0, 1]))) == "clock value -1 out of range"
    high = bytearray()
    put_varint(high, zigzag(1 << 64))
    assert str(error(bytes([KEY, 0, 1, 2, 0]) + bytes(high))) == f"clock value {1 << 64} out of range"


def test_random_value_cut_off() -> None:
    assert str(error(bytes([KEY, 0, 1, 3, 0]) + bytes(7))) == "random value needs 8 bytes, 7 left"


def test_bytes_after_the_last_record() -> None:
    raw = encode_records([PalRecord(0, 0, 1, None)]) + b"\x00\x00"
    e = error(raw)
    assert (str(e), e.offset) == ("2 bytes after the last record", len(raw) - 2)


# ---------------------------------------------------------------- the encoder refuses what no log can hold

def test_encoder_refuses_a_packet_going_back() -> None:
    with pytest.raises(ValueError, match="packet 3 logged after packet 5"):
        QueueEncoder().encode([(5, 0, 1, None), (3, 0, 2, None)])


def test_encoder_refuses_an_access_number_going_back() -> None:
    with pytest.raises(ValueError, match="access 2 to variable 0 logged after access 2"):
        QueueEncoder().encode([(5, 0, 2, None), (5, 0, 2, None)])


def test_unchanged_pals_store_no_digest() -> None:
    changed = encode_records([PalRecord(0, 0, 1, 0xABCD)])
    same = encode_records([PalRecord(0, 0, 1, None)])
    assert len(changed) == len(same) + 2
