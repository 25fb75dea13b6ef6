"""firewall: a stateful TCP/UDP firewall with an allow/deny rule list.

What happens to a frame:

- **tracked** (its flow, in either direction, has a live connection entry): passes, and the
  entry's state and idle time are updated. Replies of an allowed connection pass this way, so a
  rule list only needs to say who may *open* connections.
- **new** (no live entry): the rules decide, first match wins, else the ``default`` policy.
  Allowed: the frame passes and opens an entry; denied: dropped. A TCP segment can open a
  connection only if it is a SYN without ACK (option ``new_tcp=syn``, the default, like pf's
  ``flags S/SA``); any other TCP segment without an entry is dropped as ``invalid``.
  ``new_tcp=any`` lets any allowed segment open one (for captures that start mid-connection).
  UDP and every other IP protocol open pseudo-connections: ICMP/ICMPv6 echo are keyed by the
  echo identifier (as the flow hash does), so echo replies pass as replies; ICMP errors and
  other protocols have no ports and are matched against the rules like any new flow.
- **not IP** (ARP, ...): passes, counted in the queue-local ``passed``.

TCP states (per connection, driven by the flags seen in both directions): ``syn_sent`` (SYN),
``syn_recv`` (SYN-ACK from the responder), ``established`` (the originator's ACK), ``fin_wait``
(one side's FIN), ``closing`` (both FINs), ``time_wait`` (an ACK after both FINs), ``closed``
(RST, either side). A SYN without ACK on a ``time_wait`` or ``closed`` connection opens a new one
(port reuse) and goes through the rules again. Idle timeouts by ``ctx.clock()``:
``established_timeout`` for ``established``, ``transitory_timeout`` for every other TCP state,
``udp_timeout`` for pseudo-connections. An idle entry is removed when its flow is seen again and
by a sweep of the queue's table once per second of clock time.

Rules (option ``rules=PATH``, one a line, ``#`` starts a comment)::

    allow|deny  proto  src  dst

``proto`` is ``tcp``, ``udp``, ``icmp`` (ICMP and ICMPv6), ``any`` or a protocol number;
``src``/``dst`` are ``any``, an IPv4 CIDR or a bracketed IPv6 CIDR (``[2001:db8::/32]``;
unbracketed when no port follows), each optionally followed by ``:port``, ``:low-high`` or
``:any``. A rule with ports matches TCP and UDP only. Rules are matched against the frame that
opens a connection. A line that does not parse is a ``BadInput`` naming the file and the line.
Without a rules file the built-in list ``DEFAULT_RULES`` applies: hosts in the RFC 1918 / ULA
ranges may open connections to anywhere, with ``default=deny`` no one else may. The file is read
when the middlebox is built, at record and again at recovery: keep it unchanged in between.

State (the object holds configuration only):

- queue-local ``conns``: (proto, originator address, port, responder address, port) ->
  [state, last seen, rule number, FIN bits]. The flow hash pins both directions of a flow to one
  queue, so connection tracking needs no sharing; ``passed``: frames passed without a shared
  access (``tracked``, ``non_ip``); ``expired``: entries removed for idleness; ``next_sweep``.
- shared ``rule_hits`` (map): rule number (1-based, in file order; 0 = the default policy) ->
  new flows it decided. A plain map: only new flows touch it.
- shared ``drops`` (map): ``denied`` / ``invalid`` / ``fragment`` / ``malformed`` -> frames.

Shared accesses per frame: 0 for tracked and non-IP frames (the established fast path); 1 for a
new flow that is allowed (its rule's hit), 2 for one that is denied (hit, drop); 1 for frames
dropped before the rules. One ``ctx.clock()`` per IP frame that reaches the connection table.

**Malformed frames are dropped and counted, never raised**: an IP header that ``ip_fields``
cannot parse, an IPv6 extension chain cut by the capture, a TCP header shorter than 20 or a UDP
header shorter than 8 bytes (captured, or by the IPv4 total length). A frame cut by the capture's
snap length after whole headers is handled. IP fragments are dropped as ``fragment`` (without
reassembly a non-first fragment has no ports to match).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftmbctl.errors import BadInput, UsageError
from ftmbctl.middlebox import Middlebox, Option, Packet, input_file
from ftmbctl.middleboxes.options import parse_new_tcp, parse_seconds
from ftmbctl.middleboxes.packets import (MALFORMED, NON_IP, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, U16,
                                         ip_fields, ip_start, ipv6_transport)

DEFAULT_RULES = """\
allow any 10.0.0.0/8 any
allow any 172.16.0.0/12 any
allow any 192.168.0.0/16 any
allow any [fc00::/7] any
"""

SWEEP_EVERY_S = 1.0  # how often (clock seconds) a queue drops idle entries from its table
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_L4_HEADER = {PROTO_TCP: 20, PROTO_UDP: 8}
_PROTO_NAMES = {"tcp": (PROTO_TCP,), "udp": (PROTO_UDP,), "icmp": (PROTO_ICMP, PROTO_ICMPV6), "any": None}
_REOPENABLE = frozenset(("time_wait", "closed"))


@dataclass(frozen=True)
class Rule:
    """One line of a rules file. Networks are (version, network as int, netmask as int)."""

    number: int  # 1-based position in the list: the key of rule_hits
    line: int
    allow: bool
    protos: tuple[int, ...] | None  # None: any protocol
    src: tuple[int, int, int] | None
    sports: tuple[int, int] | None
    dst: tuple[int, int, int] | None
    dports: tuple[int, int] | None

    def matches(self, version: int, proto: int, src: int, sport: int, dst: int, dport: int) -> bool:
        if self.protos is not None and proto not in self.protos:
            return False
        if self.sports is not None or self.dports is not None:
            if proto not in (PROTO_TCP, PROTO_UDP):
                return False
            if self.sports is not None and not self.sports[0] <= sport <= self.sports[1]:
                return False
            if self.dports is not None and not self.dports[0] <= dport <= self.dports[1]:
                return False
        for net, addr in ((self.src, src), (self.dst, dst)):
            if net is not None and (net[0] != version or addr & net[2] != net[1]):
                return False
        return True


# ---- option and rule parsing ----

def parse_policy(text: str) -> str:
    value = str(text).strip().lower()
    if value not in ("allow", "deny"):
        raise ValueError(f"default must be allow or deny, not {text!r}")
    return value


def _ports(text: str) -> tuple[int, int] | None:
    if text == "any":
        return None
    low, sep, high = text.partition("-")
    lo, hi = int(low), int(high) if sep else int(low)
    if not 0 <= lo <= hi <= 65535:
        raise ValueError(f"port range {text!r} is not within 0-65535, low to high")
    return lo, hi


def _endpoint(text: str) -> tuple[tuple[int, int, int] | None, tuple[int, int] | None]:
    """``any``, ``CIDR``, ``[IPv6 CIDR]``, each with an optional ``:port``/``:low-high``/``:any``."""
    if text.startswith("["):
        addr, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: a bracketed IPv6 network is [network] or [network]:port")
        port = rest[1:] if rest else "any"
    elif text.count(":") == 1:
        addr, _, port = text.partition(":")
    else:
        addr, port = text, "any"
    if not addr or not port:
        raise ValueError(f"{text!r} is not an address[:port]")
    net = None
    if addr != "any":
        try:
            parsed = ipaddress.ip_network(addr, strict=False)
        except ValueError:
            raise ValueError(f"{addr!r} is not 'any', an IPv4 CIDR or a bracketed IPv6 CIDR") from None
        net = (parsed.version, int(parsed.network_address), int(parsed.netmask))
    try:
        ports = _ports(port)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return net, ports


def _proto(text: str) -> tuple[int, ...] | None:
    if text in _PROTO_NAMES:
        return _PROTO_NAMES[text]
    if text.isdigit() and int(text) <= 255:
        return (int(text),)
    raise ValueError(f"protocol {text!r} is not tcp, udp, icmp, any or a number 0-255")


def parse_rules(text: str, source: str) -> tuple[Rule, ...]:
    """The rules of a rules file's ``text``; ``source`` names the file in errors."""
    rules: list[Rule] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 'allow|deny proto src dst', got {len(fields)} fields")
            action, proto, src, dst = (f.lower() for f in fields)
            if action not in ("allow", "deny"):
                raise ValueError(f"action {fields[0]!r} is not allow or deny")
            protos = _proto(proto)
            src_net, sports = _endpoint(src)
            dst_net, dports = _endpoint(dst)
            if (sports or dports) and protos is not None and not set(protos) <= {PROTO_TCP, PROTO_UDP}:
                raise ValueError(f"ports need protocol tcp, udp or any, not {fields[1]!r}")
        except ValueError as exc:
            raise BadInput(f"{source}, line {line_no}: {exc}") from None
        rules.append(Rule(len(rules) + 1, line_no, action == "allow", protos, src_net, sports, dst_net, dports))
    return tuple(rules)


