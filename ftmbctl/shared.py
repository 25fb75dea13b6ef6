"""Shared state: the variables a middlebox declares up front.

Every access to a shared variable goes through the context, which takes the variable's lock,
applies exactly one operation (a method below whose name starts with ``op_``), bumps the
variable's access counter and appends a PAL carrying the digest of the value after the access.
The digest is kept incrementally: a counter's digest is a mix of its value, a map's is the sum
(mod 2**64) of a hash of every entry, so one access costs O(1) whatever the size of the map.

Keys and values stored in shared maps must be None, bool, int, float, str, bytes or tuples of
those: their ``repr`` is canonical, which is what the digest hashes (see hashing.py), and they
cannot change after they are stored. ``Map._set``, which every write goes through, refuses
anything else with a ``TypeError`` naming the variable and the key: a list kept in a map and
changed in place after ``ctx.read`` would change the map behind its lock, access count and digest,
and a frozenset's ``repr`` follows its iteration order, which differs between processes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ftmbctl.errors import MiddleboxError, UsageError
from ftmbctl.hashing import GOLDEN, MASK32, MASK64, fold32, key_hash32, mix_int, value_hash

MISSING: Any = object()

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})  # immutable, with a canonical repr
_PLAIN = "None, bool, int, float, str, bytes, and tuples of those"
_INSTEAD = {list: "a tuple instead", bytearray: "bytes instead", set: "a sorted tuple instead",
            dict: "a tuple of (key, value) pairs, or one map entry per key, instead",
            frozenset: "a sorted tuple instead: the digest hashes the repr, and a frozenset's repr "
                       "differs between processes"}


def _plain_tuple(value: tuple) -> bool:
    """Whether every item of a tuple is plain immutable data (the hot path: no path is built)."""
    for item in value:
        kind = type(item)
        if kind not in _SCALARS and (kind is not tuple or not _plain_tuple(item)):
            return False
    return True


def _mutable_part(value: Any, where: str) -> tuple[str, Any] | None:
    """``(where, part)``: the first part of ``value`` that is not plain immutable data, or None."""
    kind = type(value)
    if kind in _SCALARS:
        return None
    if kind is not tuple:
        return where, value
    for i, item in enumerate(value):
        if type(item) not in _SCALARS:
            found = _mutable_part(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _refuse(var: "Map", key: Any, found: tuple[str, Any]) -> TypeError:
    where, part = found
    kind = type(part)
    if kind.__module__ == "builtins":
        what = f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"
    else:
        what = f"an object of type {kind.__qualname__}"
    base = next((b for b in (int, float, str, bytes, tuple) if isinstance(part, b)), None)
    if kind in _INSTEAD:
        instead = _INSTEAD[kind]
    elif base is not None:
        what += f" (a subclass of {base.__name__})"
        instead = f"{base.__name__}(x) instead"
    else:
        instead = "its fields as a tuple instead"
    shown = repr(key)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    role = where.split("[", 1)[0]
    return TypeError(f"shared variable {var.name!r} key {shown}: the {where} is {what}, and shared map {role}s "
                     f"must be plain immutable data ({_PLAIN}); store {instead}")


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
    # and inserted again, so the stored key is always the one its hash was computed from.
    # Keys and values that are not plain immutable data are refused before anything changes. --
    def _set(self, key: Any, value: Any) -> Any:
        """Store ``value`` under ``key``; returns the value it replaces, or None."""
        kind = type(key)
        if kind not in _SCALARS and (kind is not tuple or not _plain_tuple(key)):
            raise self._refuse_key(key)
        kind = type(value)
        if kind not in _SCALARS and (kind is not tuple or not _plain_tuple(value)):
            raise _refuse(self, key, _mutable_part(value, "value"))
        data, hashes = self.data, self.hashes
        entry_hash = value_hash((key, value))
        delta = entry_hash
        old = hashes.pop(key, None)
        replaced = None
        if old is not None:
            replaced = data.pop(key)
            delta -= old
        data[key] = value
        hashes[key] = entry_hash
        self.digest = (self.digest + delta) & MASK64
        return replaced

    def _refuse_key(self, key: Any) -> TypeError:
        """The error for a key that is not plain immutable data (maybe not even hashable)."""
        found = _mutable_part(key, "key")
        return _refuse(self, key, found) if found is not None else TypeError(f"unhashable key {key!r}")

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
        return self._set(key, value)

    def op_pop(self, key: Any, default: Any) -> Any:
        if key in self.data:
            return self._del(key)
        return default

    def op_add(self, key: Any, delta: Any) -> Any:
        try:
            old = self.data.get(key, 0)
        except TypeError:
            raise self._refuse_key(key) from None
        new = old + delta
        self._set(key, new)
        return new

    def op_update(self, key: Any, fn: Callable[[Any], Any]) -> Any:
        """Read-modify-write of one entry: ``fn(old or MISSING) -> new``; MISSING deletes."""
        try:
            old = self.data.get(key, MISSING)
        except TypeError:
            raise self._refuse_key(key) from None
        new = fn(old)
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


def dumped_variables(dumped: list[Any]) -> list[list[Any]]:
    """``[id, name, kind]`` of each variable of a ``SharedState.dump()`` (as the manifest lists them)."""
    return [[i, var[0], var[1]] for i, var in enumerate(dumped)]


def check_declared(shared: SharedState, recorded: list[Any] | None, name: str) -> None:
    """The middlebox must declare the shared variables the run was recorded with: variable ids
    are positions in declaration order, so another declaration replays into other variables."""
    declared = [[v.var_id, v.name, v.kind] for v in shared.variables]
    if recorded is None or declared == recorded:
        return
    first = next((i for i, (a, b) in enumerate(zip(declared, recorded)) if a != b), min(len(declared), len(recorded)))
    now = declared[first][1] if first < len(declared) else "nothing"
    then = recorded[first][1] if first < len(recorded) else "nothing"
    raise MiddleboxError(f"middlebox {name!r} declares other shared variables than when the run was recorded "
                         f"(variable {first}: {now!r}, recorded {then!r}): declare() must be deterministic; "
                         "a likely cause is iterating a set or a dict built from one, hash() or randomness in "
                         "declare() (or the middlebox changed since the run was recorded)")
