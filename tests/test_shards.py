"""Sweeps split into shards and joined again, sweeps kept side by side, and the Dask executor
(sweeps.py, dask_executor.py): the union of the shards is the unsharded sweep, point for point;
merging refuses what is not one sweep of this run; the Dask cluster gives the local pool's
verdicts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.errors import BadInput, UsageError
from ftmbctl.record import RecordConfig, record
from ftmbctl.sweeps import RESULTS, SWEEPS, parse_shard, shard_of
from ftmbctl.verify import SweepConfig, merge_shards, sweep

SELECTION = dict(every=4, torn=True, seed=1, jobs=1)


@pytest.fixture(scope="module")
def run(small_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "run"
    record(RecordConfig(trace=small_trace, out=out, queues=2, snapshot_every=8, seed=3))
    return out


def comparable(points: list[dict]) -> list[dict]:
    """A sweep's verdicts without the times they took."""
    return [{**{k: v for k, v in p.items() if k != "seconds"},
             "recovery": {k: v for k, v in p["recovery"].items() if not k.endswith("seconds")}} for p in points]


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---- the split itself ----

@given(st.integers(0, 300), st.integers(1, 40))
def test_shards_are_disjoint_contiguous_and_cover_the_selection(size: int, n: int) -> None:
    points = list(range(size))
    parts = [shard_of(points, k, n) for k in range(1, n + 1)]
    assert [p for part in parts for p in part] == points
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3", "", "1/0", "-1/2", "2/2/2"])
def test_a_malformed_shard_is_a_usage_error(text: str, run: Path) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)
    result = cli("crash-replay", run, "--shard", text)
    assert result.exit_code == 2 and "--shard" in result.stderr and "Traceback" not in result.stderr


# ---- shards and merge ----

def test_merged_shards_are_the_unsharded_sweep_point_for_point(run: Path) -> None:
    whole = sweep(run, SweepConfig(**SELECTION))
    shards = [sweep(run, SweepConfig(**SELECTION, shard=(k, 3))) for k in (1, 2, 3)]
    assert [s.shard["index"] for s in shards] == [1, 2, 3]
    assert {s.sweep_id for s in shards} == {whole.sweep_id}
    assert sum(len(s.points) for s in shards) == len(whole.points) == shards[0].shard["selected"]
    assert (run / RESULTS).read_text() == (run / SWEEPS / f"{whole.sweep_id}.json").read_text()  # shards leave it
    merged = merge_shards(run, [run / SWEEPS])
    assert merged.merged_shards == 3 and merged.sweep_id == whole.sweep_id
    assert comparable(merged.points) == comparable(whole.points)
    assert json.loads((run / RESULTS).read_text())["merged_shards"] == 3


def test_merge_refuses_a_missing_shard_a_shard_twice_and_another_run(run: Path, small_trace: Path,
                                                                     tmp_path: Path) -> None:
    paths = [sweep(run, SweepConfig(**SELECTION, shard=(k, 4))).kept_in for k in (1, 2, 4)]
    with pytest.raises(BadInput, match=r"shard 3 of 4 of sweep [0-9a-f]{12} is missing"):
        merge_shards(run, [Path(p) for p in paths])
    with pytest.raises(BadInput, match="shard 1 of 4 is also in"):
        merge_shards(run, [Path(paths[0]), Path(paths[0])])
    other = tmp_path / "other"
    record(RecordConfig(trace=small_trace, out=other, queues=2, snapshot_every=8, seed=4))
    foreign = sweep(other, SweepConfig(**SELECTION, shard=(3, 4))).kept_in
    with pytest.raises(BadInput, match="not of this run"):
        merge_shards(run, [Path(p) for p in paths] + [Path(foreign)])
    result = cli("verify", run, "--merge", paths[0], "--merge", paths[1])
    assert result.exit_code == 3 and "missing" in result.stderr and "Traceback" not in result.stderr


def test_another_selection_is_kept_beside_and_verify_says_which_it_reports(run: Path) -> None:
    first = sweep(run, SweepConfig(every=5, seed=1, jobs=1))
    second = sweep(run, SweepConfig(every=6, seed=1, jobs=1))
    assert first.sweep_id != second.sweep_id
    assert (run / SWEEPS / f"{first.sweep_id}.json").exists() and (run / SWEEPS / f"{second.sweep_id}.json").exists()
    result = cli("verify", run)
    assert result.exit_code == 0
    said = " ".join(result.stderr.split())
    assert f"reporting sweep {second.sweep_id}" in said and "every 6th event" in said
    assert first.sweep_id in said  # among those kept


