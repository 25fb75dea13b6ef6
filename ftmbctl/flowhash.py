"""The master's symmetric flow hash: both directions of a flow land on the same queue.

Policy (documented in README "Queues and flows"):
- the key is (VLAN/QinQ tags, protocol, the two (address, port) endpoints sorted), hashed with
  CRC-32, so it is the same in every process and for both directions;
- ICMP and ICMPv6 echo use the echo identifier as the port of both ends;
- IP fragments (more-fragments set or a non-zero offset) are keyed by addresses and protocol only,
  so every fragment of a datagram (the first one too) goes to one queue;
- MPLS labels are skipped to the IP header below them;
- frames that carry no IP (ARP, LLDP, ...) and frames too short to parse go to queue 0.
"""

from __future__ import annotations

import struct
import zlib

_U16 = struct.Struct("!H")
_PORTS = struct.Struct("!HH")

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = {0x8100, 0x88A8, 0x9100}
_ETHERTYPE_MPLS = {0x8847, 0x8848}
_PORT_PROTOCOLS = {6, 17, 132, 33, 136}  # TCP, UDP, SCTP, DCCP, UDP-Lite
_IPV6_EXTENSIONS = {0, 43, 60, 51}  # hop-by-hop, routing, destination options, AH


def ip_offset(linktype: int, data: bytes) -> tuple[int, bytes]:
    """Where the IP header starts in a frame, and the VLAN tags met on the way (-1: no IP)."""
    if linktype == 1:  # Ethernet
        pos = 12
        tags = b""
        if len(data) < 14:
            return -1, b""
        ethertype = _U16.unpack_from(data, pos)[0]
        while ethertype in _ETHERTYPE_VLAN:
            if len(data) < pos + 6:
                return -1, tags
            tags += data[pos + 2:pos + 4]
            pos += 4
            ethertype = _U16.unpack_from(data, pos)[0]
        pos += 2
        if ethertype in _ETHERTYPE_MPLS:
            while pos + 4 <= len(data):
                bottom = data[pos + 2] & 0x01
                pos += 4
                if bottom:
                    return pos, tags
            return -1, tags
        if ethertype in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
            return pos, tags
        return -1, tags
    if linktype in (101, 12, 14, 228, 229):  # raw IP
        return 0, b""
    if linktype == 0:  # BSD loopback: 4-byte address family, host byte order
        return (4, b"") if len(data) > 4 else (-1, b"")
    if linktype == 113:  # Linux cooked v1: protocol at 14
        if len(data) >= 16 and _U16.unpack_from(data, 14)[0] in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
            return 16, b""
        return -1, b""
    if linktype == 276:  # Linux cooked v2: protocol at 0
        if len(data) >= 20 and _U16.unpack_from(data, 0)[0] in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
            return 20, b""
        return -1, b""
    return -1, b""


def ipv6_transport(data: bytes, pos: int) -> tuple[int, int, int | None]:
    """``(protocol, offset, fragment)`` of what follows the extension headers of the IPv6 header
    at ``pos`` (which must be whole).

    The offset is -1 when the capture cuts the extension chain; the protocol is then the header it
    stops in. ``fragment`` is None without a fragment header, else its offset and M bits: 0 for
    an atomic fragment, anything else for a real fragment (whose ports, if any, are in the first
    fragment only)."""
    proto, l4 = data[pos + 6], pos + 40
    while proto in _IPV6_EXTENSIONS or proto == 44:
        if len(data) < l4 + 8:
            return proto, -1, None
        if proto == 44:
            return data[l4], l4 + 8, _U16.unpack_from(data, l4 + 2)[0] & 0xFFF9
        proto, l4 = data[l4], l4 + ((data[l4 + 1] + 2) * 4 if proto == 51 else (data[l4 + 1] + 1) * 8)
    return proto, l4, None


def flow_key(linktype: int, data: bytes) -> bytes | None:
    """The direction-independent flow key of a frame, or None for non-IP frames."""
    pos, tags = ip_offset(linktype, data)
    if pos < 0 or len(data) <= pos:
        return None
    version = data[pos] >> 4
    if version == 4:
        if len(data) < pos + 20:
            return None
        ihl = (data[pos] & 0x0F) * 4
        proto = data[pos + 9]
        src, dst = data[pos + 12:pos + 16], data[pos + 16:pos + 20]
        fragmented = _U16.unpack_from(data, pos + 6)[0] & 0x3FFF
        l4 = pos + ihl
    elif version == 6:
        if len(data) < pos + 40:
            return None
        src, dst = data[pos + 8:pos + 24], data[pos + 24:pos + 40]
        proto, l4, fragment = ipv6_transport(data, pos)
        if l4 < 0:
            return None
        fragmented = fragment is not None  # any fragment header, atomic ones too
    else:
        return None
    sport = dport = 0
    if not fragmented and len(data) >= l4 + 4:
        if proto in _PORT_PROTOCOLS:
            sport, dport = _PORTS.unpack_from(data, l4)
        elif (proto == 1 and data[l4] in (0, 8)) or (proto == 58 and data[l4] in (128, 129)):
            if len(data) >= l4 + 6:
                sport = dport = _U16.unpack_from(data, l4 + 4)[0]  # echo identifier
    a, b = src + _U16.pack(sport), dst + _U16.pack(dport)
    if b < a:
        a, b = b, a
    return tags + bytes((proto,)) + a + b


def flow_queue(linktype: int, data: bytes, queues: int) -> int:
    """The queue a frame is dispatched to."""
    if queues == 1:
        return 0
    key = flow_key(linktype, data)
    if key is None:
        return 0
    return zlib.crc32(key) % queues
