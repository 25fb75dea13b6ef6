"""Record throughput with FTMB instrumentation vs. the vanilla run of the same middlebox.

Both runs use the same trace, middlebox, queues and scheduler; the vanilla run has no logging, no
snapshots and no release holding (record.py, mode "vanilla"). Runs are interleaved
(ftmb, vanilla, ftmb, ...) so that machine noise hits both alike, and the ratio of the medians
is reported. This is a measurement, not a test: it prints numbers and exits 0.

    python benchmarks/record_overhead.py                      # nat, 4 queues, chaos, bundled trace
    python benchmarks/record_overhead.py --scheduler threads --repeat 9 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.pcapio import read_trace_info  # noqa: E402
from ftmbctl.record import RecordConfig, record  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    packets = read_trace_info(args.trace).packet_count
    times: dict[str, list[float]] = {"ftmb": [], "vanilla": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat + 1):  # the first pair warms caches and imports, and is dropped
            for mode in ("ftmb", "vanilla"):
                # a fresh directory each time: replacing an old run (--force) is not a cost of FTMB
                cfg = RecordConfig(trace=args.trace, out=Path(tmp) / f"run-{i}-{mode}", middlebox=args.middlebox,
                                   queues=args.queues, snapshot_every=args.snapshot_every,
                                   flush_every=args.flush_every, scheduler=args.scheduler, seed=args.seed,
                                   mode=mode, force=True)
                started = time.perf_counter()
                record(cfg)
                if i:
                    times[mode].append(time.perf_counter() - started)
    ftmb, vanilla = statistics.median(times["ftmb"]), statistics.median(times["vanilla"])
    return {
        "trace": str(args.trace), "packets": packets, "middlebox": args.middlebox, "queues": args.queues,
        "scheduler": args.scheduler, "seed": args.seed, "repeat": args.repeat,
        "ftmb_median_s": round(ftmb, 4), "vanilla_median_s": round(vanilla, 4),
        "ftmb_pps": round(packets / ftmb), "vanilla_pps": round(packets / vanilla),
        "record_overhead": round(ftmb / vanilla, 3),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=ROOT / "traces" / "mixed.pcap")
    parser.add_argument("--middlebox", default="nat")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--scheduler", choices=["chaos", "threads"], default="chaos")
    parser.add_argument("--snapshot-every", type=int, default=1000)
    parser.add_argument("--flush-every", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7, help="measured pairs (after one warm-up pair)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['middlebox']}, {result['queues']} queues, {result['scheduler']} scheduler, "
          f"{result['packets']} packets of {result['trace']}, median of {result['repeat']} interleaved runs")
    print(f"  ftmb     {result['ftmb_median_s']:.3f} s  {result['ftmb_pps']:>8,} packets/s")
    print(f"  vanilla  {result['vanilla_median_s']:.3f} s  {result['vanilla_pps']:>8,} packets/s")
    print(f"  record_overhead (ftmb time / vanilla time) = {result['record_overhead']:.3f}   (target <= 1.15)")


if __name__ == "__main__":
    main()
