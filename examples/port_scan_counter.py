"""A middlebox written outside ftmbctl: new flows per destination port, counted in time windows,
with an alert when one port gets many new flows within a window (a worm or a horizontal scan
hitting one service). docs/writing-a-middlebox.md walks through it line by line.

Record, crash and verify it:

    ftmbctl record traces/small.pcap --middlebox examples/port_scan_counter.py:PortScanCounter \\
        --mb-opt threshold=5 --queues 2 --snapshot-every 100 --out runs/psc
    ftmbctl crash-replay runs/psc --every 3 --torn
    ftmbctl verify runs/psc
"""

from __future__ import annotations

from typing import Any

from ftmbctl.middlebox import Middlebox, Option, Packet
from ftmbctl.middleboxes.packets import MALFORMED, NON_IP, ip_fields
from ftmbctl.shared import MISSING

TCP, UDP = 6, 17


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text} is not positive")
    return value


def count_in_window(now: float, window: float):
    """What one shared access does to a port's entry ``(window start, new flows in it, total)``.

    It runs under the variable's lock and sees only the old value, so it must be deterministic:
    ``now`` comes from ``ctx.clock()``, read before the access."""
    def update(old: Any) -> Any:
        if old is MISSING:
            return (now, 1, 1)
        start, count, total = old
        if now - start > window:  # the window is over: a new one starts with this flow
            return (now, 1, total + 1)
        return (start, count + 1, total + 1)
    return update


class PortScanCounter(Middlebox):
    name = "port-scan-counter"
    summary = "new flows per destination port in clock windows; alerts when a port gets hot"
    options = {
        "window": Option(10.0, positive, "seconds a counting window lasts"),
        "threshold": Option(10, int, "new flows to one port within a window that raise an alert"),
        "max_flows": Option(10000, int, "flows remembered per queue (the oldest is forgotten)"),
    }

    def declare(self, shared: Any) -> None:
        self.ports = shared.sharded_map("ports", shards=8)  # (proto, port) -> (start, count, total)
        self.alerts = shared.counter("alerts")

    def new_local_state(self) -> dict[str, Any]:
        # Flows are pinned to a queue (both directions), so the table of flows seen needs no lock.
        return {"flows": {}, "other": 0}

    def process(self, ctx: Any, pkt: Packet) -> None:
        ctx.emit(pkt.data)  # a pass-through box: every frame leaves unchanged
        version, proto, src, dst, sport, dport = ip_fields(pkt.linktype, pkt.data)
        if version in (NON_IP, MALFORMED) or proto not in (TCP, UDP) or not dport:
            ctx.local["other"] += 1
            return
        a, b = (src, sport), (dst, dport)
        flow = (proto, *a, *b) if a <= b else (proto, *b, *a)  # one key for both directions
        flows = ctx.local["flows"]
        if flow in flows:
            return
        if len(flows) >= self.opts["max_flows"]:
            del flows[next(iter(flows))]  # dicts keep insertion order, snapshots too
        flows[flow] = pkt.id  # its first packet: the one whose destination port is counted
        now = ctx.clock()
        _start, count, _total = ctx.update(self.ports, (proto, dport), count_in_window(now, self.opts["window"]))
        if count == self.opts["threshold"]:  # exactly once per window
            ctx.add(self.alerts)
            kind = "tcp" if proto == TCP else "udp"
            ctx.alert(f"port {dport}/{kind}: {count} new flows within {self.opts['window']:g}s, packet {pkt.id}")
