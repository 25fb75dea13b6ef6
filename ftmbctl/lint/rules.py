"""The catalogue of lint rules: a stable code, a name, what is wrong and how to fix it.

Codes are grouped by hundreds and never reused: 1xx the outside world (clock, timers,
randomness, environment), 2xx values that differ between processes (a recovery runs in another
process, under another hash seed), 3xx state kept outside the context, 4xx shared state not
touched the way the context needs, 9xx the silencing comments themselves.

``message`` has one ``{what}`` slot for the construct found ("time.time()", "iterating
`flows`"). ``cause`` names the entry of ``ftmbctl.causes.CAUSES`` that verify would report
for the same bug (None where verify has no such cause), so a finding and a divergence can be
shown side by side. ``packet_only`` rules apply to what ``process()`` runs; the others also to
setup (``__init__``, ``declare``, ``new_local_state``), because a recovery builds the middlebox
again in another process and must build the same one.
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    code: str
    name: str
    cause: str | None
    packet_only: bool
    message: str  # one clause with a {what} slot
    fix: str  # one imperative sentence


RULES: dict[str, Rule] = {r.code: r for r in (
    Rule("FTMB101", "wall-clock", "clock", True,
         "{what} reads the wall clock, which a replay cannot reproduce",
         "use ctx.clock() or ctx.clock_ns(), which are logged and replayed"),
    Rule("FTMB102", "timer", "clock", True,
         "{what} waits or arms a timer at packet time, so what happens depends on real time",
         "never wait in process(): compare ctx.clock() values instead"),
    Rule("FTMB111", "random-module", "random", True,
         "{what} draws from Python's random module, which the log does not hold",
         "use ctx.random() or ctx.randint(), which are logged and replayed"),
    Rule("FTMB112", "os-entropy", "random", True,
         "{what} draws from the operating system's entropy, which the log does not hold",
         "use ctx.random() or ctx.randint(), which are logged and replayed"),
    Rule("FTMB121", "environ", "environ", True,
         "{what} reads the environment at packet time, which a recovery may not share",
         "read it once, as a middlebox option (--mb-opt)"),
    Rule("FTMB122", "file", None, True,
         "{what} touches a file at packet time, whose contents a replay does not see again",
         "read files in __init__, from an option naming the file (as the firewall's rules= does)"),
    Rule("FTMB123", "network", None, True,
         "{what} talks to the network or another process at packet time, which a replay cannot repeat",
         "send outputs only through ctx.emit or ctx.alert, and do look-ups in __init__"),
    Rule("FTMB201", "hash", "str-hash", False,
         "{what} of a str or bytes is salted per process, so a recovery gets another value",
         "hash with zlib.crc32 or hashlib, which are the same in every process"),
    Rule("FTMB202", "object-id", "object-id", False,
         "{what} is an object's address, new in every process",
         "key by values of the packet or of the state, never by id()"),
    Rule("FTMB203", "process-identity", None, False,
         "{what} names the process or thread that runs, which a recovery does not share",
         "compute only from the packet and the state (ctx.queue is for diagnostics only)"),
    Rule("FTMB211", "set-order", "set-order", False,
         "{what} depends on the order of a set, which follows the salted hash of its members",
         "iterate over sorted(the_set), or keep the members in a dict or a list"),
    Rule("FTMB301", "self-state", "hidden-state", True,
         "{what} changes state kept on the middlebox object, which snapshots do not hold",
         "keep what changes per packet in ctx.local or a declared shared variable"),
    Rule("FTMB302", "module-state", "hidden-state", True,
         "{what} changes module-level state, which snapshots do not hold and every queue shares",
         "keep what changes per packet in ctx.local or a declared shared variable"),
    Rule("FTMB303", "thread-local", "hidden-state", True,
         "{what} keeps state in threading.local, which snapshots do not hold",
         "keep what changes per packet in ctx.local (it is already per queue)"),
    Rule("FTMB304", "cache", "cache", True,
         "{what} caches results across packets, and a restore empties the cache",
         "drop the cache, or keep it in ctx.local or a declared shared variable"),
    Rule("FTMB305", "kept-iterator", "hidden-state", True,
         "{what} advances an iterator or random generator kept outside ctx, whose position snapshots do not hold",
         "keep the count in ctx.local, and draw random values from ctx.random()"),
    Rule("FTMB401", "nondet-in-access", None, True,
         "{what} inside a function run by ctx.update or ctx.apply, which runs again at replay",
         "read the value before the access and pass it in (see examples/port_scan_counter.py)"),
    Rule("FTMB402", "nested-access", None, True,
         "{what} inside a function run by ctx.update or ctx.apply, where one access must touch one variable",
         "make the other call before or after this access"),
    Rule("FTMB411", "bypass-write", "bypass-write", True,
         "{what} touches a shared variable behind ctx: no lock, no PAL, no digest",
         "use shared values only through ctx.read, ctx.put, ctx.add, ctx.update or ctx.apply"),
    Rule("FTMB421", "mutable-shared-value", "unsnapshottable", True,
         "{what} stores a value that can change in place in a shared map, which refuses it",
         "store a tuple (a sorted tuple for a set)"),
    Rule("FTMB422", "shared-value-changed", "bypass-write", True,
         "{what} changes a value read from a shared map in place, behind ctx",
         "build a new value and write it with ctx.put, or return it from the ctx.update function"),
    Rule("FTMB900", "unused-silence", None, False,
         "{what} silences nothing on this line",
         "remove the code from the comment, or the comment"),
    Rule("FTMB901", "bad-silence", None, False,
         "{what}, so the comment silences nothing",
         "write `# ftmb: ignore[FTMB###]` naming known codes, then the reason"),
)}

# Codes a silencing comment may name: the 9xx are about the comments themselves.
SILENCEABLE = frozenset(code for code in RULES if not code.startswith("FTMB9"))
