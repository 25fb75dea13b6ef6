"""Crash, recovery and verify (DESIGN §5-7), from recorded chaos runs and through the CLI.

The runs are recorded from the first ``PACKETS`` packets of ``traces/small.pcap`` with a snapshot
every ``SNAPSHOT_EVERY`` packets and a flush every ``FLUSH_EVERY`` records: two snapshots and
100-250 timeline events per run, so that a sweep over every event (and its torn variant) of 18
runs fits in well under a minute. Every check compares what the engine reports with something
it does not compute itself: the timeline (what was durable at each event), the crash image's
own files, the failure-free run's outputs, or a second recovery.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from ftmbctl import records as rec
from ftmbctl.cli import app
from ftmbctl.crash import CLEAN, TORN, CrashPoint, can_tear, image_spec, image_view, write_image
from ftmbctl.queuelog import QueueDecoder
from ftmbctl.record import RecordConfig, record
from ftmbctl.recovery import Recovery, RecoveryResult, arrivals_from_log, arrivals_from_trace, recover
from ftmbctl.rundir import RunDir
from ftmbctl.snapshot import snapshot_name
from ftmbctl.store import KIND_INPUT, KIND_QUEUE
from ftmbctl.verify import SweepConfig, SweepReport, sweep
from runreader import recorded_middlebox
from middleboxes_for_tests import spec
from runreader import read_log

PACKETS = 100
SNAPSHOT_EVERY = 40  # snapshots 1 and 2, at packets 40 and 80
FLUSH_EVERY = 8
MIDDLEBOXES = {"nat": "nat", "monitor": "monitor", "mixed": spec("Mixed")}
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def trace(small_trace_head) -> Path:
    return small_trace_head(PACKETS)


@pytest.fixture(scope="module")
def recorded(trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``recorded(mb, queues, seed) -> run directory``, each configuration recorded once.

    Tests that change a run (damage it, write results into it) work on a copy (``fresh_copy``)."""
    base = tmp_path_factory.mktemp("runs")
    cache: dict[tuple[str, int, int], Path] = {}

    def get(mb: str = "mixed", queues: int = 2, seed: int = 1) -> Path:
        key = (mb, queues, seed)
        if key not in cache:
            out = base / f"{mb}-q{queues}-s{seed}"
            record(RecordConfig(trace=trace, out=out, middlebox=MIDDLEBOXES[mb], queues=queues, seed=seed,
                                snapshot_every=SNAPSHOT_EVERY, flush_every=FLUSH_EVERY))
            cache[key] = out
        return cache[key]

    return get


def fresh_copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("crash"))
    return dest


def events_of(run: Path) -> list[rec.Event]:
    return RunDir(run).events()


def by_point(report: SweepReport) -> dict[tuple[int, str], dict[str, Any]]:
    return {(p["event"], p["variant"]): p for p in report.points}


