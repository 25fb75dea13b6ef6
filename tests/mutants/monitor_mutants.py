"""The built-in monitor with one classic FTMB bug per class. Load with
``--middlebox tests/mutants/monitor_mutants.py:ClassName``.

``_HookedMonitor`` is ``ftmbctl.middleboxes.monitor.Monitor.process`` split into hooks at the
places the mutants change; with its own hooks it is the built-in monitor, byte for byte and
access for access.

| class                     | bug                                          | verify must report                   |
|---------------------------|----------------------------------------------|--------------------------------------|
| MonitorDirectWrite        | non-IP frames counted into protocols.data    | logged-prefix-state on ``protocols`` |
| MonitorWallClock          | talkers stamped with time.time()             | logged-prefix-state on ``talkers``   |
| MonitorRandomSample       | frames sampled to a collector with random    | output-commit                        |
| MonitorUnsnapshottedFlows | flow table on self, new flows counted shared | logged-prefix-state on ``protocols`` |

``MonitorRandomSkip`` is not one of the four: an unlogged draw that decides *whether* a shared
access happens; it documents a gap in how verify reports such a divergence.
"""

from __future__ import annotations

import random
import struct
import time
from typing import Any

from ftmbctl.middlebox import Packet
from ftmbctl.middleboxes.monitor import _NAMES, Monitor, _count, _talk
from ftmbctl.middleboxes.packets import MALFORMED, NON_IP, address_text, internet_checksum, ip_fields
from ftmbctl.shared import MISSING


class _HookedMonitor(Monitor):
    """The built-in monitor with hooks: ``_count_flow``, ``_count_protocol``, ``_talk_fn``, ``_emit``.

    Not a mutant: the hooks below are the built-in's own code.
    """

    name = "monitor-hooked"

    # ---- hooks (the built-in's behaviour) ----
    def _count_flow(self, ctx: Any, flow: tuple[Any, ...], length: int) -> bool:
        """Count the frame in its queue-local flow entry; True when the flow is new."""
        flows = ctx.local["flows"]
        counts = flows.get(flow)
        if counts is None:
            flows[flow] = [1, length]
            return True
        counts[0] += 1
        counts[1] += length
        return False

    def _count_protocol(self, ctx: Any, name: str, length: int, new_flow: bool) -> None:
        ctx.update(self.protocols, name, _count(length))

    def _talk_fn(self, source: str, length: int) -> Any:
        return _talk(source, length, self._capacity)

    def _emit(self, ctx: Any, pkt: Packet) -> None:
        ctx.emit(pkt.data)

    # ---- Monitor.process, with the hooks called where the mutants change it ----
    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        length = len(data)
        version, proto, src, dst, sport, dport = ip_fields(pkt.linktype, data)
        if version == NON_IP:
            self._count_protocol(ctx, "non-ip", length, False)
        elif version == MALFORMED:
            self._count_protocol(ctx, "malformed", length, False)
        else:
            source = address_text(src)
            if (src, sport) <= (dst, dport):
                flow = (proto, source, sport, address_text(dst), dport)
            else:
                flow = (proto, address_text(dst), dport, source, sport)
            # (The built-in updates ``protocols`` before its flow table: the flow table is not
            # shared, so the order of shared accesses is the same.)
            new_flow = self._count_flow(ctx, flow, length)
            self._count_protocol(ctx, _NAMES.get((version, proto), "other-ip"), length, new_flow)
            ctx.apply(self.talkers, self._talk_fn(source, length))
        self._emit(ctx, pkt)


# ------------------------------------------------------------------------------------------------
# 1. a shared write that bypasses the context
# ------------------------------------------------------------------------------------------------

