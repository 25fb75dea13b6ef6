"""Reading a run directory (or a crash image, which has the same layout): one entry point for
inspect, export, crash, recovery and verify, so that every reader checks the same things."""

from __future__ import annotations

import copy
import mmap
import os
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar, overload

from ftmbctl import records as rec
from ftmbctl.errors import BadInput, DamagedRun, FtmbError, MiddleboxError, UsageError
from ftmbctl.hashing import file_sha256
from ftmbctl.manifest import read_manifest, snapshot_misplaced
from ftmbctl.safeio import open_regular
from ftmbctl.snapshot import Snapshot, read_snapshot
from ftmbctl.store import (CHUNK_HEADER, FILE_HEADER, KIND_INPUT, KIND_OUTPUT, KIND_QUEUE, KIND_TIMELINE, Chunk,
                           LogScan, iter_chunk_heads, iter_chunks, read_file_header)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
LOG_KINDS = {"input.log": KIND_INPUT, "output.log": KIND_OUTPUT, "timeline.log": KIND_TIMELINE}
# A read fault maps the pages around the one read too (the kernel's fault-around, 64 KiB by
# default), so handing back just the pages of a chunk would leave its neighbours mapped.
RELEASE_MARGIN = 1 << 20
SNAPSHOT_CACHE = 4  # decoded snapshots kept per run: a sweep visits crash points in timeline order
EVENT_CHUNK_CACHE = 4  # decoded timeline chunks kept by an EventIndex


def log_kind(name: str) -> int | None:
    if name in LOG_KINDS:
        return LOG_KINDS[name]
    if name.startswith("pal-") and name.endswith(".log"):
        return KIND_QUEUE
    return None


