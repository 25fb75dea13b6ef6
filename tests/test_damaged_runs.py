"""Damaged run directories and crash images (DESIGN §5-6, §10; CONVENTIONS 3, 5, 9).

One small recorded run (the first ``PACKETS`` packets of traces/small.pcap through the NAT, 2
queues, chaos, a snapshot every 40 packets, a flush every 8 records: snapshots 1 and 2) and a
second one with another seed (another run id) to swap files from. Each file is damaged the ways
a disk or a person damages files: cut at every chunk boundary and at seeded random offsets,
seeded random bit flips, deleted, swapped with the same file of the other run. Then:

- a **run directory** goes through ``crash-replay`` (and ``verify``): every damage is a damaged
  run, exit 3, one sentence naming the file and, for a log, the offset of the damaged chunk;
- a **crash image** kept by ``crash-replay --keep`` goes through ``ftmbctl recover IMAGE --out
  DIR``: a torn tail recovers; a bad chunk that recovery reads is exit 3 naming file and offset;
  a bad chunk it does not need (before the snapshot it restores) changes nothing; a damaged
  latest snapshot is skipped with a warning and the one before is used, exactly as if the
  damaged file were not there.

Never a traceback, never a hang (every command runs under a SIGALRM time limit), never a
"consistent" or a successful recovery that is wrong. Each check compares with something the
engine does not compute: the chunk layout of the pristine file (read before the damage), the
snapshot's recorded log positions, or the recovery of an undamaged image.

Hypothesis drives the readers directly with arbitrary bytes and arbitrary JSON: a reader either
returns or raises DamagedRun, nothing else. All randomness is seeded.
"""

from __future__ import annotations

import contextlib
import itertools
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import lz4.block
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftmbctl import codec
from ftmbctl import records as rec
from ftmbctl.cli import app
from ftmbctl.errors import DamagedRun
from ftmbctl.manifest import read_manifest
from ftmbctl.queuelog import QueueDecoder, QueueEncoder
from ftmbctl.record import RecordConfig, record
from ftmbctl.rundir import RunDir, log_kind, open_log
from ftmbctl.snapshot import HEADER as SNAPSHOT_HEADER
from ftmbctl.snapshot import decode_snapshot, read_snapshot
from ftmbctl.store import (CHUNK_HEADER, FILE_HEADER, KIND_INPUT, KIND_OUTPUT, KIND_QUEUE, KIND_TIMELINE,
                           pack_chunk, pack_file_header)

PACKETS, QUEUES, SNAPSHOT_EVERY, FLUSH_EVERY = 120, 2, 40, 8
SEED, OTHER_SEED = 1, 2
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
TIME_LIMIT = 20  # seconds per command; each takes well under one
LOGS = ["input.log", "pal-0.log", "pal-1.log", "output.log"]
SNAPSHOTS = ["snapshots/snap-000001.snap", "snapshots/snap-000002.snap"]
LATEST, OLDER = SNAPSHOTS[1], SNAPSHOTS[0]
RUN_FILES = LOGS + ["timeline.log", "reference.snap"] + SNAPSHOTS + ["manifest.json"]
IMAGE_FILES = LOGS + SNAPSHOTS + ["manifest.json"]
DAMAGES = ["truncate", "flip", "delete", "swap"]
RANDOM_CUTS, RANDOM_FLIPS = 4, 8  # seeded random offsets per file, on top of every chunk boundary
DAMAGED_AT = 7  # the crash point asked of a damaged run (its results would replace the fixture's, at 5)


# ---------------------------------------------------------------- running commands

class Hung(Exception):
    """A command did not finish within its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hung in the main thread after ``seconds`` (a blocked open() or lock wait included)."""
    def on_alarm(_signum: int, _frame: Any) -> None:
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    code: int | str  # the exit code, or "traceback"/"hung" when an exception escaped
    error: str  # the one "error:" line ('' if none; several joined if there were several)
    errors: int  # number of "error:" lines
    stdout: str
    stderr: str

    @property
    def flat(self) -> str:
        """stdout without whitespace and table rules, so wrapped table cells read as one string."""
        return re.sub(r"[\s│┃|]+", "", self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code}: {self.error or self.stdout[-300:]!r}"


