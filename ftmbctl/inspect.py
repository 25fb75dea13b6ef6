"""``ftmbctl inspect``: a readable listing of any file of a run, like ``rr dump``.

``describe_run`` summarizes the whole run; ``describe_file`` lists one file: chunks with their
offsets and records (PALs with variable names, non-deterministic values, outputs with their
dependency vectors, timeline events), or a snapshot's header and state. Both return plain data
(JSON-ready); rendering is the CLI's job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftmbctl import records as rec
from ftmbctl.context import ND_CLOCK
from ftmbctl.errors import UsageError
from ftmbctl.queuelog import QueueDecoder
from ftmbctl.rundir import RunDir, log_kind
from ftmbctl.snapshot import Snapshot
from ftmbctl.store import KIND_INPUT, KIND_OUTPUT, KIND_QUEUE, KIND_TIMELINE

ND_NAMES = {1: "clock", 2: "random"}


def jsonable(value: Any) -> Any:
    """State values as JSON: bytes as hex, tuples and sets as lists, non-string keys as pairs."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: jsonable(v) for k, v in value.items()}
        return [[jsonable(k), jsonable(v)] for k, v in value.items()]
    return value


def describe_run(run: RunDir) -> dict[str, Any]:
    man = run.manifest
    files = []
    for name in ["input.log", *run.queue_log_names(), "output.log", "timeline.log"]:
        log = run.log(name)
        chunks = sum(1 for _ in log.chunks())
        files.append({"file": name, "bytes": log.size, "chunks": chunks, "records": log.scan.records,
                      "torn_bytes": log.scan.torn_bytes})
    snaps = []
    for path in run.snapshot_paths():
        snap = run.snapshot(path)
        snaps.append({"file": f"snapshots/{path.name}", "number": snap.number, "boundary": snap.boundary,
                      "bytes": path.stat().st_size})
    return {"run": str(run.path), "run_id": man["run_id"], "complete": run.complete,
            "middlebox": man.get("middlebox"), "queues": run.queues, "scheduler": man.get("scheduler"),
            "seed": man.get("seed"), "mode": man.get("mode"), "stats": man.get("stats", {}),
            "variables": man.get("variables", []), "files": files, "snapshots": snaps}


def _record_row(kind: int, record: Any, names: dict[int, str]) -> dict[str, Any]:
    if kind == KIND_INPUT:
        return {"id": record.id, "ts_ns": record.ts_ns, "linktype": record.linktype,
                "orig_len": record.orig_len, "caplen": len(record.data)}
    if kind == KIND_QUEUE:
        if isinstance(record, rec.PalRecord):
            return {"type": "pal", "packet": record.packet, "var": record.var,
                    "name": names.get(record.var, "?"), "seq": record.seq,
                    "digest": None if record.digest is None else f"{record.digest:04x}"}
        value: Any = record.value / 1e9 if record.kind == ND_CLOCK else f"{record.value:016x}"
        return {"type": ND_NAMES.get(record.kind, str(record.kind)), "packet": record.packet, "value": value}
    if kind == KIND_OUTPUT:
        return {"output_id": [record.input_id, record.index], "linktype": record.linktype,
                "finish_ns": record.finish_ns, "release_ns": record.release_ns, "deps": list(record.deps),
                "caplen": len(record.data)}
    return {"event": record.index, "kind": record.name, "arg": record.arg, "time_ns": record.time_ns,
            "snapshot": record.snapshot, "input": [record.input_len, record.input_records],
            "output": [record.output_len, record.output_records],
            "queues": [list(p) for p in zip(record.queue_len, record.queue_records)]}


DECODERS = {KIND_INPUT: rec.iter_inputs, KIND_OUTPUT: rec.iter_outputs, KIND_TIMELINE: rec.iter_events}


def describe_file(run: RunDir, name: str, limit: int | None = None) -> dict[str, Any]:
    """List one file of the run. ``limit`` caps the records listed (chunks are always all listed)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise UsageError(f"{name}: give a file name inside the run directory, e.g. pal-0.log")
    kind = log_kind(rel.name)
    if kind is not None:
        return _describe_log(run, rel.as_posix(), kind, limit)
    if rel.suffix == ".snap":
        return _describe_snapshot(run.snapshot(run.path / rel), rel.as_posix())
    if rel.name == "manifest.json":
        return {"file": "manifest.json", "manifest": run.manifest}
    raise UsageError(f"{name}: not a file ftmbctl can list (logs, snapshots/*.snap, reference.snap, manifest.json)")


def _describe_log(run: RunDir, name: str, kind: int, limit: int | None) -> dict[str, Any]:
    log = run.log(name)
    names = run.variable_names()
    decode = QueueDecoder() if kind == KIND_QUEUE else DECODERS[kind]  # queue chunks carry state
    listed = 0
    chunks = []
    for chunk in log.chunks():
        rows = []
        for record in log.decode(chunk, decode):
            if limit is not None and listed >= limit:
                break
            rows.append(_record_row(kind, record, names))
            listed += 1
        chunks.append({"offset": chunk.offset, "first_seq": chunk.first_seq, "count": chunk.count,
                       "stored_bytes": chunk.stored, "raw_bytes": len(chunk.raw), "records": rows})
    return {"file": name, "kind": rec_kind_name(kind), "bytes": log.size, "records": log.scan.records,
            "torn_bytes": log.scan.torn_bytes, "chunks": chunks}



def rec_kind_name(kind: int) -> str:
    return {KIND_INPUT: "input", KIND_QUEUE: "queue", KIND_OUTPUT: "output", KIND_TIMELINE: "timeline"}[kind]


def _describe_snapshot(snap: Snapshot, name: str) -> dict[str, Any]:
    state = snap.state
    shared = state.get("shared", [])
    return {"file": name, "number": snap.number, "boundary": snap.boundary, "final": bool(snap.flags & 1),
            "queue_records": state.get("queue_records"), "input_records": state.get("input_records"),
            "outputs_released": state.get("outputs_released"), "time_ns": state.get("time_ns"),
            "variables": [{"name": n, "kind": k, "accesses": c, "value": jsonable(v)} for n, k, c, v in shared],
            "local": jsonable(state.get("local"))}
