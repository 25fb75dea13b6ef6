"""Streaming reader and writer for packet captures: classic pcap and pcapng, plain or gzipped.

Why not dpkt's readers: `dpkt.pcap.Reader` rejects pcapng (even behind a .pcap name), dpkt's
pcapng reader applies the first interface's link type and clock to every packet, and both raise
NeedData or ValueError on a cut file. This module needs only struct and gzip, reads in 1 MiB
blocks, and turns every problem with the input into one `BadInput` sentence.

In messages, byte offsets count from the start of the file (of the decompressed stream for a
gzipped file) and packet numbers count from 1, as tcpdump and Wireshark number them;
`RawPacket.index` counts from 0. The pcapng block parser lives in `ftmbctl.pcapng`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ftmbctl.errors import BadInput, UsageError


class RawPacket(NamedTuple):
    """One captured packet, the same whichever container format it came from (a NamedTuple:
    the reader builds one per packet on the hot path of record)."""

    index: int  # 0-based packet number in the file
    ts_ns: int  # nanoseconds since the epoch
    linktype: int  # LINKTYPE_* of the packet's interface, masked to 16 bits
    orig_len: int  # length on the wire
    data: bytes  # the captured bytes (may be shorter than orig_len)


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What a run manifest records about its input trace, gathered in one pass."""

    path: str
    format: str  # "pcap" or "pcapng", plus "+gzip" when the file is gzip-compressed
    packet_count: int
    linktypes: tuple[int, ...]  # distinct link types, in order of first use
    first_ts_ns: int | None  # timestamp of the first packet in file order (None: no packets)
    last_ts_ns: int | None  # timestamp of the last packet in file order
    size_bytes: int  # size of the file as stored (compressed size for gzip)
    sha256: str  # of the file as stored
    cut_short_at: int | None = None  # where a capture cut short inside its last packet ends (CutShort.at)


@dataclass(frozen=True, slots=True)
class CutShort:
    """A capture that ends inside its last record: what a tcpdump killed mid-write leaves. Like a
    torn log tail it is a clean end, after the last complete packet (damage before the end is not:
    that stays BadInput). Offsets are those of the decompressed stream for a gzipped file."""

    name: str
    at: int  # byte offset where the capture ends (its size)
    start: int  # byte offset where the incomplete record starts
    complete: int  # complete packets before it
    inside: str  # "packet 3", or the pcapng block the cut falls in

    def sentence(self, verb: str = "read") -> str:
        """The warning: ``verb`` says what became of the complete packets before the cut."""
        return f"{self.name}: cut short at byte {self.at} inside {self.inside}; {verb} {self._before()}"

    def refusal(self) -> str:
        """The error of a strict read: the same sentence, refused."""
        return (f"{self.name}: cut short at byte {self.at} inside {self.inside}; --strict refuses it "
                f"(without --strict {self._before()} would be used)")

    def _before(self) -> str:
        n = self.complete
        return "0 packets (none before the cut is complete)" if n == 0 else (
            f"the {n} complete packet{'s' if n > 1 else ''} before it")


# The link types the decoders understand. DLT_RAW is 12 on most systems and 14 on OpenBSD,
# and old captures carry those numbers instead of LINKTYPE_RAW (101): all three mean raw IP.
SUPPORTED_LINKTYPES: dict[int, str] = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}

# libpcap's MAXIMUM_SNAPLEN: a captured length above both this and the file's snapshot length
# is a corrupt header, not a packet (and reading it would buffer gigabytes).
MAX_CAPLEN = 262144
NS_PER_S = 1_000_000_000
_CHUNK = 1 << 20  # read size: large enough that per-read overhead vanishes, small enough to stream
_GZIP_MAGIC = b"\x1f\x8b"

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"  # type of the Section Header Block, the same in both orders
# Classic pcap magic as stored -> (struct byte order, nanoseconds per unit of the fraction field).
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # 0xa1b2c3d4 little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1000),  # 0xa1b2c3d4 big-endian, microseconds
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # 0xa1b23c4d little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),  # 0xa1b23c4d big-endian, nanoseconds
}
# magic, version major, minor, thiszone, sigfigs, snaplen, link type (+ FCS bits)
_PCAP_FILE_HEADER = {o: struct.Struct(o + "4sHHiIII") for o in "<>"}
_PCAP_RECORD = {o: struct.Struct(o + "IIII") for o in "<>"}  # ts sec, ts frac, caplen, orig len
_PCAP_NS_MAGIC = 0xA1B23C4D
_PCAP_VERSION = (2, 4)


def linktype_error(name: str, linktype: int, whose: str) -> BadInput:
    """The one sentence for a link type the decoders cannot handle."""
    known = ", ".join(f"{v} {n}" for v, n in SUPPORTED_LINKTYPES.items())
    return BadInput(f"{name}: {whose} link type {linktype}, which is not supported (supported: {known})")


