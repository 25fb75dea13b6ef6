"""chain: several middleboxes recorded, crashed and recovered as one (a service chain in one box).

``boxes=firewall,nat,monitor`` (default ``nat,monitor``) names the members, in the order a packet
crosses them; each is resolved like ``--middlebox`` (a built-in name, ``package.module:Class`` or
``path/to/file.py:Class``; a path must not contain a comma). A member is known by its class's
``name``, which must be unique in the chain and must not contain ``/`` or ``.``. Its options are
given as ``--mb-opt MEMBER.KEY=VALUE``, e.g. ``--mb-opt nat.public_ip=198.51.100.1``, and are
parsed and checked by the member itself.

How a packet crosses the chain: the first member processes the input; every output it emits is
an input of the next member (same input id and timestamp, the output's link type and bytes), and
so on; what the last member emits leaves the chain, in order. A member that emits nothing drops
the packet for the rest of the chain. Alerts (``ctx.alert``) are not packets: they leave the chain
at once, in the order they are raised, and no later member sees them.

State: each member declares its shared variables through a proxy that prefixes every name with
the member's name and a slash (``nat/ports``, ``nat/mappings[3]``, ``monitor/talkers``), so two
members can use the same names and the manifest says whose a variable is; the declaration order
(members in chain order) fixes every variable id. Each member's queue-local state is the entry
``ctx.local[MEMBER]``. A member talks to its own context, a ``Context`` whose shared accesses
and non-deterministic values are those of the chain's context: every access is logged, replayed
and checked exactly as if the member ran alone, attributed to the input packet.
"""

from __future__ import annotations

import inspect
from typing import Any

from ftmbctl.context import ALERT_LINKTYPE, Context
from ftmbctl.errors import FtmbError, UsageError
from ftmbctl.middlebox import Middlebox, Option, Packet, resolve_middlebox
from ftmbctl.shared import SharedVar


def parse_boxes(text: Any) -> str:
    """``"nat, monitor"`` -> ``"nat,monitor"``."""
    specs = [part.strip() for part in str(text).split(",") if part.strip()]
    if not specs:
        raise ValueError("boxes needs at least one middlebox, e.g. boxes=nat,monitor")
    return ",".join(specs)


class PrefixedShared:
    """What a member's ``declare`` receives: the declaration methods of ``SharedState`` (every
    method whose first parameter is ``name``: counter, map, sharded_map, and any kind added
    later), with the name prefixed by ``PREFIX/``."""

    def __init__(self, shared: Any, prefix: str) -> None:
        self._shared = shared
        self._prefix = prefix

    def _declarer(self, attr: str) -> Any:
        method = getattr(self._shared, attr, None)
        params = list(inspect.signature(method).parameters) if callable(method) and not attr.startswith("_") else []
        if not params or params[0] != "name":
            raise AttributeError(f"a chain member can only declare shared variables; {attr!r} is not a declaration")

        def declare(name: str, *args: Any, **kwargs: Any) -> Any:
            return method(f"{self._prefix}/{name}", *args, **kwargs)

        return declare

    def __getattr__(self, attr: str) -> Any:
        return self._declarer(attr)


class MemberContext(Context):
    """A member's context: its own queue-local state, packet and outputs; shared accesses and
    non-deterministic values go through the chain's context (logged, replayed, checked)."""

    def __init__(self, outer: Context, local: dict[str, Any], packet: Packet) -> None:
        super().__init__(outer.queue, local)
        self.packet = packet
        self._outer = outer

    def _access(self, var: SharedVar, op: Any, a: Any, b: Any) -> Any:
        return self._outer._access(var, op, a, b)

    def _nondet(self, kind: int) -> int:
        return self._outer._nondet(kind)


