"""The benchmark suite: what FTMB costs and how recovery scales, measured in one run.

``run_benchmarks`` measures each metric of ``METRICS`` on one trace and returns a JSON-able
dict: the machine, the configuration, and per metric its value, unit, target, whether the target
is met, and the raw numbers behind it. A missed target is a result, not an error; a measurement
that cannot be made raises ``MeasurementFailed`` (one sentence). A metric whose prerequisite is
missing from this version of the tool is reported as unavailable, with the reason.

benchmarks/run.py and ``ftmbctl bench`` are the callers; nothing here knows about a terminal.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ftmbctl import defaults
from ftmbctl import records as rec
from ftmbctl.bench_memory import measure_peak_rss
from ftmbctl.bundled import BUNDLED_TRACE, MAKE_TRACE
from ftmbctl.components import COMPONENTS, NONE
from ftmbctl.crash import CrashPoint, image_spec, image_view
from ftmbctl.errors import MAX_QUEUES, SEED_MAX, U32_MAX, FtmbError, UsageError, check_range
from ftmbctl.pcapio import read_trace_info
from ftmbctl.promises import promise_totals
from ftmbctl.queuelog import QueueDecoder
from ftmbctl.record import RecordConfig, record
from ftmbctl.recovery import Recovery
from ftmbctl.rundir import RunDir
from ftmbctl.stats import median, percentile
from ftmbctl.store import CHUNK_HEADER
from ftmbctl.verify import SweepConfig, sweep, usable_cpus

METRICS = ("record_overhead", "record_overhead_threads", "guard_overhead", "engine_vs_direct", "record_vs_parse",
           "release_delay", "replay_vs_record", "recovery_scaling", "pal_bytes", "sweep_rate", "peak_rss_ratio",
           "lost_components")
GUARD_TARGET = 1.05  # FTMB record with the runtime guard on (record's default) / with it off
OVERHEAD_TARGET = {"chaos": 1.15, "threads": 1.5}  # FTMB record time / vanilla record time, per scheduler
ENGINE_TARGET = 0.7  # direct run time / vanilla chaos record time
SWEEP_TARGET = 60  # crash points per second
LATE = 0.6  # a "late" crash: at least this fraction of a snapshot interval after the snapshot
RSS_LIMIT_MB = 300
TARGET_RSS_PACKETS = (100_000, 1_000_000)
# What the FTMB paper (SIGCOMM 2015, C++ on Click) measured for the same quantity, where it did:
# in words beside each metric, and as numbers for the figures of `ftmbctl bench --html`.
PAPER = {"record_overhead": "5-30% throughput cost",
         "release_delay": "FTMB adds 30 µs median; snapshot-only designs add 8-50 ms",
         "recovery_scaling": "recovery 40-275 ms"}
PAPER_FTMB_DELAY_US = 30.0
PAPER_SNAPSHOT_DELAY_MS = (8.0, 50.0)
PAPER_RECOVERY_MS = (40.0, 275.0)

Progress = Callable[[str], None]


class MeasurementFailed(FtmbError):
    """A measurement could not be made; the exit code is that of the underlying error (1 if none)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class BenchConfig:
    trace: Path = BUNDLED_TRACE
    middlebox: str = "nat"
    queues: int = defaults.QUEUES
    scheduler: str = "chaos"  # of the record runs behind record_overhead, record_vs_parse, replay, sweep
    snapshot_every: int = defaults.SNAPSHOT_EVERY
    flush_every: int = defaults.FLUSH_EVERY
    seed: int = defaults.SEED
    repeat: int | None = None  # measured record pairs after one warm-up pair (default 7, quick 2)
    quick: bool = False
    only: list[str] = field(default_factory=list)  # empty: every metric
    pair_packets: int | None = None  # short trace of recovery_scaling (default min(trace, 3000); quick 1000)
    rss_packets: tuple[int, int] | None = None  # peak_rss_ratio sizes (default 100,000 and 1,000,000)
    sweep_points: int | None = None  # random crash points of sweep_rate, plus torn and chain (default 40)
    rss_sample: int = 20  # random crash points of each peak_rss_ratio run

    def resolved(self) -> BenchConfig:
        """A copy with every default filled in, checked."""
        cfg = BenchConfig(**{**asdict(self), "only": list(self.only)})
        cfg.trace = Path(cfg.trace)
        unknown = [m for m in cfg.only if m not in METRICS]
        if unknown:
            raise UsageError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        cfg.repeat = cfg.repeat if cfg.repeat is not None else (2 if cfg.quick else 7)
        cfg.rss_packets = tuple(cfg.rss_packets) if cfg.rss_packets else (
            (2_000, 20_000) if cfg.quick else TARGET_RSS_PACKETS)
        cfg.sweep_points = cfg.sweep_points if cfg.sweep_points is not None else (20 if cfg.quick else 40)
        check_range("--repeat", cfg.repeat, 1)
        check_range("--queues", cfg.queues, 1, MAX_QUEUES)
        check_range("--snapshot-every", cfg.snapshot_every, 1, U32_MAX)
        check_range("--flush-every", cfg.flush_every, 1, U32_MAX)
        check_range("--seed", cfg.seed, 0, SEED_MAX)
        if cfg.pair_packets is not None:
            check_range("--pair-packets", cfg.pair_packets, 1)
        if len(cfg.rss_packets) != 2 or not 0 < cfg.rss_packets[0] < cfg.rss_packets[1]:
            raise UsageError(f"--rss-packets must be two sizes, small then large, each at least 1, "
                             f"got {cfg.rss_packets}")
        check_range("--rss-sample", cfg.rss_sample, 1)  # crash-replay --random N: at least 1
        check_range("--sweep-points", cfg.sweep_points, 0)
        if cfg.scheduler not in ("chaos", "threads"):
            raise UsageError(f"--scheduler must be chaos or threads, got {cfg.scheduler!r}")
        return cfg


