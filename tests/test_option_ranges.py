"""Every numeric option has a documented range, refused as a usage error (exit 2, one sentence)
outside it; a capture cut short in its last record is recorded up to its last complete packet;
a trace that is not a regular file fails at once (issue 12, item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.errors import SEED_MAX, U32_MAX, UsageError
from ftmbctl.pcapio import iter_packets, write_pcap
from ftmbctl.record import RecordConfig
from ftmbctl.verify import SweepConfig, usable_cpus

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
ROOT = Path(__file__).resolve().parents[1]
PACKETS = 30


@pytest.fixture(autouse=True)
def pinned_terminal(pin_terminal) -> None:
    pin_terminal(ENV)


def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


def error_line(result, code: int) -> str:
    """Assert a clean failure with exit ``code`` and return its one error sentence."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def trace(small_trace_head) -> Path:
    return small_trace_head(PACKETS)


@pytest.fixture(scope="module")
def run(trace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranges") / "run"
    result = CliRunner(env=ENV).invoke(app, ["record", str(trace), "-o", str(out), "--snapshot-every", "10"])
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------- record


@pytest.mark.parametrize("option, value, words", [
    ("--snapshot-every", 2**70, f"between 1 and {U32_MAX}"),
    ("--snapshot-every", 0, f"between 1 and {U32_MAX}"),
    ("--flush-every", U32_MAX + 1, f"between 1 and {U32_MAX}"),
    ("--seed", -1, f"between 0 and {SEED_MAX}"),
    ("--seed", SEED_MAX + 1, f"between 0 and {SEED_MAX}"),
    ("--queues", 65, "between 1 and 64"),
])
def test_record_option_out_of_range_is_a_usage_error(trace, tmp_path, option, value, words):
    line = error_line(cli("record", trace, "-o", tmp_path / "out", option, value), 2)
    assert line == f"error: {option} must be {words}, got {value}"
    assert not (tmp_path / "out").exists()


def test_record_config_refuses_the_same_ranges_from_python(tmp_path):
    with pytest.raises(UsageError, match="--snapshot-every must be between 1 and 4294967295"):
        RecordConfig(trace=tmp_path / "t.pcap", out=tmp_path / "o", snapshot_every=2**32).validate()
    RecordConfig(trace=tmp_path / "t.pcap", out=tmp_path / "o", snapshot_every=U32_MAX, seed=SEED_MAX).validate()


def test_help_shows_each_range():
    record_help = " ".join(cli("record", "--help").stdout.split())
    for shown in ("[1-64]", f"[1-{U32_MAX}]", f"[0-{SEED_MAX}]"):
        assert shown in record_help
    sweep_help = " ".join(cli("crash-replay", "--help").stdout.split())
    for shown in ("[>=1]", "[>=0]", "[0-86400]", f"[0-{SEED_MAX}]"):
        assert shown in sweep_help


# ---------------------------------------------------------------- crash-replay


@pytest.mark.parametrize("args, message", [
    (["--random", "0"], "--random must be at least 1, got 0"),
    (["--every", "0"], "--every must be at least 1, got 0"),
    (["--seed", "-1"], f"--seed must be between 0 and {SEED_MAX}, got -1"),
    (["--chain", "-1"], "--chain takes all, none or a number of snapshots, got '-1'"),
    (["--jobs", "-1"], "--jobs must be at least 0, got -1"),
    (["--point-timeout", "-1"], "--point-timeout must be between 0 and 86400, got -1"),
    (["--point-timeout", "nan"], "--point-timeout must be between 0 and 86400, got nan"),
])
def test_sweep_option_out_of_range_is_a_usage_error(run, args, message):
    assert error_line(cli("crash-replay", run, *args), 2) == f"error: {message}"
    assert not (run / "crash").exists()  # refused before anything ran


def test_at_past_the_last_event_names_the_events(run):
    for at in ("1000000", "-1"):
        line = error_line(cli("crash-replay", run, "--at", at), 2)
        assert line.startswith(f"error: --at {at} is out of range: this run has events 0..")


def test_sweep_config_refuses_the_same_ranges_from_python(run):
    with pytest.raises(UsageError, match="--random must be at least 1"):
        SweepConfig(sample=0).validate()


def test_jobs_beyond_the_usable_cpus_are_capped_with_a_note(run):
    cpus = usable_cpus()
    assert cpus == len(os.sched_getaffinity(0))
    assert SweepConfig(jobs=cpus + 46).jobs_to_use() == cpus == SweepConfig(jobs=0).jobs_to_use()
    result = cli("crash-replay", run, "--at", "0", "--chain", "none", "--jobs", cpus + 46, "--json")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "--jobs" in line]
    assert notes == [f"note: --jobs {cpus + 46} is more than the {cpus} CPUs this process may use; "
                     f"running {cpus} at a time"]
    assert json.loads(result.stdout)["selection"]["jobs"] == 1  # one crash point: one worker


