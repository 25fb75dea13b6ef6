"""The benchmark suite: every metric of ftmbctl/bench.py on one trace, as a table or JSON.

Measures record overhead against the vanilla middlebox under both schedulers, the engine's own
cost (a vanilla record under chaos against a direct run of the middlebox), record throughput against a bare dpkt
parse loop, release delay with and without replay, replay against record throughput, recovery
time on a 10x longer trace, stored bytes per PAL, verify sweep rate and peak memory, and prints
each beside its target. A missed target is a number, not a failure: the exit code is 0 unless a
measurement itself could not be made (then one sentence on stderr and a non-zero code).

    python benchmarks/run.py                       # nat, 4 queues, chaos, bundled trace (minutes)
    python benchmarks/run.py --quick               # under a minute on 2 cores
    python benchmarks/run.py --only pal_bytes,sweep_rate --json --out bench.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftmbctl.bench import (BUNDLED_TRACE, METRICS, BenchConfig, format_table, machine_line,  # noqa: E402
                           run_benchmarks)
from ftmbctl.errors import FtmbError  # noqa: E402


def metric_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric {unknown[0] if unknown else text!r}; "
                                         f"choose from {', '.join(METRICS)}")
    return names


def size_pair(text: str) -> tuple[int, int]:
    try:
        small, large = (int(n.replace("_", "")) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SMALL,LARGE packet counts, got {text!r}") from None
    return small, large


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=BUNDLED_TRACE, help="capture to measure on (default: bundled)")
    parser.add_argument("--middlebox", default="nat")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--scheduler", choices=["chaos", "threads"], default="chaos",
                        help="scheduler of the record runs behind record_overhead, record_vs_parse, replay and sweep")
    parser.add_argument("--snapshot-every", type=int, default=1000)
    parser.add_argument("--flush-every", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, help="measured record pairs after a warm-up pair (default 7, quick 2)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes: under a minute")
    parser.add_argument("--only", type=metric_list, default=[], metavar="METRIC[,METRIC]",
                        help=f"measure only these: {', '.join(METRICS)}")
    parser.add_argument("--pair-packets", type=int, help="short trace of recovery_scaling (default: the trace's "
                                                          "length up to 3,000; quick 1,000); the long one is 10x")
    parser.add_argument("--rss-packets", type=size_pair, metavar="SMALL,LARGE",
                        help="peak_rss_ratio sizes (default 100000,1000000; quick 2000,20000)")
    parser.add_argument("--rss-sample", type=int, default=20, help="random crash points of each peak_rss_ratio run")
    parser.add_argument("--sweep-points", type=int, help="random crash points of sweep_rate (default 40, quick 20)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = BenchConfig(trace=args.trace, middlebox=args.middlebox, queues=args.queues, scheduler=args.scheduler,
                      snapshot_every=args.snapshot_every, flush_every=args.flush_every, seed=args.seed,
                      repeat=args.repeat, quick=args.quick, only=args.only, pair_packets=args.pair_packets,
                      rss_packets=args.rss_packets, rss_sample=args.rss_sample,
                      sweep_points=args.sweep_points)
    try:
        result = run_benchmarks(cfg, progress)
    except FtmbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    result["command"] = shlex.join(["python", *(sys.argv if argv is None else [sys.argv[0], *argv])])
    text = json.dumps(result, indent=2)
    if args.out is not None:
        try:
            args.out.write_text(text + "\n")
        except OSError as exc:
            print(f"error: {args.out}: cannot write the JSON ({exc.strerror})", file=sys.stderr)
            return 2
    if args.json:
        print(text)
        return 0
    c = result["config"]
    print(f"{c['middlebox']}, {c['queues']} queues, {c['scheduler']} scheduler, {c['packets']:,} packets of "
          f"{c['trace']}, snapshot every {c['snapshot_every']:,}{', --quick' if c['quick'] else ''}")
    print(f"machine: {machine_line(result['machine'])}")
    print(f"command: {result['command']}")
    print()
    print(format_table(result))
    print()
    print(f"took {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
