"""nat: an endpoint-independent IPv4 NAT (RFC 4787) over a shared port pool.

What happens to a frame (addresses are tested against the ``inside`` CIDRs and ``public_ip``):

- **outbound** (source inside, destination outside): the inside endpoint (protocol, address, port
  or ICMP echo identifier) is looked up in, or given, a mapping to a public port; the source
  becomes ``public_ip``:port, checksums are adjusted, the frame leaves. One inside endpoint keeps
  one public port whatever the destination (endpoint-independent mapping) while the mapping lives.
- **inbound to public_ip**: the public port is looked up in the pool; a live mapping rewrites the
  destination back to the inside endpoint, otherwise the frame is dropped.
- **inbound to an inside address** (source outside): a capture taken on the inside of a NAT (the
  bundled ``traces/mixed.pcap`` and most real captures) shows replies already addressed to the
  inside host. Such a frame leaves unchanged if its destination endpoint holds a live mapping (it
  is the reply of a translated flow, and refreshes it) and is dropped otherwise (unsolicited).
- **not for us**, passed unchanged: inside to inside, outside to outside, multicast and broadcast
  destinations, frames without IP (ARP, ...) and IPv6 (this NAT is IPv4 only).

Translated: TCP, UDP and ICMP echo (requests go out, replies come in; the echo identifier plays
the port). What may create a mapping: any outbound UDP datagram, an ICMP echo request, and a TCP
SYN without ACK (option ``new_tcp=syn``, the default, like pf's ``flags S/SA``), so a connection
opened from outside stays dropped as a whole even where the capture shows the inside host
answering it. ``new_tcp=any`` lets any outbound segment create one (like Linux's loose
conntrack), for captures that start in the middle of connections. There is no other TCP state
tracking.

Everything else that crosses the NAT is dropped and counted by reason in the shared ``drops``
map: ``fragment`` (IP fragments crossing the NAT: without reassembly state the ports of a
non-first fragment are unknown, so all of them are dropped), ``icmp_type`` (ICMP other than echo
request out / echo reply in, e.g. errors: their embedded headers are not translated),
``protocol`` (GRE, SCTP, ...), ``hairpin`` (inside host to public_ip: unsupported),
``no_mapping``, ``expired``, ``pool_exhausted``, ``contention`` (three lost allocation races in a
row) and ``malformed``.

**Malformed frames are dropped and counted, never raised**: an IP header that does not fit the
captured bytes or whose IHL is below 5, a total length shorter than the headers, a TCP/UDP/ICMP
header cut by the capture or by the total length, an IP version other than 4 or 6. A frame
captured short of its total length (snap length) but with whole headers is translated: the
checksums are adjusted incrementally (RFC 1624), which needs no payload. A checksum that was
wrong on arrival stays wrong by the same amount.

State (the object holds configuration only):

- ``mappings`` (sharded map): (proto, inside_ip, inside_port) -> (public_port, serial)
- ``ports`` (map, the pool): (proto, public_port) -> (inside_ip, inside_port, last_seen, serial);
  also ("cursor", proto) -> next port to try and "serial" -> last serial handed out. The serial
  names one allocation, so a stale forward entry can never be mistaken for a live one.
- ``translated_out``, ``translated_in`` (counters), ``drops`` (map: reason -> count)
- queue-local ``passed``: reason -> frames passed unchanged (no shared access for them)

Shared accesses per frame: outbound 3 on a known mapping (get mapping, refresh its pool entry,
count), 4 for a new one (get, allocate, install, count), 5-6 when a dead mapping is replaced
(a failed refresh first; clearing the forward entry of an expired owner whose port was
reclaimed); inbound to public_ip 2 (refresh, count); inbound to an inside address 3 (get,
refresh, count); frames dropped before a lookup 1 (count), after one 1 more; passed 0. A lost
allocation race (another queue mapped the same inside endpoint between our lookup and our
install) costs 2 more: give our port back, refresh the winner's.

A mapping expires ``timeout`` seconds (``ctx.clock()``) after the last frame in either direction.
The allocator hands out an absent or expired port only, scanning from a per-protocol cursor, all
inside one ``ctx.apply``, so two queues can never take the same port and a port is never given
out twice while its mapping lives. Expired entries are reclaimed when the cursor reaches them,
which bounds both tables by the size of the port range.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ftmbctl.errors import UsageError
from ftmbctl.flowhash import ip_offset
from ftmbctl.middlebox import Middlebox, Option, Packet
from ftmbctl.middleboxes.options import parse_new_tcp, parse_port, parse_seconds
from ftmbctl.middleboxes.packets import U16, U32, rewrite_ipv4
from ftmbctl.shared import MISSING

_DEFAULT_INSIDE = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
# RFC 6598 shared address space: clear of the inside ranges and of every outside host of the
# bundled trace (traces/make_trace.py uses 93.184.216/24, 198.51.100/24, 203.0.113/24, 192.0.2/24).
_DEFAULT_PUBLIC_IP = "100.64.0.1"

TCP, UDP, ICMP = 6, 17, 1
_L4_HEADER = {TCP: 20, UDP: 8, ICMP: 8}  # bytes that must be present to translate
_PASSED = ("non_ip", "ipv6", "inside", "outside", "multicast")
_OUT, _IN_PUBLIC, _IN_INSIDE = 1, 2, 3


def parse_cidrs(text: str) -> str:
    """``"10.0.0.0/8, 192.168.1.7/24"`` -> ``"10.0.0.0/8,192.168.1.0/24"`` (IPv4 only)."""
    nets = [str(ipaddress.IPv4Network(part.strip(), strict=False)) for part in str(text).split(",") if part.strip()]
    if not nets:
        raise ValueError("give at least one IPv4 CIDR, e.g. 10.0.0.0/8")
    return ",".join(nets)


def parse_ipv4(text: str) -> str:
    return str(ipaddress.IPv4Address(str(text).strip()))


# ---- the functions run inside one shared access (deterministic, touching only their input) ----

def _refresh_any(now: float, timeout: float):
    """Pool entry of an inbound frame: refresh it if it is live, else leave it as it is."""
    def fn(old: Any) -> Any:
        if old is MISSING or now - old[2] > timeout:
            return old
        return (old[0], old[1], max(old[2], now), old[3])
    return fn


def _refresh_own(serial: int, now: float, timeout: float):
    """Refresh a pool entry only if it is still the allocation ``serial`` and live."""
    def fn(old: Any) -> Any:
        if old is MISSING or old[3] != serial or now - old[2] > timeout:
            return old
        return (old[0], old[1], max(old[2], now), serial)
    return fn


def _alive(entry: Any, serial: int, now: float, timeout: float) -> bool:
    return entry is not MISSING and entry[3] == serial and now - entry[2] <= timeout


def _allocator(proto: int, ip: str, port: int, now: float, low: int, high: int, timeout: float):
    """Take the first absent or expired port from the protocol's cursor on, or None if none is."""
    def fn(view: Any) -> Any:
        cursor_key = ("cursor", proto)
        p = view.get(cursor_key, low)
        if not low <= p <= high:
            p = low
        for _ in range(high - low + 1):
            key = (proto, p)
            entry = view.get(key)
            if entry is None or now - entry[2] > timeout:
                serial = view.get("serial", 0) + 1
                view.put("serial", serial)
                view.put(key, (ip, port, now, serial))
                view.put(cursor_key, p + 1 if p < high else low)
                return p, serial, entry  # entry: the expired mapping reclaimed, or None
            p = p + 1 if p < high else low
        return None
    return fn


