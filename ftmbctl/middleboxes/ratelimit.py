"""ratelimit: token buckets per source prefix; frames over the limit are dropped and counted.

Every IP frame is charged to the bucket of its source prefix (the source address cut to
``prefix`` bits for IPv4, ``prefix6`` bits for IPv6, e.g. ``10.0.0.0/24``). A bucket holds up to
``burst`` tokens and gains ``rate`` tokens a second of ``ctx.clock()``; a frame that finds a whole
token takes it and passes, any other is dropped. So over any interval of T seconds a prefix gets
at most ``rate * T + burst`` frames through. A prefix seen for the first time starts full.

Both directions of a flow share a queue, but the flows of one source prefix are spread over all
queues, so the buckets are shared: a sharded map, each shard with its own lock.

State (the object holds configuration only):

- shared ``buckets`` (sharded map, 16 shards): prefix text -> (tokens, last refill time,
  admitted, dropped). ``admitted`` is the verdict on the frame that made the access (so one
  access both takes the token and answers), ``dropped`` the frames of the prefix dropped so far.
  A bucket lives for the whole run (one entry per source prefix seen).
- shared ``malformed`` (counter): frames dropped because no source address could be read.
- queue-local ``passed``: frames passed, by kind (``limited``: IP frames that got a token,
  ``non_ip``: frames without IP, which are not limited).

Shared accesses per frame: 1 for an IP frame (the bucket, one ``ctx.update``), 1 for a malformed
one (the counter), 0 without IP. One ``ctx.clock()`` per IP frame.

**Malformed frames are dropped and counted, never raised**: the link layer announces IP but no
IP header of version 4 or 6 fits the captured bytes (a frame that cannot be charged to a prefix
must not slip past the limit). A frame whose IP header is whole is charged whatever follows it.
A clock that steps back (the chaos scheduler jitters it by up to 50 us per queue) adds no tokens.
"""

from __future__ import annotations

from typing import Any

from ftmbctl.errors import UsageError
from ftmbctl.middlebox import Middlebox, Option, Packet
from ftmbctl.middleboxes.packets import MALFORMED, NON_IP, address_text, ip_fields
from ftmbctl.shared import MISSING


def parse_prefix(bits: int):
    def parse(text: str) -> int:
        value = int(text)
        if not 0 <= value <= bits:
            raise ValueError(f"prefix length {value} is not in 0..{bits}")
        return value
    return parse


def parse_rate(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"rate {text} is not a positive number of packets per second")
    return value


def parse_burst(text: str) -> float:
    value = float(text)
    if not value >= 1 or value == float("inf"):
        raise ValueError(f"burst {text} is not a number of packets of at least 1")
    return value


def take_token(now: float, rate: float, burst: float):
    """One bucket access: refill for the time since the last one, then take a token if there is
    a whole one. Deterministic: it sees only the old value and the logged clock."""
    def fn(old: Any) -> Any:
        if old is MISSING:
            tokens, last, dropped = burst, now, 0
        else:
            tokens, last, _admitted, dropped = old
            if now > last:
                tokens = min(burst, tokens + (now - last) * rate)
                last = now
        if tokens >= 1.0:
            return (tokens - 1.0, last, True, dropped)
        return (tokens, last, False, dropped + 1)
    return fn


class RateLimit(Middlebox):
    name = "ratelimit"
    summary = "token-bucket rate limiter per source prefix (shared buckets)"
    options = {
        "prefix": Option(24, parse_prefix(32), "IPv4 source prefix length a bucket covers"),
        "prefix6": Option(64, parse_prefix(128), "IPv6 source prefix length a bucket covers"),
        "rate": Option(100.0, parse_rate, "tokens (packets) a bucket gains per second"),
        "burst": Option(20.0, parse_burst, "tokens a bucket holds at most (and starts with)"),
    }

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        o = self.opts
        try:
            o["prefix"] = parse_prefix(32)(o["prefix"])
            o["prefix6"] = parse_prefix(128)(o["prefix6"])
            o["rate"] = parse_rate(o["rate"])
            o["burst"] = parse_burst(o["burst"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'ratelimit': {exc}") from None
        self._masks = {4: (o["prefix"], (0xFFFFFFFF << (32 - o["prefix"])) & 0xFFFFFFFF),
                       6: (o["prefix6"], ((1 << 128) - 1) << (128 - o["prefix6"]) & ((1 << 128) - 1))}

    def declare(self, shared: Any) -> None:
        self.buckets = shared.sharded_map("buckets", 16)
        self.malformed = shared.counter("malformed")

    def new_local_state(self) -> dict[str, Any]:
        return {"passed": {"limited": 0, "non_ip": 0}}

    def prefix_of(self, src: bytes) -> str:
        """``"10.0.0.0/24"``: the bucket key of a source address (4 or 16 bytes)."""
        bits, mask = self._masks[4 if len(src) == 4 else 6]
        net = (int.from_bytes(src, "big") & mask).to_bytes(len(src), "big")
        return f"{address_text(net)}/{bits}"

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        version, _proto, src, _dst, _sport, _dport = ip_fields(pkt.linktype, data)
        if version == NON_IP:
            ctx.local["passed"]["non_ip"] += 1
            ctx.emit(data)
            return
        if version == MALFORMED:
            ctx.add(self.malformed)
            return
        if self._take(ctx, src)[2]:
            ctx.local["passed"]["limited"] += 1
            ctx.emit(data)

    def _take(self, ctx: Any, src: bytes) -> tuple[float, float, bool, int]:
        """Charge one frame from ``src`` to its bucket (one shared access); returns the bucket."""
        now = ctx.clock()
        return ctx.update(self.buckets, self.prefix_of(src), take_token(now, self.opts["rate"], self.opts["burst"]))