class Chain(Middlebox):
    name = "chain"
    summary = "a chain of middleboxes as one: outputs of each member are the inputs of the next"
    options = {
        "boxes": Option("nat,monitor", parse_boxes, "comma-separated members, in packet order; "
                                                    "their options as MEMBER.KEY=VALUE"),
    }

    @classmethod
    def parse_options(cls, pairs: list[str]) -> dict[str, Any]:
        """Own options as usual; ``member.key=value`` kept as text for the member to parse."""
        own, members = [], {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if sep and "." in key.strip():
                members[key.strip()] = raw
            else:
                own.append(pair)
        parsed = super().parse_options(own)
        parsed.update(members)
        return parsed

    @classmethod
    def canonical_pairs(cls, pairs: list[str]) -> list[str]:
        """Own options as usual, and each ``member.key=value`` as its member would store it (a
        member's rules file made absolute too, so a recovery elsewhere finds it)."""
        boxes = cls.options["boxes"].default
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if sep and key.strip() == "boxes":
                boxes = raw
        try:
            classes = {member.name: member for member in map(resolve_middlebox, parse_boxes(boxes).split(","))}
        except (ValueError, TypeError, FtmbError):
            return super().canonical_pairs(pairs)  # building the chain reports what is wrong
        out = []
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            member, dot, option = key.strip().partition(".")
            if sep and dot and member in classes:
                (pair,) = classes[member].canonical_pairs([f"{option}={raw}"])
                pair = f"{member}.{pair}"
            else:
                (pair,) = super().canonical_pairs([pair])
            out.append(pair)
        return out

    def __init__(self, **opts: Any) -> None:
        member_opts = {key: value for key, value in opts.items() if "." in key}
        super().__init__(**{key: value for key, value in opts.items() if "." not in key})
        try:
            self.opts["boxes"] = parse_boxes(self.opts["boxes"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"middlebox 'chain': {exc}") from None
        classes = [resolve_middlebox(spec) for spec in self.opts["boxes"].split(",")]
        names = [cls.name for cls in classes]
        for name in names:
            if not name or "/" in name or "." in name:
                raise UsageError(f"middlebox 'chain': member name {name!r} must be non-empty without '/' or '.'")
            if names.count(name) > 1:
                raise UsageError(f"middlebox 'chain': {name!r} appears twice (a member's name must be unique)")
        given: dict[str, dict[str, Any]] = {name: {} for name in names}
        for key, value in member_opts.items():
            member, _, option = key.partition(".")
            if member not in given:
                raise UsageError(f"middlebox 'chain': option {key!r} names no member (members: {', '.join(names)})")
            given[member][option] = value
        self.members: list[tuple[str, Middlebox]] = []
        for cls, name in zip(classes, names):
            raw = given[name]
            typed = cls.parse_options([f"{k}={v}" for k, v in raw.items() if isinstance(v, str)])
            typed.update({k: v for k, v in raw.items() if not isinstance(v, str)})
            self.members.append((name, cls(**typed)))
        self.opts.update(member_opts)

    def member(self, name: str) -> Middlebox:
        """The member called ``name``."""
        return dict(self.members)[name]

    def declare(self, shared: Any) -> None:
        for name, member in self.members:
            member.declare(PrefixedShared(shared, name))

    def new_local_state(self) -> dict[str, Any]:
        return {name: member.new_local_state() for name, member in self.members}

    def process(self, ctx: Any, pkt: Packet) -> None:
        batch = [pkt]
        for name, member in self.members:
            local = ctx.local[name]
            passed: list[Packet] = []
            for packet in batch:
                mctx = MemberContext(ctx, local, packet)
                member.process(mctx, packet)
                for linktype, data in mctx.outputs:
                    if linktype == ALERT_LINKTYPE:
                        ctx.emit(data, ALERT_LINKTYPE)
                    else:
                        passed.append(Packet(pkt.id, pkt.ts_ns, linktype, data))
            batch = passed
            if not batch:
                return
        for packet in batch:
            ctx.emit(packet.data, packet.linktype)