def describe(points: list[dict[str, Any]]) -> str:
    return "\n".join(f"{p['event']}/{p['variant']} ({p['kind']}): {p['violations']}" for p in points)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def assert_one_sentence_error(result, code: int, *needles: str) -> str:
    """Exit ``code`` with one ``error:`` line naming ``needles``; no traceback, no verdict."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert "consistent" not in result.stdout.lower(), result.stdout  # neither a verdict nor a table
    return errors[0]


def snapshot_events(events: list[rec.Event]) -> tuple[list[int], list[int]]:
    """Indexes of the snapshot-begin and snapshot-durable events."""
    return ([e.index for e in events if e.kind == rec.EV_SNAPSHOT_BEGIN],
            [e.index for e in events if e.kind == rec.EV_SNAPSHOT_DURABLE])


def same_recovered_run(a: Path, b: Path) -> None:
    """Two recovered run directories hold the same execution: inputs, outputs, final state."""
    ra, rb = RunDir(a), RunDir(b)
    assert list(ra.log("input.log").records(rec.iter_inputs)) == list(rb.log("input.log").records(rec.iter_inputs))
    assert list(ra.outputs()) == list(rb.outputs())
    for q in range(ra.queues):
        name = f"pal-{q}.log"
        assert list(ra.log(name).records(QueueDecoder())) == list(rb.log(name).records(QueueDecoder()))
    assert ra.reference().state == rb.reference().state
    assert ra.manifest["recovered_from"]["snapshot"] == rb.manifest["recovered_from"]["snapshot"]
    assert ra.manifest["recovered_from"]["durable_inputs"] == rb.manifest["recovered_from"]["durable_inputs"]


# ---------------------------------------------------------------- chaos sweeps over every event

CHAOS = [(mb, queues, seed) for mb in MIDDLEBOXES for queues in (1, 2, 4) for seed in (1, 2)]


@pytest.mark.parametrize("mb,queues,seed", CHAOS, ids=[f"{m}-q{q}-seed{s}" for m, q, s in CHAOS])
def test_every_event_clean_and_torn_recovers_consistently(recorded, mb: str, queues: int, seed: int) -> None:
    run = recorded(mb, queues, seed)
    source = RunDir(run)
    events = source.events()
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), everything=True, torn=True, jobs=2))
    points = by_point(report)
    assert {e for e, v in points if v == CLEAN} == set(range(len(events)))
    assert {e for e, v in points if v == TORN} == {i for i in range(len(events)) if can_tear(events, i)}
    failed = [p for p in report.points if not p["consistent"]]
    assert not failed, describe(failed[:5])
    assert report.consistent
    assert json.loads((run / "crash" / "results.json").read_text())["consistent"] is True

    # What each recovery found in its image is what the timeline says was durable at the crash.
    partial_snapshots = 0
    for (index, variant), point in points.items():
        ev, summary = events[index], point["recovery"]
        assert summary["snapshot"] == max(ev.snapshot, 0), (index, variant)
        assert summary["boundary"] == max(ev.snapshot, 0) * SNAPSHOT_EVERY
        assert summary["durable_inputs"] == ev.input_records, (index, variant)
        assert summary["warnings"] == []
        if ev.snapshot < 0:  # nothing restored: every durable record is after the "snapshot"
            assert summary["logged"] == list(ev.queue_records)
            assert summary["released_before"] == ev.output_records
        if variant == CLEAN:
            assert summary["torn_bytes"] == {}, index
        elif events[index + 1].kind == rec.EV_SNAPSHOT_DURABLE:
            partial_snapshots += 1  # half a .tmp on disk: invisible, the previous snapshot is used
            assert summary["torn_bytes"] == {}
        else:  # half of the next chunk on disk: dropped as a torn tail
            torn_file = image_spec(source, events, CrashPoint(index, TORN)).torn_file
            if torn_file == "output.log":  # the OL's own log: read only up to the released outputs
                assert summary["torn_bytes"] == {}
            else:
                assert list(summary["torn_bytes"]) == [torn_file] and summary["torn_bytes"][torn_file] > 0, index
    assert partial_snapshots == 2
    # With one queue S is all that was logged; with more, crashes between flushes of different
    # queues leave gaps that the fixpoint has to cut (and still every recovery is consistent).
    cut_short = [p for p in report.points if p["recovery"]["cut"] != p["recovery"]["logged"]]
    if queues == 1:
        assert not cut_short
    else:
        assert len(cut_short) >= 10


# ---------------------------------------------------------------- crashes around snapshots

def test_crashes_around_snapshots_restore_the_right_one(recorded, trace: Path, tmp_path: Path) -> None:
    run = fresh_copy(recorded("mixed", 2, 1), tmp_path / "run")
    events = events_of(run)
    begins, durables = snapshot_events(events)
    assert len(begins) == len(durables) == 2 and all(d == b + 1 for b, d in zip(begins, durables))
    first_begin = begins[0]
    last = len(events) - 1
    chosen = sorted({0, first_begin - 1, *begins, *durables, last})
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), at=chosen, torn=True, jobs=1))
    points = by_point(report)
    failed = [p for p in report.points if not p["consistent"]]
    assert not failed, describe(failed)

    def restored(index: int, variant: str = CLEAN) -> int:
        return points[(index, variant)]["recovery"]["snapshot"]

    # before the first snapshot: the initial state
    assert restored(0) == restored(first_begin - 1) == restored(first_begin) == 0
    for k, (begin, durable) in enumerate(zip(begins, durables), start=1):
        assert events[durable].arg == k
        # right before snapshot k (every log flushed, nothing of k on disk): snapshot k - 1
        assert restored(begin) == k - 1
        assert sum(points[(begin, CLEAN)]["recovery"]["logged"]) > 0
        # during snapshot k: half of its .tmp on disk, which recovery must not take
        assert restored(begin, TORN) == k - 1
        # right after snapshot k became durable: snapshot k, and nothing logged after it yet
        summary = points[(durable, CLEAN)]["recovery"]
        assert restored(durable) == k
        assert summary["boundary"] == k * SNAPSHOT_EVERY
        assert summary["logged"] == [0, 0] and summary["replayed"] == 0
    # after the last event: the last snapshot, and the whole trace was durable
    assert events[last].kind == rec.EV_END
    assert restored(last) == len(durables)
    assert points[(last, CLEAN)]["recovery"]["durable_inputs"] == PACKETS
    assert points[(last, CLEAN)].get("chain") is True

    # The image of a crash during snapshot 2 holds it only as a partial .tmp ...
    source = RunDir(run)
    point = CrashPoint(begins[1], TORN)
    spec_ = image_spec(source, events, point)
    full = (run / "snapshots" / snapshot_name(2)).read_bytes()
    assert spec_.partial_snapshot == (2, len(full) // 2)
    image = write_image(source, point, spec_, tmp_path / "image")
    assert sorted(p.name for p in (image / "snapshots").iterdir()) == [snapshot_name(1), snapshot_name(2) + ".tmp"]
    assert (image / "snapshots" / (snapshot_name(2) + ".tmp")).read_bytes() == full[:len(full) // 2]
    assert not (image / "reference.snap").exists() and not (image / "timeline.log").exists()
    # ... and recovering that directory on its own (arrivals from the trace) restores snapshot 1.
    res = recover(RunDir(image), arrivals_from_trace(trace), tmp_path / "recovered",
                  middlebox=recorded_middlebox(image))
    assert (res.snapshot, res.boundary) == (1, SNAPSHOT_EVERY)
    assert res.warnings == []
    assert res.durable_inputs == events[point.event].input_records
    assert not res.divergences and not res.output_mismatches and not res.missing_outputs
    # Mixed's updates commute: the recovered run ends in the failure-free shared state.
    assert RunDir(tmp_path / "recovered").reference().state["shared"] == source.reference().state["shared"]


# ---------------------------------------------------------------- kept images recover on their own

def test_kept_images_recover_on_their_own_like_in_memory(recorded, tmp_path: Path) -> None:
    run = fresh_copy(recorded("mixed", 4, 2), tmp_path / "run")
    events = events_of(run)
    begins, durables = snapshot_events(events)
    queue_flushes = [e.index for e in events if e.kind == rec.EV_QUEUE_FLUSH and e.snapshot == 1]
    releases = [e.index for e in events if e.kind == rec.EV_RELEASE and e.snapshot == 2]
    chosen = [queue_flushes[len(queue_flushes) // 2] - 1, queue_flushes[len(queue_flushes) // 2],
              begins[1], releases[0], len(events) - 1]
    keep = tmp_path / "kept"
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), at=chosen, torn=True, keep=keep, jobs=1, chain=False))
    assert report.consistent, describe(report.points)
    source = RunDir(run)
    expected: dict[str, RecoveryResult] = {}
    for point in (CrashPoint(p["event"], p["variant"]) for p in report.points):
        name = f"crash-{point.event:06d}-{point.variant}"
        assert (keep / name / "manifest.json").exists(), name
        res = recover(image_view(source, image_spec(source, events, point)), arrivals_from_log(source),
                      tmp_path / "in-memory" / name, middlebox=recorded_middlebox(run))
        verdict = by_point(report)[(point.event, point.variant)]["recovery"]
        assert (verdict["cut"], verdict["logged"], verdict["durable_inputs"], verdict["snapshot"]) == (
            res.cut, res.logged, res.durable_inputs, res.snapshot)
        expected[name] = res
    assert len(expected) >= 8  # clean and torn variants
    # The images must not need the run they came from.
    shutil.move(run, tmp_path / "moved-away")
    for name, res in sorted(expected.items()):
        out = tmp_path / "cli" / name
        result = invoke("recover", keep / name, "-m", recorded_middlebox(keep / name), "--out", out)
        assert result.exit_code == 0, (name, result.output)
        assert f"{res.cut} ({res.cut_rounds} fixpoint rounds)" in result.stdout
        same_recovered_run(out, tmp_path / "in-memory" / name)


# ---------------------------------------------------------------- output commit and exactly-once

class WatchedRecovery(Recovery):
    """A recovery that also notes every output the replay regenerates, before the OL sees it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seen: dict[tuple[int, int], bytes] = {}
        super().__init__(*args, **kwargs)

    def _hold(self, q: int, pkt: Any, outs: list[tuple[int, bytes]]) -> None:
        for index, (_linktype, data) in enumerate(outs):
            assert (pkt.id, index) not in self.seen, f"output {(pkt.id, index)} generated twice"
            self.seen[(pkt.id, index)] = data
        super()._hold(q, pkt, outs)


