"""Peak memory of record, crash-replay and verify: it must not grow with the trace.

For a short and a long synthetic trace (traces/make_trace.py --reuse-ports, so that the NAT's own
state stays the same size), runs ``ftmbctl record``, ``crash-replay --random N`` and ``verify
--json``, each in its own process, and reports each one's peak resident memory and the ratio of
the long trace's peak to the short one's. Target: at most 1.3x, and under 300 MB. With the
default --jobs 1 the sweep runs in the measured process itself (see ftmbctl/bench_memory.py).
This is a measurement, not a test: it prints numbers and exits 0.

    python benchmarks/memory.py                            # 100,000 vs 1,000,000 packets (about half an hour)
    python benchmarks/memory.py --small 50000 --large 500000 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.bench_memory import measure_peak_rss  # noqa: E402

RATIO_TARGET = 1.3
LIMIT_MB = 300
STAGES = ("record", "crash_replay", "verify")


def measure(args: argparse.Namespace) -> dict:
    def say(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    runs = {}
    with tempfile.TemporaryDirectory(prefix="ftmbctl-memory-") as tmp:
        for size in (args.small, args.large):
            runs[size] = measure_peak_rss(size, Path(tmp) / f"n{size}", middlebox=args.middlebox, queues=args.queues,
                                          seed=args.seed, sample=args.sample, jobs=args.jobs, progress=say)
    small, large = runs[args.small], runs[args.large]
    ratio = large["peak_mb"] / small["peak_mb"]
    return {
        "middlebox": args.middlebox, "queues": args.queues, "seed": args.seed, "sample": args.sample,
        "jobs": args.jobs, "small": small, "large": large, "peak_ratio": round(ratio, 3),
        "stage_ratios": {stage: round(large[f"{stage}_mb"] / small[f"{stage}_mb"], 3) for stage in STAGES},
        "target": f"<= {RATIO_TARGET}x and < {LIMIT_MB} MB",
        "target_met": ratio <= RATIO_TARGET and large["peak_mb"] < LIMIT_MB,
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100_000, help="packets of the short trace")
    parser.add_argument("--large", type=int, default=1_000_000, help="packets of the long trace")
    parser.add_argument("--middlebox", default="nat")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1, help="seed of the trace and of the chaos schedule")
    parser.add_argument("--sample", type=int, default=20, help="random crash points (the snapshot chain is added)")
    parser.add_argument("--jobs", type=int, default=1, help="sweep processes (1: the measured process itself)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    small, large = result["small"], result["large"]
    print(f"{result['middlebox']}, {result['queues']} queues, crash-replay --random {result['sample']} "
          f"--jobs {result['jobs']}: peak resident memory (MB)")
    print(f"  {'stage':<14}{small['packets']:>12,}{large['packets']:>12,}   ratio")
    for stage in STAGES:
        print(f"  {stage.replace('_', '-'):<14}{small[f'{stage}_mb']:>12.1f}{large[f'{stage}_mb']:>12.1f}"
              f"   {result['stage_ratios'][stage]:.2f}x")
    print(f"  {'peak':<14}{small['peak_mb']:>12.1f}{large['peak_mb']:>12.1f}   {result['peak_ratio']:.2f}x"
          f"   (target {result['target']}: {'met' if result['target_met'] else 'NOT met'})")
    print(f"  seconds: {small['seconds']} / {large['seconds']}")


if __name__ == "__main__":
    main()
