"""The command line (CONVENTIONS 3, 8, 9): exact exit codes, one-sentence errors, stable output.

Every command runs in-process through typer's CliRunner with the terminal width pinned and colour
off. What a command prints is checked against an independent source: the run directory read back
with ``runreader``, the manifest on disk, the trace read with the pcap reader.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftmbctl import __version__
from ftmbctl.cli import app
from ftmbctl.middlebox import Packet
from ftmbctl.pcapio import iter_packets
from ftmbctl.render import human_ns
from middleboxes_for_tests import output_count

ROOT = Path(__file__).resolve().parents[1]
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
QUEUES = 2
SNAP = 100  # a few snapshots on the 300-packet small trace
FLUSH = 8
SEED = 5

COUNTER_MB = '''\
from ftmbctl.middlebox import Middlebox, Option


class PacketCounter(Middlebox):
    name = "counter"
    summary = "counts packets"
    options = {"step": Option(1, int, "how much each packet adds")}

    def declare(self, shared):
        self.total = shared.counter("total")

    def process(self, ctx, pkt):
        ctx.add(self.total, self.opts["step"])
        ctx.emit(pkt.data)


class NotAMiddlebox:
    pass


class Fire:
    """Not a Middlebox either; its name is also an emoji code (:fire:)."""
'''


# ---------------------------------------------------------------- helpers

@pytest.fixture(autouse=True)
def pinned_terminal(pin_terminal) -> None:
    pin_terminal(ENV)


def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


def words(text: str) -> str:
    """``text`` with its whitespace collapsed: rich wraps long stderr lines (the "recording" line)."""
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """``text`` without whitespace: rich may fold a long path anywhere when it wraps a line."""
    return "".join(text.split())


def ok(result) -> None:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None


def error_line(result, code: int) -> str:
    """Assert a clean failure with exit ``code`` and return its one-sentence error line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no uncaught exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]  # the sentence is the last word
    assert "error:" not in result.stdout
    return errors[0]


def table_rows(text: str) -> list[list[str]]:
    """The body cells of every rich table in ``text``."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in text.splitlines() if line.startswith("│")]


def tree(path: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and directory (None) under ``path``, by relative name."""
    return {p.relative_to(path).as_posix(): (p.read_bytes() if p.is_file() else None) for p in path.rglob("*")}


def record_args(trace: Path, out: Path, *extra: object, mb: str = "nat", scheduler: str = "chaos",
                seed: int = SEED, queues: int = QUEUES) -> list[object]:
    return ["record", trace, "--middlebox", mb, "--queues", queues, "--snapshot-every", SNAP,
            "--flush-every", FLUSH, "--scheduler", scheduler, "--seed", seed, "--out", out, *extra]


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def pcap_records(path: Path) -> list[tuple[int, int]]:
    """(offset, captured length) of every record of a classic little- or big-endian pcap."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        pytest.skip(f"{path} is not a classic pcap; the truncation test cuts classic pcap records")
    out, pos = [], 24
    while pos < len(data):
        caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
        out.append((pos, caplen))
        pos += 16 + caplen
    return out


@pytest.fixture(scope="module")
def run_dir(small_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the NAT, recorded through the CLI and read back by the inspect/export tests."""
    out = tmp_path_factory.mktemp("cli") / "run"
    ok(CliRunner(env=ENV).invoke(app, [str(a) for a in record_args(small_trace, out)]))
    return out


@pytest.fixture(scope="module")
def trace_packets(small_trace: Path) -> list[Packet]:
    return [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in iter_packets(small_trace)]


# ---------------------------------------------------------------- record: success

