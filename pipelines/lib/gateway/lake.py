"""CometAPI's gateway ledger → lake datasets.

- `gateway_logs/utc_date=D/ledger.parquet`: every ledger row created on UTC day D (all types:
  consume, refund, error, corrections), deduplicated. Replaced whole each time day D is pulled:
  the ledger is the gateway's current word on the day (late corrections included). The lake keeps
  UTC days whatever the reporting zone: the warehouse derives the reporting day
  (`sql/staging/reporting_day.sql`), and a reporting day is landed as the UTC days that cover it
  (`lake.utc_days_covering`).
- `gateway_pulls/pulled_date=P/<pull_id>.parquet`: one row per pull: the UTC days it covered, where
  the rows came from (`api`, `csv_export`), and how the API was read (`api_method`: `export`,
  `paging`, `export+paging` or `none`; `api_calls`). Written last; a day is "covered by the gateway
  ledger" only when a pull record says so, so an empty day and an unpulled day are told apart.
- `gateway_rejects/pull_id=<id>/rejects.parquet`: rows that could not be used, with the reason.
- `gateway_checks/pulled_date=P/<pull_id>.parquet`: how each pulled day was checked for completeness
  (`GATEWAY_CHECKS`: the day's type-2 quota against `/api/log/self/stat` and `/api/data/self`, the
  pages' count against `total`): passed, failed or not_checked (the server does not offer it), with
  the figures. A day whose check fails is not landed at all (`LedgerIncomplete`, one line naming the
  day): the pull fails and the lake keeps what it had.

A pull is landed a day at a time (`land_window`, `Landing`), so its memory is a few days' (the day
written, the day parsed, the day downloading), however long the window: day D is pulled
(`pull.pull_span`: its CSV export, else its pages; rows from either are source `api`),
parsed (an export in bulk by `gateway_fast`, pages item by item by `parse_item`), joined by the
console's CSV exports dropped into `<inbox>/gateway/*.csv` for day D; then, in a writer thread
while day D+1 is parsed and day D+2 downloads, deduplicated (a row present in several counts
once, see `gateway_ledger.DEDUP_KEY`), sorted, and written to a hidden temporary file beside day D's
ledger (on object storage also uploaded as an uncommitted data object). Only once every day has
been pulled and written are the day files put in place (on object storage: committed), then the
rejects and then the pull record are written: an API failure on any day leaves the lake as it
was, and a crash while the day files are put in place leaves days replaced by their newer rows but
no pull record claiming them.
"""

from __future__ import annotations

import os
import time as time_module
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.lib import disk, lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.gateway import fast as gateway_fast
from pipelines.lib.cometapi.gateway import GatewayClient, LedgerIncomplete, SpanCheck
from pipelines.lib.cometapi.pacing import RateLimit
from pipelines.lib.gateway.pull import LogChunk, method_of, pull_span
from pipelines.lib.gateway.ledger import (
    GATEWAY_SCHEMA,
    LOG_CONSUME,
    LOG_TYPE_NAMES,
    GatewayReject,
    dedupe_sorted,
    number_repeats,
    parse_export_csv,
    parse_item,
    records_to_table,
)
from pipelines.lib.days import window_days
from pipelines.lib.lake import UTC_TS
from pipelines.lib.quota.lake import new_id
from pipelines.lib.redact import redact
from pipelines.lib.request_logs.reader import is_export_file, walk_inbox

GATEWAY_PULLS = pa.schema(
    [
        ("pull_id", pa.string()),
        ("pulled_at", UTC_TS),
        ("pulled_date", pa.date32()),
        ("first_day", pa.date32()),
        ("last_day", pa.date32()),
        ("sources", pa.string()),
        ("rows", pa.int64()),
        ("rejects", pa.int64()),
        ("api_method", pa.string()),
        ("api_calls", pa.int64()),
        ("rows_without_request_id", pa.int64()),
        ("unknown_type_rows", pa.int64()),
        ("subscription_rows", pa.int64()),
        ("day_basis", pa.string()),  # what first_day..last_day count in: "utc" (lake_layout converts older pulls)
    ]
)
GATEWAY_CHECKS = pa.schema(
    [
        ("pull_id", pa.string()),
        ("pulled_at", UTC_TS),
        ("utc_date", pa.date32()),
        ("check_name", pa.string()),  # log_stat | data_self | total
        ("status", pa.string()),  # passed | failed | not_checked
        ("ledger_units", pa.int64()),  # the pulled rows' type-2 quota (rows, for total)
        ("server_units", pa.int64()),  # what the gateway says
        ("detail", pa.string()),
        ("api_method", pa.string()),  # export | paging
    ]
)
REJECTS = lake.REJECTS


