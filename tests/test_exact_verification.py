"""Exact verification (DESIGN §6 steps 5 and 7, §7): no "allowed" difference, one verdict in
every environment.

- Every library middlebox, 1 and 4 queues, recorded under ``chaos`` and under ``threads``,
  reproduces the failure-free state and outputs exactly at every crash point (``--all --torn``).
- Bugs that a free continuation used to excuse are caught: ``hash()`` of a str and the order
  of a set of str with ``PYTHONHASHSEED=0`` pinned for record and crash-replay, module-level
  state at every crash point that recovers a packet.
- A middlebox that raises during recovery is a ``recovery-completes`` failure (exit 1) and the
  sweep goes on; a ``declare()`` that is not deterministic says so.
- Output commit never leans on the reference schedule: a mutant Output Logger that releases as
  soon as the input is durable, and a mutant Input Logger that dispatches before its chunk is
  durable, are caught as output-commit failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ftmbctl.middlebox import build_middlebox
from ftmbctl.record import RecordConfig, Recorder, record
from ftmbctl.storage import OutputLogger
from ftmbctl.verify import SweepConfig, recovery_hash_seed, sweep
from runreader import recorded_middlebox

MUTANTS = Path(__file__).resolve().parent / "mutants" / "exactness_mutants.py"
ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("nat", "monitor", "firewall", "ratelimit", "lb", "ids")
PACKETS, SNAPSHOT_EVERY, FLUSH_EVERY = 100, 40, 8


def spec(name: str) -> str:
    return f"{MUTANTS}:{name}"


def record_run(trace: Path, out: Path, middlebox: str, queues: int = 2, scheduler: str = "chaos",
               mb_opts: list[str] | None = None) -> Path:
    record(RecordConfig(trace=trace, out=out, middlebox=middlebox, mb_opts=mb_opts or [], queues=queues,
                        snapshot_every=SNAPSHOT_EVERY, flush_every=FLUSH_EVERY, scheduler=scheduler, seed=3))
    return out


def cli(*args: object, hash_seed: str) -> subprocess.CompletedProcess[str]:
    """ftmbctl in a process of its own, with PYTHONHASHSEED pinned as tox and many CI set-ups do."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "ftmbctl", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def invariants(report: Any) -> set[str]:
    return {v["invariant"] for p in report.points for v in p["violations"]}


# ---------------------------------------------------------------- no false alarm, exactly

@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
@pytest.mark.parametrize("queues", [1, 4])
@pytest.mark.parametrize("middlebox", LIBRARY)
def test_every_crash_point_reproduces_the_failure_free_run_exactly(small_trace_head, tmp_path: Path,
                                                                   middlebox: str, queues: int,
                                                                   scheduler: str) -> None:
    run = record_run(small_trace_head(PACKETS), tmp_path / "run", middlebox, queues, scheduler)
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), everything=True, torn=True, jobs=2))
    failing = [(p["event"], p["variant"], p["violations"][:1]) for p in report.points if not p["consistent"]]
    assert not failing, failing[:3]
    recovered = [p["recovery"] for p in report.points]
    # exact: the continuation followed the failure-free run's log, nothing ran free, and state was compared
    assert all(r["free_accesses"] == 0 and r["free_nondet"] == 0 for r in recovered)
    assert all(r["state_equal"] is True and r["output_differences"] == 0 for r in recovered)
    if json.loads((run / "manifest.json").read_text())["stats"]["pals"]:
        assert sum(r["followed"] for r in recovered) > 0
    assert len(report.points) >= 40
    assert "allowed" not in json.dumps(report.as_dict())


def test_correct_box_with_a_stable_hash_gives_no_alarm_under_pinned_hash_seeds(small_trace_head,
                                                                              tmp_path: Path) -> None:
    run = tmp_path / "run"
    trace = small_trace_head(PACKETS)
    assert cli("record", trace, "-m", spec("CorrectClass"), "-q", 2, "--snapshot-every", SNAPSHOT_EVERY,
               "--out", run, hash_seed="0").returncode == 0
    done = cli("crash-replay", run, "-m", recorded_middlebox(run), "--every", 4, "--jobs", 1, hash_seed="0")
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- the same verdict everywhere

