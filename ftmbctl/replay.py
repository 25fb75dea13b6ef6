"""Ordered replay of the causal cut S, then the reference schedule or free replay (DESIGN §6).

Each queue replays a script: every shared access must be the next entry of its queue's script
(same packet, same variable), waits until the variable's counter reaches the entry's sequence
number, and its digest is checked; every non-deterministic call returns the logged value.

A queue's script starts with its part of S, read from the crash image. What follows depends on
who asks (DESIGN §6 step 5):
- a check (``verify``, ``crash-replay``) appends the failure-free run's own records up to the
  snapshot boundary where state is compared: the *reference schedule*, checked exactly like S.
  Entries past ``cut[q]`` are the reference; a divergence there is a full-state failure, one
  inside S a logged-prefix-state failure. An access the reference does not have, by a packet
  before that boundary, is a divergence too (``strict_until``).
- a real recovery (``ftmbctl recover``) has only S: once a queue's script is used up its
  accesses are free: they wait until the variable's part of S is done, then run in whatever
  order the scheduler gives, and non-deterministic calls run live.

A replay never raises on a divergence: it notes the first one (which access, why) and stops
forcing the order, so the recovery completes and ``verify`` can report what broke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ftmbctl.queuelog import fold16
from ftmbctl.records import NdRecord, PalRecord
from ftmbctl.record import RecordContext
from ftmbctl.shared import SharedVar


@dataclass
class ReplayDivergence:
    """The first place where a replay departed from its log."""

    kind: str  # "digest": same access, other value; "order": the access is not the logged one;
    # "stall": no queue can make the next logged access (the middlebox skipped one)
    queue: int
    packet: int
    var: int | None  # variable of the logged entry (or of the access, when the log has none)
    seq: int | None
    expected: str  # what the log says
    got: str  # what the replay did
    in_cut: bool = True  # at an entry of S (else of the reference schedule after it)
    first_after_restore: bool = False  # at the first packet its queue replayed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReplayPlan:
    """What all queues share during a replay: their scripts and the end of S for each variable."""

    scripts: list[list[PalRecord | NdRecord]]
    var_end: dict[int, int]
    cut: list[int] | None = None  # entries of each script that are S (None: all of them)
    strict_until: int = 0  # packets before this must follow their script exactly (the reference)
    forcing: bool = True
    divergences: list[ReplayDivergence] = field(default_factory=list)
    replayed: int = 0  # entries of S replayed in order
    followed: int = 0  # entries of the reference schedule after S replayed in order
    free_accesses: int = 0
    free_nondet: int = 0

    remaining: int = 0  # script entries not replayed yet
    on_done: Callable[[], None] | None = None  # called once the scripts are used up (or forcing stops)
    waits: dict[int, tuple[SharedVar, PalRecord]] = field(default_factory=dict)  # queue -> what it waits for
    positions: Callable[[], list[str]] | None = None  # where every queue is (the scheduler's words)

    def __post_init__(self) -> None:
        self.remaining = sum(len(script) for script in self.scripts)
        if self.cut is None:
            self.cut = [len(script) for script in self.scripts]

    def consumed(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and self.on_done is not None:
            self.on_done()

    def diverge(self, divergence: ReplayDivergence, stop_forcing: bool) -> None:
        self.divergences.append(divergence)
        if stop_forcing and self.forcing:
            self.forcing = False
            if self.on_done is not None:
                self.on_done()

    def stall(self) -> bool:
        """Nothing can run: every queue that still has work waits for an access no queue makes.
        Name the first such access (the failure-free run's, with its packet) as a divergence and
        stop forcing, so the recovery completes. False when there is nothing to give up."""
        if not self.forcing or not self.waits:
            return False
        blamed = None
        for queue, (var, entry) in sorted(self.waits.items(), key=lambda w: w[1][1].packet):
            missing = var.count + 1
            for q, script in enumerate(self.scripts):
                for i, other in enumerate(script):
                    if type(other) is PalRecord and other.var == var.var_id and other.seq == missing:
                        blamed = ReplayDivergence(
                            "stall", q, other.packet, other.var, other.seq, f"{describe_entry(other)} (queue {q})",
                            f"no queue made it; queue {queue} waits for it before its access {entry.seq} "
                            f"by packet {entry.packet}", in_cut=i < self.cut[q])
                        break
                if blamed:
                    break
            if blamed:
                break
        if blamed is None:
            queue, (var, entry) = min(self.waits.items(), key=lambda w: w[1][1].packet)
            blamed = ReplayDivergence("stall", queue, entry.packet, entry.var, entry.seq, describe_entry(entry),
                                      f"the variable stays at access {var.count}: no queue makes access "
                                      f"{var.count + 1}", in_cut=True)
        if self.positions is not None:
            blamed.got += "; " + "; ".join(self.positions())
        self.diverge(blamed, True)
        return True


class ReplayContext(RecordContext):
    """A record context that follows its queue's script (S, then the reference), then runs free."""

    def __init__(self, *args: Any, plan: ReplayPlan, wait_until: Callable[[int, Callable[[], bool]], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.script = plan.scripts[self.queue]
        self.cut = plan.cut[self.queue]  # entries before this index are S
        self.pos = 0
        self.first_packet: int | None = None  # the first packet of this queue that used the script
        self.packet_start = 0  # where the current packet's entries start in the script
        self._started: int | None = None  # the packet packet_start belongs to
        self._wait_until = wait_until
        self._free_wait: tuple[SharedVar, int] | None = None  # waiting for a variable's end of S

    def where(self) -> str:
        """This queue's position, and what it waits for if it waits: for a stalled replay's report."""
        if self.packet is None:
            return f"queue {self.queue}, before its first packet"
        at = f"queue {self.queue} at packet {self.packet.id}"
        waiting = self.plan.waits.get(self.queue)
        if waiting is not None:
            var, entry = waiting
            return (f"{at} waits for access {entry.seq} to variable {entry.var} (the variable is at access "
                    f"{var.count})")
        if self._free_wait is not None:
            var, end = self._free_wait
            return (f"{at} waits for variable {var.var_id} to reach access {end}, the end of its logged "
                    f"accesses (it is at access {var.count})")
        return at

    def beyond_cut(self, packet: int) -> PalRecord | NdRecord | None:
        """The first entry past S that ``packet`` (the one just processed) used, or None when
        everything it replayed is in S: then its outputs came from S alone."""
        if self._started != packet or self.pos <= max(self.cut, self.packet_start):
            return None
        return self.script[max(self.cut, self.packet_start)]

    def _next_entry(self) -> PalRecord | NdRecord | None:
        pid = self.packet.id
        if pid != self._started:
            self._started, self.packet_start = pid, self.pos
            if self.first_packet is None:
                self.first_packet = pid
        if self.plan.forcing and self.pos < len(self.script):
            return self.script[self.pos]
        return None

    def _diverge(self, kind: str, at: int, packet: int, var: int | None, seq: int | None, expected: str, got: str,
                 stop_forcing: bool) -> None:
        self.plan.diverge(ReplayDivergence(kind, self.queue, packet, var, seq, expected, got, in_cut=at < self.cut,
                                           first_after_restore=packet == self.first_packet), stop_forcing)

    def _access(self, var: SharedVar, op: Callable[..., Any], a: Any, b: Any) -> Any:
        plan = self.plan
        entry = self._next_entry()
        if entry is not None:
            at = self.pos
            if type(entry) is PalRecord and entry.packet == self.packet.id and entry.var == var.var_id:
                self.pos += 1
                plan.consumed()
                want = entry.seq - 1
                if var.count < want:
                    plan.waits[self.queue] = (var, entry)
                    self._wait_until(self.queue, lambda: var.count >= want or not plan.forcing)
                    del plan.waits[self.queue]
                if var.count == want:
                    result = super()._access(var, op, a, b)
                    if at < self.cut:
                        plan.replayed += 1
                    else:
                        plan.followed += 1
                    if entry.digest is None:  # the record's access left the value as it was
                        if not self.same:
                            self._diverge("digest", at, entry.packet, entry.var, entry.seq, "value unchanged",
                                          f"digest {fold16(self.digest):04x}", False)
                    elif self.same or fold16(self.digest) != entry.digest:
                        self._diverge("digest", at, entry.packet, entry.var, entry.seq, f"digest {entry.digest:04x}",
                                      "value unchanged" if self.same else f"digest {fold16(self.digest):04x}", False)
                    return result
                if plan.forcing:  # the counter went past: another packet took this turn
                    self._diverge("order", at, entry.packet, entry.var, entry.seq,
                                  f"access {entry.seq} by packet {entry.packet}",
                                  f"access {entry.seq} already made by another packet (the variable is at access "
                                  f"{var.count})", True)
            else:
                # Replay and record parted at the earlier of the two packets: an access the record's
                # packet made and the replay's skipped (the log's entry is older), or one the replay
                # makes that the record did not (this packet is older than the log's entry).
                if self.packet.id < entry.packet or type(entry) is not PalRecord:
                    blamed = (self.packet.id, var.var_id, var.count + 1)
                else:
                    blamed = (entry.packet, entry.var, entry.seq)
                self._diverge("order", at, *blamed, describe_entry(entry),
                              f"access {var.count + 1} to variable {var.var_id} by packet {self.packet.id}", True)
        elif plan.forcing:
            if self.packet.id < plan.strict_until:  # the failure-free run made no such access
                self._diverge("order", self.pos, self.packet.id, var.var_id, var.count + 1,
                              f"no further access by queue {self.queue}",
                              f"access {var.count + 1} to variable {var.var_id} by packet {self.packet.id}", True)
            else:
                end = plan.var_end.get(var.var_id, 0)
                if var.count < end:
                    self._free_wait = (var, end)
                    self._wait_until(self.queue, lambda: var.count >= end or not plan.forcing)
                    self._free_wait = None
        plan.free_accesses += 1
        return super()._access(var, op, a, b)

    def _nondet(self, kind: int) -> int:
        plan = self.plan
        entry = self._next_entry()
        if entry is not None:
            at = self.pos
            if type(entry) is NdRecord and entry.packet == self.packet.id and entry.kind == kind:
                self.pos += 1
                plan.consumed()
                if at < self.cut:
                    plan.replayed += 1
                else:
                    plan.followed += 1
                self.live.value(kind, self.packet.ts_ns)  # keep the live source in step with the log
                return self._log_nondet(kind, entry.value)
            # as for accesses: the earlier packet is where replay and record parted
            if self.packet.id < entry.packet or type(entry) is not PalRecord:
                blamed = (min(self.packet.id, entry.packet), None, None)
            else:
                blamed = (entry.packet, entry.var, entry.seq)
            self._diverge("order", at, *blamed, describe_entry(entry),
                          f"{_ND_NAMES.get(kind, 'random')} read by packet {self.packet.id}", True)
        elif plan.forcing and self.packet.id < plan.strict_until:
            self._diverge("order", self.pos, self.packet.id, None, None, f"no further value for queue {self.queue}",
                          f"{_ND_NAMES.get(kind, 'random')} read by packet {self.packet.id}", True)
        plan.free_nondet += 1
        return super()._nondet(kind)


_ND_NAMES = {1: "clock", 2: "random"}


def describe_entry(entry: PalRecord | NdRecord) -> str:
    """A script entry in the words of a divergence report."""
    if type(entry) is PalRecord:
        return f"access {entry.seq} to variable {entry.var} by packet {entry.packet}"
    return f"{_ND_NAMES.get(entry.kind, 'random')} value for packet {entry.packet}"
