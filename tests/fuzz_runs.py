"""A longer seeded campaign of damaged run directories and crash images (not a pytest module).

    .venv/bin/python tests/fuzz_runs.py --seconds 120 --seed 7
    .venv/bin/python tests/fuzz_runs.py --seed 7 --case 1234 -v     # replay one case, with its output

It records a few small runs (built-in middleboxes, 1-3 queues, several snapshot intervals and
seeds, each with a twin recorded under another seed to swap files from), keeps crash images of
them at random crash points, then damages copies until the time is up: cuts (at chunk
boundaries and anywhere), bit flips, zero-filled tails, a chunk appended twice, deleted files,
files swapped in from the twin, a FIFO or a link to /dev/zero in a file's place, snapshots with
a valid checksum that claim a huge state (a decompression bomb) or hold a state of the wrong
shape, and damage "re-hashed" into the manifest (so only the readers
can see it). Each case runs ``ftmbctl crash-replay`` on a damaged run directory or ``ftmbctl
recover`` on a damaged image, in-process through typer's CliRunner, under a time limit.

Outcomes, per case:

- ``error``      exit 3 with one sentence (the expected answer to damage);
- ``recovered``  an image recovered, and the damage was one recovery may survive (a torn tail,
                 bytes before the restored snapshot, a damaged snapshot skipped for an older one);
- ``harmless``   a run directory or image whose damage changed nothing that matters (checked);
- ``misreported`` exit 1 (an inconsistency of the middlebox) for damaged input, or an exit 3
                 without exactly one error line;
- ``traceback``, ``hung``: failures;
- ``wrong``      a "consistent" verdict or a successful recovery that cannot be right: a run whose
                 listed bytes changed found consistent, an image recovered although recovery had to
                 read the damaged bytes, or recovered differently from the undamaged image.

The script prints a summary and exits 1 if any case ended in a traceback, a hang or a wrong
answer (``--strict``: misreported cases too). Every case is derived from (seed, case number),
so any one can be replayed alone with ``--case``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lz4.block  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from ftmbctl.cli import app  # noqa: E402
from ftmbctl.errors import FtmbError  # noqa: E402
from ftmbctl.pcapio import iter_packets, write_pcap  # noqa: E402
from ftmbctl.record import RecordConfig, record  # noqa: E402
from ftmbctl.rundir import RunDir, log_kind, open_log, snapshot_number  # noqa: E402
from ftmbctl.snapshot import HEADER as SNAPSHOT_HEADER  # noqa: E402
from ftmbctl.snapshot import VERSION as SNAPSHOT_VERSION  # noqa: E402
from ftmbctl.snapshot import encode_snapshot, read_snapshot  # noqa: E402
from ftmbctl.store import CHUNK_HEADER, FILE_HEADER  # noqa: E402

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
TIME_LIMIT = 30
FAILURES = ("traceback", "hung", "wrong")
TRACES = [ROOT / "traces" / "small.pcap",
          ROOT.parent / "shared" / "pcaps" / "chrissanders-packets" / "evilprogram.pcap"]


# ---------------------------------------------------------------- running one command

class Hung(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
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
class Answer:
    code: int | str
    errors: list[str]
    stdout: str
    detail: str = ""


def run_cli(*args: Any) -> Answer:
    try:
        with time_limit(TIME_LIMIT):
            result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    except Hung as exc:
        return Answer("hung", [], "", str(exc))
    exc = result.exception
    if isinstance(exc, Hung):
        return Answer("hung", [], result.stdout, str(exc))
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(exc)
        return Answer("traceback", [], result.stdout, tb)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if "Traceback" in result.output:
        return Answer("traceback", errors, result.stdout, result.output[-3000:])
    return Answer(result.exit_code, errors, result.stdout)


# ---------------------------------------------------------------- the runs and images to damage

@dataclass
class Image:
    path: Path
    twin: Path  # the twin run's image at the same crash point, for swaps (None if it has no such event)
    starts: dict[str, int]  # where recovery starts reading each log (the latest snapshot's positions)
    latest: int  # number of the latest snapshot (0: none)
    pristine: Path  # recovered, undamaged
    trace: Path


@dataclass
class Run:
    path: Path
    twin: Path
    label: str
    images: list[Image] = field(default_factory=list)


def _write_trace(folder: Path, rng: random.Random) -> Path:
    source = next((t for t in TRACES if t.is_file()), None)
    if source is None:
        sys.exit(f"no trace to record: none of {', '.join(map(str, TRACES))} exists")
    path = folder / f"trace-{rng.randrange(10**6)}.pcap"
    write_pcap(path, itertools.islice(iter_packets(source), rng.randrange(60, 220)))
    return path


def _log_starts(image: Path, queues: int) -> tuple[dict[str, int], int]:
    header = FILE_HEADER.size
    starts = {"input.log": header, "output.log": header, **{f"pal-{q}.log": header for q in range(queues)}}
    snaps = sorted(p for p in (image / "snapshots").glob("snap-*.snap"))
    if not snaps:
        return starts, 0
    state = read_snapshot(snaps[-1]).state
    starts = {"input.log": state["input_bytes"], "output.log": state["outputs_bytes"],
              **{f"pal-{q}.log": state["queue_bytes"][q] for q in range(queues)}}
    return starts, snapshot_number(snaps[-1]) or 0


def prepare(folder: Path, seed: int, count: int, log: Callable[[str], None]) -> list[Run]:
    rng = random.Random(f"setup:{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(count):
        trace = _write_trace(folder, rng)
        cfg = dict(middlebox=rng.choice(["nat", "monitor"]), queues=rng.randint(1, 3),
                   snapshot_every=rng.choice([20, 30, 45]), flush_every=rng.choice([4, 8]), scheduler="chaos")
        seeds = rng.sample(range(1, 1000), 2)
        paths = []
        for s in seeds:
            out = folder / f"run{i}-seed{s}"
            record(RecordConfig(trace=trace, out=out, seed=s, **cfg))
            paths.append(out)
        run = Run(paths[0], paths[1], f"run{i} {cfg['middlebox']} q{cfg['queues']} snap{cfg['snapshot_every']} "
                                      f"flush{cfg['flush_every']} seed{seeds[0]}")
        events, twin_events = len(RunDir(run.path).events()), len(RunDir(run.twin).events())
        for e in sorted(rng.sample(range(events), min(3, events))):
            kept, twin_kept = folder / f"kept{i}", folder / f"kept{i}-twin"
            for src, dest in ((run.path, kept), (run.twin, twin_kept)):
                if src == run.twin and e >= twin_events:
                    continue
                scratch = folder / "sweep-scratch"
                shutil.rmtree(scratch, ignore_errors=True)
                shutil.copytree(src, scratch)
                answer = run_cli("crash-replay", scratch, "--at", e, "--keep", dest, "--jobs", 1)
                if answer.code != 0:
                    raise SystemExit(f"setup: crash-replay of {src} at {e} failed: {answer}")
            image = kept / f"crash-{e:06d}-clean"
            twin_image = twin_kept / f"crash-{e:06d}-clean"
            starts, latest = _log_starts(image, cfg["queues"])
            pristine = folder / f"pristine{i}-{e}"
            answer = run_cli("recover", image, "--out", pristine)
            if answer.code != 0:
                raise SystemExit(f"setup: recovering the undamaged image {image} failed: {answer}")
            run.images.append(Image(image, twin_image, starts, latest, pristine, trace))
        ok = run_cli("crash-replay", run.path, "--at", 0, "--jobs", 1)  # results that verify would report
        if ok.code != 0:
            raise SystemExit(f"setup: {run.label} is not consistent to begin with: {ok}")
        runs.append(run)
        log(f"recorded {run.label}: {events} events, images at "
            f"{', '.join(p.path.name for p in run.images)}")
    return runs


# ---------------------------------------------------------------- damage

def chunk_starts(path: Path) -> list[int]:
    try:
        return [c.offset for c in open_log(path, log_kind(path.name)).chunks()]
    except FtmbError:
        return []


@dataclass
class Damage:
    file: str
    kind: str
    text: str
    pos: int | None = None  # the first damaged byte (for cuts: the new length)
    added: int = 0  # bytes appended (zero tails)


def damage(target: Path, twin: Path | None, rng: random.Random, rehash: bool) -> Damage | None:
    """Damage one file of a copy; None when the chosen damage is impossible or changes nothing."""
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                   if p.is_file() and "crash" not in p.relative_to(target).parts[:1])
    name = rng.choice(files)
    path = target / name
    data = path.read_bytes()
    is_log = log_kind(path.name) is not None
    kinds = ["cut-at-boundary", "cut", "flip", "flips", "zero-tail", "delete"] if is_log else \
            ["cut", "flip", "flips", "zero-tail", "delete"]
    if is_log:
        kinds.append("chunk-twice")
    if twin is not None and (twin / name).is_file():
        kinds.append("swap")
    kinds += ["fifo", "dev-zero"]  # not a regular file: one sentence, never a hang
    if path.suffix == ".snap" and len(data) >= SNAPSHOT_HEADER.size:
        kinds += ["bomb", "nonsense"]  # checksum-valid: only the size bounds and the schema can tell
    kind = rng.choice(kinds)
    if kind in ("fifo", "dev-zero"):
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/dev/zero")
        return Damage(name, kind, f"{name}: {kind}")
    new: bytes | None = data
    pos: int | None = None
    added = 0
    if kind == "cut-at-boundary":
        starts = chunk_starts(path)
        if not starts:
            return None
        pos = rng.choice(starts + [FILE_HEADER.size])
        new = data[:pos]
    elif kind == "cut":
        pos = rng.randrange(len(data)) if data else 0
        new = data[:pos]
    elif kind in ("flip", "flips"):
        if not data:
            return None
        changed = bytearray(data)
        spots = sorted(rng.randrange(len(data)) for _ in range(1 if kind == "flip" else rng.randint(2, 4)))
        for spot in spots:
            changed[spot] ^= 1 << rng.randrange(8)
        pos, new = spots[0], bytes(changed)
    elif kind == "zero-tail":
        pos, new = len(data), data + bytes(rng.choice([1, 27, 28, 64]))
        added = len(new) - len(data)
    elif kind == "chunk-twice":
        starts = chunk_starts(path)
        if not starts:
            return None
        pos, new = len(data), data + data[starts[-1]:]
    elif kind == "delete":
        new = None
    elif kind in ("bomb", "nonsense"):
        _magic, _version, flags, run_id, number, boundary, *_rest = SNAPSHOT_HEADER.unpack_from(data)
        if kind == "nonsense":  # a valid encoding and checksum of a state of the wrong shape
            state = rng.choice([{"boundary": boundary}, {"boundary": boundary, "shared": "nonsense", "local": []},
                                {"boundary": boundary, "shared": [[1, 2, 3, 4]], "local": [None]}])
            new = encode_snapshot(run_id, number, boundary, state, flags=flags)
        else:  # zeros compress about 255:1: a small file that claims a huge state
            body = lz4.block.compress(bytes(rng.choice([1 << 20, 64 << 20])), store_size=False)
            head = SNAPSHOT_HEADER.pack(b"FTMS", SNAPSHOT_VERSION, flags, run_id, number, boundary, len(body),
                                        len(body) * 255, zlib.crc32(body), 0)
            new = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])) + body
        pos = 0
    else:
        new = (twin / name).read_bytes()
        pos = next((i for i, (a, b) in enumerate(zip(data, new)) if a != b), min(len(data), len(new)))
    if new == data:
        return None
    if new is None:
        path.unlink()
    else:
        path.write_bytes(new)
    text = f"{name}: {kind}" + (f" at {pos}" if pos is not None else "") + (f" ({added} bytes)" if added else "")
    if rehash and name != "manifest.json" and new is not None and (target / "manifest.json").is_file():
        doc = json.loads((target / "manifest.json").read_text())
        if isinstance(doc.get("files"), dict) and name in doc["files"]:
            doc["files"][name] = {"bytes": len(new), "sha256": hashlib.sha256(new).hexdigest()}
            (target / "manifest.json").write_text(json.dumps(doc))
            text += " (re-hashed into the manifest)"
    return Damage(name, kind, text, pos, added)


# ---------------------------------------------------------------- judging one case

def judge_run_dir(run: Run, answer: Answer, hurt: Damage, copy: Path) -> tuple[str, str]:
    code = answer.code
    if code in ("traceback", "hung"):
        return code, answer.detail[-1500:]
    if code == 3:
        return ("error", answer.errors[0]) if len(answer.errors) == 1 else ("misreported", f"{answer.errors}")
    if code == 1:
        return "misreported", "exit 1 (inconsistent) for a damaged run directory"
    if code == 0:
        if hurt.file == "manifest.json":  # the described files are intact: consistent is right if it says so
            results = json.loads((copy / "crash" / "results.json").read_text())
            return ("harmless", "manifest damage changed nothing that matters") if results["consistent"] \
                else ("wrong", "exit 0 but not consistent")
        return "wrong", "a run directory with damaged bytes was found consistent"
    return "misreported", f"exit {code}"


def _same_recovery(a: Path, b: Path) -> bool:
    ra, rb = RunDir(a), RunDir(b)
    origin_a, origin_b = ra.manifest["recovered_from"], rb.manifest["recovered_from"]
    same_origin = [origin_a[k] for k in ("snapshot", "durable_inputs")] == [
        origin_b[k] for k in ("snapshot", "durable_inputs")]
    return list(ra.outputs()) == list(rb.outputs()) and ra.reference().state == rb.reference().state and same_origin


def judge_image(image: Image, answer: Answer, hurt: Damage, out: Path) -> tuple[str, str]:
    code = answer.code
    if code in ("traceback", "hung"):
        return code, answer.detail[-1500:]
    if code == 3:
        return ("error", answer.errors[0]) if len(answer.errors) == 1 else ("misreported", f"{answer.errors}")
    if code == 1:
        return "misreported", "exit 1 (inconsistent) for a damaged image"
    if code != 0:
        return "misreported", f"exit {code}"
    name, kind, pos = hurt.file, hurt.kind, hurt.pos
    if kind in ("fifo", "dev-zero") and name in image.starts:
        return "wrong", f"recovered although {name} is not a regular file"
    flat = "".join(answer.stdout.split())
    regenerated = "outputmismatches│0" in flat and "divergences│none" in flat
    if not regenerated:
        return "wrong", "exit 0 although the recovery reports mismatches or divergences"
    if name in image.starts:  # a log
        start = image.starts[name]
        if kind in ("delete", "swap", "chunk-twice"):
            return "wrong", f"recovered with {kind} {name}"
        if kind in ("cut", "cut-at-boundary"):
            if pos is not None and pos < start:
                return "wrong", f"recovered although {name} now ends at {pos}, before the snapshot's {start}"
            return "recovered", "cut after the snapshot's position: a shorter log or a torn tail"
        if kind == "zero-tail":  # shorter than a chunk header: a torn tail; 28 or more: a header whose CRC fails
            if hurt.added >= CHUNK_HEADER.size:
                return "wrong", f"recovered although {name} ends in {hurt.added} zero bytes (a bad chunk header)"
            return "recovered", "a zero tail shorter than a chunk header is a torn tail"
        if pos is not None and (pos < FILE_HEADER.size or pos >= start):
            return "wrong", f"recovered although a byte recovery reads ({pos}, from {start}) was flipped"
        if not _same_recovery(out, image.pristine):
            return "wrong", "bytes recovery never reads changed what it recovered"
        return "harmless", "a flip before the snapshot's position changed nothing"
    if name.startswith("snapshots/"):
        number = snapshot_number(Path(name)) or 0
        restored = RunDir(out).manifest["recovered_from"]["snapshot"]
        damaged_latest = number == image.latest and kind != "delete"
        if damaged_latest and restored >= number:
            return "wrong", f"restored snapshot {restored} although snapshot {number} was damaged"
        if number != image.latest and not _same_recovery(out, image.pristine):
            return "wrong", "damage to a snapshot recovery does not need changed what it recovered"
        return "recovered", f"restored snapshot {restored}"
    return "harmless", "manifest damage: recovered, every released output regenerated"


# ---------------------------------------------------------------- the campaign

def one_case(runs: list[Run], seed: int, number: int, work: Path) -> tuple[str, str, str, str]:
    """(outcome, what was damaged, why, reproduction)"""
    rng = random.Random(f"case:{seed}:{number}")
    run = rng.choice(runs)
    on_image = bool(run.images) and rng.random() < 0.5
    copy = work / f"case-{number}"
    shutil.rmtree(copy, ignore_errors=True)
    try:
        if on_image:
            image = rng.choice(run.images)
            shutil.copytree(image.path, copy)
            twin = image.twin if image.twin.is_dir() else None
            hurt = damage(copy, twin, rng, rehash=False)
            if hurt is None:
                return "skipped", "", "", ""
            out = work / f"case-{number}-recovered"
            answer = run_cli("recover", copy, "--out", out)
            outcome, why = judge_image(image, answer, hurt, out)
            where = f"image {image.path.name} of {run.label}"
            shutil.rmtree(out, ignore_errors=True)
        else:
            shutil.copytree(run.path, copy)
            hurt = damage(copy, run.twin, rng, rehash=rng.random() < 0.25)
            if hurt is None:
                return "skipped", "", "", ""
            events = len(RunDir(run.path).events())
            answer = run_cli("crash-replay", copy, "--at", rng.randrange(events), "--jobs", 1)
            outcome, why = judge_run_dir(run, answer, hurt, copy)
            where = f"run directory of {run.label}"
        return outcome, f"{where}: {hurt.text}", why, f"--seed {seed} --runs {len(runs)} --case {number}"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to damage (setup not counted)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the runs and of every case")
    parser.add_argument("--runs", type=int, default=4, help="runs to record (each with a twin)")
    parser.add_argument("--case", type=int, default=None, help="replay this one case and print it")
    parser.add_argument("--strict", action="store_true", help="misreported cases fail the campaign too")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args(argv)
    print(f"fuzz_runs: seed {args.seed}, {args.runs} runs, {args.seconds:g} s", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ftmbctl-fuzz-") as tmp:
        folder = Path(tmp)
        runs = prepare(folder / "runs", args.seed, args.runs, print if args.verbose else (lambda _m: None))
        print(f"setup: {len(runs)} runs and {sum(len(r.images) for r in runs)} crash images in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        work = folder / "work"
        work.mkdir()
        numbers = [args.case] if args.case is not None else itertools.count()
        deadline = time.perf_counter() + args.seconds
        tally: Counter[str] = Counter()
        by_kind: Counter[tuple[str, str]] = Counter()
        bad: list[tuple[str, str, str, str]] = []
        cases = 0
        for number in numbers:
            if args.case is None and time.perf_counter() >= deadline:
                break
            outcome, what, why, again = one_case(runs, args.seed, number, work)
            if outcome == "skipped":
                continue
            cases += 1
            tally[outcome] += 1
            by_kind[("image" if what.startswith("image") else "run", outcome)] += 1
            if args.verbose or args.case is not None:
                print(f"[{number}] {outcome}: {what}\n    {why}", flush=True)
            if outcome in FAILURES or (args.strict and outcome == "misreported"):
                bad.append((outcome, what, why, again))
    elapsed = time.perf_counter() - started
    print(f"\n{cases} cases in {elapsed:.1f} s (seed {args.seed})")
    for outcome in ("error", "recovered", "harmless", "misreported", "traceback", "hung", "wrong"):
        print(f"  {outcome:12} {tally[outcome]:6}   (run directories {by_kind[('run', outcome)]}, "
              f"images {by_kind[('image', outcome)]})")
    if bad:
        shown: dict[tuple[str, str], int] = {}
        print(f"\n{len(bad)} failing cases (first of each kind; replay with the options shown):")
        for outcome, what, why, again in bad:
            first = why.strip().splitlines()[-1 if outcome == "traceback" else 0] if why else ""
            key = (outcome, re.sub(r"pal-\d+|\d+", "N", first)[:100])
            shown[key] = shown.get(key, 0) + 1
            if shown[key] == 1:
                print(f"- {outcome}: {what}\n    {why.splitlines()[-1] if outcome == 'traceback' else why}\n"
                      f"    {again}")
        repeats = sum(n - 1 for n in shown.values())
        if repeats:
            print(f"  (and {repeats} more of the same kinds)")
        return 1
    print("no traceback, no hang, no wrong answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
