"""The month a pack covers: its reporting days, and the instants where it starts and ends."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines.lib.days import spans, window_days

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    month: str  # YYYY-MM
    first_day: date
    last_day: date
    timezone: str

    @property
    def days(self) -> list[date]:
        return window_days(self.first_day, self.last_day)

    @property
    def days_in_month(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def starts_at(self) -> datetime:
        """First instant of the month's first reporting day, in UTC."""
        return _midnight_utc(self.first_day, self.timezone)

    @property
    def ends_at(self) -> datetime:
        """First instant after the month's last reporting day, in UTC."""
        return _midnight_utc(self.last_day + timedelta(days=1), self.timezone)

    def today(self, now: datetime) -> date:
        """The reporting day `now` (timezone-aware) falls on, in the period's zone."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(ZoneInfo(self.timezone)).date()

    def refuse_unstarted(self, now: datetime) -> None:
        """A one-line ValueError when the month has not started at `now`: it has no figures yet."""
        if self.first_day > (today := self.today(now)):
            raise ValueError(f"month {self.month} has not started yet: today is {today} in {self.timezone}")

    def is_over(self, now: datetime) -> bool:
        """The month's last reporting day has ended at `now`; until then its figures are the month so far."""
        self.today(now)  # refuses a naive instant
        return now >= self.ends_at


def parse_month(month: str, timezone: str) -> Period:
    """`YYYY-MM` → Period; a clear ValueError for anything else."""
    match = _MONTH.match(month or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"month {month!r} is not a month in YYYY-MM form (e.g. 2026-10)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {timezone!r} is not an IANA time zone (e.g. UTC, Asia/Shanghai)") from None
    year, number = int(match.group(1)), int(match.group(2))
    last = calendar.monthrange(year, number)[1]
    return Period(month, date(year, number, 1), date(year, number, last), timezone)


def day_ranges(days: Iterable[date]) -> str:
    """`2026-10-01..2026-10-12, 2026-10-15`: consecutive days folded into ranges."""
    return ", ".join(a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in spans(days))


def _midnight_utc(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)
