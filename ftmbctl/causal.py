"""The causal cut S of a crash (DESIGN §6, step 3).

Input: each queue's logged records after the snapshot (PALs and non-deterministic values, in
program order), each variable's access count in the snapshot, and how many inputs are durable.
Output: for each queue, how many of its records belong to S.

S is the largest set of logged entries closed under "happens before":
- for every queue, a prefix of its log (program order);
- only entries whose packet is in the durable input log;
- for every variable, a gap-free prefix of its access sequence, starting right after the
  snapshot's count (an access whose predecessor is missing cannot be replayed in order).
Cutting a queue's prefix can open a gap in a variable, which cuts another queue, so the cut is
iterated to a fixpoint. Every round only shortens prefixes, so it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ftmbctl.records import NdRecord, PalRecord


@dataclass
class CausalCut:
    cut: list[int]  # records of each queue that are in S
    var_end: dict[int, int] = field(default_factory=dict)  # last sequence number of each variable in S
    rounds: int = 0  # fixpoint rounds it took (1 = nothing to cut beyond the input rule)


def causal_cut(logs: Sequence[Sequence[PalRecord | NdRecord]], base_counts: Sequence[int],
               durable_inputs: int) -> CausalCut:
    """Compute S. ``base_counts[v]`` is variable v's access count in the snapshot."""
    cut = []
    for records in logs:  # the input rule: a queue's prefix stops at the first non-durable packet
        end = len(records)
        for i, record in enumerate(records):
            if record.packet >= durable_inputs:
                end = i
                break
        cut.append(end)
    rounds = 0
    while True:
        rounds += 1
        present: dict[int, set[int]] = {}
        for q, records in enumerate(logs):
            for record in records[:cut[q]]:
                if type(record) is PalRecord:
                    present.setdefault(record.var, set()).add(record.seq)
        var_end: dict[int, int] = {}
        for var, seqs in present.items():
            seq = base_counts[var] if var < len(base_counts) else 0
            while seq + 1 in seqs:
                seq += 1
            var_end[var] = seq
        changed = False
        for q, records in enumerate(logs):
            for i in range(cut[q]):
                record = records[i]
                if type(record) is PalRecord and record.seq > var_end.get(record.var, 0):
                    cut[q] = i
                    changed = True
                    break
        if not changed:
            return CausalCut(cut, var_end, rounds)
