"""Ranges of reporting days, written once: every inclusive range [first, last] the pipeline walks
day by day, cuts into runs, calls or months, or folds back from a set of days.

A reporting day is a `date` in COMET_LEDGER_TIMEZONE; nothing here knows a time zone or an instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

ONE_DAY = timedelta(days=1)


def window_days(first: date, last: date) -> list[date]:
    """Every day of [first, last], in order; none when last is before first."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def chunks(first: date, last: date, size: int) -> list[tuple[date, date]]:
    """[first, last] cut into consecutive ranges of at most `size` days, in order (the last one may
    be shorter); none when last is before first."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"a chunk is a whole number of days, at least 1, got {size!r}")
    out = []
    while first <= last:
        end = min(last, first + timedelta(days=size - 1))
        out.append((first, end))
        first = end + ONE_DAY
    return out


def month_chunks(first: date, last: date) -> list[tuple[date, date]]:
    """[first, last] cut at month boundaries: (first, end of its month), whole months between, then
    (first of last's month, last); none when last is before first."""
    out = []
    while first <= last:
        next_month = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        out.append((first, min(last, next_month - ONE_DAY)))
        first = next_month
    return out


def spans(days: Iterable[date]) -> list[tuple[date, date]]:
    """The days in order, repeats dropped, consecutive ones folded into (first, last) ranges."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and day == out[-1][1] + ONE_DAY:
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out
