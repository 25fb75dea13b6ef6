"""manifest.json: what a run directory holds and how it was made (formats/manifest.md).

Written twice: at the start of a record with ``"complete": false`` (so an interrupted run is
recognisable) and at the end with the file list, sizes and SHA-256 of every file. Under the
chaos scheduler nothing in it depends on the wall clock or the output path, so one seed gives
one manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftmbctl import __version__
from ftmbctl.errors import DamagedRun
from ftmbctl.hashing import file_sha256
from ftmbctl.parallel import in_parallel
from ftmbctl.safeio import MAX_JSON, read_regular
from ftmbctl.snapshot import write_atomically

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def run_files(run_dir: Path) -> list[Path]:
    """Every file of a run except the manifest itself, in a stable order."""
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != MANIFEST
                  and not p.name.endswith(".tmp") and "crash" not in p.relative_to(run_dir).parts[:1])


def write_manifest(cfg: Any, run_id: bytes, trace_sha: str, shared: Any, complete: bool,
                   result: Any = None, extra: dict[str, Any] | None = None,
                   hash_files: bool = True, source_sha256: str | None = None) -> dict[str, int]:
    run_dir: Path = cfg.out
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "ftmbctl_version": __version__,
        "complete": complete,
        "run_id": run_id.hex(),
        "mode": cfg.mode,
        "trace": {"path": str(cfg.trace), "sha256": trace_sha},
        "middlebox": {"spec": cfg.middlebox, "options": list(cfg.mb_opts), "source_sha256": source_sha256},
        "queues": cfg.queues,
        "scheduler": cfg.scheduler,
        "seed": cfg.seed,
        "snapshot_every": cfg.snapshot_every,
        "flush_every": cfg.flush_every,
        "variables": [[v.var_id, v.name, v.kind] for v in shared.variables],
        # recovery checks run under another hash seed than this (DESIGN §6 step 7)
        "python_hash_seed": python_hash_seed(),
    }
    doc.update(extra or {})
    sizes: dict[str, int] = {}
    if complete:
        files = {}
        paths = run_files(run_dir)
        # hashlib and file reads release the GIL: the files are hashed side by side
        digests = in_parallel(file_sha256, paths) if hash_files else [None] * len(paths)
        for path, digest in zip(paths, digests):
            rel = path.relative_to(run_dir).as_posix()
            size = path.stat().st_size
            sizes[rel] = size
            files[rel] = {"bytes": size, "sha256": digest}
        doc["files"] = files
        doc["stats"] = {
            "packets_in": result.packets_in,
            "packets_out": result.packets_out,
            "inputs_without_output": result.dropped,
            "pals": result.pals,
            "nondet_values": result.nondet,
            "snapshots": len(result.snapshots),
            "events": result.events,
        }
        if result.interrupted:
            doc["interrupted"] = result.interrupted  # the record covers only the first packets_in packets
        if getattr(result, "cut_short", None) is not None:  # the trace ends inside a packet: the packets before it
            doc["trace"]["cut_short_at"] = result.cut_short.at
    # temp file and rename: a crash while the manifest is rewritten leaves the old one, never half
    write_atomically(run_dir / MANIFEST, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
                     sync=hash_files)
    return sizes


def python_hash_seed() -> str:
    """This process's PYTHONHASHSEED as Python reads it: digits, or "random" when it is unset,
    empty or "random" (a seed drawn at start that no one can know)."""
    value = os.environ.get("PYTHONHASHSEED", "")
    return value if value.isdigit() else "random"


def snapshot_misplaced(manifest: dict[str, Any], number: int, boundary: int) -> str | None:
    """Why snapshot ``number`` cannot be at packet ``boundary`` in this run, or None when it can.

    Snapshot k is taken at packet k * snapshot_every. A No-Replay run also ends with a snapshot at
    the end of its trace (its last outputs wait for one), which may fall short of that boundary.
    """
    every = manifest["snapshot_every"]
    if boundary == number * every:
        return None
    if manifest.get("mode") == "no-replay" and (number - 1) * every < boundary < number * every:
        return None
    return (f"snapshot {number} is at packet {boundary}, but the manifest's snapshot_every {every} "
            f"puts it at {number * every}")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise DamagedRun(f"{run_dir}: no such run directory")
    try:
        doc = json.loads(read_regular(path, MAX_JSON).decode())
    except FileNotFoundError:
        raise DamagedRun(f"{path}: file is missing; {run_dir} is not an ftmbctl run directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedRun(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise DamagedRun(f"{path}: not a version {FORMAT_VERSION} ftmbctl manifest")
    return doc
