"""The promises to the network a crash point broke, counted by kind (``crash-replay --also-lose``).

A master crash alone must break none: that is what ``verify`` judges, and any broken one fails
it. Once the Input Logger, the stable storage or the Output Logger fails with the master, the
design no longer guarantees them, and the question is how often and how many. So a sweep with
``--also-lose`` (``none`` included, the master-only baseline) *measures* the three invariants
that are promises to the network (output commit, exactly-once input, exactly-once output) and
counts what broke by kind, instead of failing on it; the invariants that say the recovery itself
worked still fail the verdict as usual: it completes, what survives of S replays as logged, the
state after it equals the failure-free one where it can be compared, the snapshot chain holds.

A middlebox that passes the plain sweep breaks promises under ``--also-lose`` only because of the
loss: the recovery of each crash point is otherwise the same one. Run the plain sweep to judge
the middlebox, and this one to measure the design.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftmbctl.recovery import RecoveryResult

KINDS = ("released_not_regenerated", "released_twice", "inputs_lost", "inputs_processed_twice")
WORDS = {"released_not_regenerated": "released outputs not regenerated",
         "released_twice": "outputs released twice",
         "inputs_lost": "inputs lost",
         "inputs_processed_twice": "inputs processed twice"}
MEASURED = frozenset({"output-commit", "exactly-once-input", "exactly-once-output"})


def broken_promises(res: RecoveryResult, recovered: list[tuple[int, int]],
                    released: Mapping[tuple[int, int], bytes]) -> dict[str, int]:
    """What one crash point broke, by kind, from what the recovery regenerated, what its run
    released (``recovered``: the recovered run's output ids, in release order) and what had left
    the box after the snapshot (``released``, as the world saw it: components.Loss):

    - released outputs not regenerated: outputs that had left the box after the snapshot (as the
      world saw them) and that the replay of what survived did not regenerate byte for byte with
      the same id, or could only regenerate by accesses beyond S, or that no snapshot covers when
      nothing was replayed;
    - outputs released twice: outputs that had left the box and the recovered run released again,
      and outputs it released twice itself;
    - inputs lost: inputs the box had taken that nothing processes again (after the restored
      snapshot when nothing is replayed, or skipped);
    - inputs processed twice: inputs the recovery processed once more."""
    not_regenerated = {tuple(oid) for oid in res.missing_outputs + res.uncovered_outputs}
    not_regenerated.update(tuple(item["output_id"]) for item in res.beyond_cut + res.output_mismatches)
    again = sum(1 for oid in recovered if oid in released) + len(recovered) - len(set(recovered))
    return {"released_not_regenerated": len(not_regenerated), "released_twice": again,
            "inputs_lost": res.lost_inputs + res.inputs_skipped, "inputs_processed_twice": res.inputs_repeated}


def judged(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The violations that still fail a crash point whose promises are measured."""
    return [v for v in found if v["invariant"] not in MEASURED]


def promise_totals(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Over the crash points whose promises were measured (``crash_points``): how many broke at
    least one (``broke_any``), and per kind at how many points it broke and how many times in
    all. None when no point was measured (a sweep without --also-lose)."""
    measured = [_counts(p["promises_broken"]) for p in points if "promises_broken" in p]
    if not measured:
        return None
    return {"crash_points": len(measured),
            "broke_any": sum(1 for m in measured if any(m.values())),
            "by_kind": {kind: {"crash_points": sum(1 for m in measured if m[kind]),
                               "count": sum(m[kind] for m in measured)} for kind in KINDS}}


def _counts(found: Any) -> dict[str, int]:
    """A point's counts as results.json holds them (data like the rest: what is not a count is 0)."""
    found = found if isinstance(found, dict) else {}
    return {kind: n if type(n) is int and n > 0 else 0 for kind, n in ((k, found.get(k)) for k in KINDS)}
