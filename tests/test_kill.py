"""Real crashes (``crash-replay --kill``): the crash model against SIGKILL of a real record.

Under ``chaos`` a killed record must have left byte prefixes of the failure-free run's files and
recover consistently; under ``threads`` the reference-free invariants must hold. The prefix check
itself must be able to fail: a killed directory with one changed byte is reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.kill import kill_child, prefix_problems
from ftmbctl.record import RecordConfig, record
from ftmbctl.rundir import RunDir

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}


def recorded(trace: Path, out: Path, scheduler: str) -> Path:
    record(RecordConfig(trace=trace, out=out, middlebox="nat", queues=2, snapshot_every=100, flush_every=8,
                        scheduler=scheduler, seed=4))
    return out


@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_sigkilled_records_recover_consistently(small_trace_head, tmp_path: Path, scheduler: str) -> None:
    run = recorded(small_trace_head(300), tmp_path / "run", scheduler)
    result = CliRunner(env=ENV).invoke(app, ["crash-replay", str(run), "--kill", "5", "--seed", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    points = doc["crash_points"]
    assert len(points) == 5 and all(p["variant"] == "kill" for p in points)
    killed = [p for p in points if p["kind"].startswith("SIGKILL after")]
    assert killed, "no record was killed before it finished"
    assert any(p.get("recovery", {}).get("durable_inputs") for p in killed)
    assert json.loads((run / "crash" / "results.json").read_text())["selection"]["kill"] == 5


def test_a_killed_file_that_is_not_a_prefix_is_reported(small_trace_head, tmp_path: Path) -> None:
    run = RunDir(recorded(small_trace_head(300), tmp_path / "run", "chaos"))
    out = tmp_path / "killed"
    written, killed = kill_child(run, "nat", out, run.log("input.log").size // 2)
    assert killed and written > 0
    assert prefix_problems(run, out) == []
    data = bytearray((out / "input.log").read_bytes())
    data[len(data) // 2] ^= 1
    (out / "input.log").write_bytes(bytes(data))
    (out / "extra.log").write_bytes(b"x")
    problems = prefix_problems(run, out)
    assert any(p.startswith("input.log: byte ") for p in problems), problems
    assert "extra.log: the failure-free run has no extra.log" in problems
    shutil.rmtree(out)


def test_kill_takes_at_least_one(small_trace_head, tmp_path: Path) -> None:
    run = recorded(small_trace_head(60), tmp_path / "run", "chaos")
    result = CliRunner(env=ENV).invoke(app, ["crash-replay", str(run), "--kill", "0"])
    assert result.exit_code == 2 and "--kill" in result.output


def test_verify_says_what_a_recovered_or_killed_directory_is(small_trace_head, tmp_path: Path) -> None:
    run = RunDir(recorded(small_trace_head(300), tmp_path / "run", "chaos"))
    killed = tmp_path / "killed"
    assert kill_child(run, "nat", killed, run.log("input.log").size // 2)[1]
    result = CliRunner(env=ENV).invoke(app, ["verify", str(killed)])
    assert result.exit_code == 3 and "interrupted or killed" in result.output and "recover" in result.output
    recovered = tmp_path / "recovered"
    assert CliRunner(env=ENV).invoke(app, ["recover", str(killed), "--out", str(recovered)]).exit_code in (0, 1)
    result = CliRunner(env=ENV).invoke(app, ["verify", str(recovered)])
    assert result.exit_code == 2 and "ftmbctl recover" in result.output and str(killed) in result.output
