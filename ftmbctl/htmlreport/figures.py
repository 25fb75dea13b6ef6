"""The report's figures, drawn with matplotlib and returned as inline SVG (svg.py).

Each function takes plain data (gather.py, or a bench result) and the words to show on hover,
and returns one ``<svg>``. Nothing is encoded by colour alone: every series also has its own
marker or line style, named in a legend. Colours are the Okabe-Ito palette, which stays
distinguishable for the common kinds of colour blindness.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

from ftmbctl.htmlreport.gather import Delays, MapPoint, Volume, spread
from ftmbctl.htmlreport.svg import BASE_STYLE, svg_text
from ftmbctl.htmlreport.units import duration

BLUE, VERMILLION, GREEN, ORANGE = "#0072B2", "#D55E00", "#009E73", "#E69F00"
SKY, PURPLE, GREY, BLACK = "#56B4E9", "#CC79A7", "#777777", "#000000"
SERIES = [(BLUE, "-", "o"), (VERMILLION, "--", "s"), (GREEN, "-.", "^"), (PURPLE, ":", "D"),
          (ORANGE, (0, (5, 1)), "v"), (SKY, (0, (1, 1)), "P"), (BLACK, (0, (3, 1, 1, 1)), "X"),
          (GREY, (0, (5, 3)), "*")]
MAX_BOUNDARIES = 40  # snapshot boundaries drawn on the map (more would be a grey smear)
CDF_POINTS = 1_000  # steps of a drawn CDF
QUEUE_LINES = 8  # queue logs drawn one by one; more are drawn summed
WIDE, TALL = (9.0, 4.2), (9.0, 6.0)  # figure sizes in inches (the page scales them)
LOG_SPAN = 20  # log growth is drawn on a log axis when the largest log outgrows the smallest this much


@contextlib.contextmanager
def _styled() -> Iterator[None]:
    with matplotlib.rc_context(BASE_STYLE):
        yield


def _count_axis(axis: Any) -> None:
    """Ticks written out in full with thousands separators ("250,000"), never as "2.5 1e5"."""
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))


def _packets_against_time(fig: Any, ax: Any, xlabel: str, ylabel: str) -> None:
    """The axes and legend of a scatter of crash points: packets on x, milliseconds on y, from 0."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _count_axis(ax.xaxis)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    fig.legend(loc="outside upper center", ncols=3)


def _time_axis(axis: Any) -> None:
    """Ticks of an axis in nanoseconds, written with their unit: "10 µs", "2 ms"."""
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: duration(v)))


def crash_map(points: Sequence[MapPoint], boundaries: Sequence[int], tips: Sequence[str],
              links: Sequence[str | None], title: str) -> str:
    """Crash points along the run (x: input packets durable at the crash; y: time to recover
    and check), consistent as circles, inconsistent as crosses, snapshot boundaries dotted."""
    with _styled():
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        drawn = spread(list(boundaries), MAX_BOUNDARIES)
        if drawn:
            every = "" if len(drawn) == len(boundaries) else f" (1 in {round(len(boundaries) / len(drawn))} drawn)"
            ax.vlines(drawn, 0, 1, transform=ax.get_xaxis_transform(), colors=GREY, linestyles=":",
                      linewidth=0.9, label=f"snapshot boundary{every}")
        for failed, marker, colour, label, area in ((False, "o", BLUE, "consistent", 22),
                                                    (True, "X", VERMILLION, "inconsistent", 70)):
            chosen = [i for i, m in enumerate(points) if m.failed == failed]
            if not chosen:
                continue
            gid = "crash-map-failing" if failed else "crash-map-consistent"
            dots = ax.scatter([points[i].packets for i in chosen], [points[i].seconds * 1e3 for i in chosen],
                              marker=marker, s=area, c=colour, alpha=0.9 if failed else 0.6, zorder=3,
                              edgecolors="white" if failed else "none", linewidths=0.5,
                              label=f"{label} ({len(chosen):,} drawn)")
            dots.set_gid(gid)
            if failed:
                dots.set_urls([links[i] for i in chosen])
        _packets_against_time(fig, ax, "input packets durable at the crash (packets)",
                              "time to recover and check (ms)")
        tooltips = {"crash-map-consistent": [tips[i] for i, m in enumerate(points) if not m.failed],
                    "crash-map-failing": [tips[i] for i, m in enumerate(points) if m.failed]}
        return svg_text(fig, "crash-map", title,
                        "Scatter plot of crash points: input packets durable at the crash against the time "
                        "its recovery and check took; inconsistent points are crosses, consistent ones "
                        "circles, snapshot boundaries dotted vertical lines.", tooltips)


