"""The new points of failure (crash-replay --also-lose, formats/components.md): the Input Logger,
the stable storage or the Output Logger fails together with the master.

Every count the sweep reports is checked against one computed here from the run's files alone
(``runreader.read_run``: the timeline, the complete logs and the snapshots), without the code under
test: which outputs had left the box after the snapshot, whose packets made an access, which
inputs had arrived. Runs are the first ``PACKETS`` packets of traces/small.pcap, a snapshot every
``SNAPSHOT_EVERY`` packets and a flush every ``FLUSH_EVERY`` records, as in test_crash_verify.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable
from xml.etree import ElementTree as ET

import pytest
from junitparser import JUnitXml
from typer.testing import CliRunner

from ftmbctl import records as rec
from ftmbctl.cli import app
from ftmbctl.components import holdings
from ftmbctl.errors import DamagedRun, UsageError
from ftmbctl.record import RecordConfig, record
from ftmbctl.verify import SweepConfig, SweepReport, sweep
from middleboxes_for_tests import spec
from runreader import Run, read_run

PACKETS = 100
SNAPSHOT_EVERY = 40
FLUSH_EVERY = 8
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
KINDS = ("released_not_regenerated", "released_twice", "inputs_lost", "inputs_processed_twice")
# what a plain sweep writes per crash point (formats/README.md): --also-lose adds nothing to it
PLAIN_POINT_KEYS = {"event", "variant", "kind", "chain", "recovery", "consistent", "violations", "violations_total",
                    "seconds"}
TIMINGS = ("restore_seconds", "replay_seconds")


@pytest.fixture(scope="module")
def trace(small_trace_head) -> Path:
    return small_trace_head(PACKETS)


@pytest.fixture(scope="module")
def recorded(trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``recorded(mode, scheduler) -> run``: the Mixed test middlebox (every kind of shared access,
    the clock and random, 0-2 outputs a packet) in FTMB mode, the NAT in No-Replay mode."""
    base = tmp_path_factory.mktemp("runs")
    cache: dict[tuple[str, str], Path] = {}

    def get(mode: str = "ftmb", scheduler: str = "chaos") -> Path:
        if (mode, scheduler) not in cache:
            out = base / f"{mode}-{scheduler}"
            record(RecordConfig(trace=trace, out=out, middlebox=spec("Mixed") if mode == "ftmb" else "nat",
                                queues=2, snapshot_every=SNAPSHOT_EVERY, flush_every=FLUSH_EVERY, mode=mode,
                                scheduler=scheduler))
            cache[mode, scheduler] = out
        return cache[mode, scheduler]
    return get