def read_rules(path: str) -> tuple[Rule, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadInput(f"{path}: cannot read the firewall rules file ({reason})") from None
    return parse_rules(text, path)


# ---- the parts of a frame the rules and the state machine need ----

def transport(data: bytes, pos: int, version: int) -> tuple[int, bool]:
    """(offset of the transport header, fragmented) of a frame ``ip_fields`` parsed as IP.

    The offset is -1 when an IPv6 extension chain is cut by the capture.
    """
    if version == 4:
        return pos + (data[pos] & 0x0F) * 4, bool(U16.unpack_from(data, pos + 6)[0] & 0x3FFF)
    _proto, l4, fragment = ipv6_transport(data, pos)
    return l4, bool(fragment)


def tcp_next(state: str, fins: int, flags: int, forward: bool) -> tuple[str, int]:
    """The (state, FIN bits) of a connection after a segment with ``flags`` (from the originator
    when ``forward``). FIN bits: 1 the originator's FIN, 2 the responder's."""
    if flags & _RST:
        return "closed", fins
    if state == "closed":
        return state, fins
    if flags & _SYN:
        if flags & _ACK and not forward and state == "syn_sent":
            return "syn_recv", fins
        return state, fins
    if flags & _FIN and state != "time_wait":
        fins |= 1 if forward else 2
        return ("closing" if fins == 3 else "fin_wait"), fins
    if flags & _ACK:
        if state == "syn_recv" and forward:
            return "established", fins
        if state == "closing":
            return "time_wait", fins
    return state, fins


class Firewall(Middlebox):
    name = "firewall"
    summary = "stateful TCP/UDP firewall: allow/deny rules for new connections, replies pass"
    options = {
        "rules": Option("", input_file, "rules file (allow|deny proto src[:port] dst[:port] a line); "
                                 "empty: the built-in inside-may-open list"),
        "default": Option("deny", parse_policy, "policy for new flows no rule matches: allow or deny"),
        "new_tcp": Option("syn", parse_new_tcp, "which TCP segments may open a connection: syn or any"),
        "established_timeout": Option(3600.0, parse_seconds, "idle lifetime of an established TCP connection (s)"),
        "transitory_timeout": Option(30.0, parse_seconds, "idle lifetime of TCP connections opening or closing (s)"),
        "udp_timeout": Option(60.0, parse_seconds, "idle lifetime of UDP and other pseudo-connections (s)"),
    }

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        o = self.opts
        try:
            o["default"] = parse_policy(o["default"])
            o["new_tcp"] = parse_new_tcp(o["new_tcp"])
            for key in ("established_timeout", "transitory_timeout", "udp_timeout"):
                o[key] = parse_seconds(o[key])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'firewall': {exc}") from None
        o["rules"] = str(o["rules"])
        self.rules = read_rules(o["rules"]) if o["rules"] else parse_rules(DEFAULT_RULES, "<built-in rules>")
        self._default_allow = o["default"] == "allow"
        self._syn_only = o["new_tcp"] == "syn"
        self._timeouts = {"established": o["established_timeout"], "open": o["udp_timeout"]}
        self._transitory = o["transitory_timeout"]

    def declare(self, shared: Any) -> None:
        self.rule_hits = shared.map("rule_hits")
        self.drops = shared.map("drops")

    def new_local_state(self) -> dict[str, Any]:
        return {"conns": {}, "passed": {"tracked": 0, "non_ip": 0}, "expired": 0, "next_sweep": 0.0}

    def decide(self, version: int, proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[int, bool]:
        """(rule number, allowed) for a new flow; rule 0 is the default policy."""
        s, d = int.from_bytes(src, "big"), int.from_bytes(dst, "big")
        for rule in self.rules:
            if rule.matches(version, proto, s, sport, d, dport):
                return rule.number, rule.allow
        return 0, self._default_allow

    def _judge(self, ctx: Any, version: int, proto: int, src: bytes, sport: int, dst: bytes,
               dport: int) -> tuple[int, bool]:
        """Decide a new flow and count the decision on its rule (one shared access)."""
        rule, allowed = self.decide(version, proto, src, sport, dst, dport)
        ctx.add(self.rule_hits, 1, key=rule)
        return rule, allowed

    def _timeout(self, state: str) -> float:
        return self._timeouts.get(state, self._transitory)

    def _drop(self, ctx: Any, reason: str) -> None:
        ctx.add(self.drops, 1, key=reason)

    def process(self, ctx: Any, pkt: Packet) -> None:
        data = pkt.data
        version, proto, src, dst, sport, dport = ip_fields(pkt.linktype, data)
        if version == NON_IP:
            ctx.local["passed"]["non_ip"] += 1
            ctx.emit(data)
            return
        if version == MALFORMED:
            return self._drop(ctx, "malformed")
        pos = ip_start(pkt.linktype, data)
        l4, fragmented = transport(data, pos, version)
        if l4 < 0:
            return self._drop(ctx, "malformed")
        if fragmented:
            return self._drop(ctx, "fragment")
        need = l4 + _L4_HEADER.get(proto, 0)
        if len(data) < need or (version == 4 and U16.unpack_from(data, pos + 2)[0] < need - pos):
            return self._drop(ctx, "malformed")
        flags = data[l4 + 13] if proto == PROTO_TCP else 0

        now = ctx.clock()
        local = ctx.local
        conns = local["conns"]
        if now >= local["next_sweep"]:
            self._sweep(local, now)
        key = (proto, src, sport, dst, dport)
        entry, forward = conns.get(key), True
        if entry is None:
            key = (proto, dst, dport, src, sport)
            entry, forward = conns.get(key), False
        if entry is not None:
            if now - entry[1] > self._timeout(entry[0]):
                del conns[key]
                local["expired"] += 1
                entry = None
            elif proto == PROTO_TCP and entry[0] in _REOPENABLE and flags & (_SYN | _ACK) == _SYN:
                del conns[key]  # port reuse: a new connection, which the rules decide again
                entry = None
        if entry is not None:
            if proto == PROTO_TCP:
                entry[0], entry[3] = tcp_next(entry[0], entry[3], flags, forward)
            entry[1] = max(entry[1], now)
            local["passed"]["tracked"] += 1
            ctx.emit(data)
            return

        if proto == PROTO_TCP and self._syn_only and flags & (_SYN | _ACK | _RST) != _SYN:
            return self._drop(ctx, "invalid")
        rule, allowed = self._judge(ctx, version, proto, src, sport, dst, dport)
        if not allowed:
            return self._drop(ctx, "denied")
        if proto != PROTO_TCP:
            state = "open"
        elif flags & _RST:
            state = "closed"
        else:
            state = "syn_sent" if flags & (_SYN | _ACK) == _SYN else "established"
        conns[(proto, src, sport, dst, dport)] = [state, now, rule, 0]
        ctx.emit(data)

    def _sweep(self, local: dict[str, Any], now: float) -> None:
        """Drop idle entries from a queue's table (deterministic: the clock values are logged)."""
        conns = local["conns"]
        idle = [key for key, entry in conns.items() if now - entry[1] > self._timeout(entry[0])]
        for key in idle:
            del conns[key]
        local["expired"] += len(idle)
        local["next_sweep"] = now + SWEEP_EVERY_S