@dataclass
class GatewayWindow:
    """What one pull of [first, last] found, as figures (the rows are in the day files)."""

    first: date
    last: date
    rows: int = 0
    billed_usd: Decimal = Decimal(0)
    requests: int = 0
    corrections: int = 0
    rows_by_type: Counter = field(default_factory=Counter)
    duplicates: int = 0
    rejects: list[tuple[str, str | None, GatewayReject]] = field(default_factory=list)  # (source, file, reject)
    sources: set[str] = field(default_factory=set)
    pages: int = 0  # lists of API items read: pages, or one per exported span
    exported: int = 0  # spans read from the export
    paged: int = 0  # spans paged
    api_calls: int = 0
    fallbacks: list[str] = field(default_factory=list)  # why the API was paged instead of exported
    checks: list[tuple[date, str, SpanCheck]] = field(default_factory=list)  # (day, method, check)
    rows_without_request_id: int = 0
    unknown_type_codes: Counter = field(default_factory=Counter)  # code -> rows
    subscription_rows: int = 0
    subscription_usd: Decimal = Decimal(0)

    @property
    def api_method(self) -> str:
        """`export`, `paging`, `export+paging` or `none`."""
        return method_of(self.exported, self.paged)


def day_bounds(first: date, last: date) -> tuple[int, int]:
    """Unix seconds [start, end] covering UTC days first..last (the API's filter is inclusive)."""
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    return int(start.timestamp()), int(end.timestamp()) - 1


def land_window(lake_root: Path, first: date, last: date, *, client: GatewayClient | None = None,
                export_files: Iterable[Path] = (), now: Callable[[], datetime],
                warn: Callable[[str], object] = lambda line: None,
                progress: Callable[[str], object] = lambda line: None) -> tuple[str, GatewayWindow]:
    """Pull UTC days [first, last] from `client` (None: the inbox exports only) and land them a day at a time.

    Returns (pull id, figures). `warn` gets each line saying why a day was paged; `progress` a line
    per day pulled (rows, calls, time left at the client's pace); `now` says when the pull was, once
    every day is in. A day that fails its completeness checks raises `LedgerIncomplete` naming it.
    """
    days = window_days(first, last)
    started = time_module.monotonic()

    def pull(day: date) -> LogChunk | None:
        start_ts, end_ts = day_bounds(day, day)
        if client is None:
            return None
        try:
            return pull_span(client, start_ts, end_ts)
        except LedgerIncomplete as exc:
            raise LedgerIncomplete(f"gateway ledger of {day} not landed, the lake keeps what it had: {exc}") from None

    with Landing(lake_root, first, last, export_files) as landing:

        def records(pulled: tuple[date, LogChunk | None]) -> pa.Table:
            day, chunk = pulled
            if chunk is not None and chunk.fallback:
                warn(chunk.fallback)
            rows = landing.day_records(day, chunk)
            if chunk is not None:
                done = days.index(day) + 1
                progress(progress_line(day, done, len(days), chunk, landing.window.api_calls,
                                       time_module.monotonic() - started, client))
            return rows

        def write(pulled: tuple[date, LogChunk | None], day_records: pa.Table) -> None:
            landing.stage(pulled[0], landing.deduplicated(day_records))

        # day D is deduplicated, sorted, encoded and synced in a writer thread while day D+1 is parsed
        lake.made_then_written(_pulled_ahead(window_days(first, last), pull), records, write)
        return landing.commit(now()), landing.window


def progress_line(day: date, done: int, days: int, chunk: LogChunk, calls: int, elapsed_s: float,
                  client: GatewayClient | None) -> str:
    """One line per day pulled: where the pull is, and how long the rest takes at the client's pace."""
    line = (f"gateway ledger {done}/{days} ({day}): {chunk.items} rows in {chunk.calls} calls "
            f"({chunk.method}), {calls} calls so far in {elapsed_s:.0f} s")
    if done < days and client is not None:
        per_day = calls / done
        left = client.rate_limit.seconds_for(round(per_day * (days - done)))
        line += f"; the other {days - done} days take about {duration(left)} more at " \
                f"{client.rate_limit.requests} calls per {client.rate_limit.window_s:g} s"
    return line


