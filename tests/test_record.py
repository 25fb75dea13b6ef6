"""The record engine (DESIGN §2-5): what a run directory promises, checked from its files.

Every check reads the run back from disk (tests/runreader.py) and compares it with an independent
source of truth: the timeline against the logs, the output log against a direct run of the same
middlebox, the PAL sequence numbers against the final state, snapshots against the timeline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter as Tally
from pathlib import Path

import pytest

from ftmbctl import records as rec
from ftmbctl.direct import run_direct
from ftmbctl.errors import BadInput, DamagedRun, UsageError
from ftmbctl.flowhash import flow_queue
from ftmbctl.hashing import mix_int
from ftmbctl.manifest import run_files
from ftmbctl.middlebox import Packet
from ftmbctl.pcapio import iter_packets
from ftmbctl.queuelog import fold16
from ftmbctl.record import RecordConfig, record
from ftmbctl.shared import Counter, Map
from ftmbctl.snapshot import read_snapshot, snapshot_name, write_atomically
from runreader import recorded_middlebox
from middleboxes_for_tests import Mixed, spec
from runreader import Run, causal_cut, first_event_with, read_run, release_batches

ROOT = Path(__file__).resolve().parents[1]
FLUSH = 6  # small: many flush and release events
SNAP = 50  # several snapshots on a 300-packet trace
SEEDS = (1, 2, 3)
QUEUES = (1, 2, 4)
SPECS = {"mixed": spec("Mixed"), "nat": "nat", "preempted": spec("PreemptedMixed"), "raiser": spec("Raiser"),
         "raiser-after-others": spec("RaiserAfterOthers")}


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def recorded(small_trace: Path, tmp_path_factory: pytest.TempPathFactory):
    """``recorded(mb, queues, seed, ...) -> (RecordResult, Run)``, each configuration recorded once."""
    base = tmp_path_factory.mktemp("runs")
    cache: dict[tuple, tuple] = {}

    def get(mb: str = "mixed", queues: int = 2, seed: int = 1, scheduler: str = "chaos",
            flush_every: int = FLUSH, snapshot_every: int = SNAP):
        key = (mb, queues, seed, scheduler, flush_every, snapshot_every)
        if key not in cache:
            out = base / "-".join(map(str, key))
            result = record(RecordConfig(trace=small_trace, out=out, middlebox=SPECS[mb], queues=queues,
                                         seed=seed, scheduler=scheduler, flush_every=flush_every,
                                         snapshot_every=snapshot_every))
            cache[key] = (result, read_run(out))
        return cache[key]

    return get


@pytest.fixture(scope="module")
def trace_packets(small_trace: Path) -> list[Packet]:
    return [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in iter_packets(small_trace)]


@pytest.fixture(scope="module")
def direct_outputs(trace_packets: list[Packet]) -> dict[tuple[int, int], tuple[int, bytes]]:
    """Output id -> (linktype, bytes) of ``Mixed`` run directly, one queue, no FTMB machinery."""
    run = run_direct(Mixed(), trace_packets)
    return {(pid, i): out for pid, outs in run.outputs.items() for i, out in enumerate(outs)}


def shared_by_name(run: Run) -> dict[str, tuple]:
    """reference.snap's shared state: name -> (kind, count, value)."""
    return {name: (kind, count, value) for name, kind, count, value in run.reference.state["shared"]}


def shared_value(state: dict, name: str):
    (value,) = [v for n, _kind, _count, v in state["shared"] if n == name]
    return value


