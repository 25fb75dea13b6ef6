"""monitor: passes every frame through unchanged and counts what it sees.

State (the object holds configuration only):

- queue-local ``flows``: canonical flow -> [packets, bytes]. The flow is
  ``(proto, address_a, port_a, address_b, port_b)`` with the two endpoints sorted (by address
  bytes, then port), so both directions count as one flow; addresses are text, ports are 0 for
  protocols without ports and for fragments, ICMP/ICMPv6 echo use the identifier (as the flow
  hash does). The flow hash pins both directions of a flow to one queue, so this table needs no
  sharing. Frames without IP, and malformed IP, have no flow.
- shared ``protocols`` (map): tcp / udp / icmp / icmpv6 / other-ip / non-ip / malformed ->
  (packets, bytes). One ``ctx.update`` per frame.
- shared ``talkers`` (map): source address -> (bytes, packets, overcount). One ``ctx.apply`` per IP
  frame. It is bounded to ``top_n * 4`` entries by the Space-Saving rule (Metwally et al. 2005):
  a new source arriving at a full table evicts the entry with the fewest bytes (ties: the
  smallest address text, never set or hash order) and inherits its byte count as ``overcount``,
  so a heavy talker that shows up late still climbs in. ``bytes - overcount`` is a lower bound
  on what the source really sent, ``bytes`` an upper bound. ``Monitor.top`` ranks the table.

Shared accesses per frame: 2 for IP, 1 for frames without IP. Bytes are captured frame bytes
(link header included). Malformed frames (IP announced by the link layer but no IP header fits,
bad IHL, unknown IP version) are passed through unchanged like every other frame and counted as
``malformed``; no parse error ever leaves ``process``.
"""

from __future__ import annotations

from typing import Any

from ftmbctl.errors import UsageError
from ftmbctl.middlebox import Middlebox, Option, Packet
from ftmbctl.middleboxes.packets import MALFORMED, NON_IP, address_text, ip_fields
from ftmbctl.shared import MISSING

_NAMES = {(4, 1): "icmp", (4, 6): "tcp", (4, 17): "udp", (6, 6): "tcp", (6, 17): "udp", (6, 58): "icmpv6"}


def parse_top_n(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"top_n must be at least 1, not {value}")
    return value


def _count(length: int):
    def fn(old: Any) -> Any:
        if old is MISSING:
            return (1, length)
        return (old[0] + 1, old[1] + length)
    return fn


def _talk(source: str, length: int, capacity: int):
    """Space-Saving update of the talkers table; returns nothing (the table is the result)."""
    def fn(view: Any) -> None:
        old = view.get(source)
        if old is not None:
            view.put(source, (old[0] + length, old[1] + 1, old[2]))
        elif len(view) < capacity:
            view.put(source, (length, 1, 0))
        else:
            victim, entry = min(view.items(), key=lambda item: (item[1][0], item[0]))
            view.pop(victim)
            view.put(source, (entry[0] + length, 1, entry[0]))
    return fn


class Monitor(Middlebox):
    name = "monitor"
    summary = "pass-through monitor: per-flow, per-protocol and top-talker counters"
    options = {
        "top_n": Option(10, parse_top_n, "top talkers to report; the table keeps 4x as many"),
    }

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        try:
            self.opts["top_n"] = parse_top_n(self.opts["top_n"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'monitor': {exc}") from None
        self._capacity = self.opts["top_n"] * 4

    def declare(self, shared: Any) -> None:
        self.protocols = shared.map("protocols")
        self.talkers = shared.map("talkers")

    def new_local_state(self) -> dict[str, Any]:
        return {"flows": {}}

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        length = len(data)
        version, proto, src, dst, sport, dport = ip_fields(pkt.linktype, data)
        if version == NON_IP:
            ctx.update(self.protocols, "non-ip", _count(length))
        elif version == MALFORMED:
            ctx.update(self.protocols, "malformed", _count(length))
        else:
            ctx.update(self.protocols, _NAMES.get((version, proto), "other-ip"), _count(length))
            source = address_text(src)
            if (src, sport) <= (dst, dport):
                flow = (proto, source, sport, address_text(dst), dport)
            else:
                flow = (proto, address_text(dst), dport, source, sport)
            flows = ctx.local["flows"]
            counts = flows.get(flow)
            if counts is None:
                flows[flow] = [1, length]
            else:
                counts[0] += 1
                counts[1] += length
            ctx.apply(self.talkers, _talk(source, length, self._capacity))
        ctx.emit(data)

    def top(self, talkers: dict[str, tuple[int, int, int]]) -> list[tuple[str, int, int, int]]:
        """The ``top_n`` entries of a talkers table as (address, bytes, packets, overcount),
        most bytes first, ties by address."""
        ranked = sorted(talkers.items(), key=lambda item: (-item[1][0], item[0]))
        return [(addr, b, p, over) for addr, (b, p, over) in ranked[:self.opts["top_n"]]]
