"""pcapng: the block parser behind `pcapio.iter_packets`, and the EPB writer.

A pcapng file is a run of blocks: type (4), total length (4), body, total length again (4),
every block padded to 4 bytes. A Section Header Block (SHB) starts each section and sets its
byte order; Interface Description Blocks (IDB) number the section's interfaces from 0, each
with its own link type and clock resolution; packets arrive in Enhanced Packet Blocks (EPB),
Simple Packet Blocks (SPB, interface 0, no timestamp) and the obsolete Packet Block (type 2).
Every other block type (statistics, name resolution, decryption secrets, custom) is skipped.
Reference: draft-ietf-opsawg-pcapng (IETF).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ftmbctl.errors import BadInput
from ftmbctl.pcapio import (
    MAX_CAPLEN,
    NS_PER_S,
    PCAPNG_MAGIC,
    SUPPORTED_LINKTYPES,
    RawPacket,
    Source,
    check_writable,
    linktype_error,
    open_output,
)

SHB = 0x0A0D0D0A
IDB = 1
PB = 2  # obsolete Packet Block, still written by old tools
SPB = 3
EPB = 6
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_MIN_LENGTH = {SHB: 28, IDB: 20, PB: 32, SPB: 16, EPB: 32}  # header + fixed fields + trailer
_BLOCK_NAMES = {
    SHB: "section header",
    IDB: "interface description",
    PB: "packet",
    SPB: "simple packet",
    EPB: "enhanced packet",
}
# Wireshark refuses blocks above 16 MiB; a larger length is a corrupt header, and honouring
# it would buffer that much.
MAX_BLOCK_LENGTH = 16 << 20
_OPT_END, _OPT_TSRESOL, _OPT_TSOFFSET = 0, 9, 14
_PACKET_BLOCKS = frozenset((EPB, SPB, PB))


class _Layout:
    """The structs of one byte order; a section's SHB picks one of the two."""

    def __init__(self, order: str) -> None:
        self.block = struct.Struct(order + "II")  # type, total length
        self.u32 = struct.Struct(order + "I")
        self.version = struct.Struct(order + "HH")  # SHB major, minor (after the byte-order magic)
        self.idb = struct.Struct(order + "HHI")  # link type, reserved, snaplen
        self.option = struct.Struct(order + "HH")  # code, length
        self.i64 = struct.Struct(order + "q")
        self.epb = struct.Struct(order + "IIIII")  # interface, ts high, ts low, caplen, orig len
        self.pb = struct.Struct(order + "HHIIII")  # interface, drops, ts high, ts low, caplen, orig len


_LAYOUTS = {"<": _Layout("<"), ">": _Layout(">")}


@dataclass(frozen=True, slots=True)
class _Interface:
    """What a packet needs from its IDB: link type, capture limit and clock conversion."""

    linktype: int
    offset: int  # file offset of the IDB, for messages
    snaplen: int  # 0 means no limit
    limit: int  # largest believable captured length: max(snaplen, MAX_CAPLEN)
    mul: int  # ts_ns = ts * mul // div + offset_ns, exact in integers for every if_tsresol
    div: int
    offset_ns: int


def _clock(tsresol: int) -> tuple[int, int]:
    """(mul, div) turning if_tsresol units into nanoseconds: 10**-v, or 2**-v if the top bit is set."""
    if tsresol & 0x80:
        return NS_PER_S, 1 << (tsresol & 0x7F)
    if tsresol <= 9:
        return 10 ** (9 - tsresol), 1
    return 1, 10 ** (tsresol - 9)


def _interface(name: str, layout: _Layout, buf: bytes, pos: int, length: int, offset: int) -> _Interface:
    """Parse an IDB at buf[pos:pos+length]; only if_tsresol and if_tsoffset matter here."""
    linktype, _reserved, snaplen = layout.idb.unpack_from(buf, pos + 8)
    tsresol, tsoffset = 6, 0  # the spec's defaults: microseconds, no offset
    opt, end = pos + 16, pos + length - 4
    while opt + 4 <= end:
        code, size = layout.option.unpack_from(buf, opt)
        opt += 4
        if code == _OPT_END:
            break
        if opt + size > end:
            raise BadInput(
                f"{name}: interface description block at byte {offset} has an option running past its end"
            )
        if code == _OPT_TSRESOL and size >= 1:
            tsresol = buf[opt]
        elif code == _OPT_TSOFFSET and size >= 8:
            tsoffset = layout.i64.unpack_from(buf, opt)[0]
        opt += (size + 3) & ~3
    mul, div = _clock(tsresol)
    return _Interface(linktype, offset, snaplen, max(snaplen, MAX_CAPLEN), mul, div, tsoffset * NS_PER_S)


