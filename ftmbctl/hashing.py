"""Hashes that are the same in every process.

Python's built-in ``hash()`` is salted per process, so nothing that reaches the disk or decides a
queue may use it. Digests of shared values hash the ``repr`` of the value: for the value types a
shared variable may hold (None, bool, int, float, str, bytes and tuples of those) ``repr`` is
canonical and the same in every process.
"""

from __future__ import annotations

import hashlib
import zlib

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: 2^64 / the golden ratio


def file_sha256(path: object) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (OSError is the caller's to report)."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)  # one buffer reused: files hashed side by side keep memory flat
    view = memoryview(buffer)
    with open(path, "rb") as handle:  # type: ignore[call-overload]
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def hash64(data: bytes) -> int:
    """A 64-bit keyed-nothing BLAKE2b hash of ``data`` as an int."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def value_hash(value: object) -> int:
    """64-bit hash of a shared value (or a key/value pair) through its canonical repr."""
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little")


def mix_int(value: int) -> int:
    """A cheap 32-bit digest of an int (Fibonacci hashing), for counters."""
    return (((value & MASK64) * GOLDEN) & MASK64) >> 32


def fold32(value: int) -> int:
    """Fold a 64-bit digest to the 32 bits a PAL stores."""
    return ((value >> 32) ^ value) & MASK32


def key_hash32(key: object) -> int:
    """Fast stable 32-bit hash of a key (shard choice)."""
    return zlib.crc32(repr(key).encode())
