"""Peak memory of record, crash-replay and verify on a synthetic trace (benchmarks/memory.py).

Each stage runs as its own process (``python -m ftmbctl ...``, never through a shell) and its
peak resident set size is read from ``os.wait4``, which reports the rusage of exactly that child.
On Linux that figure is the largest of the process and of the children it waited for, so with
``jobs > 1`` it is the larger of the main process and the biggest sweep worker, never their sum;
with the default ``jobs=1`` the sweep runs in the main process and the figure is that process.

The trace comes from ``traces/make_trace.py`` (run as a subprocess, not measured) with
``--reuse-ports``. Its conversations overlap only a few at a time at any length, but by default
each takes a source port never used before, and the NAT reclaims an expired mapping only when
its allocation cursor comes round to the port, so the NAT's tables would grow with the trace up
to the size of its port range. With reused ports the inside endpoints, and the NAT's state, stay
about the same: what grows with ``packets`` is then what ftmbctl itself keeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ftmbctl import defaults
from ftmbctl.bundled import MAKE_TRACE
from ftmbctl.errors import FtmbError

ROOT = Path(__file__).resolve().parents[1]
STDERR_TAIL = 2000  # characters of a failed stage's stderr quoted in the error


class StageFailed(FtmbError):
    """A stage of the measurement (trace, record, crash-replay, verify) exited with an error."""


def _rss_mb(ru_maxrss: int) -> float:
    """ru_maxrss is in KiB on Linux and in bytes on macOS."""
    return round(ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def run_measured(name: str, argv: list[str], workdir: Path) -> tuple[float, float]:
    """Run ``argv``, return (peak RSS in MB, seconds); raise StageFailed with its stderr if it fails.

    Output goes to files, not pipes: a pipe would have to be drained while waiting, and a large
    report read into this process would only blur what is measured here.
    """
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    started = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=workdir)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-STDERR_TAIL:].strip()
        raise StageFailed(f"{name} failed with exit code {proc.returncode}: {' '.join(argv)}\n{tail}")
    return _rss_mb(usage.ru_maxrss), seconds


def _ftmbctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftmbctl", *args]


def measure_peak_rss(packets: int, workdir: Path, middlebox: str = "nat", queues: int = defaults.QUEUES,
                     seed: int = defaults.SEED, sample: int = 20, jobs: int = 1,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Make a ``packets``-packet trace in ``workdir``, record it, crash-replay ``sample`` random
    points (plus the snapshot chain) and verify, each in its own process; return each stage's
    peak RSS in MB and its seconds. ``progress`` is called with a line naming each stage as it
    starts."""
    if packets < 1:
        raise StageFailed(f"packets must be at least 1, got {packets}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    trace, run = workdir / f"trace-{packets}.pcap", workdir / f"run-{packets}"
    stages = [
        ("trace", [sys.executable, str(MAKE_TRACE), "--seed", str(seed), "--packets", str(packets),
                   "--reuse-ports", "--out", str(trace)]),
        ("record", _ftmbctl("record", str(trace), "--middlebox", middlebox, "--queues", str(queues),
                            "--seed", str(seed), "--out", str(run), "--force")),
        ("crash_replay", _ftmbctl("crash-replay", str(run), "--random", str(sample), "--seed", "1",
                                  "--jobs", str(jobs))),
        ("verify", _ftmbctl("verify", str(run), "--json", "--jobs", str(jobs))),
    ]
    result: dict = {"packets": packets, "middlebox": middlebox, "queues": queues, "seed": seed,
                    "sample": sample, "jobs": jobs, "seconds": {}}
    for name, argv in stages:
        if progress is not None:
            progress(f"{name.replace('_', '-')}: {packets:,} packets")
        mb, seconds = run_measured(name, argv, workdir)
        result["seconds"][name] = round(seconds, 2)
        if name == "trace":
            result["trace_bytes"] = trace.stat().st_size
        else:
            result[f"{name}_mb"] = mb
    result["peak_mb"] = max(result["record_mb"], result["crash_replay_mb"], result["verify_mb"])
    return result
