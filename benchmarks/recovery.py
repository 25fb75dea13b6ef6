"""Recovery cost: it must grow with the inputs since the last snapshot, not with the trace.

For a short trace (the bundled one) and one 10x longer (made by traces/make_trace.py with the
same generator), records nat with 4 queues and a snapshot every 1,000 packets, then crashes at
points whose distance to the last snapshot varies, and recovers from each crash image with no
further arrivals: restore + causal cut + replay of the logged inputs (FTMB's recovery time).
Also measures the verify sweep rate (crash points per second, all cores) on the short trace and
replay throughput against record throughput. Prints numbers; it is not a test.

    python benchmarks/recovery.py            # about a minute on 2 cores
    python benchmarks/recovery.py --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.crash import CrashPoint, image_spec, image_view  # noqa: E402
from ftmbctl.record import RecordConfig, record  # noqa: E402
from ftmbctl.recovery import Recovery  # noqa: E402
from ftmbctl.rundir import RunDir  # noqa: E402
from ftmbctl.verify import SweepConfig, sweep  # noqa: E402


def no_arrivals(_start: int):
    return iter(())


def record_run(trace: Path, out: Path, snapshot_every: int) -> tuple[RunDir, float]:
    started = time.perf_counter()
    result = record(RecordConfig(trace=trace, out=out, middlebox="nat", queues=4, snapshot_every=snapshot_every,
                                 flush_every=32, scheduler="chaos", seed=1, force=True))
    return RunDir(out), result.packets_in / (time.perf_counter() - started)


def recovery_times(run: RunDir, scratch: Path, last_interval_only: bool) -> list[dict]:
    """Recover from crash points at several distances from their snapshot (clean crashes after
    input flushes); with ``last_interval_only`` only points in the last snapshot interval."""
    events = run.events()
    flushes = [i for i, ev in enumerate(events) if ev.name == "input-flush"]
    snap_every = run.manifest["snapshot_every"]
    last_boundary = (events[-1].input_records - 1) // snap_every * snap_every
    rows = []
    for index in flushes:
        ev = events[index]
        boundary = ev.snapshot * snap_every if ev.snapshot > 0 else 0
        if last_interval_only and boundary != last_boundary:
            continue
        since = ev.input_records - boundary
        if since % 160 > 32 or since == 0:  # a handful of distances per interval
            continue
        image = image_view(run, image_spec(run, events, CrashPoint(index)))
        out = scratch / "recovered"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        recovery = Recovery(image, no_arrivals, out)  # restore the snapshot, read the logs, causal cut
        restored = time.perf_counter()
        res = recovery.recover()  # replay
        done = time.perf_counter()
        rows.append({"event": index, "since_snapshot": since, "seconds": round(done - started, 4),
                     "restore_seconds": round(restored - started, 4), "replay_seconds": round(done - restored, 4),
                     "state_bytes": snapshot_bytes(run, ev.snapshot),
                     "replayed_inputs": res.inputs_processed, "trace_position": ev.input_records})
    return rows


def snapshot_bytes(run: RunDir, number: int) -> int:
    path = run.path / "snapshots" / f"snap-{number:06d}.snap"
    return path.stat().st_size if number > 0 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sweep-points", type=int, default=60)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ftmbctl-bench-"))
    try:
        short_trace = ROOT / "traces" / "mixed.pcap"
        long_trace = tmp / "long.pcap"
        subprocess.run([sys.executable, str(ROOT / "traces" / "make_trace.py"), "--seed", "1", "--packets", "30000",
                        "--out", str(long_trace)], check=True, capture_output=True)
        short, record_pps = record_run(short_trace, tmp / "short", 1000)
        long, _ = record_run(long_trace, tmp / "long", 1000)
        short_rows = recovery_times(short, tmp, last_interval_only=False)
        long_rows = recovery_times(long, tmp, last_interval_only=True)

        def near(rows, lo, hi, key="seconds"):
            values = [r[key] for r in rows if lo <= r["since_snapshot"] < hi]
            return statistics.median(values) if values else None

        late_short, late_long = near(short_rows, 600, 1000), near(long_rows, 600, 1000)
        replay_short, replay_long = near(short_rows, 600, 1000, "replay_seconds"), near(long_rows, 600, 1000,
                                                                                          "replay_seconds")
        restore_short, restore_long = near(short_rows, 600, 1000, "restore_seconds"), near(long_rows, 600, 1000,
                                                                                             "restore_seconds")
        replay_pps = [r["replayed_inputs"] / r["replay_seconds"] for r in short_rows if r["since_snapshot"] >= 600]
        started = time.perf_counter()
        report = sweep(short.path, SweepConfig(sample=args.sweep_points, seed=1, torn=True))
        sweep_seconds = time.perf_counter() - started
        result = {
            "recovery_vs_inputs_since_snapshot": [{"since_snapshot": r["since_snapshot"], "seconds": r["seconds"]}
                                                  for r in short_rows],
            "recovery_late_short_s": late_short,
            "recovery_late_long_s": late_long,
            "recovery_scaling": round(late_long / late_short, 3) if late_short and late_long else None,
            "replay_scaling": round(replay_long / replay_short, 3) if replay_short and replay_long else None,
            "restore_late_short_s": restore_short, "restore_late_long_s": restore_long,
            "state_bytes_short": max(r["state_bytes"] for r in short_rows),
            "state_bytes_long": max(r["state_bytes"] for r in long_rows),
            "replay_pps": round(statistics.median(replay_pps)) if replay_pps else None,
            "record_pps": round(record_pps),
            "replay_vs_record": round(statistics.median(replay_pps) / record_pps, 3) if replay_pps else None,
            "sweep_points": len(report.points),
            "sweep_consistent": report.consistent,
            "sweep_rate": round(len(report.points) / sweep_seconds, 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print("recovery time vs inputs since the last snapshot (nat, 4 queues, snapshot every 1,000, bundled trace):")
    for row in result["recovery_vs_inputs_since_snapshot"]:
        print(f"  {row['since_snapshot']:>5} inputs since snapshot: {row['seconds'] * 1000:7.1f} ms")
    print("  (one line per crash point: each snapshot interval of the trace in turn)")
    print(f"late crash (600-999 inputs since snapshot): {result['recovery_late_short_s'] * 1000:.1f} ms on 3,000 "
          f"packets, {result['recovery_late_long_s'] * 1000:.1f} ms on 30,000: recovery_scaling = "
          f"{result['recovery_scaling']}   (target: near 1)")
    print(f"  of which restore (snapshot decode and load, logs, causal cut): {result['restore_late_short_s'] * 1000:.1f}"
          f" ms vs {result['restore_late_long_s'] * 1000:.1f} ms; the snapshot holds {result['state_bytes_short']:,} vs "
          f"{result['state_bytes_long']:,} bytes of state (live NAT mappings)")
    print(f"  and replay: replay_scaling = {result['replay_scaling']}")
    print(f"replay {result['replay_pps']:,} packets/s vs record {result['record_pps']:,} packets/s: "
          f"replay_vs_record = {result['replay_vs_record']}   (target >= 1.0)")
    print(f"verify sweep: {result['sweep_points']} crash points, consistent={result['sweep_consistent']}, "
          f"sweep_rate = {result['sweep_rate']} crash points/s   (target >= 20)")


if __name__ == "__main__":
    main()
