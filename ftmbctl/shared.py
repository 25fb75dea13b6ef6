"""Shared state: the variables a middlebox declares up front.

Every access to a shared variable goes through the context, which takes the variable's lock,
applies exactly one operation (a method below whose name starts with ``op_``), bumps the
variable's access counter and appends a PAL carrying the digest of the value after the access.
The digest is kept incrementally: a counter's digest is a mix of its value, a map's is the sum
(mod 2**64) of a hash of every entry, so one access costs O(1) whatever the size of the map.

Values stored in shared variables must be None, bool, int, float, str, bytes or tuples of those:
their ``repr`` is canonical, which is what the digest hashes (see hashing.py).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ftmbctl.errors import UsageError
from ftmbctl.hashing import GOLDEN, MASK32, MASK64, fold32, key_hash32, mix_int, value_hash

MISSING: Any = object()


class SharedVar:
    """One lockable, counted, digested variable. ``var_id`` is its index in the PAL logs."""

    kind = "var"
    __slots__ = ("name", "var_id", "lock", "count")

    def __init__(self, name: str, var_id: int) -> None:
        self.name = name
        self.var_id = var_id
        self.lock = threading.Lock()
        self.count = 0  # accesses so far: the sequence number of the last access

    def digest64(self) -> int:
        raise NotImplementedError

    def digest32(self) -> int:
        return fold32(self.digest64())

    def dump(self) -> Any:
        """The value as a codec-encodable object (for snapshots)."""
        raise NotImplementedError

    def load(self, value: Any, count: int) -> None:
        raise NotImplementedError


class Counter(SharedVar):
    """An integer. Operations: read, add, set."""

    kind = "counter"
    __slots__ = ("value",)

    def __init__(self, name: str, var_id: int, initial: int = 0) -> None:
        super().__init__(name, var_id)
        self.value = initial

    def digest64(self) -> int:
        return mix_int(self.value) << 32 | mix_int(self.value ^ 0x5BD1E995)

    def digest32(self) -> int:  # mix_int, inlined: taken twice per access
        return (((self.value & MASK64) * GOLDEN) & MASK64) >> 32

    def op_read(self, _a: Any, _b: Any) -> int:
        return self.value

    def op_add(self, delta: int, _b: Any) -> int:
        self.value += delta
        return self.value

    def op_set(self, value: int, _b: Any) -> int:
        old, self.value = self.value, value
        return old

    def dump(self) -> Any:
        return self.value

    def load(self, value: Any, count: int) -> None:
        self.value = value
        self.count = count


class Map(SharedVar):
    """A dict with an additive digest over its entries. One lock for the whole map."""

    kind = "map"
    __slots__ = ("data", "hashes", "digest")

    def __init__(self, name: str, var_id: int) -> None:
        super().__init__(name, var_id)
        self.data: dict[Any, Any] = {}
        self.hashes: dict[Any, int] = {}  # each entry's hash, so removing it subtracts what was added
        self.digest = 0

    def digest64(self) -> int:
        return self.digest

    def digest32(self) -> int:  # fold32, inlined: taken twice per access
        digest = self.digest
        return ((digest >> 32) ^ digest) & MASK32

    # -- the single place where entries change, so the digest can never drift. Keys that are equal
    # but print differently (1, 1.0, True) would hash differently: an overwritten entry is removed
    # and inserted again, so the stored key is always the one its hash was computed from. --
    def _set(self, key: Any, value: Any) -> None:
        data, hashes = self.data, self.hashes
        entry_hash = value_hash((key, value))
        delta = entry_hash
        old = hashes.pop(key, None)
        if old is not None:
            del data[key]
            delta -= old
        data[key] = value
        hashes[key] = entry_hash
        self.digest = (self.digest + delta) & MASK64

    def _del(self, key: Any) -> Any:
        value = self.data.pop(key)
        self.digest = (self.digest - self.hashes.pop(key)) & MASK64
        return value

    def op_get(self, key: Any, default: Any) -> Any:
        return self.data.get(key, default)

    def op_contains(self, key: Any, _b: Any) -> bool:
        return key in self.data

    def op_len(self, _a: Any, _b: Any) -> int:
        return len(self.data)

    def op_put(self, key: Any, value: Any) -> Any:
        old = self.data.get(key)
        self._set(key, value)
        return old

    def op_pop(self, key: Any, default: Any) -> Any:
        if key in self.data:
            return self._del(key)
        return default

    def op_add(self, key: Any, delta: Any) -> Any:
        new = self.data.get(key, 0) + delta
        self._set(key, new)
        return new

    def op_update(self, key: Any, fn: Callable[[Any], Any]) -> Any:
        """Read-modify-write of one entry: ``fn(old or MISSING) -> new``; MISSING deletes."""
        new = fn(self.data.get(key, MISSING))
        if new is MISSING:
            if key in self.data:
                self._del(key)
        else:
            self._set(key, new)
        return new

    def op_apply(self, fn: Callable[["MapView"], Any], _b: Any) -> Any:
        """Run ``fn`` on a view of the whole map (e.g. allocate a free port) as one access."""
        return fn(MapView(self))

    def dump(self) -> Any:
        return dict(self.data)

    def load(self, value: Any, count: int) -> None:
        self.data = {}
        self.hashes = {}
        self.digest = 0
        for key, item in value.items():
            self._set(key, item)
        self.count = count


class MapView:
    """What ``ctx.apply`` hands to its function: reads and writes that keep the digest right."""

    __slots__ = ("_map",)

    def __init__(self, target: Map) -> None:
        self._map = target

    def get(self, key: Any, default: Any = None) -> Any:
        return self._map.data.get(key, default)

    def __contains__(self, key: Any) -> bool:
        return key in self._map.data

    def __len__(self) -> int:
        return len(self._map.data)

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._map.data.items())

    def put(self, key: Any, value: Any) -> None:
        self._map._set(key, value)

    def pop(self, key: Any, default: Any = None) -> Any:
        return self._map._del(key) if key in self._map.data else default


class ShardedMap:
    """A map split into shards, each a ``Map`` with its own lock, counter and PAL variable id."""

    kind = "sharded_map"
    __slots__ = ("name", "shards")

    def __init__(self, name: str, shards: list[Map]) -> None:
        self.name = name
        self.shards = shards

    def shard_for(self, key: Any) -> Map:
        return self.shards[key_hash32(key) % len(self.shards)]


class SharedState:
    """The declared shared variables of one middlebox, in declaration order.

    A middlebox declares its variables in ``declare(shared)``; the order fixes every variable id,
    so the same middlebox with the same options declares the same ids in record and in replay.
    """

    def __init__(self) -> None:
        self.variables: list[SharedVar] = []
        self._names: set[str] = set()

    def _claim(self, name: str) -> int:
        if name in self._names:
            raise UsageError(f"shared variable {name!r} is declared twice")
        if len(self.variables) >= 0xFFFF:
            raise UsageError("a middlebox may declare at most 65535 shared variables (shards count)")
        self._names.add(name)
        return len(self.variables)

    def counter(self, name: str, initial: int = 0) -> Counter:
        var = Counter(name, self._claim(name), initial)
        self.variables.append(var)
        return var

    def map(self, name: str) -> Map:
        var = Map(name, self._claim(name))
        self.variables.append(var)
        return var

    def sharded_map(self, name: str, shards: int = 16) -> ShardedMap:
        if shards < 1:
            raise UsageError(f"sharded map {name!r} needs at least one shard")
        parts = []
        for i in range(shards):
            part = Map(f"{name}[{i}]", self._claim(f"{name}[{i}]"))
            self.variables.append(part)
            parts.append(part)
        return ShardedMap(name, parts)

    def by_id(self, var_id: int) -> SharedVar:
        return self.variables[var_id]

    def dump(self) -> list[Any]:
        """Every variable as ``(name, kind, count, value)``, in id order."""
        return [(v.name, v.kind, v.count, v.dump()) for v in self.variables]

    def load(self, dumped: list[Any]) -> None:
        if len(dumped) != len(self.variables):
            raise ValueError(f"snapshot holds {len(dumped)} shared variables, middlebox declares {len(self.variables)}")
        for var, (name, kind, count, value) in zip(self.variables, dumped):
            if name != var.name or kind != var.kind:
                raise ValueError(f"snapshot variable {name!r} ({kind}) does not match declared {var.name!r} ({var.kind})")
            var.load(value, count)
