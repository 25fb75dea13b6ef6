"""Record throughput with FTMB instrumentation vs. the vanilla run of the same middlebox.

Both runs use the same trace, middlebox, queues and scheduler; the vanilla run has no logging, no
snapshots and no release holding (record.py, mode "vanilla"). Runs are interleaved
(ftmb, vanilla, ftmb, ...) so that machine noise hits both alike, and the ratio of the medians
is reported. The measurement is ftmbctl/bench.py's record_overhead, the one benchmarks/run.py
reports with the other metrics. This is a measurement, not a test: it prints numbers and exits 0.

    python benchmarks/record_overhead.py                      # nat, 4 queues, chaos, bundled trace
    python benchmarks/record_overhead.py --scheduler threads --repeat 9 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.bench import BUNDLED_TRACE, BenchConfig, run_benchmarks  # noqa: E402
from ftmbctl.errors import FtmbError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=BUNDLED_TRACE)
    parser.add_argument("--middlebox", default="nat")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--scheduler", choices=["chaos", "threads"], default="chaos")
    parser.add_argument("--snapshot-every", type=int, default=1000)
    parser.add_argument("--flush-every", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7, help="measured pairs (after one warm-up pair)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cfg = BenchConfig(trace=args.trace, middlebox=args.middlebox, queues=args.queues, scheduler=args.scheduler,
                      snapshot_every=args.snapshot_every, flush_every=args.flush_every, seed=args.seed,
                      repeat=args.repeat, only=["record_overhead"])
    try:
        result = run_benchmarks(cfg)
    except FtmbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    c, m = result["config"], result["metrics"]["record_overhead"]
    raw = m["raw"]
    print(f"{c['middlebox']}, {c['queues']} queues, {c['scheduler']} scheduler, {c['packets']} packets of "
          f"{c['trace']}, median of {c['repeat']} interleaved runs")
    print(f"  ftmb     {raw['ftmb_median_s']:.3f} s  {raw['ftmb_pps']:>8,} packets/s")
    print(f"  vanilla  {raw['vanilla_median_s']:.3f} s  {raw['vanilla_pps']:>8,} packets/s")
    print(f"  record_overhead (ftmb time / vanilla time) = {m['value']:.3f}   (target {m['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