@pytest.mark.parametrize("mb", ["mixed", "nat"])
def test_released_outputs_are_regenerated_byte_for_byte_and_released_once(recorded, tmp_path: Path,
                                                                          mb: str) -> None:
    run = recorded(mb, 4, 1)
    source = RunDir(run)
    events = source.events()
    failure_free = {o.output_id: o.data for o in source.outputs()}
    checked = 0
    for index in [e.index for e in events if e.kind == rec.EV_RELEASE and e.snapshot >= 1]:
        image = image_view(source, image_spec(source, events, CrashPoint(index)))
        out = tmp_path / f"recovered-{index}"
        recovery = WatchedRecovery(image, arrivals_from_log(source), out, middlebox=recorded_middlebox(run))
        res = recovery.recover()
        released = list(image.outputs())
        assert [o.output_id for o in released] == [o.output_id for o in source.outputs(events[index].output_len)]
        after_snapshot = {o.output_id: o.data for o in released if o.input_id >= res.boundary}
        # output commit: each one released before the crash came out again, same bytes
        for oid, data in after_snapshot.items():
            assert recovery.seen.get(oid) == data, f"crash at {index}: output {oid}"
        assert not res.output_mismatches and not res.missing_outputs and not res.divergences
        assert res.released_before == res.duplicates_dropped == len(after_snapshot)
        # exactly-once output: what recovery releases shares no id with what had left the box
        recovered = [o.output_id for o in RunDir(out).outputs()]
        assert len(recovered) == len(set(recovered))
        assert not set(recovered) & {o.output_id for o in released}
        # exactly-once input: every input from the snapshot on, once, in order
        inputs = [r.id for r in RunDir(out).log("input.log").records(rec.iter_inputs)]
        assert inputs == list(range(res.boundary, PACKETS))
        if mb == "mixed":  # outputs depend on the packet alone: together they are the failure-free ones
            together = {o.output_id: o.data for o in released}
            together.update((o.output_id, o.data) for o in RunDir(out).outputs())
            assert together == failure_free
        checked += bool(after_snapshot)
        shutil.rmtree(out)
    assert checked >= 10  # crashes with released outputs that the replay had to regenerate


