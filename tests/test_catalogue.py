"""Every real capture of the shared collection (../shared/pcaps/CATALOGUE.tsv), end to end.

For each capture and for both built-in middleboxes (monitor, nat): ``ftmbctl record`` (chaos,
2 queues, a snapshot every 50 packets, a flush every 8 records), ``crash-replay --random 10
--seed 1 --torn --jobs 1``, then ``verify --json``, all in-process through typer's CliRunner. A
capture the reader can read must record, recover from every crash point and verify consistent;
a capture it cannot read must stop ``record`` with exit 3 and one sentence naming the file, and
leave no run directory behind. Nothing may print a traceback or hang: every command runs under a
time limit (SIGALRM), so a hang fails its own test instead of the session.

What a command reports is checked against something it does not compute itself: the catalogue's
packet count, the run's timeline (which crash points can exist) and the run directory on disk.

Time: the whole file runs in well under two minutes. The only large capture,
chrissanders-packets/ftp-crack.pcap (19,730 packets), is cut to its first ``CUT_TO`` packets with
ftmbctl.pcapio before it is recorded; its port reuse already shows up in the first 2,000.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from ftmbctl import records as rec
from ftmbctl.cli import app
from ftmbctl.errors import BadInput
from ftmbctl.pcapio import iter_packets, read_trace_info, write_capture
from ftmbctl.rundir import RunDir

PCAPS = Path(__file__).resolve().parents[1].parent / "shared" / "pcaps"
CATALOGUE = PCAPS / "CATALOGUE.tsv"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
MIDDLEBOXES = ("monitor", "nat")
QUEUES, SNAPSHOT_EVERY, FLUSH_EVERY, SEED = 2, 50, 8, 1
CUT_ABOVE, CUT_TO = 5_000, 2_000  # captures longer than CUT_ABOVE packets are cut to their first CUT_TO
TIME_LIMIT = 60  # seconds per command; the slowest (cut ftp-crack) takes a few


def _catalogue() -> list[dict[str, str]]:
    if not CATALOGUE.is_file():
        return []
    with open(CATALOGUE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    listed = {row["file"] for row in rows}
    # A capture on disk that the catalogue forgot is walked too (with no catalogue numbers to check).
    for path in sorted(PCAPS.rglob("*")):
        rel = path.relative_to(PCAPS).as_posix()
        if path.is_file() and rel.split("/")[0] != "licenses" and path.suffix in (".pcap", ".pcapng", ".gz") \
                and rel not in listed:
            rows.append({"file": rel, "packet_count": ""})
    return rows


ROWS = _catalogue()
pytestmark = pytest.mark.skipif(not ROWS, reason=f"{CATALOGUE} is not there: no shared captures to walk")
CASES = [(row["file"], mb) for row in ROWS for mb in MIDDLEBOXES] or [("-", "-")]


# ---------------------------------------------------------------- helpers

class Hung(Exception):
    """A command did not finish within its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hung in the main thread after ``seconds`` (blocking reads and lock waits included)."""
    def on_alarm(_signum: int, _frame: Any) -> None:
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def invoke(*args: Any):
    with time_limit(TIME_LIMIT):
        result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"ftmbctl {' '.join(map(str, args))}: {type(exc).__name__}: {exc}\n{result.output[-2000:]}")
    assert "Traceback" not in result.output, result.output[-2000:]
    return result


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout[-1000:], result.stderr[-1000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def catalogue_count(row: dict[str, str]) -> int | None:
    text = row.get("packet_count", "").replace(",", "").strip()
    return int(text) if text.isdigit() else None


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """``prepared(file) -> (trace to record, packets it holds or None when unreadable, cut?)``.

    A capture above CUT_ABOVE packets is cut to its first CUT_TO packets (written by pcapio in
    the format that holds them), once per module."""
    cache: dict[str, tuple[Path, int | None, bool]] = {}
    folder = tmp_path_factory.mktemp("cut")

    def get(name: str) -> tuple[Path, int | None, bool]:
        if name not in cache:
            path = PCAPS / name
            try:
                count: int | None = read_trace_info(path).packet_count
            except BadInput:
                count = None
            cut = count is not None and count > CUT_ABOVE
            if cut:
                path = folder / (name.replace("/", "__") + ".cut")
                write_capture(path, list(itertools.islice(iter_packets(PCAPS / name), CUT_TO)))
                count = CUT_TO
            cache[name] = (path, count, cut)
        return cache[name]

    return get


def record_args(trace: Path, mb: str, out: Path) -> list[Any]:
    return ["record", trace, "--middlebox", mb, "--queues", QUEUES, "--snapshot-every", SNAPSHOT_EVERY,
            "--flush-every", FLUSH_EVERY, "--scheduler", "chaos", "--seed", SEED, "--out", out, "--json"]


# ---------------------------------------------------------------- the whole catalogue

@pytest.mark.parametrize("name,mb", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_capture_records_recovers_and_verifies(prepared, tmp_path: Path, name: str, mb: str) -> None:
    row = next(r for r in ROWS if r["file"] == name)
    trace, readable_count, cut = prepared(name)
    out = tmp_path / "run"
    result = invoke(*record_args(trace, mb, out))

    if readable_count is None:  # the reader refuses it: one sentence naming the file, nothing left behind
        line = one_error_line(result, 3)
        assert name.rsplit("/", 1)[-1] in line, line
        assert not out.exists()
        return

    assert result.exit_code == 0, (result.stdout[-1500:], result.stderr[-1500:])
    summary = json.loads(result.stdout)
    expected = CUT_TO if cut else catalogue_count(row)
    if expected is not None:  # the catalogue counted the packets with another tool
        assert summary["packets_in"] == expected
    assert summary["packets_in"] == readable_count
    assert [s["boundary"] for s in summary["snapshots"]] == list(
        range(SNAPSHOT_EVERY, readable_count, SNAPSHOT_EVERY))
    events = RunDir(out).events()
    assert events and events[-1].kind == rec.EV_END and len(events) == summary["events"]

    crashed = invoke("crash-replay", out, "--random", 10, "--seed", SEED, "--torn", "--jobs", 1)
    assert crashed.exit_code == 0, (crashed.stdout[-3000:], crashed.stderr[-1500:])

    verified = invoke("verify", out, "--json")
    assert verified.exit_code == 0, (verified.stdout[-3000:], verified.stderr[-1500:])
    doc = json.loads(verified.stdout)
    points = doc["crash_points"]
    failed = [p for p in points if not p["consistent"]]
    assert doc["consistent"] is True and not failed, failed[:3]
    assert doc["selection"]["events"] == len(events)
    clean = {p["event"] for p in points if p["variant"] == "clean"}
    # 10 drawn events (all of them when there are fewer) plus the snapshot chain: one point right
    # before each snapshot is begun, and the last event
    begins = {e.index for e in events if e.kind == rec.EV_SNAPSHOT_BEGIN}
    assert clean >= begins | {len(events) - 1}
    drawn, chain = min(10, len(events)), len(begins | {len(events) - 1})
    assert max(drawn, chain) <= len(clean) <= drawn + chain
    for point in points:  # a crash at event e recovers exactly what was durable at e
        ev = events[point["event"]]
        assert point["recovery"]["durable_inputs"] == ev.input_records, point
        assert point["recovery"]["snapshot"] == max(ev.snapshot, 0), point


# ---------------------------------------------------------------- empty captures

EMPTY = [row["file"] for row in ROWS if catalogue_count(row) == 0] or ["-"]


@pytest.mark.parametrize("name", EMPTY)
@pytest.mark.parametrize("mb", MIDDLEBOXES)
def test_empty_capture_has_one_crash_point_and_it_recovers_to_nothing(tmp_path: Path, name: str, mb: str) -> None:
    """A capture with no packets: the run holds only the logs' headers and one durability event
    (the end of the record). So there is exactly one crash point, a crash after everything; no
    torn variant (nothing is written after it), no snapshot, and its recovery restores the
    initial state, replays nothing, processes nothing and releases nothing."""
    out = tmp_path / "run"
    result = invoke(*record_args(PCAPS / name, mb, out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["packets_in"], summary["packets_out"], summary["pals"], summary["snapshots"]) == (0, 0, 0, [])
    run = RunDir(out)
    events = run.events()
    assert [(e.kind, e.arg, e.input_records, e.output_records) for e in events] == [(rec.EV_END, 0, 0, 0)]
    assert run.snapshot_paths() == []
    assert run.reference().boundary == 0

    kept = tmp_path / "kept"
    crashed = invoke("crash-replay", out, "--random", 10, "--seed", SEED, "--torn", "--jobs", 1, "--keep", kept,
                     "--json")
    assert crashed.exit_code == 0, crashed.output
    (point,) = json.loads(crashed.stdout)["crash_points"]
    assert (point["event"], point["variant"], point["consistent"], point.get("chain")) == (0, "clean", True, True)
    summary = point["recovery"]
    assert (summary["snapshot"], summary["durable_inputs"], summary["inputs_processed"], summary["replayed"],
            summary["released_before"], summary["logged"], summary["cut"]) == (0, 0, 0, 0, 0, [0, 0], [0, 0])

    verified = invoke("verify", out, "--json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["consistent"] is True

    # The one kept image recovers on its own, to an empty run.
    image = kept / "crash-000000-clean"
    recovered = invoke("recover", image, "--out", tmp_path / "recovered")
    assert recovered.exit_code == 0, recovered.output
    again = RunDir(tmp_path / "recovered")
    assert list(again.outputs()) == []
    assert again.reference().boundary == 0


# ---------------------------------------------------------------- captures that cannot be read

def _cut_mid_last_record(data: bytes) -> bytes:
    return data[:-3]


def _cut_mid_file_header(data: bytes) -> bytes:
    return data[:13]


def _nothing(_data: bytes) -> bytes:
    return b""


DAMAGES = {"cut-in-last-record": _cut_mid_last_record, "cut-in-file-header": _cut_mid_file_header,
           "zero-bytes": _nothing}
SOURCES = ["chrissanders-packets/tcp_handshake.pcap", "chrissanders-packets/tcp_handshake.pcapng",
           "tcpdump/tcp-handshake-nano.pcap"]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("source", SOURCES)
def test_catalogue_capture_cut_short_is_refused_with_one_sentence(tmp_path: Path, source: str, damage: str) -> None:
    """The catalogue holds no capture the reader refuses, so the unreadable branch is walked with
    real captures cut short: record stops with exit 3 and one sentence naming the file, and
    leaves no run directory. A capture cut in its last record (what a killed tcpdump leaves) is
    recorded up to its last complete packet with a warning; ``--strict`` refuses it like the rest."""
    original = PCAPS / source
    if not original.is_file():
        pytest.skip(f"{source} is not in the shared collection")
    trace = tmp_path / ("bad-" + original.name)
    trace.write_bytes(DAMAGES[damage](original.read_bytes()))
    out = tmp_path / "run"
    strict: list[str] = []
    if damage == "cut-in-last-record":
        result = invoke(*record_args(trace, "nat", tmp_path / "lenient"))
        assert result.exit_code == 0 and f"{trace}: cut short at byte" in result.stderr, result.stderr
        strict = ["--strict"]
    line = one_error_line(invoke(*record_args(trace, "nat", out), *strict), 3)
    assert str(trace) in line, line
    assert not out.exists()
    assert one_error_line(invoke("verify", out), 3)  # and there is nothing to verify
