"""The command line: parse options, call one library function, render its result.

Errors from the engine arrive as ``FtmbError`` subclasses and leave here as one sentence on
stderr and the exit code of their class: 1 inconsistency, 2 usage (or another ftmbctl is writing
the directory), 3 bad input or damaged run, 4 the machine failed (a write refused: disk full, file
too large, read-only, permission).
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ftmbctl import __version__, defaults
from ftmbctl.bundled import BUNDLED_TRACE
from ftmbctl.errors import (MACHINE_ERRNOS, MAX_POINT_TIMEOUT, MAX_QUEUES, SEED_MAX, U32_MAX, FtmbError,
                            MachineError, range_text, writes_to)

app = typer.Typer(
    name="ftmbctl",
    help="Record a middlebox on a pcap the FTMB way, crash it anywhere, recover, and verify that it "
         "kept every promise it made to the network.",
    no_args_is_help=True,
    # Click's own help layout, not rich's: it wraps every paragraph to the terminal (80 columns
    # in a pipe), shows a flag without a type and an argument by its metavar (TRACE).
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each numeric option's range, shown in its help; the library's configs enforce them (errors.check_range).
QUEUES = range_text(1, MAX_QUEUES)
PER_PACKETS = range_text(1, U32_MAX)  # u32 fields on disk: snapshot boundaries, records per chunk
SEEDS = range_text(0, SEED_MAX)
MIDDLEBOX_TO_RUN = ("The middlebox code to replay with (as for record), which must be the code the run was recorded "
                    "with; needed unless the run's middlebox is built in: a run directory never decides what code "
                    "runs.")


class Scheduler(str, Enum):
    threads = "threads"
    chaos = "chaos"


class Mode(str, Enum):
    ftmb = "ftmb"
    no_replay = "no-replay"


class Executor(str, Enum):
    local = "local"
    dask = "dask"


class GuardMode(str, Enum):
    warn = "warn"
    error = "error"
    off = "off"


def _fail(message: str, code: int) -> None:
    from ftmbctl import render

    from rich.text import Text

    # control characters (from a file name, say) are shown escaped, never sent to the terminal
    shown = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)
    render.stderr.print(Text.assemble(("error:", "bold red"), " ", shown), soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map the error tree to exit codes in one place."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FtmbError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:  # last resort: an OS refusal no layer below named is still no verdict
            if exc.errno not in MACHINE_ERRNOS:
                raise
            _fail(str(MachineError.from_os(exc)), MachineError.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"ftmbctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """ftmbctl: rollback-recovery for middleboxes, offline on pcaps."""


@app.command()
@handles_errors
def record(
    trace: Path = typer.Argument(..., metavar="TRACE", help="Capture to replay through the middlebox (pcap or pcapng, may be gzipped)."),
    middlebox: str = typer.Option("nat", "--middlebox", "-m",
                                  metavar="SPEC", help="Built-in name (see `ftmbctl middleboxes`), package.module:Class or path/to/file.py:Class."),
    mb_opt: list[str] = typer.Option([], "--mb-opt", metavar="KEY=VALUE", help="Middlebox option key=value (repeatable)."),
    queues: int = typer.Option(defaults.QUEUES, "--queues", "-q", metavar="N", help=f"Number of queues (worker threads) {QUEUES}."),
    snapshot_every: int = typer.Option(defaults.SNAPSHOT_EVERY, "--snapshot-every",
                                       metavar="N", help=f"Take a snapshot every N input packets {PER_PACKETS}."),
    flush_every: int = typer.Option(defaults.FLUSH_EVERY, "--flush-every", metavar="N", help="Flush a log after N records (and whenever a queue "
                                                              f"goes idle) {PER_PACKETS}."),
    scheduler: Scheduler = typer.Option(Scheduler.chaos, "--scheduler",
                                        metavar="chaos|threads", help="chaos: one queue at a time, a seeded choice at every shared access "
                                             "(reproducible); threads: real OS threads."),
    seed: int = typer.Option(defaults.SEED, "--seed", metavar="N", help=f"Seed of the chaos schedule and of ctx.random() {SEEDS}."),
    mode: Mode = typer.Option(Mode.ftmb, "--mode",
                              metavar="ftmb|no-replay", help="ftmb: log every shared access and release outputs by dependency vectors; "
                                   "no-replay: snapshots only, outputs held until a snapshot covers them "
                                   "(the baseline FTMB is measured against)."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Run directory to write."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is an existing run directory."),
    strict: bool = typer.Option(False, "--strict", help="Refuse a capture cut short inside its last packet (what "
                                                        "a killed tcpdump leaves) instead of recording the "
                                                        "complete packets before the cut."),
    guard: GuardMode = typer.Option(GuardMode.warn, "--guard",
                                    metavar="warn|error|off", help="Watch the middlebox while it runs for calls a replay cannot reproduce "
                                         "(wall clock, random, os.urandom, uuid, the environment): warn names "
                                         "each place once; error stops the record (exit 1); off."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run TRACE through an instrumented middlebox and write a run directory.

    The run directory holds the input log, one PAL log per queue, the output log (what was
    released, with dependency vectors), snapshots, the timeline of durability events and the
    failure-free reference state. With --mode no-replay the PAL logs stay empty and recovery
    restores the latest snapshot only: inputs after it are lost, like packets dropped.

    The middlebox's source is checked first (as by `ftmbctl lint`): findings are printed and kept
    in the manifest, where verify shows them beside the crash points they probably explain.
    """
    from ftmbctl import render
    from ftmbctl.record import RecordConfig
    from ftmbctl.record import record as do_record

    cfg = RecordConfig(trace=trace, out=out, middlebox=middlebox, mb_opts=list(mb_opt), queues=queues,
                       snapshot_every=snapshot_every, flush_every=flush_every, scheduler=scheduler.value,
                       seed=seed, mode=mode.value, force=force, strict=strict, guard=guard.value)
    render.note(f"recording {trace} through {middlebox}: {queues} queues, {scheduler.value} scheduler, seed {seed}"
                + (", no-replay mode" if mode is Mode.no_replay else ""))
    with render.progress_bar("record", "packets") as update:
        result = do_record(cfg, update, on_lint=render.print_record_lint)
    if result.cut_short is not None:
        render.note(f"warning: {result.cut_short.sentence('recorded')}")
    render.print_guard_findings(result.guard)
    summary = render.record_summary(result, scheduler.value)
    if json_out:
        render.print_json(summary)
    else:
        render.print_record_summary(summary)


