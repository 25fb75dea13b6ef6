"""ids: a pass-through intrusion detector: signatures matched across TCP segments, and port scans.

Every frame leaves exactly as it came (an IDS does not block); what it finds leaves as alerts
(``ctx.alert``), released like outputs and exported with ``ftmbctl export RUN --alerts FILE``.

**Signatures** come from ``signatures=`` (comma-separated) and/or ``signature_file=PATH`` (one per
line; blank lines and lines starting with ``#`` are skipped; the file is read whenever the
middlebox is built, in record and in recovery alike, so keep it unchanged between them). Without
either, ``DEFAULT_SIGNATURES`` is used. A signature is text encoded as UTF-8, with two escapes:
``\\xNN`` for any byte (``\\x2c`` for a comma, ``\\x20`` for a leading or trailing space) and
``\\\\`` for a backslash. ``nocase=true`` matches ASCII letters in either case. All signatures are
compiled once, in ``__init__``, into one Aho-Corasick automaton (a full transition table), so the
cost per payload byte does not depend on how many signatures there are.

**Streams.** Each direction of a TCP connection is one byte stream, matched by the automaton
carried from one segment to the next: a signature split across segments is found. Per stream the
queue-local table ``flows`` keeps ``[next expected sequence number, automaton state, hole start,
hole end]`` (the flow hash pins both directions of a connection to one queue). The policy for
segments that do not start at the expected sequence number:

- *overlap* (starts before, ends after): only the new bytes are matched, continuing the stream;
- *gap* (starts after the expected number: a segment before it is missing or late): the segment
  is matched on its own, from a fresh automaton state, and the stream continues from its end; the
  missing range becomes the stream's *hole* (one per stream: a newer gap replaces it);
- *late* (ends at or before the expected number): the part that falls into the hole is matched
  on its own (so a signature wholly inside a late segment is still found) and the hole shrinks;
  anything else is a retransmission and is not matched again (no duplicate alerts).

So bytes are matched across a segment boundary only when the segments arrive in order: a
signature split across an out-of-order segment and its neighbour is not found. A stream first seen
without its SYN is picked up at its first segment. A segment cut short by the capture's snap
length is matched as far as it was captured, and the stream restarts from a fresh state after it.
A FIN or RST ends the stream's entry; the table holds at most ``max_flows`` streams per queue
(the oldest is evicted). UDP datagrams are matched one by one. IP fragments are not matched.

One alert per signature per packet (with the number of matches), naming the signature, the flow
and the packet id; the shared map ``alerts`` counts alerts per signature (one access per alert).

**Port scans.** A probe is a TCP SYN without ACK, or a UDP datagram to a port below its source
port (a client to a service: a DNS server's answers to many clients are not a scan); its
destination is ``address:port``. The shared sharded map ``scans`` keeps, per source address, ``(window start,
distinct destinations, alerted)``: a window opens at a source's first probe (``ctx.clock()``) and
lasts ``scan_window`` seconds; a source whose probes reach ``scan_threshold`` distinct destinations
within one window raises one alert for that window (and ``scan_alerts`` is counted). One
``ctx.apply`` on the source's shard per probe. The map holds at most ``scan_sources`` sources
(split evenly over the shards): a new source arriving at a full shard evicts the source whose
window started first (ties: the smaller address text). ``scan_threshold=0`` turns scan detection
off.

**Malformed frames** (the link layer announces IP but no IP header fits, a total length shorter
than the IP header, a TCP or UDP header cut by the capture or by the total length, a TCP data
offset below 5) are passed unchanged and counted in the shared counter ``malformed``; no parse
error ever leaves ``process``.

Shared accesses per frame: none for most frames; one per alert, one per probe, one per malformed
frame.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from ftmbctl.errors import BadInput, UsageError
from ftmbctl.middlebox import Middlebox, Option, Packet, input_file
from ftmbctl.middleboxes.options import parse_bool, parse_count, parse_positive, parse_seconds
from ftmbctl.middleboxes.packets import (MALFORMED, NON_IP, U16, U32, address_text, ip_fields, ip_start,
                                         ipv6_transport)

# Classic payload signatures: file disclosure, shells, injection, Log4Shell, Shellshock, a NOP sled.
DEFAULT_SIGNATURES = (
    "/etc/passwd", "/etc/shadow", "/bin/sh", "cmd.exe", "../../", "<script>", "' OR '1'='1", "UNION SELECT",
    "${jndi:", "() { :;};", "\\x90\\x90\\x90\\x90\\x90\\x90\\x90\\x90",
)

TCP, UDP = 6, 17
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_SEQ_MOD = 1 << 32
_HALF = 1 << 31
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")
_STATS = ("segments", "in_order", "overlap", "gap", "late", "retransmitted", "truncated", "fragments", "evicted")


# ---- signatures as text ----

def decode_signature(text: str) -> bytes:
    """``"cmd\\x2cexe"`` -> ``b"cmd,exe"``: UTF-8 text with ``\\xNN`` and ``\\\\`` escapes."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
        elif text[i + 1:i + 2] == "\\":
            out.append(0x5C)
            i += 2
        elif text[i + 1:i + 2] == "x" and _HEX2.fullmatch(text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError(f"bad escape at character {i} of {text!r} (use \\xNN or \\\\)")
    if not out:
        raise ValueError("a signature must not be empty")
    return bytes(out)


def show_signature(sig: bytes) -> str:
    """The canonical text of a signature, ``decode_signature(show_signature(b)) == b``: printable
    ASCII as is; a backslash, a comma, a space at either end and every other byte escaped (so the
    text survives a comma-separated, stripped list)."""
    text = "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x5C, 0x2C) else "\\\\" if b == 0x5C
                   else f"\\x{b:02x}" for b in sig)
    if text.startswith(" "):
        text = "\\x20" + text[1:]
    if text.endswith(" "):
        text = text[:-1] + "\\x20"
    return text