def run_cli(*args: Any, limit: float = TIME_LIMIT) -> Outcome:
    try:
        with time_limit(limit):
            result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    except Hung as exc:  # raised outside the runner's own exception handling
        return Outcome("hung", str(exc), 0, "", "")
    exc = result.exception
    if isinstance(exc, Hung):
        return Outcome("hung", str(exc), 0, result.stdout, result.stderr)
    if exc is not None and not isinstance(exc, SystemExit):
        return Outcome("traceback", f"{type(exc).__name__}: {exc}", 0, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    code = result.exit_code
    if "Traceback" in result.output:
        code = "traceback"
    return Outcome(code, " / ".join(errors), len(errors), result.stdout, result.stderr)


def error_problem(out: Outcome, names: list[str], offsets: list[int] | None = None) -> str | None:
    """Why ``out`` is not exit 3 with one sentence naming one of ``names`` (and, when given, one
    of ``offsets`` as "byte N" or "N bytes"); None if it is."""
    if out.code != 3 or out.errors != 1:
        return f"expected exit 3 with one error line, got {out}"
    if not any(name in out.error for name in names):
        return f"error does not name {names}: {out.error!r}"
    if offsets is not None and not any(f"byte {n}" in out.error or f"{n} bytes" in out.error for n in offsets):
        return f"error does not name offset {offsets}: {out.error!r}"
    if "consistent" in out.stdout.lower():
        return f"a verdict was printed next to the error: {out.stdout[-200:]!r}"
    return None


# ---------------------------------------------------------------- the recorded runs

def chunk_starts(path: Path) -> list[int]:
    """Offsets of every chunk of an intact log (read before any damage)."""
    kind = log_kind(path.name)
    assert kind is not None, path
    return [chunk.offset for chunk in open_log(path, kind).chunks()]


@dataclass
class World:
    trace: Path
    run: Path  # the run directory every run-directory case starts from (crash results included)
    other: Path  # the same recording with another seed: another run id
    image: Path  # a crash image of ``run`` kept by crash-replay --keep, after snapshot 2
    other_image: Path  # a crash image of ``other``, also after its snapshot 2
    event: int  # the crash point of the images
    starts: dict[str, int]  # where recovery starts reading each log of the image (snapshot 2's positions)
    pristine: Path  # the image recovered, undamaged
    without_latest: Path  # the image recovered with its latest snapshot file removed


def _pick_image_event(run: RunDir) -> tuple[int, dict[str, int]]:
    """A crash point after snapshot 2 at which every log has chunks before the snapshot's
    position (recovery never reads them) and at least two after it, and outputs were released
    after the snapshot (recovery must regenerate them)."""
    events = run.events()
    snap = read_snapshot(run.path / LATEST).state
    starts = {"input.log": snap["input_bytes"], "output.log": snap["outputs_bytes"],
              **{f"pal-{q}.log": snap["queue_bytes"][q] for q in range(QUEUES)}}
    layout = {name: chunk_starts(run.path / name) for name in LOGS}
    durable2 = next(e.index for e in events if e.kind == rec.EV_SNAPSHOT_DURABLE and e.arg == 2)
    good = []
    for ev in events[durable2 + 1:-1]:
        lengths = {"input.log": ev.input_len, "output.log": ev.output_len,
                   **{f"pal-{q}.log": ev.queue_len[q] for q in range(QUEUES)}}
        after = {n: sum(starts[n] <= o < lengths[n] for o in layout[n]) for n in LOGS}
        before = {n: sum(o < starts[n] for o in layout[n]) for n in LOGS}
        if min(after.values()) >= 2 and min(before.values()) >= 1 and ev.output_records > snap["outputs_released"]:
            good.append(ev.index)
    assert good, "no crash point after snapshot 2 with two chunks of every log after it"
    return good[len(good) // 2], starts


@pytest.fixture(scope="module")
def world(small_trace_head, tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("damaged-runs")
    trace = small_trace_head(PACKETS)
    runs = {}
    for seed in (SEED, OTHER_SEED):
        out = base / f"run-seed{seed}"
        record(RecordConfig(trace=trace, out=out, middlebox="nat", queues=QUEUES, snapshot_every=SNAPSHOT_EVERY,
                            flush_every=FLUSH_EVERY, scheduler="chaos", seed=seed))
        runs[seed] = out
    run, other = runs[SEED], runs[OTHER_SEED]
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == sorted(RUN_FILES)
    event, starts = _pick_image_event(RunDir(run))
    images = {}
    # kept images (made in copies, so the run itself holds no crash/ yet); the other run's image is
    # taken just before its end, after its snapshot 2 too: it holds the same files
    at = {SEED: event, OTHER_SEED: len(RunDir(other).events()) - 2}
    for seed, source in runs.items():
        scratch = base / f"sweep-{seed}"
        shutil.copytree(source, scratch)
        ok = run_cli("crash-replay", scratch, "--at", at[seed], "--keep", base / f"kept-{seed}", "--jobs", 1)
        assert ok.code == 0, ok
        images[seed] = base / f"kept-{seed}" / f"crash-{at[seed]:06d}-clean"
    assert sorted(p.name for p in (images[OTHER_SEED] / "snapshots").iterdir()) == [Path(n).name for n in SNAPSHOTS]
    # crash results in the run itself, so that verify reports them (after checking the run)
    ok = run_cli("crash-replay", run, "--at", 5, "--jobs", 1)
    assert ok.code == 0, ok
    pristine = base / "pristine"
    ok = run_cli("recover", images[SEED], "--out", pristine)
    assert ok.code == 0, ok
    assert RunDir(pristine).manifest["recovered_from"]["snapshot"] == 2
    trimmed = base / "image-without-latest"
    shutil.copytree(images[SEED], trimmed)
    (trimmed / LATEST).unlink()
    without_latest = base / "pristine-without-latest"
    ok = run_cli("recover", trimmed, "--out", without_latest)
    assert ok.code == 0 and RunDir(without_latest).manifest["recovered_from"]["snapshot"] == 1, ok
    return World(trace, run, other, images[SEED], images[OTHER_SEED], event, starts, pristine, without_latest)


@pytest.fixture
def scratch(tmp_path: Path) -> Callable[[Path], Path]:
    """``scratch(src)``: a fresh copy of a run directory or image to damage (one per case)."""
    counter = itertools.count()

    def copy_of(src: Path) -> Path:
        dest = tmp_path / f"case-{next(counter)}"
        shutil.copytree(src, dest)
        return dest

    return copy_of


# ---------------------------------------------------------------- the damage itself

def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def flip(path: Path, pos: int, mask: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= mask
    path.write_bytes(bytes(data))


def random_cuts(rng: random.Random, low: int, high: int, n: int) -> list[int]:
    return sorted({rng.randrange(low, high) for _ in range(n)}) if high > low else []


def random_flips(rng: random.Random, size: int, n: int) -> list[tuple[int, int]]:
    return [(rng.randrange(size), 1 << rng.randrange(8)) for _ in range(n)]


def case_rng(*parts: object) -> random.Random:
    return random.Random(":".join(map(str, parts)))  # one fixed seed per (file, damage)


def chunk_of(starts: list[int], pos: int) -> int:
    """Offset of the chunk holding byte ``pos`` (pos past the file header)."""
    return max(o for o in starts if o <= pos)


@dataclass
class Recovered:
    outputs: list[rec.OutputRecord]
    state: dict[str, Any]
    snapshot: int
    durable_inputs: int


def recovered(out: Path) -> Recovered:
    run = RunDir(out)
    origin = run.manifest["recovered_from"]
    return Recovered(list(run.outputs()), run.reference().state, origin["snapshot"], origin["durable_inputs"])


def recovery_problem(out: Outcome, recovered_dir: Path, like: Path | None = None) -> str | None:
    """Why ``out`` is not a successful recovery that regenerated every output released after its
    snapshot (and, with ``like``, recovered exactly what ``like`` did); None if it is."""
    if out.code != 0:
        return f"expected a recovery, got {out}"
    found = re.search(r"releasedbeforethecrash([\d,]+)\(([\d,]+)regenerated", out.flat)
    if not found or found.group(1) != found.group(2):
        return f"not every released output was regenerated: {found and found.groups()}"
    if "outputmismatches0" not in out.flat or "divergencesnone" not in out.flat:
        return "the recovery reports mismatches or divergences"
    if like is not None:
        mine, theirs = recovered(recovered_dir), recovered(like)
        if mine != theirs:
            return (f"recovered differently from the reference recovery (snapshot {mine.snapshot} vs "
                    f"{theirs.snapshot}, durable inputs {mine.durable_inputs} vs {theirs.durable_inputs}, "
                    f"{len(mine.outputs)} vs {len(theirs.outputs)} outputs)")
    return None


def report(failures: list[str], cases: int) -> None:
    assert cases > 0
    assert not failures, f"{len(failures)} of {cases} cases went wrong:\n" + "\n".join(failures[:12])


# ---------------------------------------------------------------- run directories: every file, every damage

def run_dir_cases(world: World, name: str, damage: str) -> list[tuple[str, Callable[[Path], None], list[int] | None]]:
    """(label, damage to apply to a copy of the run, offsets the error must name or None)."""
    path = world.run / name
    size = path.stat().st_size
    rng = case_rng("run", name, damage)
    is_log = log_kind(Path(name).name) is not None
    starts = chunk_starts(path) if is_log else []
    cases: list[tuple[str, Callable[[Path], None], list[int] | None]] = []
    if damage == "truncate":
        cuts = set(random_cuts(rng, 0, size, RANDOM_CUTS)) | {0, 1}
        if is_log:
            cuts |= set(starts) | {FILE_HEADER.size - 1}
        elif name.endswith(".snap"):
            cuts |= {SNAPSHOT_HEADER.size - 1, SNAPSHOT_HEADER.size, size - 1}
        for cut in sorted(cuts):
            if not is_log:
                offsets = [cut]
            elif cut < FILE_HEADER.size or cut in starts:
                offsets = [cut]  # "N bytes, shorter than the header" / "N bytes, the manifest says M"
            else:
                offsets = [chunk_of(starts, cut)]  # "ends inside the chunk at byte C"
            cases.append((f"cut at {cut}", lambda r, c=cut: truncate(r / name, c), offsets))
    elif damage == "flip":
        for pos, mask in random_flips(rng, size, RANDOM_FLIPS):
            offsets = None
            if is_log:
                offsets = [0] if pos < FILE_HEADER.size else [chunk_of(starts, pos)]
            cases.append((f"flip {mask:#04x} at {pos}", lambda r, p=pos, m=mask: flip(r / name, p, m), offsets))
    elif damage == "delete":
        cases.append(("deleted", lambda r: (r / name).unlink(), None))
    else:
        cases.append(("swapped", lambda r: shutil.copyfile(world.other / name, r / name), None))
    return cases


def _magic(out: Outcome) -> bool:
    return "not an ftmbctl log" in out.error  # a flip in bytes 0-3: the magic, named as such


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", [n for n in RUN_FILES if n != "manifest.json"])
def test_damaged_file_of_a_run_directory_is_reported_with_file_and_offset(world: World, scratch, name: str,
                                                                           damage: str) -> None:
    failures, cases = [], run_dir_cases(world, name, damage)
    for label, apply, offsets in cases:
        run = scratch(world.run)
        apply(run)
        out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
        problem = error_problem(out, [Path(name).name], None if _magic(out) else offsets)
        if problem is None and damage in ("delete", "swap"):  # verify re-checks the run before reporting
            problem = error_problem(run_cli("verify", run, "--json"), [Path(name).name])
        results = json.loads((run / "crash" / "results.json").read_text())
        if problem is None and results["selection"]["at"] != [5]:  # still the fixture's sweep
            problem = "the damaged run was swept (its results replaced the earlier ones)"
        if problem:
            failures.append(f"{name} {label}: {problem}")
        shutil.rmtree(run)
    report(failures, len(cases))


# ---------------------------------------------------------------- run directories: the manifest

@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_manifest_of_a_run_directory_is_reported_or_harmless(world: World, scratch, damage: str) -> None:
    """The manifest has no checksum of its own. Whatever happens to it, crash-replay either
    reports a damaged run (exit 3, one sentence naming the manifest or a file it lists) or, when
    the document still reads the same, runs as before. Never a traceback, never exit 1 (an
    inconsistency of the middlebox) for a damaged manifest."""
    path = world.run / "manifest.json"
    data = path.read_bytes()
    rng = case_rng("run", "manifest.json", damage)
    variants: list[tuple[str, bytes | None]] = []
    if damage == "truncate":
        variants = [(f"cut at {c}", data[:c]) for c in sorted({0, 1, len(data) - 1,
                                                               *random_cuts(rng, 0, len(data), RANDOM_CUTS)})]
    elif damage == "flip":
        for pos, mask in random_flips(rng, len(data), RANDOM_FLIPS * 3):
            changed = bytearray(data)
            changed[pos] ^= mask
            variants.append((f"flip {mask:#04x} at {pos} ({data[max(pos - 12, 0):pos + 4]!r})", bytes(changed)))
    elif damage == "delete":
        variants = [("deleted", None)]
    else:
        variants = [("swapped", (world.other / "manifest.json").read_bytes())]
    failures = []
    for label, content in variants:
        run = scratch(world.run)
        if content is None:
            (run / "manifest.json").unlink()
        else:
            (run / "manifest.json").write_bytes(content)
        out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
        if out.code == 0:
            # the document reads differently (or not at all differently) but the files it
            # describes are intact: the verdict about them must be the intact run's, consistent
            if json.loads((run / "crash" / "results.json").read_text())["consistent"] is not True:
                failures.append(f"{label}: exit 0 without a consistent verdict")
        else:  # naming the manifest, or a path it lists (inside the run)
            problem = error_problem(out, ["manifest.json", str(run)])
            if problem:
                failures.append(f"{label}: {problem}")
        shutil.rmtree(run)
    report(failures, len(variants))


def _drop(doc: dict[str, Any], key: str) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        doc = doc[part]
    del doc[parts[-1]]


MANIFEST_KEYS = {
    "run_id": None, "queues": None, "files": None, "complete": None, "format_version": None,
    "variables": None, "scheduler": None, "mode": None, "stats": None, "ftmbctl_version": None,
    "trace": None, "trace.path": None, "trace.sha256": None,
    "middlebox": None, "middlebox.spec": None, "middlebox.options": None,
    "snapshot_every": None, "flush_every": None, "seed": None,
}


@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=bug)) if bug else key
    for key, bug in MANIFEST_KEYS.items()])
