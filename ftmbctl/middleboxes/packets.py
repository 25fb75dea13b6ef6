"""Frame parsing and checksum helpers shared by the built-in middleboxes.

The middleboxes read the few header fields they need with ``struct`` instead of building dpkt
objects, and a rewrite changes only the bytes that change: the link header (Ethernet, VLAN/QinQ,
MPLS, Linux SLL/SLL2, BSD loopback, raw IP), IP options, the payload and any Ethernet trailer
padding leave exactly as they came, and a frame cut short by the capture's snap length can still
be handled. Where IP starts is decided by ``ftmbctl.flowhash.ip_offset``, the code the master
uses to pick a queue, so a middlebox and the dispatcher never disagree about which frames are IP.

Checksums are updated incrementally (RFC 1624, eqn. 3): HC' = ~(~HC + ~m + m'). Unlike a full
recomputation this needs none of the payload, and a checksum that was wrong on arrival stays
wrong by the same amount instead of being silently "repaired" (as Linux's NAT does it). For a
packet whose checksum was right, the result equals a full recomputation bit for bit (the tests
compare it with dpkt's).
"""

from __future__ import annotations

import socket
import struct

from ftmbctl.flowhash import ip_offset, ipv6_transport

U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
PORTS = struct.Struct("!HH")

NON_IP = 0  # ip_fields: the frame carries no IP
MALFORMED = -1  # ip_fields: the link layer says IP but the IP header cannot be parsed

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
_PORT_PROTOCOLS = frozenset((6, 17, 132, 33, 136))  # TCP, UDP, SCTP, DCCP, UDP-Lite
_CSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMP: 2}  # checksum offset in the L4 header


def ip_start(linktype: int, data: bytes) -> int:
    """Offset of the IP header in a frame, or -1 when the frame carries no IP."""
    return ip_offset(linktype, data)[0]


# ---- incremental checksums (RFC 1624) ----

def delta16(old: int, new: int) -> int:
    """The ones'-complement change (~m + m') of replacing the 16-bit word ``old`` by ``new``."""
    return 0xFFFF - old + new


def delta32(old: int, new: int) -> int:
    """The change of replacing a 32-bit field (two words, e.g. an IPv4 address) ``old`` by ``new``."""
    return 0x1FFFE - (old >> 16) - (old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)


def csum_adjust(csum: int, delta: int) -> int:
    """The checksum after a change whose summed ``delta*`` is ``delta`` (RFC 1624 eqn. 3).

    The ones'-complement sum of data that is not all zeros is never +0 (0x0000) when computed in
    full, so a folded sum of 0 is taken as -0 (0xFFFF): this keeps the result identical to a full
    recomputation. (A UDP checksum of 0 must then be sent as 0xFFFF: the caller's business.)
    """
    s = (~csum & 0xFFFF) + delta
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if s == 0:
        s = 0xFFFF
    return ~s & 0xFFFF


def rewrite_ipv4(data: bytes, pos: int, addr_at: int, old_addr: int, new_addr: bytes, port_at: int,
                 old_port: int, new_port: int, proto: int, l4: int) -> bytearray:
    """A copy of ``data`` with one IPv4 address and one port (or echo id) replaced, checksums adjusted.

    ``pos`` is where the IP header starts. TCP and UDP checksums cover the address through the
    pseudo-header; ICMP's does not.
    """
    out = bytearray(data)
    ip_csum_at = pos + 10
    d_addr = delta32(old_addr, U32.unpack(new_addr)[0])
    U16.pack_into(out, ip_csum_at, csum_adjust(U16.unpack_from(data, ip_csum_at)[0], d_addr))
    out[addr_at:addr_at + 4] = new_addr
    U16.pack_into(out, port_at, new_port)
    d_l4 = delta16(old_port, new_port)
    csum_at = l4 + _CSUM_AT[proto]
    old_sum = U16.unpack_from(data, csum_at)[0]
    if proto == PROTO_UDP:
        if old_sum == 0:  # no checksum was sent: stays so
            return out
        new_sum = csum_adjust(old_sum, d_addr + d_l4) or 0xFFFF
    elif proto == PROTO_TCP:
        new_sum = csum_adjust(old_sum, d_addr + d_l4)
    else:
        new_sum = csum_adjust(old_sum, d_l4)
    U16.pack_into(out, csum_at, new_sum)
    return out


def internet_checksum(data: bytes) -> int:
    """The full RFC 1071 checksum of ``data`` (tests and cross-checks; the hot paths adjust)."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# ---- what a frame is ----

def ip_fields(linktype: int, data: bytes) -> tuple[int, int, bytes, bytes, int, int]:
    """``(version, proto, src, dst, sport, dport)`` of a frame.

    ``version`` is 4 or 6, ``NON_IP`` for a frame without IP, ``MALFORMED`` when the link layer
    announces IP but no IP header of that version fits (the other fields are then 0/empty).
    Ports are those of TCP/UDP/SCTP/DCCP/UDP-Lite; ICMP and ICMPv6 echo use the identifier as
    both ports (as the flow hash does); they are 0 for other protocols, for fragments (whose
    ports, if any, are in the first fragment only) and when the captured bytes stop before them.
    For IPv6, ``proto`` is the upper-layer protocol after the extension headers.
    """
    pos = ip_offset(linktype, data)[0]
    if pos < 0:
        return NON_IP, 0, b"", b"", 0, 0
    size = len(data)
    if size <= pos:
        return MALFORMED, 0, b"", b"", 0, 0
    version = data[pos] >> 4
    if version == 4:
        ihl = (data[pos] & 0x0F) * 4
        if ihl < 20 or size < pos + ihl:
            return MALFORMED, 0, b"", b"", 0, 0
        proto = data[pos + 9]
        src, dst = data[pos + 12:pos + 16], data[pos + 16:pos + 20]
        fragmented = U16.unpack_from(data, pos + 6)[0] & 0x3FFF
        l4 = pos + ihl
    elif version == 6:
        if size < pos + 40:
            return MALFORMED, 0, b"", b"", 0, 0
        src, dst = data[pos + 8:pos + 24], data[pos + 24:pos + 40]
        proto, l4, fragmented = ipv6_transport(data, pos)
        if l4 < 0:
            return 6, proto, src, dst, 0, 0  # extension chain cut by the snap length
    else:
        return MALFORMED, 0, b"", b"", 0, 0
    sport = dport = 0
    if not fragmented and size >= l4 + 4:
        if proto in _PORT_PROTOCOLS:
            sport, dport = PORTS.unpack_from(data, l4)
        elif ((proto == PROTO_ICMP and version == 4 and data[l4] in (0, 8))
              or (proto == PROTO_ICMPV6 and data[l4] in (128, 129))):
            if size >= l4 + 6:
                sport = dport = U16.unpack_from(data, l4 + 4)[0]
    return version, proto, src, dst, sport, dport


def address_text(addr: bytes) -> str:
    """Dotted IPv4 or RFC 5952 IPv6 text of a 4- or 16-byte address."""
    if len(addr) == 4:
        return socket.inet_ntoa(addr)
    return socket.inet_ntop(socket.AF_INET6, addr)
