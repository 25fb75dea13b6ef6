"""Likely causes of a verify violation, in a middlebox author's words (DESIGN §7).

``CAUSES`` is the catalogue: a code, what the middlebox does wrong, and how to fix it.
``RULES`` ranks them from what verify knows about a violation (its invariant and ``evidence``):
the first rule whose conditions all hold gives the codes, best first. A condition on a fact the
violation does not report never holds (unknown is not False). Plain data: no terminal, no typer.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Cause(NamedTuple):
    code: str
    what: str  # what the middlebox does, one short noun phrase: "likely: X, or Y"
    fix: str  # how to fix it, one imperative sentence


CAUSES: dict[str, Cause] = {c.code: c for c in (
    Cause("str-hash", "hash() of a str or bytes (salted per process)",
          "hash with zlib.crc32 or hashlib, which are the same in every process"),
    Cause("set-order", "iterating a set or frozenset of str (its order follows the salted hash)",
          "iterate over sorted(the_set), or keep the members in a list or dict"),
    Cause("object-id", "id() of an object (an address, new in every process)",
          "key by values of the packet or of the state, never by id()"),
    Cause("cache", "a cache (functools.lru_cache or cache, a memo dict) that a restore empties",
          "drop the cache, or keep it in ctx.local or a declared shared variable"),
    Cause("hidden-state", "state kept on self, at module level or in threading.local (lost at a restore)",
          "keep what changes per packet in ctx.local or a declared shared variable"),
    Cause("clock", "the wall clock read directly (time.time and the like, datetime.now)",
          "take the time from ctx.clock() or ctx.clock_ns(), which are logged and replayed"),
    Cause("random", "random, os.urandom or uuid used directly",
          "take random values from ctx.random() or ctx.randint(), which are logged and replayed"),
    Cause("environ", "an environment variable read at packet time",
          "read it once, as a middlebox option (--mb-opt)"),
    Cause("unsnapshottable", "a value snapshots cannot keep as it was (an object, a defaultdict, a closure)",
          "keep plain values: None, bool, int, float, str, bytes, and tuples, lists, dicts and sets of them"),
    Cause("bypass-write", "a shared value changed in place, bypassing ctx",
          "change shared values only through ctx.put, ctx.add, ctx.update or ctx.apply"),
    Cause("exception", "an exception in the middlebox's own code",
          "reproduce it with `crash-replay RUN --at EVENT --keep DIR` and `recover`, then fix the code"),
    Cause("endless-loop", "a loop that never ends (waiting for state a restore lost, or for time to pass)",
          "bound every loop by the packet and the state in ctx, and never wait inside process()"),
    Cause("ftmbctl", "a bug in ftmbctl's recovery, not in the middlebox",
          "report it with the crash image (`crash-replay RUN --at EVENT --keep DIR`)"),
)}

MOST_LIKELY = 4  # causes named per violation
_STATE = frozenset({"digest", "state", "order", "nondet"})
_OUTPUT_DECISION = frozenset({"output-missing", "output-extra"})

# (conditions, codes best first). Keys: "invariant" (the violation's), else an evidence fact.
# A set matches any of its members; True/False must equal the reported fact.
RULES: tuple[tuple[dict[str, Any], tuple[str, ...]], ...] = (
    ({"kind": {"exception"}, "exception_type": {"AttributeError", "KeyError"}, "restored": True},
     ("hidden-state", "exception", "cache")),
    ({"kind": {"exception"}, "exception_type": {"TypeError"}, "restored": True},
     ("exception", "unsnapshottable", "hidden-state")),
    ({"kind": {"exception"}, "restored": True}, ("exception", "hidden-state", "cache")),
    ({"kind": {"exception"}}, ("exception",)),
    ({"kind": {"hang"}, "restored": True}, ("endless-loop", "hidden-state", "clock")),
    ({"kind": {"hang"}}, ("endless-loop", "clock")),
    ({"invariant": {"exactly-once-input", "exactly-once-output"}}, ("ftmbctl",)),
    ({"kind": {"release", "input", "output-twice"}}, ("ftmbctl",)),  # the release rule or the output log
    ({"invariant": {"snapshot-chain"}, "restored": True}, ("unsnapshottable", "hidden-state", "bypass-write", "clock")),
    # Same access, another value: a write that bypassed ctx, or a value ctx did not log. State on
    # self or in a cache can only be lost by a restore, and a write that bypasses ctx only drifts
    # from a restored state (from the initial one, record and replay make the same writes):
    # without a restore neither is a candidate, but the salted hash is.
    ({"kind": {"digest"}, "restored": True}, ("hidden-state", "bypass-write", "clock", "random")),
    ({"kind": {"digest"}, "hash_seeds_differ": True}, ("clock", "random", "str-hash", "set-order")),
    ({"kind": {"digest"}}, ("clock", "random", "bypass-write", "environ")),
    ({"kind": {"output-bytes"}, "restored": True}, ("hidden-state", "clock", "random", "set-order")),
    ({"kind": {"output-bytes"}}, ("clock", "random", "set-order", "str-hash")),
    ({"kind": _STATE | {"stall"} | _OUTPUT_DECISION, "restored": True},
     ("hidden-state", "clock", "random", "str-hash")),
    ({"kind": _STATE | {"stall"} | _OUTPUT_DECISION, "hash_seeds_differ": True},
     ("clock", "random", "str-hash", "set-order")),
    ({"kind": _STATE | {"stall"} | _OUTPUT_DECISION}, ("clock", "random", "environ", "object-id")),
    ({}, ("clock", "random", "hidden-state")),
)


def facts(violation: dict[str, Any]) -> dict[str, Any]:
    """What the rules look at: the evidence, its invariant, and an exception's type when only the
    ``exception`` text ("TypeError: message") says it."""
    found = dict(violation.get("evidence") or {})
    found["invariant"] = violation.get("invariant")
    if found.get("after_restore") is True:
        found.setdefault("restored", True)  # the first packet after a restore implies one
    exception = violation.get("exception")
    if exception:
        found.setdefault("kind", "exception")
        found.setdefault("exception_type", str(exception).split(":", 1)[0].strip())
    return found


def _holds(conditions: dict[str, Any], known: dict[str, Any]) -> bool:
    for key, wanted in conditions.items():
        if key not in known or known[key] is None:
            return False
        value = known[key]
        if isinstance(wanted, (set, frozenset)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def likely_causes(violation: dict[str, Any]) -> list[str]:
    """Codes of ``CAUSES``, best first, at most MOST_LIKELY."""
    known = facts(violation)
    for conditions, codes in RULES:
        if _holds(conditions, known):
            return list(codes[:MOST_LIKELY])
    return []  # unreachable: the last rule holds for everything


def describe(codes: list[str]) -> str:
    """One sentence: "likely: X, or Y; fix: <the first one's fix>" ("" for no codes)."""
    known = [CAUSES[c] for c in codes if c in CAUSES]
    if not known:
        return ""
    return f"likely: {', or '.join(c.what for c in known)}; fix: {known[0].fix}"


SUSPECTS = 3  # source lines named per violation


def source_findings(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """What lint (before the record) and the runtime guard (during it) found in the middlebox's
    source, from the run's manifest, each with the cause code verify would give the same bug."""
    from ftmbctl.lint.rules import RULES as LINT_RULES

    found = []
    for source in ("lint", "guard"):
        for finding in (manifest.get(source) or {}).get("findings") or []:
            rule = LINT_RULES.get(finding.get("code"))
            if rule is not None and rule.cause is not None and finding.get("file") and finding.get("line"):
                found.append({"source": source, "file": finding["file"], "line": finding["line"],
                              "code": finding["code"], "message": finding.get("message", ""), "cause": rule.cause})
    return found


def suspects(codes: list[str], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The source findings behind a violation's likely causes, best cause first: "probably this
    line". A place lint and the guard both name is given once (lint's, which has the column)."""
    picked: list[dict[str, Any]] = []
    seen = set()
    for code in codes:
        for finding in findings:
            key = (finding["file"], finding["line"], finding["code"])
            if finding["cause"] == code and key not in seen:
                seen.add(key)
                picked.append(finding)
                if len(picked) == SUSPECTS:
                    return picked
    return picked


def describe_suspects(found: list[dict[str, Any]]) -> str:
    """"probably file:line (CODE), or file:line (CODE)" ("" for none)."""
    if not found:
        return ""
    return "probably " + ", or ".join(f"{f['file']}:{f['line']} ({f['code']})" for f in found)
