"""How the speed panel and the reply summary write figures: counts, rates, shares, durations.

No Qt here; "–" stands for a figure not known (yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

DASH = "–"

_T = TypeVar("_T")


def count(n: int | None) -> str:
    return DASH if n is None else f"{n:,}"


def rate(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def percent(fraction: float | None) -> str:
    return DASH if fraction is None else f"{fraction:.0%}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 0.9995:  # below this, rounding to ms would print "1000 ms"
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:,.1f} s"


def at(values: Sequence[_T], index: int) -> _T | None:
    return values[index] if index < len(values) else None
