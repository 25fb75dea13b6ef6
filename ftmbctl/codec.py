"""A small, safe, deterministic binary encoding for snapshot contents.

No pickle: a snapshot may come from someone else, and decoding it must never run code. The
encoding covers what middlebox state may hold: None, bool, int, float, str, bytes, bytearray,
tuple, list, dict, set and frozenset, nested; each decodes as exactly the type it was (a bytearray
as a bytearray, a tuple as a tuple). Anything else, a subclass of those included (an IntEnum is
not an int here), is refused with ``UnstorableValue``, which says where the value sits. Sets are
written in the order of their encoded members, so a set's bytes do not depend on the process's
hash seed. (Dicts keep their insertion order, which a deterministic run reproduces; equal dicts
built in another order encode differently.) The grammar is specified in formats/snapshot.md.
"""

from __future__ import annotations

import struct
from typing import Any

_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
MAX_DEPTH = 64

# One tag byte per type.
T_NONE, T_TRUE, T_FALSE, T_INT, T_BIGINT, T_FLOAT = b"N", b"T", b"F", b"i", b"I", b"f"
T_STR, T_BYTES, T_TUPLE, T_LIST, T_DICT, T_SET, T_FROZENSET = b"s", b"b", b"t", b"l", b"d", b"e", b"E"
T_BYTEARRAY = b"B"  # since snapshot format version 2

PLAIN_TYPES = "None, bool, int, float, str, bytes, bytearray, and tuple, list, dict, set, frozenset of those"
_STORABLE_BASES = (int, float, str, bytes, bytearray, tuple, list, dict, set, frozenset)