@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
@pytest.mark.parametrize("mb", ["nat", "monitor"])
def test_record_summary_names_every_number_and_file(small_trace: Path, tmp_path: Path, mb: str, scheduler: str,
                                                    trace_packets: list[Packet]) -> None:
    out = tmp_path / "run"
    result = cli(*record_args(small_trace, out, mb=mb, scheduler=scheduler))
    ok(result)
    man = manifest(out)
    stats = man["stats"]
    assert man["complete"] is True
    assert man["seed"] == SEED and man["scheduler"] == scheduler and man["middlebox"]["spec"] == mb
    assert f"seed {SEED}" in words(result.stderr)  # printed where a user sees it even with --json
    assert stats["packets_in"] == len(trace_packets)

    rows = {cells[0]: cells[1] for cells in table_rows(result.stdout) if len(cells) == 2}
    assert rows["seed"] == str(SEED)
    assert rows["run id"] == man["run_id"]
    assert rows["packets in"] == f"{stats['packets_in']:,}"
    assert rows["packets out"] == f"{stats['packets_out']:,}"
    assert rows["inputs dropped (no output)"] == f"{stats['inputs_without_output']:,}"
    assert rows["PALs"] == f"{stats['pals']:,}"
    assert rows["non-deterministic values"] == f"{stats['nondet_values']:,}"
    assert rows["durability events"] == f"{stats['events']:,}"
    assert stats["snapshots"] == (len(trace_packets) - 1) // SNAP
    assert rows["snapshots"].startswith(f"{stats['snapshots']} (pause median ")
    assert man["files"], "the manifest lists no files"
    for name, entry in man["files"].items():
        assert entry["bytes"] == (out / name).stat().st_size
        assert rows[name] == f"{entry['bytes']:,} B", name
    listed = {k for k in rows if k.endswith((".log", ".snap"))}
    assert listed == set(man["files"])
    clock = "simulated" if scheduler == "chaos" else "wall"
    delay = rows[f"release delay ({clock} clock)"]
    assert re.fullmatch(r"p50 \S+ \S+  p90 \S+ \S+  p99 \S+ \S+", delay), delay

    if scheduler == "chaos":  # one seed, one run: the --json twin has the same percentiles
        twin = cli(*record_args(small_trace, tmp_path / "twin", "--json", mb=mb, scheduler=scheduler))
        ok(twin)
        d = json.loads(twin.stdout)["release_delay_ns"]
        assert delay == f"p50 {human_ns(d['p50'])}  p90 {human_ns(d['p90'])}  p99 {human_ns(d['p99'])}"


@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
def test_record_json_matches_the_manifest(small_trace: Path, tmp_path: Path, scheduler: str) -> None:
    out = tmp_path / "run"
    result = cli(*record_args(small_trace, out, "--json", scheduler=scheduler, seed=11))
    ok(result)
    doc = json.loads(result.stdout)  # stdout is the JSON object and nothing else
    man = manifest(out)
    stats = man["stats"]
    for key in ("packets_in", "packets_out", "inputs_without_output", "pals", "nondet_values", "events"):
        assert doc[key] == stats[key], key
    assert len(doc["snapshots"]) == stats["snapshots"]
    assert [s["boundary"] for s in doc["snapshots"]] == [SNAP * (i + 1) for i in range(stats["snapshots"])]
    assert doc["files"] == {name: entry["bytes"] for name, entry in man["files"].items()}
    assert doc["seed"] == man["seed"] == 11
    assert doc["run_id"] == man["run_id"]
    assert doc["release_delay_clock"] == ("simulated" if scheduler == "chaos" else "wall")
    assert set(doc["release_delay_ns"]) == {"p50", "p90", "p99"}
    assert doc["release_delay_ns"]["p50"] <= doc["release_delay_ns"]["p90"] <= doc["release_delay_ns"]["p99"]
    assert "seed 11" in words(result.stderr)


