"""The benchmark suite (ftmbctl/bench.py, benchmarks/run.py, ``ftmbctl bench``).

A benchmark's numbers are not pass/fail, so these tests check what must hold whatever the
machine: every metric is reported with a number or a reason, each value is the ratio of the raw
numbers it claims to come from, ``met`` agrees with the target, figures about the run match the
run recorded independently, a missed target exits 0 and a failed measurement does not. The trace
is a tiny one with small snapshot intervals and sizes, so the whole file takes seconds.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftmbctl.bench import METRICS, format_met, format_table, format_value, median, percentile, spread
from ftmbctl.cli import app
from ftmbctl.record import RecordConfig, record

ROOT = Path(__file__).resolve().parents[1]
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
SNAP = 50  # four snapshot intervals on the 200-packet trace: late crashes exist in each
TINY = ["--quick", "--snapshot-every", str(SNAP), "--rss-packets", "100,1000", "--rss-sample", "2",
        "--sweep-points", "6"]


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.pcap"
    subprocess.run([sys.executable, str(ROOT / "traces" / "make_trace.py"), "--seed", "3", "--packets", "200",
                    "--out", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(autouse=True)
def pinned_terminal(pin_terminal) -> None:
    pin_terminal(ENV)


def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, ["bench", *(str(a) for a in args)])


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def check_metric(name: str, m: dict) -> None:
    assert set(m) >= {"value", "unit", "target", "met", "raw", "seconds"}, (name, m)
    if m["value"] is None:
        assert isinstance(m.get("unavailable"), str) and m["unavailable"], (name, m)
        assert m["met"] is None
        return
    assert isinstance(m["value"], (int, float)) and math.isfinite(m["value"]) and m["value"] > 0, (name, m)
    assert isinstance(m["met"], bool), (name, m)
    assert m["detail"]


# ---------------------------------------------------------------- the whole suite, as a script

def test_run_py_quick_reports_every_metric(tiny_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--trace", str(tiny_trace), *TINY,
                           "--json", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = strict_json(done.stdout)
    assert strict_json(out.read_text()) == doc  # --out writes what --json prints
    assert list(doc["metrics"]) == list(METRICS)
    for name, m in doc["metrics"].items():
        check_metric(name, m)
    assert doc["config"]["packets"] == 200 and doc["config"]["quick"] is True
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"]
    assert "benchmarks/run.py" in doc["command"] and "--quick" in doc["command"]
    m = doc["metrics"]

    # each value is the ratio of the raw numbers behind it, and `met` is its target's verdict
    raw = m["record_overhead"]["raw"]
    assert len(raw["ftmb_s"]) == len(raw["vanilla_s"]) == doc["config"]["repeat"] == 2
    assert raw["ftmb_median_s"] == pytest.approx(median(raw["ftmb_s"]), abs=1e-4)
    assert m["record_overhead"]["value"] == pytest.approx(raw["ftmb_median_s"] / raw["vanilla_median_s"], rel=1e-3)
    assert m["record_overhead"]["met"] == (m["record_overhead"]["value"] <= 1.15)
    assert m["record_overhead"]["raw"]["scheduler"] == "chaos"
    threads = m["record_overhead_threads"]
    assert threads["raw"]["scheduler"] == "threads" and threads["target"] == "<= 1.5"
    assert threads["value"] == pytest.approx(threads["raw"]["ftmb_median_s"] / threads["raw"]["vanilla_median_s"],
                                             rel=1e-3)
    guard = m["guard_overhead"]
    assert len(guard["raw"]["on_s"]) == len(guard["raw"]["off_s"]) == 2 and guard["target"] == "<= 1.05"
    assert guard["value"] == pytest.approx(guard["raw"]["on_median_s"] / guard["raw"]["off_median_s"], rel=1e-3)
    raw = m["engine_vs_direct"]["raw"]
    assert len(raw["direct_s"]) == len(raw["vanilla_s"]) == 2 and raw["packets"] == 200
    assert m["engine_vs_direct"]["value"] == pytest.approx(raw["direct_median_s"] / raw["vanilla_median_s"], rel=1e-3)
    assert m["engine_vs_direct"]["met"] == (m["engine_vs_direct"]["value"] >= 0.7)
    raw = m["record_vs_parse"]["raw"]
    assert raw["parse_packets"] == 200
    assert m["record_vs_parse"]["value"] == pytest.approx(raw["record_pps"] / raw["parse_pps"], rel=1e-2)
    raw = m["replay_vs_record"]["raw"]
    assert raw["crashes"] and all(c["since_snapshot"] >= 0.6 * SNAP for c in raw["crashes"])
    assert m["replay_vs_record"]["value"] == pytest.approx(raw["replay_pps"] / raw["record_pps"], rel=1e-2)
    raw = m["recovery_scaling"]["raw"]
    assert (raw["short_packets"], raw["long_packets"]) == (200, 2000)
    assert {c["trace_position"] for c in raw["long"]} and min(c["trace_position"] for c in raw["long"]) > 1000
    assert m["recovery_scaling"]["value"] == pytest.approx(raw["late_long_s"] / raw["late_short_s"], rel=1e-3)
    assert m["recovery_scaling"]["met"] == (m["recovery_scaling"]["value"] <= 1.5)
    raw = m["pal_bytes"]["raw"]
    assert raw["input_packets"] == 200 and raw["pals"] > 0
    assert m["pal_bytes"]["value"] == pytest.approx(raw["stored_bytes"] / raw["pals"], rel=1e-3)
    raw = m["sweep_rate"]["raw"]
    assert raw["consistent"] is True and raw["points"] >= 6
    assert m["sweep_rate"]["value"] == pytest.approx(raw["points"] / raw["seconds"], rel=1e-2)
    if m["release_delay"]["value"] is not None:
        raw = m["release_delay"]["raw"]
        assert raw["replay"]["median_us"] <= raw["replay"]["p99_us"]
        assert m["release_delay"]["value"] == pytest.approx(raw["no_replay"]["median_us"] / raw["replay"]["median_us"],
                                                            rel=1e-3)
    if m["peak_rss_ratio"]["value"] is not None:
        raw = m["peak_rss_ratio"]["raw"]
        assert raw["sizes"] == [100, 1000] and raw["target_sizes"] is False
        peaks = raw["large"]["peak_mb"] / raw["small"]["peak_mb"]
        assert m["peak_rss_ratio"]["value"] == pytest.approx(peaks, rel=1e-3)
        assert "not the target's" in m["peak_rss_ratio"]["detail"]


def test_run_py_failed_measurement_exits_non_zero_with_one_sentence(tiny_trace: Path) -> None:
    # a 100-packet pair with a snapshot every 1,000 packets has no crash late in an interval
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--trace", str(tiny_trace),
                           "--only", "recovery_scaling", "--pair-packets", "100"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: recovery_scaling could not be measured: no late crash point")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- ftmbctl bench

def test_cli_bench_pal_bytes_matches_an_independent_record(tiny_trace: Path, tmp_path: Path) -> None:
    result = cli("--quick", "--json", "--only", "pal_bytes", "--trace", tiny_trace, "--snapshot-every", SNAP)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    doc = strict_json(result.stdout)
    assert list(doc["metrics"]) == ["pal_bytes"]
    assert doc["command"] == (f"ftmbctl bench --trace {tiny_trace} --snapshot-every {SNAP} --quick "
                              "--only pal_bytes --json")  # in the command's option order
    assert "pal_bytes" in result.stderr  # progress goes to stderr
    m = doc["metrics"]["pal_bytes"]
    check_metric("pal_bytes", m)
    # the chaos scheduler makes the same run byte for byte: count it here without bench.py
    rec = record(RecordConfig(trace=tiny_trace, out=tmp_path / "run", snapshot_every=SNAP))
    stored = sum((tmp_path / "run" / f"pal-{q}.log").stat().st_size for q in range(4))
    assert (m["raw"]["pals"], m["raw"]["nondet_records"], m["raw"]["stored_bytes"]) == (rec.pals, rec.nondet, stored)
    assert m["value"] == pytest.approx(stored / rec.pals, rel=1e-3)
    assert m["raw"]["bytes_per_input_packet"] == pytest.approx(stored / 200, rel=1e-3)
    assert m["met"] == (stored / rec.pals <= 6)


def test_cli_bench_table(tiny_trace: Path) -> None:
    result = cli("--only", "pal_bytes,record_overhead", "--repeat", "1", "--trace", tiny_trace,
                 "--snapshot-every", SNAP)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    assert list(rows) == ["record_overhead", "pal_bytes"]
    assert rows["pal_bytes"][0].endswith("B/PAL") and rows["pal_bytes"][1] == "<= 6"
    assert rows["record_overhead"][1] == "<= 1.15" and rows["record_overhead"][2] in ("met", "not met")
    assert "machine: " in result.stdout and "command: ftmbctl bench --trace" in result.stdout


@pytest.mark.parametrize("args, code, words", [
    (["--only", "pal_bytes,nope"], 2, "unknown metric 'nope'"),
    (["--rss-packets", "5"], 2, "--rss-packets must be SMALL,LARGE"),
    (["--rss-packets", "10,5", "--only", "peak_rss_ratio"], 2, "small then large"),
    (["--queues", "0"], 2, "--queues must be between 1 and 64"),
    (["--trace", "missing.pcap"], 3, "missing.pcap: no such file"),
])
def test_cli_bench_errors_are_one_sentence(args: list[str], code: int, words: str) -> None:
    result = cli(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


# ---------------------------------------------------------------- unavailable metrics

# ---------------------------------------------------------------- pure helpers

def test_median_and_nearest_rank_percentile() -> None:
    assert median([]) is None and percentile([], 99) is None
    assert median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 2.5
    values = list(range(1, 101))
    assert percentile(values, 99) == 99 and percentile(values, 50) == 50 and percentile(values, 100) == 100
    assert percentile([7], 99) == 7 and percentile([5, 1], 99) == 5 and percentile([5, 1], 50) == 1


def test_spread_keeps_the_last_and_spaces_evenly() -> None:
    items = list(range(10))
    assert spread(items, 3) == [0, 4, 9] or spread(items, 3) == [0, 5, 9]
    assert spread(items, 1) == [9] and spread(items, 0) == []
    assert spread(items, 20) == items and len(spread(items, 4)) == 4


def test_format_value_and_met() -> None:
    assert format_value({"value": None, "unit": "x"}) == "unavailable"
    assert format_value({"value": 1.234, "unit": "x"}) == "1.23x"
    assert format_value({"value": 350.4, "unit": "x"}) == "350x"
    assert format_value({"value": 17.94, "unit": "B/PAL"}) == "17.9 B/PAL"
    assert format_value({"value": 1234.5, "unit": "points/s"}) == "1,234 points/s"
    assert (format_met(True), format_met(False), format_met(None)) == ("met", "not met", "-")


def test_format_table_aligns_columns() -> None:
    doc = {"metrics": {
        "record_overhead": {"value": 1.2, "unit": "x", "target": "<= 1.10", "met": False, "detail": "ftmb 1 s"},
        "sweep_rate": {"value": 25.0, "unit": "points/s", "target": ">= 20", "met": True, "detail": "9 points"},
        "peak_rss_ratio": {"value": None, "unit": "x", "target": "<= 1.3", "met": None, "unavailable": "no module"},
    }}
    lines = format_table(doc).splitlines()
    assert len(lines) == 5 and set(lines[1]) == {"-", " "}
    header = lines[0]
    for column in ("value", "target", "met", "details"):
        start = re.search(rf"\b{column}\b", header).start()
        for line in lines[2:]:
            assert line[start - 2:start] == "  " and line[start] != " ", (column, line)
    assert lines[2].split() == ["record_overhead", "1.20x", "<=", "1.10", "not", "met", "ftmb", "1", "s"]
    assert lines[4].split()[:2] == ["peak_rss_ratio", "unavailable"] and lines[4].endswith("no module")


def test_the_engine_needs_no_terminal() -> None:
    code = "import sys, ftmbctl.bench; print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich'}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
