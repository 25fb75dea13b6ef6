"""The built-in ``firewall``, ``ratelimit`` and ``lb`` with one classic FTMB bug each. Load with
``--middlebox tests/mutants/library_mutants.py:ClassName``.

Each mutant overrides exactly one small method of the built-in (the one place where it touches
the context for the thing the bug is about) and is otherwise the built-in itself.
``tests/test_library_recovery.py`` records each on a cut of the small trace, crashes and recovers
it at every third event and checks that verify names the right invariant and variable.

| class                  | bug                                            | verify must report                    |
|------------------------|------------------------------------------------|---------------------------------------|
| FirewallDirectRuleHits | allowed flows bump ``rule_hits.data`` directly | logged-prefix-state on ``rule_hits``  |
| RateLimitWallClock     | ``time.time()`` instead of ``ctx.clock()``     | logged-prefix-state on ``buckets[i]`` |
| LoadBalancerPyRandom   | tie-break drawn with ``random.random()``       | logged-prefix-state on ``active``     |
"""

from __future__ import annotations

import random
import time
from typing import Any

from ftmbctl.middleboxes.firewall import Firewall
from ftmbctl.middleboxes.lb import LoadBalancer, least_connections
from ftmbctl.middleboxes.ratelimit import RateLimit, take_token


class FirewallDirectRuleHits(Firewall):
    """BUG (shared write bypassing the context): a "fast path" for allowed flows bumps their rule's
    hit count in ``self.rule_hits.data`` directly; denied flows still go through ``ctx.add``.

    The direct writes take no lock, log no PAL and leave the map's incremental digest behind its
    contents. The ``ctx`` accesses (the denied flows' hits) log that stale digest. A snapshot holds
    the contents, and a replay from it computes the digest from them, so the first ``rule_hits``
    access after the snapshot finds another digest than the log. (From the initial state nothing
    has drifted yet: record and replay make the same unlogged writes.)

    verify must report: ``logged-prefix-state`` on ``rule_hits``; likely cause names "a shared
    write that bypasses the context".
    """

    name = "firewall-direct-rule-hits"

    def _judge(self, ctx: Any, version: int, proto: int, src: bytes, sport: int, dst: bytes,
               dport: int) -> tuple[int, bool]:
        rule, allowed = self.decide(version, proto, src, sport, dst, dport)
        if allowed:
            hits = self.rule_hits.data  # BUG: bypasses ctx (no lock, no PAL, no digest update)
            hits[rule] = hits.get(rule, 0) + 1
        else:
            ctx.add(self.rule_hits, 1, key=rule)
        return rule, allowed


class RateLimitWallClock(RateLimit):
    """BUG (unlogged wall clock): buckets are refilled by ``time.time()`` instead of
    ``ctx.clock()``. The value is not logged, so a replay refills by another (later) time, and the
    bucket's stored refill time differs at the first bucket access it replays.

    verify must report: ``logged-prefix-state`` on one shard ``buckets[i]``; likely cause names
    "unlogged non-determinism".
    """

    name = "ratelimit-wall-clock"

    def _take(self, ctx: Any, src: bytes) -> tuple[float, float, bool, int]:
        now = time.time()  # BUG: not ctx.clock(): not logged, another value in replay
        return ctx.update(self.buckets, self.prefix_of(src), take_token(now, self.opts["rate"], self.opts["burst"]))


class LoadBalancerPyRandom(LoadBalancer):
    """BUG (unlogged randomness): the tie between equally loaded backends is broken by Python's
    ``random.random()`` instead of ``ctx.random()``. The draw is not logged, so a replay can give
    a replayed connection another backend: the ``active`` map (one ``ctx.apply``) then holds
    other counts, and the frames of that flow go to another address.

    verify must report: ``logged-prefix-state`` on ``active``, and ``output-commit`` where a
    rewritten frame of such a flow had been released.
    """

    name = "lb-py-random"

    def _choose(self, ctx: Any) -> int:
        draw = random.random()  # BUG: not ctx.random(): not logged
        return ctx.apply(self.active, least_connections(self.labels, draw))
