"""Queue-log chunks, column by column (formats/queue-log.md, log version 2).

A queue log holds one queue's PALs and non-deterministic values in program order. Stored as one
fixed-width record each (v1) they cost 15 and 14 bytes; most of that is predictable: a packet's
records come together, a variable's access numbers grow by small steps, an access that only reads
leaves the digest as it was, and clock values grow by the time between packets. A chunk therefore
stores each field as its own column of small deltas, and the deltas carry over from one chunk to
the next: the previous packet, each variable's last access number and the last clock value.

That state starts fresh at a *keyframe* chunk: the first chunk of a log and the first chunk after
each snapshot's queue positions, so any reader that starts where recovery starts (the log's
header or a snapshot position) can decode without reading what came before.

Hot paths append plain tuples to ``QueueLog.items`` and ``QueueEncoder.encode`` packs them when
the queue flushes:

- a PAL: ``(packet, var, seq, digest32)``, with ``digest32`` None when the access left the
  variable's 32-bit digest unchanged;
- a non-deterministic value: ``(packet, -kind, value, None)`` (kind 1 clock, 2 random).
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple

from ftmbctl.records import NdRecord, PalRecord, RecordError

FLAG_KEYFRAME = 0x01
CODE_PAL, CODE_PAL_SAME, CODE_CLOCK, CODE_RANDOM = 0, 1, 2, 3
ND_CLOCK, ND_RANDOM = 1, 2
MAX_VAR_BITS = 32
MAX_VARINT = 14  # bytes: 98 bits hold the widest value, an access word (64-bit step << 32 | variable)
U64_LIMIT = 1 << 64

_U64 = struct.Struct("<Q")
# byte -> its four 2-bit record codes, and its eight bits, lowest first
_CODES = [(b & 3, b >> 2 & 3, b >> 4 & 3, b >> 6) for b in range(256)]
_BITS = [tuple(b >> i & 1 for i in range(8)) for b in range(256)]


def fold16(digest32: int) -> int:
    """The 16 bits a PAL stores of a 32-bit digest."""
    return (digest32 ^ (digest32 >> 16)) & 0xFFFF


def zigzag(n: int) -> int:
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)


def put_varint(out: bytearray, value: int) -> None:
    """LEB128: 7 bits a byte, lowest first, high bit set on every byte but the last."""
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (callers inline the one-byte case)."""
    value = shift = 0
    start = pos
    size = len(raw)
    while True:
        if pos >= size:
            raise RecordError(f"varint at byte {start} runs past the end of the chunk", start)
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 7 * MAX_VARINT:
            raise RecordError(f"varint at byte {start} is longer than {MAX_VARINT} bytes", start)


class State(NamedTuple):
    """What a chunk's deltas are relative to: the end of the previous chunk of the log."""

    packet: int
    seqs: dict[int, int]
    clock: int


FRESH = State(0, {}, 0)


class QueueEncoder:
    """Packs one queue's records into chunks; the delta state carries from chunk to chunk."""

    __slots__ = ("packet", "seqs", "clock", "keyframe")

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """The next chunk is a keyframe: its deltas start from nothing."""
        self.packet, self.seqs, self.clock, self.keyframe = 0, {}, 0, True

    def encode(self, items: list[tuple]) -> bytes:
        n = len(items)
        codes, new_packet = bytearray(), bytearray()  # one byte per record, packed at the end
        packets, accesses, values = bytearray(), bytearray(), bytearray()
        digests: list[int] = []
        last_packet, seqs, clock = self.packet, self.seqs, self.clock
        vbits = max(max(item[1] for item in items), 0).bit_length() if items else 0
        if vbits > MAX_VAR_BITS:
            raise ValueError(f"variable id needs {vbits} bits, more than {MAX_VAR_BITS}")
        add_code, add_new, add_access, add_digest = codes.append, new_packet.append, accesses.append, digests.append
        for packet, var, x, digest in items:
            if packet == last_packet:
                add_new(0)
            else:
                if packet < last_packet:
                    raise ValueError(f"packet {packet} logged after packet {last_packet}")
                add_new(1)
                step = packet - last_packet - 1
                if step < 0x80:
                    packets.append(step)
                else:
                    put_varint(packets, step)
                last_packet = packet
            if var >= 0:
                word = (x - seqs.get(var, 0) - 1) << vbits | var
                if word < 0:
                    raise ValueError(f"access {x} to variable {var} logged after access {seqs[var]}")
                if word < 0x80:  # the common case, inline
                    add_access(word)
                else:
                    put_varint(accesses, word)
                seqs[var] = x
                if digest is None:
                    add_code(CODE_PAL_SAME)
                else:
                    add_code(CODE_PAL)
                    add_digest((digest ^ (digest >> 16)) & 0xFFFF)  # fold16
            elif var == -ND_CLOCK:
                add_code(CODE_CLOCK)
                step = x - clock
                put_varint(values, step << 1 if step >= 0 else ((-step) << 1) - 1)  # zigzag
                clock = x
            else:
                add_code(CODE_RANDOM)
                values += _U64.pack(x)
        self.packet, self.clock = last_packet, clock
        head = bytearray((FLAG_KEYFRAME if self.keyframe else 0, vbits))
        self.keyframe = False
        put_varint(head, n)
        return b"".join((head, _pack_digits(codes, 4), _pack_digits(new_packet, 2), packets, accesses,
                         struct.pack(f"<{len(digests)}H", *digests), values))


_DIGIT_CHARS = bytes.maketrans(bytes(range(4)), b"0123")


