"""Tests for ftmbctl.pcapio / ftmbctl.pcapng: real captures, hand-built edge cases, fuzzing, round trips."""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftmbctl.errors import BadInput
from ftmbctl.pcapio import (
    SUPPORTED_LINKTYPES,
    CutShort,
    RawPacket,
    iter_packets,
    read_trace_info,
    write_capture,
    write_pcap,
    write_pcapng,
)

PCAPS = Path(__file__).resolve().parents[1].parent / "shared" / "pcaps"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shared_pcap(relative: str) -> Path:
    """A capture from the shared set, or a skip when the set is not beside the project."""
    if not PCAPS.is_dir():
        pytest.skip(f"shared captures not found at {PCAPS}")
    return PCAPS / relative


def catalogue() -> list[dict[str, str]]:
    if not (PCAPS / "CATALOGUE.tsv").is_file():
        return []
    with open(PCAPS / "CATALOGUE.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def read_all(path: Path) -> list[RawPacket]:
    return list(iter_packets(path))


def bad_input(path: Path) -> str:
    """Read a file that must fail, and return the one sentence it fails with."""
    with pytest.raises(BadInput) as info:
        read_all(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def key(packets: list[RawPacket]) -> list[tuple]:
    """What a round trip must preserve (index too: it is the position in the file)."""
    return [(p.index, p.ts_ns, p.linktype, p.orig_len, p.data) for p in packets]


# --- builders for hand-made captures ----------------------------------------------------------


def pcap_file(packets, *, order="<", nano=True, linktype=1, snaplen=65535) -> bytes:
    """Classic pcap from (ts_ns, data, orig_len) tuples."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts_ns, data, orig_len in packets:
        sec, frac = divmod(ts_ns, 10**9)
        out.append(struct.pack(order + "IIII", sec, frac if nano else frac // 1000, len(data), orig_len))
        out.append(data)
    return b"".join(out)


def block(
    order: str, btype: int, body: bytes, *, length: int | None = None, trailer: int | None = None
) -> bytes:
    """A pcapng block; `length` and `trailer` override the two length fields to damage it."""
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, length or n) + body + struct.pack(order + "I", trailer or n)


def shb(order="<") -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def idb(order: str, linktype: int, *options: bytes, snaplen: int = 0) -> bytes:
    end = struct.pack(order + "HH", 0, 0) if options else b""
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + b"".join(options) + end)


def epb(order: str, iface: int, ts: int, data: bytes, orig_len: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), orig_len or len(data))
    return block(order, 6, head + data)


def spb(order: str, data: bytes, orig_len: int | None = None) -> bytes:
    return block(order, 3, struct.pack(order + "I", orig_len or len(data)) + data)


def obsolete_pb(order: str, iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, head + data)


FRAMES = [(1_700_000_000_000_000_000 + i * 1_234_567, bytes([i]) * (40 + i), 60 + i) for i in range(3)]


def small_pcapng() -> bytes:
    return shb() + idb("<", 1, option("<", 9, b"\x09")) + b"".join(epb("<", 0, t, d, o) for t, d, o in FRAMES)


@pytest.fixture
def write(tmp_path):
    """Write bytes to a fresh file and return its path."""

    def _write(content: bytes, name: str = "capture") -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return _write


# --- the shared real captures -----------------------------------------------------------------

# Every catalogued file is a complete capture: the "truncated" ones hold packets cut by a small
# snaplen (caplen < len on the wire), which is normal, not a damaged file. A file expected to be
# refused would be listed here with the words its message must contain.
EXPECTED_BAD_INPUT: dict[str, str] = {}


@pytest.mark.parametrize("row", catalogue(), ids=lambda row: row["file"])
def test_catalogued_capture_reads_as_catalogued(row):
    path = shared_pcap(row["file"])
    if row["file"] in EXPECTED_BAD_INPUT:
        assert EXPECTED_BAD_INPUT[row["file"]] in bad_input(path)
        return
    packets = read_all(path)
    assert len(packets) == int(row["packet_count"])
    assert [p.index for p in packets] == list(range(len(packets)))
    info = read_trace_info(path)
    assert info.packet_count == len(packets)
    assert info.sha256 == row["sha256"] and info.size_bytes == int(row["bytes"])
    assert info.format == ("pcapng" if row["format"] == "pcapng" else "pcap")
    if packets:
        assert info.linktypes == (int(row["link_type"].split("(")[1].rstrip(")")),)
        assert (info.first_ts_ns, info.last_ts_ns) == (packets[0].ts_ns, packets[-1].ts_ns)


def test_catalogue_edge_files_are_what_they_claim():
    """empty.pcap is a valid header with no packets (so: zero packets, not an error)."""
    assert read_all(shared_pcap("tcpdump/empty.pcap")) == []
    assert read_all(shared_pcap("tcpdump/empty.pcapng")) == []
    # Link type field 0x30000001: FCS bits above the 16-bit link type are masked off.
    (packet,) = read_all(shared_pcap("tcpdump/mpls-label-heapoverflow.pcap"))
    assert packet.linktype == 1 and len(packet.data) == 22 and packet.orig_len == 0x40000
    # Named .pcap but pcapng inside: the magic decides.
    assert read_trace_info(shared_pcap("chrissanders-packets/dns.pcap")).format == "pcapng"
    # Seconds beyond 32 bits survive in pcapng.
    (packet,) = read_all(shared_pcap("tcpdump/time_2106_overflow.pcapng"))
    assert packet.ts_ns >= 2**32 * 10**9


def test_pcapng_and_pcap_of_same_packets_agree():
    classic = read_all(shared_pcap("chrissanders-packets/tcp_handshake.pcap"))
    ng = read_all(shared_pcap("chrissanders-packets/tcp_handshake.pcapng"))
    assert len(classic) == 3
    assert key(classic) == key(ng)


def test_modify_request_uses_the_interface_each_packet_names():
    """126 IDBs of mixed link types; the EPBs all name interface 48, an EN10MB one."""
    packets = read_all(shared_pcap("zeek/modify-request.pcapng"))
    assert len(packets) == 17 and {p.linktype for p in packets} == {1}


# --- named error cases ------------------------------------------------------------------------


def test_missing_file_is_bad_input(tmp_path):
    assert "no such file" in bad_input(tmp_path / "nope.pcap")
    assert "directory" in bad_input(tmp_path)


def test_empty_file_is_bad_input(write):
    assert "empty file (0 bytes)" in bad_input(write(b""))


def test_not_a_capture_names_first_bytes(write):
    message = bad_input(write(b"PK\x03\x04\x14\x00\x00\x00rest of a zip"))
    assert "not a pcap or pcapng capture" in message and "50 4b 03 04 14 00 00 00" in message
    assert "its gzip content starts with 50 4b" in bad_input(write(gzip.compress(b"PK\x03\x04 zip")))


def read_cut(path: Path) -> tuple[list[RawPacket], CutShort | None]:
    cuts: list[CutShort] = []
    packets = list(iter_packets(path, on_cut=cuts.append))
    assert len(cuts) <= 1
    return packets, (cuts[0] if cuts else None)


def test_truncated_last_packet_is_a_clean_end_with_offset_and_packet_number(write):
    """A capture cut inside its last record (a killed tcpdump) reads up to the packet before it,
    as tcpdump does, and says where it was cut; strict refuses it in the same words."""
    whole = pcap_file(FRAMES)
    third = 24 + (16 + len(FRAMES[0][1])) + (16 + len(FRAMES[1][1]))
    path = write(whole[:-10])
    packets, cut = read_cut(path)
    assert key(packets) == key(read_all(write(whole, "whole.pcap")))[:2]  # the packets before the damage were delivered
    assert cut == CutShort(str(path), len(whole) - 10, third, 2, "packet 3")
    assert cut.sentence("recorded") == (
        f"{path}: cut short at byte {len(whole) - 10} inside packet 3; recorded the 2 complete packets before it"
    )
    with pytest.raises(BadInput) as info:
        list(iter_packets(path, strict=True))
    assert str(info.value) == cut.refusal()
    assert str(info.value).startswith(f"{path}: cut short at byte {len(whole) - 10} inside packet 3; --strict")
    # cut in the record header
    packets, cut = read_cut(write(whole[: third + 5]))
    assert len(packets) == 2 and (cut.at, cut.start, cut.inside) == (third + 5, third, "packet 3")
    ng = small_pcapng()
    last = len(ng) - len(epb("<", 0, *FRAMES[2][:2]))
    packets, cut = read_cut(write(ng[:-1]))
    assert len(packets) == 2 and (cut.at, cut.start, cut.inside) == (len(ng) - 1, last, "packet 3")
    packets, cut = read_cut(write(ng[: last + 7]))
    assert len(packets) == 2 and cut.at == last + 7 and cut.inside.startswith(f"the block header at byte {last}")


def test_cut_inside_the_first_packet_reads_no_packet(write):
    packets, cut = read_cut(write(pcap_file(FRAMES)[:30]))
    assert packets == [] and cut.complete == 0 and "recorded 0 packets" in cut.sentence("recorded")


def test_complete_capture_is_not_cut(write):
    assert read_cut(write(pcap_file(FRAMES)))[1] is None
    assert read_cut(write(small_pcapng()))[1] is None


def test_bad_record_length_mid_file_is_still_reported(write):
    """Damage before the end is corruption, not a cut: a record claiming more than any packet."""
    whole = pcap_file(FRAMES)
    second = 24 + 16 + len(FRAMES[0][1])
    damaged = whole[:second + 8] + struct.pack("<I", 300_000) + whole[second + 12:]
    message = bad_input(write(damaged))
    assert f"packet record at byte {second} (packet 2) claims 300000 captured bytes" in message


def test_fifo_and_device_are_refused_before_opening(tmp_path):
    fifo = tmp_path / "fifo.pcap"
    os.mkfifo(fifo)
    assert "is a FIFO" in bad_input(fifo)  # would block in open() without the check
    if os.path.exists("/dev/zero"):
        assert "is a character device" in bad_input(Path("/dev/zero"))


def test_truncated_file_header(write):
    assert "truncated pcap file header: 24 bytes needed, 10 present" in bad_input(write(pcap_file([])[:10]))
    assert "truncated pcapng block header at byte 0" in bad_input(write(shb()[:8]))
    assert "truncated section header block at byte 0" in bad_input(write(shb()[:20]))


def test_unknown_linktype_is_reported(write):
    message = bad_input(write(pcap_file(FRAMES, linktype=147)))
    assert "link type 147" in message and "not supported" in message and "1 EN10MB" in message
    # pcapng: an interface of an unknown type is harmless until a packet uses it.
    good = epb("<", 0, 5, b"x" * 20)
    ng = shb() + idb("<", 1) + idb("<", 147) + good + epb("<", 1, 6, b"y" * 20)
    path = write(ng)
    packets = []
    with pytest.raises(BadInput, match=r"packet 2 at byte \d+ comes from interface 1 .* link type 147"):
        for packet in iter_packets(path):
            packets.append(packet)
    assert len(packets) == 1
    assert len(read_all(write(shb() + idb("<", 1) + idb("<", 147) + good))) == 1


def test_caplen_beyond_snaplen_and_maximum_is_refused(write):
    header_only = pcap_file([])
    record = struct.pack("<IIII", 1, 0, 300_000, 300_000)
    assert "claims 300000 captured bytes" in bad_input(write(header_only + record + b"x" * 100))
    # A file whose snaplen is above the usual maximum may hold packets that large.
    big = b"x" * 300_000
    assert len(read_all(write(pcap_file([(0, big, len(big))], snaplen=400_000)))[0].data) == 300_000


def test_pcapng_structural_errors_name_the_block(write):
    good = shb() + idb("<", 1)
    bad_epb = epb("<", 0, 1, b"abcd")
    at = len(good)
    cases = {
        "which is not a multiple of 4": block("<", 6, bad_epb[8:-4], length=len(bad_epb) + 2),
        "shorter than the 32-byte minimum": block("<", 6, b"", length=16),
        "starts with length 36 but ends with 40": block("<", 6, bad_epb[8:-4], trailer=40),
        "refers to interface 3": epb("<", 3, 1, b"abcd"),
        "claims 200 captured bytes, more than its 36-byte block holds": block(
            "<", 6, struct.pack("<IIIII", 0, 0, 1, 200, 200) + b"abcd"
        ),
    }
    for words, damage in cases.items():
        message = bad_input(write(good + damage))
        assert words in message and f"at byte {at}" in message
    assert "invalid byte-order magic" in bad_input(write(shb()[:8] + b"\0\0\0\0" + shb()[12:]))
    # Interface numbers start again in each section.
    second = shb(">") + idb(">", 1) + epb(">", 1, 1, b"abcd")
    assert "refers to interface 1" in bad_input(write(good + epb("<", 0, 1, b"ok") + second))


def test_nanosecond_and_big_endian_pcap(write):
    expected = [(i, ts, 1, orig, data) for i, (ts, data, orig) in enumerate(FRAMES)]
    micro = [(i, ts // 1000 * 1000, lt, orig, data) for i, ts, lt, orig, data in expected]
    for order in "<>":
        assert key(read_all(write(pcap_file(FRAMES, order=order, nano=True)))) == expected
        assert key(read_all(write(pcap_file(FRAMES, order=order, nano=False)))) == micro
    real = read_all(shared_pcap("tcpdump/tcp-handshake-nano.pcap"))
    assert real[0].linktype == 113 and real[0].ts_ns == 1_418_145_369_924_505_488


def test_pcapng_multiple_interfaces_keep_their_linktype_and_resolution(write):
    us, ns, ms = 10**3, 1, 10**6
    ts_us = 1_700_000_000_123_456
    ts_ns = 1_700_000_000_987_654_321
    ts_2pow = (1_700_000_000 << 20) + (1 << 19)  # if_tsresol 2^-20: half a second past
    content = (
        shb()
        + idb("<", 1, snaplen=64)  # no if_tsresol: microseconds
        + idb("<", 101, option("<", 9, b"\x09"))
        + idb("<", 113, option("<", 9, bytes([0x80 | 20])), option("<", 2, b"eth0"))
        + idb("<", 229, option("<", 9, b"\x03"), option("<", 14, struct.pack("<q", 1_000_000_000)))
        + block("<", 0x0BAD, b"unknown block, skipped")
        + epb("<", 0, ts_us, b"A" * 14, 100)
        + block("<", 5, struct.pack("<IIIII", 0, 0, 0, 0, 0))  # interface statistics, skipped
        + epb("<", 1, ts_ns, b"B" * 20)
        + spb("<", b"C" * 10)  # no timestamp: the previous packet's
        + epb("<", 2, ts_2pow, b"D" * 3)
        + obsolete_pb("<", 1, ts_ns + 1, b"E" * 7)
        + epb("<", 3, 5, b"F" * 40)
        + shb(">")  # a second section, other byte order, interfaces numbered afresh
        + idb(">", 228)
        + epb(">", 0, ts_us + 1, b"G" * 21)
    )
    assert key(read_all(write(content))) == [
        (0, ts_us * us, 1, 100, b"A" * 14),
        (1, ts_ns * ns, 101, 20, b"B" * 20),
        (2, ts_ns * ns, 1, 10, b"C" * 10),
        (3, 1_700_000_000_500_000_000, 113, 3, b"D" * 3),
        (4, ts_ns + 1, 101, 7, b"E" * 7),
        (5, 5 * ms + 10**18, 229, 40, b"F" * 40),
        (6, (ts_us + 1) * us, 228, 21, b"G" * 21),
    ]


def test_simple_packet_block_is_cut_at_the_snaplen(write):
    content = shb() + idb("<", 1, snaplen=8) + spb("<", b"abcdefgh", orig_len=60)
    (packet,) = read_all(write(content))
    assert (packet.data, packet.orig_len, packet.ts_ns) == (b"abcdefgh", 60, 0)


def test_gzip_capture_reads_like_the_plain_one(write):
    for plain in (pcap_file(FRAMES), small_pcapng()):
        zipped = gzip.compress(plain)
        path = write(zipped, "no-gz-suffix.pcap")  # detected by magic, not by name
        assert key(read_all(path)) == key(read_all(write(plain)))
        info = read_trace_info(path)
        assert info.format.endswith("+gzip") and info.packet_count == 3
        assert info.sha256 == hashlib.sha256(zipped).hexdigest() and info.size_bytes == len(zipped)
    zipped = gzip.compress(pcap_file(FRAMES))
    assert "gzip stream is cut off" in bad_input(write(zipped[:-12]))
    bad_crc = zipped[:-8] + bytes(b ^ 0xFF for b in zipped[-8:-4]) + zipped[-4:]
    assert "corrupt gzip stream (CRC check failed" in bad_input(write(bad_crc))
    reserved_block_type = zipped[:10] + b"\x07" + zipped[11:]  # deflate BTYPE 11 is invalid
    assert "corrupt gzip stream (Error -3" in bad_input(write(reserved_block_type))
    assert "decompresses to nothing" in bad_input(write(gzip.compress(b"")))
    if PCAPS.is_dir():
        real = shared_pcap("chrissanders-packets/synscan.pcapng")
        assert key(read_all(write(gzip.compress(real.read_bytes())))) == key(read_all(real))


def test_read_trace_info_summarises_the_file(write):
    content = pcap_file(FRAMES, nano=False)
    info = read_trace_info(write(content, "x.pcap"))
    assert info.format == "pcap" and info.packet_count == 3 and info.linktypes == (1,)
    assert info.first_ts_ns == FRAMES[0][0] // 1000 * 1000
    assert info.last_ts_ns == FRAMES[2][0] // 1000 * 1000
    assert info.sha256 == hashlib.sha256(content).hexdigest() and info.size_bytes == len(content)
    empty = read_trace_info(write(pcap_file([])))
    assert (empty.packet_count, empty.linktypes, empty.first_ts_ns) == (0, (), None)


# --- writers ----------------------------------------------------------------------------------


def test_writers_refuse_what_their_format_cannot_hold(tmp_path):
    mixed = [RawPacket(0, 0, 1, 4, b"abcd"), RawPacket(1, 0, 101, 4, b"abcd")]
    with pytest.raises(ValueError, match="write pcapng instead"):
        write_pcap(tmp_path / "a.pcap", mixed)
    late = [RawPacket(0, 2**32 * 10**9, 1, 4, b"abcd")]  # after early 2106
    with pytest.raises(ValueError, match="does not fit in classic pcap"):
        write_pcap(tmp_path / "b.pcap", late)
    assert write_capture(tmp_path / "c", mixed) == "pcapng"
    assert write_capture(tmp_path / "d", late) == "pcapng"
    assert write_capture(tmp_path / "e", mixed[:1]) == "pcap"
    assert key(read_all(tmp_path / "c")) == key(mixed) and key(read_all(tmp_path / "d")) == key(late)
    assert write_pcap(tmp_path / "f", []) == 0 and read_all(tmp_path / "f") == []


packet_lists = st.lists(
    st.tuples(
        st.integers(0, 2**32 * 10**9 - 1),
        st.sampled_from(sorted(SUPPORTED_LINKTYPES)),
        st.binary(max_size=80),
        st.integers(0, 2000),
    ),
    max_size=12,
).map(
    lambda rows: [
        RawPacket(i, ts, lt, len(data) + extra, data) for i, (ts, lt, data, extra) in enumerate(rows)
    ]
)


@FUZZ
@given(packets=packet_lists)
def test_written_captures_read_back_the_same(tmp_path_factory, packets):
    folder = tmp_path_factory.mktemp("roundtrip")
    assert write_pcapng(folder / "all.pcapng", packets) == len(packets)
    assert key(read_all(folder / "all.pcapng")) == key(packets)
    single = [RawPacket(p.index, p.ts_ns, 1, p.orig_len, p.data) for p in packets]
    assert write_pcap(folder / "single.pcap", single) == len(single)
    assert key(read_all(folder / "single.pcap")) == key(single)
    fmt = write_capture(folder / "any", packets)
    assert fmt == ("pcap" if len({p.linktype for p in packets}) <= 1 else "pcapng")
    assert key(read_all(folder / "any")) == key(packets)


# --- hostile bytes ----------------------------------------------------------------------------


def outcome(path: Path) -> list[RawPacket] | None:
    """The packets, or None for BadInput; any other exception fails the test."""
    try:
        return read_all(path)
    except BadInput as exc:
        assert "\n" not in str(exc)
        return None


MAGICS = [b"", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b"]


@FUZZ
@given(content=st.tuples(st.sampled_from(MAGICS), st.binary(max_size=400)).map(b"".join))
def test_arbitrary_bytes_read_or_raise_bad_input(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "capture"
    path.write_bytes(content)
    outcome(path)


VALID = {"pcap": pcap_file(FRAMES), "pcapng": small_pcapng()}


@FUZZ
@given(
    kind=st.sampled_from(sorted(VALID)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10**6),
    zipped=st.booleans(),
)
def test_damaged_captures_read_or_raise_bad_input(tmp_path_factory, kind, flips, cut, zipped):
    content = bytearray(VALID[kind])
    for where, value in flips:
        content[where % len(content)] = value
    content = bytes(content[: cut % (len(content) + 1)])
    path = tmp_path_factory.mktemp("damaged") / "capture"
    path.write_bytes(gzip.compress(content) if zipped else content)
    outcome(path)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_truncation_gives_a_prefix_or_bad_input(write, kind):
    """Cutting at a record boundary leaves a valid shorter file; inside a record, the packets
    before it and a CutShort saying where; inside the file header (pcapng: the first SHB), an error."""
    content = VALID[kind]
    whole = key(read_all(write(content)))
    header = 24 if kind == "pcap" else len(shb())
    boundaries = 0
    for cut in range(len(content)):
        path = write(content[:cut])
        if cut < header:
            assert outcome(path) is None
            continue
        packets, where = read_cut(path)
        assert key(packets) == whole[: len(packets)]
        if where is None:
            boundaries += 1
        else:
            assert where.at == cut and where.start < cut and where.complete == len(packets)
    # pcap: after the file header and the first two packets; pcapng: also after the IDB.
    assert boundaries == (3 if kind == "pcap" else 4)


# --- interoperability -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_tcpdump_reads_what_we_write(tmp_path):
    packets = read_all(shared_pcap("chrissanders-packets/tcp_handshake.pcap")) * 2
    packets = [RawPacket(i, p.ts_ns + i, p.linktype, p.orig_len, p.data) for i, p in enumerate(packets)]
    for name, writer in (("out.pcap", write_pcap), ("out.pcapng", write_pcapng)):
        writer(tmp_path / name, packets)
        done = subprocess.run(
            ["tcpdump", "-nn", "-r", str(tmp_path / name)], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == len(packets) and all(" IP " in line for line in lines)
