"""Record: run a trace through an instrumented middlebox and write a run directory (DESIGN §2-5).

The caller's thread is the Input Logger and master: it reads the trace, appends each packet to
the input log, flushes it every ``flush_every`` packets and only then dispatches the flushed
packets to their queues (the master sees a packet only once it is durable). Workers run the
middlebox through a ``RecordContext`` that logs one PAL per shared access and every
non-deterministic value. Every ``snapshot_every`` packets the master stops dispatch, waits for
the queues to drain, flushes the logs and writes a snapshot atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ftmbctl import defaults
from ftmbctl import records as rec
from ftmbctl.context import Context, LiveSource, VanillaContext
from ftmbctl.errors import (MAX_QUEUES, SEED_MAX, U32_MAX, BadInput, FtmbError, MachineError, MiddleboxError,
                            UsageError, check_range)
from ftmbctl.flowhash import flow_queue
from ftmbctl.guard import MODES as GUARD_MODES
from ftmbctl.guard import Guard, guarding
from ftmbctl.guard import sentence as guard_sentence
from ftmbctl.hashing import file_sha256, hash64
from ftmbctl.lint import lint_class
from ftmbctl.locking import exclusive
from ftmbctl.manifest import read_manifest, write_manifest
from ftmbctl.middlebox import Middlebox, Packet, build_middlebox
from ftmbctl.pcapio import CutShort, RawPacket, check_capture_file, iter_packets, stream_size
from ftmbctl.scheduler import WorkerFailed, make_scheduler
from ftmbctl.shared import SharedState, SharedVar
from ftmbctl.signals import handling
from ftmbctl.snapshot import FLAG_FINAL, encode_snapshot, snapshot_name, write_atomically
from ftmbctl.storage import QueueLog, Storage
from ftmbctl.trust import source_sha256

MAX_BATCH_BYTES = 8 << 20  # an input chunk is flushed early rather than grow past this (readers cap chunks)


MODES = ("ftmb", "no-replay", "vanilla")


@dataclass
class RecordConfig:
    trace: Path
    out: Path
    middlebox: str = "nat"
    mb_opts: list[str] = field(default_factory=list)
    queues: int = defaults.QUEUES
    snapshot_every: int = defaults.SNAPSHOT_EVERY
    flush_every: int = defaults.FLUSH_EVERY
    scheduler: str = "chaos"
    seed: int = defaults.SEED
    mode: str = "ftmb"  # "ftmb", "no-replay" (snapshots only, DESIGN §8) or "vanilla" (nothing written)
    force: bool = False
    strict: bool = False  # refuse a trace cut short in its last packet instead of recording the packets before
    guard: str = "warn"  # the runtime guard (guard.py): "warn", "error" or "off"
    lint: bool = True  # lint the middlebox's source first and keep the findings in the manifest

    def validate(self) -> None:
        check_range("--queues", self.queues, 1, MAX_QUEUES)
        # snapshot boundaries and numbers, and the records of a chunk, are u32 fields on disk
        check_range("--snapshot-every", self.snapshot_every, 1, U32_MAX)
        check_range("--flush-every", self.flush_every, 1, U32_MAX)
        check_range("--seed", self.seed, 0, SEED_MAX)
        if self.scheduler not in ("threads", "chaos"):
            raise UsageError(f"--scheduler must be threads or chaos, got {self.scheduler!r}")
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.guard not in GUARD_MODES:
            raise UsageError(f"--guard must be one of {', '.join(GUARD_MODES)}, got {self.guard!r}")


@dataclass
class RecordResult:
    run_dir: Path | None
    packets_in: int = 0
    packets_out: int = 0
    dropped: int = 0  # inputs that produced no output
    pals: int = 0
    nondet: int = 0
    snapshots: list[tuple[int, int, float]] = field(default_factory=list)  # number, boundary, pause s
    release_delays_ns: list[int] = field(default_factory=list)
    events: int = 0
    wall_seconds: float = 0.0
    files: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    interrupted: str | None = None  # "SIGINT after N packets" when a signal ended the record early
    run_id: str = ""
    cut_short: CutShort | None = None  # the trace ended inside its last packet: the packets before it were recorded
    lint: dict[str, Any] | None = None  # what `ftmbctl lint` says of the middlebox (None: not linted)
    guard: list[dict[str, Any]] = field(default_factory=list)  # the runtime guard's findings


class MiddleboxFailed(Exception):
    """A middlebox raised while processing a packet."""

    def __init__(self, packet: int, queue: int, error: Exception) -> None:
        super().__init__(f"packet {packet}: {error}")
        self.packet, self.queue, self.error = packet, queue, error


class RecordContext(Context):
    """The instrumented context: ordered logging of shared accesses and non-determinism."""

    def __init__(self, queue: int, local: dict[str, Any], live: LiveSource, log: QueueLog,
                 storage: Storage, flush_every: int, sched_point: Callable[[], None] | None) -> None:
        super().__init__(queue, local)
        self.live = live
        self.log = log
        self.storage = storage
        self.totals = storage.totals
        self.flush_every = flush_every
        self._sched_point = sched_point
        self.digest = 0  # 32-bit digest of the variable after the last access
        self.same = False  # whether the last access left that digest as it was

    def _access(self, var: SharedVar, op: Callable[..., Any], a: Any, b: Any) -> Any:
        if self._sched_point is not None:
            self._sched_point()
        items = self.log.items
        with var.lock:
            before = var.digest32()
            result = op(var, a, b)
            var.count = seq = var.count + 1
            # The PAL is counted before the lock is released: a packet that takes the next access
            # on this variable then depends on it (its dependency vector covers it).
            self.digest = digest = var.digest32()  # replay checks it against the log's
            self.same = same = digest == before
            items.append((self.packet.id, var.var_id, seq, None if same else digest))
            self.totals[self.queue] += 1
        if len(items) >= self.flush_every:
            self.storage.flush_queue(self.queue)
        return result

    def _nondet(self, kind: int) -> int:
        return self._log_nondet(kind, self.live.value(kind, self.packet.ts_ns))

    def _log_nondet(self, kind: int, value: int) -> int:
        items = self.log.items
        items.append((self.packet.id, -kind, value, None))
        self.totals[self.queue] += 1
        if len(items) >= self.flush_every:
            self.storage.flush_queue(self.queue)
        return value


class TotalEstimate:
    """How many packets a capture holds, estimated as it is read: its decoded size over the bytes
    a packet took so far (record header and data), corrected at every packet and never below the
    packets already read. For the progress bar only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read = 0  # bytes of the packets read so far, record headers included

    def total(self, count: int) -> int:
        if not self.size or not self.read:
            return 0
        return max(count, round(count * self.size / self.read))