# ---------------------------------------------------------------- bad input through the CLI

@pytest.fixture(scope="module")
def base_run(recorded) -> Path:
    return recorded("nat", 2, 1)


@pytest.fixture
def damaged(base_run: Path, tmp_path: Path) -> Callable[[str], Path]:
    return lambda name: fresh_copy(base_run, tmp_path / name)


def chunk_offsets(path: Path, kind: int, run: Path) -> list[tuple[int, int]]:
    """(offset, stored bytes) of every chunk of a log."""
    run_id = bytes.fromhex(RunDir(run).manifest["run_id"])
    return [(c.offset, c.stored) for c in read_log(path, kind, run_id).chunks]


@pytest.mark.parametrize("jobs", [
    "1",
    "2",
])
def test_missing_queue_log_is_reported(damaged, jobs: str) -> None:
    run = damaged("missing")
    (run / "pal-1.log").unlink()
    assert_one_sentence_error(invoke("crash-replay", run, "--all", "--jobs", jobs), 3, "pal-1.log", "missing")
    assert_one_sentence_error(invoke("verify", run, "--jobs", jobs), 3, "pal-1.log", "missing")


def test_chunk_cut_short_mid_file_is_reported_with_its_offset(damaged) -> None:
    """Bytes missing from the middle of a chunk that is not the last: the chunk's length now
    runs into the next chunk, so its checksum fails there, and the error names that offset."""
    run = damaged("cut-short")
    path = run / "pal-0.log"
    chunks = chunk_offsets(path, KIND_QUEUE, run)
    offset, stored = chunks[len(chunks) // 2]
    assert len(chunks) >= 4
    data = path.read_bytes()
    path.write_bytes(data[:offset + stored // 2] + data[offset + stored:])
    assert_one_sentence_error(invoke("crash-replay", run, "--all", "--jobs", "1"), 3,
                              "pal-0.log", f"byte {offset}")


def test_complete_run_with_log_ending_inside_a_middle_chunk_is_damaged(damaged) -> None:
    run = damaged("truncated")
    path = run / "pal-0.log"
    chunks = chunk_offsets(path, KIND_QUEUE, run)
    offset, stored = chunks[len(chunks) // 2]
    path.write_bytes(path.read_bytes()[:offset + stored // 2])
    assert_one_sentence_error(invoke("crash-replay", run, "--all", "--jobs", "1"), 3, "pal-0.log", str(offset))


def test_flipped_byte_in_input_log_is_reported(damaged) -> None:
    run = damaged("flipped")
    path = run / "input.log"
    chunks = chunk_offsets(path, KIND_INPUT, run)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    offset = max(o for o, _ in chunks if o <= middle)  # the chunk the flipped byte is in
    result = invoke("crash-replay", run, "--all", "--jobs", "1")
    assert_one_sentence_error(result, 3, "input.log", f"byte {offset}")
    assert_one_sentence_error(invoke("verify", run, "--jobs", "1"), 3, "input.log", f"byte {offset}")


@pytest.mark.parametrize("damage", ["missing", "not-json", "not-an-object"])
def test_bad_manifest_is_reported(damaged, damage: str) -> None:
    run = damaged(damage)
    manifest = run / "manifest.json"
    if damage == "missing":
        manifest.unlink()
    elif damage == "not-json":
        manifest.write_text(manifest.read_text()[:40])
    else:
        manifest.write_text("[1, 2, 3]\n")
    for args in (("crash-replay", run, "--all"), ("verify", run), ("recover", run, "--out", run.parent / "r")):
        assert_one_sentence_error(invoke(*args), 3, "manifest.json")


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_reference_snapshot_is_reported(damaged, damage: str) -> None:
    run = damaged(f"reference-{damage}")
    path = run / "reference.snap"
    data = bytearray(path.read_bytes())
    if damage == "flipped":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))
    assert_one_sentence_error(invoke("crash-replay", run, "--all"), 3, "reference.snap")
    assert_one_sentence_error(invoke("verify", run), 3, "reference.snap")


def test_queue_log_of_another_run_is_reported(damaged, recorded, tmp_path: Path) -> None:
    other = recorded("nat", 2, 2)  # same trace and options, another seed: another run id
    run = damaged("swapped")
    shutil.copyfile(other / "pal-0.log", run / "pal-0.log")
    run_id = RunDir(run).manifest["run_id"]
    assert_one_sentence_error(invoke("crash-replay", run, "--all", "--jobs", "1"), 3, "pal-0.log", run_id)

    # The same in a kept crash image, recovered on its own.
    good = damaged("good")
    events = events_of(good)
    sweep(good, SweepConfig(middlebox=recorded_middlebox(good), at=[len(events) // 2], keep=tmp_path / "kept", jobs=1, chain=False))
    image = tmp_path / "kept" / f"crash-{len(events) // 2:06d}-clean"
    assert invoke("recover", image, "--out", tmp_path / "ok").exit_code == 0
    shutil.copyfile(other / "pal-0.log", image / "pal-0.log")
    assert_one_sentence_error(invoke("recover", image, "--out", tmp_path / "r"), 3, "pal-0.log", run_id)


def test_kept_image_torn_tail_is_clean_and_mid_file_damage_is_not(base_run: Path, tmp_path: Path) -> None:
    """In a crash image, a log cut inside its last chunk is a torn tail: recovery drops it and
    goes on. A chunk cut short before the last one is corruption, named with file and offset."""
    run = fresh_copy(base_run, tmp_path / "run")
    # Right before snapshot 1: every log flushed, and recovery reads them all from the start.
    at = snapshot_events(events_of(run))[0][0]
    sweep(run, SweepConfig(middlebox=recorded_middlebox(run), at=[at], keep=tmp_path / "kept", jobs=1, chain=False))
    image = tmp_path / "kept" / f"crash-{at:06d}-clean"
    path = image / "pal-0.log"
    chunks = chunk_offsets(path, KIND_QUEUE, image)
    pristine = path.read_bytes()
    assert len(chunks) >= 4

    offset, stored = chunks[-1]
    path.write_bytes(pristine[:offset + stored - 3])
    result = invoke("recover", image, "--out", tmp_path / "torn")
    assert result.exit_code == 0, result.output
    assert f"pal-0.log: {stored - 3} B" in result.stdout

    offset, stored = chunks[len(chunks) // 2]
    path.write_bytes(pristine[:offset + stored // 2] + pristine[offset + stored:])
    assert_one_sentence_error(invoke("recover", image, "--out", tmp_path / "bad"), 3, "pal-0.log", f"byte {offset}")


@pytest.mark.parametrize("at", ["100000", "-1"])
def test_crash_point_out_of_range_is_a_usage_error(damaged, at: str) -> None:
    run = damaged("range")
    count = len(events_of(run))
    error = assert_one_sentence_error(invoke("crash-replay", run, "--at", at), 2, f"--at {at}", f"0..{count - 1}")
    assert "out of range" in error
    assert not (run / "crash" / "results.json").exists()


# ---------------------------------------------------------------- verify's reports

def test_verify_without_results_runs_the_default_sweep_and_says_so(damaged) -> None:
    run = damaged("no-results")
    result = invoke("verify", run, "--json")
    assert result.exit_code == 0, result.output
    assert "no crash results" in result.stderr and "default sweep" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["consistent"] is True
    assert doc["selection"]["random"] == 40 and doc["selection"]["torn"] is True
    # The results were saved: a second verify reports them without sweeping again.
    again = invoke("verify", run, "--json")
    assert again.exit_code == 0 and "no crash results" not in again.stderr
    stored = json.loads(again.stdout)
    assert stored["crash_points"] == doc["crash_points"] and stored["consistent"] is True


def test_verify_json_and_junit_describe_every_crash_point(damaged, tmp_path: Path) -> None:
    run = damaged("reports")
    count = len(events_of(run))
    picked = ["--at", "3", "--at", str(count // 2), "--at", str(count - 2)]
    assert invoke("crash-replay", run, *picked, "--torn", "--jobs", "1").exit_code == 0
    junit = tmp_path / "verify.xml"
    result = invoke("verify", run, "--json", "--junit", junit)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert doc["consistent"] is True
    points = doc["crash_points"]
    assert {3, count // 2, count - 2} <= {p["event"] for p in points}
    assert any(p["variant"] == TORN for p in points)
    for point in points:
        assert isinstance(point["event"], int) and point["consistent"] is True and point["violations"] == []
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(points) == int(suite.get("tests"))
    assert suite.get("failures") == "0" and not suite.findall(".//failure")
    assert len({c.get("name") for c in cases}) == len(cases)