class CodecError(ValueError):
    """Bytes that are not a valid encoding, with the offset where decoding stopped."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


class UnstorableValue(TypeError):
    """A value ``encode`` refuses, and where it sits in the encoded value.

    ``path`` lists the steps from the top-level value down to it: ``("index", i)`` into a list or
    tuple, ``("value", key)`` into a dict's value, ``("key", key)`` into a dict key itself,
    ``("member", m)`` into a set member. ``kind`` is the refused type, ``problem`` what is wrong
    with it and ``advice`` what to store instead. The path is collected while the exception
    unwinds through the encoder, so values that encode pay nothing for it.
    """

    def __init__(self, value: Any, problem: str, advice: str) -> None:
        super().__init__(problem)
        self.kind = type(value)
        self.problem = problem
        self.advice = advice
        self._node = value  # the object whose encoding failed, at the level being unwound
        self._steps: list[tuple[str, Any]] = []  # innermost first

    def _unwind(self, container: Any, step: tuple[str, Any]) -> None:
        self._steps.append(step)
        self._node = container

    @property
    def path(self) -> tuple[tuple[str, Any], ...]:
        return tuple(reversed(self._steps))

    def describe(self, where: str, steps: tuple[tuple[str, Any], ...], whole: str = "is") -> str:
        """``where`` + ``steps`` as text, then what is wrong and what to do, as one clause.
        ``whole`` is the verb when there are no steps: ``where`` "is" or "holds" the value."""
        verb = whole if not steps else "is" if steps[-1][0] in ("key", "member") else "holds"
        path = format_path(steps).lstrip()
        return f"{where} {path} {verb} {self.problem}; {self.advice}" if path else (
            f"{where} {verb} {self.problem}; {self.advice}")

    def __str__(self) -> str:
        path = self.path
        return self.describe("the value at" if path else "the value", path)


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_path(steps: tuple[tuple[str, Any], ...] | list[tuple[str, Any]]) -> str:
    """``[0]['flows'][('10.0.0.1', 80)]``-style text for a path of ``UnstorableValue``; a dict key
    or set member is written `` key K`` / `` member M``, and steps inside it follow ``item``."""
    parts = []
    inside = False  # the previous step entered a key or a member: say that what follows is in it
    shown = list(steps)
    if len(shown) > 12:  # a cycle or a very deep value: the start says where it is
        shown = shown[:10]
    for kind, at in shown:
        if kind in ("key", "member"):
            parts.append(f" {kind} {short_repr(at)}")
            inside = True
            continue
        text = f"[{at}]" if kind == "index" else f"[{short_repr(at)}]"
        parts.append(f" item {text}" if inside else text)
        inside = False
    if len(shown) < len(steps):
        parts.append("[...]")
    return "".join(parts)


def _refuse(value: Any) -> UnstorableValue:
    kind = type(value)
    if kind.__module__ == "builtins":
        what = f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"
    else:
        what = f"an object of type {kind.__qualname__}"
    if kind is memoryview:
        return UnstorableValue(value, what, "store bytes(x) or bytearray(x) instead")
    for base in _STORABLE_BASES:
        if issubclass(kind, base):
            return UnstorableValue(value, f"{what} (a subclass of {base.__name__})", f"store {base.__name__}(x) instead")
    return UnstorableValue(value, what, f"store plain data instead ({PLAIN_TYPES})")


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def encode(value: Any) -> bytes:
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnstorableValue(value, f"a {type(value).__name__} nested deeper than {MAX_DEPTH} containers",
                              "flatten it (a container that holds itself never ends)")
    kind = type(value)
    if value is None:
        out += T_NONE
    elif kind is bool:
        out += T_TRUE if value else T_FALSE
    elif kind is int:
        if -(1 << 63) <= value < (1 << 63):
            out += T_INT
            out += _I64.pack(value)
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            out += T_BIGINT
            _varint(len(raw), out)
            out += raw
    elif kind is float:
        out += T_FLOAT
        out += _F64.pack(value)
    elif kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        out += T_STR
        _varint(len(raw), out)
        out += raw
    elif kind is bytes or kind is bytearray:
        out += T_BYTES if kind is bytes else T_BYTEARRAY
        _varint(len(value), out)
        out += value
    elif kind is tuple or kind is list:
        out += T_TUPLE if kind is tuple else T_LIST
        _varint(len(value), out)
        try:
            for item in value:
                _encode(item, out, depth + 1)
        except UnstorableValue as exc:  # where it failed: the first item that is the failed object
            exc._unwind(value, ("index", next(i for i, x in enumerate(value) if x is exc._node)))
            raise
    elif kind is dict:
        out += T_DICT
        _varint(len(value), out)
        try:
            for key, item in value.items():
                _encode(key, out, depth + 1)
                _encode(item, out, depth + 1)
        except UnstorableValue as exc:
            exc._unwind(value, ("key" if exc._node is key else "value", key))
            raise
    elif kind is set or kind is frozenset:
        out += T_SET if kind is set else T_FROZENSET
        members = []
        try:
            for item in value:  # each member encoded at its real depth, so what encodes also decodes
                member = bytearray()
                _encode(item, member, depth + 1)
                members.append(bytes(member))
        except UnstorableValue as exc:
            exc._unwind(value, ("member", item))
            raise
        members.sort()
        _varint(len(members), out)
        for member in members:
            out += member
    else:
        raise _refuse(value)


# What decoding may build is bounded by the input's size. Every value takes at least one byte, but
# a two-byte empty set is a 216-byte object: without a bound, a snapshot of nested empty
# containers would need a hundred times its size. Each str, bytes and container is charged about
# what CPython allocates for it (object, GC header, one slot or entry per item) before it is built;
# the scalars are not (an int is 9 bytes in and at most 32 out). What the recorder writes stays
# far below the budget (a NAT table costs about 6 times its encoded size, a set of short strings
# about 20 times).
DECODE_FACTOR = 32
DECODE_SLACK = 16 << 20
_COST_BASE = {T_STR: 48, T_BYTES: 40, T_BYTEARRAY: 64, T_BIGINT: 32,
              T_TUPLE: 72, T_LIST: 72, T_SET: 232, T_FROZENSET: 232, T_DICT: 72}
_COST_ITEM = {T_STR: 2, T_BYTES: 1, T_BYTEARRAY: 1, T_BIGINT: 1,
              T_TUPLE: 8, T_LIST: 16, T_SET: 40, T_FROZENSET: 40, T_DICT: 48}


def decode_budget(size: int) -> int:
    """Bytes of objects ``decode`` may build from ``size`` bytes of input."""
    return DECODE_FACTOR * size + DECODE_SLACK


def decode(data: bytes, budget: int | None = None) -> Any:
    """The value ``data`` encodes; a ``CodecError`` when it would build more than ``budget`` bytes
    of objects (by default ``decode_budget(len(data))``)."""
    left = [decode_budget(len(data)) if budget is None else budget]
    value, end = _decode(memoryview(data), 0, 0, left)
    if end != len(data):
        raise CodecError(f"{len(data) - end} bytes after the value", end)
    return value


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise CodecError("truncated length", pos)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CodecError("length too long", pos)


def _take(data: memoryview, pos: int, n: int) -> tuple[bytes, int]:
    if n > len(data) - pos:
        raise CodecError(f"value needs {n} bytes, {len(data) - pos} left", pos)
    return bytes(data[pos:pos + n]), pos + n


def _charge(left: list[int], tag: bytes, n: int, pos: int) -> None:
    left[0] -= _COST_BASE[tag] + _COST_ITEM[tag] * n
    if left[0] < 0:
        raise CodecError("the value would take more memory than its size allows (nested or empty containers)", pos)


def _decode(data: memoryview, pos: int, depth: int, left: list[int]) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CodecError("nesting deeper than 64 levels", pos)
    if pos >= len(data):
        raise CodecError("truncated value", pos)
    tag = bytes(data[pos:pos + 1])
    pos += 1
    if tag == T_NONE:
        return None, pos
    if tag == T_TRUE:
        return True, pos
    if tag == T_FALSE:
        return False, pos
    if tag == T_INT:
        raw, pos = _take(data, pos, 8)
        return _I64.unpack(raw)[0], pos
    if tag == T_FLOAT:
        raw, pos = _take(data, pos, 8)
        return _F64.unpack(raw)[0], pos
    if tag in (T_BIGINT, T_STR, T_BYTES, T_BYTEARRAY):
        n, pos = _read_varint(data, pos)
        raw, pos = _take(data, pos, n)
        _charge(left, tag, n, pos - n)
        if tag == T_BIGINT:
            return int.from_bytes(raw, "little", signed=True), pos
        if tag == T_BYTES:
            return raw, pos
        if tag == T_BYTEARRAY:
            return bytearray(raw), pos
        try:
            return raw.decode("utf-8", "surrogatepass"), pos
        except UnicodeDecodeError:
            raise CodecError("string is not UTF-8", pos - n) from None
    if tag in (T_TUPLE, T_LIST, T_SET, T_FROZENSET):
        n, pos = _read_varint(data, pos)
        if n > len(data) - pos:
            raise CodecError(f"container claims {n} items, {len(data) - pos} bytes left", pos)
        _charge(left, tag, n, pos)
        items = []
        for _ in range(n):
            item, pos = _decode(data, pos, depth + 1, left)
            items.append(item)
        try:
            if tag == T_TUPLE:
                return tuple(items), pos
            if tag == T_LIST:
                return items, pos
            return (set(items) if tag == T_SET else frozenset(items)), pos
        except TypeError:
            raise CodecError("unhashable set member", pos) from None
    if tag == T_DICT:
        n, pos = _read_varint(data, pos)
        if n > len(data) - pos:
            raise CodecError(f"dict claims {n} entries, {len(data) - pos} bytes left", pos)
        _charge(left, tag, n, pos)
        result = {}
        for _ in range(n):
            key, pos = _decode(data, pos, depth + 1, left)
            item, pos = _decode(data, pos, depth + 1, left)
            try:
                result[key] = item
            except TypeError:
                raise CodecError("unhashable dict key", pos) from None
        return result, pos
    raise CodecError(f"unknown tag {tag!r}", pos - 1)
