"""Where a run's sweep results live, and how the shards of one sweep become one verdict.

- ``RUN/crash/results.json``: the latest complete sweep (every point it selected), what
  ``verify`` reports.
- ``RUN/crash/sweeps/<id>.json``: every complete sweep, named by its *sweep id*, a digest of what
  it selected (points, variants, chain, seed, middlebox; not how it ran: jobs, executor, shard).
  A sweep with another selection is kept beside; the same selection again replaces its own file.
- ``RUN/crash/sweeps/<id>.shard-K-of-N.json``: shard K of N of a sweep (``crash-replay --shard``):
  the K-th of N contiguous, disjoint parts of the selected points in timeline order (contiguous:
  neighbouring points share the snapshots a worker keeps decoded). The union over K is exactly
  the unsharded selection.

``merge`` checks that shard files are of this run and of one sweep, that none is missing or
given twice, and joins them. Plain data in and out: ``verify`` wraps the documents.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ftmbctl.errors import BadInput, DamagedRun, UsageError, writes_to
from ftmbctl.safeio import MAX_RESULTS, read_regular
from ftmbctl.snapshot import write_atomically

RESULTS = Path("crash") / "results.json"
SWEEPS = Path("crash") / "sweeps"
_SHARD_NAME = re.compile(r"^(?P<id>[0-9a-f]{12})\.shard-(?P<k>[0-9]+)-of-(?P<n>[0-9]+)\.json$")
MAX_SHARDS = 100_000
EXECUTION = ("jobs", "shard", "executor")  # how a sweep ran, not what it selected


def sweep_id(selection: dict[str, Any], middlebox_spec: str) -> str:
    """12 hex digits naming what a sweep selects, the same on every machine."""
    chosen = {k: v for k, v in selection.items() if k not in EXECUTION}
    text = json.dumps({"selection": chosen, "middlebox": middlebox_spec}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with 1 <= K <= N (UsageError in one sentence otherwise)."""
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text or "")
    if not match:
        raise UsageError(f"--shard takes K/N, shard K of N (for example 2/4), got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= n <= MAX_SHARDS:
        raise UsageError(f"--shard {text}: N must be 1 to {MAX_SHARDS:,}, got {n}")
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text}: K must be 1 to N ({n}), got {k}")
    return k, n


def shard_of(points: list[Any], k: int, n: int) -> list[Any]:
    """The K-th of N contiguous, disjoint parts of ``points`` (sizes differ by at most one)."""
    total = len(points)
    return points[(k - 1) * total // n:k * total // n]


def shard_file(sid: str, k: int, n: int) -> Path:
    return SWEEPS / f"{sid}.shard-{k}-of-{n}.json"


def save(run: Path, doc: dict[str, Any]) -> Path:
    """Write a sweep's document where it belongs (atomically: a failing disk leaves what was
    there); a complete sweep also becomes ``results.json``. Returns the file it is kept in."""
    shard = doc.get("shard")
    kept = shard_file(doc["sweep_id"], shard["index"], shard["count"]) if shard else SWEEPS / f"{doc['sweep_id']}.json"
    text = (json.dumps(doc, indent=1) + "\n").encode()
    with writes_to(run / SWEEPS):
        (run / SWEEPS).mkdir(parents=True, exist_ok=True)
    write_atomically(run / kept, text)
    if not shard:
        write_atomically(run / RESULTS, text)
    return run / kept


def read(path: Path) -> dict[str, Any]:
    """One results document (DamagedRun in one sentence when it is not one)."""
    try:
        doc = json.loads(read_regular(path, MAX_RESULTS).decode())
        if not isinstance(doc, dict) or not isinstance(doc.get("crash_points"), list):
            raise ValueError("not a crash-replay results document")
        return doc
    except FileNotFoundError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DamagedRun(f"{path}: cannot be read ({exc}); run crash-replay again") from None


def kept(run: Path) -> list[dict[str, Any]]:
    """One line of facts per complete sweep kept for the run, newest first: id, when, points."""
    found = []
    for path in sorted((run / SWEEPS).glob("*.json")):
        if _SHARD_NAME.match(path.name):
            continue
        try:
            doc = read(path)
        except (DamagedRun, OSError):
            continue
        found.append({"sweep_id": doc.get("sweep_id", path.stem), "finished_at": doc.get("finished_at", ""),
                      "points": len(doc["crash_points"]), "consistent": doc.get("consistent"),
                      "selection": doc.get("selection", {}), "path": str(path)})
    return sorted(found, key=lambda s: s["finished_at"], reverse=True)


def shard_paths(given: list[Path]) -> list[Path]:
    """The shard files named: files as given, directories by the files in them named like shards."""
    paths: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if _SHARD_NAME.match(p.name))
            if not found:
                raise BadInput(f"{path}: holds no shard results (files named <sweep id>.shard-K-of-N.json)")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise BadInput(f"{path}: no such shard results file")
    return paths