class MonitorDirectWrite(_HookedMonitor):
    """BUG (shared write bypassing the context): frames without IP (ARP, ...) are counted by
    writing ``self.protocols.data["non-ip"]`` directly (a "cheap path" for frames that have no
    flow) instead of ``ctx.update(self.protocols, ...)``.

    The write takes no lock, bumps no access counter, logs no PAL and leaves the map's incremental
    digest as it was. The digests of the logged ``protocols`` accesses therefore never include the
    ``non-ip`` entry, while every snapshot holds it. A replay from a snapshot taken after the first
    non-IP frame (the small trace starts with five ARP frames) finds another digest at the very
    first ``protocols`` access after the snapshot.

    verify must report: ``logged-prefix-state`` on variable ``protocols``, first divergent packet =
    the packet of the first ``protocols`` access after the restored snapshot; likely cause names
    "a shared write that bypasses the context".
    """

    name = "monitor-direct-write"

    def _count_protocol(self, ctx: Any, name: str, length: int, new_flow: bool) -> None:
        if name != "non-ip":
            return super()._count_protocol(ctx, name, length, new_flow)
        data = self.protocols.data  # BUG: bypasses ctx (no lock, no PAL, no digest update)
        old = data.get(name)
        data[name] = (1, length) if old is None else (old[0] + 1, old[1] + length)


# ------------------------------------------------------------------------------------------------
# 2. a wall-clock read that bypasses ctx.clock()
# ------------------------------------------------------------------------------------------------

def _talk_seen(source: str, length: int, capacity: int, now: float):
    """``monitor._talk`` with a fourth field: when the talker was last seen."""
    def fn(view: Any) -> None:
        old = view.get(source)
        if old is not None:
            view.put(source, (old[0] + length, old[1] + 1, old[2], now))
        elif len(view) < capacity:
            view.put(source, (length, 1, 0, now))
        else:
            victim, entry = min(view.items(), key=lambda item: (item[1][0], item[0]))
            view.pop(victim)
            view.put(source, (entry[0] + length, 1, entry[0], now))
    return fn


class MonitorWallClock(_HookedMonitor):
    """BUG (unlogged wall clock): every talker entry remembers when the talker was last seen,
    ``(bytes, packets, overcount, last_seen)``, with ``last_seen`` from ``time.time()`` instead of
    ``ctx.clock()``. The value is not logged, so a replay stores another one.

    Every IP frame writes its talker's ``last_seen``, so the first ``talkers`` access after the
    restored snapshot already stores another value than the record did.

    verify must report: ``logged-prefix-state`` on variable ``talkers``, first divergent packet =
    the packet of the first ``talkers`` access after the restored snapshot; likely cause names
    "unlogged non-determinism".
    """

    name = "monitor-wall-clock"

    def _talk_fn(self, source: str, length: int) -> Any:
        return _talk_seen(source, length, self._capacity, time.time())  # BUG: not ctx.clock()

    def top(self, talkers: dict[str, tuple[Any, ...]]) -> list[tuple[str, int, int, int]]:
        return super().top({addr: entry[:3] for addr, entry in talkers.items()})


# ------------------------------------------------------------------------------------------------
# 3. a random draw that bypasses ctx.random()
# ------------------------------------------------------------------------------------------------

COLLECTOR_PORT = 6343  # sFlow
_COLLECTOR_IP = bytes((192, 0, 2, 250))
_AGENT_IP = bytes((10, 0, 0, 1))
_ETH = bytes.fromhex("0201c00002fa") + bytes.fromhex("02000a000001") + b"\x08\x00"
_SAMPLE_HEADER = struct.Struct("!4sIII")  # magic, sample id, input packet id, frame length


def sample_datagram(pkt: Packet, sample_id: int) -> bytes:
    """The frame sent to the collector for a sampled frame: Ethernet/IPv4/UDP to port 6343, with
    the sample id, the input packet id, the frame length and the first 64 bytes of the frame."""
    payload = _SAMPLE_HEADER.pack(b"SMPL", sample_id, pkt.id & 0xFFFFFFFF, len(pkt.data)) + pkt.data[:64]
    udp = struct.pack("!HHHH", COLLECTOR_PORT, COLLECTOR_PORT, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), pkt.id & 0xFFFF, 0, 64, 17, 0,
                               _AGENT_IP, _COLLECTOR_IP))
    struct.pack_into("!H", ip, 10, internet_checksum(bytes(ip)))
    return _ETH + bytes(ip) + udp