@pytest.fixture(scope="module")
def swept(recorded) -> Callable[..., SweepReport]:
    """``swept(mode, also_lose) -> report``: every event, clean and torn, and the snapshot chain,
    each sweep run once per module."""
    cache: dict[tuple[str, Any], SweepReport] = {}

    def get(mode: str, also_lose: tuple[str, ...] | None) -> SweepReport:
        if (mode, also_lose) not in cache:
            run = recorded(mode)
            middlebox = json.loads((run / "manifest.json").read_text())["middlebox"]["spec"]
            cache[mode, also_lose] = sweep(run, SweepConfig(middlebox=middlebox, everything=True, torn=True,
                                                            jobs=2, also_lose=also_lose))
        return cache[mode, also_lose]
    return get


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def one_sentence(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


# ---------------------------------------------------------------- independent facts from the logs

def boundary_at(run: Run, event: rec.Event) -> int:
    """Packets the latest snapshot durable at ``event`` covers (its boundary; 0 before the first)."""
    return run.snapshots[event.snapshot].boundary if event.snapshot >= 1 else 0


def released_after_snapshot(run: Run, event: rec.Event) -> list[rec.OutputRecord]:
    """The outputs that had left the box by ``event`` and after the snapshot durable then."""
    first = run.snapshots[event.snapshot].state["outputs_released"] if event.snapshot >= 1 else 0
    return run.outputs[first:event.output_records]


def counts(point: dict[str, Any]) -> tuple[int, ...]:
    return tuple(point["promises_broken"][kind] for kind in KINDS)


# ---------------------------------------------------------------- what each component holds

@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_the_event_that_makes_a_snapshot_durable_holds_its_log_positions(recorded, scheduler: str) -> None:
    """formats/components.md: each log's position at snapshot k, which the snapshot records, is
    the length the first event with snapshot k (snapshot-durable k) gives it."""
    run = read_run(recorded("ftmb", scheduler))
    assert len(run.snapshots) == 2
    for number, snap in run.snapshots.items():
        first = next(ev for ev in run.events if ev.snapshot == number)
        assert (first.kind, first.arg) == (rec.EV_SNAPSHOT_DURABLE, number)
        before = run.events[first.index - 1]
        assert (before.kind, before.arg) == (rec.EV_SNAPSHOT_BEGIN, number)
        state = snap.state
        assert (first.input_len, first.input_records) == (state["input_bytes"], state["input_records"])
        assert (first.output_len, first.output_records) == (state["outputs_bytes"], state["outputs_released"])
        assert list(first.queue_len) == state["queue_bytes"] and list(first.queue_records) == state["queue_records"]
        assert (before.input_len, before.output_len, before.queue_len) == (first.input_len, first.output_len,
                                                                            first.queue_len)


def test_a_timeline_without_the_snapshots_durable_event_cannot_tell(recorded) -> None:
    events = read_run(recorded("ftmb")).events
    index = next(ev.index for ev in events if ev.snapshot == 1 and ev.kind == rec.EV_RELEASE)
    without = [ev for ev in events if ev.kind != rec.EV_SNAPSHOT_DURABLE]
    with pytest.raises(DamagedRun, match="no snapshot-durable event for snapshot 1 .* cannot tell"):
        holdings(without, next(i for i, ev in enumerate(without) if ev.index == index))
    held = holdings(events, index)
    assert held.since.kind == rec.EV_SNAPSHOT_DURABLE and held.since.arg == 1


# ---------------------------------------------------------------- nothing changes without it

@pytest.mark.parametrize("mode", ["ftmb", "no-replay"])
def test_without_also_lose_nothing_changes(recorded, swept, mode: str) -> None:
    """A plain sweep writes what it always wrote; the machinery on with nothing lost (`none`)
    recovers every point the same way and only adds the counts."""
    plain, measured = swept(mode, None), swept(mode, ())
    assert "also_lose" not in plain.selection and measured.selection["also_lose"] == []
    assert {k: v for k, v in measured.selection.items() if k != "also_lose"} == plain.selection
    assert plain.consistent and measured.consistent
    assert len(plain.points) == len(measured.points) > 40
    run = read_run(recorded(mode))
    for a, b in zip(plain.points, measured.points):
        assert set(a) <= PLAIN_POINT_KEYS, set(a) - PLAIN_POINT_KEYS
        assert set(b) - set(a) == {"promises_broken"}
        for key in set(a) - {"seconds", "recovery"}:
            assert a[key] == b[key], (a["event"], key)
        assert {k: v for k, v in a["recovery"].items() if k not in TIMINGS} == \
            {k: v for k, v in b["recovery"].items() if k not in TIMINGS}
        # the master alone: FTMB breaks nothing; No-Replay loses what arrived after the snapshot
        ev = run.events[b["event"]]
        lost = ev.input_records - boundary_at(run, ev) if mode == "no-replay" else 0
        assert counts(b) == (0, 0, lost, 0), b["event"]


# ---------------------------------------------------------------- each loss, counted exactly

def test_losing_the_il_breaks_output_commit_for_every_output_released_since_the_snapshot(recorded, swept) -> None:
    """With the IL's buffer gone nothing can be replayed: exactly the released outputs whose
    inputs came after the last snapshot are not regenerated, and those inputs are lost."""
    run = read_run(recorded("ftmb"))
    report = swept("ftmb", ("il",))
    assert report.consistent and report.selection["also_lose"] == ["il"]
    broke = 0
    for point in report.points:
        ev = run.events[point["event"]]
        boundary = boundary_at(run, ev)
        after = [o for o in run.outputs[:ev.output_records] if o.input_id >= boundary]
        assert counts(point) == (len(after), 0, ev.input_records - boundary, 0), point["event"]
        assert point["recovery"]["lost_inputs"] == ev.input_records - boundary
        broke += bool(after)
    assert broke > len(report.points) // 2


def test_losing_the_storage_breaks_output_commit_for_outputs_whose_packet_made_an_access(recorded, swept) -> None:
    """Without the PAL logs S is empty: a released output counts as regenerated only if its packet
    made no access and read no value; state is still compared, and equal."""
    run = read_run(recorded("ftmb"))
    accessing = {r.packet for records in run.queue_records for r in records}
    report = swept("ftmb", ("storage",))
    assert report.consistent
    for point in report.points:
        ev = run.events[point["event"]]
        needed = [o for o in released_after_snapshot(run, ev) if o.input_id in accessing]
        assert counts(point) == (len(needed), 0, 0, 0), point["event"]
        assert point["recovery"]["replayed"] == 0 and point["recovery"]["cut"] == [0, 0]
        if point["recovery"]["compared_at"] is not None:
            assert point["recovery"]["state_equal"] is True
    assert sum(1 for p in report.points if counts(p)[0]) > len(report.points) // 2


def test_losing_the_ol_at_a_point_with_held_outputs_breaks_no_promise_but_releases_duplicates(
        trace: Path, tmp_path: Path) -> None:
    """A hand-made run: three queues flushed every 16 records hold outputs for a while. At a crash
    point where the OL held outputs (finished before the crash, released after it), losing the OL
    breaks no promise for them (they never left), and every output released since the snapshot
    is regenerated by S and, with no record to suppress it, released again: exactly those."""
    out = tmp_path / "held"
    record(RecordConfig(trace=trace, out=out, middlebox=spec("Mixed"), queues=3, snapshot_every=SNAPSHOT_EVERY,
                        flush_every=16))
    run = read_run(out)
    chosen = []
    for ev in run.events:
        held = [o for o in run.outputs[ev.output_records:] if o.finish_ns < ev.time_ns]
        left = released_after_snapshot(run, ev)
        if held and left and ev.kind != rec.EV_END:
            chosen.append((ev, len(held), len(left)))
    assert len(chosen) >= 5
    picked = chosen[::max(1, len(chosen) // 6)]
    report = sweep(out, SweepConfig(middlebox=spec("Mixed"), at=[ev.index for ev, _, _ in picked], chain=False,
                                    jobs=2, also_lose=("ol",)))
    assert report.consistent, [p["violations"] for p in report.points]
    by_event = {p["event"]: p for p in report.points}
    for ev, held, left in picked:
        point = by_event[ev.index]
        assert counts(point) == (0, left, 0, 0), (ev.index, held, left)
        assert point["recovery"]["duplicates_dropped"] == 0 and point["recovery"]["released_before"] == left
    # the same points with the OL surviving: the duplicates are suppressed
    kept = sweep(out, SweepConfig(middlebox=spec("Mixed"), at=[ev.index for ev, _, _ in picked], chain=False,
                                  jobs=2, also_lose=()))
    assert all(counts(p) == (0, 0, 0, 0) and p["recovery"]["duplicates_dropped"] == by_event[p["event"]][
        "recovery"]["released_before"] for p in kept.points)


def test_storage_and_ol_lost_together_add_up(recorded, swept) -> None:
    run = read_run(recorded("ftmb"))
    both = {(p["event"], p["variant"]): counts(p) for p in swept("ftmb", ("storage", "ol")).points}
    storage = {(p["event"], p["variant"]): counts(p) for p in swept("ftmb", ("storage",)).points}
    for (index, variant), found in both.items():
        left = len(released_after_snapshot(run, run.events[index]))
        assert found == (storage[index, variant][0], left, 0, 0), (index, variant)


@pytest.mark.parametrize("lost", [("il",), ("storage",), ("ol",)])
def test_no_replay_breaks_no_more_promises_when_a_component_fails(recorded, swept, lost: tuple[str, ...]) -> None:
    """No-Replay replays nothing and never regenerates an output: the IL, the (empty) PAL logs and
    the OL's record are no points of failure for it. It loses what arrived since the snapshot,
    with the master alone too."""
    run = read_run(recorded("no-replay"))
    report = swept("no-replay", lost)
    assert report.consistent
    for point in report.points:
        ev = run.events[point["event"]]
        assert counts(point) == (0, 0, ev.input_records - boundary_at(run, ev), 0), point["event"]


# ---------------------------------------------------------------- the command line and reports

def test_unknown_component_is_a_usage_error(recorded) -> None:
    one_sentence(invoke("crash-replay", recorded("ftmb"), "--at", 3, "--also-lose", "master"), 2,
                 "--also-lose 'master' is not a component", "il, storage or ol")
    one_sentence(invoke("crash-replay", recorded("ftmb"), "--at", 3, "--also-lose", "none", "--also-lose", "il"), 2,
                 "--also-lose none")
    with pytest.raises(UsageError, match="not a component"):
        SweepConfig(also_lose=("disk",)).validate()


def test_a_killed_record_cannot_tell_what_each_component_held(recorded) -> None:
    one_sentence(invoke("crash-replay", recorded("ftmb"), "--kill", 1, "--also-lose", "il"), 2,
                 "--also-lose cannot go with --kill", "cannot tell")


def test_cli_counts_promises_reports_them_and_keeps_the_images(recorded, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(recorded("ftmb"), run, ignore=shutil.ignore_patterns("crash"))
    events = read_run(run).events
    index = next(ev.index for ev in events if ev.snapshot == 1 and ev.kind == rec.EV_RELEASE)
    keep = tmp_path / "images"
    result = invoke("crash-replay", run, "--at", index, "--chain", "none", "--also-lose", "il",
                    "--also-lose", "ol", "--keep", keep, "-j", 1, "-m", spec("Mixed"), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["selection"]["also_lose"] == ["il", "ol"] and doc["consistent"] is True
    (point,) = doc["crash_points"]
    totals = doc["promises_broken"]
    assert totals["crash_points"] == 1 and totals["broke_any"] == 1
    assert {k: v["count"] for k, v in totals["by_kind"].items()} == point["promises_broken"]
    assert point["promises_broken"]["released_not_regenerated"] > 0
    image = keep / f"crash-{index:06d}-clean"
    manifest = json.loads((image / "manifest.json").read_text())
    assert manifest["crash"]["lost"] == ["il", "ol"]
    snap = read_run(run).snapshots[1].state
    assert (image / "input.log").stat().st_size == snap["input_bytes"]
    assert (image / "output.log").stat().st_size == snap["outputs_bytes"]
    assert (image / "pal-0.log").stat().st_size == events[index].queue_len[0]

    text = invoke("verify", run, "--junit", tmp_path / "verify.xml")
    assert text.exit_code == 0, text.output
    assert "promises broken (lost with the master: il, ol)" in text.stdout
    assert "released outputs not regenerated" in text.stdout and "1 of 1 (100.0%)" in text.stdout
    assert "lost with the master" in text.stdout and "consistent" in text.stdout
    xml = JUnitXml.fromfile(str(tmp_path / "verify.xml"))
    assert xml.tests == 1 and xml.failures == 0
    root = ET.parse(tmp_path / "verify.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["also_lose"] == "il, ol"
    assert props["promises_broken.inputs_lost"] == f"{point['promises_broken']['inputs_lost']} at 1 of 1 crash points"
    assert "promises broken:" in root.find(".//system-out").text


def test_each_loss_is_its_own_sweep(recorded, swept) -> None:
    """Sweeps of one selection with different losses are kept side by side, never one for another."""
    ids = {lost: swept("ftmb", lost).sweep_id for lost in (None, (), ("il",), ("storage",), ("storage", "ol"))}
    assert len(set(ids.values())) == len(ids)
    kept = recorded("ftmb") / "crash" / "sweeps"
    assert all((kept / f"{sid}.json").is_file() for sid in ids.values())