def iter_pcapng(src: Source, buf: bytes) -> Iterator[RawPacket]:
    """Yield the packets of a pcapng stream whose first bytes (the SHB magic) are in buf."""
    name = src.name
    layout = _LAYOUTS["<"]  # replaced by the first SHB, which the caller has checked comes first
    interfaces: list[_Interface] = []
    index = 0
    last_ts = 0  # SPBs carry no timestamp: they get the previous packet's
    pos, size = 0, len(buf)
    while True:
        if size - pos < 12:  # type, length and (for an SHB) the byte-order magic
            buf = src.refill(buf, pos, 12)
            pos, size = 0, len(buf)
            if size < 12:
                if size == 0:
                    return
                if src.base == 0:  # not even a section header: not a capture
                    raise BadInput(f"{name}: truncated pcapng block header at byte 0: 12 bytes needed, {size} left")
                # cut short in a block header: a clean end, like a torn log tail
                src.cut_short(src.base, src.base + size, index,
                              f"the block header at byte {src.base}{_where(index, None)}")
                return
        offset = src.base + pos
        if buf[pos : pos + 4] == PCAPNG_MAGIC:
            layout = _section_layout(name, buf, pos, offset)
        btype, length = layout.block.unpack_from(buf, pos)
        if length & 3 or length > MAX_BLOCK_LENGTH or length < _MIN_LENGTH.get(btype, 12):
            raise _length_error(name, btype, length, offset, index)
        if size - pos < length:
            buf = src.refill(buf, pos, length)
            pos, size = 0, len(buf)
            if size < length:
                if offset == 0:  # the first section header is cut: not a capture
                    raise BadInput(
                        f"{name}: truncated {_block_name(btype)} block at byte 0: "
                        f"block length says {length} bytes, {size} left"
                    )
                inside = (f"packet {index + 1}" if btype in _PACKET_BLOCKS
                          else f"the {_block_name(btype)} block at byte {offset}{_where(index, btype)}")
                src.cut_short(offset, offset + size, index, inside)
                return
        trailing = layout.u32.unpack_from(buf, pos + length - 4)[0]
        if trailing != length:
            raise BadInput(
                f"{name}: {_block_name(btype)} block at byte {offset}{_where(index, btype)} starts with "
                f"length {length} but ends with {trailing}"
            )
        if btype == EPB or btype == PB:
            if btype == EPB:
                iface_id, ts_high, ts_low, caplen, orig_len = layout.epb.unpack_from(buf, pos + 8)
            else:
                iface_id, _drops, ts_high, ts_low, caplen, orig_len = layout.pb.unpack_from(buf, pos + 8)
            iface = _packet_interface(name, interfaces, iface_id, offset, index)
            if caplen > length - 32 or caplen > iface.limit:
                raise _caplen_error(name, iface, caplen, length, offset, index)
            last_ts = ((ts_high << 32) | ts_low) * iface.mul // iface.div + iface.offset_ns
            yield RawPacket(index, last_ts, iface.linktype, orig_len, buf[pos + 28 : pos + 28 + caplen])
            index += 1
        elif btype == SPB:
            iface = _packet_interface(name, interfaces, 0, offset, index)
            orig_len = layout.u32.unpack_from(buf, pos + 8)[0]
            # An SPB holds min(orig_len, snaplen) bytes, padded; the block length bounds both.
            caplen = min(orig_len, length - 16, iface.snaplen or orig_len)
            yield RawPacket(index, last_ts, iface.linktype, orig_len, buf[pos + 12 : pos + 12 + caplen])
            index += 1
        elif btype == IDB:
            interfaces.append(_interface(name, layout, buf, pos, length, offset))
        elif btype == SHB:
            major, minor = layout.version.unpack_from(buf, pos + 12)
            if major != 1:
                raise BadInput(
                    f"{name}: section header block at byte {offset} has pcapng version "
                    f"{major}.{minor}, not 1.x"
                )
            interfaces = []  # interface numbers start again in each section
        pos += length


def _section_layout(name: str, buf: bytes, pos: int, offset: int) -> _Layout:
    """The byte order of the section whose SHB starts at buf[pos], from its byte-order magic."""
    magic = buf[pos + 8 : pos + 12]
    for layout in _LAYOUTS.values():
        if layout.u32.unpack(magic)[0] == _BYTE_ORDER_MAGIC:
            return layout
    raise BadInput(
        f"{name}: section header block at byte {offset} has the invalid byte-order magic {magic.hex()}"
    )


