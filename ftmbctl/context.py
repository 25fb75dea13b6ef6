"""The context a middlebox talks to: shared accesses, non-determinism and outputs.

``Context`` holds the API every middlebox uses. Subclasses differ only in three hooks:
``_access`` (one shared access), ``_nondet`` (one non-deterministic value) and what happens to
the outputs. ``VanillaContext`` is the un-instrumented baseline; the record context in
record.py logs PALs and non-deterministic values; the replay context forces recorded order.
"""

from __future__ import annotations

import random as _random
import time
from typing import Any, Callable

from ftmbctl.middlebox import Packet
from ftmbctl.queuelog import ND_CLOCK, ND_RANDOM  # the kinds a queue log stores
from ftmbctl.shared import MISSING, Counter, Map, ShardedMap, SharedVar

# Alerts travel as outputs with this link type (LINKTYPE_USER0, which no capture uses for packets).
ALERT_LINKTYPE = 147


def _resolve(var: Any, key: Any) -> SharedVar:
    if isinstance(var, ShardedMap):
        return var.shard_for(key)
    return var


class Context:
    """What ``Middlebox.process`` receives. One per queue, reused for every packet."""

    def __init__(self, queue: int, local: dict[str, Any]) -> None:
        self.queue = queue
        self.local = local  # queue-local state: the middlebox's own, part of every snapshot
        self.packet: Packet | None = None
        self.outputs: list[tuple[int, bytes]] = []

    # ---- shared accesses: each is exactly one access to one variable ----
    def read(self, var: Counter | Map | ShardedMap, key: Any = MISSING, default: Any = None) -> Any:
        """A counter's value, or a map entry (``default`` when absent)."""
        if key is MISSING:
            return self._access(var, Counter.op_read, None, None)
        return self._access(_resolve(var, key), Map.op_get, key, default)

    get = read

    def add(self, var: Counter | Map | ShardedMap, delta: Any = 1, key: Any = MISSING) -> Any:
        """Add to a counter (or to a map entry, starting from 0); returns the new value."""
        if key is MISSING:
            return self._access(var, Counter.op_add, delta, None)
        return self._access(_resolve(var, key), Map.op_add, key, delta)

    def set(self, counter: Counter, value: int) -> int:
        """Overwrite a counter; returns the old value."""
        return self._access(counter, Counter.op_set, value, None)

    def put(self, var: Map | ShardedMap, key: Any, value: Any) -> Any:
        """Store ``value`` under ``key``; returns the old value or None."""
        return self._access(_resolve(var, key), Map.op_put, key, value)

    def pop(self, var: Map | ShardedMap, key: Any, default: Any = None) -> Any:
        """Remove ``key``; returns its value or ``default``."""
        return self._access(_resolve(var, key), Map.op_pop, key, default)

    def contains(self, var: Map | ShardedMap, key: Any) -> bool:
        return self._access(_resolve(var, key), Map.op_contains, key, None)

    def update(self, var: Map | ShardedMap, key: Any, fn: Callable[[Any], Any]) -> Any:
        """Atomic read-modify-write of one entry: ``fn(old or MISSING) -> new`` (MISSING deletes)."""
        return self._access(_resolve(var, key), Map.op_update, key, fn)

    def apply(self, var: Map, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(view)`` on a whole (unsharded) map as one access, e.g. to allocate from a pool.

        ``fn`` must be deterministic: it sees only the map, and the same map gives the same result.
        """
        if not isinstance(var, Map):
            raise TypeError("ctx.apply takes a Map (a sharded map has no whole-map view)")
        return self._access(var, Map.op_apply, fn, None)

    # ---- non-determinism: logged in record, returned from the log in replay ----
    def clock(self) -> float:
        """Wall-clock time in seconds (simulated under the chaos scheduler)."""
        return self._nondet(ND_CLOCK) / 1e9

    def clock_ns(self) -> int:
        return self._nondet(ND_CLOCK)

    def random(self) -> float:
        """A float in [0, 1)."""
        return self._nondet(ND_RANDOM) / 18446744073709551616.0

    def randint(self, low: int, high: int) -> int:
        """An int in [low, high] from one logged random draw."""
        return low + self._nondet(ND_RANDOM) % (high - low + 1)

    # ---- outputs ----
    def emit(self, data: bytes, linktype: int | None = None) -> None:
        """Send a packet out. Its output id is (input id, number of earlier emits for this input)."""
        assert self.packet is not None
        self.outputs.append((self.packet.linktype if linktype is None else linktype, bytes(data)))

    def alert(self, message: str) -> None:
        """Raise an alert (an IDS finding, say). An alert is a promise to the outside world like an
        output packet: it is held and released by the same rule, stored in output.log as a record
        with link type ALERT_LINKTYPE holding the UTF-8 text, and verified like an output."""
        self.emit(message.encode("utf-8", "replace"), ALERT_LINKTYPE)

    # ---- hooks ----
    def _access(self, var: SharedVar, op: Callable[..., Any], a: Any, b: Any) -> Any:
        raise NotImplementedError

    def _nondet(self, kind: int) -> int:
        raise NotImplementedError


class LiveSource:
    """Where live non-deterministic values come from, one per queue.

    Under the chaos scheduler the clock is simulated per queue: the packet's pcap timestamp plus
    a seeded jitter of up to 50 µs, drawn from the queue's RNG like ``random()``. The RNG is
    reseeded from (seed, snapshot number, queue) at every snapshot, so the n-th value a queue
    draws after a snapshot is the same in every run that gets there: a replay that consumes the
    logged values in order continues with exactly the values the failure-free run had. Under the
    threads scheduler the clock is the wall clock.
    """

    JITTER_NS = 50_000

    def __init__(self, seed: int, wall_clock: bool = False) -> None:
        self.rng = _random.Random(seed)
        self.wall_clock = wall_clock

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)

    def value(self, kind: int, ts_ns: int) -> int:
        if kind == ND_CLOCK:
            if self.wall_clock:
                return time.time_ns()
            return ts_ns + self.rng.randrange(self.JITTER_NS)
        return self.rng.getrandbits(64)


class VanillaContext(Context):
    """The un-instrumented baseline: locks and operations, nothing logged."""

    def __init__(self, queue: int, local: dict[str, Any], live: LiveSource,
                 sched_point: Callable[[], None] | None = None) -> None:
        super().__init__(queue, local)
        self.live = live
        self._sched_point = sched_point

    def _access(self, var: SharedVar, op: Callable[..., Any], a: Any, b: Any) -> Any:
        if self._sched_point is not None:
            self._sched_point()
        with var.lock:
            result = op(var, a, b)
            var.count += 1
        return result

    def _nondet(self, kind: int) -> int:
        return self.live.value(kind, self.packet.ts_ns)
