"""The product's one clock: what time it is, and the reporting days that follow from it.

Every reading of "now" in the product goes through `now()`: the default day of `comet-ledger run`,
the demo's window, `fetched_at` and `pulled_at` of a pull, when a pack or an anomaly was made, the
smoke test's day. Unset, it is the system clock. `COMET_LEDGER_NOW` sets it, for tests and for
replaying a run as it would have gone at another instant:
- `2027-01-01T00:05:00Z` (an ISO 8601 instant with its offset): stopped at that instant;
- `2027-01-01T00:05:00Z@1796456885.5`: that instant at the given system time (seconds since the
  epoch), running on from there at the system clock's pace, so that pulls made one after the other
  keep their order (restatements are told apart by `pulled_at`).

Two things are measured on other clocks, on purpose:
- the age of a file (`filesystem_now`): garbage collection compares modification times, which the
  file system stamps, with the file system's own idea of now, so a process clock set elsewhere
  (pinned, or shifted by a tool like faketime) can neither keep a stale file nor collect a fresh one;
- elapsed time for timeouts and pacing (`time.monotonic`): a duration, not a date.

A thread that waits a while for a signal (an attempt's deadline, a progress heartbeat) waits with
`wait_for`, which sleeps in short steps, rather than `threading.Event.wait(timeout)`: under libfaketime
(the shifted clocks of `make test-clocks`, and any host that preloads it) a timed wait on a lock takes
its deadline from the faked monotonic clock and the kernel waits for it on the real one, so it never
returns; `time.sleep` and `time.monotonic` stay consistent there.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

VARIABLE = "COMET_LEDGER_NOW"


WAIT_STEP_S = 0.05


def wait_for(event: threading.Event, seconds: float) -> bool:
    """`event.wait(seconds)` that returns under libfaketime too: True once `event` is set, False when
    `seconds` have passed first (checked every WAIT_STEP_S)."""
    deadline = time.monotonic() + seconds
    while not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, WAIT_STEP_S))
    return True


def now() -> datetime:
    """The current instant, timezone-aware, in UTC (`COMET_LEDGER_NOW` when set)."""
    raw = os.environ.get(VARIABLE, "").strip()
    if not raw:
        return datetime.now(UTC)
    instant, since = parse(raw)
    return instant if since is None else instant + timedelta(seconds=time.time() - since)


def parse(raw: str) -> tuple[datetime, float | None]:
    """`COMET_LEDGER_NOW` as (aware UTC instant, system time it was set at or None when stopped);
    a one-line `ValueError` naming the variable otherwise."""
    text, sep, since_raw = raw.partition("@")
    try:
        value = datetime.fromisoformat(text)
        since = float(since_raw) if sep else None
    except ValueError:
        value, since = None, None
    if value is None or value.tzinfo is None or (sep and not (since is not None and math.isfinite(since))):
        raise ValueError(f"{VARIABLE}={raw!r} is not an instant with its offset, like 2027-01-01T00:05:00Z, "
                         "optionally followed by @<system time it was set at, in seconds since the epoch>")
    return value.astimezone(UTC), since


def running_from(instant: str) -> str:
    """A `COMET_LEDGER_NOW` value that reads `instant` now and runs on from it."""
    return f"{instant}@{time.time()!r}"


def today(timezone: str | ZoneInfo) -> date:
    """Today's reporting day in `timezone` (not over yet)."""
    tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    return now().astimezone(tz).date()


def yesterday(timezone: str | ZoneInfo) -> date:
    """The last complete reporting day in `timezone`."""
    return today(timezone) - timedelta(days=1)


def refuse_future(last: date, timezone: str | ZoneInfo) -> None:
    """Raise a one-line `ValueError` naming `last` when it is after today in `timezone`: a day that
    has not begun has nothing to pull. Today itself is allowed, as a partial day."""
    current = today(timezone)
    if last > current:
        raise ValueError(f"{last} has not happened yet: today is {current} in {timezone}; nothing was pulled")


def filesystem_now(folder: Path) -> float:
    """Now, as the file system under `folder` stamps modification times (seconds since the epoch):
    the mtime of a probe file written there and removed at once."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".clock-probe.{uuid.uuid4().hex}"
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # stamped by the file system
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)


def stamp(path: Path, when: float) -> None:
    """Set `path`'s modification time to `when`, a `filesystem_now` reading (never the process clock)."""
    os.utime(path, (when, when))