@dataclass
class LogFile:
    """A log's bytes (memory-mapped, so nothing grows with the log) and its header."""

    path: Path
    data: Any  # bytes or mmap of the whole file
    size: int  # bytes that count: the whole file, or its durable prefix in a crash image
    kind: int
    scan: LogScan

    def chunks(self, start: int = FILE_HEADER.size, first_seq: int = 0) -> Iterator[Chunk]:
        """The chunks from ``start`` on. The pages of a chunk are handed back once the caller has
        it (decompressed, it no longer needs them): a mapped page that was read counts in the
        process's resident memory until then, so reading a log through would otherwise make
        memory grow with the log, and a reader left unfinished would hold what it read."""
        done = start
        try:
            for chunk in iter_chunks(self.path, self.data, self.scan, start, first_seq, self.size):
                yield chunk
                done = chunk.offset + chunk.stored
                self._release(chunk.offset - RELEASE_MARGIN, done)
        finally:
            self._release(start, max(done, self.scan.end))

    def chunk_at(self, offset: int, first_seq: int) -> Chunk:
        """The one chunk at ``offset``, known to hold records from ``first_seq`` (an index found
        it before), read without touching this log's scan."""
        found = iter_chunks(self.path, self.data, LogScan(self.scan.header), offset, first_seq, self.size)
        chunk = next(found, None)
        if chunk is None:
            raise DamagedRun(f"{self.path}: no whole chunk at byte {offset} any more")
        self._release(offset - RELEASE_MARGIN, offset + chunk.stored + RELEASE_MARGIN)
        return chunk

    def _release(self, start: int, end: int) -> None:
        """Drop the mapping's pages between ``start`` and ``end`` from this process (the file's
        bytes stay in the page cache: reading them again costs no disk access)."""
        if not isinstance(self.data, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = max(0, start - start % mmap.PAGESIZE)
        end = min(end, len(self.data))
        if end > first:
            self.data.madvise(mmap.MADV_DONTNEED, first, end - first)

    def records(self, decode: Callable[[bytes], Iterator[T]], start: int = FILE_HEADER.size,
                first_seq: int = 0) -> Iterator[T]:
        for chunk in self.chunks(start, first_seq):
            yield from self.decode(chunk, decode)

    def decode(self, chunk: Chunk, decode: Callable[[bytes], Iterator[T]]) -> list[T]:
        """One chunk's records; a record that does not parse, or a count that differs from the
        chunk header's, is corruption reported with the chunk's offset."""
        try:
            decoded = list(decode(chunk.raw))
        except rec.RecordError as exc:
            raise DamagedRun(f"{self.path}: chunk at byte {chunk.offset}: {exc} (record byte {exc.offset})") from None
        if len(decoded) != chunk.count:
            raise DamagedRun(f"{self.path}: chunk at byte {chunk.offset} holds {len(decoded)} records, "
                             f"its header says {chunk.count}")
        return decoded


def open_log(path: Path, kind: int | None = None, run_id: bytes | None = None, limit: int | None = None) -> LogFile:
    """Open a log read-only; ``limit`` keeps only its first bytes (what was durable at a crash)."""
    try:
        with open_regular(path) as handle:  # a FIFO or device would block or never end
            size = handle.seek(0, 2)
            if size == 0:
                data: Any = b""
            else:
                data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise DamagedRun(f"{path}: file is missing") from None
    except OSError as exc:
        raise DamagedRun(f"{path}: cannot be read ({exc.strerror})") from None
    size = len(data) if limit is None else min(limit, len(data))  # no copy: chunks stop at ``size``
    header = read_file_header(path, data[:min(size, FILE_HEADER.size)], kind, run_id)
    return LogFile(path, data, size, header.kind, LogScan(header))


class BoundedCache(OrderedDict[K, V]):
    """A dict that keeps only its ``size`` most recently used entries: decoded snapshots are
    reused by neighbouring crash points, and a cache that kept all of them would grow with the
    trace."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get(self, key: K, default: Any = None) -> Any:
        if key not in self:
            return default
        self.move_to_end(key)
        return super().__getitem__(key)

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key in self:
            return self.get(key)
        self[key] = default
        return default


class ChunkIndex:
    """Where each chunk of a log starts and the number of its first record: a reader can then
    start at the chunk holding the record it wants instead of decoding every chunk before it,
    and the index holds two integers per chunk, not the records.

    Made from the chunk headers alone (checked as every reader checks them; whoever reads a chunk
    later checks its payload), or, with ``decode``, from a pass that checks every chunk and
    record as reading them all would, so that damage is reported here and not mid-way."""

    def __init__(self, log: LogFile, decode: Callable[[bytes], Iterator[Any]] | None = None) -> None:
        self.log = log
        self.offsets = array("Q")  # byte offset of each chunk that holds records
        self.firsts = array("Q")  # number of its first record
        self.records = 0
        for offset, first, count in self._heads() if decode is None else self._checked(decode):
            if count:
                self.offsets.append(offset)
                self.firsts.append(first)
            self.records = first + count

    def _heads(self) -> Iterator[tuple[int, int, int]]:
        log = self.log
        for offset, first, count in iter_chunk_heads(log.path, log.data, FILE_HEADER.size, 0, log.size):
            yield offset, first, count
            log._release(offset - RELEASE_MARGIN, offset + CHUNK_HEADER.size)  # see LogFile.chunks

    def _checked(self, decode: Callable[[bytes], Iterator[Any]]) -> Iterator[tuple[int, int, int]]:
        for chunk in self.log.chunks():
            self.log.decode(chunk, decode)
            yield chunk.offset, chunk.first_seq, chunk.count

    def chunk_of(self, record: int) -> int:
        """The position in ``offsets`` of the chunk holding ``record`` (0 <= record < records)."""
        return bisect_right(self.firsts, record) - 1

    def locate(self, record: int) -> tuple[int, int]:
        """(offset, first record) to pass to ``LogFile.chunks`` so that the first chunk it gives
        holds ``record`` (or, past the last record, is the last chunk)."""
        if not self.offsets:
            return FILE_HEADER.size, 0
        number = max(self.chunk_of(min(record, self.records - 1)), 0)
        return self.offsets[number], self.firsts[number]


class EventIndex(Sequence[rec.Event]):
    """The timeline's events by position, like the list of them, holding only where each chunk
    starts: the timeline grows with the trace, so a sweep must not keep it decoded.

    Building it reads the whole timeline once and checks every chunk and record, so a damaged
    timeline fails here, with the same error as reading it all; an event is then decoded from its
    chunk on demand (the few chunks used last are kept, as crash points come in timeline order).
    """

    def __init__(self, log: LogFile) -> None:
        self.log = log
        self.chunks = ChunkIndex(log, rec.iter_events)
        self._cache: BoundedCache[int, list[rec.Event]] = BoundedCache(EVENT_CHUNK_CACHE)

    def __len__(self) -> int:
        return self.chunks.records

    @overload
    def __getitem__(self, index: int) -> rec.Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[rec.Event]: ...

    def __getitem__(self, index: int | slice) -> rec.Event | list[rec.Event]:
        count = self.chunks.records
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(count))]
        position = index + count if index < 0 else index
        if not 0 <= position < count:
            raise IndexError("timeline event index out of range")
        number = self.chunks.chunk_of(position)
        events = self._cache.get(number)
        if events is None:
            events = self._cache.setdefault(number, self._chunk_events(number))
        return events[position - self.chunks.firsts[number]]

    def __iter__(self) -> Iterator[rec.Event]:
        for number in range(len(self.chunks.offsets)):
            yield from self._chunk_events(number)

    def _chunk_events(self, number: int) -> list[rec.Event]:
        chunk = self.log.chunk_at(self.chunks.offsets[number], self.chunks.firsts[number])
        return self.log.decode(chunk, rec.iter_events)


def safe_join(root: Path, rel: str) -> Path:
    """``root / rel`` for a path read from a manifest, refusing one that leaves ``root``."""
    candidate = Path(rel)
    outside = DamagedRun(f"{root / 'manifest.json'}: lists {rel!r}, which is outside the run directory")
    if candidate.is_absolute() or ".." in candidate.parts:
        raise outside
    joined = root / candidate
    try:
        joined.resolve().relative_to(root.resolve())  # a symlink must not lead out either
    except ValueError:
        raise outside from None
    return joined


def _check_manifest_fields(path: Path, man: dict[str, Any]) -> None:
    """Every field recovery and verify use, checked once, so none of them can raise later."""
    def bad(what: str) -> DamagedRun:
        return DamagedRun(f"{path}: {what} is missing or invalid")

    trace, mb = man.get("trace"), man.get("middlebox")
    if not isinstance(trace, dict) or not isinstance(trace.get("path"), str) or not isinstance(trace.get("sha256"), str):
        raise bad("trace (path, sha256)")
    if not isinstance(mb, dict) or not isinstance(mb.get("spec"), str) or not isinstance(mb.get("options"), list) \
            or not all(isinstance(o, str) for o in mb["options"]):
        raise bad("middlebox (spec, options)")
    for key in ("snapshot_every", "flush_every"):
        if type(man.get(key)) is not int or man[key] < 1:
            raise bad(key)
    if type(man.get("seed")) is not int:
        raise bad("seed")
    if man.get("mode", "ftmb") not in ("ftmb", "no-replay"):
        raise bad("mode (ftmb or no-replay)")
    variables = man.get("variables", [])
    if not isinstance(variables, list) or not all(
            isinstance(v, list) and len(v) == 3 and type(v[0]) is int and isinstance(v[1], str) for v in variables):
        raise bad("variables")
    files = man.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and k.isprintable() and isinstance(v, dict) and type(v.get("bytes")) is int
            and (v.get("sha256") is None or isinstance(v.get("sha256"), str)) for k, v in files.items()):
        raise bad("files")


def snapshot_number(path: Path) -> int | None:
    """The number in ``snap-NNNNNN.snap``, or None for a name that is not one."""
    digits = path.name[5:-5]
    return int(digits) if path.name.startswith("snap-") and path.name.endswith(".snap") and digits.isdigit() else None


class RunDir:
    """A run directory: the manifest, the logs and the snapshots, all checked as they are read."""

    def __init__(self, path: Path, limits: dict[str, int] | None = None, max_snapshot: int | None = None,
                 snapshot_cache: dict[tuple[str, int, int], Snapshot] | None = None) -> None:
        """``limits`` and ``max_snapshot`` make this a view of a crash image without copying bytes:
        each log is cut at its durable length, and snapshots after ``max_snapshot`` do not exist.
        ``snapshot_cache`` lets many views of one run decode each snapshot file once."""
        self.path = Path(path)
        self.limits = limits or {}
        self.max_snapshot = max_snapshot
        self.snapshot_cache = snapshot_cache
        self._chunk_indexes: dict[str, ChunkIndex] = {}
        self.manifest = read_manifest(self.path)
        try:
            self.run_id = bytes.fromhex(self.manifest["run_id"])
            self.queues = int(self.manifest["queues"])
            if len(self.run_id) != 16 or not 1 <= self.queues <= 64:
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise DamagedRun(f"{self.path / 'manifest.json'}: run_id or queues is missing or invalid") from None
        _check_manifest_fields(self.path / "manifest.json", self.manifest)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def log(self, name: str, limit: int | None = None) -> LogFile:
        kind = log_kind(name)
        if kind is None:
            raise DamagedRun(f"{name}: not a log file of a run")
        if name in self.limits:
            limit = self.limits[name] if limit is None else min(limit, self.limits[name])
        return open_log(self.path / name, kind, self.run_id, limit)

    def queue_log_names(self) -> list[str]:
        return [f"pal-{q}.log" for q in range(self.queues)]

    def events(self) -> EventIndex:
        """The timeline's events, indexed without holding them all (see EventIndex)."""
        return EventIndex(self.log("timeline.log"))

    def chunk_index(self, name: str) -> ChunkIndex:
        """The chunk index of a log (from its chunk headers), made on first use and kept: every
        crash point of a sweep starts reading the failure-free run's input log in its middle."""
        index = self._chunk_indexes.get(name)
        if index is None:
            index = self._chunk_indexes[name] = ChunkIndex(self.log(name))
        return index

    def outputs(self, limit: int | None = None) -> Iterator[rec.OutputRecord]:
        return self.log("output.log", limit).records(rec.iter_outputs)

    def snapshot_paths(self) -> list[Path]:
        folder = self.path / "snapshots"
        if not folder.is_dir():
            return []
        # Every entry named like a snapshot, a directory or a FIFO too: its reader reports it
        # (open_regular) instead of a sweep silently restoring an older snapshot.
        numbered = [(snapshot_number(p), p) for p in folder.glob("snap-*.snap")]
        limit = self.max_snapshot
        return [p for n, p in sorted(numbered) if n is not None and (limit is None or n <= limit)]

    def snapshot(self, path: Path) -> Snapshot:
        """A snapshot's contents; the caller may change its state (queue-local state is copied)."""
        if self.snapshot_cache is None:
            return read_snapshot(path, self.run_id)
        try:
            stat = path.stat()
        except OSError:
            return read_snapshot(path, self.run_id)  # reports the missing file
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        snap = self.snapshot_cache.get(key)
        if snap is None:
            snap = self.snapshot_cache.setdefault(key, read_snapshot(path, self.run_id))
        state = dict(snap.state, local=copy.deepcopy(snap.state.get("local")))
        return Snapshot(snap.number, snap.boundary, snap.flags, state)

    def reference(self) -> Snapshot:
        return read_snapshot(self.path / "reference.snap", self.run_id)

    def check_complete(self) -> None:
        """A complete run must hold exactly the bytes its manifest lists: every file present, of
        its size and SHA-256. A log that differs is read through to name the damaged chunk."""
        recovered = self.manifest.get("recovered_from")
        if isinstance(recovered, dict):
            raise UsageError(f"{self.path} is an execution `ftmbctl recover` wrote from the crash image "
                             f"{recovered.get('image')}, not a recorded run: check the run that image came from")
        if not self.complete:
            raise DamagedRun(f"{self.path}: the record did not complete (it was interrupted or killed), so there is "
                             "no failure-free run to compare against: recover it with `ftmbctl recover`, or test "
                             "real crashes of a complete run with `crash-replay RUN --kill N`")
        files = self.manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise DamagedRun(f"{self.path / 'manifest.json'}: lists no files")
        for rel, entry in sorted(files.items()):
            path = safe_join(self.path, rel)
            try:
                with open_regular(path) as handle:  # a FIFO listed with 0 bytes would block the hash
                    size = os.fstat(handle.fileno()).st_size
            except FileNotFoundError:
                raise DamagedRun(f"{path}: file is missing") from None
            except OSError as exc:
                raise DamagedRun(f"{path}: cannot be read ({exc.strerror})") from None
            expected_size, expected_sha = entry.get("bytes"), entry.get("sha256")
            if size == expected_size and (expected_sha is None or file_sha256(path) == expected_sha):
                continue
            kind = log_kind(path.name)
            if kind is not None:  # the reader names the first damaged chunk and its offset
                log = open_log(path, kind, self.run_id)
                for _chunk in log.chunks():
                    pass
                if log.scan.torn_bytes:
                    raise DamagedRun(f"{path}: ends inside the chunk at byte {log.scan.end} "
                                     f"({size} bytes, the manifest says {expected_size}): the file was cut short")
            if size != expected_size:
                raise DamagedRun(f"{path}: {size} bytes, the manifest says {expected_size}")
            raise DamagedRun(f"{path}: its bytes differ from the manifest's SHA-256 (damaged or replaced)")
        # The logs must end where the timeline's last event says they ended (the manifest alone
        # cannot tell when it was rewritten to match the damage).
        events = self.events()
        torn = events.log.scan.torn_bytes
        if torn:  # the record wrote every event whole before it said complete: a tail is damage
            raise DamagedRun(f"{self.path / 'timeline.log'}: {torn} bytes after its last complete chunk (byte "
                             f"{events.log.scan.end}), but a complete run's timeline ends on a chunk")
        if events:
            last = events[-1]
            lengths = {"input.log": last.input_len, "output.log": last.output_len,
                       **{f"pal-{q}.log": n for q, n in enumerate(last.queue_len)}}
            for name, length in lengths.items():
                size = (self.path / name).stat().st_size
                if size != length:
                    raise DamagedRun(f"{self.path / name}: {size} bytes, but the timeline's last event says {length}")

    def check_middlebox(self, snapshots: bool = True, named: str | None = None) -> Any:
        """The middlebox to replay this run with (a built-in the manifest names, or ``named``, the
        user's ``--middlebox``: never code the manifest alone names, trust.py) must be the code the
        run was recorded with, load with its options, and declare the same shared variables; with
        ``snapshots``, every snapshot must sit where ``snapshot_every`` puts it (a crash image is
        left to recovery, which skips damaged snapshots). Returns the middlebox."""
        from ftmbctl.middlebox import build_middlebox
        from ftmbctl.shared import SharedState, check_declared, dumped_variables
        from ftmbctl.trust import check_source, spec_to_run

        spec, options = spec_to_run(self.manifest, named, self.path), self.manifest["middlebox"]["options"]
        try:
            middlebox = build_middlebox(spec, options)
        except FtmbError as exc:
            if named:  # the user's code, or options of the manifest it does not take
                raise BadInput(f"--middlebox {spec!r} cannot replay {self.path}: {exc}") from None
            raise DamagedRun(f"{self.path / 'manifest.json'}: its middlebox {spec!r} cannot be loaded ({exc})") from None
        check_source(type(middlebox), spec, self.manifest, self.path)
        shared = SharedState()
        try:
            middlebox.declare(shared)
        except FtmbError:
            raise
        except Exception as exc:
            raise MiddleboxError(f"middlebox {spec!r} raised {type(exc).__name__} in declare(): {exc}",
                                 exception=f"{type(exc).__name__}: {exc}") from None
        recorded = self.manifest.get("variables")
        if recorded is not None and (self.path / "reference.snap").exists():
            # The manifest has no checksum of its own: its list must agree with the run's own
            # checksummed final state, or it is the manifest that is damaged, not the middlebox.
            if dumped_variables(self.reference().state["shared"]) != recorded:
                raise DamagedRun(f"{self.path / 'manifest.json'}: its shared variables disagree with those "
                                 "reference.snap holds")
            check_declared(shared, recorded, middlebox.name)  # (an image's: when recovery restores)
        for path in self.snapshot_paths() if snapshots else []:
            snap = self.snapshot(path)
            misplaced = snapshot_misplaced(self.manifest, snap.number, snap.boundary)
            if misplaced:
                raise DamagedRun(f"{path}: {misplaced}")
        return middlebox

    def variable_names(self) -> dict[int, str]:
        return {int(v[0]): str(v[1]) for v in self.manifest.get("variables", [])}