def _cdf_steps(delays: Delays) -> tuple[list[int], list[float]]:
    """At most CDF_POINTS steps of the delays' CDF, left out the zero delays a log axis cannot
    show (the curve starts at their share)."""
    n = len(delays.sample)
    zeros = delays.at_once
    positive = delays.sample[zeros:]
    steps = spread(range(len(positive)), CDF_POINTS)
    return [positive[j] for j in steps], [(zeros + j + 1) / n for j in steps]


def delay_cdf(runs: Sequence[Delays]) -> str:
    """The CDF of each run's release delays on one log axis, median and p99 marked."""
    with _styled():
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        for level, name in ((0.5, "median"), (0.99, "p99")):
            ax.axhline(level, color=GREY, linewidth=0.7, linestyle=(0, (2, 2)))
            ax.annotate(name, (1, level), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                        textcoords="offset points", ha="right", va="bottom", color=GREY, fontsize=8)
        for i, delays in enumerate(runs):
            colour, style, marker = SERIES[i % len(SERIES)]
            xs, ys = _cdf_steps(delays)
            p50, p99 = delays.quantile(0.5), delays.quantile(0.99)
            label = f"{delays.label} ({delays.mode}, {delays.clock} clock): median {duration(p50)}, p99 {duration(p99)}"
            ax.plot(xs, ys, drawstyle="steps-post", color=colour, linestyle=style, linewidth=1.8, label=label)
            for value, level in ((p50, 0.5), (p99, 0.99)):
                if value is not None and value > 0:
                    ax.plot([value], [level], marker=marker, color=colour, markersize=7, linestyle="none")
                    ax.annotate(duration(value), (value, level), xytext=(6, -13 - 11 * i), textcoords="offset points",
                                color=colour, fontsize=8.5, fontweight="bold")
        if any(_cdf_steps(d)[0] for d in runs):
            ax.set_xscale("log")
        _time_axis(ax.xaxis)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("release delay: time from the end of processing to release (log scale)")
        ax.set_ylabel("outputs released within that delay (%)")
        fig.legend(loc="outside upper center", ncols=1)
        return svg_text(fig, "delay-cdf", "Output release delay, cumulative distribution",
                        "Cumulative distribution of output release delays on a logarithmic time axis, one "
                        "line per run, with each run's median and 99th percentile marked and labelled.")


def recovery_times(rows: Sequence[tuple[int, float, float | None, float | None]], names: Sequence[str]) -> str:
    """Recovery time against inputs since the last snapshot; rows are (inputs, whole crash point
    seconds, restore seconds or None, replay seconds or None), ``names`` the crash points'."""
    with _styled():
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        xs = [r[0] for r in rows]
        split = all(r[2] is not None and r[3] is not None for r in rows)
        series = [("whole crash point (recovery and check)", "crash point", 1, ".", GREY, 30)]
        if split:
            series += [("restore: set-up, snapshot, logs read, cut", "restore", 2, "s", GREEN, 26),
                       ("replay of the durable inputs", "replay", 3, "^", ORANGE, 32)]
        tooltips = {}
        for label, word, column, marker, colour, area in series:
            ys = [r[column] * 1e3 for r in rows]  # type: ignore[operator]
            dots = ax.scatter(xs, ys, marker=marker, s=area, c=colour, label=label, zorder=3, alpha=0.85)
            dots.set_gid(f"recovery-{column}")
            tooltips[f"recovery-{column}"] = [f"{name}: {word} {y:.1f} ms, {x:,} inputs since the snapshot"
                                              for name, x, y in zip(names, xs, ys)]
        _packets_against_time(fig, ax, "inputs since the last snapshot at the crash (packets)", "time (ms)")
        return svg_text(fig, "recovery", "Recovery time against inputs since the last snapshot",
                        "Scatter plot: for each crash point, the inputs logged since the snapshot it restored "
                        "against the time of its restore, of its replay and of the whole crash point.", tooltips)