def derive_seed(*parts: object) -> int:
    return hash64(":".join(str(p) for p in parts).encode()) & ((1 << 63) - 1)


def trace_sha256(path: Path) -> str:
    """The trace's SHA-256, with one sentence when it cannot be read (or is no regular file: a FIFO
    or a device would be read for ever)."""
    check_capture_file(path)
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror})") from None


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds an ftmbctl manifest (not just any file named manifest.json)."""
    try:
        doc = read_manifest(path)
    except FtmbError:
        return False
    return isinstance(doc.get("run_id"), str)


def prepare_out(out: Path, force: bool) -> Path | None:
    """Make ``out`` a fresh run directory. An old run replaced with ``--force`` is moved aside,
    not deleted: it is deleted once the new run is complete, and put back if the new one fails."""
    backup = None
    if out.exists():
        if not force:
            raise UsageError(f"{out} already exists; pass --force to overwrite it")
        if not out.is_dir():
            raise UsageError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not is_run_dir(out):
            raise UsageError(f"{out} is a non-empty directory that is not an ftmbctl run; refusing to delete it")
        backup = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        if backup.exists():
            shutil.rmtree(backup)
        out.rename(backup)
    try:
        (out / "snapshots").mkdir(parents=True)
    except OSError:  # read-only, no permission, disk full: the old run comes back
        shutil.rmtree(out, ignore_errors=True)
        if backup is not None:
            backup.rename(out)
        raise
    return backup


class Recorder:
    """One record run. ``run()`` does the work; the fields are its moving parts."""

    def __init__(self, cfg: RecordConfig, middlebox: Middlebox,
                 progress: Callable[[int, int], None] | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.mb = middlebox
        self.progress = progress
        self.instrumented = cfg.mode != "vanilla"  # a run directory is written
        self.no_replay = cfg.mode == "no-replay"  # no PALs, outputs wait for a covering snapshot
        self.sched = make_scheduler(cfg.scheduler, cfg.queues, cfg.seed)
        self.shared = SharedState()
        self.mb.declare(self.shared)
        self.local = [self.mb.new_local_state() for _ in range(cfg.queues)]
        self.live = [LiveSource(derive_seed(cfg.seed, 0, q), wall_clock=not self.sched.deterministic)
                     for q in range(cfg.queues)]
        self.storage: Storage | None = None
        self.contexts: list[Context] = []
        self.result = RecordResult(run_dir=cfg.out if self.instrumented else None, seed=cfg.seed)
        # the vanilla baseline is the middlebox alone: nothing watches it
        self.guard = Guard(cfg.guard, type(middlebox)) if cfg.guard != "off" and self.instrumented else None
        self.outputs = [0] * cfg.queues  # per queue: each worker counts only its own
        self.dropped = [0] * cfg.queues
        # Where this run starts: packet 0 with a fresh state for a record; a snapshot's boundary
        # and number for a recovery (recovery.py sets these and restores the state).
        self.start_boundary = 0
        self.start_number = 0
        self.last_snapshot = 0  # number of the latest snapshot taken (or restored)
        self.stop_requested = False
        self.trace_sha: str | None = None  # known already when recovering
        self.durable_writes = True  # fsync snapshots and logs, hash files into the manifest
        self.scratch = False  # a run only looked at in memory (verify's recoveries): no snapshot files
        self.final_state: dict[str, Any] = {}
        self.manifest_extra: dict[str, Any] = {}
        self.replaced: Path | None = None  # an old run moved aside by --force until this one completes
        self.made_out = False  # cfg.out is this run's (prepare_out made it): a failure removes it
        self.interrupted: str | None = None  # set by a signal: the trace ends early, the run stays usable

    # ---- worker side ----
    def _process(self, q: int, pkt: Packet) -> None:
        ctx = self.contexts[q]
        ctx.packet = pkt
        ctx.outputs = []
        try:
            self.mb.process(ctx, pkt)
            if self.guard is not None and self.guard.tripped is not None:
                self.guard.check()  # --guard error, and the middlebox swallowed the exception
        except MachineError:  # the disk refused a log write made during the call: not the middlebox's doing
            raise
        except Exception as exc:  # a middlebox bug: remember which packet, the scheduler stops the run
            raise MiddleboxFailed(pkt.id, q, exc) from exc
        outs = ctx.outputs
        if not outs:
            self.dropped[q] += 1
            return
        self.outputs[q] += len(outs)
        if self.storage is None:
            return
        self._hold(q, pkt, outs)

    def _hold(self, q: int, pkt: Packet, outs: list[tuple[int, bytes]]) -> None:
        """Give a packet's outputs to the Output Logger with the packet's dependency vector
        (No-Replay logs nothing, so its vectors are all zero: only a snapshot releases)."""
        deps = tuple(self.storage.totals)
        finish = self.sched.now_ns()
        self.storage.hold_output(q, [(pkt.id, i, lt, finish, deps, data) for i, (lt, data) in enumerate(outs)])

    def _on_idle(self, q: int) -> None:
        """Group commit: a queue with nothing to do flushes what it has logged."""
        if self.storage is not None:
            self.storage.flush_queue(q)

    # ---- master side ----
    def _snapshot(self, number: int, boundary: int) -> None:
        started = time.perf_counter()
        sim_start = self.sched.now_ns()
        self.sched.drain()
        storage = self.storage
        assert storage is not None
        storage.flush_for_snapshot()
        storage.snapshot_begin(number)
        state = self._state(boundary)
        if not self.scratch:
            data = encode_snapshot(self.run_id, number, boundary, state)
            write_atomically(self.cfg.out / "snapshots" / snapshot_name(number), data, sync=self.durable_writes)
        storage.snapshot_durable(number, boundary)
        self.last_snapshot = number
        self._reseed(number)
        pause = (self.sched.now_ns() - sim_start) / 1e9 if self.sched.deterministic else time.perf_counter() - started
        self.result.snapshots.append((number, boundary, pause))
        self._after_snapshot(number, boundary, state)

    def _cover_tail(self, end: int) -> None:
        """No-Replay releases an output only once a snapshot covers its input: the outputs of
        the last inputs need a snapshot at the end of the trace (number k + 1 at ``end`` <= (k + 1)
        * snapshot_every; regular when the trace ends on a boundary)."""
        if self.storage is not None and end > self.storage.covered:
            self._snapshot(max(self.last_snapshot, self.start_number) + 1, end)

    def _after_snapshot(self, number: int, boundary: int, state: dict[str, Any]) -> None:
        """Hook for recovery: compare with the failure-free snapshot, maybe stop."""

    def _state(self, boundary: int) -> dict[str, Any]:
        storage = self.storage
        assert storage is not None
        return {
            "boundary": boundary,
            "shared": self.shared.dump(),
            "local": self.local,
            "queue_records": [f.records for f in storage.queue_files],
            "queue_bytes": [f.length for f in storage.queue_files],
            "input_records": storage.input.records,
            "input_bytes": storage.input.length,
            "outputs_released": storage.output.records,
            "outputs_bytes": storage.output.length,
            "time_ns": self.sched.now_ns(),
        }

    def _reseed(self, number: int) -> None:
        self.sched.reseed(number)
        for q, live in enumerate(self.live):
            live.reseed(derive_seed(self.cfg.seed, number, q))

    def run(self) -> RecordResult:
        """Run the trace. When the machine refuses a write (disk full, file too large, read-only,
        permission), the workers stop, what this run created goes, a run ``--force`` was replacing
        comes back, and a ``MachineError`` names the file (exit 4: no verdict on anything)."""
        try:
            return self._run()
        except (MachineError, OSError) as exc:
            self.sched.abort()
            self._discard()
            if isinstance(exc, OSError) and exc.errno:  # not from a writer that names its file
                raise MachineError.from_os(exc, what="cannot be read or written") from None
            raise

    def _run(self) -> RecordResult:
        cfg = self.cfg
        started = time.perf_counter()
        # the vanilla baseline writes no run: it needs no identity, and hashing the trace is no part of it
        trace_sha = self.trace_sha or (trace_sha256(cfg.trace) if self.instrumented else "")
        seed_text = trace_sha if self.sched.deterministic else os.urandom(16).hex()
        # Same trace, options and seed under chaos: same run id, so the run directory is byte-identical.
        identity = (seed_text, cfg.middlebox, sorted(cfg.mb_opts), cfg.queues, cfg.snapshot_every,
                    cfg.flush_every, cfg.scheduler, cfg.seed, cfg.mode)
        self.run_id = hashlib.blake2b(repr(identity).encode(), digest_size=16).digest()
        self.result.run_id = self.run_id.hex()
        queues = cfg.queues
        sched = self.sched
        if self.instrumented:
            self.replaced = prepare_out(cfg.out, cfg.force)
            self.made_out = True
            # not fsynced: until the final manifest replaces it, it only marks an unfinished run
            write_manifest(cfg, self.run_id, trace_sha, self.shared, complete=False, extra=self.manifest_extra,
                           hash_files=False)
            self.storage = Storage(cfg.out, self.run_id, queues, sched.now_ns, input_base=self.start_boundary,
                                   hold_until_snapshot=self.no_replay, handoff=sched.handoff)
        self.contexts = self._make_contexts()
        self._reseed(self.start_number)
        sched.start(self._process, self._on_idle)
        try:
            with guarding(self.guard):
                count = self._ingest()
                if self.no_replay and not self.stop_requested:
                    self._cover_tail(self.start_boundary + count)
                sched.stop()
        except WorkerFailed as failed:
            if isinstance(failed.__cause__, MachineError):  # a worker's log write failed: run() cleans up
                raise failed.__cause__ from None
            sched.abort()
            self._discard()
            raise self._failure(failed.__cause__) from None
        except BadInput:
            # The trace turned out unreadable part-way: the directory this run created holds a
            # run of a trace that does not exist, so it goes (nothing of the user's was in it).
            sched.abort()
            self._discard()
            raise
        self.result.packets_in = count
        self.result.packets_out = sum(self.outputs)
        self.result.dropped = sum(self.dropped)
        if self.guard is not None:
            self.result.guard = self.guard.findings
            self.manifest_extra["guard"] = {"mode": self.guard.mode, "findings": self.guard.findings}
        if self.storage is not None:
            self.storage.finish(sync=self.durable_writes)
            end = self.start_boundary + count
            self.final_state = self._state(end)
            if not self.scratch:
                try:
                    final = encode_snapshot(self.run_id, 0xFFFFFFFF, end, self.final_state, flags=FLAG_FINAL)
                except BadInput:  # a value the final snapshot cannot keep: the run is unusable
                    self._discard()
                    raise
                write_atomically(cfg.out / "reference.snap", final, sync=self.durable_writes)
            self.result.pals, self.result.nondet = self._count_records()
            self.result.release_delays_ns = self.storage.ol.delays_ns.values
            self.result.events = self.storage.events
            self.result.files = write_manifest(cfg, self.run_id, trace_sha, self.shared, complete=True,
                                               result=self.result, extra=self.manifest_extra,
                                               hash_files=self.durable_writes,
                                               # what replays of this run must run (trust.py); not for scratch runs
                                               source_sha256=source_sha256(type(self.mb)) if self.durable_writes
                                               else None)
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
        self.result.wall_seconds = time.perf_counter() - started
        return self.result

    def _failure(self, cause: BaseException | None) -> FtmbError:
        """What a worker's failure means here: for a record, a middlebox that cannot process the
        trace is bad input (exit 3); a recovery makes it a verdict (recovery.py)."""
        if self.guard is not None and self.guard.tripped is not None:
            return MiddleboxError(f"record stopped by --guard error: {guard_sentence(self.guard.tripped)}")
        if isinstance(cause, MiddleboxFailed):
            return BadInput(f"middlebox {self.mb.name!r} raised {type(cause.error).__name__}: {cause.error} "
                            f"on packet {cause.packet} (queue {cause.queue})")
        return BadInput(f"middlebox {self.mb.name!r} failed: {type(cause).__name__}: {cause}")

    def _make_contexts(self) -> list[Context]:
        cfg, sched = self.cfg, self.sched
        if self.storage is None or self.no_replay:
            return [VanillaContext(q, self.local[q], self.live[q], sched.sched_point_for(q)) for q in range(cfg.queues)]
        return [RecordContext(q, self.local[q], self.live[q], self.storage.logs[q], self.storage, cfg.flush_every,
                              sched.sched_point_for(q)) for q in range(cfg.queues)]

    def _input_packets(self) -> Iterator[RawPacket]:
        """The inputs, in arrival order (recovery: the durable ones from the log, then the trace)."""
        return iter_packets(self.cfg.trace, strict=self.cfg.strict, on_cut=self._trace_cut_short)

    def _trace_cut_short(self, cut: CutShort) -> None:
        self.result.cut_short = cut  # the manifest keeps where (manifest.py), the CLI warns

    def _discard(self) -> None:
        if self.storage is not None:
            self.storage.close()
        if self.made_out:  # once: only what this run made goes
            self.made_out = False
            shutil.rmtree(self.cfg.out, ignore_errors=True)
            if self.replaced is not None:  # the run that --force was to replace comes back
                self.replaced.rename(self.cfg.out)
                self.replaced = None

    def _count_records(self) -> tuple[int, int]:
        if self.no_replay:
            return 0, 0
        return sum(var.count for var in self.shared.variables), sum(
            self.storage.totals) - sum(var.count for var in self.shared.variables)

    def _ingest(self) -> int:
        cfg, sched, storage = self.cfg, self.sched, self.storage
        queues = cfg.queues
        batch: list[list[Packet]] = [[] for _ in range(queues)]
        raw = bytearray()
        pending = 0
        count = 0
        snapshot_number = self.start_number
        advance = getattr(sched, "advance_to", None)
        pack = rec.INPUT.pack
        estimate = TotalEstimate(stream_size(cfg.trace)) if self.progress is not None else None
        for raw_pkt in self._input_packets():
            if self.interrupted is not None:  # Ctrl-C or SIGTERM: end here, at a packet boundary
                self.result.interrupted = f"{self.interrupted} after {count:,} packets"
                break
            pid = raw_pkt.index
            if pid % cfg.snapshot_every == 0 and pid != self.start_boundary and storage is not None:
                if pending:
                    self._flush_batch(raw, pending, batch)
                    raw, pending = bytearray(), 0
                snapshot_number += 1
                self._snapshot(snapshot_number, pid)
                if self.stop_requested:
                    break
            if advance is not None:
                advance(raw_pkt.ts_ns)
            pkt = Packet(pid, raw_pkt.ts_ns, raw_pkt.linktype, raw_pkt.data)
            batch[flow_queue(pkt.linktype, pkt.data, queues)].append(pkt)
            if storage is not None:
                raw += pack(pid, raw_pkt.ts_ns, raw_pkt.linktype, raw_pkt.orig_len, len(raw_pkt.data))
                raw += raw_pkt.data
            pending += 1
            count += 1
            if pending >= cfg.flush_every or len(raw) >= MAX_BATCH_BYTES:
                self._flush_batch(raw, pending, batch)
                raw, pending = bytearray(), 0
            if estimate is not None:
                estimate.read += 16 + len(raw_pkt.data)
                if count % 256 == 0:
                    self.progress(count, estimate.total(count))
            sched.io_point()
        if pending:
            self._flush_batch(raw, pending, batch)
        if self.progress is not None:
            self.progress(count, count)
        return count

    def _flush_batch(self, raw: bytearray, pending: int, batch: list[list[Packet]]) -> None:
        if self.storage is not None:
            self.storage.flush_input(raw, pending)  # the caller starts a new buffer: no copy
        for q, items in enumerate(batch):
            if items:
                self.sched.dispatch(q, items)
                batch[q] = []


def record(cfg: RecordConfig, progress: Callable[[int, int], None] | None = None,
           on_lint: Callable[[dict[str, Any]], None] | None = None) -> RecordResult:
    """Record ``cfg.trace`` (or run the vanilla baseline when ``cfg.mode == "vanilla"``).

    The middlebox's source is linted first (``on_lint`` gets the report) and watched by the
    runtime guard while it runs (guard.py); neither refuses a record, but ``--guard error`` stops
    it at the first call a replay cannot reproduce. A first SIGINT (Ctrl-C) or SIGTERM ends the
    trace at the next packet boundary: the queues
    drain, the logs are flushed and the run is finished as the record of the packets read so far,
    so crash-replay and verify can use it; the result says so. A second one stops at once.
    Another process writing ``cfg.out`` (locking.py) refuses this record with a ``UsageError``.
    """
    middlebox = build_middlebox(cfg.middlebox, cfg.mb_opts)
    cfg.mb_opts = type(middlebox).canonical_pairs(cfg.mb_opts)  # what the manifest keeps for recovery
    recorder = Recorder(cfg, middlebox, progress)
    if cfg.lint and recorder.instrumented:  # findings are kept, never a reason not to record
        recorder.result.lint = recorder.manifest_extra["lint"] = lint_for_record(type(middlebox), cfg.middlebox)
        if on_lint is not None:  # before the record starts: a long one shows them at once
            on_lint(recorder.result.lint)
    # one writer per run directory (locking.py); the vanilla baseline writes none
    with _graceful_signals(recorder), exclusive(cfg.out) if recorder.instrumented else contextlib.nullcontext():
        return recorder.run()


def lint_for_record(cls: type, spec: str) -> dict[str, Any]:
    """What ``ftmbctl lint`` says of the middlebox, for the manifest: its report, or the one
    sentence saying why its source could not be read (a class made at run time, say)."""
    try:
        return lint_class(cls, name=spec).to_dict()
    except FtmbError as exc:
        return {"error": str(exc)}


@contextlib.contextmanager
def _graceful_signals(recorder: Recorder) -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        if recorder.interrupted is not None:
            raise KeyboardInterrupt  # the second signal: stop now
        recorder.interrupted = signal.Signals(signum).name

    with handling({signal.SIGINT: handler, signal.SIGTERM: handler}):
        yield