def calls_per_day(rows: int) -> int:
    """Calls to pull one day by paging: full pages, the empty page that ends them, stat, data."""
    return rows // 100 + 1 + 2


def backfill_estimate(days: int, limit: RateLimit, rows_per_day: tuple[int, ...] = (1_000, 10_000, 100_000)) -> str:
    """What a backfill of `days` days costs in calls and time at `limit`, said before it starts."""
    sizes = ", ".join(f"{duration(limit.seconds_for(days * calls_per_day(rows)))} at {rows:,} rows a day"
                      for rows in rows_per_day)
    return (f"gateway ledger: {days} day(s) at most {limit.requests} calls per {limit.window_s:g} s, paged "
            f"({calls_per_day(0)} calls a day and one more per 100 rows): {sizes}; "
            "a gateway whose CSV export checks out needs 3 calls a day")


def duration(seconds: float) -> str:
    """A person's reading of a duration: '40 s', '12 min', '3.5 h', '2.1 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 96 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _pulled_ahead(days: list[date], pull: Callable[[date], LogChunk | None]) -> Iterator[tuple[date, LogChunk | None]]:
    """(day, its pull) in order, the next day's pull under way while this day is landed.

    The gateway prepares and sends day D+1 while day D is parsed and written, so the two overlap
    instead of taking turns. One worker makes every call, in day order; at most two days are in
    memory. A failed pull raises here, in its turn.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-pull") as worker:
        upcoming = worker.submit(pull, days[0]) if days else None
        for index, day in enumerate(days):
            chunk = upcoming.result()
            upcoming = worker.submit(pull, days[index + 1]) if index + 1 < len(days) else None
            yield day, chunk


def chunk_records(chunk: LogChunk) -> tuple[pa.Table, list[GatewayReject], int]:
    """(records in the order they came, rejects, lists of items read) of one pulled span.

    An export read in bulk goes through `gateway_fast`, pages (and an export read item by item)
    through `parse_item`; the lists are the pages, or one for an export with rows.
    """
    parts, rejects, lists = [], [], 0
    if chunk.cells is not None and chunk.cells.num_rows:
        parsed = gateway_fast.records_from_cells(chunk.cells)
        parts.append(parsed.records)
        rejects += parsed.rejects
        lists += 1
    records = []
    for page in chunk.pages:
        lists += 1
        for item in page:
            outcome = parse_item(item, source="api")
            (rejects if isinstance(outcome, GatewayReject) else records).append(outcome)
    parts.append(records_to_table(records))
    return number_repeats(pa.concat_tables(parts)), rejects, lists


