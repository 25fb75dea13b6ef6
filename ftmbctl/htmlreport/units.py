"""Numbers as a person reads them, the same in tables, captions, tooltips and axis ticks."""

from __future__ import annotations

DURATION_UNITS = (("ns", 1.0), ("µs", 1e3), ("ms", 1e6), ("s", 1e9))
SIZE_UNITS = (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9))  # powers of 1000, as on the axes


def _scaled(value: float, units: tuple[tuple[str, float], ...]) -> str:
    """Three significant digits in the largest unit that keeps the number at 1 or more (a value
    that rounds up to 1000 moves to the next unit: "1 ms", never "1e+03 µs")."""
    for name, scale in reversed(units):
        if abs(value) >= scale * 0.9995 or scale == units[0][1]:
            text = f"{value / scale:.3g}"
            return f"{text} {name}" if "e" not in text else f"{value / scale:.0f} {name}"
    raise AssertionError("unreachable: the smallest unit takes every value")


def duration(ns: float | None) -> str:
    """A duration given in nanoseconds: "850 ns", "14.3 µs", "2.41 ms", "1.2 s"."""
    return "-" if ns is None else _scaled(ns, DURATION_UNITS)


def size(count: float) -> str:
    """A byte count: "812 B", "14.2 KB", "3.1 MB"."""
    return _scaled(count, SIZE_UNITS)


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage: "9.5%" ("-" of nothing)."""
    return f"{100 * part / whole:.3g}%" if whole else "-"
