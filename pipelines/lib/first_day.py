"""The first daily partition when `COMET_LEDGER_START_DATE` is not set.

It is the first day the query service reports usage for: looked up once (the `LOOK_BACK_DAYS`
before today, in query calls of `COMET_LEDGER_CHUNK_DAYS` days) by the first `run`, `backfill` or
`demo`, and recorded in `$COMET_LEDGER_HOME/state/first_day.json` with how it was found. Until it
has been looked up, or when the service reports no usage in the look-back, it is `FALLBACK_DAYS`
before today (the fallback is recorded too once looked up, so the partitions stop moving). The
setting, when given, always wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

FALLBACK_DAYS = 90
LOOK_BACK_DAYS = 366


@dataclass(frozen=True)
class FirstDay:
    day: date
    source: str  # 'COMET_LEDGER_START_DATE', 'daily_quota', 'demo', or 'fallback'
    detail: str  # how it was found, in words

    def describe(self) -> str:
        return f"{self.day} ({self.detail})"


def record_path(home: Path) -> Path:
    return home / "state" / "first_day.json"


def recorded(home: Path) -> FirstDay | None:
    """What an earlier look-up recorded, or None (none yet, or unreadable: it is looked up again)."""
    try:
        data = json.loads(record_path(home).read_text())
        return FirstDay(date.fromisoformat(data["day"]), str(data["source"]), str(data["detail"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(home: Path, first: FirstDay) -> None:
    path = record_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(first) | {"day": first.day.isoformat()}, indent=2) + "\n")
    os.replace(tmp, path)


def fallback(today: date) -> FirstDay:
    return FirstDay(today - timedelta(days=FALLBACK_DAYS), "fallback",
                    f"{FALLBACK_DAYS} days before {today}: the service's first day of usage is not known yet")


def look_up(days_reported: list[date], today: date, looked_up_at: datetime) -> FirstDay:
    """The first day among `days_reported` (the days `daily_quota` listed over the look-back), else
    the fallback."""
    if not days_reported:
        found = fallback(today)
        return FirstDay(found.day, "fallback", f"{FALLBACK_DAYS} days before {today}: the query service reported "
                                               f"no usage in the {LOOK_BACK_DAYS} days before it "
                                               f"(looked up {looked_up_at:%Y-%m-%d %H:%M} UTC)")
    first = min(days_reported)
    return FirstDay(first, "daily_quota", f"the first day the query service reported usage for, over the "
                                          f"{LOOK_BACK_DAYS} days before {today} (looked up "
                                          f"{looked_up_at:%Y-%m-%d %H:%M} UTC)")
