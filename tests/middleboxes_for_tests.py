"""Small middleboxes for the record tests, loaded as ``<this file>:ClassName``.

``Mixed`` touches every kind of shared variable on every packet (a counter, a sharded map and a
plain map), reads the clock and the RNG, and emits 0, 1 or 2 outputs chosen by the packet's bytes.
Its outputs depend only on the packet, and its final state only on the set of packets (every
update commutes), so any schedule must give the same outputs and the same final state as a direct
run, while the PAL order still differs between schedules (every queue hits ``packets``).
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from ftmbctl.middlebox import Middlebox, Option, Packet
from ftmbctl.shared import MISSING

HERE = Path(__file__).resolve()


def spec(class_name: str) -> str:
    """The ``--middlebox`` spec of a class in this file."""
    return f"{HERE}:{class_name}"


def output_count(pkt: Packet) -> int:
    return zlib.crc32(pkt.data) % 3


def output_bytes(pkt: Packet, index: int) -> bytes:
    if index == 0:
        return pkt.data
    return b"copy" + pkt.id.to_bytes(4, "little") + bytes(reversed(pkt.data[:40]))


def _bump(old: Any) -> Any:
    return 1 if old is MISSING else old + 1


class Mixed(Middlebox):
    name = "mixed"
    summary = "counter + sharded map + map per packet, clock and random, 0-2 outputs"

    def declare(self, shared: Any) -> None:
        self.packets = shared.counter("packets")
        self.flows = shared.sharded_map("flows", 4)
        self.sizes = shared.map("sizes")

    def new_local_state(self) -> dict[str, Any]:
        return {"seen": 0, "last_clock_ns": 0}

    def process(self, ctx: Any, pkt: Packet) -> None:
        ctx.local["seen"] += 1
        ctx.add(self.packets, 1)
        ctx.add(self.flows, 1, key=zlib.crc32(pkt.data[:34]) % 32)
        ctx.update(self.sizes, len(pkt.data) % 8, _bump)
        ctx.local["last_clock_ns"] = int(ctx.clock() * 1e9)
        ctx.random()
        for i in range(output_count(pkt)):
            ctx.emit(output_bytes(pkt, i))


class Raiser(Mixed):
    """``Mixed`` with a bug: raises on packet ``at``."""

    name = "raiser"
    options = {"at": Option(37, int, "the packet id that raises")}

    def process(self, ctx: Any, pkt: Packet) -> None:
        if pkt.id == self.opts["at"]:
            raise ValueError(f"boom on {pkt.id}")
        super().process(ctx, pkt)


class RaiserAfterOthers(Mixed):
    """``Mixed`` that raises on packet ``at``, but only once another queue has processed a later
    packet (threads scheduler only: it waits for them). The error report must still name ``at``.

    The event is coordination for the test, not middlebox state: it never reaches a snapshot.
    """

    name = "raiser-after-others"
    options = {"at": Option(37, int, "the packet id that raises")}

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self.later_seen = threading.Event()

    def process(self, ctx: Any, pkt: Packet) -> None:
        at = self.opts["at"]
        if pkt.id == at:
            self.later_seen.wait(5.0)
            raise ValueError(f"boom on {pkt.id}")
        super().process(ctx, pkt)
        if pkt.id > at:
            self.later_seen.set()


class _PreemptedAfterUnlock:
    """A lock that, once, gives up the CPU right after it is released (as an OS preemption can).

    It widens the window between the end of a shared access's critical section and whatever the
    engine still does for that access afterwards, without changing what any access computes.
    """

    def __init__(self, after: int, pause_s: float, var: Any) -> None:
        self._lock = threading.Lock()
        self._after = after
        self._pause_s = pause_s
        self._var = var
        self.fired = False

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)
        if not self.fired and self._var.count >= self._after and threading.current_thread() is not threading.main_thread():
            self.fired = True
            time.sleep(self._pause_s)


class PreemptedMixed(Mixed):
    """``Mixed`` whose ``packets`` counter lock pauses its releasing thread once, after access 20."""

    name = "preempted-mixed"

    def declare(self, shared: Any) -> None:
        super().declare(shared)
        self.packets.lock = _PreemptedAfterUnlock(20, 0.3, self.packets)


class ReadOrWrite(Middlebox):
    """Touches one counter per packet the way ``FTMBCTL_TEST_ACCESS`` says: ``read`` it, ``add1``
    or ``add2``. Recording with one and recovering with another is a middlebox whose replay makes
    the logged access but leaves another value than the log's digest says."""

    name = "read-or-write"
    summary = "one counter per packet, read or written as an environment variable says"

    def declare(self, shared: Any) -> None:
        self.hits = shared.counter("hits")

    def process(self, ctx: Any, pkt: Packet) -> None:
        how = os.environ.get("FTMBCTL_TEST_ACCESS", "read")
        if how == "read":
            ctx.read(self.hits)
        else:
            ctx.add(self.hits, 1 if how == "add1" else 2)
        ctx.emit(pkt.data)