@pytest.mark.parametrize("mutant", ["StrHashClass", "SetOrderClass"])
def test_salted_hash_bugs_fail_with_pinned_hash_seed(small_trace_head, tmp_path: Path, mutant: str) -> None:
    """Record and crash-replay both run with PYTHONHASHSEED=0; recovery workers still get another.

    The middlebox is named relative to the checkout (the commands run there): the run id, and the
    recovery's hash seed drawn from it, are then the same wherever the checkout is, and so is
    whether a set of a few str comes out in another order under it."""
    run = tmp_path / "run"
    trace = small_trace_head(PACKETS)
    recorded = cli("record", trace, "-m", f"{MUTANTS.relative_to(ROOT)}:{mutant}", "-q", 2, "--snapshot-every",
                   SNAPSHOT_EVERY, "--out", run, hash_seed="0")
    assert recorded.returncode == 0, recorded.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["python_hash_seed"] == "0"
    for jobs in (1, 2):
        done = cli("crash-replay", run, "-m", recorded_middlebox(run), "--every", 4, "--jobs", jobs, hash_seed="0")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"record 0, recovery {recovery_hash_seed(manifest)}" in done.stdout
        verdict = cli("verify", run, "-m", recorded_middlebox(run), "--json", hash_seed="0")
        assert verdict.returncode == 1
        doc = json.loads(verdict.stdout)
        assert doc["hash_seeds"] == {"record": "0", "recovery": str(recovery_hash_seed(manifest))}
        seen = {v["invariant"] for p in doc["crash_points"] for v in p["violations"]}
        assert seen & {"full-state", "logged-prefix-state", "output-commit", "snapshot-chain"}
        causes = {c for p in doc["crash_points"] for v in p["violations"] for c in v["likely_causes"]}
        assert {"str-hash", "set-order"} & causes


def test_recovery_hash_seed_is_never_the_records() -> None:
    for recorded in ("0", "1", "4242", "random", "unknown"):
        for run_id in ("a" * 32, "b" * 32, "0123456789abcdef" * 2):
            seed = recovery_hash_seed({"run_id": run_id, "python_hash_seed": recorded})
            assert 0 < seed < 2 ** 32 and str(seed) != recorded


def test_module_state_fails_at_every_crash_point_that_recovers_a_packet(small_trace_head, tmp_path: Path) -> None:
    run = record_run(small_trace_head(PACKETS), tmp_path / "run", spec("ModuleCounterTag"), queues=2)
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), everything=True, jobs=2))
    recovering = [p for p in report.points if p.get("recovery", {}).get("inputs_processed")]
    passed = [(p["event"], p["recovery"]["snapshot"]) for p in recovering if p["consistent"]]
    # Only a worker's first recovery from the initial state can pass: a fresh process starts the
    # module's counter where the record's fresh process did. Every other point catches it.
    assert recovering and len(passed) <= 2 and all(snapshot == 0 for _, snapshot in passed), passed
    assert invariants(report) <= {"output-commit", "full-state", "snapshot-chain"}


# ---------------------------------------------------------------- recovery that raises is a verdict

def test_a_middlebox_that_raises_after_a_restore_fails_recovery_completes(small_trace_head, tmp_path: Path) -> None:
    run = record_run(small_trace_head(PACKETS), tmp_path / "run", spec("RaisesAfterRestore"), queues=2)
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), everything=True, jobs=2))
    raised = [p for p in report.points if not p["consistent"]]
    assert raised and not report.consistent
    assert any(p["consistent"] for p in report.points)  # from the initial state it recovers: the sweep went on
    for point in raised:
        (violation,) = point["violations"]
        assert violation["invariant"] == "recovery-completes"
        assert violation["exception"] == "RuntimeError: packets were seen, but the start-up flag is not set"
        assert isinstance(violation["packet"], int) and violation["queue"] in (0, 1)
        assert "hidden-state" in violation["likely_causes"]
    done = cli("verify", run, "-m", recorded_middlebox(run), hash_seed="0")
    assert done.returncode == 1 and "recovery-completes" in done.stdout