def _install(seen: Any, mine: tuple[int, int]):
    """Compare-and-set of a forward mapping: install ``mine`` unless another queue got there first."""
    def fn(old: Any) -> Any:
        if old is MISSING or old == seen:
            return mine
        return old
    return fn


def _forget(stale: tuple[int, int]):
    """Delete a forward mapping if it still names the reclaimed allocation ``stale``."""
    def fn(old: Any) -> Any:
        return MISSING if old == stale else old
    return fn


def _release(serial: int):
    def fn(old: Any) -> Any:
        return MISSING if old is not MISSING and old[3] == serial else old
    return fn


class Nat(Middlebox):
    name = "nat"
    summary = "endpoint-independent IPv4 NAT (TCP, UDP, ICMP echo) with a shared port pool"
    options = {
        "inside": Option(_DEFAULT_INSIDE, parse_cidrs, "comma-separated inside CIDRs"),
        "public_ip": Option(_DEFAULT_PUBLIC_IP, parse_ipv4, "the NAT's public address"),
        "port_min": Option(1024, parse_port, "lowest public port (or ICMP identifier) handed out"),
        "port_max": Option(65535, parse_port, "highest public port handed out"),
        "timeout": Option(120.0, parse_seconds, "idle lifetime of a mapping in seconds (TCP, UDP and ICMP)"),
        "new_tcp": Option("syn", parse_new_tcp, "which outbound TCP segments may create a mapping: syn or any"),
    }

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        try:
            o = self.opts
            o["inside"] = parse_cidrs(o["inside"])
            o["public_ip"] = parse_ipv4(o["public_ip"])
            o["port_min"], o["port_max"] = parse_port(o["port_min"]), parse_port(o["port_max"])
            o["timeout"] = parse_seconds(o["timeout"])
            o["new_tcp"] = parse_new_tcp(o["new_tcp"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'nat': {exc}") from None
        if o["port_min"] > o["port_max"]:
            raise UsageError(f"middlebox 'nat': port_min {o['port_min']} is above port_max {o['port_max']}")
        nets = [ipaddress.IPv4Network(n) for n in o["inside"].split(",")]
        self._nets = tuple((int(n.network_address), int(n.netmask)) for n in nets)
        self._pub_bytes = socket.inet_aton(o["public_ip"])
        self._pub = U32.unpack(self._pub_bytes)[0]
        if self._is_inside(self._pub):
            raise UsageError(f"middlebox 'nat': public_ip {o['public_ip']} lies inside {o['inside']}")
        self._low, self._high, self._timeout = o["port_min"], o["port_max"], o["timeout"]
        self._syn_only = o["new_tcp"] == "syn"

    def declare(self, shared: Any) -> None:
        self.mappings = shared.sharded_map("mappings", 16)
        self.ports = shared.map("ports")
        self.translated_out = shared.counter("translated_out")
        self.translated_in = shared.counter("translated_in")
        self.drops = shared.map("drops")

    def new_local_state(self) -> dict[str, Any]:
        return {"passed": dict.fromkeys(_PASSED, 0)}

    def _is_inside(self, addr: int) -> bool:
        for net, mask in self._nets:
            if addr & mask == net:
                return True
        return False

    def _drop(self, ctx: Any, reason: str) -> None:
        ctx.add(self.drops, 1, key=reason)

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        pos = ip_offset(pkt.linktype, data)[0]
        if pos < 0:
            ctx.local["passed"]["non_ip"] += 1
            ctx.emit(data)
            return
        size = len(data)
        if size <= pos:
            return self._drop(ctx, "malformed")
        version = data[pos] >> 4
        if version == 6:
            ctx.local["passed"]["ipv6"] += 1
            ctx.emit(data)
            return
        ihl = (data[pos] & 0x0F) * 4
        if version != 4 or ihl < 20 or size < pos + ihl or U16.unpack_from(data, pos + 2)[0] < ihl:
            return self._drop(ctx, "malformed")
        src = U32.unpack_from(data, pos + 12)[0]
        dst = U32.unpack_from(data, pos + 16)[0]
        if dst == self._pub:
            if self._is_inside(src):
                return self._drop(ctx, "hairpin")
            direction = _IN_PUBLIC
        elif dst >= 0xE0000000:  # multicast, reserved, limited broadcast: never crosses a NAT
            ctx.local["passed"]["multicast"] += 1
            ctx.emit(data)
            return
        elif self._is_inside(src):
            if self._is_inside(dst):
                ctx.local["passed"]["inside"] += 1
                ctx.emit(data)
                return
            direction = _OUT
        elif self._is_inside(dst):
            direction = _IN_INSIDE
        else:
            ctx.local["passed"]["outside"] += 1
            ctx.emit(data)
            return

        # The frame crosses the NAT: it must be a whole, unfragmented TCP/UDP/ICMP-echo header.
        if U16.unpack_from(data, pos + 6)[0] & 0x3FFF:
            return self._drop(ctx, "fragment")
        proto = data[pos + 9]
        need = _L4_HEADER.get(proto)
        if need is None:
            return self._drop(ctx, "protocol")
        l4 = pos + ihl
        if size < l4 + need or U16.unpack_from(data, pos + 2)[0] < ihl + need:
            return self._drop(ctx, "malformed")
        if proto == ICMP:
            if data[l4] != (0 if direction != _OUT else 8):  # echo request out, echo reply in
                return self._drop(ctx, "icmp_type")
            port_at = l4 + 4  # the echo identifier, for both ends
        else:
            port_at = l4 if direction == _OUT else l4 + 2  # the port that belongs to us

        now = ctx.clock()
        port = U16.unpack_from(data, port_at)[0]
        if direction == _OUT:
            may_create = proto != TCP or not self._syn_only or data[l4 + 13] & 0x12 == 0x02  # SYN, no ACK
            got = self._outbound(ctx, proto, socket.inet_ntoa(data[pos + 12:pos + 16]), port, now, may_create)
            if got.__class__ is str:
                return self._drop(ctx, got)
            ctx.emit(rewrite_ipv4(data, pos, pos + 12, src, self._pub_bytes, port_at, port, got, proto, l4))
            ctx.add(self.translated_out)
            return
        if direction == _IN_PUBLIC:
            entry = ctx.update(self.ports, (proto, port), _refresh_any(now, self._timeout))
            if entry is MISSING:
                return self._drop(ctx, "no_mapping")
            if now - entry[2] > self._timeout:
                return self._drop(ctx, "expired")
            new_dst = socket.inet_aton(entry[0])
            ctx.emit(rewrite_ipv4(data, pos, pos + 16, dst, new_dst, port_at, port, entry[1], proto, l4))
            ctx.add(self.translated_in)
            return
        # _IN_INSIDE: a reply that the capture shows after translation.
        seen = ctx.get(self.mappings, (proto, socket.inet_ntoa(data[pos + 16:pos + 20]), port))
        if seen is None:
            return self._drop(ctx, "no_mapping")
        entry = ctx.update(self.ports, (proto, seen[0]), _refresh_own(seen[1], now, self._timeout))
        if not _alive(entry, seen[1], now, self._timeout):
            return self._drop(ctx, "no_mapping" if entry is MISSING or entry[3] != seen[1] else "expired")
        ctx.emit(data)
        ctx.add(self.translated_in)

    def _outbound(self, ctx: Any, proto: int, ip: str, port: int, now: float, may_create: bool) -> int | str:
        """The public port of an inside endpoint (refreshed or newly allocated), or a drop reason."""
        key = (proto, ip, port)
        timeout = self._timeout
        seen = ctx.get(self.mappings, key)
        for _attempt in range(3):
            if seen is not None:
                entry = ctx.update(self.ports, (proto, seen[0]), _refresh_own(seen[1], now, timeout))
                if _alive(entry, seen[1], now, timeout):
                    return seen[0]
            if not may_create:
                return "no_mapping"
            got = ctx.apply(self.ports, _allocator(proto, ip, port, now, self._low, self._high, timeout))
            if got is None:
                return "pool_exhausted"
            public, serial, reclaimed = got
            mine = (public, serial)
            won = ctx.update(self.mappings, key, _install(seen, mine))
            if reclaimed is not None:  # the port's previous, expired owner: drop its stale entry
                ctx.update(self.mappings, (proto, reclaimed[0], reclaimed[1]), _forget((public, reclaimed[3])))
            if won == mine:
                return public
            # Another queue installed a mapping for this endpoint since our lookup: use theirs.
            ctx.update(self.ports, (proto, public), _release(serial))
            seen = won
        return "contention"
