"""Middleboxes that keep unusual values as state, for ``tests/test_snapshot_values.py``. Load with
``--middlebox tests/mutants/state_mutants.py:ClassName``.

| class              | keeps                                                        | record must               |
|--------------------|--------------------------------------------------------------|---------------------------|
| ExactLocalState    | a bytearray per flow, a set, a frozenset, tuples, a big int, | succeed; every recovery   |
|                    | -0.0 and bools in ``ctx.local``, and uses them by type       | replays them consistently |
| EnumInLocalState   | an ``IntEnum`` member in ``ctx.local['proto']``              | exit 3 at snapshot 1      |
| ObjectInLocalState | an instance of a class, under a tuple key                    | exit 3 at snapshot 1      |
| ListInSharedMap    | a list put into the shared map ``last``                      | exit 3 on the first put   |

``ExactLocalState`` only works when a snapshot gives back each value with its type: after a
restore it extends a bytearray in place, adds to a set, concatenates tuples and tests ``is True``,
so a bytearray that came back as bytes (what snapshot format version 1 did) raises
``AttributeError`` in the first replayed packet.
"""

from __future__ import annotations

import enum
import zlib
from typing import Any

from ftmbctl.middlebox import Middlebox, Packet
from ftmbctl.shared import MISSING


def flow_key(pkt: Packet) -> tuple[str, int]:
    """A per-flow key from the IPv4 addresses (the queue hash keeps a flow on one queue)."""
    return ("flow", zlib.crc32(bytes(sorted(pkt.data[26:34]))) % 8)


def _bump(old: Any) -> Any:
    return 1 if old is MISSING else old + 1


class ExactLocalState(Middlebox):
    name = "exact-local-state"
    summary = "keeps a bytearray per flow and other exact types in ctx.local"

    def declare(self, shared: Any) -> None:
        self.packets = shared.counter("packets")
        self.last = shared.map("last")

    def new_local_state(self) -> dict[str, Any]:
        return {"buffers": {}, "lengths": set(), "kinds": frozenset(), "recent": (), "big": 1 << 70,
                "flip": False, "zero": -0.0, "nested": [{"deep": ((1, 2.5), [b"x", None])}]}

    def process(self, ctx: Any, pkt: Packet) -> None:
        local = ctx.local
        key = flow_key(pkt)
        buf = local["buffers"].get(key)
        if buf is None:
            buf = local["buffers"][key] = bytearray()
        buf.extend(pkt.data[-4:])  # bytes has no extend: a bytearray must come back as one
        local["lengths"].add(len(pkt.data) % 7)  # a set, not a frozenset
        local["kinds"] = local["kinds"] | {pkt.linktype}
        local["recent"] = local["recent"][-3:] + (len(pkt.data),)  # a list + tuple would raise
        local["big"] += 1
        local["flip"] = True if local["flip"] is False else False  # 0/1 would fail "is False"
        assert type(local["zero"]) is float and str(local["zero"]) == "-0.0"
        assert type(local["nested"][0]["deep"][1]) is list
        ctx.add(self.packets, 1)
        ctx.update(self.last, key, _bump)
        if len(buf) >= 16:
            ctx.emit(bytes(buf[:16]))
            del buf[:16]
        ctx.emit(pkt.data)


class Proto(enum.IntEnum):
    OTHER = 0
    TCP = 6
    UDP = 17


class EnumInLocalState(ExactLocalState):
    name = "enum-in-local-state"
    summary = "keeps an IntEnum member in ctx.local: refused at the first snapshot"

    def process(self, ctx: Any, pkt: Packet) -> None:
        proto = pkt.data[23] if len(pkt.data) > 23 else 0
        ctx.local["proto"] = Proto(proto) if proto in (6, 17) else Proto.OTHER
        super().process(ctx, pkt)


class Endpoint:
    def __init__(self, data: bytes) -> None:
        self.data = data


class ObjectInLocalState(ExactLocalState):
    name = "object-in-local-state"
    summary = "keeps an instance of a class in ctx.local: refused at the first snapshot"

    def process(self, ctx: Any, pkt: Packet) -> None:
        ctx.local["buffers"][("peer", 1)] = Endpoint(pkt.data[26:30])
        super().process(ctx, pkt)


class ListInSharedMap(ExactLocalState):
    name = "list-in-shared-map"
    summary = "puts a list into a shared map: refused at the access"

    def process(self, ctx: Any, pkt: Packet) -> None:
        ctx.put(self.last, ("sizes", 0), [len(pkt.data)])
        super().process(ctx, pkt)