def test_a_middlebox_that_loops_after_a_restore_fails_at_the_deadline_and_the_sweep_goes_on(
        small_trace_head, tmp_path: Path) -> None:
    run = record_run(small_trace_head(PACKETS), tmp_path / "run", spec("LoopsAfterRestore"), queues=2)
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), at=[5], chain=True, chain_sample=1, jobs=2, point_timeout=1.5))
    hung = [p for p in report.points if not p["consistent"]]
    assert hung and any(p["consistent"] for p in report.points)  # from the initial state it recovers
    for point in hung:
        (violation,) = point["violations"]
        assert violation["invariant"] == "recovery-completes"
        assert violation["message"].startswith("recovery did not finish within 1.5 s (queue ")
        assert violation["likely_causes"][0] == "endless-loop"
        assert point["seconds"] < 10
    done = cli("crash-replay", run, "-m", recorded_middlebox(run), "--at", 5, "--chain", 1, "--jobs", 1, "--point-timeout", 1, hash_seed="0")
    assert done.returncode == 1 and "did not finish within 1 s" in done.stdout, done.stdout + done.stderr


def test_a_non_deterministic_declare_is_a_middlebox_error(small_trace_head, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("record", small_trace_head(PACKETS), "-m", spec("SetOrderDeclare"), "-q", 2, "--out", run,
               hash_seed="0").returncode == 0
    done = cli("crash-replay", run, "-m", recorded_middlebox(run), "--every", 10, "--jobs", 1, hash_seed="0")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads((run / "crash" / "results.json").read_text())
    messages = {v["message"] for p in doc["crash_points"] for v in p["violations"]}
    assert messages and all("declare() must be deterministic" in m for m in messages), messages
    assert {v["invariant"] for p in doc["crash_points"] for v in p["violations"]} == {"recovery-completes"}
    # the same check in the command's own process: a verdict (exit 1), not a damaged run (exit 3)
    mismatch = cli("crash-replay", run, "-m", recorded_middlebox(run), "--every", 10, hash_seed="1")
    assert mismatch.returncode == 1 and "declare() must be deterministic" in mismatch.stderr + mismatch.stdout


# ---------------------------------------------------------------- output commit without the reference

class EagerDispatch(Recorder):
    """Mutant Input Logger: the queues get each batch before its chunk is durable (it is written
    with the next batch)."""

    deferred: tuple[bytes, int] | None = None

    def _flush_batch(self, raw: bytearray, pending: int, batch: list[list[Any]]) -> None:
        for q, items in enumerate(batch):
            if items:
                self.sched.dispatch(q, items)
                batch[q] = []
        self._flush_deferred()
        self.deferred = (bytes(raw), pending)

    def _flush_deferred(self) -> None:
        if self.deferred is not None:
            self.storage.flush_input(*self.deferred)
            self.deferred = None

    def _snapshot(self, number: int, boundary: int) -> None:
        self._flush_deferred()
        super()._snapshot(number, boundary)

    def _ingest(self) -> int:
        count = super()._ingest()
        self._flush_deferred()
        return count


def _commit_failures(run: Path) -> list[dict[str, Any]]:
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), everything=True, jobs=2, chain=False))
    return [v for p in report.points for v in p["violations"] if v["invariant"] == "output-commit"]


def test_eager_output_logger_is_caught_as_output_commit(small_trace_head, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    release = OutputLogger.release
    monkeypatch.setattr(OutputLogger, "release", lambda self, stable, durable, now: release(
        self, [1 << 62] * len(stable), durable, now))  # the input durable is all it waits for
    run = record_run(small_trace_head(PACKETS), tmp_path / "run", "nat", queues=4)
    monkeypatch.undo()
    failures = _commit_failures(run)
    assert failures and all("was not durable then" in v["message"] for v in failures), failures[:2]


def test_eager_input_logger_is_caught_as_output_commit(small_trace_head, tmp_path: Path) -> None:
    cfg = RecordConfig(trace=small_trace_head(300), out=tmp_path / "run", middlebox="monitor", queues=4,
                       snapshot_every=100, flush_every=FLUSH_EVERY, seed=3)
    EagerDispatch(cfg, build_middlebox("monitor")).run()
    failures = _commit_failures(cfg.out)
    assert failures, "a release that depends on a packet whose input was not durable went unnoticed"
    assert all(v["evidence"]["kind"] in ("release", "output-missing", "output-bytes") for v in failures)
    assert any("was not durable then" in v["message"] for v in failures)