def parse_signature_list(text: str) -> str:
    """Check a comma-separated list; returns it normalized (canonical text of each, in order)."""
    parts = [part.strip() for part in str(text).split(",")]
    return ",".join(show_signature(decode_signature(part)) for part in parts if part)


def read_signature_file(path: str) -> list[bytes]:
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInput(f"{file}: signature file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{file}: cannot be read as a UTF-8 signature file ({exc})") from None
    found = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(decode_signature(line))
        except ValueError as exc:
            raise BadInput(f"{file}: line {number}: {exc}") from None
    if not found:
        raise BadInput(f"{file}: holds no signature")
    return found


# ---- the automaton ----

class Automaton:
    """Aho-Corasick over bytes (Aho and Corasick 1975), compiled to a full transition table.

    ``delta[state][byte]`` is the next state; ``matches[state]`` the indexes of the patterns that
    end there (through failure links too). State 0 is the start. Built once; read-only after.
    """

    def __init__(self, patterns: Sequence[bytes]) -> None:
        goto: list[dict[int, int]] = [{}]
        matches: list[tuple[int, ...]] = [()]
        for index, pattern in enumerate(patterns):
            state = 0
            for byte in pattern:
                nxt = goto[state].get(byte)
                if nxt is None:
                    nxt = len(goto)
                    goto.append({})
                    matches.append(())
                    goto[state][byte] = nxt
                state = nxt
            matches[state] += (index,)
        fail = [0] * len(goto)
        delta: list[Any] = [None] * len(goto)
        delta[0] = tuple(goto[0].get(b, 0) for b in range(256))
        todo = deque(goto[0].values())  # breadth first: a state's failure target is shallower
        while todo:
            state = todo.popleft()
            matches[state] += matches[fail[state]]
            row = list(delta[fail[state]])
            for byte, child in goto[state].items():
                row[byte] = child
                fail[child] = delta[fail[state]][byte]
                todo.append(child)
            delta[state] = tuple(row)
        self.delta: tuple[tuple[int, ...], ...] = tuple(delta)
        self.matches: tuple[tuple[int, ...], ...] = tuple(matches)

    def scan(self, data: bytes, state: int = 0) -> tuple[int, list[int]]:
        """Feed ``data`` from ``state``: (the state after it, indexes of every match in order)."""
        delta, matches = self.delta, self.matches
        hits: list[int] = []
        for byte in data:
            state = delta[state][byte]
            if matches[state]:
                hits += matches[state]
        return state, hits


# ---- frames ----

def _diff(a: int, b: int) -> int:
    """``a - b`` in 32-bit sequence space, in [-2**31, 2**31)."""
    return (a - b + _HALF) % _SEQ_MOD - _HALF