def _length_error(name: str, btype: int, length: int, offset: int, index: int) -> BadInput:
    """Block lengths that cannot be right are refused before that many bytes are read."""
    if length & 3:
        problem = "is not a multiple of 4"
    elif length > MAX_BLOCK_LENGTH:
        problem = f"is larger than the {MAX_BLOCK_LENGTH >> 20} MiB limit"
    else:
        problem = f"is shorter than the {_MIN_LENGTH.get(btype, 12)}-byte minimum"
    where = f"{_block_name(btype)} block at byte {offset}{_where(index, btype)}"
    return BadInput(f"{name}: {where} has length {length}, which {problem}")


def _packet_interface(
    name: str, interfaces: list[_Interface], iface_id: int, offset: int, index: int
) -> _Interface:
    """The interface a packet block names, if it is defined and its link type is supported."""
    if iface_id >= len(interfaces):
        raise BadInput(
            f"{name}: packet {index + 1} at byte {offset} refers to interface {iface_id}, "
            f"but its section has defined {len(interfaces)} interface(s) so far"
        )
    iface = interfaces[iface_id]
    if iface.linktype not in SUPPORTED_LINKTYPES:
        whose = (
            f"packet {index + 1} at byte {offset} comes from interface {iface_id} "
            f"(defined at byte {iface.offset}) with"
        )
        raise linktype_error(name, iface.linktype, whose)
    return iface


def _caplen_error(
    name: str, iface: _Interface, caplen: int, length: int, offset: int, index: int
) -> BadInput:
    if caplen > length - 32:
        limit = f"more than its {length}-byte block holds"
    else:
        limit = (
            f"more than its interface's snapshot length {iface.snaplen} "
            f"or the {MAX_CAPLEN}-byte maximum allows"
        )
    return BadInput(f"{name}: packet {index + 1} at byte {offset} claims {caplen} captured bytes, {limit}")


def _block_name(btype: int) -> str:
    return _BLOCK_NAMES.get(btype, f"pcapng type-{btype:#x}")


def _where(index: int, btype: int | None) -> str:
    """Where a block sits among the packets: the packet it holds, or the last packet before it."""
    if btype in _PACKET_BLOCKS:
        return f" (packet {index + 1})"
    return f" (after packet {index})" if index else " (before the first packet)"


# --- writing -------------------------------------------------------------------------------

_LE = _LAYOUTS["<"]
_PCAPNG_MAX_TS_NS = (1 << 64) - 1
# SHB: type, length, byte-order magic, version 1.0, section length -1 (not computed: we stream).
_SHB_BYTES = struct.pack("<IIIHHqI", SHB, 28, _BYTE_ORDER_MAGIC, 1, 0, -1, 28)
_IDB_LENGTH = 32  # 20 fixed bytes + if_tsresol option (8) + end-of-options (4)
_IDB = struct.Struct("<IIHHI" "HHB3x" "HH" "I")
_EPB_HEAD = struct.Struct("<IIIIIII")  # type, length, interface, ts high, ts low, caplen, orig len


def _idb_bytes(linktype: int) -> bytes:
    """An IDB with snaplen 0 (no limit) and if_tsresol = 9, so nanoseconds are stored exactly."""
    return _IDB.pack(IDB, _IDB_LENGTH, linktype, 0, 0, _OPT_TSRESOL, 1, 9, _OPT_END, 0, _IDB_LENGTH)


def write_pcapng(path: str | os.PathLike, packets: Iterable[RawPacket]) -> int:
    """Write one section, an IDB per distinct link type (added when first needed) and an EPB per packet.

    Each IDB says if_tsresol = 9, so timestamps are stored as integer nanoseconds and read back
    exactly, and snaplen 0 (no limit). Returns the number of packets. Note that libpcap (hence
    tcpdump) refuses pcapng files whose interfaces have different link types; Wireshark reads them.
    """
    epb_head = _EPB_HEAD.pack
    trailer = _LE.u32.pack
    interface_of: dict[int, int] = {}  # link type -> interface number
    count = 0
    with open_output(path) as out:
        out.write(_SHB_BYTES)
        for packet in packets:
            count += 1
            check_writable(packet, count, _PCAPNG_MAX_TS_NS, "pcapng")
            iface = interface_of.get(packet.linktype)
            if iface is None:
                iface = interface_of[packet.linktype] = len(interface_of)
                out.write(_idb_bytes(packet.linktype))
            data = packet.data
            pad = -len(data) & 3
            length = 32 + len(data) + pad
            ts = packet.ts_ns
            out.write(epb_head(EPB, length, iface, ts >> 32, ts & 0xFFFFFFFF, len(data), packet.orig_len))
            out.write(data)
            out.write(b"\0" * pad + trailer(length))
    return count
