"""The No-Replay baseline (DESIGN §8): snapshots only, outputs held until a snapshot covers them.

Each check reads what the run wrote (timeline, output log, snapshots) rather than trusting what
the engine reports, and a mutant that releases early shows that verify catches the one promise
this design can break.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from ftmbctl import records as rec
from ftmbctl.cli import app
from ftmbctl.crash import CrashPoint, image_spec, write_image
from ftmbctl.record import RecordConfig, record
from ftmbctl.recovery import arrivals_from_log, recover
from ftmbctl.rundir import RunDir
from ftmbctl.storage import Storage
from ftmbctl.verify import SweepConfig, sweep
from runreader import recorded_middlebox
from runreader import release_batches

PACKETS = 110  # snapshots at 40 and 80, and one at 110 that covers the end of the trace
SNAPSHOT_EVERY = 40
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def trace(small_trace_head) -> Path:
    return small_trace_head(PACKETS)


@pytest.fixture(scope="module")
def recorded(trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    base = tmp_path_factory.mktemp("runs")
    cache: dict[tuple, Path] = {}

    def get(mb: str = "nat", queues: int = 2, scheduler: str = "chaos") -> Path:
        key = (mb, queues, scheduler)
        if key not in cache:
            out = base / f"{mb}-q{queues}-{scheduler}"
            record(RecordConfig(trace=trace, out=out, middlebox=mb, queues=queues, snapshot_every=SNAPSHOT_EVERY,
                                flush_every=8, scheduler=scheduler, mode="no-replay"))
            cache[key] = out
        return cache[key]
    return get


def _boundaries(run: RunDir) -> dict[int, int]:
    return {snap.number: snap.boundary for snap in map(run.snapshot, run.snapshot_paths())}


def test_no_replay_logs_no_accesses_and_snapshots_the_end_of_the_trace(recorded, read_run) -> None:
    path = recorded("nat", 2)
    run = read_run(path)
    assert run.manifest["mode"] == "no-replay"
    assert run.queue_records == [[], []]
    assert run.manifest["stats"]["pals"] == 0 and run.manifest["stats"]["nondet_values"] == 0
    assert {n: s.boundary for n, s in run.snapshots.items()} == {1: 40, 2: 80, 3: PACKETS}
    assert run.reference.state["shared"] == run.snapshots[3].state["shared"]
    assert not any(any(o.deps) for o in run.outputs)  # nothing logged, nothing to depend on
    assert len(run.outputs) == run.manifest["stats"]["packets_out"]


@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_every_output_waits_for_a_durable_snapshot_that_covers_its_input(recorded, read_run, scheduler: str) -> None:
    run = read_run(recorded("nat", 4, scheduler))
    boundaries = {n: s.boundary for n, s in run.snapshots.items()}
    released = 0
    for event, outputs in release_batches(run):
        assert event.snapshot >= 1, "an output left before any snapshot was durable"
        covered = boundaries[event.snapshot]
        assert all(o.input_id < covered for o in outputs), (event.index, covered)
        released += len(outputs)
    assert released == len(run.outputs) > 0


@pytest.mark.parametrize("mb,queues", [("nat", 1), ("nat", 4), ("monitor", 2)])
def test_every_event_clean_and_torn_keeps_output_commit(recorded, mb: str, queues: int, read_run) -> None:
    path = recorded(mb, queues)
    events = read_run(path).events
    report = sweep(path, SweepConfig(middlebox=recorded_middlebox(path), everything=True, torn=True, jobs=2))
    failed = [p for p in report.points if not p["consistent"]]
    assert not failed, json.dumps(failed[:3], indent=1)
    boundaries = _boundaries(RunDir(path))
    for point in report.points:
        ev, summary = events[point["event"]], point["recovery"]
        if point["variant"] != "clean":
            continue
        # the latest snapshot durable at the crash is restored, and what arrived after it is lost
        assert summary["snapshot"] == max(ev.snapshot, 0)
        assert summary["boundary"] == boundaries.get(ev.snapshot, 0)
        assert summary["lost_inputs"] == ev.input_records - summary["boundary"]
        assert summary["mode"] == "no-replay"


def test_crash_after_the_last_input_before_its_snapshot_loses_the_tail(recorded, read_run) -> None:
    path = recorded("nat", 2)
    events = read_run(path).events
    last_begin = max(i for i, e in enumerate(events) if e.kind == rec.EV_SNAPSHOT_BEGIN)
    report = sweep(path, SweepConfig(middlebox=recorded_middlebox(path), at=[last_begin], jobs=1, chain=False))
    (point,) = report.points
    assert point["consistent"]
    assert point["recovery"]["boundary"] == 80
    assert point["recovery"]["lost_inputs"] == PACKETS - 80
    assert point["recovery"]["inputs_processed"] == 0


def test_releasing_before_the_snapshot_is_durable_is_caught(trace: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant Output Logger that releases No-Replay outputs once their input is logged, the
    FTMB rule without the logs that make it safe: verify must report lost promises."""
    monkeypatch.setattr(Storage, "_release_bound", lambda self: self.input_base + self.input.records)
    out = tmp_path / "run"
    record(RecordConfig(trace=trace, out=out, middlebox="nat", queues=2, snapshot_every=SNAPSHOT_EVERY,
                        flush_every=8, mode="no-replay"))
    monkeypatch.undo()
    report = sweep(out, SweepConfig(middlebox=recorded_middlebox(out), everything=True, jobs=1))
    failed = [p for p in report.points if not p["consistent"]]
    assert failed
    invariants = {v["invariant"] for p in failed for v in p["violations"]}
    assert invariants == {"output-commit"}
    assert all("no-replay recovery cannot regenerate it" in v["message"] for p in failed for v in p["violations"])