def assert_release_rule(run: Run) -> int:
    """Every output leaves only once its dependency vector and its input are durable; returns the
    number of release events."""
    releases = 0
    released = 0
    before = 0
    for ev in run.events:
        if ev.kind != rec.EV_RELEASE:
            assert ev.output_records == before, f"event {ev.index} ({ev.name}) changed the output log"
        before = ev.output_records
    for ev, batch in release_batches(run):
        releases += 1
        assert batch and len(batch) == ev.arg, f"release event {ev.index}: arg {ev.arg}, {len(batch)} outputs"
        for out in batch:
            assert len(out.deps) == run.queues
            for q in range(run.queues):
                assert out.deps[q] <= ev.queue_records[q], (
                    f"output {out.output_id} released at event {ev.index} depends on {out.deps[q]} records "
                    f"of queue {q}, only {ev.queue_records[q]} durable")
            assert out.input_id < ev.input_records, (
                f"output {out.output_id} released at event {ev.index} before its input was durable "
                f"({ev.input_records} inputs durable)")
            assert out.finish_ns <= out.release_ns <= ev.time_ns
        released += len(batch)
    assert released == len(run.outputs)
    return releases


def assert_released_within_causal_cut(run: Run) -> None:
    """At every release event, each released output's dependencies lie inside the causal cut of
    what is durable at that event (DESIGN §6.3: parallel release guarantees it), so a crash right
    after the release can replay everything the output came from. The recorded vector is not
    trusted alone: the output's own packet's accesses must be in the cut too."""
    own_end: dict[int, tuple[int, int]] = {}  # packet -> (queue, index just past its last record)
    for q in range(run.queues):
        for i, r in enumerate(run.queue_records[q]):
            own_end[r.packet] = (q, i + 1)
    for ev, batch in release_batches(run):
        cut = causal_cut(run, ev.queue_records, ev.input_records)
        for out in batch:
            for q in range(run.queues):
                assert out.deps[q] <= cut[q], (
                    f"output {out.output_id} released at event {ev.index} depends on {out.deps[q]} records of "
                    f"queue {q}; durable {ev.queue_records[q]}, but only {cut[q]} are in the causal cut")
            if out.input_id in own_end:
                q, end = own_end[out.input_id]
                assert out.deps[q] >= end, f"output {out.output_id}: dependency vector misses its own accesses"
                assert end <= cut[q], (
                    f"output {out.output_id} released at event {ev.index} before its own packet's accesses "
                    f"(queue {q} records up to {end}) were durable and in the causal cut ({cut[q]})")


def assert_sequence_numbers(run: Run) -> None:
    """Per variable, the PALs of all queues carry 1..N exactly once, N is the final count, each
    queue logs a variable's accesses in increasing order, and the last digest is the final value's."""
    shared = run.reference.state["shared"]
    seqs: dict[int, list[int]] = {}
    digests: dict[int, dict[int, int | None]] = {}
    for q in range(run.queues):
        previous: dict[int, int] = {}
        for pal in run.pals(q):
            assert pal.seq > previous.get(pal.var, 0), f"queue {q}: variable {pal.var} seq {pal.seq} out of order"
            previous[pal.var] = pal.seq
            seqs.setdefault(pal.var, []).append(pal.seq)
            digests.setdefault(pal.var, {})[pal.seq] = pal.digest
    assert set(seqs) <= set(range(len(shared)))
    for var_id, (name, kind, count, value) in enumerate(shared):
        got = sorted(seqs.get(var_id, []))
        assert got == list(range(1, count + 1)), (
            f"variable {name}: {len(got)} PALs, final count {count}; "
            f"duplicates {[s for s, n in Tally(got).items() if n > 1][:5]}, "
            f"missing {sorted(set(range(1, count + 1)) - set(got))[:5]}")
        if count:
            fresh = Counter(name, var_id) if kind == "counter" else Map(name, var_id)
            fresh.load(value, count)
            stored = [d for _seq, d in sorted(digests[var_id].items()) if d is not None]  # unchanged: None
            if stored:
                assert stored[-1] == fold16(fresh.digest32()), f"variable {name}: last PAL digest is not the final value's"


# ---------------------------------------------------------------- release rule, output log

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("queues", QUEUES)
@pytest.mark.parametrize("mb", ["mixed", "nat"])
def test_chaos_release_rule_holds_at_every_release_event(recorded, mb, queues, seed):
    result, run = recorded(mb, queues, seed)
    releases = assert_release_rule(run)
    assert releases >= 20, "the configuration should produce many release events"
    assert_released_within_causal_cut(run)
    for ev, batch in release_batches(run):
        assert all(out.release_ns == ev.time_ns for out in batch)  # chaos time is one clock
    assert len(run.outputs) == result.packets_out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("queues", QUEUES)