@app.command()
@handles_errors
def inspect(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory (or crash image)."),
    file: Optional[str] = typer.Argument(None, metavar="FILE", help="A file of the run: input.log, pal-<q>.log, output.log, "
                                                    "timeline.log, snapshots/snap-NNNNNN.snap, reference.snap, manifest.json."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", help="List at most N records (all chunks are still listed) [>=0]."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """List what a run holds, or one of its files chunk by chunk.

    Without FILE: a summary of the run. With FILE: its chunks with byte offsets and its records:
    PALs, non-deterministic values, outputs with dependency vectors, timeline events.
    """
    from ftmbctl import render
    from ftmbctl.inspect import describe_file, describe_run
    from ftmbctl.errors import UsageError
    from ftmbctl.rundir import RunDir

    if limit is not None and limit < 0:
        raise UsageError(f"--limit must not be negative, got {limit}")
    run_dir = RunDir(run)
    doc = describe_run(run_dir) if file is None else describe_file(run_dir, file, limit)
    if json_out:
        render.print_json(doc)
    elif file is None:
        render.print_run_description(doc)
    else:
        render.print_file_description(doc)


@app.command()
@handles_errors
def export(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory."),
    outputs: Optional[Path] = typer.Option(None, "--outputs", metavar="PCAP", help="Capture file to write the released output packets to."),
    alerts: Optional[Path] = typer.Option(None, "--alerts", metavar="FILE", help="JSON-lines file to write the released alerts to."),
) -> None:
    """Write the released outputs of a run as a capture file (pcap, or pcapng for mixed link types),
    and its released alerts as JSON lines."""
    from ftmbctl import render
    from ftmbctl.errors import UsageError
    from ftmbctl.export import export_alerts, export_outputs

    if outputs is None and alerts is None:
        raise UsageError("give --outputs FILE.pcap and/or --alerts FILE.jsonl")
    if outputs is not None:
        with writes_to(outputs):
            count, fmt = export_outputs(run, outputs)
        render.say(f"wrote {count:,} released outputs to {outputs} ({fmt})")
    if alerts is not None:
        with writes_to(alerts):
            count = export_alerts(run, alerts)
        render.say(f"wrote {count:,} released alerts to {alerts}")


@app.command()
@handles_errors
def middleboxes() -> None:
    """List the built-in middleboxes and their options."""
    from rich.table import Table

    from ftmbctl import render
    from ftmbctl.middlebox import BUILTINS, resolve_middlebox

    table = Table(title="built-in middleboxes (--middlebox NAME, --mb-opt key=value)", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("what it does")
    table.add_column("options")
    for name in sorted(BUILTINS):
        cls = resolve_middlebox(name)
        opts = "\n".join(f"{k} (default {o.default!r}): {o.help}" for k, o in cls.options.items())
        table.add_row(name, cls.summary, opts or "-")
    render.stdout.print(table)


@app.command()
@handles_errors
def lint(
    middlebox: Optional[list[str]] = typer.Argument(
        None, metavar="MIDDLEBOX",
        help="Built-in name, package.module:Class or path/to/file.py:Class (as for record --middlebox)."),
    all_builtins: bool = typer.Option(False, "--all-builtins", help="Check every built-in middlebox too."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: clean, findings (file, line, col, "
                                                        "code, rule, message, fix), silenced, unused_silences."),
) -> None:
    """Check a middlebox's source for what a replay cannot reproduce, before recording it.

    Reads the class, its bases and the functions they call in their own modules (with Python's
    ast: nothing runs but the import) and prints one line per finding, FILE:LINE:COL: CODE
    message; fix. At packet time: the wall clock, timers, random, os.urandom, the environment,
    files and sockets; state changed on self, at module level, in threading.local or a cache;
    ctx.clock() or another access inside a ctx.update or ctx.apply function; shared values
    touched behind ctx or changed in place. Anywhere, setup included: hash(), id() and the order
    of a set. Silence a finding on its line with `# ftmb: ignore[CODE] reason`; a code that
    silences nothing is a finding too (FTMB900). Exit codes: 0 clean, 1 findings, 2 usage error,
    3 a middlebox that cannot be imported or read, or is not a Middlebox subclass.
    """
    from ftmbctl import render
    from ftmbctl.errors import UsageError
    from ftmbctl.lint import lint_specs
    from ftmbctl.middlebox import BUILTINS

    specs = list(middlebox or []) + (sorted(BUILTINS) if all_builtins else [])
    if not specs:
        raise UsageError("name a middlebox to check (a built-in name, package.module:Class or "
                         "path/to/file.py:Class), or pass --all-builtins")
    report = lint_specs(list(dict.fromkeys(specs)))
    if json_out:
        render.print_json(report.to_dict())
    else:
        render.print_lint(report)
    if not report.clean:
        raise typer.Exit(1)


@app.command()
@handles_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", metavar="DIR", help="Where to write the demo run (replaced if it exists)."),
    trace: Path = typer.Option(BUNDLED_TRACE, "--trace", metavar="PCAP", help="Trace to use.",
                        show_default="bundled traces/mixed.pcap"),
    seed: int = typer.Option(defaults.SEED, "--seed", metavar="N", help=f"Seed of the chaos schedule and of the crash sample {SEEDS}."),
) -> None:
    """Record the bundled trace through the NAT, crash it, recover, and verify.

    Records with 4 queues under the chaos scheduler (a snapshot every 1,000 packets), then runs
    the default crash sweep and reports whether every recovery kept the NAT's promises.
    """
    from ftmbctl import render
    from ftmbctl.record import RecordConfig
    from ftmbctl.record import record as do_record

    if not trace.exists():
        _fail(f"{trace}: the bundled trace is not there; pass --trace with a capture of your own", 3)
    cfg = RecordConfig(trace=trace, out=out, middlebox="nat", scheduler="chaos", seed=seed, force=True)
    render.note(f"demo 1/2: recording {trace} through nat, {cfg.queues} queues, chaos scheduler, seed {seed}")
    with render.progress_bar("record", "packets") as update:
        result = do_record(cfg, update)
    render.print_record_summary(render.record_summary(result, "chaos"))
    render.note(f"demo 2/2: crash-replay and verify: {DEFAULT_SWEEP}")
    report = _run_sweep(out, _sweep_config([], None, None, seed, False, False, 0, None))
    render.print_sweep(report)
    render.say(f"next steps:\n  ftmbctl inspect {out} pal-0.log\n  ftmbctl crash-replay {out} --all --torn"
                        f"\n  ftmbctl verify {out} --junit verify.xml")
    if not report.consistent:
        raise typer.Exit(1)

DEFAULT_SWEEP = "40 random crash points (seed 1) with their torn variants, plus the snapshot chain"


def _sweep_config(at: list[int], every: Optional[int], random_points: Optional[int], seed: int, all_points: bool,
                  torn: bool, jobs: int, keep: Optional[Path], chain: str = "all",
                  point_timeout: float | None = None) -> Any:
    from ftmbctl import render
    from ftmbctl.errors import UsageError
    from ftmbctl.verify import SweepConfig, usable_cpus

    if not at and every is None and random_points is None and not all_points:
        random_points, torn = 40, True
    sample = None
    if chain not in ("all", "none"):
        if not chain.isdigit():
            raise UsageError(f"--chain takes all, none or a number of snapshots, got {chain!r}")
        sample = int(chain)
    cfg = SweepConfig(at=list(at), every=every, sample=random_points, seed=seed, everything=all_points, torn=torn,
                      jobs=jobs, keep=keep, chain=chain != "none", chain_sample=sample)
    if point_timeout is not None:  # None: the library's default
        cfg.point_timeout = point_timeout
    cfg.validate()  # here too, not only in sweep: a bad option is refused before the run is locked
    cfg.point_timeout = cfg.point_timeout or None  # 0: no limit
    if cfg.jobs > cfg.jobs_to_use():
        render.note(f"note: --jobs {jobs} is more than the {usable_cpus()} CPUs this process may use; "
                    f"running {cfg.jobs_to_use()} at a time")
    return cfg


def _run_sweep(run: Path, cfg: Any) -> Any:
    from ftmbctl import render
    from ftmbctl.verify import sweep

    with render.progress_bar("crash-replay", "crash points") as update:
        return sweep(run, cfg, update)


@app.command("crash-replay")
@handles_errors
def crash_replay(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `ftmbctl record`."),
    at: list[int] = typer.Option([], "--at", metavar="E", help="Crash right after timeline event E (repeatable) "
                                                  "[0 to the run's events - 1]."),
    every: Optional[int] = typer.Option(None, "--every", metavar="K", help="Crash after every K-th event [>=1]."),
    random_points: Optional[int] = typer.Option(None, "--random", metavar="N", help="Crash after N events drawn with --seed "
                                                                       "[>=1]."),
    seed: int = typer.Option(defaults.SEED, "--seed", metavar="N", help=f"Seed of the --random sample {SEEDS}."),
    all_points: bool = typer.Option(False, "--all", help="Crash after every event (exhaustive)."),
    torn: bool = typer.Option(False, "--torn", help="Also crash with half of the next write on disk (a torn log "
                                                    "tail, or a half-written snapshot)."),
    keep: Optional[Path] = typer.Option(None, "--keep", metavar="DIR", help="Write each crash image as a directory here."),
    chain: str = typer.Option("all", "--chain", metavar="all|none|N",
                              help="Snapshot-chain points to add: every snapshot, none, or N snapshots drawn with "
                                   "--seed, N >= 0 (the end of the run is always checked unless none)."),
    jobs: int = typer.Option(0, "--jobs", "-j", metavar="N", help="Parallel processes [>=0] (0: one per CPU this process may "
                                                     "use; more are capped to those)."),
    middlebox: Optional[str] = typer.Option(None, "--middlebox", "-m", metavar="SPEC", help=MIDDLEBOX_TO_RUN),
    kill: Optional[int] = typer.Option(None, "--kill", metavar="N",
                                       help="Instead of simulated crash points: record RUN's trace again N times in "
                                            "a child process, SIGKILL it at a moment drawn with --seed, and check "
                                            "each real crash (chaos runs: every file a prefix of RUN's, and every "
                                            "invariant; threads runs: those that need no reference)."),
    point_timeout: float = typer.Option(600.0, "--point-timeout", metavar="SECONDS",
                                        help="A crash point whose recovery takes longer fails recovery-completes "
                                             "(the middlebox may loop forever) and the sweep goes on "
                                             f"{range_text(0, MAX_POINT_TIMEOUT)}; 0: no limit."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N",
                                        help="Run only the K-th of N disjoint parts of the selected crash points "
                                             "(1 <= K <= N) and keep them as a shard; `ftmbctl verify RUN --merge` "
                                             "joins the N shards into one verdict."),
    executor: Executor = typer.Option(Executor.local, "--executor",
                                      metavar="local|dask", help="local: a pool of processes here; dask: tasks on the Dask cluster at "
                                           "--scheduler (pip install 'ftmbctl[dask]'; RUN at the same path on "
                                           "every worker)."),
    scheduler_address: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                                    help="Address of the Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                                                         "(with --executor dask)."),
    also_lose: list[str] = typer.Option([], "--also-lose", metavar="il|storage|ol|none",
                                        help="Let a component fail with the master at every crash point (repeatable): "
                                             "il (the inputs since the snapshot), storage (the PAL logs), ol (held "
                                             "outputs and the record of what was released); none: the master alone. "
                                             "The promises to the network that break are counted by kind, not "
                                             "judged (formats/components.md)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Crash a recorded run at chosen points, recover from what was durable, and check the result.

    Without a selection it runs the default sweep. Results go to RUN/crash/results.json, which
    `ftmbctl verify` reports, and are kept under RUN/crash/sweeps/ by what was selected, so the
    results of another selection are not overwritten; a --shard K/N goes there only. The snapshot chain (a crash just before each snapshot and after the
    last event) is checked too; on a long run, where it means one recovery per snapshot,
    --chain N checks a sample. Exit codes as for verify: 0 consistent, 1 inconsistent, 2 usage
    error or another ftmbctl writing RUN, 3 bad input or damaged run, 4 a write failed (disk full,
    read-only, permission).
    """
    from ftmbctl import render
    from ftmbctl.report import report_json

    from ftmbctl.sweeps import parse_shard

    cfg = _sweep_config(at, every, random_points, seed, all_points, torn, jobs, keep, chain, point_timeout)
    cfg.middlebox = middlebox
    cfg.shard = parse_shard(shard) if shard is not None else None
    cfg.executor, cfg.scheduler = executor.value, scheduler_address
    if also_lose:
        from ftmbctl.components import parse_components
        from ftmbctl.errors import UsageError

        cfg.also_lose = parse_components(also_lose)
        if kill is not None:
            raise UsageError("--also-lose cannot go with --kill: a killed record's timeline lacks its last events, "
                             "so its logs cannot tell what each component held when it died")
    cfg.validate()
    render.note(f"crash-replay {run}: seed {cfg.seed}" + (f", shard {shard}" if shard else "")
                + (f", on the Dask cluster at {scheduler_address}" if scheduler_address else ""))
    if kill is not None:
        from ftmbctl.kill import kill_sweep

        with render.progress_bar("killing records", "records") as update:
            report = kill_sweep(run, kill, seed, middlebox, update)
    else:
        report = _run_sweep(run, cfg)
    if json_out:
        print(report_json(report))
    else:
        render.print_sweep(report)
        written = report.kept_in or str(run / "crash" / "results.json")
        render.say(f"results written to {written}" + (
            f" (shard {report.shard['index']} of {report.shard['count']}: {len(report.points):,} of the "
            f"{report.shard['selected']:,} crash points)" if report.shard else ""))
    if not report.consistent:
        raise typer.Exit(1)


@app.command()
@handles_errors
def verify(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory (with crash-replay results, or a default sweep is run)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: consistent, crash_points, ..."),
    junit: Optional[Path] = typer.Option(None, "--junit", metavar="FILE", help="Also write a JUnit XML file, one test case per crash point."),
    jobs: int = typer.Option(0, "--jobs", "-j", metavar="N", help="Parallel processes for a default sweep [>=0] (0: one per CPU "
                                                     "this process may use; more are capped to those)."),
    middlebox: Optional[str] = typer.Option(None, "--middlebox", "-m", metavar="SPEC", help=MIDDLEBOX_TO_RUN),
    merge: list[Path] = typer.Option([], "--merge", metavar="PATH",
                                     help="Join the shard results of one sweep (`crash-replay --shard K/N`), files "
                                          "or directories holding them (repeatable), into its complete results, "
                                          "then report them; every shard must be there."),
) -> None:
    """Report whether the middlebox recovered consistently from every crash point.

    Reports the latest complete sweep of RUN (RUN/crash/results.json) and says which; results of
    other selections are kept under RUN/crash/sweeps/.

    Exit codes: 0 consistent, 1 inconsistency found, 2 usage error (or another ftmbctl is writing
    RUN), 3 bad input or damaged run, 4 the machine failed: a write was refused (disk full, file
    too large, read-only file system, permission); no verdict, crash/results.json is left as it was.
    """
    from ftmbctl import render
    from ftmbctl.report import report_json, report_junit
    from ftmbctl.sweeps import kept, which
    from ftmbctl.verify import load_report, merge_shards

    try:
        report = merge_shards(run, merge) if merge else load_report(run)
        if report is not None:
            render.note(which(report.as_dict(), kept(run)))
        if report is None:
            render.note(f"no crash results in {run} yet: running the default sweep: {DEFAULT_SWEEP}")
            cfg = _sweep_config([], None, None, 1, False, False, jobs, None)
            cfg.middlebox = middlebox
            report = _run_sweep(run, cfg)
    except FtmbError as exc:
        if junit is not None:  # CI's reporter gets a file that says why there is no verdict
            _write_junit_error(junit, run, exc)
        raise
    if junit is not None:
        _write_junit(junit, report_junit(report))
    if json_out:
        print(report_json(report))
    else:
        render.print_sweep(report)
    if not report.consistent:
        raise typer.Exit(1)


def _write_junit(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:  # a full or read-only disk is the machine's failure (4), a bad path the user's (2)
        _fail(f"{path}: cannot write the JUnit file ({exc.strerror})", 4 if exc.errno in MACHINE_ERRNOS else 2)


def _write_junit_error(path: Path, run: Path, exc: FtmbError) -> None:
    """One test case holding one ``<error>``: the sentence the user sees. If even that cannot be
    written, the run's error is still the one reported (a warning says why the file is missing)."""
    from ftmbctl import render
    from ftmbctl.report import error_junit

    try:
        path.write_text(error_junit(str(run), str(exc), type(exc).__name__), encoding="utf-8")
    except OSError as err:
        render.note(f"warning: {path}: cannot write the JUnit file ({err.strerror})")


@app.command()
@handles_errors
def recover(
    image: Path = typer.Argument(..., metavar="IMAGE", help="A crash image kept by `crash-replay --keep`."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Run directory for the recovered execution (not IMAGE, "
                                                      "nor inside or around it)."),
    trace: Optional[Path] = typer.Option(None, "--trace", metavar="PCAP", help="Where the packets that were not durable arrive "
                                                               "from again (default: the trace named in the manifest)."),
    middlebox: Optional[str] = typer.Option(None, "--middlebox", "-m", metavar="SPEC", help=MIDDLEBOX_TO_RUN),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is an existing run directory."),
) -> None:
    """Recover one crash image on its own, to debug one crash point in isolation.

    Restores the latest intact snapshot of IMAGE, replays the causal cut in its recorded order,
    then processes the inputs that were not durable from the trace. Like a real recovery, which
    cannot know the future, it runs the accesses after the cut free (any order, live clock and
    random values), where `ftmbctl crash-replay` and verify follow the failure-free run's
    schedule and compare exactly. Exits 1 if the replay diverged from its log or an output released
    before the crash came out different. An image
    of a --mode no-replay run is restored only: the inputs after its snapshot are lost, and it
    exits 1 if an output released before the crash is not covered by that snapshot. Other exit
    codes: 2 usage error (an existing --out without --force, or another ftmbctl writing it), 3 bad
    input or damaged image, 4 a write failed (disk full, read-only, permission).
    """
    from ftmbctl import render
    from ftmbctl.errors import BadInput
    from ftmbctl.recovery import arrivals_from_trace
    from ftmbctl.recovery import recover as do_recover
    from ftmbctl.record import trace_sha256
    from ftmbctl.rundir import RunDir

    image_dir = RunDir(image)
    image_dir.check_middlebox(snapshots=False, named=middlebox)
    source = trace or Path(image_dir.manifest["trace"]["path"])
    if trace_sha256(source) != image_dir.manifest["trace"]["sha256"]:
        raise BadInput(f"{source}: not the trace this run was recorded from (SHA-256 differs); pass --trace")
    if out.exists() and not (out / "manifest.json").exists() and any(out.iterdir()):
        _fail(f"{out} is a non-empty directory that is not an ftmbctl run; refusing to replace it", 2)
    res = do_recover(image_dir, arrivals_from_trace(source), out, middlebox=middlebox, force=force)
    render.print_recovery(res)
    if res.divergences or res.output_mismatches or res.missing_outputs or res.uncovered_outputs:
        raise typer.Exit(1)


@app.command()
@handles_errors
def bench(
    ctx: typer.Context,
    trace: Path = typer.Option(BUNDLED_TRACE, "--trace", metavar="PCAP", help="Capture to measure on.",
                        show_default="bundled traces/mixed.pcap"),
    middlebox: str = typer.Option("nat", "--middlebox", "-m", metavar="SPEC", help="Middlebox to measure."),
    queues: int = typer.Option(defaults.QUEUES, "--queues", "-q", metavar="N", help=f"Number of queues {QUEUES}."),
    scheduler: Scheduler = typer.Option(Scheduler.chaos, "--scheduler",
                                        metavar="chaos|threads", help="Scheduler of the record runs behind record_overhead, "
                                             "record_vs_parse, replay and the sweep (release_delay uses threads)."),
    snapshot_every: int = typer.Option(defaults.SNAPSHOT_EVERY, "--snapshot-every",
                                       metavar="N", help=f"Take a snapshot every N input packets {PER_PACKETS}."),
    flush_every: int = typer.Option(defaults.FLUSH_EVERY, "--flush-every", metavar="N", help=f"Flush a log after N records {PER_PACKETS}."),
    seed: int = typer.Option(defaults.SEED, "--seed", metavar="N", help=f"Seed of the chaos schedule {SEEDS}."),
    repeat: Optional[int] = typer.Option(None, "--repeat", metavar="N", help="Measured record pairs after a warm-up pair "
                                                                "(default 7, 2 with --quick) [>=1]."),
    quick: bool = typer.Option(False, "--quick", help="Fewer repeats and smaller sizes: under a minute."),
    only: Optional[str] = typer.Option(None, "--only", metavar="METRIC[,METRIC]", help="Measure only these metrics."),
    pair_packets: Optional[int] = typer.Option(None, "--pair-packets", metavar="N", help="Short trace of recovery_scaling "
                                                                            "(the long one is 10x) [>=1]."),
    rss_packets: Optional[str] = typer.Option(None, "--rss-packets", metavar="SMALL,LARGE",
                                              help="peak_rss_ratio sizes, 1 <= SMALL < LARGE "
                                                   "(default 100000,1000000)."),
    rss_sample: int = typer.Option(20, "--rss-sample", metavar="N", help="Random crash points of each peak_rss_ratio run [>=1]."),
    sweep_points: Optional[int] = typer.Option(None, "--sweep-points", metavar="N", help="Random crash points of sweep_rate "
                                                                            "[>=0] (0: the snapshot chain only)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="Also write the JSON to this file."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE", help="Also write a self-contained HTML report: every metric "
                                                             "beside its target and the FTMB paper's figures."),
) -> None:
    """Measure what FTMB costs and how recovery scales, each metric beside its target.

    record_overhead (under --scheduler), record_overhead_threads, guard_overhead (record's runtime
    guard on against off), engine_vs_direct (the direct run
    against the vanilla record under chaos), record_vs_parse, release_delay, replay_vs_record,
    recovery_scaling, pal_bytes, sweep_rate, peak_rss_ratio, lost_components (what breaks when the IL,
    the stable storage or the OL fails with the master). A missed target is a number, not an
    error: exit 0 unless a measurement could not be made. The same suite as `python benchmarks/run.py`.
    """
    import json
    import shlex

    from ftmbctl import render
    from ftmbctl.bench import BenchConfig, run_benchmarks
    from ftmbctl.errors import UsageError
    from ftmbctl.htmlreport import check_output, write_bench_report

    sizes = None
    if rss_packets is not None:
        try:
            small, large = (int(n) for n in rss_packets.split(","))
        except ValueError:
            raise UsageError(f"--rss-packets must be SMALL,LARGE packet counts, got {rss_packets!r}") from None
        sizes = (small, large)
    if html is not None:
        check_output(html)  # before the measurements, not after them
    cfg = BenchConfig(trace=trace, middlebox=middlebox, queues=queues, scheduler=scheduler.value,
                      snapshot_every=snapshot_every, flush_every=flush_every, seed=seed, repeat=repeat, quick=quick,
                      only=[m.strip() for m in (only or "").split(",") if m.strip()], pair_packets=pair_packets,
                      rss_packets=sizes, rss_sample=rss_sample, sweep_points=sweep_points)
    with render.step_status("bench") as update:
        result = run_benchmarks(cfg, update)
    words = ["ftmbctl", "bench"]
    for param in ctx.command.params:  # the command line as given, for the record
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name == "COMMANDLINE":
            value = ctx.params[param.name]
            words += [param.opts[0]] if value is True else [param.opts[0], str(getattr(value, "value", value))]
    result["command"] = shlex.join(words)
    if out is not None:
        try:
            out.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            _fail(f"{out}: cannot write the JSON ({exc.strerror})", 2)
    if html is not None:
        written = write_bench_report(result, html)
        render.note(f"wrote {html} ({written.bytes:,} bytes)")
    if json_out:
        render.print_json(result)
    else:
        render.print_bench(result)


@app.command()
@handles_errors
def report(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory with crash results (written by crash-replay, or by verify's "
                                         "default sweep)."),
    html: Path = typer.Option(..., "--html", metavar="FILE", help="HTML file to write: one self-contained file that opens offline."),
    compare: Optional[Path] = typer.Option(None, "--compare", metavar="RUN2",
                                           help="Another run of the same trace (typically recorded with --mode "
                                                "no-replay) whose release delays are drawn beside RUN's; it needs "
                                                "no crash results."),
) -> None:
    """Write a self-contained HTML report of a run and its crash results, with figures.

    A summary (middlebox, trace, queues, scheduler, seed, verdict, crash points by invariant);
    the crash-point map (every crash point along the run by verdict, snapshot boundaries marked,
    each failing point's first divergence on hover or click); the CDF of output release delays
    (beside RUN2's with --compare), median and p99 marked; recovery time against inputs since
    the last snapshot, restore and replay apart; and log volume along the run. Every figure's
    numbers are in a table too: the page reads with JavaScript off, and fetches nothing. Long
    runs are sampled or summed, so the file stays small. Exit codes: 0 written, 2 usage error
    (--html is a directory or in a directory that does not exist), 3 bad input or damaged run
    (no crash results yet, a --compare run of another trace), 4 the write was refused (disk full,
    read-only, permission).
    """
    from ftmbctl import render
    from ftmbctl.htmlreport import write_run_report

    written = write_run_report(run, html, compare)
    render.say(f"wrote {html} ({written.bytes:,} bytes in {written.seconds:.1f} s)")


def main() -> None:
    app(prog_name="ftmbctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
