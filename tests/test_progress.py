"""Progress a CI log can show, one percentile, one place for the defaults."""

from __future__ import annotations

import gzip
import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftmbctl import bench, defaults, render, stats
from ftmbctl.bench import BenchConfig
from ftmbctl.cli import app
from ftmbctl.pcapio import iter_packets, stream_size
from ftmbctl.record import RecordConfig, TotalEstimate


def test_a_progress_line_says_count_total_rate_and_time_left() -> None:
    assert render.progress_line("record", 12_288, 40_000, 2.0, "packets") == (
        "record: 12,288/40,000 packets (31%), 6,144 packets/s, about 5 s left")
    assert render.progress_line("crash-replay", 3, 0, 2.0, "crash points") == "crash-replay: 3 crash points, 1.5 crash points/s"
    assert render.progress_line("x", 0, 10, 0.0) == "x: 0/10 (0%)"
    assert render.human_seconds(30) == "30 s" and render.human_seconds(600) == "10 min"
    assert render.human_seconds(7200) == "2.0 h"


def test_without_a_terminal_long_commands_write_progress_lines(small_trace: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "PROGRESS_EVERY_S", 0.0)  # every update: the trace is short
    result = CliRunner().invoke(app, ["record", str(small_trace), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("record: ")]
    assert lines and all(" packets (" in line and "packets/s" in line for line in lines)
    swept = CliRunner().invoke(app, ["crash-replay", str(tmp_path / "run"), "--every", "9", "--jobs", "1"])
    assert swept.exit_code == 0, swept.stderr
    assert any(line.startswith("crash-replay: ") and "crash points" in line for line in swept.stderr.splitlines())


@pytest.mark.parametrize("compressed", [False, True])
def test_the_record_total_is_estimated_from_the_capture_and_corrected(small_trace: Path, tmp_path: Path,
                                                                      compressed: bool) -> None:
    trace = small_trace
    if compressed:
        trace = tmp_path / "small.pcap.gz"
        trace.write_bytes(gzip.compress(small_trace.read_bytes()))
        assert stream_size(trace) == small_trace.stat().st_size  # the gzip trailer's ISIZE
    packets = list(iter_packets(trace))
    estimate = TotalEstimate(stream_size(trace))
    seen = []
    for count, packet in enumerate(packets, 1):
        estimate.read += 16 + len(packet.data)
        seen.append(estimate.total(count))
    assert all(total >= count for count, total in enumerate(seen, 1))  # never below what was read
    assert abs(seen[len(seen) * 9 // 10] - len(packets)) <= 0.1 * len(packets)  # corrected as it goes
    assert abs(seen[-1] - len(packets)) <= 1


def test_one_percentile_definition() -> None:
    assert bench.percentile is stats.percentile and render.percentile is stats.percentile
    values = list(range(1, 101))
    assert stats.percentile(values, 99) == 99 and stats.percentile(values, 50) == 50
    assert stats.percentile([5, 1], 50) == 1 and stats.percentile([], 50) is None
    assert stats.percentile([3], 0) == 3


def test_one_place_for_the_defaults() -> None:
    wanted = (defaults.QUEUES, defaults.SNAPSHOT_EVERY, defaults.FLUSH_EVERY, defaults.SEED)
    cfg = RecordConfig(trace=Path("t"), out=Path("o"))
    assert (cfg.queues, cfg.snapshot_every, cfg.flush_every, cfg.seed) == wanted
    b = BenchConfig()
    assert (b.queues, b.snapshot_every, b.flush_every, b.seed) == wanted
    from ftmbctl import cli

    for command in (cli.record, cli.bench):
        params = inspect.signature(command).parameters
        shown = tuple(params[name].default.default for name in ("queues", "snapshot_every", "flush_every", "seed"))
        assert shown == wanted, command.__name__
