"""lb: a TCP load balancer for one virtual IPv4 address and port (least connections).

What happens to a frame:

- **client to the VIP** (destination ``vip`` address and port, TCP): a SYN without ACK of a flow
  without a live choice opens a connection: the backend with the fewest active connections gets
  it, ties broken by one ``ctx.random()`` draw. The choice is kept per flow (client address and
  port) in the queue-local table, so every later segment of the flow goes to the same backend:
  its destination address (and port, when the backend names one) is rewritten and the IPv4 and
  TCP checksums adjusted (RFC 1624; a wrong checksum stays wrong by the same amount). A segment
  to the VIP of a flow without a choice (the capture started mid-connection, or the choice timed
  out) is dropped as ``no_flow``.
- **from a backend** (source a backend's address and port): the source is rewritten back to the
  VIP address and port. This needs no state, and has none: a reply's flow (client, backend) hashes
  to another queue than the client's flow (client, VIP), so the client's table is not there.
- **from the VIP** (source ``vip`` address and port: a capture taken in front of an unbalanced
  server, such as the bundled traces): passes unchanged; on the client's queue it refreshes the
  flow and its FIN or RST ends the connection.
- everything else passes unchanged (other ports and protocols of the VIP too, IPv6, non-IP).

A connection ends (its backend's active count goes down by one) at its first FIN or RST seen on
the client's queue (the client's segments, or the VIP's), or when the flow has been idle for
``timeout`` seconds of ``ctx.clock()``. An ended flow keeps its backend, so the closing segments
still reach it, until it is idle for ``timeout``; a new SYN on it opens a new connection. Idle
flows are removed when seen again and by a sweep of the queue's table once per second.

State (the object holds configuration only):

- shared ``active`` (map): backend (``ip`` or ``ip:port`` as configured) -> (active connections,
  connections ever assigned). Choosing and counting the choice is one ``ctx.apply``.
- shared ``drops`` (map): ``no_flow`` / ``fragment`` / ``malformed`` -> frames.
- queue-local ``flows``: (client address, client port) -> [backend index, last seen, open];
  ``counts``: frames ``to_backend`` / ``from_backend`` rewritten, ``from_vip`` and ``passed``
  unchanged; ``next_sweep``.

Shared accesses per frame: a new connection 1 (the choice, after one ``ctx.random()``; 2 when
the flow's previous connection timed out while open), a segment that ends a connection 1, a
dropped frame 1, every other frame 0 (the rewrite of an established flow is queue-local). A sweep
costs 1 per idle open connection. One ``ctx.clock()`` per frame to or from the VIP port.

**Malformed frames are dropped and counted, never raised**: an IP header that cannot be parsed
(the frame could be for the VIP), and TCP frames to or from the VIP address or from a backend
address whose IPv4 total length is shorter than its headers or whose TCP header is cut by the
capture. Such TCP frames that are IP fragments are dropped as ``fragment`` (without reassembly
their ports are unknown). Other frames pass unchanged whatever they hold.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ftmbctl.errors import UsageError
from ftmbctl.middlebox import Middlebox, Option, Packet
from ftmbctl.middleboxes.options import parse_seconds
from ftmbctl.middleboxes.packets import MALFORMED, PROTO_TCP, U16, U32, ip_fields, ip_start, rewrite_ipv4
from ftmbctl.shared import MISSING

SWEEP_EVERY_S = 1.0
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_DEFAULT_VIP = "100.64.0.80:80"  # RFC 6598 shared address space: clear of every host of the bundled traces
_DEFAULT_BACKENDS = "100.64.1.1,100.64.1.2,100.64.1.3"


def _ip_port(text: str, need_port: bool) -> tuple[str, int | None]:
    addr, sep, port = str(text).strip().partition(":")
    ip = str(ipaddress.IPv4Address(addr.strip()))
    if not sep:
        if need_port:
            raise ValueError(f"{text!r} is not IPv4-address:port")
        return ip, None
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is not in 1..65535")
    return ip, value


def parse_vip(text: str) -> str:
    ip, port = _ip_port(text, True)
    return f"{ip}:{port}"


def parse_backends(text: str) -> str:
    """``"10.1.0.1, 10.1.0.2:8080"`` -> ``"10.1.0.1,10.1.0.2:8080"``: at least one, no repeats."""
    seen: list[str] = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        ip, port = _ip_port(part, False)
        label = ip if port is None else f"{ip}:{port}"
        if any(s.split(":")[0] == ip for s in seen):
            raise ValueError(f"backend address {ip} is given twice")
        seen.append(label)
    if not seen:
        raise ValueError("give at least one backend, e.g. 10.1.0.1,10.1.0.2:8080")
    return ",".join(seen)


# ---- the functions run inside one shared access (deterministic, touching only their input) ----

def least_connections(labels: tuple[str, ...], draw: float):
    """Pick the backend with the fewest active connections (``draw`` in [0, 1) breaks ties among
    them, in configuration order) and count the new connection; returns its index."""
    def fn(view: Any) -> int:
        counts = [view.get(label, (0, 0)) for label in labels]
        least = min(active for active, _total in counts)
        tied = [i for i, (active, _total) in enumerate(counts) if active == least]
        chosen = tied[min(int(draw * len(tied)), len(tied) - 1)]
        view.put(labels[chosen], (counts[chosen][0] + 1, counts[chosen][1] + 1))
        return chosen
    return fn


def _ended(old: Any) -> Any:
    if old is MISSING:  # cannot happen: a connection is counted before it can end
        return old
    return (max(old[0] - 1, 0), old[1])


def rewrite(data: bytes, pos: int, l4: int, addr_at: int, new_addr: bytes, port_at: int, new_port: int) -> bytearray:
    """A copy of a TCP/IPv4 frame with the address at ``addr_at`` and the port at ``port_at``
    replaced, the IPv4 header and TCP checksums adjusted incrementally (packets.py)."""
    return rewrite_ipv4(data, pos, addr_at, U32.unpack_from(data, addr_at)[0], new_addr, port_at,
                        U16.unpack_from(data, port_at)[0], new_port, PROTO_TCP, l4)


class LoadBalancer(Middlebox):
    name = "lb"
    summary = "TCP load balancer: a VIP:port spread over backends by least connections"
    options = {
        "vip": Option(_DEFAULT_VIP, parse_vip, "the virtual IPv4 address:port clients connect to"),
        "backends": Option(_DEFAULT_BACKENDS, parse_backends, "comma-separated backend ip or ip:port"),
        "timeout": Option(300.0, parse_seconds, "idle lifetime of a flow's backend choice in seconds"),
    }

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        o = self.opts
        try:
            o["vip"] = parse_vip(o["vip"])
            o["backends"] = parse_backends(o["backends"])
            o["timeout"] = parse_seconds(o["timeout"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'lb': {exc}") from None
        vip_ip, vip_port = o["vip"].split(":")
        self._vip = socket.inet_aton(vip_ip)
        self._vport = int(vip_port)
        self.labels = tuple(o["backends"].split(","))
        self._backends: list[tuple[bytes, int]] = []  # (address, port) frames to it carry
        for label in self.labels:
            ip, port = _ip_port(label, False)
            if ip == vip_ip:
                raise UsageError(f"middlebox 'lb': backend {label} is the VIP's address")
            self._backends.append((socket.inet_aton(ip), self._vport if port is None else port))
        self._by_source = {backend: i for i, backend in enumerate(self._backends)}
        self._backend_addrs = frozenset(addr for addr, _port in self._backends)
        self._timeout = o["timeout"]

    def declare(self, shared: Any) -> None:
        self.active = shared.map("active")
        self.drops = shared.map("drops")

    def new_local_state(self) -> dict[str, Any]:
        return {"flows": {}, "counts": {"to_backend": 0, "from_backend": 0, "from_vip": 0, "passed": 0},
                "next_sweep": 0.0}

    def _drop(self, ctx: Any, reason: str) -> None:
        ctx.add(self.drops, 1, key=reason)

    def _pass(self, ctx: Any, data: bytes) -> None:
        ctx.local["counts"]["passed"] += 1
        ctx.emit(data)

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        version, proto, src, dst, sport, dport = ip_fields(pkt.linktype, data)
        if version == MALFORMED:
            return self._drop(ctx, "malformed")
        if version != 4 or proto != PROTO_TCP:
            return self._pass(ctx, data)
        to_vip, from_vip = dst == self._vip, src == self._vip
        if not (to_vip or from_vip or src in self._backend_addrs):
            return self._pass(ctx, data)
        pos = ip_start(pkt.linktype, data)
        if U16.unpack_from(data, pos + 6)[0] & 0x3FFF:  # a fragment: its ports, if any, are unknown
            return self._drop(ctx, "fragment")
        ihl = (data[pos] & 0x0F) * 4
        l4 = pos + ihl
        if len(data) < l4 + 20 or U16.unpack_from(data, pos + 2)[0] < ihl + 20:
            return self._drop(ctx, "malformed")
        counts = ctx.local["counts"]
        if not (to_vip or from_vip):
            backend = self._by_source.get((src, sport))
            if backend is None:  # a backend's other traffic
                return self._pass(ctx, data)
            counts["from_backend"] += 1
            ctx.emit(rewrite(data, pos, l4, pos + 12, self._vip, l4, self._vport))
            return
        if (dport if to_vip else sport) != self._vport:
            return self._pass(ctx, data)

        now = ctx.clock()
        if now >= ctx.local["next_sweep"]:
            self._sweep(ctx, now)
        flags = data[l4 + 13]
        flows = ctx.local["flows"]
        key = (src, sport) if to_vip else (dst, dport)
        flow = flows.get(key)
        if flow is not None and now - flow[1] > self._timeout:
            self._forget(ctx, key, flow)
            flow = None
        if not to_vip:  # from the VIP
            if flow is not None:
                self._refresh(ctx, flow, flags, now)
            counts["from_vip"] += 1
            ctx.emit(data)
            return
        if flags & (_SYN | _ACK | _RST) == _SYN and (flow is None or not flow[2]):
            if flow is not None:
                self._forget(ctx, key, flow)
            flow = flows[key] = [self._choose(ctx), now, True]
        elif flow is None:
            return self._drop(ctx, "no_flow")
        self._refresh(ctx, flow, flags, now)
        addr, port = self._backends[flow[0]]
        counts["to_backend"] += 1
        ctx.emit(rewrite(data, pos, l4, pos + 16, addr, l4 + 2, port))

    def _choose(self, ctx: Any) -> int:
        """The backend of a new connection, counted in ``active`` (one random draw, one access)."""
        draw = ctx.random()
        return ctx.apply(self.active, least_connections(self.labels, draw))

    def _refresh(self, ctx: Any, flow: list[Any], flags: int, now: float) -> None:
        flow[1] = max(flow[1], now)
        if flow[2] and flags & (_FIN | _RST):
            flow[2] = False
            ctx.update(self.active, self.labels[flow[0]], _ended)

    def _forget(self, ctx: Any, key: tuple[bytes, int], flow: list[Any]) -> None:
        del ctx.local["flows"][key]
        if flow[2]:
            ctx.update(self.active, self.labels[flow[0]], _ended)

    def _sweep(self, ctx: Any, now: float) -> None:
        """End and drop the queue's idle flows (deterministic: the clock values are logged)."""
        flows = ctx.local["flows"]
        for key, flow in [(k, f) for k, f in flows.items() if now - f[1] > self._timeout]:
            self._forget(ctx, key, flow)
        ctx.local["next_sweep"] = now + SWEEP_EVERY_S
