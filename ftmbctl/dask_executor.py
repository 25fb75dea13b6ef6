"""Crash points as tasks on a Dask distributed cluster (``crash-replay --executor dask``).

The local process pool stays the default; this runs the same ``_run_point`` on the workers of a
cluster the user already has. What it asks of the cluster:

- the run directory is readable at the same path on every worker (a shared file system). Each
  task first checks the SHA-256 of the run's manifest against the one this process read, so a
  worker that sees another run, or none, fails the sweep with one sentence rather than answer
  about something else;
- ftmbctl, of this version, is importable on the workers.

A worker that dies takes its task with it: Dask runs it again elsewhere (``retries``), and a
point's verdict is kept once, by its position, however many times it ran. A worker process runs
one crash point at a time (a recovery's scratch directory and caches are per process), so
start workers with one thread each (``dask worker ADDRESS --nthreads 1 --nworkers N``) to use
every core. Tasks run off the worker's main thread; the per-point deadline (``--point-timeout``)
reaches them all the same (watchdog.py), so a middlebox that loops forever fails its point and
the worker goes on.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from ftmbctl.crash import CrashPoint
from ftmbctl.errors import BadInput, FtmbError, UsageError
from ftmbctl.rundir import RunDir
from ftmbctl.workers import SCRATCH_PREFIX

CONNECT_TIMEOUT_S = 10
RETRIES = 3  # runs of a task whose worker died, before the sweep gives up
_ONE_AT_A_TIME = threading.Lock()
_LOADED: dict[str, Any] = {}  # this worker process: the run it has loaded, and its scratch directory


def manifest_sha256(run: Path) -> str:
    return hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest()


def run_points(run: RunDir, todo: list[CrashPoint], chained: list[bool], cfg: Any,
               progress: Callable[[int, int], None] | None) -> tuple[list[dict[str, Any]], str]:
    """Every point's verdict, in ``todo``'s order, and the hash seeds the workers ran under."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UsageError("--executor dask needs Dask's distributed scheduler: pip install 'ftmbctl[dask]'") from None
    check_address(cfg.scheduler)
    digest = manifest_sha256(run.path)
    try:
        client = Client(cfg.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler {cfg.scheduler}: no Dask scheduler answers there "
                         f"({type(exc).__name__}: {exc})") from None
    token = uuid.uuid4().hex[:12]  # a fresh key per sweep: never a result the scheduler kept from another
    options = {"run_path": str(run.path), "digest": digest, "keep": str(cfg.keep) if cfg.keep else None,
               "timeout": cfg.point_timeout, "middlebox": cfg.middlebox, "also_lose": cfg.also_lose}
    results: list[dict[str, Any] | None] = [None] * len(todo)
    seeds: set[str] = set()
    with client:
        futures = [client.submit(run_task, point, chain, **options, key=f"ftmbctl-point-{token}-{i}",
                                 retries=RETRIES, pure=False)
                   for i, (point, chain) in enumerate(zip(todo, chained))]
        where = {future.key: i for i, future in enumerate(futures)}
        try:
            for done, future in enumerate(as_completed(futures, loop=client.loop), 1):
                outcome = future.result()
                if "error" in outcome:
                    raise (UsageError if outcome["exit_code"] == 2 else BadInput)(outcome["error"])
                results[where[future.key]] = outcome["verdict"]
                seeds.add(outcome["hash_seed"])
                if progress:
                    progress(done, len(todo))
        finally:
            client.cancel([f for f in futures if not f.done()])
    return [r for r in results if r is not None], ", ".join(sorted(seeds))


def check_address(address: str) -> None:
    """A scheduler address Dask can parse (``tcp://host:port``, ``host:port``, ``tls://...``),
    or one sentence: a malformed one would only fail inside Dask's client, noisily."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme != "inproc":
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler {address!r} is not a Dask scheduler address such as tcp://10.0.0.5:8786 "
                         f"({exc})") from None


def run_task(point: CrashPoint, chain: bool, run_path: str, digest: str, keep: str | None,
             timeout: float | None, middlebox: str | None,
             also_lose: tuple[str, ...] | None = None) -> dict[str, Any]:
    """On a worker: check the run is the one asked about, then recover and check one point.
    Returns ``{"verdict", "hash_seed"}``, or ``{"error", "exit_code"}`` with one sentence."""
    from ftmbctl import verify

    host = socket.gethostname()
    try:
        seen = manifest_sha256(Path(run_path))
    except OSError as exc:
        return {"error": f"worker on {host} cannot read {run_path}/manifest.json ({exc.strerror or exc}): the run "
                         "directory must be readable at the same path on every worker (a shared file system)",
                "exit_code": 3}
    if seen != digest:
        return {"error": f"worker on {host} sees another run at {run_path} (its manifest differs from the one "
                         "crash-replay read): every worker must see the same run directory", "exit_code": 3}
    with _ONE_AT_A_TIME:
        try:
            if _LOADED.get("key") != (run_path, digest, keep, timeout, middlebox, also_lose):
                scratch = _LOADED.get("scratch") or tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
                if "scratch" not in _LOADED:
                    atexit.register(shutil.rmtree, scratch, True)
                verify.load_worker(run_path, keep, scratch, timeout, middlebox, also_lose)
                _LOADED.update(key=(run_path, digest, keep, timeout, middlebox, also_lose), scratch=scratch)
            verdict = verify._run_point(point, chain)
        except FtmbError as exc:  # a damaged run, or a disk that refused: no verdict from anyone
            return {"error": f"worker on {host}: {exc}", "exit_code": exc.exit_code}
    return {"verdict": verdict, "hash_seed": os.environ.get("PYTHONHASHSEED", "random")}