def test_manifest_without_a_key_is_a_damaged_run_or_harmless(world: World, scratch, key: str) -> None:
    run = scratch(world.run)
    doc = json.loads((run / "manifest.json").read_text())
    _drop(doc, key)
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
    if out.code == 0:
        assert json.loads((run / "crash" / "results.json").read_text())["consistent"] is True
    else:
        assert error_problem(out, ["manifest.json", str(run)]) is None, out


SWALLOWED = ("verify._run_point catches every FtmbError of a crash point (BadInput and DamagedRun "
             "included) and turns it into an 'inconsistent' verdict, so a damaged run or bad input "
             "exits 1, as if the middlebox had broken an invariant, instead of 3")


def test_manifest_with_malformed_variables_is_a_damaged_run(world: World, scratch) -> None:
    run = scratch(world.run)
    doc = json.loads((run / "manifest.json").read_text())
    doc["variables"] = [1, 2]
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
    if out.code != 0:  # the names only label messages: running without them is fine too
        assert error_problem(out, ["manifest.json"]) is None, out


def test_manifest_naming_an_unknown_middlebox_is_bad_input(world: World, scratch) -> None:
    run = scratch(world.run)
    doc = json.loads((run / "manifest.json").read_text())
    doc["middlebox"]["spec"] = "nau"  # one bit away from "nat"
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
    assert error_problem(out, ["nau"]) is None, out


def test_manifest_claiming_more_queues_than_the_run_has_is_damaged(world: World, scratch) -> None:
    run = scratch(world.run)
    doc = json.loads((run / "manifest.json").read_text())
    doc["queues"] = QUEUES + 1  # "2" -> "3" is one bit
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
    assert error_problem(out, ["pal-2.log", "manifest.json"]) is None, out


