"""Ordered replay of the causal cut S, then free replay (DESIGN §6, step 4).

Each queue replays its part of S as a script: every shared access must be the next entry of
its queue's script (same packet, same variable), waits until the variable's counter reaches the
entry's sequence number, and its digest is checked; every non-deterministic call returns the
logged value. Once a queue's script is used up its accesses are free: they wait until the
variable's part of S is done, then run in whatever order the scheduler gives, and
non-deterministic calls run live (the live source is advanced past every logged value, so
under the chaos scheduler it continues exactly where the failure-free run was).

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

    kind: str  # "digest": same access, other value; "order": the access is not the logged one
    queue: int
    packet: int
    var: int | None  # variable of the logged entry (or of the access, when the log has none)
    seq: int | None
    expected: str  # what the log says
    got: str  # what the replay did

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReplayPlan:
    """What all queues share during a replay: their scripts and the end of S for each variable."""

    scripts: list[list[PalRecord | NdRecord]]
    var_end: dict[int, int]
    forcing: bool = True
    divergences: list[ReplayDivergence] = field(default_factory=list)
    replayed: int = 0  # entries of S replayed in order
    trace: list[tuple[int, int, int]] = field(default_factory=list)  # (var, seq, packet) of every access
    free_accesses: int = 0
    free_nondet: int = 0

    remaining: int = 0  # entries of S not replayed yet
    on_done: Callable[[], None] | None = None  # called once S is used up (or forcing stops)

    def __post_init__(self) -> None:
        self.remaining = sum(len(script) for script in self.scripts)

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


class ReplayContext(RecordContext):
    """A record context that first follows its queue's script of S, then runs free."""

    def __init__(self, *args: Any, plan: ReplayPlan, wait_until: Callable[[int, Callable[[], bool]], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.script = plan.scripts[self.queue]
        self.pos = 0
        self._wait_until = wait_until

    def _next_entry(self) -> PalRecord | NdRecord | None:
        if self.plan.forcing and self.pos < len(self.script):
            return self.script[self.pos]
        return None

    def _access(self, var: SharedVar, op: Callable[..., Any], a: Any, b: Any) -> Any:
        plan = self.plan
        entry = self._next_entry()
        if entry is not None:
            if type(entry) is PalRecord and entry.packet == self.packet.id and entry.var == var.var_id:
                self.pos += 1
                plan.consumed()
                want = entry.seq - 1
                self._wait_until(self.queue, lambda: var.count >= want or not plan.forcing)
                if var.count == want:
                    result = super()._access(var, op, a, b)
                    plan.trace.append((var.var_id, want + 1, self.packet.id))
                    plan.replayed += 1
                    if entry.digest is None:  # the record's access left the value as it was
                        if not self.same:
                            plan.diverge(ReplayDivergence("digest", self.queue, entry.packet, entry.var, entry.seq,
                                                          "value unchanged", f"digest {fold16(self.digest):04x}"),
                                         False)
                    elif self.same or fold16(self.digest) != entry.digest:
                        plan.diverge(ReplayDivergence("digest", self.queue, entry.packet, entry.var, entry.seq,
                                                      f"digest {entry.digest:04x}",
                                                      "value unchanged" if self.same else
                                                      f"digest {fold16(self.digest):04x}"), False)
                    return result
                if plan.forcing:  # the counter went past: someone else took this turn
                    plan.diverge(ReplayDivergence("order", self.queue, entry.packet, entry.var, entry.seq,
                                                  f"access {entry.seq}", f"counter already at {var.count}"), True)
            else:
                # Replay and record parted at the earlier of the two packets: an access the record's
                # packet made and the replay's skipped (the log's entry is older), or one the replay
                # makes that the record did not (this packet is older than the log's entry).
                if self.packet.id < entry.packet or type(entry) is not PalRecord:
                    blamed = (self.packet.id, var.var_id, var.count + 1)
                else:
                    blamed = (entry.packet, entry.var, entry.seq)
                plan.diverge(ReplayDivergence("order", self.queue, *blamed, _describe(entry),
                                              f"access to variable {var.var_id} by packet {self.packet.id}"), True)
        elif plan.forcing:
            end = plan.var_end.get(var.var_id, 0)
            self._wait_until(self.queue, lambda: var.count >= end or not plan.forcing)
        plan.free_accesses += 1
        result = super()._access(var, op, a, b)
        plan.trace.append((var.var_id, var.count, self.packet.id))
        return result

    def _nondet(self, kind: int) -> int:
        plan = self.plan
        entry = self._next_entry()
        if entry is not None:
            if type(entry) is NdRecord and entry.packet == self.packet.id and entry.kind == kind:
                self.pos += 1
                plan.consumed()
                plan.replayed += 1
                self.live.value(kind, self.packet.ts_ns)  # keep the live source in step with the log
                return self._log_nondet(kind, entry.value)
            # as for accesses: the earlier packet is where replay and record parted
            if self.packet.id < entry.packet or type(entry) is not PalRecord:
                blamed = (min(self.packet.id, entry.packet), None, None)
            else:
                blamed = (entry.packet, entry.var, entry.seq)
            plan.diverge(ReplayDivergence("order", self.queue, *blamed, _describe(entry),
                                          f"{'clock' if kind == 1 else 'random'} read by packet {self.packet.id}"),
                         True)
        plan.free_nondet += 1
        return super()._nondet(kind)


def _describe(entry: PalRecord | NdRecord) -> str:
    if type(entry) is PalRecord:
        return f"access {entry.seq} to variable {entry.var} by packet {entry.packet}"
    return f"{'clock' if entry.kind == 1 else 'random'} value for packet {entry.packet}"