class MonitorRandomSample(_HookedMonitor):
    """BUG (unlogged randomness): sFlow-style random packet sampling. Every frame draws a 32-bit
    value with Python's ``random.getrandbits`` instead of ``ctx.random()``; one frame in four (the
    value's two low bits are 0) is also sent to a collector, and the value is the sample's id.

    The draw is not logged, so a replay draws another value: a sampled frame whose collector copy
    (output index 1) was released before the crash is either not sampled again (the output is
    missing) or sampled with another sample id (different bytes).

    verify must report: ``output-commit``, first divergent packet = the smallest id among the
    sampled frames after the restored snapshot whose collector copy was released before the crash.
    """

    name = "monitor-random-sample"

    def _emit(self, ctx: Any, pkt: Packet) -> None:
        ctx.emit(pkt.data)
        draw = random.getrandbits(32)  # BUG: not ctx.random(): not logged
        if draw & 3 == 0:
            ctx.emit(sample_datagram(pkt, draw))


# ------------------------------------------------------------------------------------------------
# 4. state left out of snapshots
# ------------------------------------------------------------------------------------------------

def _count_with_flows(length: int, new_flow: bool):
    def fn(old: Any) -> Any:
        if old is MISSING:
            return (1, length, 1 if new_flow else 0)
        return (old[0] + 1, old[1] + length, old[2] + (1 if new_flow else 0))
    return fn


class MonitorUnsnapshottedFlows(_HookedMonitor):
    """BUG (state missing from snapshots): the per-flow table lives in ``self._flows``, a dict on
    the middlebox object, instead of ``ctx.local`` (the flow hash pins a flow to one queue, so the
    author saw no need for a context). The monitor also counts flows per protocol in the shared
    ``protocols`` map, ``(packets, bytes, flows)``, with "new flow" decided by that table.

    Snapshots do not hold the table and a recovery starts with it empty: the first frame after the
    restored snapshot of a flow that was already seen before it counts as a new flow again.

    verify must report: ``logged-prefix-state`` on variable ``protocols``, first divergent packet =
    the first packet (in the recorded order of ``protocols``) after the snapshot that is the first
    frame after the snapshot of a flow seen before it; likely cause names "state missing from
    snapshots".
    """

    name = "monitor-unsnapshotted-flows"

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self._flows: dict[tuple[Any, ...], list[int]] = {}  # BUG: on self, not in ctx.local

    def new_local_state(self) -> dict[str, Any]:
        return {}

    def _count_flow(self, ctx: Any, flow: tuple[Any, ...], length: int) -> bool:
        counts = self._flows.get(flow)
        if counts is None:
            self._flows[flow] = [1, length]
            return True
        counts[0] += 1
        counts[1] += length
        return False

    def _count_protocol(self, ctx: Any, name: str, length: int, new_flow: bool) -> None:
        ctx.update(self.protocols, name, _count_with_flows(length, new_flow))


# ------------------------------------------------------------------------------------------------
# Not one of the four: a variant of bug 3 that changes which shared accesses a frame makes. It
# exposes a gap in how verify *reports* such a divergence (tests/test_mutants.py, xfail).
# ------------------------------------------------------------------------------------------------

class MonitorRandomSkip(_HookedMonitor):
    """BUG (unlogged randomness that decides whether a shared access happens): the talkers table
    is updated for a random half of the IP frames only (``random.random() < 0.5``, not
    ``ctx.random()``), to halve the lock traffic on it.

    A replay draws other values, so it both makes ``talkers`` accesses that the log does not hold
    and skips accesses that it does hold. verify must report ``logged-prefix-state`` (an order
    divergence) at the first packet whose access pattern differs: the packet that made an extra
    access, or the packet whose logged access was skipped.
    """

    name = "monitor-random-skip"

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        version, proto, src, dst, sport, dport = ip_fields(pkt.linktype, data)
        if version in (NON_IP, MALFORMED):
            ctx.update(self.protocols, "non-ip" if version == NON_IP else "malformed", _count(len(data)))
        else:
            ctx.update(self.protocols, _NAMES.get((version, proto), "other-ip"), _count(len(data)))
            if random.random() < 0.5:  # BUG: not ctx.random(): not logged
                ctx.apply(self.talkers, self._talk_fn(address_text(src), len(data)))
        ctx.emit(data)