class Landing:
    """One pull of [first, last], landed a day at a time (`land_window`; see the module docstring).

    `add_day` (or `day_records`, `deduplicated`, then `stage`) for each day in order, then `commit`.
    Leaving a `with` block without `commit` (an exception) removes the day files staged so far.
    """

    def __init__(self, lake_root: Path, first: date, last: date, export_files: Iterable[Path] = ()):
        self.lake_root = lake_root
        self.window = GatewayWindow(first, last)
        self._staged: list[tuple[Path, Path, lake.Staged | None]] = []  # (temporary, final, upload) day files
        self._inbox: dict[date, list[pa.Table]] = {}  # day -> its rows of each inbox export, numbered per file
        self._inbox_rejects: list[tuple[str, str | None, GatewayReject]] = []
        for path in export_files:
            self._read_inbox_export(path)

    def __enter__(self) -> Landing:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for temporary, _, _ in self._staged:
            temporary.unlink(missing_ok=True)
        self._staged.clear()

    def _read_inbox_export(self, path: Path) -> None:
        # rejects.file is inbox-relative (sql/core/rejects.sql), and exports live in <inbox>/gateway/
        # (export_files): "gateway/<name>". The absolute path was stored before, so the same bad row
        # read from two data homes (or a moved one) was two different rejects.
        name = f"{path.parent.name}/{path.name}"
        outcomes = parse_export_csv(path)
        for outcome in outcomes:
            if isinstance(outcome, GatewayReject):
                self._inbox_rejects.append(("gateway_csv", name, outcome))
        records = number_repeats(records_to_table(o for o in outcomes if not isinstance(o, GatewayReject)))
        days = records["utc_date"]
        for day in sorted(set(days.to_pylist())):
            if self.window.first <= day <= self.window.last:
                self._inbox.setdefault(day, []).append(pc.filter(records, pc.equal(days, pa.scalar(day, pa.date32()))))

    def add_day(self, day: date, chunk: LogChunk | None) -> int:
        """`day_records`, `deduplicated`, then `stage` them; returns the day's row count."""
        rows = self.deduplicated(self.day_records(day, chunk))
        self.stage(day, rows)
        return rows.num_rows

    def day_records(self, day: date, chunk: LogChunk | None) -> pa.Table:
        if chunk is not None:
            self.window.checks += [(day, chunk.method, check) for check in chunk.checks]
        return self._day_records(day, chunk)

    def _day_records(self, day: date, chunk: LogChunk | None) -> pa.Table:
        """Day D's API records (None: not pulled) and inbox export records, as they came.

        API rows of another day (a gateway ignoring the span) are left out: each day's rows come
        with that day's own pull.
        """
        parts = [self._api_rows(chunk)] if chunk is not None else []
        parts = [pc.filter(rows, pc.equal(rows["utc_date"], pa.scalar(day, pa.date32()))) for rows in parts]
        inbox = self._inbox.pop(day, [])
        if inbox:
            self.window.sources.add("csv_export")
            parts += inbox
        return pa.concat_tables(parts) if parts else GATEWAY_SCHEMA.empty_table()

    def deduplicated(self, records: pa.Table) -> pa.Table:
        """A day's records deduplicated and sorted (`dedupe_sorted`), and counted in the figures."""
        rows, duplicates = dedupe_sorted(records)
        self.window.duplicates += duplicates
        self._count(rows)
        return rows

    def _api_rows(self, chunk: LogChunk) -> pa.Table:
        window = self.window
        window.api_calls += chunk.calls
        window.exported += chunk.method == "export"
        window.paged += chunk.method == "paging"
        window.fallbacks += [chunk.fallback] if chunk.fallback else []
        rows, rejects, lists = chunk_records(chunk)
        window.pages += lists
        if lists:
            window.sources.add("api")
        window.rejects += [("gateway_api", None, reject) for reject in rejects]
        return rows

    def _count(self, rows: pa.Table) -> None:
        window = self.window
        window.rows += rows.num_rows
        if not rows.num_rows:
            return
        window.billed_usd += pc.sum(rows["billed_usd"]).as_py()
        corrections = rows["is_correction"]
        window.corrections += pc.sum(corrections).as_py()
        window.requests += pc.sum(pc.and_(pc.equal(rows["log_type"], LOG_CONSUME), pc.invert(corrections))).as_py()
        counts = pc.value_counts(rows["log_type_name"])
        window.rows_by_type.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                                            strict=True)))
        window.rows_without_request_id += pc.sum(pc.invert(rows["has_request_id"])).as_py()
        unknown = pc.filter(rows["log_type"], pc.invert(pc.is_in(rows["log_type"],
                                                                  value_set=pa.array(list(LOG_TYPE_NAMES), pa.int8()))))
        window.unknown_type_codes.update(unknown.to_pylist())
        subscription = pc.filter(rows["billed_usd"], rows["is_subscription"])
        window.subscription_rows += len(subscription)
        window.subscription_usd += pc.sum(subscription).as_py() or Decimal(0)

    def stage(self, day: date, rows: pa.Table) -> None:
        """Write day D's file beside its ledger, hidden (`.*.tmp`), complete and on disk (on object
        storage also uploaded as an uncommitted data object); `commit` publishes it."""
        final = lake_datasets.GATEWAY_LOGS.path(self.lake_root, day)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        self._staged.append((temporary, final, None))  # known before it is written: `__exit__` removes it
        with disk.writing(final):
            pq.write_table(rows, temporary, compression="zstd")
            with open(temporary, "rb") as fh:
                os.fsync(fh.fileno())
        self._staged[-1] = (temporary, final, lake.stage(temporary, final))

    def commit(self, pulled_at: datetime) -> str:
        """Put the day files in place, then write the rejects and, last, the pull record; returns the pull id."""
        for temporary, final, uploaded in self._staged:
            lake.fsync_dir(lake.publish(temporary, final, uploaded).parent)
        self._staged.clear()
        window = self.window
        window.rejects += self._inbox_rejects
        self._inbox_rejects = []
        pull_id = new_id(pulled_at)
        if window.rejects:
            rows = [
                {"source": source, "file": file, "line": r.line, "reason": r.reason, "detail": redact(r.detail),
                 "raw": redact(r.raw)}
                for source, file, r in window.rejects
            ]
            lake_datasets.GATEWAY_REJECTS.write(self.lake_root, pull_id, pa.Table.from_pylist(rows, schema=REJECTS))
        if window.checks:
            checks = [{"pull_id": pull_id, "pulled_at": pulled_at, "utc_date": day, "check_name": check.name,
                       "status": check.status, "ledger_units": check.ledger_units, "server_units": check.server_units,
                       "detail": check.detail or None, "api_method": method}
                      for day, method, check in window.checks]
            lake_datasets.GATEWAY_CHECKS.write(self.lake_root, pulled_at.date(),
                                               pa.Table.from_pylist(checks, schema=GATEWAY_CHECKS), pull_id)
        record = {
            "pull_id": pull_id,
            "pulled_at": pulled_at,
            "pulled_date": pulled_at.date(),
            "first_day": window.first,
            "last_day": window.last,
            "sources": ",".join(sorted(window.sources)) or "none",
            "rows": window.rows,
            "rejects": len(window.rejects),
            "api_method": window.api_method,
            "api_calls": window.api_calls,
            "rows_without_request_id": window.rows_without_request_id,
            "unknown_type_rows": sum(window.unknown_type_codes.values()),
            "subscription_rows": window.subscription_rows,
            "day_basis": "utc",
        }
        lake_datasets.GATEWAY_PULLS.write(self.lake_root, record["pulled_date"],
                                          pa.Table.from_pylist([record], schema=GATEWAY_PULLS), pull_id)
        return pull_id