# ---- small pure helpers ----
def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def spread(items: list[Any], k: int) -> list[Any]:
    """At most ``k`` items evenly spaced over ``items``, always including the last one."""
    if k <= 0:
        return []
    if len(items) <= k:
        return list(items)
    step = (len(items) - 1) / (k - 1) if k > 1 else 0
    picked = {len(items) - 1 - round(i * step) for i in range(k)}
    return [items[i] for i in sorted(picked)]


def metric(value: float | None, unit: str, target: str, met: bool | None, detail: str,
           raw: dict[str, Any]) -> dict[str, Any]:
    return {"value": None if value is None else round(value, 4), "unit": unit, "target": target,
            "met": met, "detail": detail, "raw": raw}


def unavailable(unit: str, target: str, reason: str) -> dict[str, Any]:
    return {"value": None, "unit": unit, "target": target, "met": None, "unavailable": reason, "raw": {}}


def format_value(m: dict[str, Any]) -> str:
    value = m.get("value")
    if value is None:
        return "unavailable"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{text}x" if m["unit"] == "x" else f"{text} {m['unit']}"


def format_met(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "not met"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per metric: metric, value, target, met, details (or why it is unavailable)."""
    return [[name, format_value(m), m["target"], format_met(m["met"]), m.get("unavailable") or m.get("detail", "")]
            for name, m in result["metrics"].items()]


def format_table(result: dict[str, Any]) -> str:
    rows = [["metric", "value", "target", "met", "details"], *table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths)), row[4]]).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in [*widths, len("details")]))
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": f"{platform.python_implementation()} {platform.python_version()}"}


def machine_line(machine: dict[str, Any]) -> str:
    return f"{machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}"


# ---- the measurements ----
class Bench:
    """One benchmark run: its configuration, scratch directory, and the runs metrics share."""

    def __init__(self, cfg: BenchConfig, workdir: Path, progress: Progress | None) -> None:
        self.cfg = cfg
        self.tmp = workdir
        self.say = progress or (lambda _message: None)
        self.packets = read_trace_info(cfg.trace).packet_count
        self._times: dict[str, dict[str, Any]] = {}  # per scheduler
        self._main: RunDir | None = None

    def record_config(self, trace: Path, out: Path, **changes: Any) -> RecordConfig:
        cfg = self.cfg
        # lint reads the source once before a record: a fixed cost, no part of recording (the
        # runtime guard, on by default, is measured: guard_overhead)
        fields = dict(trace=trace, out=out, middlebox=cfg.middlebox, queues=cfg.queues,
                      snapshot_every=cfg.snapshot_every, flush_every=cfg.flush_every, scheduler=cfg.scheduler,
                      seed=cfg.seed, force=True, lint=False)
        return RecordConfig(**{**fields, **changes})

    def record_times(self, scheduler: str | None = None) -> dict[str, Any]:
        """FTMB and vanilla record times under ``scheduler`` (default: the configured one),
        interleaved (ftmb, vanilla, ftmb, ...) so that machine noise hits both alike; the first
        pair warms caches and imports and is dropped. The last FTMB run of the configured
        scheduler is kept as the run the other metrics read."""
        scheduler = scheduler or self.cfg.scheduler
        if scheduler not in self._times:
            times: dict[str, list[float]] = {"ftmb": [], "vanilla": []}
            keep = scheduler == self.cfg.scheduler and self._main is None
            for i in range(self.cfg.repeat + 1):
                self.say(f"record_overhead ({scheduler}): pair {i + 1} of {self.cfg.repeat + 1}"
                         f"{' (warm-up)' if i == 0 else ''}")
                for mode in ("ftmb", "vanilla"):
                    # a fresh directory each time: replacing an old run is not a cost of FTMB
                    out = self.tmp / f"pair-{scheduler}-{i}-{mode}"
                    seconds = timed_record(self.record_config(self.cfg.trace, out, mode=mode, scheduler=scheduler))
                    if i:
                        times[mode].append(seconds)
                    if not (keep and mode == "ftmb" and i == self.cfg.repeat):
                        shutil.rmtree(out, ignore_errors=True)
            if keep:
                self._main = RunDir(self.tmp / f"pair-{scheduler}-{self.cfg.repeat}-ftmb")
            self._times[scheduler] = {"ftmb_s": [round(t, 4) for t in times["ftmb"]],
                                      "vanilla_s": [round(t, 4) for t in times["vanilla"]],
                                      "ftmb_median_s": median(times["ftmb"]),
                                      "vanilla_median_s": median(times["vanilla"])}
        return self._times[scheduler]

    def main_run(self) -> RunDir:
        """The FTMB record of the trace with the configured settings."""
        if self._main is None:
            self.say("recording the trace")
            out = self.tmp / "main"
            timed_record(self.record_config(self.cfg.trace, out))
            self._main = RunDir(out)
        return self._main

    def record_pps(self) -> float:
        return self.packets / self.record_times()["ftmb_median_s"]

    def make_trace(self, packets: int) -> Path:
        if not MAKE_TRACE.is_file():
            raise MeasurementFailed(f"{MAKE_TRACE} is not there: this installation of ftmbctl lacks its trace maker")
        path = self.tmp / f"generated-{packets}.pcap"
        if not path.exists():
            self.say(f"making a {packets:,}-packet trace with traces/make_trace.py")
            done = subprocess.run([sys.executable, str(MAKE_TRACE), "--seed", "1", "--packets", str(packets),
                                   "--out", str(path)], capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise MeasurementFailed(f"traces/make_trace.py failed to make {packets} packets: {last}")
        return path


def timed_record(cfg: RecordConfig) -> float:
    started = time.perf_counter()
    result = record(cfg)
    seconds = time.perf_counter() - started
    if result.interrupted:  # a signal ended the record early: its numbers would describe another trace
        raise KeyboardInterrupt
    return seconds


def no_arrivals(_start: int) -> Iterator[Any]:
    return iter(())


def flush_points(run: RunDir, events: list[rec.Event]) -> list[tuple[int, int, int]]:
    """(event index, boundary of the latest snapshot, inputs logged since it) of every input flush."""
    every = run.manifest["snapshot_every"]
    points = []
    for index, ev in enumerate(events):
        if ev.kind == rec.EV_INPUT_FLUSH:
            boundary = ev.snapshot * every if ev.snapshot > 0 else 0
            if ev.input_records > boundary:
                points.append((index, boundary, ev.input_records - boundary))
    return points


def is_late(since: int, every: int) -> bool:
    return since >= LATE * every


def time_recovery(run: RunDir, events: list[rec.Event], index: int, scratch: Path) -> dict[str, Any]:
    """Recover from a clean crash after event ``index`` with no further arrivals: restore the
    snapshot, read the logs and cut (restore), then replay the logged inputs (replay)."""
    image = image_view(run, image_spec(run, events, CrashPoint(index)))
    out = scratch / "recovered"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    # a run this benchmark recorded itself, with the middlebox its configuration names
    recovery = Recovery(image, no_arrivals, out, middlebox=run.manifest["middlebox"]["spec"])
    restored = time.perf_counter()
    res = recovery.recover()
    done = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    snapshot = run.path / "snapshots" / f"snap-{res.snapshot:06d}.snap"
    return {"event": index, "since_snapshot": events[index].input_records - res.boundary,
            "trace_position": events[index].input_records, "seconds": round(done - started, 5),
            "restore_seconds": round(restored - started, 5), "replay_seconds": round(done - restored, 5),
            "replayed_inputs": res.inputs_processed,
            "state_bytes": snapshot.stat().st_size if res.snapshot > 0 else 0}


def recovery_curve(run: RunDir, scratch: Path, late: int, early: int = 0,
                   last_interval_only: bool = True) -> list[dict[str, Any]]:
    """Recovery times for ``late`` late crash points (and ``early`` ones spread over the whole
    interval), in the last snapshot interval that has late crash points, or in every interval."""
    events = run.events()
    every = run.manifest["snapshot_every"]
    points = flush_points(run, events)
    late_points = [p for p in points if is_late(p[2], every)]
    if last_interval_only and late_points:
        last = max(p[1] for p in late_points)
        points = [p for p in points if p[1] == last]
        late_points = [p for p in late_points if p[1] == last]
    chosen = sorted(set(spread(late_points, late)) | set(spread(points, early)))
    return [time_recovery(run, events, index, scratch) for index, _boundary, _since in chosen]


# one function per metric: each returns metric(...) or unavailable(...)
def overhead(b: Bench, scheduler: str) -> dict[str, Any]:
    t = b.record_times(scheduler)
    value = ratio(t["ftmb_median_s"], t["vanilla_median_s"])
    limit = OVERHEAD_TARGET[scheduler]
    detail = (f"ftmb {t['ftmb_median_s']:.3f} s, vanilla {t['vanilla_median_s']:.3f} s, median of "
              f"{b.cfg.repeat} interleaved pairs, {scheduler} scheduler")
    raw = {**t, "scheduler": scheduler, "packets": b.packets, "ftmb_pps": round(b.packets / t["ftmb_median_s"]),
           "vanilla_pps": round(b.packets / t["vanilla_median_s"])}
    return metric(value, "x", f"<= {limit}", value <= limit, detail, raw)


def record_overhead(b: Bench) -> dict[str, Any]:
    return overhead(b, b.cfg.scheduler)


def record_overhead_threads(b: Bench) -> dict[str, Any]:
    return overhead(b, "threads")


def guard_overhead(b: Bench) -> dict[str, Any]:
    """What the runtime guard costs a record: FTMB records with it on (the default) and off,
    interleaved pairs under the configured scheduler, the first dropped."""
    times: dict[str, list[float]] = {"warn": [], "off": []}
    for i in range(b.cfg.repeat + 1):
        b.say(f"guard_overhead: pair {i + 1} of {b.cfg.repeat + 1}{' (warm-up)' if i == 0 else ''}")
        for mode in ("warn", "off"):
            seconds = timed_record(b.record_config(b.cfg.trace, b.tmp / f"guard-{mode}", guard=mode))
            if i:
                times[mode].append(seconds)
    value = ratio(median(times["warn"]), median(times["off"]))
    detail = (f"guard on {median(times['warn']):.3f} s, off {median(times['off']):.3f} s, median of "
              f"{b.cfg.repeat} interleaved pairs, {b.cfg.scheduler} scheduler")
    raw = {"on_s": [round(t, 4) for t in times["warn"]], "off_s": [round(t, 4) for t in times["off"]],
           "on_median_s": median(times["warn"]), "off_median_s": median(times["off"])}
    return metric(value, "x", f"<= {GUARD_TARGET}", value <= GUARD_TARGET, detail, raw)


def direct_seconds(b: Bench) -> float:
    """One direct run of the trace (direct.py): read, parse, flow-hash, process, in one loop."""
    from ftmbctl.direct import run_direct
    from ftmbctl.middlebox import Packet, build_middlebox
    from ftmbctl.pcapio import iter_packets

    middlebox = build_middlebox(b.cfg.middlebox, [])
    started = time.perf_counter()
    run_direct(middlebox, (Packet(p.index, p.ts_ns, p.linktype, p.data) for p in iter_packets(b.cfg.trace)),
               queues=b.cfg.queues)
    return time.perf_counter() - started


def engine_vs_direct(b: Bench) -> dict[str, Any]:
    """What the engine costs a middlebox: the direct run's time over the vanilla record's under
    chaos (every queue a coroutine, a seeded choice at every shared access, nothing logged),
    interleaved pairs, the first dropped."""
    direct, vanilla = [], []
    for i in range(b.cfg.repeat + 1):
        b.say(f"engine_vs_direct: pair {i + 1} of {b.cfg.repeat + 1}{' (warm-up)' if i == 0 else ''}")
        d = direct_seconds(b)
        v = timed_record(b.record_config(b.cfg.trace, b.tmp / "engine-vanilla", mode="vanilla", scheduler="chaos"))
        if i:
            direct.append(d)
            vanilla.append(v)
    value = ratio(median(direct), median(vanilla))
    detail = (f"direct {median(direct):.3f} s, vanilla record under chaos {median(vanilla):.3f} s, median of "
              f"{b.cfg.repeat} interleaved pairs")
    raw = {"direct_s": [round(t, 4) for t in direct], "vanilla_s": [round(t, 4) for t in vanilla],
           "direct_median_s": median(direct), "vanilla_median_s": median(vanilla), "packets": b.packets}
    return metric(value, "x", f">= {ENGINE_TARGET}", value >= ENGINE_TARGET, detail, raw)


def dpkt_parse_seconds(trace: Path) -> tuple[int, float]:
    """One bare dpkt read-and-parse pass over a capture: (packets, seconds)."""
    import gzip

    import dpkt

    decoders = {1: dpkt.ethernet.Ethernet, 12: dpkt.ip.IP, 101: dpkt.ip.IP, 113: dpkt.sll.SLL,
                228: dpkt.ip.IP, 229: dpkt.ip6.IP6}
    started = time.perf_counter()
    with open(trace, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        handle = gzip.GzipFile(fileobj=raw) if gzipped else raw
        pcapng = handle.read(4) == b"\x0a\x0d\x0d\x0a"
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if pcapng else dpkt.pcap.Reader(handle)
        decode = decoders.get(reader.datalink(), dpkt.ethernet.Ethernet)
        count = 0
        for _ts, buf in reader:
            try:
                decode(buf)
            except (dpkt.UnpackError, ValueError):  # a malformed packet is parsed as far as it goes
                pass
            count += 1
    return count, time.perf_counter() - started


def record_vs_parse(b: Bench) -> dict[str, Any]:
    b.say("record_vs_parse: dpkt read-and-parse loop")
    runs = []
    for _ in range(max(3, b.cfg.repeat)):
        try:
            runs.append(dpkt_parse_seconds(b.cfg.trace))
        except Exception as exc:  # dpkt raises its own and stdlib types for a capture it cannot read
            raise MeasurementFailed(f"dpkt cannot read {b.cfg.trace}: {type(exc).__name__}: {exc}") from exc
    count, best = min(runs, key=lambda r: r[1])
    parse_pps, record_pps = count / best, b.record_pps()
    value = record_pps / parse_pps
    detail = f"record {record_pps:,.0f} packets/s, dpkt parse {parse_pps:,.0f} packets/s (best of {len(runs)})"
    raw = {"record_pps": round(record_pps), "parse_pps": round(parse_pps), "parse_packets": count,
           "parse_best_s": round(best, 5), "parse_runs_s": [round(r[1], 5) for r in runs]}
    return metric(value, "x", ">= 0.5", value >= 0.5, detail, raw)


def release_delays(b: Bench, mode: str) -> dict[str, Any]:
    out = b.tmp / f"release-{mode}"
    timed_record(b.record_config(b.cfg.trace, out, scheduler="threads", mode=mode))
    delays = [o.release_ns - o.finish_ns for o in RunDir(out).outputs()]
    shutil.rmtree(out, ignore_errors=True)
    if not delays:
        raise MeasurementFailed(f"the {mode} record of {b.cfg.trace} released no outputs: no delay to measure")
    return {"outputs": len(delays), "median_us": round(median(delays) / 1e3, 2),
            "p99_us": round(percentile(delays, 99) / 1e3, 2)}


def release_delay(b: Bench) -> dict[str, Any]:
    target = ">= 100"
    b.say("release_delay: threads record, replay mode")
    replay = release_delays(b, "ftmb")
    b.say("release_delay: threads record, no-replay mode")
    no_replay = release_delays(b, "no-replay")
    value = ratio(no_replay["median_us"], replay["median_us"])
    detail = (f"median {no_replay['median_us']:,.0f} µs no-replay / {replay['median_us']:,.0f} µs replay; p99 "
              f"{no_replay['p99_us']:,.0f} / {replay['p99_us']:,.0f} µs (threads, snapshot every "
              f"{b.cfg.snapshot_every:,})")
    raw = {"replay": replay, "no_replay": no_replay, "clock": "wall", "snapshot_every": b.cfg.snapshot_every}
    return metric(value, "x", target, None if value is None else value >= 100, detail, raw)


def replay_vs_record(b: Bench) -> dict[str, Any]:
    record_pps = b.record_pps()
    b.say("replay_vs_record: recovering from late crashes")
    rows = recovery_curve(b.main_run(), b.tmp, late=3 if b.cfg.quick else 6, last_interval_only=False)
    rates = [r["replayed_inputs"] / r["replay_seconds"] for r in rows if r["replay_seconds"] > 0]
    if not rates:
        raise MeasurementFailed(f"{b.cfg.trace}: no crash point with inputs to replay (is the trace shorter "
                                f"than --flush-every?)")
    replay_pps = median(rates)
    value = replay_pps / record_pps
    detail = f"replay {replay_pps:,.0f} packets/s ({len(rows)} late crashes), record {record_pps:,.0f} packets/s"
    raw = {"replay_pps": round(replay_pps), "record_pps": round(record_pps), "crashes": rows,
           "replay_scheduler": "chaos (recovery always replays deterministically)"}
    return metric(value, "x", ">= 1.0", value >= 1.0, detail, raw)


def recovery_scaling(b: Bench) -> dict[str, Any]:
    short_n = b.cfg.pair_packets or min(b.packets, 1000 if b.cfg.quick else 3000)
    runs = {}
    for name, packets in (("short", short_n), ("long", 10 * short_n)):
        trace = b.make_trace(packets)
        b.say(f"recovery_scaling: recording the {packets:,}-packet trace")
        runs[name] = b.tmp / f"pair-{name}"
        timed_record(b.record_config(trace, runs[name]))
    b.say("recovery_scaling: recovering from late crashes")
    late = 3 if b.cfg.quick else 5
    short = recovery_curve(RunDir(runs["short"]), b.tmp, late=late, early=0 if b.cfg.quick else 6)
    long = recovery_curve(RunDir(runs["long"]), b.tmp, late=late)
    every = b.cfg.snapshot_every

    def late_median(rows: list[dict[str, Any]], key: str = "seconds") -> float | None:
        return median([r[key] for r in rows if is_late(r["since_snapshot"], every)])

    short_s, long_s = late_median(short), late_median(long)
    if short_s is None or long_s is None:
        raise MeasurementFailed(f"no late crash point (at least {math.ceil(LATE * every)} inputs after a snapshot) "
                                f"in the {short_n:,}-packet trace: use a smaller --snapshot-every")
    value = long_s / short_s
    detail = (f"late crash {short_s * 1e3:.0f} ms on {short_n:,} packets, {long_s * 1e3:.0f} ms on "
              f"{10 * short_n:,} (snapshot every {every:,})")
    raw = {"short_packets": short_n, "long_packets": 10 * short_n, "trace_source": "traces/make_trace.py --seed 1",
           "late_short_s": short_s, "late_long_s": long_s,
           "replay_scaling": ratio(late_median(long, "replay_seconds"), late_median(short, "replay_seconds")),
           "restore_late_short_s": late_median(short, "restore_seconds"),
           "restore_late_long_s": late_median(long, "restore_seconds"), "short": short, "long": long}
    return metric(value, "x", "<= 1.5", value <= 1.5, detail, raw)


def pal_bytes(b: Bench) -> dict[str, Any]:
    run = b.main_run()
    b.say("pal_bytes: reading the queue logs")
    stored = pals = unchanged = nondet = chunks = 0
    for name in run.queue_log_names():
        stored += (run.path / name).stat().st_size
        log, decode = run.log(name), QueueDecoder()
        for chunk in log.chunks():
            chunks += 1
            for record_ in log.decode(chunk, decode):
                if type(record_) is rec.PalRecord:
                    pals += 1
                    unchanged += record_.digest is None
                else:
                    nondet += 1
    inputs = run.chunk_index("input.log").records  # from the chunk headers: no packet is decoded
    if not pals:
        return unavailable("B/PAL", "<= 6", f"the {b.cfg.middlebox} record logged no PAL on {b.cfg.trace}")
    value = stored / pals
    detail = (f"{stored:,} B in {len(run.queue_log_names())} queue logs for {pals:,} PALs and {nondet:,} "
              f"non-deterministic values; {stored / max(inputs, 1):.1f} B per input packet")
    raw = {"stored_bytes": stored, "pals": pals, "unchanged_pals": unchanged, "nondet_records": nondet,
           "chunks": chunks, "chunk_header_bytes": chunks * CHUNK_HEADER.size, "input_packets": inputs,
           "bytes_per_input_packet": round(stored / max(inputs, 1), 3),
           "counted": "whole pal-<q>.log files (headers, chunk headers, PALs with digests, ND records)"}
    return metric(value, "B/PAL", "<= 6", value <= 6, detail, raw)


def sweep_rate(b: Bench) -> dict[str, Any]:
    b.say(f"sweep_rate: verify sweep of {b.cfg.sweep_points} random crash points with torn variants")
    started = time.perf_counter()
    # --sweep-points 0: the snapshot chain alone (a SweepConfig's sample is None or at least 1)
    report = sweep(b.main_run().path, SweepConfig(sample=b.cfg.sweep_points or None, seed=1, torn=True, jobs=0,
                                                            middlebox=b.cfg.middlebox))
    seconds = time.perf_counter() - started
    value = len(report.points) / seconds
    detail = (f"{len(report.points)} crash points in {seconds:.1f} s on {usable_cpus()} CPUs, "
              f"{'consistent' if report.consistent else 'INCONSISTENT'}")
    raw = {"points": len(report.points), "seconds": round(seconds, 3), "consistent": report.consistent,
           "random": b.cfg.sweep_points, "seed": 1, "torn": True, "jobs": report.selection["jobs"]}
    return metric(value, "points/s", f">= {SWEEP_TARGET}", value >= SWEEP_TARGET, detail, raw)


def peak_rss_ratio(b: Bench) -> dict[str, Any]:
    target = f"<= 1.3 and < {RSS_LIMIT_MB} MB"
    small_n, large_n = b.cfg.rss_packets
    peaks = {}
    for n in (small_n, large_n):
        peaks[n] = measure_peak_rss(n, b.tmp / f"rss-{n}", middlebox=b.cfg.middlebox,
                                                 queues=b.cfg.queues, seed=b.cfg.seed, sample=b.cfg.rss_sample,
                                                 jobs=1, progress=lambda message: b.say(f"peak_rss_ratio: {message}"))
    small, large = peaks[small_n]["peak_mb"], peaks[large_n]["peak_mb"]
    value = large / small
    target_sizes = (small_n, large_n) == TARGET_RSS_PACKETS
    detail = f"peak {large:.0f} MB vs {small:.0f} MB at {large_n:,} vs {small_n:,} packets" + (
        "" if target_sizes else f" ({'--quick' if b.cfg.quick else 'chosen'} sizes, not the target's "
                                f"{TARGET_RSS_PACKETS[1]:,} vs {TARGET_RSS_PACKETS[0]:,})")
    raw = {"small": peaks[small_n], "large": peaks[large_n], "sizes": [small_n, large_n],
           "target_sizes": target_sizes}
    return metric(value, "x", target, value <= 1.3 and large < RSS_LIMIT_MB, detail, raw)


def lost_components(b: Bench) -> dict[str, Any]:
    """What breaks when the IL, the stable storage or the OL fails with the master (crash-replay
    --also-lose, formats/components.md): on an FTMB and a No-Replay record of the trace, the share
    of a seeded sample of crash points at which each loss (and the master alone) breaks a promise
    about what left the box (a released output lost or sent twice) and one about inputs (lost),
    with the counts by kind in ``raw``. The value is FTMB's worst component for outputs; the target,
    no new point of failure, is what replicating every component buys."""
    points = b.cfg.sweep_points
    if not points:
        return unavailable("%", "0 %", "--sweep-points 0 selects no crash point to lose a component at")
    runs = {"ftmb": b.main_run().path, "no-replay": b.tmp / "lost-no-replay"}
    b.say("lost_components: recording the trace in no-replay mode")
    timed_record(b.record_config(b.cfg.trace, runs["no-replay"], mode="no-replay"))
    designs: dict[str, dict[str, Any]] = {}
    for design, path in runs.items():
        for loss in (NONE, *COMPONENTS):
            b.say(f"lost_components: {design}, {points} crash points, --also-lose {loss}")
            report = sweep(path, SweepConfig(sample=points, seed=1, chain=False, jobs=0, middlebox=b.cfg.middlebox,
                                             also_lose=(loss,)))
            totals = promise_totals(report.points)
            if totals is None:
                raise MeasurementFailed(f"no crash point of the {design} record recovered with {loss} lost")
            broken = [p["promises_broken"] for p in report.points if "promises_broken" in p]
            outputs = sum(1 for m in broken if m["released_not_regenerated"] or m["released_twice"])
            designs.setdefault(design, {})[loss] = {
                **totals, "consistent": report.consistent,
                "outputs_share": round(100 * outputs / len(broken), 1),
                "inputs_share": round(100 * totals["by_kind"]["inputs_lost"]["crash_points"] / len(broken), 1)}

    def shares(key: str) -> str:
        return ", ".join(f"{'alone' if loss == NONE else '+' + loss} {designs['ftmb'][loss][key]:.0f}%/"
                         f"{designs['no-replay'][loss][key]:.0f}%" for loss in (NONE, *COMPONENTS))

    value = max(designs["ftmb"][c]["outputs_share"] for c in COMPONENTS)
    consistent = all(row["consistent"] for rows in designs.values() for row in rows.values())
    detail = (f"crash points (FTMB/No-Replay) where a released output is lost or sent twice: {shares('outputs_share')}"
              f"; where inputs are lost: {shares('inputs_share')} ({points} random points each, seed 1"
              f"{'' if consistent else '; INCONSISTENT'})")
    raw = {"random": points, "seed": 1, "designs": designs}
    return metric(value, "%", "0 %", value == 0, detail, raw)


MEASURE: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "record_overhead": record_overhead, "record_overhead_threads": record_overhead_threads,
    "guard_overhead": guard_overhead,
    "engine_vs_direct": engine_vs_direct, "record_vs_parse": record_vs_parse, "release_delay": release_delay,
    "replay_vs_record": replay_vs_record, "recovery_scaling": recovery_scaling, "pal_bytes": pal_bytes,
    "sweep_rate": sweep_rate, "peak_rss_ratio": peak_rss_ratio, "lost_components": lost_components,
}


def run_benchmarks(cfg: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure the selected metrics (all by default) in ``METRICS`` order; see the module doc."""
    cfg = cfg.resolved()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ftmbctl-bench-"))
    try:
        bench = Bench(cfg, tmp, progress)
        metrics = {}
        for name in (m for m in METRICS if not cfg.only or m in cfg.only):
            began = time.perf_counter()
            try:
                measured = MEASURE[name](bench)
            except FtmbError as exc:
                raise MeasurementFailed(f"{name} could not be measured: {exc}", exc.exit_code) from exc
            except Exception as exc:  # one sentence, never a traceback; the cause stays chained
                raise MeasurementFailed(f"{name} could not be measured: {type(exc).__name__}: {exc}") from exc
            metrics[name] = {**measured, "seconds": round(time.perf_counter() - began, 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = {**asdict(cfg), "trace": str(cfg.trace), "packets": bench.packets,
              "rss_packets": list(cfg.rss_packets)}
    return {"machine": machine_info(), "config": config, "metrics": metrics,
            "seconds": round(time.perf_counter() - started, 2)}
