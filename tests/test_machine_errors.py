"""When the machine fails (disk full, file too large, read-only, no permission), ftmbctl gives no
verdict: exit 4, one sentence naming the file, and nothing half-written left behind. One writer
per directory (locking.py), and ``recover`` never destroys the image it reads."""

from __future__ import annotations

import builtins
import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ftmbctl.export
import ftmbctl.snapshot
import ftmbctl.store
from ftmbctl.cli import app
from ftmbctl.errors import UsageError
from ftmbctl.locking import exclusive, lock_path
from ftmbctl.manifest import run_files
from ftmbctl.recovery import arrivals_from_trace, recover
from ftmbctl.rundir import RunDir

ENV = {"COLUMNS": "400", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
RECORD = ["--snapshot-every", "20", "--flush-every", "8", "--queues", "2"]


def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


def error_line(result, code: int) -> str:
    """Assert a clean failure with exit ``code``; return its one sentence, whitespace collapsed."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return " ".join(errors[0].split())


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(parent: Path, name: str) -> list[str]:
    """What a failed run left beside ``parent / name``: the directory, a moved-aside old run, a lock."""
    return sorted(p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}."))


class FullFile:
    """A file on a disk with ``room`` bytes left: a write past them raises OSError(``err``)."""

    def __init__(self, handle, room: int, err: int) -> None:
        self.handle, self.room, self.err, self.written = handle, room, err, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.room:
            raise OSError(self.err, os.strerror(self.err))
        self.written += len(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def fail_writes(monkeypatch: pytest.MonkeyPatch, module, name: str, err: int = errno.ENOSPC,
                room: int = 64, at_open: bool = False) -> None:
    """Files called ``name`` opened by ``module`` fail: at open, or once ``room`` bytes are written."""
    real = builtins.open

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name != name:
            return real(path, mode, *args, **kwargs)
        if at_open:
            raise OSError(err, os.strerror(err), str(path))
        return FullFile(real(path, mode, *args, **kwargs), room, err)

    monkeypatch.setattr(module, "open", fake_open, raising=False)


@pytest.fixture(scope="module")
def trace(small_trace_head) -> Path:
    return small_trace_head(60)


@pytest.fixture(scope="module")
def recorded(trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recorded") / "run"
    assert cli("record", trace, "--out", out, *RECORD).exit_code == 0
    return out


@pytest.fixture(scope="module")
def image(recorded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("imaged") / "run"
    shutil.copytree(recorded, run)
    keep = tmp_path_factory.mktemp("keep") / "images"
    result = cli("crash-replay", run, "--at", "30", "--chain", "none", "--jobs", "1", "--keep", keep)
    assert result.exit_code == 0, result.output
    (kept,) = sorted(keep.iterdir())
    return kept


# ---------------------------------------------------------------- exit 4: the machine failed

def test_record_under_a_file_size_limit_exits_4_and_leaves_nothing(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    def limit() -> None:  # in the child: a 4 KiB file size limit, and EFBIG rather than SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "ftmbctl", "record", str(trace), "--out", str(out), *RECORD],
                          preexec_fn=limit, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert f"{out}/" in line and "cannot write (File too large)" in line, line
    assert leftovers(tmp_path, "run") == []


@pytest.mark.parametrize("name", ["pal-0.log", "input.log", "output.log", "timeline.log"])
def test_disk_full_while_a_log_is_written_exits_4_naming_the_log(
        trace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # pal-0.log fills up in a worker thread, inside the middlebox's shared access: still not the middlebox's fault
    fail_writes(monkeypatch, ftmbctl.store, name)
    out = tmp_path / "run"
    line = error_line(cli("record", trace, "--out", out, *RECORD), 4)
    assert line == f"error: {out / name}: cannot write (No space left on device)"
    assert leftovers(tmp_path, "run") == []


def test_disk_full_under_force_puts_the_old_run_back(
        recorded: Path, trace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    shutil.copytree(recorded, out)
    before = tree(out)
    fail_writes(monkeypatch, ftmbctl.store, "pal-1.log")
    line = error_line(cli("record", trace, "--out", out, "--force", "--seed", "9", *RECORD), 4)
    assert "pal-1.log: cannot write (No space left on device)" in line
    assert tree(out) == before
    assert leftovers(tmp_path, "run") == ["run"]
    RunDir(out).check_complete()


@pytest.mark.parametrize("name, err, reason", [
    ("snap-000001.snap.tmp", errno.EROFS, "Read-only file system"),
    ("reference.snap.tmp", errno.ENOSPC, "No space left on device"),
    ("manifest.json.tmp", errno.EACCES, "Permission denied"),
])
def test_a_refused_snapshot_or_manifest_write_exits_4(
        trace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, err: int, reason: str) -> None:
    fail_writes(monkeypatch, ftmbctl.snapshot, name, err, at_open=True)
    out = tmp_path / "run"
    line = error_line(cli("record", trace, "--out", out, *RECORD), 4)
    final = name.removesuffix(".tmp")
    assert line.startswith("error: ") and line.endswith(f"{final}: cannot write ({reason})"), line
    assert leftovers(tmp_path, "run") == []


def test_a_read_only_out_parent_exits_4(trace: Path, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        try:
            (parent / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user writes into a 0o555 directory (root); the injected EROFS/EACCES tests cover it")
        line = error_line(cli("record", trace, "--out", parent / "run", *RECORD), 4)
        assert str(parent) in line and "Permission denied" in line
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_a_failed_results_write_leaves_the_previous_results(
        recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    assert cli("crash-replay", run, "--at", "10", "--chain", "none", "--jobs", "1").exit_code == 0
    results = run / "crash" / "results.json"
    before = results.read_bytes()
    fail_writes(monkeypatch, ftmbctl.snapshot, "results.json.tmp", room=10)
    line = error_line(cli("crash-replay", run, "--at", "20", "--chain", "none", "--jobs", "1"), 4)
    assert line == f"error: {results}: cannot write (No space left on device)"
    monkeypatch.undo()
    assert results.read_bytes() == before
    assert sorted(p.name for p in results.parent.iterdir()) == ["results.json", "sweeps"]
    assert not list(results.parent.rglob("*.tmp"))  # no half-written file anywhere
    assert cli("verify", run).exit_code == 0


def test_a_full_disk_under_junit_exits_4_naming_the_file(
        recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    assert cli("crash-replay", run, "--at", "10", "--chain", "none", "--jobs", "1").exit_code == 0
    junit = tmp_path / "verify.xml"
    real = Path.write_text

    def full(self: Path, *args, **kwargs):
        if self == junit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    line = error_line(cli("verify", run, "--junit", junit), 4)
    assert line == f"error: {junit}: cannot write the JUnit file (No space left on device)"


def test_a_full_disk_under_export_exits_4_naming_the_file(
        recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the write itself fails (no file name on the OSError): the path still comes from export's caller
    fail_writes(monkeypatch, ftmbctl.export, "alerts.jsonl", room=0)
    monkeypatch.setattr(ftmbctl.export, "ALERT_LINKTYPE", next(RunDir(recorded).outputs()).linktype)
    dest = tmp_path / "alerts.jsonl"
    line = error_line(cli("export", recorded, "--alerts", dest), 4)
    assert line == f"error: {dest}: cannot write (No space left on device)"


# ---------------------------------------------------------------- one writer per directory

def test_a_second_record_to_the_same_out_is_refused_naming_the_pid(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with exclusive(out):
        line = error_line(cli("record", trace, "--out", out, *RECORD), 2)
        assert line == f"error: another ftmbctl (pid {os.getpid()}) is writing {out}; wait for it to finish"
        assert not out.exists()
    assert not lock_path(out).exists()
    assert cli("record", trace, "--out", out, *RECORD).exit_code == 0


def test_crash_replay_is_refused_while_the_run_is_written(recorded: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    with exclusive(run):
        line = error_line(cli("crash-replay", run, "--at", "10", "--chain", "none", "--jobs", "1"), 2)
    assert f"(pid {os.getpid()}) is writing {run}" in line
    assert not (run / "crash").exists()


def test_the_lock_lies_beside_the_run_and_a_stale_one_holds_nothing(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock_path(out).write_text("999999\n")  # left by a process that was killed: no flock on it
    assert cli("record", trace, "--out", out, *RECORD).exit_code == 0
    assert lock_path(out) == tmp_path / ".run.lock" and not lock_path(out).exists()
    with exclusive(out):
        assert not [p for p in run_files(out) if p.name.endswith(".lock")]
        RunDir(out).check_complete()


# ---------------------------------------------------------------- recover never destroys its input

def test_recover_into_the_image_itself_exits_2_and_keeps_it(image: Path) -> None:
    before = tree(image)
    line = error_line(cli("recover", image, "--out", image, "--force"), 2)
    assert "is the crash image itself" in line
    assert tree(image) == before


def test_recover_into_a_directory_inside_the_image_exits_2(image: Path) -> None:
    before = tree(image)
    line = error_line(cli("recover", image, "--out", image / "snapshots" / "again"), 2)
    assert "inside the crash image" in line
    assert tree(image) == before


def test_recover_into_a_directory_holding_the_image_is_refused(image: Path, trace: Path) -> None:
    before = tree(image)
    with pytest.raises(UsageError, match="holds the crash image"):
        recover(RunDir(image), arrivals_from_trace(trace), image.parent)
    assert tree(image) == before


def test_recover_into_an_existing_out_needs_force(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "recovered"
    assert cli("recover", image, "--out", out).exit_code == 0
    before = tree(out)
    line = error_line(cli("recover", image, "--out", out), 2)
    assert line == f"error: {out} already exists; pass --force to overwrite it"
    assert tree(out) == before
    assert cli("recover", image, "--out", out, "--force").exit_code == 0
    assert leftovers(tmp_path, "recovered") == ["recovered"]