def summary(window: GatewayWindow) -> dict:
    """Figures for the materialisation metadata."""
    return {
        "rows": window.rows,
        "billed_usd": window.billed_usd,
        "requests": window.requests,
        "rows_by_type": dict(sorted(window.rows_by_type.items())),
        "corrections": window.corrections,
        "duplicates": window.duplicates,
        "rejects_by_reason": dict(Counter(r.reason for _, _, r in window.rejects)),
        "pages": window.pages,
        "sources": sorted(window.sources),
        "api_method": window.api_method,
        "api_calls": window.api_calls,
        "fallbacks": list(window.fallbacks),
        "rows_without_request_id": window.rows_without_request_id,
        "unknown_type_codes": {str(code): n for code, n in sorted(window.unknown_type_codes.items())},
        "subscription_rows": window.subscription_rows,
        "subscription_usd": window.subscription_usd,
        "checks": check_summary(window.checks),
    }


def check_summary(checks: list[tuple[date, str, SpanCheck]]) -> dict[str, dict[str, int]]:
    """check name -> status -> days: e.g. {"log_stat": {"passed": 30}, "data_self": {"not_checked": 30}}."""
    out: dict[str, Counter] = {}
    for _, _, check in checks:
        out.setdefault(check.name, Counter())[check.status] += 1
    return {name: dict(sorted(counts.items())) for name, counts in sorted(out.items())}


def check_rows(checks: list[tuple[date, str, SpanCheck]], limit: int = 62) -> list[tuple]:
    """(day, check, status, ledger units, server units, detail) for a metadata table, days in order."""
    return [(str(day), check.name, check.status, check.ledger_units, check.server_units, check.detail)
            for day, _, check in checks[:limit]]


def export_files(inbox: Path) -> list[Path]:
    """The console's CSV exports dropped into `<inbox>/gateway/` (listed by `reader.walk_inbox`: a link
    out of the inbox or a non-UTF-8 name is skipped, and reported by the inbox step)."""
    return [p for p in walk_inbox(inbox).files if is_export_file(p.relative_to(inbox).as_posix())]


def reject_params(lake_root: Path) -> dict:
    """SQL parameters: the gateway reject files (a schema-only file stands in for none), and every
    ledger day file (for the rows whose ratios could not be read, sql/core/rejects.sql)."""
    return {"gateway_reject_files": lake_datasets.GATEWAY_REJECTS.files_or_empty(lake_root),
            "gateway_all_log_files": lake_datasets.GATEWAY_LOGS.files_and_empty(lake_root)}
