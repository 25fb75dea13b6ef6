"""Recovery from a crash image (DESIGN §6): restore, compute S, replay, continue.

1. Load the latest intact snapshot of the image (a damaged one is skipped with a warning).
2. Read the durable input log from the snapshot's boundary and each queue's log from the
   snapshot's position; a torn tail is dropped, corruption before it is an error.
3. Compute the causal cut S (causal.py).
4. Replay: the recovered middlebox is run by the record engine itself, from the snapshot, with
   replay contexts that force S (replay.py), and logs anew into its own run directory.
5. The surviving Output Logger drops regenerated outputs that were already released (after
   checking they are byte-identical) and releases the rest by the usual rule.
6. The inputs that were not durable arrive again and are processed after the durable ones.
   With ``compare_with`` (the failure-free run: a check, not a real recovery), the continuation
   after S follows the failure-free run's own schedule and values (the reference schedule,
   DESIGN §6 step 5), every access checked, up to the first snapshot boundary after the replayed
   inputs (or the end of the trace), where state and outputs must equal the failure-free run's.
   Without it (``ftmbctl recover``, which cannot know the future), accesses after S run free.

Only ``image`` (the crash image) is read to recover; ``arrivals`` and ``compare_with`` are the
outside world: the packets that arrive again, and the failure-free run to compare with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ftmbctl import records as rec
from ftmbctl.causal import causal_cut
from ftmbctl.components import IL, Loss
from ftmbctl.errors import DamagedRun, FtmbError, MiddleboxError, UsageError
from ftmbctl.locking import exclusive
from ftmbctl.manifest import snapshot_misplaced
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.pcapio import RawPacket
from ftmbctl.queuelog import QueueDecoder
from ftmbctl.record import MiddleboxFailed, RecordConfig, Recorder
from ftmbctl.replay import ReplayContext, ReplayDivergence, ReplayPlan, describe_entry
from ftmbctl.rundir import RunDir, snapshot_number
from ftmbctl.scheduler import ReplayStalled
from ftmbctl.shared import check_declared, dumped_variables
from ftmbctl.snapshot import Snapshot
from ftmbctl.store import FILE_HEADER
from ftmbctl.trust import spec_to_run

Arrivals = Callable[[int], Iterator[RawPacket]]  # inputs from a packet id on, as they arrive again


@dataclass
class RecoveryResult:
    snapshot: int  # number of the snapshot restored (0: none, the initial state)
    boundary: int  # first packet id not covered by it
    warnings: list[str] = field(default_factory=list)
    durable_inputs: int = 0  # inputs durable in the image: ids < this were logged
    torn_bytes: dict[str, int] = field(default_factory=dict)
    logged: list[int] = field(default_factory=list)  # each queue's records after the snapshot
    cut: list[int] = field(default_factory=list)  # each queue's records in S
    cut_rounds: int = 0
    replayed: int = 0  # entries of S replayed in order
    followed: int = 0  # entries of the reference schedule after S (a check only)
    free_accesses: int = 0
    free_nondet: int = 0
    divergences: list[dict[str, Any]] = field(default_factory=list)
    released_before: int = 0
    duplicates_dropped: int = 0
    output_mismatches: list[dict[str, Any]] = field(default_factory=list)
    # released before the crash, but their packet needed accesses beyond S: output_id, entry
    beyond_cut: list[dict[str, Any]] = field(default_factory=list)
    missing_outputs: list[list[int]] = field(default_factory=list)
    inputs_processed: int = 0
    input_gaps: list[str] = field(default_factory=list)
    inputs_skipped: int = 0  # of those gaps, the inputs never processed
    inputs_repeated: int = 0  # and the inputs processed once more
    compared_at: str | None = None  # "packet boundary N" or "end of trace": where state was compared
    state_equal: bool | None = None  # the state there equals the failure-free one
    first_state_difference: str | None = None
    # outputs of the recovered run (regenerated and new) that differ from the failure-free run's
    output_differences: list[dict[str, Any]] = field(default_factory=list)  # output_id, what, message
    output_differences_total: int = 0
    out_dir: str = ""
    # No-Replay (DESIGN §8): inputs after the snapshot that had arrived are lost, by design
    mode: str = "ftmb"
    lost_inputs: int = 0
    uncovered_outputs: list[list[int]] = field(default_factory=list)  # released, but no snapshot covers them
    # where a recovery's time goes (make_recovery, Recovery._process): the set-up, the snapshot
    # loaded, the logs read and S computed; then until every durable input has been processed
    restore_seconds: float = 0.0
    replay_seconds: float = 0.0


def latest_snapshot(image: RunDir, warnings: list[str]) -> Snapshot | None:
    """The newest snapshot that reads back intact; damaged ones are skipped with a warning."""
    for path in reversed(image.snapshot_paths()):
        try:
            snap = image.snapshot(path)
        except DamagedRun as exc:
            warnings.append(f"skipped damaged snapshot: {exc}")
            continue
        if snapshot_number(path) != snap.number:
            warnings.append(f"skipped {path.name}: it holds snapshot {snap.number}")
            continue
        misplaced = snapshot_misplaced(image.manifest, snap.number, snap.boundary)
        if misplaced:
            raise DamagedRun(f"{path}: {misplaced}")
        return snap
    return None


def restore_latest(engine: Recorder, image: RunDir, res: RecoveryResult,
                   checked_variables: list[Any] | None = None) -> dict[str, tuple[int, int]]:
    """Load the image's latest intact snapshot into ``engine`` (shared and queue-local state) and
    note it in ``res``; return where each log stood when it was taken, name -> (bytes, records)
    (the logs' starts when there is none: the initial state).

    A snapshot is taken after its logs were flushed, so a log of the image shorter than the
    snapshot says is damage (or the snapshot belongs to a later moment than the logs).

    The middlebox must declare the variables the run was recorded with (``check_declared``):
    checked against the manifest once a checksummed snapshot vouches for it, or against
    ``checked_variables`` (a complete run's, checked against its reference.snap) without one."""
    queues = image.queues
    names = ["input.log", "output.log", *(f"pal-{q}.log" for q in range(queues))]
    at = {name: (FILE_HEADER.size, 0) for name in names}
    snap = latest_snapshot(image, res.warnings)
    recorded = image.manifest.get("variables")
    if snap is not None:
        state = snap.state
        try:
            # The manifest has no checksum of its own: a list that disagrees with the checksummed
            # snapshot is damage; one that agrees but the middlebox declares otherwise is its bug.
            if recorded is not None and dumped_variables(state["shared"]) != recorded:
                raise DamagedRun(f"{image.path / 'manifest.json'}: its shared variables disagree with those "
                                 f"snapshot {snap.number} holds")
            check_declared(engine.shared, recorded, engine.mb.name)
            engine.shared.load(state["shared"])
            if len(state["local"]) != queues:
                raise ValueError(f"{len(state['local'])} queue-local states for {queues} queues")
            engine.local[:] = state["local"]
            at["input.log"] = (state["input_bytes"], state["input_records"])
            at["output.log"] = (state["outputs_bytes"], state["outputs_released"])
            for q in range(queues):
                at[f"pal-{q}.log"] = (state["queue_bytes"][q], state["queue_records"][q])
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise DamagedRun(f"{image.path}: snapshot {snap.number} does not fit this middlebox ({exc})") from None
        res.snapshot, res.boundary = snap.number, snap.boundary
    elif checked_variables is not None:
        check_declared(engine.shared, checked_variables, engine.mb.name)
    for name, (offset, _records) in at.items():
        size = image.log(name).size
        if size < offset:
            raise DamagedRun(f"{image.path / name}: {size} bytes, but snapshot {res.snapshot} was taken when it "
                             f"held {offset}: the log is cut short or the snapshot is not of this image")
    return at


def _read_queue(image: RunDir, q: int, start: int, first_seq: int) -> tuple[list[Any], int]:
    log = image.log(f"pal-{q}.log")
    records = list(log.records(QueueDecoder(), start, first_seq))
    return records, log.scan.torn_bytes


def state_difference(state: dict[str, Any], reference: dict[str, Any]) -> str | None:
    """None when shared and queue-local state are equal, else where they first differ."""
    for var_id, (mine, theirs) in enumerate(zip(state["shared"], reference["shared"])):
        if mine != theirs:
            name = mine[0]
            if mine[2] != theirs[2]:
                return f"shared variable {name} (id {var_id}): {mine[2]} accesses, failure-free {theirs[2]}"
            return f"shared variable {name} (id {var_id}) holds another value"
    for q, (mine, theirs) in enumerate(zip(state["local"], reference["local"])):
        if mine != theirs:
            keys = sorted({*mine, *theirs} if isinstance(mine, dict) and isinstance(theirs, dict) else [], key=repr)
            differing = [k for k in keys if mine.get(k) != theirs.get(k)]
            return f"queue {q} local state differs{' in ' + repr(differing[0]) if differing else ''}"
    return None


def note_gap(res: RecoveryResult, got: int, expected: int, message: str) -> None:
    """Input ``got`` came where ``expected`` was next: the ones between were skipped, or ``got``
    is processed once more (exactly-once input)."""
    res.input_gaps.append(message)
    if got > expected:
        res.inputs_skipped += got - expected
    else:
        res.inputs_repeated += 1


class Recovery(Recorder):
    """The record engine, started from a snapshot, replaying S first."""

    def __init__(self, image: RunDir, arrivals: Arrivals, out: Path, compare_with: RunDir | None = None,
                 middlebox: str | None = None, loss: Loss | None = None) -> None:
        """``middlebox``: the spec the user named (``--middlebox``); without it only a built-in the
        manifest names is run (trust.py). ``loss`` (a check of ``crash-replay --also-lose``): what
        the outside world knows of a crash that took components down with the master."""
        man = image.manifest
        mb = man["middlebox"]
        cfg = RecordConfig(trace=Path(man["trace"]["path"]), out=out,
                           middlebox=spec_to_run(man, middlebox, image.path), mb_opts=list(mb["options"]), queues=image.queues, snapshot_every=man["snapshot_every"],
                           flush_every=man["flush_every"], scheduler="chaos", seed=man["seed"], force=True,
                           guard="off", lint=False)  # the guard and lint watch records, not replays
        middlebox = build_middlebox(cfg.middlebox, cfg.mb_opts)
        try:
            super().__init__(cfg, middlebox)
        except FtmbError:
            raise
        except Exception as exc:  # declare() or new_local_state() raised: the middlebox broke, not the run
            raise MiddleboxError(f"middlebox {middlebox.name!r} raised {type(exc).__name__} while it was set up "
                                 f"for recovery: {exc}", exception=f"{type(exc).__name__}: {exc}") from None
        self.image = image
        self.arrivals = arrivals
        self.compare_with = compare_with
        self.loss = loss
        self.reference_states: dict[int, dict[str, Any]] = {}  # failure-free snapshots read so far
        # failure-free queue records between two positions, read so far (crash points between the
        # same two snapshots follow the same ones): never changed once read
        self.reference_logs: dict[tuple[Any, ...], list[Any]] = {}
        self.durable_writes = False  # a recovered run is scratch: no fsync, no file hashes
        self.threads_run = man.get("scheduler") == "threads"
        for live in self.live:
            live.wall_clock = self.threads_run
        self.trace_sha = man["trace"]["sha256"]
        self.res = RecoveryResult(snapshot=0, boundary=0, out_dir=str(out))
        self._restore()

    # ---- steps 1-3 ----
    def _restore(self) -> None:
        image, res = self.image, self.res
        queues = image.queues
        checked = self.compare_with.manifest.get("variables") if self.compare_with is not None else None
        at = restore_latest(self, image, res, checked)
        (input_bytes, input_records), (output_bytes, output_records) = at["input.log"], at["output.log"]
        queue_bytes = [at[f"pal-{q}.log"][0] for q in range(queues)]
        queue_records = [at[f"pal-{q}.log"][1] for q in range(queues)]
        self.start_boundary, self.start_number = res.boundary, res.snapshot
        in_log = image.log("input.log")
        self.durable = list(in_log.records(rec.iter_inputs, input_bytes, input_records))
        res.torn_bytes["input.log"] = in_log.scan.torn_bytes
        res.durable_inputs = res.boundary + len(self.durable)
        logs = []
        for q in range(queues):
            records, torn = _read_queue(image, q, queue_bytes[q], queue_records[q])
            logs.append(records)
            res.torn_bytes[f"pal-{q}.log"] = torn
        res.logged = [len(r) for r in logs]
        cut = causal_cut(logs, [v.count for v in self.shared.variables], res.durable_inputs)
        res.cut, res.cut_rounds = cut.cut, cut.rounds
        self.logs, self.queue_at = logs, list(zip(queue_bytes, queue_records))
        self._follow(ReplayPlan([records[:n] for records, n in zip(logs, cut.cut)], cut.var_end))
        # Outputs released before the snapshot belong to inputs it covers: only later ones matter.
        self.released = self._released_after(output_bytes, output_records,
                                             [n + len(r) for n, r in zip(queue_records, logs)])
        self.output_start = (output_bytes, output_records)  # where outputs after the snapshot begin
        self.produced: dict[tuple[int, int], bytes] = {}  # every output recovery made, for comparison
        # What left the box, which output commit is judged on: the OL's own record above, which it
        # also suppresses duplicates with, unless a check says what the world saw (the OL may
        # have been lost with the master: then nothing is suppressed, and the world still knows).
        self.witnessed = self.released if self.loss is None else self.loss.released
        res.released_before = len(self.witnessed)
        self.regenerated: set[tuple[int, int]] = set()
        self.manifest_extra = {"recovered_from": {"image": str(image.path), "snapshot": res.snapshot,
                                                  "durable_inputs": res.durable_inputs}}

    def _released_after(self, offset: int, first_seq: int, logged: list[int]) -> dict[tuple[int, int], bytes]:
        """The outputs the image released after the snapshot, each checked against the image's
        logs. The release rule let an output out only once its input and every record of its
        dependency vector were durable, so one that needs more than the image holds means a log
        of the image lost durable bytes. Recovery still tries (free execution may regenerate the
        output exactly); if it cannot, the image is to blame, not the middlebox (``_blame``)."""
        log = self.image.log("output.log")
        durable_inputs = self.res.durable_inputs
        released: dict[tuple[int, int], bytes] = {}
        self.unbacked: dict[tuple[int, int], str] = {}  # output id -> what the image lacks for it
        for chunk in log.chunks(offset, first_seq):
            for output in log.decode(chunk, rec.iter_outputs):
                oid = output.output_id
                where = f"{log.path}: output {oid} in the chunk at byte {chunk.offset}"
                if len(output.deps) != len(logged):
                    raise DamagedRun(f"{where} has a dependency vector of {len(output.deps)} queues, not {len(logged)}")
                if output.input_id >= durable_inputs:
                    self.unbacked[oid] = (f"{where} was released, but input.log holds only packets before "
                                          f"{durable_inputs}: the image's input log lost durable records")
                for q, (needed, held) in enumerate(zip(output.deps, logged)):
                    if needed > held and oid not in self.unbacked:
                        self.unbacked[oid] = (f"{where} was released depending on {needed} records of "
                                              f"pal-{q}.log, which holds only {held}: the image's queue log "
                                              "lost durable records")
                released[oid] = output.data
        return released

    def _blame(self) -> None:
        """A released output recovery could not regenerate, because the image lacks records it was
        released on, is damage to the image (exit 3), not an output-commit violation."""
        res = self.res
        for oid in [tuple(m["output_id"]) for m in res.output_mismatches] + [tuple(o) for o in res.missing_outputs]:
            if oid in self.unbacked:
                raise DamagedRun(self.unbacked[oid])

    def _follow(self, plan: ReplayPlan) -> None:
        """Replay ``plan``. While its scripts last a worker keeps the baton until it must wait for
        its turn (every order they allow is the same run, and this switches threads least); after
        them the seeded chaos schedule takes over."""
        self.plan = plan
        self.sched.sticky = plan.remaining > 0
        plan.on_done = self._replay_done
        self.sched.on_stall = plan.stall
        self.sched.describe = lambda q: self.contexts[q].where()
        plan.positions = self.sched.positions

    def _replay_done(self) -> None:
        self.sched.sticky = False

    def _follow_reference(self) -> None:
        """A check goes on after S under the failure-free run's own schedule (DESIGN §6 step 5):
        each queue's script becomes its part of S (from the image) followed by the failure-free
        run's records up to the snapshot where state is compared (or the end of its log)."""
        assert self.compare_with is not None
        res = self.res
        target = self._comparison_snapshot()
        end = [None] * self.cfg.queues if target is None else target[1]["queue_bytes"]
        scripts = []
        for q, (records, n) in enumerate(zip(self.logs, res.cut)):
            key = (q, *self.queue_at[q], end[q])
            following = self.reference_logs.get(key)
            if following is None:
                following = self.reference_logs.setdefault(key, self._reference_queue(q, end[q]))
            scripts.append(records[:n] + following[n:])
        self._follow(ReplayPlan(scripts, self.plan.var_end, cut=list(res.cut),
                                strict_until=target[0] if target is not None else 1 << 62))

    def _reference_queue(self, q: int, end: int | None) -> list[Any]:
        """Queue q's records in the failure-free run, from the restored snapshot's position up to
        ``end`` (a byte offset; None: the end of the log)."""
        log = self.compare_with.log(f"pal-{q}.log")
        records: list[Any] = []
        decode = QueueDecoder()
        for chunk in log.chunks(*self.queue_at[q]):
            if end is not None and chunk.offset >= end:
                break
            records.extend(log.decode(chunk, decode))
        return records

    def _comparison_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        """(boundary, state) of the failure-free snapshot where this check compares state: the
        first after the restored one whose boundary covers every durable input; None for the
        end of the trace."""
        assert self.compare_with is not None
        every = self.cfg.snapshot_every
        number = max(self.res.snapshot + 1, -(-self.res.durable_inputs // every))
        path = self.compare_with.path / "snapshots" / f"snap-{number:06d}.snap"
        if not path.exists():
            return None
        state = self.reference_states.get(number)
        if state is None:
            state = self.reference_states.setdefault(number, self.compare_with.snapshot(path).state)
        return state["boundary"], state

    # ---- step 4-6: the engine's hooks ----
    def _make_contexts(self) -> list[Any]:
        cfg, sched, storage = self.cfg, self.sched, self.storage
        return [ReplayContext(q, self.local[q], self.live[q], storage.logs[q], storage, cfg.flush_every,
                              sched.sched_point_for(q), plan=self.plan, wait_until=sched.wait_until)
                for q in range(cfg.queues)]

    def _input_packets(self) -> Iterator[RawPacket]:
        expect = self.res.boundary
        for record in self.durable:
            if record.id != expect:
                note_gap(self.res, record.id, expect,
                         f"input log holds packet {record.id} where {expect} was expected")
            expect = record.id + 1
            yield RawPacket(record.id, record.ts_ns, record.linktype, record.orig_len, record.data)
        for packet in self.arrivals(expect):
            if packet.index != expect:
                note_gap(self.res, packet.index, expect,
                         f"packet {packet.index} arrived where {expect} was expected")
            expect = packet.index + 1
            yield packet

    def _hold(self, q: int, pkt: Packet, outs: list[tuple[int, bytes]]) -> None:
        fresh = []
        for index, (linktype, data) in enumerate(outs):
            oid = (pkt.id, index)
            if self.compare_with is not None:
                self.produced[oid] = data
            released = self.witnessed.get(oid)
            if released is None:
                fresh.append((linktype, data))
                continue
            self.regenerated.add(oid)
            beyond = self.contexts[q].beyond_cut(pkt.id)
            if beyond is not None:  # its packet needed more than S: not regenerated by S alone
                self.res.beyond_cut.append({"output_id": list(oid), "queue": q, "entry": describe_entry(beyond)})
            if released != data:
                self.res.output_mismatches.append({"output_id": list(oid), "released_bytes": len(released),
                                                   "regenerated_bytes": len(data),
                                                   "first_difference": _first_difference(released, data)})
            if oid in self.released:  # the OL knows it left already: a duplicate
                self.res.duplicates_dropped += 1
            else:  # an OL that lost its record releases it again
                fresh.append((linktype, data))
        if fresh:  # output ids stay (input id, index): the kept outputs keep their original index
            deps = tuple(self.storage.totals)
            finish = self.sched.now_ns()
            self.storage.hold_output(q, [(pkt.id, i, lt, finish, deps, data) for i, (lt, data) in enumerate(outs)
                                         if (pkt.id, i) not in self.released])

    def _after_snapshot(self, number: int, boundary: int, state: dict[str, Any]) -> None:
        """Compare with the failure-free run at the first boundary after the replayed inputs, where
        the reference schedule ends; the check stops there."""
        if self.compare_with is None or boundary < self.res.durable_inputs:
            return
        path = self.compare_with.path / "snapshots" / f"snap-{number:06d}.snap"
        if not path.exists():
            return
        reference = self.reference_states.get(number)
        if reference is None:
            reference = self.reference_states.setdefault(number, self.compare_with.snapshot(path).state)
        self._compare(state, reference, f"packet boundary {boundary}", reference.get("outputs_bytes"))
        self.stop_requested = True

    def _compare(self, state: dict[str, Any], reference: dict[str, Any], where: str,
                 outputs_end: int | None = None) -> None:
        res = self.res
        self._note_skipped()
        difference = state_difference(state, reference)
        res.compared_at, res.state_equal = where, difference is None
        res.first_state_difference = None if difference is None else f"at {where}: {difference}"
        self._compare_outputs(outputs_end)

    def _note_skipped(self) -> None:
        """An entry of a script that no access asked for by the end is an access the middlebox
        skipped: the first of them (in packet order) is a divergence."""
        plan = self.plan
        if not plan.forcing or not plan.remaining:
            return
        left = [(ctx.script[ctx.pos], ctx) for ctx in self.contexts if ctx.pos < len(ctx.script)]
        entry, ctx = min(left, key=lambda item: item[0].packet)
        var, seq = (entry.var, entry.seq) if isinstance(entry, rec.PalRecord) else (None, None)
        plan.diverge(ReplayDivergence("order", ctx.queue, entry.packet, var, seq, describe_entry(entry),
                                      "no such access: the packet was processed without it",
                                      in_cut=ctx.pos < ctx.cut, first_after_restore=entry.packet == ctx.first_packet),
                     True)

    def _compare_outputs(self, end: int | None) -> None:
        """Every output of the failure-free run from the snapshot up to ``end`` (a byte offset of its
        output log: everything released before the next snapshot) against what recovery made."""
        assert self.compare_with is not None
        log = self.compare_with.log("output.log")
        start, first_seq = self.output_start
        expected: dict[tuple[int, int], bytes] = {}
        for chunk in log.chunks(start, first_seq):
            if end is not None and chunk.offset >= end:
                break
            expected.update(rec.iter_output_data(chunk.raw))
        differences = []
        for oid in sorted(expected.keys() | self.produced.keys()):
            mine, theirs = self.produced.get(oid), expected.get(oid)
            if mine == theirs:
                continue
            if theirs is None:
                what, text = "extra", f"output {oid} was not in the failure-free run"
            elif mine is None:
                what, text = "missing", f"output {oid} of the failure-free run was not produced"
            else:
                what, text = "bytes", f"output {oid} differs from the failure-free one at byte " \
                                      f"{_first_difference(mine, theirs)}"
            differences.append({"output_id": list(oid), "what": what, "message": text})
        self.res.output_differences_total = len(differences)
        self.res.output_differences = differences[:5]

    def _failure(self, cause: BaseException | None) -> FtmbError:
        """The middlebox raised (or its replay stalled) during recovery: a verdict, not bad input."""
        if isinstance(cause, MiddleboxFailed):
            error = cause.error
            return MiddleboxError(f"middlebox {self.mb.name!r} raised {type(error).__name__}: {error} on packet "
                                  f"{cause.packet} (queue {cause.queue}) during recovery",
                                  packet=cause.packet, queue=cause.queue, exception=f"{type(error).__name__}: {error}")
        return MiddleboxError(f"recovery of middlebox {self.mb.name!r} failed: {type(cause).__name__}: {cause}",
                              exception=f"{type(cause).__name__}: {cause}")

    def _process(self, q: int, pkt: Packet) -> None:
        super()._process(q, pkt)
        if pkt.id < self.res.durable_inputs:  # the replay ends with the last durable input processed
            self.replay_left -= 1
            if not self.replay_left:
                self.res.replay_seconds = time.perf_counter() - self.replay_started

    def recover(self) -> RecoveryResult:
        if self.compare_with is not None:
            self._follow_reference()
        self.replay_started, self.replay_left = time.perf_counter(), len(self.durable)
        try:
            result = self.run()
        except ReplayStalled as exc:
            self.sched.abort()
            self._discard()
            raise MiddleboxError(f"recovery of middlebox {self.mb.name!r} cannot make progress: {exc}") from None
        res = self.res
        plan = self.plan
        res.inputs_processed = result.packets_in
        res.replayed, res.followed = plan.replayed, plan.followed
        res.free_accesses, res.free_nondet = plan.free_accesses, plan.free_nondet
        # Outputs of inputs before the snapshot were all released before it was taken.
        res.missing_outputs = sorted([list(oid) for oid in set(self.witnessed) - self.regenerated])
        if self.compare_with is None:  # a real recovery: an image that lacks what it released is damaged
            self._blame()
        if res.compared_at is None and self.compare_with is not None:
            self._compare(self.final_state, self.compare_with.reference().state, "end of trace")
        res.divergences = [d.as_dict() for d in plan.divergences]
        return res


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def arrivals_from_log(run: RunDir) -> Arrivals:
    """Inputs arriving again, taken from a complete run's input log.

    Reading starts at the chunk holding the first input: the run's chunk index (built once per
    run from chunk headers) finds it, so a crash late in a long trace neither decompresses nor
    maps the log before it."""
    def arrivals(start: int) -> Iterator[RawPacket]:
        log = run.log("input.log")
        for chunk in log.chunks(*run.chunk_index("input.log").locate(start)):
            for record in log.decode(chunk, rec.iter_inputs):
                if record.id >= start:
                    yield RawPacket(record.id, record.ts_ns, record.linktype, record.orig_len, record.data)
    return arrivals


def arrivals_from_trace(trace: Path) -> Arrivals:
    from ftmbctl.pcapio import iter_packets

    def arrivals(start: int) -> Iterator[RawPacket]:
        for packet in iter_packets(trace):
            if packet.index >= start:
                yield packet
    return arrivals


def make_recovery(image: RunDir, arrivals: Arrivals, out: Path, compare_with: RunDir | None = None,
                  middlebox: str | None = None, loss: Loss | None = None) -> Any:
    """The recovery the image's mode calls for: replay (FTMB) or restore only (No-Replay, or any
    run whose Input Logger was lost with the master: without its inputs nothing can be replayed)."""
    started = time.perf_counter()
    if image.manifest.get("mode") == "no-replay" or (loss is not None and loss.lost(IL)):
        from ftmbctl.noreplay import NoReplayRecovery
        recovery: Any = NoReplayRecovery(image, arrivals, out, compare_with, middlebox, loss)
    else:
        recovery = Recovery(image, arrivals, out, compare_with, middlebox, loss)
    recovery.res.restore_seconds = time.perf_counter() - started
    return recovery


def recover(image: RunDir, arrivals: Arrivals, out: Path, compare_with: RunDir | None = None,
            middlebox: str | None = None, force: bool = True) -> RecoveryResult:
    """Recover ``image`` into the run directory ``out`` (replaced), running ``middlebox`` (the
    user's spec; None: the built-in the manifest names).

    ``out`` is never the image, inside it or around it, and is replaced only with ``force`` (the
    old run is put back if the recovery fails); another process writing it refuses this one."""
    _refuse_overlap(image.path, out)
    with exclusive(out):
        if out.exists() and not force:
            raise UsageError(f"{out} already exists; pass --force to overwrite it")
        return make_recovery(image, arrivals, out, compare_with, middlebox).recover()


def _refuse_overlap(image: Path, out: Path) -> None:
    """Replacing ``out`` must not destroy the image it is recovered from."""
    src, dst = image.resolve(), out.resolve()
    if dst == src:
        raise UsageError(f"--out {out} is the crash image itself; recovering into it would destroy it")
    if src in dst.parents:
        raise UsageError(f"--out {out} is inside the crash image {image}; recover into a directory outside it")
    if dst in src.parents:
        raise UsageError(f"--out {out} holds the crash image {image}; replacing it would destroy the image")
