"""The one percentile definition every report uses (record's summary, bench, the HTML report)."""

from __future__ import annotations

import math
import statistics
from typing import Sequence, TypeVar

N = TypeVar("N", int, float)


def percentile(values: Sequence[N], p: float) -> N | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it (a value
    that occurred, never an interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float | None:
    """The middle value (the mean of the two middle ones for an even count); None for none."""
    return statistics.median(values) if values else None