def test_manifest_with_another_snapshot_interval_is_damaged(world: World, scratch) -> None:
    run = scratch(world.run)
    doc = json.loads((run / "manifest.json").read_text())
    doc["snapshot_every"] = 50  # "40" -> "50" is one bit
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
    assert error_problem(out, ["manifest.json", "snap-000001.snap"]) is None, out


@pytest.mark.parametrize("name", ["pal-0.log", "output.log"])
def test_damage_the_manifest_cannot_see_is_a_damaged_run_not_an_inconsistency(world: World, scratch,
                                                                             name: str) -> None:
    run = scratch(world.run)
    starts = chunk_starts(run / name)
    target = starts[len(starts) // 2]
    flip(run / name, target + CHUNK_HEADER.size + 1, 0x10)
    doc = json.loads((run / "manifest.json").read_text())
    doc["files"][name]["sha256"] = None
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", 0, "--jobs", 1)  # the snapshot chain reads every chunk
    assert out.code != 0, "a run with a damaged chunk was found consistent"
    assert error_problem(out, [name], [target]) is None, out


@pytest.mark.parametrize("damage", ["half-cut", "zero-tail"])
def test_queue_log_that_disagrees_with_the_timeline_is_never_consistent(world: World, scratch, damage: str) -> None:
    run = scratch(world.run)
    path = run / "pal-0.log"
    starts = chunk_starts(path)
    data = path.read_bytes()
    new = data[:starts[len(starts) // 2]] if damage == "half-cut" else data + bytes(64)
    path.write_bytes(new)
    doc = json.loads((run / "manifest.json").read_text())
    doc["files"]["pal-0.log"] = {"bytes": len(new), "sha256": None}
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", 0, "--jobs", 1)
    assert out.code != 0, "a run whose queue log disagrees with its timeline was found consistent"
    assert error_problem(out, ["pal-0.log", "timeline.log"]) is None, out


# ---------------------------------------------------------------- crash images: logs

def _torn_cases(world: World, name: str) -> list[tuple[str, int]]:
    path = world.image / name
    size = path.stat().st_size
    starts = chunk_starts(path)
    rng = case_rng("image-torn", name)
    last = starts[-1]
    cuts = {last + 1, last + CHUNK_HEADER.size - 1, last + CHUNK_HEADER.size, size - 1,
            *random_cuts(rng, last + 1, size, RANDOM_CUTS)}
    return [(f"cut at {c} (inside the last chunk, at {last})", c) for c in sorted(cuts)]


@pytest.mark.parametrize("name", LOGS)
def test_image_log_with_a_torn_tail_recovers(world: World, scratch, name: str) -> None:
    """The writer died in the middle of the last chunk: the chunk is dropped, recovery succeeds,
    and it says how many bytes it dropped (input and queue logs; the output log is the OL's own,
    read only up to what was released)."""
    starts = chunk_starts(world.image / name)
    failures, cases = [], _torn_cases(world, name)
    for label, cut in cases:
        image = scratch(world.image)
        truncate(image / name, cut)
        out_dir = image.with_name(image.name + "-recovered")
        out = run_cli("recover", image, "--out", out_dir)
        problem = recovery_problem(out, out_dir)
        torn = cut - chunk_of(starts, cut)
        if problem is None and name != "output.log" and f"{name}:{torn}B" not in out.flat:
            problem = f"the torn tail of {torn} bytes is not reported"
        if problem:
            failures.append(f"{label}: {problem}")
        shutil.rmtree(image)
    report(failures, len(cases))


@pytest.mark.parametrize("name", LOGS)
def test_image_log_cut_after_the_snapshot_position_recovers_or_is_reported(world: World, scratch,
                                                                            name: str) -> None:
    """Cut anywhere from where recovery starts reading (snapshot 2's position) on: at a chunk
    boundary the log simply ends earlier; inside a chunk it has a torn tail. Either recovery
    succeeds and regenerates every released output, or (an output released whose input or PALs
    are gone) the image is reported as damaged. Never exit 1, which would blame the middlebox."""
    path = world.image / name
    start, size = world.starts[name], path.stat().st_size
    starts = chunk_starts(path)
    cuts = sorted({o for o in starts if o >= start} | set(random_cuts(case_rng("image-after", name), start, size,
                                                                      RANDOM_CUTS)))
    failures = []
    for cut in cuts:
        image = scratch(world.image)
        truncate(image / name, cut)
        out_dir = image.with_name(image.name + "-recovered")
        out = run_cli("recover", image, "--out", out_dir)
        if out.code == 3:
            problem = error_problem(out, [name])
        else:
            problem = recovery_problem(out, out_dir)
        if problem:
            failures.append(f"cut at {cut}: {problem}")
        shutil.rmtree(image)
    report(failures, len(cuts))


@pytest.mark.parametrize("name", LOGS)
def test_image_log_cut_inside_its_header_is_reported(world: World, scratch, name: str) -> None:
    failures = []
    for cut in (0, 1, 4, FILE_HEADER.size - 1):
        image = scratch(world.image)
        truncate(image / name, cut)
        problem = error_problem(run_cli("recover", image, "--out", image.with_name("r")), [name], [cut])
        if problem:
            failures.append(f"cut at {cut}: {problem}")
        shutil.rmtree(image)
    report(failures, 4)


@pytest.mark.parametrize("name", LOGS)
def test_image_log_shorter_than_its_snapshot_says_is_reported(world: World, scratch, name: str) -> None:
    """A durable snapshot was written after every log was flushed to the positions it records: a
    log in the image that ends before that position lost bytes that were durable, which is
    damage (named with the file and an offset), not a torn tail."""
    path = world.image / name
    start = world.starts[name]
    starts = chunk_starts(path)
    cuts = sorted({o for o in starts if o < start} | set(random_cuts(case_rng("image-before", name),
                                                                     FILE_HEADER.size, start, RANDOM_CUTS)))
    failures = []
    for cut in cuts:
        image = scratch(world.image)
        truncate(image / name, cut)
        problem = error_problem(run_cli("recover", image, "--out", image.with_name("r")), [name],
                                [cut, start, chunk_of(starts, cut)])
        if problem:
            failures.append(f"cut at {cut} (snapshot 2 says {start}): {problem}")
        shutil.rmtree(image)
    report(failures, len(cuts))


@pytest.mark.parametrize("name", LOGS)
def test_image_log_with_flipped_bits_is_reported_where_recovery_reads_it(world: World, scratch, name: str) -> None:
    """A flipped bit in the file header, or in a chunk from the snapshot's position on, is
    corruption named with the file and the chunk's offset. A chunk before that position is
    never read (recovery costs what lies after the last snapshot), so a flip there must change
    nothing at all: the recovery is identical to the undamaged image's."""
    path = world.image / name
    size, start = path.stat().st_size, world.starts[name]
    starts = chunk_starts(path)
    rng = case_rng("image-flip", name)
    flips = random_flips(rng, size, RANDOM_FLIPS)
    flips += [(rng.randrange(start, size), 1 << rng.randrange(8)) for _ in range(2)]  # read for sure
    flips += [(rng.randrange(FILE_HEADER.size, start), 1 << rng.randrange(8)) for _ in range(2)]  # never read
    flips += [(rng.randrange(FILE_HEADER.size), 0x01)]
    failures = []
    for pos, mask in flips:
        image = scratch(world.image)
        flip(image / name, pos, mask)
        out_dir = image.with_name(image.name + "-recovered")
        out = run_cli("recover", image, "--out", out_dir)
        if pos < FILE_HEADER.size:
            problem = error_problem(out, [name], None if _magic(out) else [0])
        elif pos >= start:
            problem = error_problem(out, [name], [chunk_of(starts, pos)])
        else:
            problem = recovery_problem(out, out_dir, like=world.pristine)
        if problem:
            failures.append(f"flip {mask:#04x} at {pos} (recovery reads from {start}): {problem}")
        shutil.rmtree(image)
    report(failures, len(flips))


@pytest.mark.parametrize("name", LOGS)
def test_image_log_deleted_is_reported(world: World, scratch, name: str) -> None:
    image = scratch(world.image)
    (image / name).unlink()
    out = run_cli("recover", image, "--out", image.with_name("r"))
    assert error_problem(out, [name]) is None, out
    assert "missing" in out.error


@pytest.mark.parametrize("name", LOGS)
def test_image_log_from_another_run_is_reported(world: World, scratch, name: str) -> None:
    image = scratch(world.image)
    shutil.copyfile(world.other_image / name, image / name)
    out = run_cli("recover", image, "--out", image.with_name("r"))
    assert error_problem(out, [name]) is None, out
    assert RunDir(world.run).manifest["run_id"] in out.error


def test_image_whose_released_outputs_need_records_its_queue_log_lost_is_damaged(world: World,
                                                                               tmp_path: Path) -> None:
    """Three queues (the NAT's port choices then depend on the order of shared accesses): cut a
    queue log of a crash image to its header, leaving outputs in output.log that depended on
    its records. Recovery may survive that (exit 0, every output regenerated) or report the
    image as damaged (exit 3); it must not blame the middlebox (exit 1)."""
    run = tmp_path / "three-queues"
    record(RecordConfig(trace=world.trace, out=run, middlebox="nat", queues=3, snapshot_every=SNAPSHOT_EVERY,
                        flush_every=4, scheduler="chaos", seed=2))
    events = RunDir(run).events()
    begin = next(e.index for e in events if e.kind == rec.EV_SNAPSHOT_BEGIN)
    points = list(range(11, begin, 12))
    kept = tmp_path / "kept"
    assert run_cli("crash-replay", run, *itertools.chain(*(("--at", p) for p in points)), "--keep", kept,
                   "--jobs", 1).code == 0
    failures, cases = [], 0
    for point in points:
        for q in range(3):
            image = tmp_path / "image"
            shutil.copytree(kept / f"crash-{point:06d}-clean", image)
            truncate(image / f"pal-{q}.log", FILE_HEADER.size)
            out = run_cli("recover", image, "--out", tmp_path / "recovered", "--force")  # the last case's
            cases += 1
            if out.code == 1 or out.code not in (0, 3):
                failures.append(f"crash at {point}, pal-{q}.log cut to its header: {out}")
            elif out.code == 3 and error_problem(out, ["output.log", f"pal-{q}.log"]):
                failures.append(f"crash at {point}, pal-{q}.log: {error_problem(out, ['output.log', f'pal-{q}.log'])}")
            shutil.rmtree(image)
    report(failures, cases)


# ---------------------------------------------------------------- crash images: snapshots

def _snapshot_damages(world: World, name: str) -> list[tuple[str, Callable[[Path], None]]]:
    path = world.image / name
    size = path.stat().st_size
    rng = case_rng("image-snapshot", name)
    damages: list[tuple[str, Callable[[Path], None]]] = [
        (f"cut at {c}", lambda i, c=c: truncate(i / name, c))
        for c in sorted({0, SNAPSHOT_HEADER.size - 1, SNAPSHOT_HEADER.size, size - 1,
                         *random_cuts(rng, 0, size, RANDOM_CUTS)})]
    damages += [(f"flip {m:#04x} at {p}", lambda i, p=p, m=m: flip(i / name, p, m))
                for p, m in random_flips(rng, size, RANDOM_FLIPS)]
    damages.append(("zero-filled", lambda i: (i / name).write_bytes(bytes(size))))
    damages.append(("swapped with the other run's", lambda i: shutil.copyfile(world.other_image / name, i / name)))
    return damages


def test_damaged_latest_snapshot_is_skipped_with_a_warning_and_the_one_before_is_used(world: World,
                                                                                        scratch) -> None:
    """Every damage to the latest snapshot: recovery warns, names the file, restores snapshot 1
    and recovers exactly as it does from the image without the latest snapshot file."""
    failures, damages = [], _snapshot_damages(world, LATEST)
    for label, apply in damages:
        image = scratch(world.image)
        apply(image)
        out_dir = image.with_name(image.name + "-recovered")
        out = run_cli("recover", image, "--out", out_dir)
        problem = recovery_problem(out, out_dir, like=world.without_latest)
        if problem is None and "warningskippeddamagedsnapshot" not in out.flat:
            problem = "no warning that the snapshot was skipped"
        if problem:
            failures.append(f"{label}: {problem}")
        shutil.rmtree(image)
    report(failures, len(damages))


def test_warning_about_a_skipped_snapshot_names_it_in_full_even_in_a_deep_directory(world: World,
                                                                                    tmp_path: Path) -> None:
    image = tmp_path / ("crash-images-of-the-nightly-nat-regression-run" + "-" * 40) / "crash-image"
    shutil.copytree(world.image, image)
    (image / LATEST).write_bytes(b"")
    out = run_cli("recover", image, "--out", tmp_path / "recovered")
    assert out.code == 0, out
    assert str(image / LATEST) in out.flat, out.stdout


def test_damaged_older_snapshot_is_not_even_read(world: World, scratch) -> None:
    failures, damages = [], _snapshot_damages(world, OLDER) + [("deleted", lambda i: (i / OLDER).unlink())]
    for label, apply in damages:
        image = scratch(world.image)
        apply(image)
        out_dir = image.with_name(image.name + "-recovered")
        out = run_cli("recover", image, "--out", out_dir)
        problem = recovery_problem(out, out_dir, like=world.pristine)
        if problem is None and "warning" in out.stdout:
            problem = "a warning about a snapshot recovery does not need"
        if problem:
            failures.append(f"{label}: {problem}")
        shutil.rmtree(image)
    report(failures, len(damages))


def test_every_snapshot_damaged_recovers_from_the_initial_state(world: World, scratch) -> None:
    image = scratch(world.image)
    for name in SNAPSHOTS:
        flip(image / name, SNAPSHOT_HEADER.size + 3, 0x20)
    out_dir = image.with_name("recovered")
    out = run_cli("recover", image, "--out", out_dir)
    assert recovery_problem(out, out_dir) is None, out
    assert out.stdout.count("warning") == 2 and "none(initialstate)" in out.flat
    mine = recovered(out_dir)
    assert (mine.snapshot, mine.durable_inputs) == (0, recovered(world.pristine).durable_inputs)
    # every log is complete from its start: replaying all of it ends in the same state
    assert mine.state["shared"] == recovered(world.pristine).state["shared"]
    # the same outputs (their dependency vectors count the recovered run's own log records, so
    # they depend on where the replay started)
    assert [(o.output_id, o.data) for o in mine.outputs] == [
        (o.output_id, o.data) for o in recovered(world.pristine).outputs]


def test_latest_snapshot_file_holding_another_snapshot_is_skipped(world: World, scratch) -> None:
    image = scratch(world.image)
    shutil.copyfile(image / OLDER, image / LATEST)
    out_dir = image.with_name("recovered")
    out = run_cli("recover", image, "--out", out_dir)
    assert recovery_problem(out, out_dir, like=world.without_latest) is None, out
    assert "warning" in out.stdout and "holdssnapshot1" in out.flat


def test_half_written_snapshot_next_to_the_latest_is_ignored(world: World, scratch) -> None:
    """A crash while snapshot 3 was being written leaves only its .tmp: never read."""
    image = scratch(world.image)
    data = (world.run / LATEST).read_bytes()
    (image / "snapshots" / "snap-000003.snap.tmp").write_bytes(data[: len(data) // 2])
    out_dir = image.with_name("recovered")
    out = run_cli("recover", image, "--out", out_dir)
    assert recovery_problem(out, out_dir, like=world.pristine) is None, out
    assert "warning" not in out.stdout


def test_snapshot_newer_than_the_logs_of_the_image_is_not_restored(world: World, scratch, tmp_path: Path) -> None:
    """An image of a crash before snapshot 2 was begun, with snapshot 2 copied in from a later
    image of the same run (same run id, intact bytes), at every crash point where some log of
    the image ends before the position snapshot 2 records: restoring it would invent durable
    inputs and drop released outputs. Recovery must refuse it (skip it with a warning, or report
    the image as damaged, naming a file)."""
    events = RunDir(world.run).events()
    begin = next(e for e in events if e.kind == rec.EV_SNAPSHOT_BEGIN and e.arg == 2)
    short = [e.index for e in events[:begin.index]
             if e.input_len < begin.input_len or e.output_len < begin.output_len
             or any(a < b for a, b in zip(e.queue_len, begin.queue_len))]
    points = sorted({short[0], short[len(short) // 2], short[-1]})
    source = scratch(world.run)
    kept = tmp_path / "early"
    assert run_cli("crash-replay", source, *itertools.chain(*(("--at", p) for p in points)), "--keep", kept,
                   "--jobs", 1).code == 0
    failures = []
    for point in points:
        image = kept / f"crash-{point:06d}-clean"
        assert not (image / LATEST).exists()
        shutil.copyfile(world.image / LATEST, image / LATEST)
        out_dir = tmp_path / f"recovered-{point}"
        out = run_cli("recover", image, "--out", out_dir)
        if out.code == 0:
            if recovered(out_dir).snapshot != 1 or "warning" not in out.stdout:
                failures.append(f"crash at {point}: restored a snapshot the image's logs do not reach")
        elif error_problem(out, ["snap-000002.snap", *LOGS]):
            failures.append(f"crash at {point}: {error_problem(out, ['snap-000002.snap', *LOGS])}")
    assert not failures, failures


def test_snapshot_copied_into_an_image_whose_logs_reach_it_is_the_same_crash(world: World, scratch,
                                                                              tmp_path: Path) -> None:
    """Just before snapshot 2 was begun every log had been flushed to exactly the positions it
    records. That image with snapshot 2 copied in is byte for byte the image of a crash right after
    snapshot 2 became durable (the timeline is not part of an image), so restoring snapshot 2 is
    right, and the recovery is consistent with the failure-free run."""
    events = RunDir(world.run).events()
    begin = next(e for e in events if e.kind == rec.EV_SNAPSHOT_BEGIN and e.arg == 2)
    durable = next(e for e in events if e.kind == rec.EV_SNAPSHOT_DURABLE and e.arg == 2)
    before = events[begin.index - 1]
    assert (before.input_len, before.output_len, before.queue_len) == \
           (durable.input_len, durable.output_len, durable.queue_len)
    source = scratch(world.run)
    kept = tmp_path / "kept"
    assert run_cli("crash-replay", source, "--at", before.index, "--at", durable.index, "--keep", kept,
                   "--jobs", 1).code == 0
    image = kept / f"crash-{before.index:06d}-clean"
    shutil.copyfile(world.image / LATEST, image / LATEST)
    after = kept / f"crash-{durable.index:06d}-clean"
    assert sorted(p.relative_to(image).as_posix() for p in image.rglob("*") if p.is_file()) == \
           sorted(p.relative_to(after).as_posix() for p in after.rglob("*") if p.is_file())
    for name in [*LOGS, *SNAPSHOTS]:  # only the manifest's crash point differs
        assert (image / name).read_bytes() == (after / name).read_bytes(), name
    out = run_cli("recover", image, "--out", tmp_path / "recovered")
    assert out.code == 0, out
    assert recovered(tmp_path / "recovered").snapshot == 2


# ---------------------------------------------------------------- crash images: the manifest

@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_manifest_of_an_image_is_reported_or_harmless(world: World, scratch, damage: str) -> None:
    path = world.image / "manifest.json"
    data = path.read_bytes()
    rng = case_rng("image", "manifest.json", damage)
    variants: list[tuple[str, bytes | None]] = []
    if damage == "truncate":
        variants = [(f"cut at {c}", data[:c]) for c in sorted({0, len(data) - 1,
                                                               *random_cuts(rng, 0, len(data), RANDOM_CUTS)})]
    elif damage == "flip":
        for pos, mask in random_flips(rng, len(data), RANDOM_FLIPS * 2):
            changed = bytearray(data)
            changed[pos] ^= mask
            variants.append((f"flip {mask:#04x} at {pos} ({data[max(pos - 12, 0):pos + 4]!r})", bytes(changed)))
    elif damage == "delete":
        variants = [("deleted", None)]
    else:
        variants = [("swapped", (world.other_image / "manifest.json").read_bytes())]
    failures = []
    for label, content in variants:
        image = scratch(world.image)
        if content is None:
            (image / "manifest.json").unlink()
        else:
            (image / "manifest.json").write_bytes(content)
        out_dir = image.with_name(image.name + "-recovered")
        out = run_cli("recover", image, "--out", out_dir)
        if out.code == 3:  # the manifest, a log it does not fit, or the trace it names
            problem = None if out.errors == 1 and "Traceback" not in out.stderr else f"{out}"
        else:
            problem = recovery_problem(out, out_dir)
        if problem:
            failures.append(f"{label}: {problem}")
        shutil.rmtree(image)
    report(failures, len(variants))


# ---------------------------------------------------------------- files that are not files

@pytest.mark.parametrize("where", ["run", "image"])
def test_log_that_is_a_fifo_is_reported_not_waited_on(world: World, scratch, where: str) -> None:
    target = scratch(world.run if where == "run" else world.image)
    (target / "pal-1.log").unlink()
    os.mkfifo(target / "pal-1.log")
    if where == "run":
        out = run_cli("crash-replay", target, "--at", DAMAGED_AT, "--jobs", 1, limit=2)
    else:
        out = run_cli("recover", target, "--out", target.with_name("r"), limit=2)
    assert error_problem(out, ["pal-1.log"]) is None, out


# ---------------------------------------------------------------- Hypothesis: the readers themselves

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RUN_ID = bytes(range(16))
DECODERS = {KIND_INPUT: lambda: rec.iter_inputs, KIND_QUEUE: QueueDecoder, KIND_OUTPUT: lambda: rec.iter_outputs,
            KIND_TIMELINE: lambda: rec.iter_events}  # a fresh decoder per log: queue chunks carry state
NAMES = {KIND_INPUT: "input.log", KIND_QUEUE: "pal-0.log", KIND_OUTPUT: "output.log", KIND_TIMELINE: "timeline.log"}
kinds = st.sampled_from(sorted(DECODERS))
limits = st.one_of(st.none(), st.integers(0, 1 << 12))


def read_whole_log(data: bytes, kind: int, limit: int | None) -> list[Any]:
    """open_log + every chunk + every record, as recovery reads a log; DamagedRun or records."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / NAMES[kind]
        path.write_bytes(data)
        log = open_log(path, kind, RUN_ID, limit)
        records = list(log.records(DECODERS[kind]()))
        assert log.scan.end <= log.size and log.scan.end + log.scan.torn_bytes == log.size
        assert log.scan.records == len(records)
        return records


def only_damaged_run(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except DamagedRun as exc:
        assert str(exc), "an empty error message"
        return None


@FUZZ
@given(st.binary(max_size=400), kinds, limits)
def test_log_reader_on_arbitrary_bytes(data: bytes, kind: int, limit: int | None) -> None:
    only_damaged_run(lambda: read_whole_log(data, kind, limit))


@FUZZ
@given(st.binary(max_size=400), kinds, limits, st.integers(0, 0xFFFFFFFF))
def test_log_reader_on_a_good_header_and_arbitrary_chunks(tail: bytes, kind: int, limit: int | None,
                                                          aux: int) -> None:
    only_damaged_run(lambda: read_whole_log(pack_file_header(kind, RUN_ID, aux) + tail, kind, limit))


def _forged_chunk(payload: bytes, raw_length: int, first_seq: int, count: int) -> bytes:
    head = CHUNK_HEADER.pack(len(payload), raw_length, first_seq, count, zlib.crc32(payload), 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head)) + payload


@st.composite
def framed_logs(draw) -> tuple[bytes, int]:
    """A log with a good header and chunks with good CRCs around arbitrary records: the record
    decoders and the count check are what is left to catch the damage."""
    kind = draw(kinds)
    data, seq = pack_file_header(kind, RUN_ID, QUEUES), 0
    for _ in range(draw(st.integers(0, 4))):
        raw = draw(st.binary(max_size=120))
        count = draw(st.integers(0, 12))
        first = draw(st.one_of(st.just(seq), st.integers(0, (1 << 64) - 1)))
        if draw(st.booleans()):
            data += pack_chunk(raw, first, count)
        else:  # a payload that may not be LZ4 at all, or decompress to another length
            data += _forged_chunk(raw, draw(st.integers(0, 512)), first, count)
        seq = first + count
    return data, kind


@FUZZ
@given(framed_logs(), limits)
@example((pack_file_header(KIND_QUEUE, RUN_ID, 0) + pack_chunk(b"\x01" + bytes(14), 0, 2), KIND_QUEUE), None)
@example((pack_file_header(KIND_QUEUE, RUN_ID, 0) + pack_chunk(b"\x00\x00\x01\x01\x00\x00", 0, 1), KIND_QUEUE), None)
@example((pack_file_header(KIND_OUTPUT, RUN_ID, 2) + pack_chunk(rec.OUTPUT.pack(1, 0, 1, 0, 0, 200), 0, 1),
          KIND_OUTPUT), None)
def test_log_reader_on_well_framed_chunks_of_arbitrary_records(framed: tuple[bytes, int], limit: int | None) -> None:
    data, kind = framed
    only_damaged_run(lambda: read_whole_log(data, kind, limit))


# real records, so that well-formed chunks also read back (the reader is not just refusing everything)
@st.composite
def queue_batches(draw) -> list[bytes]:
    """Chunks of one queue log as the encoder writes them: valid records whose deltas run on."""
    encoder, packet, seqs, chunks = QueueEncoder(), 0, {}, []
    for _ in range(draw(st.integers(0, 5))):
        items = []
        for _ in range(draw(st.integers(1, 5))):
            packet += draw(st.sampled_from([0, 0, 1, 1 << 20]))
            var = draw(st.integers(0, 40))
            seqs[var] = seqs.get(var, 0) + draw(st.integers(1, 3))
            items.append((packet, var, seqs[var], draw(st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))))
        chunks.append((encoder.encode(items), len(items)))
    return chunks


@FUZZ
@given(queue_batches(), st.integers(0, 2000))
def test_log_reader_drops_only_a_torn_tail_of_good_chunks(batches: list[tuple[bytes, int]], cut: int) -> None:
    data = pack_file_header(KIND_QUEUE, RUN_ID, 0)
    ends, seq = [len(data)], 0
    for raw, count in batches:
        data += pack_chunk(raw, seq, count)
        seq += count
        ends.append(len(data))
    cut = min(cut, len(data))
    records = only_damaged_run(lambda: read_whole_log(data[:cut], KIND_QUEUE, None))
    if cut < FILE_HEADER.size:
        assert records is None
        return
    whole = max(i for i, end in enumerate(ends) if end <= cut)  # chunks entirely before the cut
    assert records is not None and len(records) == sum(count for _, count in batches[:whole])


@st.composite
def framed_snapshots(draw) -> bytes:
    """A snapshot header with good CRCs around an arbitrary body: LZ4 of arbitrary bytes (or of
    an arbitrary codec value), or no LZ4 at all."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        raw = draw(st.binary(max_size=200))
    elif choice == 1:
        raw = codec.encode(draw(st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                                           st.binary(max_size=5)),
                                                 lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                         st.dictionaries(st.text(max_size=3),
                                                                                         inner, max_size=3)),
                                                 max_leaves=10)))
    else:
        raw = b""
    body = lz4.block.compress(raw, store_size=False) if choice < 2 else draw(st.binary(max_size=100))
    raw_length = len(raw) if draw(st.booleans()) else draw(st.integers(0, 4096))
    head = SNAPSHOT_HEADER.pack(b"FTMS", 1, draw(st.integers(0, 0xFFFF)), RUN_ID, draw(st.integers(0, 0xFFFFFFFF)),
                                draw(st.integers(0, 0xFFFFFFFF)), len(body), raw_length, zlib.crc32(body), 0)[:-4]
    data = head + struct.pack("<I", zlib.crc32(head)) + body
    return data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@FUZZ
@given(st.one_of(st.binary(max_size=300), framed_snapshots()), st.sampled_from([None, RUN_ID, bytes(16)]))
def test_snapshot_decoder_on_arbitrary_bytes(data: bytes, run_id: bytes | None) -> None:
    snap = only_damaged_run(lambda: decode_snapshot(Path("snap-000001.snap"), data, run_id))
    if snap is not None:
        assert isinstance(snap.state, dict)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False),
              st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25)
manifest_like = st.fixed_dictionaries(
    {"format_version": st.one_of(st.just(1), json_values)},
    optional={"run_id": st.one_of(st.just("00" * 16), st.text(alphabet="0123456789abcdef ", max_size=40), json_values),
              "queues": st.one_of(st.integers(-2, 70), json_values),
              "complete": st.one_of(st.booleans(), json_values),
              "files": json_values, "variables": json_values, "middlebox": json_values, "trace": json_values})


def _write_manifest(folder: Path, doc: Any) -> None:
    (folder / "manifest.json").write_text(json.dumps(doc))


@FUZZ
@given(st.one_of(json_values, manifest_like))
def test_manifest_and_run_reader_on_arbitrary_json(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_manifest(folder, doc)
        got = only_damaged_run(lambda: read_manifest(folder))
        if got is not None:
            assert got == doc and isinstance(got, dict)
        run = only_damaged_run(lambda: RunDir(folder))
        if run is not None:
            assert len(run.run_id) == 16 and 1 <= run.queues <= 64


@FUZZ
@given(json_values)
@example([1, 2])
@example([["x", "y"]])
@example([[0, "x", "counter"]])
def test_variable_names_of_arbitrary_json(variables: Any) -> None:
    """Every other field is valid, so the run reader gets as far as the variables."""
    with tempfile.TemporaryDirectory() as tmp:
        _write_manifest(Path(tmp), {"format_version": 1, "run_id": "00" * 16, "queues": 1, "variables": variables,
                                    "trace": {"path": "t.pcap", "sha256": "00" * 32},
                                    "middlebox": {"spec": "nat", "options": []}, "snapshot_every": 10,
                                    "flush_every": 4, "seed": 1})
        names = only_damaged_run(lambda: RunDir(Path(tmp)).variable_names())
        if names is not None:
            assert all(isinstance(k, int) and isinstance(v, str) for k, v in names.items())


@FUZZ
@given(st.binary(max_size=200))
def test_manifest_reader_on_arbitrary_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "manifest.json").write_bytes(data)
        only_damaged_run(lambda: read_manifest(Path(tmp)))


file_names = st.one_of(st.sampled_from(["input.log", "pal-0.log", "timeline.log", "reference.snap",
                                        "snapshots/snap-000001.snap", "snapshots", ".", "", "nested/x.log"]),
                       st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
                               max_size=20))
file_entries = st.fixed_dictionaries({}, optional={"bytes": st.one_of(st.integers(-1, 200), json_values),
                                                   "sha256": st.one_of(st.none(), st.text(max_size=64), json_values)})


def _check_files(files: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        (folder / "snapshots").mkdir(parents=True)
        for name in ("input.log", "pal-0.log"):
            (folder / name).write_bytes(pack_file_header(log_kind(name), bytes(16), 0) + b"\x00" * 7)
        _write_manifest(folder, {"format_version": 1, "run_id": "00" * 16, "queues": 1, "complete": True,
                                 "files": files})
        only_damaged_run(lambda: RunDir(folder).check_complete())


@FUZZ
@given(st.dictionaries(file_names, file_entries, max_size=4))
def test_check_complete_on_arbitrary_file_lists(files: dict[str, Any]) -> None:
    _check_files(files)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=4))
@example({"input.log": 5})
@example({"a\x00b": {"bytes": 1}})
@example({"\ud800": {"bytes": 1}})
def test_check_complete_on_file_lists_of_anything(files: dict[str, Any]) -> None:
    _check_files(files)


def test_a_manifest_naming_code_inside_the_run_runs_nothing(world: World, scratch) -> None:
    """A run directory is data: a manifest that names a module shipped inside it (with the file list
    re-hashed, as an attacker would) is refused before anything is imported."""
    run = scratch(world.run)
    marker = run.parent / f"{run.name}-payload-ran"
    (run / "payload.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from ftmbctl.middleboxes.nat import Nat as Payload\n")
    doc = json.loads((run / "manifest.json").read_text())
    doc["middlebox"]["spec"] = f"{run / 'payload.py'}:Payload"
    doc["files"]["payload.py"] = {"bytes": (run / "payload.py").stat().st_size,
                                  "sha256": hashlib.sha256((run / "payload.py").read_bytes()).hexdigest()}
    (run / "manifest.json").write_text(json.dumps(doc))
    shutil.rmtree(run / "crash", ignore_errors=True)  # verify without results runs a sweep
    for args in (("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1), ("verify", run)):
        out = run_cli(*args)
        assert out.code == 2 and "--middlebox" in out.error, out
    assert not marker.exists(), "code named by a run directory ran"


def test_zero_tail_on_a_complete_timeline_is_damage_even_when_rehashed(world: World, scratch) -> None:
    """tests/fuzz_runs.py found it: zero bytes appended to timeline.log, with the manifest's size and
    SHA-256 updated to match, read as a torn tail and passed as consistent."""
    run = scratch(world.run)
    with open(run / "timeline.log", "ab") as handle:
        handle.write(bytes(27))
    doc = json.loads((run / "manifest.json").read_text())
    doc["files"]["timeline.log"] = {"bytes": (run / "timeline.log").stat().st_size,
                                    "sha256": hashlib.sha256((run / "timeline.log").read_bytes()).hexdigest()}
    (run / "manifest.json").write_text(json.dumps(doc))
    out = run_cli("crash-replay", run, "--at", DAMAGED_AT, "--jobs", 1)
    assert error_problem(out, ["timeline.log", "27 bytes"]) is None, out