def _transport(linktype: int, data: bytes) -> Any:
    """None (not IP, or neither TCP nor UDP), MALFORMED, "fragment", or
    ``(proto, src, dst, sport, dport, l4, end, real_end)``: where the L4 header starts, where the
    captured IP payload ends (total length and capture) and where it really ends (total length)."""
    version, proto, src, dst, sport, dport = ip_fields(linktype, data)
    if version == NON_IP:
        return None
    if version == MALFORMED:
        return MALFORMED
    pos = ip_start(linktype, data)
    size = len(data)
    if version == 4:
        ihl = (data[pos] & 0x0F) * 4
        total = U16.unpack_from(data, pos + 2)[0]
        if total < ihl:
            return MALFORMED
        if U16.unpack_from(data, pos + 6)[0] & 0x3FFF:
            return "fragment" if proto in (TCP, UDP) else None
        l4 = pos + ihl
    else:
        plen = U16.unpack_from(data, pos + 4)[0]
        total = 40 + plen if plen else size - pos  # 0: a jumbogram, whose length is elsewhere
        _nxt, l4, fragment = ipv6_transport(data, pos)
        if l4 < 0:
            return MALFORMED if proto in (TCP, UDP) else None
        if fragment is not None:  # any fragment header, atomic ones too
            return "fragment" if proto in (TCP, UDP) else None
    if proto not in (TCP, UDP):
        return None
    real_end = pos + total
    end = min(size, real_end)
    if end < l4 + (20 if proto == TCP else 8):
        return MALFORMED
    return proto, src, dst, sport, dport, l4, end, real_end


def _endpoint(addr: bytes, port: int) -> str:
    text = address_text(addr)
    return f"[{text}]:{port}" if len(addr) == 16 else f"{text}:{port}"


# ---- the functions run inside one shared access ----

def _observe(source: str, destination: str, now: float, window: float, threshold: int, capacity: int):
    """One probe of ``source`` on its shard: returns the destinations counted when this probe makes
    the source cross the threshold (the alert), else 0."""
    def fn(view: Any) -> int:
        entry = view.get(source)
        if entry is None:
            if len(view) >= capacity:
                victim = min(view.items(), key=lambda item: (item[1][0], item[0]))[0]
                view.pop(victim)
            entry = (now, (), False)
        elif now - entry[0] > window:
            entry = (now, (), False)
        start, seen, alerted = entry
        if destination not in seen and len(seen) < threshold:
            seen += (destination,)
        fire = len(seen) >= threshold and not alerted
        view.put(source, (start, seen, alerted or fire))
        return len(seen) if fire else 0
    return fn


