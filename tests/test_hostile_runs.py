"""Run directories from someone else must not hang ftmbctl or run it out of memory (issue 12,
item 4): files that are not regular files, snapshots that decompress or decode to far more than
their size, snapshots whose state lacks a field, and sweeps stopped by a signal."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import lz4.block
import pytest
from typer.testing import CliRunner

from ftmbctl import codec
from ftmbctl.cli import app
from ftmbctl.record import RecordConfig, record
from ftmbctl.snapshot import HEADER, MAGIC, VERSION, read_snapshot
from ftmbctl.workers import remove_stale_scratch

ROOT = Path(__file__).resolve().parents[1]
SNAP = Path("snapshots") / "snap-000001.snap"
RSS_LIMIT_MB = 200


@pytest.fixture(scope="module")
def recorded(small_trace_head, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    record(RecordConfig(trace=small_trace_head(120), out=out, middlebox="nat", queues=2, snapshot_every=20))
    return out


@pytest.fixture()
def run(recorded: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(recorded, copy)
    return copy


def cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})
    return result.exit_code, " ".join(result.output.split())


def ftmbctl(*args: object, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftmbctl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})


def snapshot_file(run: Path, raw: bytes, raw_length: int | None = None) -> bytes:
    """Snapshot 1 of ``run`` holding the codec bytes ``raw``, with a valid header and CRCs."""
    old = HEADER.unpack_from((run / SNAP).read_bytes())
    body = lz4.block.compress(raw, store_size=False)
    head = HEADER.pack(MAGIC, VERSION, 0, old[3], 1, old[5], len(body),
                       len(raw) if raw_length is None else raw_length, zlib.crc32(body), 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])) + body


def test_manifest_that_is_a_fifo_is_a_damaged_run_not_a_hang(run: Path) -> None:
    (run / "manifest.json").unlink()
    os.mkfifo(run / "manifest.json")
    done = ftmbctl("inspect", run)
    assert done.returncode == 3, done.stderr
    assert "manifest.json: is a FIFO" in done.stderr


def test_manifest_linked_to_dev_zero_is_a_damaged_run(run: Path) -> None:
    (run / "manifest.json").unlink()
    (run / "manifest.json").symlink_to("/dev/zero")
    done = ftmbctl("verify", run)
    assert done.returncode == 3, done.stderr
    assert "manifest.json: is a device" in done.stderr


def test_log_that_is_a_fifo_is_a_damaged_run(run: Path) -> None:
    (run / "pal-1.log").unlink()
    os.mkfifo(run / "pal-1.log")
    done = ftmbctl("verify", run)
    assert done.returncode == 3, done.stderr
    assert "pal-1.log: is a FIFO" in done.stderr


def test_results_that_are_a_fifo_are_a_damaged_run(run: Path) -> None:
    (run / "crash").mkdir()
    os.mkfifo(run / "crash" / "results.json")
    done = ftmbctl("verify", run)
    assert done.returncode == 3, done.stderr
    assert "results.json: is a FIFO" in done.stderr


def test_snapshot_that_is_a_directory_is_a_damaged_run(run: Path) -> None:
    (run / SNAP).unlink()
    (run / SNAP).mkdir()
    code, out = cli("inspect", run)
    assert code == 3, out
    assert f"{SNAP}: is a directory" in out


def test_snapshot_claiming_more_state_than_lz4_can_give_is_refused(run: Path) -> None:
    (run / SNAP).write_bytes(snapshot_file(run, codec.encode({}), raw_length=(1 << 30) - 1))
    code, out = cli("inspect", run, SNAP)
    assert code == 3, out
    assert "more than lz4 can give" in out


def test_snapshot_of_nested_empty_containers_stays_in_bounded_memory(run: Path) -> None:
    # 64 nested lists (the deepest the codec allows), then 1.5 M empty sets: 3 MB of state,
    # 1.5 M * 216 bytes = 330 MB of objects if decoded without a bound.
    n = 1_500_000
    varint = bytearray()
    codec._varint(n, varint)
    inner = b"l" + bytes(varint) + b"e\x00" * n
    raw = b"l\x01" * 63 + inner
    (run / SNAP).write_bytes(snapshot_file(run, raw))
    measure = ("import resource, subprocess, sys; "
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
               "print(done.stderr, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "ftmbctl", "inspect", str(run),
                           str(SNAP)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    code, rss_mb = map(int, done.stdout.split())
    assert code == 3, done.stderr
    assert "more memory than its size allows" in done.stderr
    assert rss_mb < RSS_LIMIT_MB, f"peak RSS {rss_mb} MB"


def test_snapshot_without_shared_names_the_field(run: Path) -> None:
    state = read_snapshot(run / SNAP).state
    del state["shared"]
    (run / SNAP).write_bytes(snapshot_file(run, codec.encode(state)))
    code, out = cli("inspect", run, SNAP)
    assert code == 3, out
    assert f"{SNAP}: snapshot state field 'shared' is missing" in out


def test_snapshot_with_unequal_queue_lists_names_the_field(run: Path) -> None:
    state = read_snapshot(run / SNAP).state
    state["queue_bytes"] = state["queue_bytes"][:1]
    (run / SNAP).write_bytes(snapshot_file(run, codec.encode(state)))
    code, out = cli("inspect", run, SNAP)
    assert code == 3, out
    assert "'queue_bytes' has 1 entries for 2 queues" in out


# ---- signals ----
@pytest.fixture(scope="module")
def long_run(mixed_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose exhaustive sweep takes several seconds."""
    out = tmp_path_factory.mktemp("hostile-long") / "run"
    record(RecordConfig(trace=mixed_trace, out=out, middlebox="nat", queues=2, snapshot_every=20))
    return out


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for an init that may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def scratch_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "ftmbctl-recover-*")))


def start_sweep(run: Path) -> tuple[subprocess.Popen[str], list[int]]:
    sweep = subprocess.Popen([sys.executable, "-m", "ftmbctl", "crash-replay", str(run), "--all", "--jobs", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(1.5)
    workers: list[int] = []
    for _ in range(50):  # the workers are up within a few seconds
        workers = children(sweep.pid)
        if len(workers) >= 2 or sweep.poll() is not None:
            break
        time.sleep(0.1)
    assert sweep.poll() is None, "the sweep ended before it could be stopped"
    assert workers, "the sweep started no worker"
    return sweep, workers


def gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if running(p)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_crash_replay_with_no_worker_or_scratch_left(long_run: Path, sig: signal.Signals) -> None:
    before = scratch_dirs()
    sweep, workers = start_sweep(long_run)
    stopped = time.monotonic()
    sweep.send_signal(sig)
    _, err = sweep.communicate(timeout=10)
    assert time.monotonic() - stopped < 5
    assert sweep.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}" in err
    assert gone_within(workers, 2) == []
    assert {d for d in scratch_dirs() - before if f"-{sweep.pid}-" in d} == set()


def test_sigkilled_crash_replay_leaves_no_worker_and_its_scratch_is_removed_later(long_run: Path) -> None:
    sweep, workers = start_sweep(long_run)
    sweep.kill()
    sweep.wait(timeout=10)
    assert sweep.stderr is not None
    sweep.stderr.close()
    assert gone_within(workers, 3) == []  # each worker saw its parent go
    left = {d for d in scratch_dirs() if f"-{sweep.pid}-" in d}
    remove_stale_scratch()  # what the next sweep does first
    assert all(not os.path.exists(d) for d in left)