def kept_image(run: RunDir, read_run, dest: Path) -> tuple[Path, list[rec.Event], int]:
    """The image of a crash after snapshot 1 with more than 20 inputs after it, kept as a
    directory: (image, the run's events, the crash point)."""
    events = read_run(run.path).events
    index = next(i for i, e in enumerate(events) if e.snapshot == 1 and e.input_records > 60)
    return write_image(run, CrashPoint(index), image_spec(run, events, CrashPoint(index)), dest), events, index


def test_kept_image_recovers_on_its_own(recorded, read_run, tmp_path: Path) -> None:
    run = RunDir(recorded("nat", 2))
    image, events, index = kept_image(run, read_run, tmp_path / "image")
    res = recover(RunDir(image), arrivals_from_log(run), tmp_path / "recovered")
    assert (res.snapshot, res.boundary, res.lost_inputs) == (1, 40, events[index].input_records - 40)
    assert res.inputs_processed == PACKETS - events[index].input_records
    recovered = read_run(tmp_path / "recovered")
    assert recovered.queue_records == [[], []]
    assert {o.input_id for o in recovered.outputs} <= set(range(events[index].input_records, PACKETS))
    assert max(recovered.snapshots) == 3  # the recovered run snapshots the end of the trace too


def test_cli_mode_option(trace: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["record", str(trace), "--mode", "no-replay", "--out", str(out), "--json",
                                 "--snapshot-every", "50"], env=ENV)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["mode"] == "no-replay"
    result = runner.invoke(app, ["record", str(trace), "--mode", "replay-later", "--out", str(tmp_path / "x")],
                           env=ENV)
    assert result.exit_code == 2
    assert "replay-later" in result.output


def test_a_misplaced_last_snapshot_is_still_damage(recorded, tmp_path: Path) -> None:
    """The end-of-trace snapshot may fall short of k * snapshot_every, never beyond or before
    the previous one; and an FTMB run gets no such allowance."""
    import shutil

    from ftmbctl.errors import DamagedRun
    from ftmbctl.manifest import snapshot_misplaced

    man = RunDir(recorded("nat", 2)).manifest
    assert snapshot_misplaced(man, 3, 110) is None
    assert snapshot_misplaced(man, 3, 80) and snapshot_misplaced(man, 3, 121)
    assert snapshot_misplaced({**man, "mode": "ftmb"}, 3, 110)
    copy = tmp_path / "run"
    shutil.copytree(recorded("nat", 2), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["mode"] = "ftmb"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DamagedRun, match="snapshot 3 is at packet 110"):
        RunDir(copy).check_middlebox()


def test_recover_command_reports_what_was_lost(recorded, read_run, tmp_path: Path) -> None:
    run = RunDir(recorded("nat", 2))
    image, events, index = kept_image(run, read_run, tmp_path / "image")
    result = CliRunner().invoke(app, ["recover", str(image), "--out", str(tmp_path / "recovered")], env=ENV)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "no-replay" in flat
    assert f"inputs lost (after the snapshot) │ {events[index].input_records - 40}" in flat
    assert "all covered by it" in flat