def test_keep_onto_an_existing_file_is_a_usage_error(run, tmp_path):
    target = tmp_path / "images"
    target.write_text("mine\n")
    line = error_line(cli("crash-replay", run, "--at", "0", "--keep", target), 2)
    assert line == f"error: --keep {target}: exists and is not a directory; crash images are written as " \
                   "directories inside it"
    assert target.read_text() == "mine\n"


# ---------------------------------------------------------------- bench


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], f"--seed must be between 0 and {SEED_MAX}, got -1"),
    (["--queues", "0"], "--queues must be between 1 and 64, got 0"),
    (["--repeat", "0"], "--repeat must be at least 1, got 0"),
    (["--rss-sample", "0"], "--rss-sample must be at least 1, got 0"),
    (["--sweep-points", "-1"], "--sweep-points must be at least 0, got -1"),
])
def test_bench_option_out_of_range_is_a_usage_error(args, message):
    assert error_line(cli("bench", *args), 2) == f"error: {message}"


# ---------------------------------------------------------------- captures cut short


def cut_capture(trace: Path, path: Path, cut: int) -> int:
    """Write ``trace``'s packets to ``path`` minus its last ``cut`` bytes; return the file's size."""
    write_pcap(path, iter_packets(trace))
    size = path.stat().st_size - cut
    os.truncate(path, size)
    return size


def test_capture_cut_in_its_last_record_records_the_packets_before(trace, tmp_path):
    cut = tmp_path / "cut.pcap"
    size = cut_capture(trace, cut, 5)
    result = cli("record", cut, "-o", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    warning = f"warning: {cut}: cut short at byte {size} inside packet {PACKETS}; " \
              f"recorded the {PACKETS - 1} complete packets before it"
    assert [line for line in result.stderr.splitlines() if "cut short" in line] == [warning]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["trace"]["cut_short_at"] == size
    assert manifest["stats"]["packets_in"] == PACKETS - 1


def test_capture_cut_in_its_record_header_records_the_packets_before(trace, tmp_path):
    cut = tmp_path / "cut.pcap"
    last = len(list(iter_packets(trace))[-1].data)
    size = cut_capture(trace, cut, last + 6)  # 10 of the last record header's 16 bytes are left
    result = cli("record", cut, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"cut short at byte {size} inside packet {PACKETS}" in result.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stats"]["packets_in"] == PACKETS - 1


def test_strict_refuses_a_capture_cut_short(trace, tmp_path):
    cut = tmp_path / "cut.pcap"
    size = cut_capture(trace, cut, 5)
    line = error_line(cli("record", cut, "-o", tmp_path / "run", "--strict"), 3)
    assert line == (f"error: {cut}: cut short at byte {size} inside packet {PACKETS}; --strict refuses it "
                    f"(without --strict the {PACKETS - 1} complete packets before it would be used)")
    assert not (tmp_path / "run").exists()


def test_complete_capture_has_no_cut_in_its_manifest(run):
    assert "cut_short_at" not in json.loads((run / "manifest.json").read_text())["trace"]


def test_bad_record_length_mid_file_stays_bad_input(trace, tmp_path):
    damaged = tmp_path / "damaged.pcap"
    write_pcap(damaged, iter_packets(trace))
    data = bytearray(damaged.read_bytes())
    second = 24 + 16 + len(next(iter(iter_packets(trace))).data)
    data[second + 8:second + 12] = (300_000).to_bytes(4, "little")  # caplen of packet 2
    damaged.write_bytes(bytes(data))
    line = error_line(cli("record", damaged, "-o", tmp_path / "run"), 3)
    assert f"packet record at byte {second} (packet 2) claims 300000 captured bytes" in line


# ---------------------------------------------------------------- traces that are no files


def record_in_subprocess(trace: object, out: Path) -> subprocess.CompletedProcess:
    """The CLI in its own process: a hang fails the test (timeout) instead of blocking the suite."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ftmbctl", "record", str(trace), "-o", str(out)],
                          capture_output=True, text=True, timeout=20, env=env, stdin=subprocess.DEVNULL)


def test_fifo_trace_fails_at_once(tmp_path):
    fifo = tmp_path / "trace.pcap"
    os.mkfifo(fifo)
    started = time.monotonic()
    proc = record_in_subprocess(fifo, tmp_path / "run")
    assert proc.returncode == 3, proc.stderr
    assert f"error: {fifo}: is a FIFO" in proc.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_trace_fails_at_once(tmp_path):
    proc = record_in_subprocess("/dev/zero", tmp_path / "run")
    assert proc.returncode == 3, proc.stderr
    assert "error: /dev/zero: is a character device" in proc.stderr


def test_directory_trace_is_bad_input(tmp_path):
    assert error_line(cli("record", tmp_path, "-o", tmp_path / "run"), 3) == \
        f"error: {tmp_path}: is a directory, not a capture file"