def test_output_log_holds_each_output_of_a_direct_run_exactly_once(recorded, direct_outputs, queues, seed):
    result, run = recorded("mixed", queues, seed)
    ids = [out.output_id for out in run.outputs]
    duplicates = [oid for oid, n in Tally(ids).items() if n > 1]
    assert not duplicates, f"outputs released twice: {duplicates[:5]}"
    assert set(ids) == set(direct_outputs), (
        f"missing {sorted(set(direct_outputs) - set(ids))[:5]}, extra {sorted(set(ids) - set(direct_outputs))[:5]}")
    for out in run.outputs:
        assert (out.linktype, out.data) == direct_outputs[out.output_id], f"output {out.output_id} differs"
    assert result.packets_out == len(direct_outputs) == run.manifest["stats"]["packets_out"]
    assert run.events[-1].kind == rec.EV_END and run.events[-1].arg == len(direct_outputs)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("queues", QUEUES)
@pytest.mark.parametrize("mb", ["mixed", "nat"])
def test_master_sees_a_packet_only_once_its_input_is_durable(recorded, mb, queues, seed):
    _result, run = recorded(mb, queues, seed)
    by_id = {inp.id: inp for inp in run.inputs}
    for q in range(queues):
        last_packet = -1
        for i, record_ in enumerate(run.queue_records[q]):
            ev = first_event_with(run, q, i + 1)
            assert record_.packet < ev.input_records, (
                f"queue {q} record {i} ({record_}) became durable at event {ev.index} ({ev.name}) "
                f"while only {ev.input_records} inputs were durable")
            assert record_.packet >= last_packet, f"queue {q} processed packet {record_.packet} after {last_packet}"
            last_packet = record_.packet
            inp = by_id[record_.packet]
            assert flow_queue(inp.linktype, inp.data, queues) == q, f"packet {inp.id} logged by the wrong queue"


def test_nat_on_the_mixed_trace_with_default_settings(mixed_trace, tmp_path):
    """The realistic case: default flush and snapshot intervals, 4 queues, a NAT over a shared
    port pool; the manifest's file list describes exactly the files on disk."""
    out = tmp_path / "nat"
    result = record(RecordConfig(trace=mixed_trace, out=out, middlebox="nat", queues=4, seed=7))
    run = read_run(out)
    assert result.packets_in == len(run.inputs) == run.manifest["stats"]["packets_in"]
    assert [inp.id for inp in run.inputs] == list(range(len(run.inputs)))
    assert assert_release_rule(run) >= 20
    assert_released_within_causal_cut(run)
    assert_sequence_numbers(run)
    files = run.manifest["files"]
    assert sorted(files) == [p.relative_to(out).as_posix() for p in run_files(out)]
    for name, meta in files.items():
        data = (out / name).read_bytes()
        assert meta == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert run.manifest["complete"] is True and run.manifest["seed"] == 7


@pytest.mark.parametrize("queues", [1, 4])
def test_timeline_lengths_cut_every_log_at_a_chunk_boundary(recorded, queues):
    """A crash at event e truncates each log to its length at e: that must be exactly the records
    the event claims, with no partial chunk, and the lengths and counts never shrink."""
    _result, run = recorded("nat", queues, 2)
    previous = None
    assert [ev.index for ev in run.events] == list(range(len(run.events)))
    for ev in run.events:
        assert run.logs["input"].ends.get(ev.input_len) == ev.input_records, f"event {ev.index}: input cut"
        assert run.logs["output"].ends.get(ev.output_len) == ev.output_records, f"event {ev.index}: output cut"
        for q in range(queues):
            assert run.logs[f"pal-{q}"].ends.get(ev.queue_len[q]) == ev.queue_records[q], f"event {ev.index}: pal-{q}"
        if previous is not None:
            assert ev.time_ns >= previous.time_ns
            assert ev.input_len >= previous.input_len and ev.output_len >= previous.output_len
            assert all(a >= b for a, b in zip(ev.queue_len, previous.queue_len))
        previous = ev
    end = run.events[-1]
    assert end.kind == rec.EV_END
    assert end.input_len == run.logs["input"].size and end.output_len == run.logs["output"].size
    assert list(end.queue_len) == [run.logs[f"pal-{q}"].size for q in range(queues)]


