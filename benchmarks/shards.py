"""What splitting a sweep costs: N shards run one after another against the unsharded sweep, and
the Dask executor on a local cluster against the local process pool, per crash point.

    python benchmarks/shards.py                 # bundled trace, nat, every 2nd event, 4 shards
    python benchmarks/shards.py --shards 8 --every 1 --repeat 3

Each configuration runs --repeat times, interleaved (unsharded, sharded, local, dask, ...), and the
median is reported; ratios are what to read, the VM's absolute times wander.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.record import RecordConfig, record  # noqa: E402
from ftmbctl.verify import SweepConfig, sweep  # noqa: E402


def timed(run: Path, cfg: SweepConfig) -> tuple[float, int]:
    started = time.perf_counter()
    report = sweep(run, cfg)
    return time.perf_counter() - started, len(report.points)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=ROOT / "traces" / "mixed.pcap")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory(prefix="ftmbctl-shards-") as tmp:
        run = Path(tmp) / "run"
        record(RecordConfig(trace=args.trace, out=run, lint=False))
        base = dict(every=args.every, torn=True, seed=1, jobs=args.jobs)
        times: dict[str, list[float]] = {"unsharded": [], "sharded": [], "local": [], "dask": []}
        points = 0
        with LocalCluster(n_workers=args.jobs, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            for _ in range(args.repeat):
                seconds, points = timed(run, SweepConfig(**base))
                times["unsharded"].append(seconds)
                times["sharded"].append(sum(timed(run, SweepConfig(**base, shard=(k, args.shards)))[0]
                                            for k in range(1, args.shards + 1)))
                times["local"].append(seconds)
                times["dask"].append(timed(run, SweepConfig(**base, executor="dask",
                                                            scheduler=cluster.scheduler_address))[0])
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{points} crash points of {args.trace.name} (every {args.every} events, torn), {args.jobs} processes, "
          f"median of {args.repeat}")
    print(f"unsharded sweep            {median['unsharded']:.2f} s")
    print(f"{args.shards} shards, one after another  {median['sharded']:.2f} s "
          f"({median['sharded'] / median['unsharded']:.2f}x)")
    print(f"local pool                 {median['local'] / points * 1e3:.1f} ms a crash point")
    print(f"Dask LocalCluster          {median['dask'] / points * 1e3:.1f} ms a crash point "
          f"({(median['dask'] - median['local']) / points * 1e3:+.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