class Ids(Middlebox):
    name = "ids"
    summary = "pass-through IDS: signatures across TCP segments (Aho-Corasick), per-source port-scan alerts"
    options = {
        "signatures": Option("", parse_signature_list, "comma-separated signatures (\\xNN escapes)"),
        "signature_file": Option("", input_file, "file with one signature per line (# comments)"),
        "nocase": Option(False, parse_bool, "match ASCII letters in either case"),
        "scan_threshold": Option(20, parse_count, "distinct ip:port destinations per window that make a scan (0: off)"),
        "scan_window": Option(10.0, parse_seconds, "seconds a scan window lasts (ctx.clock())"),
        "scan_sources": Option(4096, parse_positive, "sources the scan table holds at most"),
        "max_flows": Option(10000, parse_positive, "TCP streams tracked per queue at most"),
    }
    SCAN_SHARDS = 16

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        o = self.opts
        try:
            o["signatures"] = parse_signature_list(o["signatures"])
            o["signature_file"] = str(o["signature_file"])
            o["nocase"] = parse_bool(o["nocase"])
            o["scan_threshold"] = parse_count(o["scan_threshold"])
            o["scan_window"] = parse_seconds(o["scan_window"])
            o["scan_sources"] = parse_positive(o["scan_sources"])
            o["max_flows"] = parse_positive(o["max_flows"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'ids': {exc}") from None
        sigs = [decode_signature(text) for text in o["signatures"].split(",") if text]
        if o["signature_file"]:
            sigs += read_signature_file(o["signature_file"])
        if not sigs:
            sigs = [decode_signature(text) for text in DEFAULT_SIGNATURES]
        if o["nocase"]:
            sigs = [sig.lower() for sig in sigs]
        self.signatures: tuple[bytes, ...] = tuple(dict.fromkeys(sigs))  # duplicates once, in order
        self.names = tuple(show_signature(sig) for sig in self.signatures)
        self.automaton = Automaton(self.signatures)
        self._scan_capacity = -(-o["scan_sources"] // self.SCAN_SHARDS)

    def declare(self, shared: Any) -> None:
        self.alerts = shared.map("alerts")
        self.scan_alerts = shared.counter("scan_alerts")
        self.malformed = shared.counter("malformed")
        self.scans = shared.sharded_map("scans", self.SCAN_SHARDS)

    def new_local_state(self) -> dict[str, Any]:
        return {"flows": {}, "stats": dict.fromkeys(_STATS, 0)}

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        ctx.emit(data)  # passed whatever happens below
        found = _transport(pkt.linktype, data)
        if found is None:
            return
        if found is MALFORMED:
            ctx.add(self.malformed)
            return
        if found == "fragment":
            ctx.local["stats"]["fragments"] += 1
            return
        proto, src, dst, sport, dport, l4, end, real_end = found
        if proto == TCP:
            offset = (data[l4 + 12] >> 4) * 4
            if offset < 20 or l4 + offset > end:
                ctx.add(self.malformed)
                return
            flags = data[l4 + 13]
            hits = self._stream(ctx, (_endpoint(src, sport), _endpoint(dst, dport)), U32.unpack_from(data, l4 + 4)[0],
                                flags, data[l4 + offset:end], real_end - l4 - offset)
            probe = flags & (_SYN | _ACK) == _SYN
        else:
            hits = self._payload(data[l4 + 8:end], 0)[1]
            probe = dport < sport  # a client to a service; not a service's reply
        if hits:
            flow = f"{'tcp' if proto == TCP else 'udp'} {_endpoint(src, sport)} -> {_endpoint(dst, dport)}"
            for index, count in _counted(hits):
                name = self.names[index]
                ctx.add(self.alerts, 1, key=name)
                times = f" ({count} matches)" if count > 1 else ""
                ctx.alert(f"ids: signature \"{name}\"{times} in {flow}, packet {pkt.id}")
        if probe and self.opts["scan_threshold"]:
            self._probe(ctx, pkt, address_text(src), _endpoint(dst, dport))

    def _payload(self, payload: bytes, state: int) -> tuple[int, list[int]]:
        if self.opts["nocase"]:
            payload = payload.lower()
        return self.automaton.scan(payload, state)

    def _stream(self, ctx: Any, key: tuple[str, str], seq: int, flags: int, payload: bytes, length: int) -> list[int]:
        """Match one TCP segment against its stream (the policy in the module docstring)."""
        flows, stats = ctx.local["flows"], ctx.local["stats"]
        stats["segments"] += 1
        start = (seq + 1) % _SEQ_MOD if flags & _SYN else seq  # a SYN takes one sequence number
        end = (start + length) % _SEQ_MOD
        entry = flows.get(key)
        if entry is None:
            if len(flows) >= self.opts["max_flows"]:
                del flows[next(iter(flows))]  # the oldest stream (dicts keep insertion order)
                stats["evicted"] += 1
            entry = flows[key] = [start, 0, start, start]  # an empty hole
        expected, state, hole_lo, hole_hi = entry
        cut = len(payload) < length  # the capture stopped before the end of the segment
        ahead = _diff(start, expected)
        hits: list[int] = []
        if ahead == 0 or (ahead < 0 < _diff(end, expected)):
            skip = -ahead
            stats["in_order" if ahead == 0 else "overlap"] += 1
            state, hits = self._payload(payload[skip:], state)
            entry[0], entry[1] = end, 0 if cut else state
        elif ahead > 0:
            stats["gap"] += 1
            state, hits = self._payload(payload, 0)
            entry[:] = [end, 0 if cut else state, expected, start]
        else:
            rel_lo, rel_hi = _diff(hole_lo, start), _diff(hole_hi, start)
            first, last = max(0, rel_lo), min(length, rel_hi)
            if first < last:
                stats["late"] += 1
                hits = self._payload(payload[first:last], 0)[1]
                if rel_lo >= 0:  # the segment covers the start of the hole
                    entry[2] = (start + last) % _SEQ_MOD
                elif rel_hi <= length:  # ... or its end
                    entry[3] = start
            else:
                stats["retransmitted"] += 1
        if cut:
            stats["truncated"] += 1
        if flags & (_FIN | _RST):
            del flows[key]
        return hits

    def _probe(self, ctx: Any, pkt: Packet, source: str, destination: str) -> None:
        """Count one probe of ``source`` at ``destination``; alert when the source crosses the
        threshold (once per window)."""
        now = ctx.clock()
        o = self.opts
        shard = self.scans.shard_for(source)
        crossed = ctx.apply(shard, _observe(source, destination, now, o["scan_window"], o["scan_threshold"],
                                            self._scan_capacity))
        if crossed:
            ctx.add(self.scan_alerts)
            ctx.alert(f"ids: port scan from {source}: {crossed} distinct destinations (ip:port) within "
                      f"{o['scan_window']:g}s, packet {pkt.id}")


def _counted(hits: list[int]) -> list[tuple[int, int]]:
    """(signature index, matches) in order of first match."""
    counts: dict[int, int] = {}
    for index in hits:
        counts[index] = counts.get(index, 0) + 1
    return list(counts.items())