# ---------------------------------------------------------------- determinism

def _tree(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_run_directories(small_trace, tmp_path):
    """Twice in this process, and once in a fresh process with another hash seed."""
    def cfg(out: Path) -> RecordConfig:
        return RecordConfig(trace=small_trace, out=out, middlebox="nat", queues=4, seed=11,
                            flush_every=FLUSH, snapshot_every=SNAP)
    record(cfg(tmp_path / "a"))
    record(cfg(tmp_path / "b"))
    code = ("import sys; from pathlib import Path; from ftmbctl.record import RecordConfig, record; "
            "record(RecordConfig(trace=Path(sys.argv[1]), out=Path(sys.argv[2]), middlebox='nat', queues=4, "
            f"seed=11, flush_every={FLUSH}, snapshot_every={SNAP}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(small_trace), str(tmp_path / "c")], check=True, env=env,
                   cwd=tmp_path, timeout=60)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert "manifest.json" in a and "snapshots/snap-000001.snap" in a and len(a) >= 10
    assert sorted(a) == sorted(b) == sorted(c)
    # the manifest keeps the record's PYTHONHASHSEED (recovery checks run under another): that field only
    manifest_c = json.loads(c["manifest.json"])
    assert manifest_c.pop("python_hash_seed") == "12345"
    manifest_a = json.loads(a["manifest.json"])
    manifest_a.pop("python_hash_seed")
    assert manifest_a == manifest_c
    for name in a:
        assert a[name] == b[name], f"{name} differs between two records with the same seed"
        if name != "manifest.json":
            assert a[name] == c[name], f"{name} differs in a process with another PYTHONHASHSEED"


def _access_order(run: Run) -> dict[int, list[int]]:
    """Variable id -> the packet of each access, in sequence-number order."""
    order: dict[int, dict[int, int]] = {}
    for _q, pal in run.all_pals():
        order.setdefault(pal.var, {})[pal.seq] = pal.packet
    return {var: [by_seq[s] for s in sorted(by_seq)] for var, by_seq in order.items()}


@pytest.mark.parametrize("queues", [2, 4])
def test_different_seeds_give_different_interleavings(recorded, queues):
    runs = [recorded("mixed", queues, seed)[1] for seed in SEEDS]
    pal_logs = [tuple(run.logs[f"pal-{q}"].path.read_bytes() for q in range(queues)) for run in runs]
    orders = [_access_order(run) for run in runs]
    for i in range(len(SEEDS)):
        for j in range(i + 1, len(SEEDS)):
            assert pal_logs[i] != pal_logs[j], f"seeds {SEEDS[i]} and {SEEDS[j]} wrote identical PAL logs"
            assert orders[i] != orders[j], f"seeds {SEEDS[i]} and {SEEDS[j]} ordered every variable alike"


def test_with_one_queue_the_seed_changes_no_access_order(recorded):
    """The control for the test above: one queue has one interleaving, whatever the seed."""
    runs = [recorded("mixed", 1, seed)[1] for seed in SEEDS]
    pals = [run.pals(0) for run in runs]
    assert pals[0] == pals[1] == pals[2]
    nondet = [[r for r in run.queue_records[0] if isinstance(r, rec.NdRecord)] for run in runs]
    assert nondet[0] != nondet[1]  # but clock jitter and random draws do follow the seed


# ---------------------------------------------------------------- PAL sequence numbers

@pytest.mark.parametrize("queues", QUEUES)
@pytest.mark.parametrize("mb", ["mixed", "nat"])
def test_pal_sequence_numbers_are_gap_free_and_end_at_the_final_state(recorded, mb, queues):
    _result, run = recorded(mb, queues, 3)
    assert_sequence_numbers(run)
    pals = sum(1 for _ in run.all_pals())
    assert pals == run.manifest["stats"]["pals"] == sum(count for _n, _k, count, _v in run.reference.state["shared"])
    if mb == "mixed":
        assert pals == 3 * len(run.inputs)  # three shared accesses per packet


@pytest.mark.parametrize("queues", QUEUES)
def test_every_pal_digest_is_the_value_after_that_access(recorded, queues):
    """``packets`` only ever gets +1, so after its seq-th access it holds seq."""
    _result, run = recorded("mixed", queues, 1)
    (packets_id,) = [i for i, v in enumerate(run.reference.state["shared"]) if v[0] == "packets"]
    pals = [pal for _q, pal in run.all_pals() if pal.var == packets_id]
    assert len(pals) == len(run.inputs)
    for pal in pals:  # every access changes it: each PAL stores a digest
        assert pal.digest == fold16(mix_int(pal.seq)), f"PAL {pal}: digest is not the counter's value {pal.seq}"


# ---------------------------------------------------------------- snapshots

@pytest.mark.parametrize("queues", [1, 4])
def test_snapshots_sit_on_their_boundaries_and_match_the_timeline(recorded, queues):
    _result, run = recorded("mixed", queues, 2)
    packets = len(run.inputs)
    expected = list(range(1, (packets - 1) // SNAP + 1))
    assert sorted(run.snapshots) == expected and len(expected) >= 3
    for k, snap in run.snapshots.items():
        state = snap.state
        assert snap.boundary == state["boundary"] == k * SNAP
        assert state["input_records"] == snap.boundary
        (durable,) = [ev for ev in run.events if ev.kind == rec.EV_SNAPSHOT_DURABLE and ev.arg == k]
        begin = run.events[durable.index - 1]
        assert begin.kind == rec.EV_SNAPSHOT_BEGIN and begin.arg == k
        for ev in (begin, durable):
            assert list(ev.queue_records) == state["queue_records"]
            assert list(ev.queue_len) == state["queue_bytes"]
            assert ev.input_records == state["input_records"] and ev.input_len == state["input_bytes"]
            assert ev.output_records == state["outputs_released"]
        assert durable.snapshot == k and begin.snapshot == (k - 1 if k > 1 else -1)
        # The state is exactly packets 0..boundary-1: the logs up to the snapshot hold their
        # accesses and nothing later, and the counts and local state say the same.
        counts = Tally()
        for q in range(queues):
            head = run.queue_records[q][:state["queue_records"][q]]
            tail = run.queue_records[q][state["queue_records"][q]:]
            assert all(r.packet < snap.boundary for r in head)
            assert all(r.packet >= snap.boundary for r in tail)
            counts.update(r.var for r in head if isinstance(r, rec.PalRecord))
        assert [counts[i] for i in range(len(state["shared"]))] == [v[2] for v in state["shared"]]
        assert sum(local["seen"] for local in state["local"]) == snap.boundary
        assert shared_value(state, "packets") == snap.boundary
    latest = -1  # every event names the latest snapshot durable at it
    for ev in run.events:
        if ev.kind == rec.EV_SNAPSHOT_DURABLE:
            latest = ev.arg
        assert ev.snapshot == latest, f"event {ev.index} ({ev.name}) says snapshot {ev.snapshot}, latest is {latest}"


def test_every_prefix_of_a_snapshot_file_is_rejected(recorded, tmp_path):
    _result, run = recorded("nat", 2, 1)
    data = (run.dir / "snapshots" / snapshot_name(3)).read_bytes()
    target = tmp_path / snapshot_name(1)
    target.write_bytes(data)
    assert read_snapshot(target, run.run_id).number == 3  # the whole file is fine
    for length in range(len(data)):
        target.write_bytes(data[:length])
        with pytest.raises(DamagedRun):
            read_snapshot(target, run.run_id)


def test_a_snapshot_tmp_file_is_never_part_of_the_run(recorded, tmp_path):
    _result, run = recorded("nat", 2, 1)
    assert not list(run.dir.rglob("*.tmp")), "a finished record left a temp file behind"
    copy = tmp_path / "run"
    shutil.copytree(run.dir, copy)
    data = (copy / "snapshots" / snapshot_name(1)).read_bytes()
    (copy / "snapshots" / (snapshot_name(6) + ".tmp")).write_bytes(data)
    listed = [p.relative_to(copy).as_posix() for p in run_files(copy)]
    assert "snapshots/snap-000001.snap" in listed
    assert not [name for name in listed if name.endswith(".tmp")]
    assert set(listed) == set(run.manifest["files"])


def test_a_crash_inside_write_atomically_leaves_only_a_tmp_file(tmp_path, monkeypatch):
    target = tmp_path / snapshot_name(2)
    target.write_bytes(b"old snapshot")

    def crash(*_args):
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_atomically(target, b"new snapshot bytes")
    monkeypatch.undo()
    assert target.read_bytes() == b"old snapshot"
    with pytest.raises(DamagedRun):
        read_snapshot(tmp_path / snapshot_name(3))  # never written: missing, not empty
    assert [p.name for p in run_files(tmp_path)] == [snapshot_name(2)]


# ---------------------------------------------------------------- threads scheduler

@pytest.mark.parametrize("queues", [2, 4])
def test_threads_scheduler_matches_chaos_for_an_order_independent_middlebox(recorded, direct_outputs, queues):
    result, run = recorded("mixed", queues, 1, scheduler="threads")
    _chaos_result, chaos = recorded("mixed", queues, 1)
    assert result.packets_in == len(run.inputs) == len(chaos.inputs)
    assert {o.output_id: o.data for o in run.outputs} == {o.output_id: o.data for o in chaos.outputs}
    assert len(run.outputs) == len(direct_outputs)
    assert shared_by_name(run) == shared_by_name(chaos)
    assert sum(loc["seen"] for loc in run.reference.state["local"]) == len(run.inputs)
    assert run.manifest["scheduler"] == "threads"
    assert_release_rule(run)
    assert_sequence_numbers(run)


def test_threads_release_waits_for_accesses_that_came_before(recorded):
    """A thread preempted right after a shared access releases the variable's lock (modelled once,
    for 0.3 s): every output released meanwhile must still depend only on the causal cut."""
    _result, run = recorded("preempted", 2, 1, scheduler="threads", flush_every=1, snapshot_every=100_000)
    assert_release_rule(run)
    assert_released_within_causal_cut(run)


# ---------------------------------------------------------------- out directory handling

def _cfg(trace: Path, out: Path, **kw) -> RecordConfig:
    base = dict(trace=trace, out=out, middlebox="nat", queues=2, seed=1, flush_every=FLUSH, snapshot_every=SNAP)
    base.update(kw)
    return RecordConfig(**base)


def test_existing_run_is_kept_without_force_and_replaced_with_it(small_trace, tmp_path):
    out = tmp_path / "run"
    record(_cfg(small_trace, out, queues=4))
    before = _tree(out)
    assert "pal-3.log" in before
    with pytest.raises(UsageError) as info:
        record(_cfg(small_trace, out, queues=2, seed=2))
    assert info.value.exit_code == 2 and "--force" in str(info.value)
    assert _tree(out) == before
    record(_cfg(small_trace, out, queues=2, seed=2, snapshot_every=120, force=True))
    after = _tree(out)
    assert "pal-3.log" not in after and "pal-2.log" not in after
    run = read_run(out)
    fewer = (len(run.inputs) - 1) // 120
    assert 0 < fewer < (len(run.inputs) - 1) // SNAP
    assert sorted(n for n in after if n.startswith("snapshots/")) == [f"snapshots/{snapshot_name(k)}"
                                                                      for k in range(1, fewer + 1)]
    assert run.manifest["queues"] == 2 and run.manifest["seed"] == 2 and run.manifest["complete"] is True


@pytest.mark.parametrize("force", [False, True])
def test_a_non_run_directory_or_file_is_never_deleted(small_trace, tmp_path, force):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(UsageError):
        record(_cfg(small_trace, folder, force=force))
    assert _tree(folder) == {"cat.jpg": b"meow"}
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    with pytest.raises(UsageError):
        record(_cfg(small_trace, plain, force=force))
    assert plain.read_text() == "keep me"


def test_force_never_deletes_a_directory_whose_manifest_is_not_an_ftmbctl_one(small_trace, tmp_path):
    folder = tmp_path / "webapp"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "my web app", "start_url": "/"}\n')
    (folder / "index.html").write_text("<h1>hi</h1>\n")
    before = _tree(folder)
    with pytest.raises(UsageError):
        record(_cfg(small_trace, folder, force=True))
    assert _tree(folder) == before


# ---------------------------------------------------------------- a middlebox that raises

def _record_with_timeout(cfg: RecordConfig, timeout: float = 10.0) -> BaseException | None:
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            record(cfg)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"record hung for {timeout}s after the middlebox raised"
    return outcome[0]


@pytest.mark.parametrize("queues", [1, 4])
@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_a_raising_middlebox_is_reported_as_bad_input(small_trace, tmp_path, scheduler, queues):
    cfg = _cfg(small_trace, tmp_path / "run", middlebox=SPECS["raiser"], mb_opts=["at=137"],
               scheduler=scheduler, queues=queues)
    exc = _record_with_timeout(cfg)
    assert isinstance(exc, BadInput), f"expected BadInput, got {exc!r}"
    assert exc.exit_code == 3
    message = str(exc)
    assert "'raiser'" in message and "ValueError" in message and "boom on 137" in message
    assert "Traceback" not in message


def test_a_raising_middlebox_is_reported_with_the_packet_that_raised(small_trace, tmp_path):
    cfg = _cfg(small_trace, tmp_path / "run", middlebox=SPECS["raiser-after-others"], mb_opts=["at=137"],
               queues=4, scheduler="threads", snapshot_every=100_000)
    exc = _record_with_timeout(cfg)
    assert isinstance(exc, BadInput) and "boom on 137" in str(exc), repr(exc)
    assert "on packet 137 (queue" in str(exc), str(exc)


# ---------------------------------------------------------------- vanilla baseline

@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_vanilla_mode_writes_nothing_and_processes_every_packet(small_trace, tmp_path, recorded, direct_outputs,
                                                                scheduler):
    out = tmp_path / "vanilla"
    result = record(_cfg(small_trace, out, middlebox=SPECS["mixed"], queues=4, scheduler=scheduler, mode="vanilla"))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert result.run_dir is None and result.pals == 0 and result.events == 0
    ftmb_result, run = recorded("mixed", 4, 1)
    assert result.packets_in == ftmb_result.packets_in == len(run.inputs)
    assert result.packets_out == ftmb_result.packets_out == len(direct_outputs)
    assert result.dropped == ftmb_result.dropped


def test_sigint_ends_the_record_early_and_leaves_a_usable_run(small_trace, tmp_path):
    """A first Ctrl-C ends the trace at a packet boundary; the run is complete and verifiable."""
    import os
    import signal
    import threading

    from ftmbctl.rundir import RunDir
    from ftmbctl.verify import SweepConfig, sweep

    out = tmp_path / "run"
    cfg = RecordConfig(trace=small_trace, out=out, middlebox="nat", queues=2, snapshot_every=50, flush_every=8,
                       scheduler="chaos", seed=1)
    sent = []

    def progress(done: int, _total: int) -> None:
        if done >= 256 and not sent:  # a signal arrives while the record is under way
            sent.append(done)
            os.kill(os.getpid(), signal.SIGINT)

    assert threading.current_thread() is threading.main_thread()
    result = record(cfg, progress)
    assert sent and result.interrupted and result.interrupted.startswith("SIGINT")
    assert 256 <= result.packets_in < 300
    run = RunDir(out)
    assert run.complete and run.manifest["interrupted"] == result.interrupted
    report = sweep(out, SweepConfig(middlebox=recorded_middlebox(out), sample=8, seed=1, jobs=1))
    assert report.consistent
