"""Middleboxes with bugs that only an exact verify catches (DESIGN §6 steps 5 and 7, §7).

Load with ``--middlebox tests/mutants/exactness_mutants.py:ClassName``. Each is a small
pass-through box: every frame leaves once, with a few bytes appended that carry what the bug
decides, so a wrong decision shows in the outputs of every packet it touches.

| class             | bug                                                        | verify must report            |
|-------------------|------------------------------------------------------------|-------------------------------|
| StrHashClass      | a class picked by ``hash()`` of a str (salted per process) | full-state / output-commit    |
| SetOrderClass     | a class picked by iterating a set of str                   | full-state / output-commit    |
| ModuleCounterTag  | a sequence number kept at module level, outside ctx        | every crash point that        |
|                   | (and so in the order the queues happened to run)           | recovers a packet, but a      |
|                   |                                                            | worker's first from the start |
| RaisesAfterRestore| state on ``self`` that a restore loses, then relied upon   | recovery-completes            |
| LoopsAfterRestore | the same, waited for in a loop that never ends             | recovery-completes (deadline) |
| SetOrderDeclare   | ``declare()`` iterates a set of str                         | recovery-completes (declare)  |

``CorrectClass`` does what the first two should: the same decision from a hash that is the same
in every process. It must give no alarm.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any

from ftmbctl.middlebox import Middlebox

CLASSES = ("af11", "af21", "af31", "af41", "cs1", "cs2", "ef", "be")


def _flow_key(data: bytes) -> str:
    return data[26:34].hex() if len(data) >= 34 else data[:8].hex()


class _Tagger(Middlebox):
    """Counts packets per class in a shared map and appends the class to each frame."""

    name = "tagger"
    summary = "appends a traffic class to every frame"

    def declare(self, shared: Any) -> None:
        self.per_class = shared.map("per_class")

    def new_local_state(self) -> dict[str, Any]:
        return {"seen": 0}

    def pick(self, key: str) -> str:
        raise NotImplementedError

    def process(self, ctx: Any, pkt: Any) -> None:
        ctx.local["seen"] += 1
        cls = self.pick(_flow_key(pkt.data))
        ctx.add(self.per_class, 1, key=cls)
        ctx.emit(pkt.data + cls.encode())


class CorrectClass(_Tagger):
    name = "correct-class"

    def pick(self, key: str) -> str:
        return CLASSES[zlib.crc32(key.encode()) % len(CLASSES)]


class StrHashClass(_Tagger):
    """BUG: ``hash()`` of a str is salted per process, so recovery picks other classes."""

    name = "str-hash-class"

    def pick(self, key: str) -> str:
        return CLASSES[hash(key) % len(CLASSES)]


class SetOrderClass(_Tagger):
    """BUG: the first member of a set of str depends on the salted hash of its members."""

    name = "set-order-class"

    def pick(self, key: str) -> str:
        candidates = {c for c in CLASSES if c[-1] != key[-1]} or set(CLASSES)
        return next(iter(candidates))


_SEQUENCE = itertools.count()  # BUG: module-level state, shared by every queue outside ctx


class ModuleCounterTag(Middlebox):
    """BUG: each frame is tagged with a module-level sequence number: not in snapshots, not
    logged, and advanced in whatever order the queues run. A recovery starts it wherever the
    process left it, so every recovered packet is tagged differently from the failure-free run."""

    name = "module-counter-tag"
    summary = "appends a module-level sequence number to every frame"

    def declare(self, shared: Any) -> None:
        self.total = shared.counter("total")

    def process(self, ctx: Any, pkt: Any) -> None:
        ctx.add(self.total, 1)
        ctx.emit(pkt.data + next(_SEQUENCE).to_bytes(4, "big"))


class RaisesAfterRestore(Middlebox):
    """BUG: ``self.started`` is set by the first packet and never reset; a recovery from a
    snapshot builds a new object, finds queue-local state that says packets were seen, and
    raises. From the initial state (no restore) it runs fine."""

    name = "raises-after-restore"
    summary = "keeps a flag on self that a restore loses"

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self.started = False

    def declare(self, shared: Any) -> None:
        self.total = shared.counter("total")

    def new_local_state(self) -> dict[str, Any]:
        return {"seen": 0}

    def process(self, ctx: Any, pkt: Any) -> None:
        if ctx.local["seen"] and not self.started:
            raise RuntimeError("packets were seen, but the start-up flag is not set")
        self.started = True
        ctx.local["seen"] += 1
        ctx.add(self.total, 1)
        ctx.emit(pkt.data)


class SetOrderDeclare(Middlebox):
    """BUG: one counter per class, declared in the order of a set of str: variable ids then
    depend on the process's hash seed."""

    name = "set-order-declare"
    summary = "declares its counters by iterating a set"

    def declare(self, shared: Any) -> None:
        self.counters = {name: shared.counter(name) for name in set(CLASSES)}

    def process(self, ctx: Any, pkt: Any) -> None:
        ctx.add(self.counters[CLASSES[len(pkt.data) % len(CLASSES)]], 1)
        ctx.emit(pkt.data)


class LoopsAfterRestore(RaisesAfterRestore):
    """BUG: where ``RaisesAfterRestore`` raises, this one waits for a flag that nothing will set."""

    name = "loops-after-restore"
    summary = "waits forever for a flag on self that a restore loses"

    def process(self, ctx: Any, pkt: Any) -> None:
        while ctx.local["seen"] and not self.started:
            pass
        super().process(ctx, pkt)
