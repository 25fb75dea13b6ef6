"""The built-in NAT with one classic FTMB bug per class. Load with
``--middlebox tests/mutants/nat_mutants.py:ClassName``.

``_HookedNat`` is ``ftmbctl.middleboxes.nat.Nat.process`` split into hooks at the places the
mutants change; with its own hooks it is the built-in NAT, byte for byte and access for access.

| class                  | bug                                           | verify must report                     |
|------------------------|-----------------------------------------------|----------------------------------------|
| NatDirectPoolWrite     | reply refresh writes ``ports.data`` directly  | logged-prefix-state on ``ports``       |
| NatWallClock           | ``time.time()`` instead of ``ctx.clock()``    | logged-prefix-state on ``ports``       |
| NatRandomPort          | port picked with ``random.randint``           | logged-prefix-state on ``ports``       |
| NatUnsnapshottedIpId   | per-flow IP ID counter kept on ``self``       | output-commit                          |
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

from ftmbctl.flowhash import ip_offset
from ftmbctl.middlebox import Packet
from ftmbctl.middleboxes.nat import (_IN_INSIDE, _IN_PUBLIC, _L4_HEADER, _OUT, ICMP, TCP, Nat, _alive,
                                     _allocator, _install, _forget, _refresh_any, _refresh_own, _release)
from ftmbctl.middleboxes.packets import U16, U32, csum_adjust, delta16, rewrite_ipv4
from ftmbctl.shared import MISSING


class _HookedNat(Nat):
    """The built-in NAT with hooks: ``_now``, ``_allocate``, ``_refresh_reply``, ``_finish_outbound``.

    Not a mutant: the hooks below are the built-in's own code.
    """

    name = "nat-hooked"

    # ---- hooks (the built-in's behaviour) ----
    def _now(self, ctx: Any) -> float:
        return ctx.clock()

    def _allocate(self, ctx: Any, proto: int, ip: str, port: int, now: float) -> Any:
        return ctx.apply(self.ports, _allocator(proto, ip, port, now, self._low, self._high, self._timeout))

    def _refresh_reply(self, ctx: Any, proto: int, seen: tuple[int, int], now: float) -> Any:
        return ctx.update(self.ports, (proto, seen[0]), _refresh_own(seen[1], now, self._timeout))

    def _finish_outbound(self, ctx: Any, frame: bytearray, pos: int, flow: tuple[Any, ...]) -> bytearray:
        return frame

    # ---- Nat.process, with the hooks called where the mutants change it ----
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
        elif dst >= 0xE0000000:
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
            if data[l4] != (0 if direction != _OUT else 8):
                return self._drop(ctx, "icmp_type")
            port_at = l4 + 4
        else:
            port_at = l4 if direction == _OUT else l4 + 2

        now = self._now(ctx)
        port = U16.unpack_from(data, port_at)[0]
        if direction == _OUT:
            may_create = proto != TCP or not self._syn_only or data[l4 + 13] & 0x12 == 0x02
            got = self._outbound(ctx, proto, socket.inet_ntoa(data[pos + 12:pos + 16]), port, now, may_create)
            if got.__class__ is str:
                return self._drop(ctx, got)
            frame = rewrite_ipv4(data, pos, pos + 12, src, self._pub_bytes, port_at, port, got, proto, l4)
            # The flow of the frame as it came in: (proto, inside address, outside address, ports or echo id).
            flow = (proto, src, dst, port if proto == ICMP else U32.unpack_from(data, l4)[0])
            ctx.emit(self._finish_outbound(ctx, frame, pos, flow))
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
        seen = ctx.get(self.mappings, (proto, socket.inet_ntoa(data[pos + 16:pos + 20]), port))
        if seen is None:
            return self._drop(ctx, "no_mapping")
        entry = self._refresh_reply(ctx, proto, seen, now)
        if not _alive(entry, seen[1], now, self._timeout):
            return self._drop(ctx, "no_mapping" if entry is MISSING or entry[3] != seen[1] else "expired")
        ctx.emit(data)
        ctx.add(self.translated_in)

    def _outbound(self, ctx: Any, proto: int, ip: str, port: int, now: float, may_create: bool) -> int | str:
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
            got = self._allocate(ctx, proto, ip, port, now)
            if got is None:
                return "pool_exhausted"
            public, serial, reclaimed = got
            mine = (public, serial)
            won = ctx.update(self.mappings, key, _install(seen, mine))
            if reclaimed is not None:
                ctx.update(self.mappings, (proto, reclaimed[0], reclaimed[1]), _forget((public, reclaimed[3])))
            if won == mine:
                return public
            ctx.update(self.ports, (proto, public), _release(serial))
            seen = won
        return "contention"


# ------------------------------------------------------------------------------------------------
# 1. a shared write that bypasses the context
# ------------------------------------------------------------------------------------------------

class NatDirectPoolWrite(_HookedNat):
    """BUG (shared write bypassing the context): a reply arriving for a translated flow refreshes
    its pool entry by reading and writing ``self.ports.data`` directly (a lock-free "fast path")
    instead of ``ctx.update(self.ports, ...)``.

    The write takes no lock, bumps no access counter, logs no PAL and does not update the map's
    incremental digest. So the digest that the logged ``ports`` accesses carry no longer matches
    the map's contents while some entry holds a value written behind the context's back (until a
    ``ctx`` write to that entry); every snapshot holds the contents. A replay from a snapshot,
    which computes the digest from the contents, finds another digest at the first ``ports``
    access after the snapshot. (From the initial state there is nothing to find: record and
    replay make the same unlogged writes, and the digests agree.)

    verify must report: ``logged-prefix-state`` on variable ``ports``, first divergent packet =
    the packet of the first ``ports`` access after the restored snapshot; likely cause names "a
    shared write that bypasses the context".
    """

    name = "nat-direct-pool-write"

    def _refresh_reply(self, ctx: Any, proto: int, seen: tuple[int, int], now: float) -> Any:
        key = (proto, seen[0])
        entry = self.ports.data.get(key, MISSING)  # BUG: bypasses ctx
        if entry is not MISSING and entry[3] == seen[1] and now - entry[2] <= self._timeout:
            entry = (entry[0], entry[1], max(entry[2], now), entry[3])
            self.ports.data[key] = entry  # BUG: bypasses ctx (no lock, no PAL, no digest update)
        return entry


# ------------------------------------------------------------------------------------------------
# 2. a wall-clock read that bypasses ctx.clock()
# ------------------------------------------------------------------------------------------------

class NatWallClock(_HookedNat):
    """BUG (unlogged wall clock): the NAT takes ``now`` from ``time.time()`` instead of
    ``ctx.clock()``, so the clock value is not in the log and a replay reads another (later) one.

    ``now`` becomes the ``last_seen`` of every pool entry it allocates or refreshes, so the first
    ``ports`` access after the restored snapshot that writes a time (an allocation, or a refresh
    of a live entry; not a lookup that finds nothing) stores another value than the record did.

    verify must report: ``logged-prefix-state`` on variable ``ports``, first divergent packet =
    the first packet (in the recorded order of ``ports``) after the snapshot whose ``ports``
    access writes the clock; likely cause names "unlogged non-determinism".
    """

    name = "nat-wall-clock"

    def _now(self, ctx: Any) -> float:
        return time.time()  # BUG: not ctx.clock(): not logged, another value in replay


# ------------------------------------------------------------------------------------------------
# 3. a random draw that bypasses ctx.random()
# ------------------------------------------------------------------------------------------------

def _allocator_from(proto: int, ip: str, port: int, now: float, low: int, high: int, timeout: float, start: int):
    """RFC 6056 "simple port randomization": the first absent or expired port from ``start`` on."""
    def fn(view: Any) -> Any:
        p = start
        for _ in range(high - low + 1):
            key = (proto, p)
            entry = view.get(key)
            if entry is None or now - entry[2] > timeout:
                serial = view.get("serial", 0) + 1
                view.put("serial", serial)
                view.put(key, (ip, port, now, serial))
                return p, serial, entry
            p = p + 1 if p < high else low
        return None
    return fn


class NatRandomPort(_HookedNat):
    """BUG (unlogged randomness): port randomization (RFC 6056) with the port drawn by Python's
    ``random.randint`` instead of ``ctx.randint``/``ctx.random()``. The draw is not logged, so a
    replay hands out another public port for the same inside endpoint.

    The allocation (one ``ctx.apply`` on ``ports``) stores the port, so the first allocation after
    the restored snapshot finds another ``ports`` digest; the translated frames carry the port, so
    outputs released before the crash come out different too.

    verify must report: ``logged-prefix-state`` on variable ``ports``, first divergent packet =
    the first packet (in the recorded order of ``ports``) after the snapshot that allocates a
    port; also ``output-commit`` where a translated frame of such a mapping had been released.
    """

    name = "nat-random-port"

    def _allocate(self, ctx: Any, proto: int, ip: str, port: int, now: float) -> Any:
        start = random.randint(self._low, self._high)  # BUG: not ctx.randint(): not logged
        return ctx.apply(self.ports, _allocator_from(proto, ip, port, now, self._low, self._high, self._timeout,
                                                     start))


# ------------------------------------------------------------------------------------------------
# 4. state left out of snapshots
# ------------------------------------------------------------------------------------------------

class NatUnsnapshottedIpId(_HookedNat):
    """BUG (state missing from snapshots): the NAT gives every translated flow its own sequence of
    IP identification values (1, 2, 3, ... so that the ids of different inside hosts behind the
    one public address never collide), but keeps the per-flow counters in ``self._ip_ids``, a dict
    on the middlebox object, instead of ``ctx.local``. Snapshots do not hold it; a recovery starts
    counting again from 1.

    The first outbound frame after the restored snapshot of a flow that had translated frames
    before it gets another IP ID (and IP checksum) than the released one.

    verify must report: ``output-commit`` ("released before the crash, but recovery regenerated
    different bytes"), first divergent packet = the smallest id among the released outputs of
    such flows after the snapshot. No shared variable is involved.
    """

    name = "nat-unsnapshotted-ip-id"

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self._ip_ids: dict[tuple[Any, ...], int] = {}  # BUG: per-flow state on self, not in ctx.local

    def _finish_outbound(self, ctx: Any, frame: bytearray, pos: int, flow: tuple[Any, ...]) -> bytearray:
        ident = self._ip_ids.get(flow, 0) + 1 & 0xFFFF
        self._ip_ids[flow] = ident
        old = U16.unpack_from(frame, pos + 4)[0]
        U16.pack_into(frame, pos + 4, ident)
        U16.pack_into(frame, pos + 10, csum_adjust(U16.unpack_from(frame, pos + 10)[0], delta16(old, ident)))
        return frame
