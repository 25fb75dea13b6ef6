"""The command line: parse options, call one library function, render its result.

Errors from the engine arrive as ``FtmbError`` subclasses and leave here as one sentence on
stderr and the exit code of their class: 1 inconsistency, 2 usage, 3 bad input or damaged run.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ftmbctl import __version__
from ftmbctl.errors import FtmbError

app = typer.Typer(
    name="ftmbctl",
    help="Record a middlebox on a pcap the FTMB way, crash it anywhere, recover, and verify that it "
         "kept every promise it made to the network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

BUNDLED_TRACE = Path(__file__).resolve().parent.parent / "traces" / "mixed.pcap"


class Scheduler(str, Enum):
    threads = "threads"
    chaos = "chaos"


def _fail(message: str, code: int) -> None:
    from ftmbctl import render

    render.stderr.print(f"[bold red]error:[/bold red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map the error tree to exit codes in one place."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FtmbError as exc:
            _fail(str(exc), exc.exit_code)
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
    trace: Path = typer.Argument(..., help="Capture to replay through the middlebox (pcap or pcapng, may be gzipped)."),
    middlebox: str = typer.Option("nat", "--middlebox", "-m",
                                  help="Built-in name (see `ftmbctl middleboxes`), package.module:Class or path/to/file.py:Class."),
    mb_opt: list[str] = typer.Option([], "--mb-opt", help="Middlebox option key=value (repeatable)."),
    queues: int = typer.Option(4, "--queues", "-q", help="Number of queues (worker threads)."),
    snapshot_every: int = typer.Option(1000, "--snapshot-every", help="Take a snapshot every N input packets."),
    flush_every: int = typer.Option(32, "--flush-every", help="Flush a log after N records (and whenever a queue goes idle)."),
    scheduler: Scheduler = typer.Option(Scheduler.chaos, "--scheduler",
                                        help="chaos: one queue at a time, a seeded choice at every shared access "
                                             "(reproducible); threads: real OS threads."),
    seed: int = typer.Option(1, "--seed", help="Seed of the chaos schedule and of ctx.random()."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is an existing run directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run TRACE through an instrumented middlebox and write a run directory.

    The run directory holds the input log, one PAL log per queue, the output log (what was
    released, with dependency vectors), snapshots, the timeline of durability events and the
    failure-free reference state.
    """
    from ftmbctl import render
    from ftmbctl.record import RecordConfig
    from ftmbctl.record import record as do_record

    cfg = RecordConfig(trace=trace, out=out, middlebox=middlebox, mb_opts=list(mb_opt), queues=queues,
                       snapshot_every=snapshot_every, flush_every=flush_every, scheduler=scheduler.value,
                       seed=seed, force=force)
    render.stderr.print(f"recording {trace} through {middlebox}: {queues} queues, {scheduler.value} scheduler, seed {seed}")
    with render.progress_bar("record") as update:
        result = do_record(cfg, update)
    summary = render.record_summary(result, scheduler.value)
    if json_out:
        render.print_json(summary)
    else:
        render.print_record_summary(summary)


@app.command()
@handles_errors
def inspect(
    run: Path = typer.Argument(..., help="Run directory (or crash image)."),
    file: Optional[str] = typer.Argument(None, help="A file of the run: input.log, pal-<q>.log, output.log, "
                                                    "timeline.log, snapshots/snap-NNNNNN.snap, reference.snap, manifest.json."),
    limit: Optional[int] = typer.Option(None, "--limit", help="List at most N records (all chunks are still listed)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """List what a run holds, or one of its files chunk by chunk.

    Without FILE: a summary of the run. With FILE: its chunks with byte offsets and its records:
    PALs, non-deterministic values, outputs with dependency vectors, timeline events.
    """
    from ftmbctl import render
    from ftmbctl.inspect import describe_file, describe_run
    from ftmbctl.rundir import RunDir

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
    run: Path = typer.Argument(..., help="Run directory."),
    outputs: Path = typer.Option(..., "--outputs", help="Capture file to write the released outputs to."),
) -> None:
    """Write the released outputs of a run as a capture file (pcap, or pcapng for mixed link types)."""
    from ftmbctl import render
    from ftmbctl.export import export_outputs

    count, fmt = export_outputs(run, outputs)
    render.stdout.print(f"wrote {count:,} released outputs to {outputs} ({fmt})")


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
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where to write the demo run (replaced if it exists)."),
    trace: Path = typer.Option(BUNDLED_TRACE, "--trace", help="Trace to use (default: the bundled traces/mixed.pcap)."),
    seed: int = typer.Option(1, "--seed", help="Seed of the chaos schedule."),
) -> None:
    """Record the bundled trace through the NAT and show what was written.

    Uses 4 queues under the chaos scheduler, a snapshot every 1,000 packets.
    """
    from ftmbctl import render
    from ftmbctl.inspect import describe_run
    from ftmbctl.record import RecordConfig
    from ftmbctl.record import record as do_record
    from ftmbctl.rundir import RunDir

    if not trace.exists():
        _fail(f"{trace}: the bundled trace is not there; pass --trace with a capture of your own", 3)
    cfg = RecordConfig(trace=trace, out=out, middlebox="nat", queues=4, snapshot_every=1000, flush_every=32,
                       scheduler="chaos", seed=seed, force=True)
    render.stderr.print(f"demo: recording {trace} through nat, 4 queues, chaos scheduler, seed {seed}")
    with render.progress_bar("record") as update:
        result = do_record(cfg, update)
    render.print_record_summary(render.record_summary(result, "chaos"))
    render.print_run_description(describe_run(RunDir(out)))


def main() -> None:
    app(prog_name="ftmbctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