def log_volume(volume: Volume) -> str:
    """Bytes per input packet each log grew by along the run (steps), and the snapshot sizes."""
    with _styled():
        fig = Figure(figsize=TALL, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        edges = [0, *volume.ends]
        lines = _volume_lines(volume)
        for i, (name, values) in enumerate(lines):
            colour, style, _marker = SERIES[i % len(SERIES)]
            empty = " (empty)" if not any(values) else ""
            top.stairs(values, edges, label=name + empty, color=colour, linestyle=style, linewidth=1.6, baseline=None)
        peaks = [max(values) for _name, values in lines if any(values)]
        if peaks and max(peaks) > LOG_SPAN * min(peaks):  # a queue log beside the input log: both readable
            top.set_yscale("log")
            top.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            top.set_ylabel("log growth (bytes per input packet, log scale)")
        else:
            top.set_ylim(bottom=0)
            top.set_ylabel("log growth (bytes per input packet)")
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        if volume.snapshots:
            boundaries = [b for _n, b, _s in volume.snapshots]
            marker = "o" if len(boundaries) <= 200 else None
            bottom.plot(boundaries, [s / 1e3 for _n, _b, s in volume.snapshots], color=PURPLE, marker=marker,
                        markersize=4, linewidth=1.2, label="snapshot size")
            bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            bottom.text(0.5, 0.5, "no snapshot was taken", transform=bottom.transAxes, ha="center", color=GREY)
        bottom.set_ylabel("snapshot size (KB)")
        bottom.set_ylim(bottom=0)
        bottom.set_xlabel("input packets (packets)")
        _count_axis(bottom.xaxis)
        bottom.set_xlim(left=0)
        return svg_text(fig, "log-volume", "Log volume along the run",
                        "Two panels sharing the packet axis: above, the bytes each log grew by per input packet "
                        "in each stretch of the run, one step line per log; below, the size of each snapshot "
                        "at its packet boundary.")


def _volume_lines(volume: Volume) -> list[tuple[str, list[float]]]:
    """The input log, the queue logs (one by one, or summed when there are many) and the output log."""
    queue_logs = [name for name in volume.per_packet if name.startswith("pal-")]
    lines = [("input.log", volume.per_packet["input.log"])]
    if len(queue_logs) <= QUEUE_LINES:
        lines += [(name, volume.per_packet[name]) for name in queue_logs]
    else:
        summed = [sum(column) for column in zip(*(volume.per_packet[name] for name in queue_logs))]
        lines.append((f"pal-0..{len(queue_logs) - 1}.log, summed", summed))
    lines.append(("output.log", volume.per_packet["output.log"]))
    return lines


def bench_targets(rows: Sequence[tuple[str, float, float, str, bool]]) -> str:
    """Each metric's value over its target on one log axis (1 = at the target); rows are
    (metric, value, target, "<=" or ">=", met)."""
    with _styled():
        fig = Figure(figsize=(WIDE[0], 0.45 * len(rows) + 1.6), layout="constrained")
        ax = fig.add_subplot()
        ys = list(range(len(rows)))[::-1]
        ax.axvline(1.0, color=BLACK, linewidth=1, linestyle="--", label="target")
        for met, marker, colour, label in ((True, "o", GREEN, "met"), (False, "X", VERMILLION, "not met")):
            chosen = [i for i, r in enumerate(rows) if r[4] == met]
            if chosen:
                ax.scatter([rows[i][1] / rows[i][2] for i in chosen], [ys[i] for i in chosen], marker=marker, s=70,
                           c=colour, label=label, zorder=3)
        ax.set_yticks(ys, [f"{r[0]} ({'lower' if r[3] == '<=' else 'higher'} is better)" for r in rows])
        ratios = [r[1] / r[2] for r in rows] + [1.0]
        ax.set_xscale("log")
        ax.set_xlim(min(ratios) / 1.5, max(ratios) * 1.5)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels even within a decade
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("measured value ÷ target (log scale; 1x = exactly the target)")
        ax.grid(axis="y", visible=False)
        fig.legend(loc="outside upper center", ncols=3)
        return svg_text(fig, "bench-targets", "Each metric against its target",
                        "Dot plot, one row per metric: the measured value divided by its target on a log axis, "
                        "with a dashed line at the target; met targets are circles, missed ones crosses.")


def bench_release(rows: Sequence[tuple[str, float]], paper_ftmb_us: float, paper_snapshot_ms: tuple[float, float]) -> str:
    """Release delays measured (label, µs) as bars on a log axis, beside the paper's figures."""
    with _styled():
        fig = Figure(figsize=(WIDE[0], 0.5 * len(rows) + 2.0), layout="constrained")
        ax = fig.add_subplot()
        ys = list(range(len(rows)))[::-1]
        for y, (label, micros) in zip(ys, rows):
            colour, _style, _marker = SERIES[0 if label.startswith("FTMB") else 1]
            ax.barh(y, micros * 1e3, color=colour, hatch="" if label.startswith("FTMB") else "//", alpha=0.85)
            ax.annotate(duration(micros * 1e3), (micros * 1e3, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=9)
        ax.axvline(paper_ftmb_us * 1e3, color=BLACK, linestyle="--", linewidth=1,
                   label=f"paper: FTMB median {paper_ftmb_us:g} µs")
        low, high = paper_snapshot_ms
        ax.axvspan(low * 1e6, high * 1e6, color=GREY, alpha=0.2, label=f"paper: snapshot-only {low:g}-{high:g} ms")
        ax.set_yticks(ys, [label for label, _ in rows])
        ax.set_xscale("log")
        _time_axis(ax.xaxis)
        ax.set_xlabel("release delay (log scale)")
        ax.grid(axis="y", visible=False)
        fig.legend(loc="outside upper center", ncols=2)
        return svg_text(fig, "bench-release", "Release delay: FTMB against No-Replay, beside the paper",
                        "Horizontal bars of the measured median and 99th-percentile release delays of FTMB and "
                        "of the No-Replay baseline on a log axis, with the paper's FTMB median as a dashed line "
                        "and its snapshot-only range shaded.")


def bench_recovery(series: Sequence[tuple[str, Sequence[dict[str, Any]]]], paper_ms: tuple[float, float]) -> str:
    """Recovery times of the benchmark's crashes (restore and replay apart) against inputs since
    the snapshot, one marker fill per trace, the paper's range shaded."""
    with _styled():
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        low, high = paper_ms
        ax.axhspan(low, high, color=GREY, alpha=0.15, label=f"paper: recovery {low:g}-{high:g} ms")
        for i, (name, rows) in enumerate(series):
            for key, marker, colour, what in (("restore_seconds", "s", GREEN, "restore"),
                                             ("replay_seconds", "^", ORANGE, "replay"),
                                             ("seconds", "o", BLUE, "whole recovery")):
                ax.scatter([r["since_snapshot"] for r in rows], [r[key] * 1e3 for r in rows], marker=marker, s=40,
                           facecolors=colour if i == 0 else "none", edgecolors=colour, linewidths=1.3,
                           label=f"{what}, {name}", zorder=3)
        ax.set_xlabel("inputs since the last snapshot at the crash (packets)")
        ax.set_ylabel("time (ms)")
        ax.set_ylim(bottom=0)
        fig.legend(loc="outside upper center", ncols=3)
        return svg_text(fig, "bench-recovery", "Recovery time against inputs since the snapshot, beside the paper",
                        "Scatter plot of the benchmark's recovery times (restore, replay and whole recovery) "
                        "against inputs since the snapshot, for the short and the long trace, with the paper's "
                        "range of recovery times shaded.")