class Source:
    """A capture's bytes, read in large blocks, with read failures turned into BadInput.

    Decoders keep the current buffer and position in local variables (attribute access costs
    too much per packet) and call `refill` when the bytes they need are not all buffered.
    `base` is the file offset of the buffer returned by the last `refill`.
    """

    def __init__(self, name: str, fileobj: io.BufferedIOBase, compressed: bool) -> None:
        self.name = name
        self.compressed = compressed
        self.format = ""  # "pcap" or "pcapng", set once the magic number is seen
        self.base = 0
        self._file = fileobj
        self.strict = False  # a capture cut short is BadInput, not a clean end
        self.cut: CutShort | None = None  # set when the capture ends inside a record

    def cut_short(self, start: int, end: int, complete: int, inside: str) -> None:
        """The capture ends inside the record at ``start`` (the decoder then returns): remember
        where, or refuse it when strict."""
        self.cut = CutShort(self.name, end, start, complete, inside)
        if self.strict:
            raise BadInput(self.cut.refusal())

    def refill(self, buf: bytes, pos: int, need: int) -> bytes:
        """Return buf[pos:] extended by further reads to `need` bytes, or fewer at end of input."""
        self.base += pos
        parts = [buf[pos:]]
        have = len(parts[0])
        while have < need:
            chunk = self._read(max(_CHUNK, need - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _read(self, size: int) -> bytes:
        # gzip decompresses a whole read at once, so a failure has no precise offset to report.
        try:
            return self._file.read(size)
        except EOFError as exc:
            raise BadInput(f"{self.name}: gzip stream is cut off before its end marker ({exc})") from exc
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise BadInput(f"{self.name}: corrupt gzip stream ({exc})") from exc
        except OSError as exc:
            reason = exc.strerror or exc
            raise BadInput(f"{self.name}: read failed after byte {self.base} ({reason})") from exc


class _Tally:
    """Size and sha256 of the bytes of a file as stored, taken while the file is decoded."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def update(self, data: memoryview) -> None:
        self.sha256.update(data)
        self.size += len(data)


class _TalliedRaw(io.RawIOBase):
    """A raw file that feeds every byte read to a _Tally, so the digest costs no second pass."""

    def __init__(self, raw: io.RawIOBase, tally: _Tally) -> None:
        self._raw = raw
        self._tally = tally

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        n = self._raw.readinto(buffer)
        if n:
            self._tally.update(memoryview(buffer)[:n])
        return n


_FILE_KINDS = ((stat.S_ISDIR, "is a directory, not a capture file"), (stat.S_ISFIFO, "is a FIFO"),
               (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
               (stat.S_ISSOCK, "is a socket"))


def check_capture_file(path: str | os.PathLike) -> None:
    """Refuse a path that is not a regular file before anything opens it: opening a FIFO waits
    for a writer, and a device such as /dev/zero never ends (the SHA-256 of the trace would read
    it for ever). Symbolic links are followed."""
    name = os.fsdecode(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadInput(f"{name}: no such file") from None
    except PermissionError:
        raise BadInput(f"{name}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise BadInput(f"{name}: cannot be opened ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _FILE_KINDS if test(mode)), "is not a regular file")
        if not stat.S_ISDIR(mode):
            kind += "; a trace must be a regular capture file (copy a stream to a file first)"
        raise BadInput(f"{name}: {kind}")


@contextlib.contextmanager
def _open_capture(path: str | os.PathLike, tally: _Tally | None = None) -> Iterator[Source]:
    """Open a capture (gzip detected by its magic, not its name) and convert every read failure."""
    name = os.fsdecode(path)
    check_capture_file(path)
    try:
        raw = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise BadInput(f"{name}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{name}: is a directory, not a capture file") from None
    except PermissionError:
        raise BadInput(f"{name}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise BadInput(f"{name}: cannot be opened ({exc.strerror or exc})") from None
    with raw:
        stream = io.BufferedReader(raw if tally is None else _TalliedRaw(raw, tally))
        try:
            compressed = stream.peek(2)[:2] == _GZIP_MAGIC
            fileobj = gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream
            yield Source(name, fileobj, compressed)
            if tally is not None:
                while stream.read(_CHUNK):  # count bytes past the end of the gzip stream too
                    pass
        except (struct.error, EOFError, OSError, zlib.error, UnicodeError) as exc:
            # Safety net: the decoders check lengths before unpacking, so this means a bug there;
            # the user still gets one sentence rather than a traceback.
            raise BadInput(f"{name}: unreadable capture ({type(exc).__name__}: {exc})") from exc


def _decode(src: Source) -> Iterator[RawPacket]:
    """Dispatch on the magic number; the first bytes decide the format, never the file name."""
    head = src.refill(b"", 0, 4)
    if not head:
        what = "gzip stream decompresses to nothing" if src.compressed else "empty file (0 bytes)"
        raise BadInput(f"{src.name}: {what}, not a capture")
    if head[:4] in _PCAP_MAGICS:
        src.format = "pcap"
        return _iter_pcap(src, head)
    if head[:4] == PCAPNG_MAGIC:
        from ftmbctl import pcapng  # imported here: pcapng builds on this module's types

        src.format = "pcapng"
        return pcapng.iter_pcapng(src, head)
    first = src.refill(head, 0, 8)[:8]
    shown = " ".join(f"{b:02x}" for b in first)
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in first)
    inner = "its gzip content" if src.compressed else "it"
    raise BadInput(f"{src.name}: not a pcap or pcapng capture: {inner} starts with {shown} ({text!r})")


def _iter_pcap(src: Source, buf: bytes) -> Iterator[RawPacket]:
    """Classic pcap: a 24-byte file header, then 16-byte record headers each followed by data."""
    name = src.name
    buf = src.refill(buf, 0, 24)
    if len(buf) < 24:
        raise BadInput(f"{name}: truncated pcap file header: 24 bytes needed, {len(buf)} present")
    order, ns_per_frac = _PCAP_MAGICS[buf[:4]]
    _, _major, _minor, _zone, _sigfigs, snaplen, link_field = _PCAP_FILE_HEADER[order].unpack_from(buf)
    # The upper bits of the link type field carry FCS information; thiszone is always 0 in
    # practice and libpcap ignores it too, so timestamps are taken as UTC.
    linktype = link_field & 0xFFFF
    if linktype not in SUPPORTED_LINKTYPES:
        raise linktype_error(name, linktype, "the pcap file header gives")
    limit = max(snaplen, MAX_CAPLEN)
    record = _PCAP_RECORD[order].unpack_from
    index = 0
    pos = 24
    size = len(buf)
    while True:
        if size - pos < 16:
            buf = src.refill(buf, pos, 16)
            pos, size = 0, len(buf)
            if size < 16:
                if size:  # a record header cut short: a clean end after the packets before it
                    src.cut_short(src.base, src.base + size, index, f"packet {index + 1}")
                return
        sec, frac, caplen, orig_len = record(buf, pos)
        if caplen > limit:
            raise BadInput(
                f"{name}: packet record at byte {src.base + pos} (packet {index + 1}) claims "
                f"{caplen} captured bytes, more than its snapshot length {snaplen} "
                f"or the {MAX_CAPLEN}-byte maximum allows"
            )
        start = pos + 16
        end = start + caplen
        if end > size:
            buf = src.refill(buf, pos, 16 + caplen)
            pos, size = 0, len(buf)
            start, end = 16, 16 + caplen
            if end > size:  # refill read to the end of the input: the last record is cut short
                src.cut_short(src.base, src.base + size, index, f"packet {index + 1}")
                return
        yield RawPacket(index, sec * NS_PER_S + frac * ns_per_frac, linktype, orig_len, buf[start:end])
        index += 1
        pos = end


def stream_size(path: str | os.PathLike) -> int:
    """The bytes a reader of the capture decodes: the file's size, or for a gzipped one the size
    its trailer gives (ISIZE: exact below 4 GiB, modulo 2^32 above). 0 when it cannot be told.
    For a progress estimate only: nothing is decided by it."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(2) != _GZIP_MAGIC or size < 18:
                return size
            handle.seek(-4, os.SEEK_END)
            return int.from_bytes(handle.read(4), "little")
    except OSError:
        return 0


def iter_packets(path: str | os.PathLike, *, strict: bool = False,
                 on_cut: Callable[[CutShort], None] | None = None) -> Iterator[RawPacket]:
    """Yield every packet of a pcap or pcapng file (gzipped or not), in file order.

    Streams in constant memory. Raises BadInput, and nothing else, for any input it cannot read:
    a path that is not a regular file, a bad header or record length, damage before the end. A
    capture cut short inside its last record (a killed tcpdump) ends after its last complete
    packet, as tcpdump reads it: ``on_cut`` is then called with where, once the packets before
    it are yielded, and with ``strict`` the cut is BadInput instead. The same file always gives
    the same packets, so a run recorded from it (the manifest keeps its SHA-256 and where it is
    cut) replays the same inputs.
    """
    with _open_capture(path) as src:
        src.strict = strict
        yield from _decode(src)
    if src.cut is not None and on_cut is not None:
        on_cut(src.cut)


def read_trace_info(path: str | os.PathLike) -> TraceInfo:
    """Format, packet count, link types, first/last timestamps and sha256 of a capture, in one pass."""
    tally = _Tally()
    count = 0
    linktypes: dict[int, None] = {}  # a dict keeps first-use order
    first_ts = last_ts = None
    with _open_capture(path, tally) as src:
        for packet in _decode(src):
            if first_ts is None:
                first_ts = packet.ts_ns
            last_ts = packet.ts_ns
            linktypes[packet.linktype] = None
            count += 1
    fmt = src.format + ("+gzip" if src.compressed else "")
    return TraceInfo(
        src.name, fmt, count, tuple(linktypes), first_ts, last_ts, tally.size, tally.sha256.hexdigest(),
        src.cut.at if src.cut is not None else None,
    )


# --- writing -------------------------------------------------------------------------------


@contextlib.contextmanager
def open_output(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """Open a capture for writing; a path that cannot be written is the caller's usage error."""
    name = os.fsdecode(path)
    try:
        with open(path, "wb", buffering=_CHUNK) as out:
            yield out
    except OSError as exc:
        raise UsageError(f"{name}: cannot write the capture ({exc.strerror or exc})") from exc


def check_writable(packet: RawPacket, number: int, max_ts_ns: int, fmt: str) -> None:
    """Refuse a packet the format cannot hold, rather than writing a file that reads back wrong."""
    if not 0 <= packet.ts_ns <= max_ts_ns:
        raise ValueError(f"packet {number}: timestamp {packet.ts_ns} ns does not fit in {fmt}")
    if len(packet.data) > MAX_CAPLEN:
        raise ValueError(f"packet {number}: {len(packet.data)} captured bytes, more than {MAX_CAPLEN}")
    if not 0 <= packet.orig_len <= 0xFFFFFFFF:
        raise ValueError(f"packet {number}: wire length {packet.orig_len} does not fit in {fmt}")
    if not 0 <= packet.linktype <= 0xFFFF:
        raise ValueError(f"packet {number}: link type {packet.linktype} does not fit in {fmt}")


_PCAP_MAX_TS_NS = (1 << 32) * NS_PER_S - 1  # seconds are an unsigned 32-bit field: early 2106


def write_pcap(path: str | os.PathLike, packets: Iterable[RawPacket], linktype: int | None = None) -> int:
    """Write classic pcap (little-endian, nanosecond magic) and return the number of packets.

    Classic pcap has one link type per file: it is `linktype`, or else the first packet's
    (EN10MB for an empty file); a packet with another one raises ValueError (use write_pcapng).
    Streams; on error the file is left incomplete.
    """
    record = _PCAP_RECORD["<"].pack
    packets = iter(packets)
    first = next(packets, None)
    if linktype is None:
        linktype = 1 if first is None else first.linktype
    if not 0 <= linktype <= 0xFFFF:
        raise ValueError(f"link type {linktype} does not fit in classic pcap")
    magic = struct.pack("<I", _PCAP_NS_MAGIC)
    count = 0
    with open_output(path) as out:
        out.write(_PCAP_FILE_HEADER["<"].pack(magic, *_PCAP_VERSION, 0, 0, MAX_CAPLEN, linktype))
        for packet in itertools.chain(() if first is None else (first,), packets):
            count += 1
            if packet.linktype != linktype:
                raise ValueError(
                    f"packet {count}: link type {packet.linktype} differs from the file's "
                    f"{linktype}; classic pcap holds one link type, write pcapng instead"
                )
            check_writable(packet, count, _PCAP_MAX_TS_NS, "classic pcap")
            sec, ns = divmod(packet.ts_ns, NS_PER_S)
            out.write(record(sec, ns, len(packet.data), packet.orig_len))
            out.write(packet.data)
    return count


def write_pcapng(path: str | os.PathLike, packets: Iterable[RawPacket]) -> int:
    """Write pcapng (one interface per link type, nanosecond clock, EPBs); return the packet count."""
    from ftmbctl import pcapng  # imported here: pcapng builds on this module's types

    return pcapng.write_pcapng(path, packets)


def write_capture(path: str | os.PathLike, packets: Iterable[RawPacket]) -> str:
    """Write classic pcap when it can hold the packets, pcapng otherwise; return "pcap" or "pcapng".

    Classic pcap is preferred because every tool reads it; it cannot hold several link types
    or times after early 2106. The choice needs every packet first, so an iterator is read into
    a list: callers streaming huge traces call write_pcap or write_pcapng directly.
    """
    if not isinstance(packets, Sequence):
        packets = list(packets)
    linktypes = {p.linktype for p in packets}
    if len(linktypes) <= 1 and all(p.ts_ns <= _PCAP_MAX_TS_NS for p in packets):
        write_pcap(path, packets)
        return "pcap"
    write_pcapng(path, packets)
    return "pcapng"
