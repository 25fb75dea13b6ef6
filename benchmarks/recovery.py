"""Recovery cost: it must grow with the inputs since the last snapshot, not with the trace.

For a short trace (as long as the bundled one) and one 10x longer, both made by
traces/make_trace.py with the same generator, records nat with 4 queues and a snapshot every
1,000 packets, then crashes at points whose distance to the last snapshot varies, and recovers
from each crash image with no further arrivals: restore + causal cut + replay of the logged inputs
(FTMB's recovery time). Also measures replay throughput against record throughput and the verify
sweep rate (crash points per second, all cores). These are ftmbctl/bench.py's recovery_scaling,
replay_vs_record and sweep_rate, as benchmarks/run.py reports them. Prints numbers; it is not a test.

    python benchmarks/recovery.py            # about a minute on 2 cores
    python benchmarks/recovery.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.bench import BenchConfig, run_benchmarks  # noqa: E402
from ftmbctl.errors import FtmbError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sweep-points", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3, help="record runs behind the record throughput")
    args = parser.parse_args()
    cfg = BenchConfig(repeat=args.repeat, sweep_points=args.sweep_points,
                      only=["replay_vs_record", "recovery_scaling", "sweep_rate"])
    try:
        result = run_benchmarks(cfg)
    except FtmbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    scaling, replay, rate = (result["metrics"][m] for m in ("recovery_scaling", "replay_vs_record", "sweep_rate"))
    raw = scaling["raw"]
    print(f"recovery time vs inputs since the last snapshot (nat, 4 queues, snapshot every "
          f"{result['config']['snapshot_every']:,}, last interval of the {raw['short_packets']:,}-packet trace):")
    for row in raw["short"]:
        print(f"  {row['since_snapshot']:>5} inputs since snapshot: {row['seconds'] * 1000:7.1f} ms")
    print(f"late crash: {raw['late_short_s'] * 1000:.1f} ms on {raw['short_packets']:,} packets, "
          f"{raw['late_long_s'] * 1000:.1f} ms on {raw['long_packets']:,}: recovery_scaling = {scaling['value']}"
          f"   (target {scaling['target']})")
    print(f"  of which restore (snapshot decode and load, logs, causal cut): {raw['restore_late_short_s'] * 1000:.1f}"
          f" ms vs {raw['restore_late_long_s'] * 1000:.1f} ms; the snapshot holds "
          f"{max(r['state_bytes'] for r in raw['short']):,} vs {max(r['state_bytes'] for r in raw['long']):,} "
          f"bytes of state")
    print(f"  and replay: replay_scaling = {raw['replay_scaling']:.3f}")
    print(f"replay {replay['raw']['replay_pps']:,} packets/s vs record {replay['raw']['record_pps']:,} packets/s: "
          f"replay_vs_record = {replay['value']}   (target {replay['target']})")
    print(f"verify sweep: {rate['raw']['points']} crash points, consistent={rate['raw']['consistent']}, "
          f"sweep_rate = {rate['value']:.2f} crash points/s   (target {rate['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