def test_cli_shards_then_merge_with_json_and_junit(small_trace: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    record(RecordConfig(trace=small_trace, out=run, queues=2, snapshot_every=8, seed=5))
    for k in (1, 2):
        done = cli("crash-replay", run, "--every", "7", "--shard", f"{k}/2", "--json")
        assert done.exit_code == 0, done.stderr
        assert json.loads(done.stdout)["shard"]["index"] == k
    merged = cli("verify", run, "--merge", run / SWEEPS, "--json", "--junit", tmp_path / "v.xml")
    assert merged.exit_code == 0, merged.stderr
    doc = json.loads(merged.stdout)
    assert doc["merged_shards"] == 2 and doc["consistent"] is True
    assert (tmp_path / "v.xml").read_text().count("<testcase") == len(doc["crash_points"])
    assert "merged from 2 shards" in " ".join(merged.stderr.split())


# ---- the Dask executor ----

def test_a_dask_cluster_gives_the_local_pools_verdicts(run: Path) -> None:
    distributed = pytest.importorskip("distributed")
    local = sweep(run, SweepConfig(**SELECTION))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        seen = []
        remote = sweep(run, SweepConfig(**{**SELECTION, "jobs": 0}, executor="dask", scheduler=cluster.scheduler_address),
                       lambda done, total: seen.append((done, total)))
    assert comparable(remote.points) == comparable(local.points)
    assert remote.sweep_id == local.sweep_id and remote.selection["executor"] == "dask"
    assert seen[-1] == (len(local.points), len(local.points))


def test_an_unreachable_scheduler_is_one_sentence_exit_2(run: Path) -> None:
    pytest.importorskip("distributed")
    result = cli("crash-replay", run, "--every", "9", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 2 and "no Dask scheduler answers there" in result.stderr
    assert "Traceback" not in result.stderr
    malformed = cli("crash-replay", run, "--every", "9", "--executor", "dask", "--scheduler", "nonsense")
    assert malformed.exit_code == 2 and "is not a Dask scheduler address" in malformed.stderr
    lone = cli("crash-replay", run, "--executor", "dask")
    assert lone.exit_code == 2 and "--scheduler" in lone.stderr


def test_a_worker_that_cannot_see_the_run_or_sees_another_fails_the_task_in_one_sentence(run: Path,
                                                                                       tmp_path: Path) -> None:
    from ftmbctl.crash import CrashPoint
    from ftmbctl.dask_executor import manifest_sha256, run_task

    digest = manifest_sha256(run)
    blind = run_task(CrashPoint(1), False, str(tmp_path / "nowhere"), digest, None, None, None)
    assert blind["exit_code"] == 3 and "same path on every worker" in blind["error"]
    other = run_task(CrashPoint(1), False, str(run), "0" * 64, None, None, None)
    assert other["exit_code"] == 3 and "sees another run" in other["error"]
    good = run_task(CrashPoint(1), False, str(run), digest, None, None, None)
    assert good["verdict"]["event"] == 1 and good["hash_seed"] == os.environ.get("PYTHONHASHSEED", "random")


def test_on_dask_a_middlebox_that_loops_fails_at_the_deadline(small_trace: Path, tmp_path: Path) -> None:
    """Dask runs tasks on a pool of threads, where no signal reaches: the deadline still ends the
    recovery (a timer thread raises it), and the worker goes on with the next point."""
    distributed = pytest.importorskip("distributed")
    spec = f"{Path(__file__).resolve().parent / 'mutants' / 'exactness_mutants.py'}:LoopsAfterRestore"
    run = tmp_path / "run"
    record(RecordConfig(trace=small_trace, out=run, middlebox=spec, queues=2, snapshot_every=8))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        report = sweep(run, SweepConfig(middlebox=spec, at=[5], chain=True, chain_sample=1, point_timeout=1.5,
                                        executor="dask", scheduler=cluster.scheduler_address))
    hung = [p for p in report.points if not p["consistent"]]
    assert hung and any(p["consistent"] for p in report.points)
    for point in hung:
        (violation,) = point["violations"]
        assert violation["invariant"] == "recovery-completes"
        assert violation["message"].startswith("recovery did not finish within 1.5 s")
        assert point["seconds"] < 10


def test_on_dask_a_worker_that_dies_mid_sweep_loses_no_point_and_counts_none_twice(run: Path) -> None:
    distributed = pytest.importorskip("distributed")
    import signal

    local = sweep(run, SweepConfig(**{**SELECTION, "every": 2}))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        killed: list[int] = []

        def progress(done: int, total: int) -> None:
            if not killed and done >= 3:  # a few points in: one worker process dies with its task
                killed.append(pids[0])
                os.kill(pids[0], signal.SIGKILL)

        remote = sweep(run, SweepConfig(**{**SELECTION, "every": 2, "jobs": 0}, executor="dask",
                                        scheduler=cluster.scheduler_address), progress)
    assert killed
    assert comparable(remote.points) == comparable(local.points)  # every point once, in order