def _pack_digits(digits: bytearray, base: int) -> bytes:
    """Digits (one per byte, record 0 first) packed least significant first: 2 bits each for base
    4, 1 bit for base 2. Done by int() in C rather than a Python loop over the records."""
    size = (len(digits) * (base >> 1) + 7) // 8
    if not digits:
        return b""
    return int(digits[::-1].translate(_DIGIT_CHARS), base).to_bytes(size, "little")


class QueueDecoder:
    """Decodes the chunks of one queue log in order, carrying the delta state between them.

    Call it with each chunk's raw bytes, from the log's first chunk or from a snapshot's position
    (a keyframe). A chunk that does not decode leaves the state as it was.
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: State | None = None  # None: no chunk read yet, the next must be a keyframe

    def __call__(self, raw: bytes) -> list[PalRecord | NdRecord]:
        records, self.state = decode_chunk(raw, self.state)
        return records


def decode_chunk(raw: bytes, state: State | None) -> tuple[list[PalRecord | NdRecord], State]:
    """One chunk's records and the state after it; ``state`` is the state after the previous chunk."""
    size = len(raw)
    if size < 3:
        raise RecordError(f"queue-log chunk needs at least 3 bytes, has {size}", 0)
    flags, vbits = raw[0], raw[1]
    if flags & ~FLAG_KEYFRAME:
        raise RecordError(f"unknown queue-log chunk flags 0x{flags:02x}", 0)
    if flags & FLAG_KEYFRAME:
        state = FRESH
    elif state is None:
        raise RecordError("chunk continues an earlier chunk of the log; read the log from its start or from a "
                          "snapshot's position", 0)
    if vbits > MAX_VAR_BITS:
        raise RecordError(f"variable ids of {vbits} bits, at most {MAX_VAR_BITS}", 1)
    n, pos = _read_varint(raw, 2)
    code_bytes, bit_bytes = (n + 3) // 4, (n + 7) // 8
    if size - pos < code_bytes + bit_bytes:
        raise RecordError(f"{n} records need {code_bytes + bit_bytes} bytes of codes, {size - pos} left", pos)
    codes = [c for b in raw[pos:pos + code_bytes] for c in _CODES[b]]
    if any(codes[n:]):
        raise RecordError("unused bits of the last record-code byte are not zero", pos + code_bytes - 1)
    pos += code_bytes
    new_packet = [bit for b in raw[pos:pos + bit_bytes] for bit in _BITS[b]]
    if any(new_packet[n:]):
        raise RecordError("unused bits of the last new-packet byte are not zero", pos + bit_bytes - 1)
    pos += bit_bytes

    # packet column
    packet_of = []
    last_packet = state.packet
    for i in range(n):
        if new_packet[i]:
            if pos < size and raw[pos] < 0x80:
                step = raw[pos]
                pos += 1
            else:
                at = pos
                step, pos = _read_varint(raw, pos)
                if last_packet + step + 1 >= U64_LIMIT:
                    raise RecordError(f"packet id {last_packet + step + 1} out of range", at)
            last_packet += step + 1
        packet_of.append(last_packet)

    # access column (variable and access number of every PAL)
    seqs = dict(state.seqs)
    mask = (1 << vbits) - 1
    accesses = []
    for code in codes[:n]:
        if code > CODE_PAL_SAME:
            continue
        at = pos
        if pos < size and raw[pos] < 0x80:
            word = raw[pos]
            pos += 1
        else:
            word, pos = _read_varint(raw, pos)
        var = word & mask
        seq = seqs.get(var, 0) + (word >> vbits) + 1
        if seq >= U64_LIMIT:
            raise RecordError(f"access number of variable {var} out of range", at)
        seqs[var] = seq
        accesses.append((var, seq))

    # digests of the PALs that changed their variable, then the values of the ND records
    digest_bytes = 2 * codes[:n].count(CODE_PAL)
    if size - pos < digest_bytes:
        raise RecordError(f"digest column needs {digest_bytes} bytes, {size - pos} left", pos)
    digests = iter(struct.unpack_from(f"<{digest_bytes // 2}H", raw, pos))
    pos += digest_bytes
    clock = state.clock
    access_it = iter(accesses)
    records: list[PalRecord | NdRecord] = []
    append = records.append
    for i in range(n):
        code = codes[i]
        if code == CODE_PAL:
            append(PalRecord(packet_of[i], *next(access_it), next(digests)))
        elif code == CODE_PAL_SAME:
            append(PalRecord(packet_of[i], *next(access_it), None))
        elif code == CODE_CLOCK:
            at = pos
            if pos < size and raw[pos] < 0x80:
                word = raw[pos]
                pos += 1
            else:
                word, pos = _read_varint(raw, pos)
            clock += unzigzag(word)
            if not 0 <= clock < U64_LIMIT:
                raise RecordError(f"clock value {clock} out of range", at)
            append(NdRecord(packet_of[i], ND_CLOCK, clock))
        else:
            if size - pos < 8:
                raise RecordError(f"random value needs 8 bytes, {size - pos} left", pos)
            append(NdRecord(packet_of[i], ND_RANDOM, _U64.unpack_from(raw, pos)[0]))
            pos += 8
    if pos != size:
        raise RecordError(f"{size - pos} bytes after the last record", pos)
    return records, State(last_packet, seqs, clock)


def encode_records(records: Iterable[PalRecord | NdRecord], encoder: QueueEncoder | None = None) -> bytes:
    """One chunk of decoded records (tests, tools): the inverse of ``decode_chunk``."""
    encoder = encoder or QueueEncoder()
    items = []
    for r in records:
        if type(r) is PalRecord:
            # a stored digest d < 2**16 folds to itself, so it stands for the 32-bit digest
            items.append((r.packet, r.var, r.seq, r.digest))
        else:
            items.append((r.packet, -r.kind, r.value, None))
    return encoder.encode(items)