def test_force_replaces_an_existing_run(small_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ok(cli(*record_args(small_trace, out, seed=1)))
    ok(cli(*record_args(small_trace, out, "--force", seed=2)))
    assert manifest(out)["seed"] == 2


# ---------------------------------------------------------------- record: bad input (exit 3)

def _truncated_copy(small_trace: Path, dest: Path) -> tuple[int, int]:
    """Cut a copy in the middle of its last packet's data; return (offset of the cut, packet number)."""
    records = pcap_records(small_trace)
    offset, caplen = records[-1]
    assert caplen >= 2, "the last packet is too short to cut in its middle"
    dest.write_bytes(small_trace.read_bytes()[:offset + 16 + caplen // 2])
    return offset + 16 + caplen // 2, len(records)


def _bad_input(kind: str, small_trace: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A bad trace of ``kind`` and the words its error sentence must contain besides its name."""
    path = tmp_path / f"{kind}.pcap"
    if kind == "text":
        path.write_text("hello, this is a text file and not a capture\n")
        return path, ["not a pcap"]
    if kind == "empty":
        path.write_bytes(b"")
        return path, ["empty"]
    if kind == "truncated":
        offset, number = _truncated_copy(small_trace, path)
        return path, [f"byte {offset}", f"packet {number}"]
    if kind == "linktype147":
        header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)
        path.write_bytes(header + struct.pack("<IIII", 1_700_000_000, 0, 4, 4) + b"abcd")
        return path, ["link type 147"]
    if kind == "missing":
        return path, ["no such file"]
    if kind == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
        return path, ["directory"]
    raise AssertionError(kind)


@pytest.mark.parametrize("scheduler", ["chaos", "threads"])
@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "linktype147", "missing", "directory"])
def test_bad_trace_is_one_sentence_and_leaves_no_run(small_trace: Path, tmp_path: Path, kind: str,
                                                     scheduler: str) -> None:
    trace, words = _bad_input(kind, small_trace, tmp_path)
    out = tmp_path / "run"
    # a capture cut short in its last packet is recorded up to the cut unless --strict
    result = cli(*record_args(trace, out, *(["--strict"] if kind == "truncated" else []), scheduler=scheduler))
    line = error_line(result, 3)
    assert str(trace) in line
    for word in words:
        assert word in line, (word, line)
    assert result.stdout == ""
    assert not out.exists(), f"record left {sorted(tree(out)) if out.is_dir() else out} behind"


def test_truncated_trace_names_offset_and_packet_exactly(small_trace: Path, tmp_path: Path) -> None:
    trace = tmp_path / "cut.pcap"
    offset, number = _truncated_copy(small_trace, trace)
    result = cli(*record_args(trace, tmp_path / "run"))
    ok(result)
    match = re.search(r"cut short at byte (\d+) inside packet (\d+);", words(result.stderr))
    assert match, result.stderr
    assert (int(match[1]), int(match[2])) == (offset, number)
    line = error_line(cli(*record_args(trace, tmp_path / "strict", "--strict")), 3)
    assert f"cut short at byte {offset} inside packet {number}; --strict refuses it" in line


@pytest.mark.parametrize("folder,name", [("caps[red]", "bad.pcap"), ("caps[", "b].pcap")])
def test_error_names_a_file_whose_name_has_brackets(tmp_path: Path, folder: str, name: str) -> None:
    (tmp_path / folder).mkdir()
    trace = tmp_path / folder / name
    trace.write_text("not a capture\n")
    line = error_line(cli(*record_args(trace, tmp_path / "run")), 3)
    assert str(trace) in line


# ---------------------------------------------------------------- record: usage errors (exit 2)

@pytest.mark.parametrize("extra,words", [
    (["--queues", "0"], ["--queues"]),
    (["--queues", "65"], ["--queues"]),
    (["--snapshot-every", "0"], ["--snapshot-every"]),
    (["--flush-every", "0"], ["--flush-every"]),
    (["--middlebox", "no-such-box"], ["no-such-box"]),
    (["--mb-opt", "timeout"], ["timeout", "key=value"]),
    (["--mb-opt", "=3"], ["key=value"]),
    (["--mb-opt", "no_such_key=1"], ["no_such_key"]),
    (["--mb-opt", "port_min=abc"], ["port_min", "abc"]),
])
def test_usage_errors_exit_2(small_trace: Path, tmp_path: Path, extra: list[str], words: list[str]) -> None:
    out = tmp_path / "run"
    args = ["record", small_trace, "--out", out, *extra]
    line = error_line(cli(*args), 2)
    for word in words:
        assert word in line, (word, line)
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--scheduler", "nonsense"], ["--queues", "many"], ["--no-such-option"]])
def test_option_parsing_errors_exit_2(small_trace: Path, tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "run"
    result = cli("record", small_trace, "--out", out, *extra)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    assert extra[0] in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_missing_out_is_a_usage_error(small_trace: Path) -> None:
    result = cli("record", small_trace)
    assert result.exit_code == 2 and "--out" in result.stderr


def test_existing_run_is_not_replaced_without_force(small_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ok(cli(*record_args(small_trace, out)))
    before = tree(out)
    line = error_line(cli(*record_args(small_trace, out, seed=SEED + 1)), 2)
    assert str(out) in line and "--force" in line
    assert tree(out) == before


def test_force_refuses_a_directory_that_is_not_a_run(small_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    (out / "sub" / "manifest.json").write_text('{"run_id": "not at the top"}\n')
    (out / "manifest.json").write_text('{"format_version": 1, "hello": "not a run"}\n')
    before = tree(out)
    line = error_line(cli(*record_args(small_trace, out, "--force")), 2)
    assert str(out) in line
    assert tree(out) == before


def test_force_refuses_a_file(small_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "a-file"
    out.write_text("mine\n")
    line = error_line(cli(*record_args(small_trace, out, "--force")), 2)
    assert str(out) in line
    assert out.read_text() == "mine\n"


# ---------------------------------------------------------------- user middleboxes

@pytest.fixture
def counter_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_mb" / "counter_mb.py"
    path.parent.mkdir()
    path.write_text(COUNTER_MB)
    return path


def _shared_value(run: Path, read_run, name: str):
    for var_name, _kind, _count, value in read_run(run).reference.state["shared"]:
        if var_name == name:
            return value
    raise AssertionError(f"no shared variable {name!r}")


def test_middlebox_from_a_file(small_trace: Path, tmp_path: Path, counter_file: Path, read_run,
                               trace_packets: list[Packet]) -> None:
    out = tmp_path / "run"
    ok(cli(*record_args(small_trace, out, "--mb-opt", "step=3", mb=f"{counter_file}:PacketCounter")))
    man = manifest(out)
    assert len(man["middlebox"].pop("source_sha256")) == 64  # what replays must run (trust.py)
    assert man["middlebox"] == {"spec": f"{counter_file}:PacketCounter", "options": ["step=3"]}
    assert man["stats"]["packets_out"] == len(trace_packets)
    assert _shared_value(out, read_run, "total") == 3 * len(trace_packets)


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package ``ftmbctl_cli_user_pkg`` on sys.path: ``counter`` (good) and ``boom`` (raises)."""
    pkg = tmp_path / "site" / "ftmbctl_cli_user_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "counter.py").write_text(COUNTER_MB)
    (pkg / "boom.py").write_text('raise ValueError("this module is broken")\n')
    monkeypatch.syspath_prepend(str(pkg.parent))
    yield "ftmbctl_cli_user_pkg"
    for name in [m for m in sys.modules if m.split(".")[0] == "ftmbctl_cli_user_pkg"]:
        del sys.modules[name]


def test_middlebox_from_a_module(small_trace: Path, tmp_path: Path, user_package: str, read_run,
                                 trace_packets: list[Packet]) -> None:
    out = tmp_path / "run"
    ok(cli(*record_args(small_trace, out, mb=f"{user_package}.counter:PacketCounter")))
    assert manifest(out)["middlebox"]["spec"] == f"{user_package}.counter:PacketCounter"
    assert _shared_value(out, read_run, "total") == len(trace_packets)


def test_middlebox_from_the_test_package(small_trace: Path, tmp_path: Path, trace_packets: list[Packet]) -> None:
    spec = importlib.util.find_spec("tests")
    if spec is None or not any(Path(p).resolve() == ROOT / "tests" for p in spec.submodule_search_locations or []):
        pytest.skip(f"`tests` is not importable as a package from {ROOT} on this sys.path")
    out = tmp_path / "run"
    ok(cli(*record_args(small_trace, out, mb="tests.middleboxes_for_tests:Mixed")))
    # Mixed emits 0, 1 or 2 outputs per packet, chosen by the packet's bytes.
    assert manifest(out)["stats"]["packets_out"] == sum(output_count(p) for p in trace_packets)


def test_middlebox_module_that_does_not_exist(small_trace: Path, tmp_path: Path, user_package: str) -> None:
    line = error_line(cli(*record_args(small_trace, tmp_path / "run", mb=f"{user_package}.nothing:Box")), 3)
    assert f"{user_package}.nothing" in line
    assert not (tmp_path / "run").exists()


def test_middlebox_module_that_raises_on_import(small_trace: Path, tmp_path: Path, user_package: str) -> None:
    line = error_line(cli(*record_args(small_trace, tmp_path / "run", mb=f"{user_package}.boom:Box")), 3)
    assert f"{user_package}.boom" in line


def test_middlebox_file_that_raises_on_import(small_trace: Path, tmp_path: Path) -> None:
    path = tmp_path / "broken_mb.py"
    path.write_text('raise RuntimeError("cannot start")\n')
    line = error_line(cli(*record_args(small_trace, tmp_path / "run", mb=f"{path}:Box")), 3)
    assert str(path) in line and "RuntimeError" in line and "cannot start" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("class_name", ["NotAMiddlebox", "NoSuchClass"])
def test_middlebox_class_that_is_not_a_middlebox(small_trace: Path, tmp_path: Path, counter_file: Path,
                                                 class_name: str) -> None:
    line = error_line(cli(*record_args(small_trace, tmp_path / "run", mb=f"{counter_file}:{class_name}")), 3)
    assert f"{counter_file}:{class_name}" in line and "Middlebox" in line
    assert not (tmp_path / "run").exists()


def test_middlebox_file_that_does_not_exist(small_trace: Path, tmp_path: Path) -> None:
    path = tmp_path / "nowhere.py"
    line = error_line(cli(*record_args(small_trace, tmp_path / "run", mb=f"{path}:Box")), 3)
    assert str(path) in line


def test_error_names_a_class_whose_name_is_an_emoji_code(small_trace: Path, tmp_path: Path,
                                                         counter_file: Path) -> None:
    result = cli(*record_args(small_trace, tmp_path / "run", mb=f"{counter_file}:Fire"))
    line = error_line(result, 3)
    assert f"{counter_file}:Fire" in line
    assert f"{counter_file}:Fire" in words(result.stderr.split("error:")[0])  # the "recording ..." line too


# ---------------------------------------------------------------- inspect

def test_inspect_run_lists_every_log_and_snapshot(run_dir: Path, read_run) -> None:
    result = cli("inspect", run_dir)
    ok(result)
    run = read_run(run_dir)
    rows = {cells[0]: cells[1:] for cells in table_rows(result.stdout)}
    logs = ["input.log", *(f"pal-{q}.log" for q in range(QUEUES)), "output.log", "timeline.log"]
    for name in logs:
        log = run.logs[name[:-4]]
        records = sum(c.count for c in log.chunks)
        assert rows[name] == [f"{log.size:,}", str(len(log.chunks)), f"{records:,}", "0"], name
    assert len(run.snapshots) >= 2
    for number, snap in run.snapshots.items():
        name = f"snapshots/snap-{number:06d}.snap"
        assert rows[name] == [str(number), f"{snap.boundary:,}", f"{(run_dir / name).stat().st_size:,}"]
    assert "complete" in result.stdout and f"seed {SEED}" in result.stdout
    for var_id, name, _kind in run.manifest["variables"]:
        assert f"{var_id}:{name}" in result.stdout


def test_inspect_pal_log_lists_chunks_at_their_offsets_and_named_pals(run_dir: Path, read_run) -> None:
    result = cli("inspect", run_dir, "pal-0.log")
    ok(result)
    run = read_run(run_dir)
    names = {v[0]: v[1] for v in run.manifest["variables"]}
    offsets = [int(m) for m in re.findall(r"^chunk @(\d+) ", result.stdout, re.M)]
    assert offsets == [c.offset for c in run.logs["pal-0"].chunks]
    pal_lines = re.findall(r"^  PAL pkt (\d+)  var (\d+) (\S+)  seq (\d+)  (unchanged|digest [0-9a-f]{4})$",
                           result.stdout, re.M)
    expected = [(r.packet, r.var, names[r.var], r.seq, "unchanged" if r.digest is None else f"digest {r.digest:04x}")
                for r in run.pals(0)]
    assert [(int(p), int(v), n, int(s), d) for p, v, n, s, d in pal_lines] == expected
    nd_lines = re.findall(r"^  ND  pkt \d+  (\w+) = ", result.stdout, re.M)
    assert len(pal_lines) + len(nd_lines) == len(run.queue_records[0])


def test_inspect_timeline_json_counts_the_manifest_events(run_dir: Path, read_run) -> None:
    result = cli("inspect", run_dir, "timeline.log", "--json")
    ok(result)
    doc = json.loads(result.stdout)
    events = manifest(run_dir)["stats"]["events"]
    assert doc["records"] == events
    listed = [row for chunk in doc["chunks"] for row in chunk["records"]]
    assert len(listed) == events
    assert [row["event"] for row in listed] == [ev.index for ev in read_run(run_dir).events]


def test_inspect_output_log_shows_dependency_vectors(run_dir: Path, read_run) -> None:
    result = cli("inspect", run_dir, "output.log")
    ok(result)
    lines = re.findall(r"^  out \((\d+),(\d+)\)  deps \[([\d, ]*)\]", result.stdout, re.M)
    outputs = read_run(run_dir).outputs
    assert [(int(i), int(k), [int(d) for d in deps.split(", ")]) for i, k, deps in lines] == \
           [(o.input_id, o.index, list(o.deps)) for o in outputs]
    assert all(len(o.deps) == QUEUES for o in outputs)


@pytest.mark.parametrize("name", ["snapshots/snap-000001.snap", "reference.snap"])
def test_inspect_snapshot_prints_variables(run_dir: Path, read_run, name: str) -> None:
    result = cli("inspect", run_dir, name)
    ok(result)
    run = read_run(run_dir)
    snap = run.reference if name == "reference.snap" else run.snapshots[1]
    assert result.stdout.startswith(f"{name}: snapshot ")
    assert f"boundary {snap.boundary} packets" in result.stdout
    shown = re.findall(r"^  (\S+) \((\w+), (\d+) accesses\) = ", result.stdout, re.M)
    assert [(n, k, int(c)) for n, k, c in shown] == [(n, k, c) for n, k, c, _v in snap.state["shared"]]
    assert [v[1] for v in run.manifest["variables"]] == [n for n, _k, _c in shown]


def test_inspect_manifest_prints_it(run_dir: Path) -> None:
    result = cli("inspect", run_dir, "manifest.json")
    ok(result)
    assert json.loads(result.stdout) == manifest(run_dir)


def test_inspect_limit_caps_records_but_lists_every_chunk(run_dir: Path, read_run) -> None:
    result = cli("inspect", run_dir, "pal-0.log", "--limit", "3")
    ok(result)
    record_lines = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(record_lines) == 3
    assert len(re.findall(r"^chunk @", result.stdout, re.M)) == len(read_run(run_dir).logs["pal-0"].chunks)
    as_json = cli("inspect", run_dir, "output.log", "--limit", "3", "--json")
    ok(as_json)
    assert sum(len(c["records"]) for c in json.loads(as_json.stdout)["chunks"]) == 3


@pytest.mark.parametrize("name", ["../manifest.json", "snapshots/../../etc/passwd", "/etc/passwd"])
def test_inspect_refuses_names_outside_the_run(run_dir: Path, name: str) -> None:
    assert name in error_line(cli("inspect", run_dir, name), 2)


@pytest.mark.parametrize("name", ["notes.txt", "snapshots"])
def test_inspect_refuses_unknown_files(run_dir: Path, name: str) -> None:
    assert name in error_line(cli("inspect", run_dir, name), 2)


def test_inspect_missing_run_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    assert str(missing) in error_line(cli("inspect", missing), 3)
    assert str(missing) in error_line(cli("inspect", missing, "pal-0.log"), 3)


def test_inspect_missing_log_of_a_run(run_dir: Path) -> None:
    assert "pal-7.log" in error_line(cli("inspect", run_dir, "pal-7.log"), 3)


# ---------------------------------------------------------------- export

@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "outputs.pcap"
    result = CliRunner(env=ENV).invoke(app, ["export", str(run_dir), "--outputs", str(dest)])
    ok(result)
    count = manifest(run_dir)["stats"]["packets_out"]
    assert squeezed(result.stdout) == squeezed(f"wrote {count:,} released outputs to {dest} (pcap)")
    return dest


def test_export_writes_the_released_outputs_in_order(run_dir: Path, exported: Path, read_run) -> None:
    assert exported.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")  # classic pcap
    packets = list(iter_packets(exported))
    outputs = read_run(run_dir).outputs
    assert len(packets) == len(outputs) == manifest(run_dir)["stats"]["packets_out"] > 0
    assert [p.data for p in packets] == [o.data for o in outputs]
    assert [p.linktype for p in packets] == [o.linktype for o in outputs]
    assert [p.ts_ns for p in packets] == [o.release_ns for o in outputs]


def test_export_reads_back_with_tcpdump(exported: Path) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed (apt-get install tcpdump); CI installs it")
    proc = subprocess.run([tcpdump, "-nn", "-r", str(exported)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(list(iter_packets(exported)))


def test_export_of_a_missing_run(tmp_path: Path) -> None:
    dest = tmp_path / "out.pcap"
    assert str(tmp_path / "nope") in error_line(cli("export", tmp_path / "nope", "--outputs", dest), 3)
    assert not dest.exists()


def test_export_to_an_unwritable_place(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "no-such-dir" / "out.pcap"
    assert str(dest) in error_line(cli("export", run_dir, "--outputs", dest), 2)


# ---------------------------------------------------------------- crash-replay --chain

def _chain_points(run: Path, *chain: str) -> list[int]:
    result = cli("crash-replay", run, "--at", 1, "--jobs", 1, "--json", *chain)
    ok(result)
    return sorted(p["event"] for p in json.loads(result.stdout)["crash_points"] if p.get("chain"))


def test_crash_replay_chain_all_none_or_a_seeded_sample(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    every = _chain_points(run)  # default: every snapshot and the end of the run
    assert len(every) >= 3 and _chain_points(run, "--chain", "all") == every
    assert _chain_points(run, "--chain", "none") == []
    one = _chain_points(run, "--chain", "1")
    assert len(one) == 2 and set(one) <= set(every) and one[-1] == every[-1]  # the end is always kept
    assert _chain_points(run, "--chain", "1") == one  # drawn with --seed: the same again
    assert _chain_points(run, "--chain", "0") == [every[-1]]
    assert _chain_points(run, "--chain", "1000") == every


def test_crash_replay_chain_refuses_what_is_not_all_none_or_a_count(run_dir: Path) -> None:
    line = error_line(cli("crash-replay", run_dir, "--at", 1, "--chain", "some"), 2)
    assert line == "error: --chain takes all, none or a number of snapshots, got 'some'"


# ---------------------------------------------------------------- help, version, middleboxes

HELP_OPTIONS = {
    "record": ["--middlebox", "-m", "--mb-opt", "--queues", "-q", "--snapshot-every", "--flush-every", "--scheduler",
               "threads", "chaos", "--seed", "--out", "-o", "--force", "--json"],
    "inspect": ["--limit", "--json"],
    "export": ["--outputs"],
    "middleboxes": [],
    "demo": ["--out", "--trace", "--seed"],
    "crash-replay": ["--at", "--every", "--random", "--seed", "--all", "--torn", "--keep", "--chain", "--jobs",
                     "--middlebox", "-m", "--point-timeout", "--json"],
    "verify": ["--json", "--junit", "--jobs", "--middlebox", "-m"],
    "recover": ["--out", "--trace", "--force", "--middlebox", "-m"],
}


def test_top_level_help_lists_every_command() -> None:
    result = cli("--help")
    ok(result)
    assert "--version" in result.stdout and "--help" in result.stdout
    for command in HELP_OPTIONS:
        assert re.search(rf"^  {re.escape(command)} ", result.stdout, re.MULTILINE), command


def test_no_arguments_shows_help() -> None:
    result = cli()
    assert result.exit_code == 2  # no_args_is_help: the usage error of click >= 8.2
    assert isinstance(result.exception, SystemExit)
    assert "record" in result.output and "Usage" in result.output


@pytest.mark.parametrize("command", sorted(HELP_OPTIONS))
def test_command_help_mentions_its_options(command: str) -> None:
    result = cli(command, "--help")
    ok(result)
    words = set(re.findall(r"(?<![\w-])(-{1,2}[a-z][\w-]*|threads|chaos)", result.stdout))
    for option in [*HELP_OPTIONS[command], "--help"]:
        assert option in words, (command, option)
    assert "Traceback" not in result.output


def test_version() -> None:
    result = cli("--version")
    ok(result)
    assert result.stdout == f"ftmbctl {__version__}\n"
    assert __version__ == importlib.metadata.version("ftmbctl")


def test_python_dash_m_version(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ftmbctl", "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"ftmbctl {__version__}\n"


def test_middleboxes_lists_builtins_with_their_options() -> None:
    from ftmbctl.middlebox import BUILTINS, resolve_middlebox

    result = cli("middleboxes")
    ok(result)
    rows = table_rows(result.stdout)
    assert {len(cells) for cells in rows} == {3}
    by_box: dict[str, list[list[str]]] = {}
    for cells in rows:  # a wrapped cell continues on the next line with an empty name cell
        if cells[0]:
            by_box[cells[0]] = []
        by_box[list(by_box)[-1]].append(cells)
    assert list(by_box) == sorted(BUILTINS)
    for cls in (resolve_middlebox(name) for name in sorted(BUILTINS)):
        summary, options = (squeezed("".join(c[i] for c in by_box[cls.name])) for i in (1, 2))
        assert summary == squeezed(cls.summary)
        for key, option in cls.options.items():
            assert squeezed(f"{key} (default {option.default!r}): {option.help}") in options, key


def test_force_over_a_run_keeps_the_old_run_when_the_new_trace_is_unreadable(small_trace, tmp_path):
    """--force replaces a run only once the new one is complete: a trace that turns out truncated
    part-way leaves the old run exactly as it was."""
    out = tmp_path / "run"
    first = CliRunner(env=ENV).invoke(app, ["record", str(small_trace), "--out", str(out), "--queues", "2"])
    assert first.exit_code == 0, first.output
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    data = small_trace.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 10])
    # cut short in its last packet: recorded up to the cut, unless --strict refuses it at the end
    result = CliRunner(env=ENV).invoke(app, ["record", str(cut), "--out", str(out), "--force", "--strict"])
    assert result.exit_code == 3, result.output
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