def merge(run_id: str, docs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """One complete document from the shard documents of one sweep of run ``run_id``: refused,
    in one sentence, when one is of another run, of another sweep, given twice, or when a shard
    is missing."""
    if not docs:
        raise UsageError("--merge needs at least one shard results file or directory")
    first_path, first = docs[0]
    by_index: dict[int, Path] = {}
    for path, doc in docs:
        shard = doc.get("shard")
        if not shard:
            raise BadInput(f"{path}: holds a complete sweep, not a shard (nothing to merge)")
        if doc.get("run_id") != run_id:
            raise BadInput(f"{path}: results of run {doc.get('run_id') or 'unknown'}, not of this run ({run_id})")
        if doc.get("sweep_id") != first.get("sweep_id") or shard["count"] != first["shard"]["count"]:
            raise BadInput(f"{path}: shard of sweep {doc.get('sweep_id')} in {shard['count']} parts, but "
                           f"{first_path} is of sweep {first.get('sweep_id')} in {first['shard']['count']}: "
                           "merge the shards of one crash-replay selection")
        if shard["index"] in by_index:
            raise BadInput(f"{path}: shard {shard['index']} of {shard['count']} is also in {by_index[shard['index']]}")
        by_index[shard["index"]] = path
    count = first["shard"]["count"]
    missing = [k for k in range(1, count + 1) if k not in by_index]
    if missing:
        shown = ", ".join(str(k) for k in missing[:20]) + (", ..." if len(missing) > 20 else "")
        raise BadInput(f"shard{'s' if len(missing) > 1 else ''} {shown} of {count} of sweep {first['sweep_id']} "
                       f"{'are' if len(missing) > 1 else 'is'} missing: run crash-replay --shard K/{count} for "
                       f"{'each' if len(missing) > 1 else 'it'}, then merge all {count}")
    ordered = [doc for _path, doc in sorted(docs, key=lambda d: d[1]["shard"]["index"])]
    points = [p for doc in ordered for p in doc["crash_points"]]
    merged = {k: v for k, v in first.items() if k not in ("shard", "crash_points")}
    merged.update(crash_points=points, consistent=all(p["consistent"] for p in points),
                  seconds=round(sum(doc.get("seconds") or 0 for doc in ordered), 3),
                  finished_at=max(doc.get("finished_at", "") for doc in ordered), merged_shards=count)
    merged["crash_points_per_second"] = round(len(points) / merged["seconds"], 2) if merged["seconds"] else None
    return merged


def selection_text(selection: dict[str, Any]) -> str:
    """What a sweep selected, in a few words: "every 10th event, torn variants, snapshot chain"."""
    parts = []
    if selection.get("all"):
        parts.append("every event")
    if selection.get("every"):
        parts.append("every event" if selection["every"] == 1 else f"every {_ordinal(selection['every'])} event")
    if selection.get("random"):
        parts.append(f"{selection['random']} random events")
    if selection.get("at"):
        parts.append("events " + ", ".join(str(e) for e in selection["at"][:5]) + (", ..." if len(selection["at"]) > 5 else ""))
    if selection.get("torn"):
        parts.append("torn variants")
    if selection.get("snapshot_chain"):
        parts.append("snapshot chain")
    if selection.get("kill"):
        parts.append(f"{selection['kill']} killed records")
    lost = selection.get("also_lose")
    if isinstance(lost, list):  # crash-replay --also-lose: another sweep than the plain one
        parts.append(f"{' and '.join(map(str, lost))} lost with the master" if lost else "promises measured")
    return ", ".join(parts) or "the snapshot chain only"


def which(doc: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """One line for the person reading a verdict: which sweep it is of, and what else is kept."""
    sid = doc.get("sweep_id") or "of an older ftmbctl"
    when = f" of {doc['finished_at']}" if doc.get("finished_at") else ""
    merged = f", merged from {doc['merged_shards']} shards" if doc.get("merged_shards") else ""
    line = (f"reporting sweep {sid}{when}: {len(doc['crash_points']):,} crash points "
            f"({selection_text(doc.get('selection', {}))}{merged})")
    rest = [s for s in others if s["sweep_id"] != doc.get("sweep_id")]
    if rest:
        line += (f"; {len(rest)} other sweep{'s' if len(rest) > 1 else ''} kept in "
                 f"{Path(doc['run']) / SWEEPS}: " + ", ".join(s["sweep_id"] for s in rest[:5]))
    return line


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
