"""CometAPI's gateway ledger → lake datasets.

- `gateway_logs/usage_date=D/ledger.parquet`: every ledger row of reporting day D (all types:
  consume, refund, error, corrections), deduplicated. Replaced whole each time day D is pulled:
  the ledger is the gateway's current word on the day (late corrections included).
- `gateway_pulls/pulled_date=P/<pull_id>.parquet`: one row per pull: the days it covered, where
  the rows came from (`api`, `csv_export`), and how the API was read (`api_method`: `export`,
  `paging`, `export+paging` or `none`; `api_calls`). Written last; a day is "covered by the gateway
  ledger" only when a pull record says so, so an empty day and an unpulled day are told apart.
- `gateway_rejects/pull_id=<id>/rejects.parquet`: rows that could not be used, with the reason.

A pull is landed a day at a time (`land_window`, `Landing`), so its memory is a few days' (the day
written, the day parsed, the day downloading), however long the window: day D is pulled
(`GatewayClient.pull_span`: its CSV export, else its pages; rows from either are source `api`),
parsed (an export in bulk by `gateway_fast`, pages item by item by `parse_item`), joined by the
console's CSV exports dropped into `<inbox>/gateway/*.csv` for day D; then, in a writer thread
while day D+1 is parsed and day D+2 downloads, deduplicated (a row present in several counts
once, see `gateway_ledger.dedupe`), sorted, and written to a hidden temporary file beside day D's
ledger. Only once every day has been pulled and written are the day files put in place, then the
rejects and then the pull record are written: an API failure on any day leaves the lake as it
was, and a crash while the day files are put in place leaves days replaced by their newer rows but
no pull record claiming them.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.lib import gateway_fast, lake
from pipelines.lib.cometapi.gateway import GatewayClient, LogChunk, method_of
from pipelines.lib.gateway_ledger import (
    GATEWAY_SCHEMA,
    LOG_CONSUME,
    GatewayRecord,
    GatewayReject,
    parse_export_csv,
    parse_item,
    records_to_table,
)
from pipelines.lib.lake import UTC_TS, window_days
from pipelines.lib.quota_lake import new_id

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
    ]
)
REJECTS = lake.REJECTS
SCHEMAS = {"gateway_logs": GATEWAY_SCHEMA, "gateway_pulls": GATEWAY_PULLS, "gateway_rejects": REJECTS}


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

    @property
    def api_method(self) -> str:
        """`export`, `paging`, `export+paging` or `none`."""
        return method_of(self.exported, self.paged)


def day_bounds(first: date, last: date, tz: ZoneInfo) -> tuple[int, int]:
    """Unix seconds [start, end] covering reporting days first..last (the API's filter is inclusive).

    Every instant in [start, end] falls on a day first..last by `datetime.fromtimestamp` (checked for
    every zone over 1975-2040); a day a zone skipped (Samoa's 2011-12-30) has end < start.
    """
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    return int(start.timestamp()), int(end.timestamp()) - 1


def land_window(lake_root: Path, first: date, last: date, tz: ZoneInfo, *, client: GatewayClient | None = None,
                export_files: Iterable[Path] = (), now: Callable[[], datetime],
                warn: Callable[[str], object] = lambda line: None) -> tuple[str, GatewayWindow]:
    """Pull [first, last] from `client` (None: the inbox exports only) and land it a day at a time.

    Returns (pull id, figures). `warn` gets each line saying why a day was paged; `now` says when
    the pull was, once every day is in.
    """

    def pull(day: date) -> LogChunk | None:
        start_ts, end_ts = day_bounds(day, day, tz)
        return client.pull_span(start_ts, end_ts) if client is not None and start_ts <= end_ts else None

    with Landing(lake_root, first, last, tz, export_files) as landing:

        def records(pulled: tuple[date, LogChunk | None]) -> pa.Table:
            day, chunk = pulled
            if chunk is not None and chunk.fallback:
                warn(chunk.fallback)
            return landing.day_records(day, chunk)

        def write(pulled: tuple[date, LogChunk | None], day_records: pa.Table) -> None:
            landing.stage(pulled[0], landing.deduplicated(day_records))

        # day D is deduplicated, sorted, encoded and synced in a writer thread while day D+1 is parsed
        lake.made_then_written(_pulled_ahead(window_days(first, last), pull), records, write)
        return landing.commit(now()), landing.window


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


def chunk_records(chunk: LogChunk, tz: ZoneInfo) -> tuple[pa.Table, list[GatewayReject], int]:
    """(records in the order they came, rejects, lists of items read) of one pulled span.

    An export read in bulk goes through `gateway_fast`, pages (and an export read item by item)
    through `parse_item`; the lists are the pages, or one for an export with rows.
    """
    parts, rejects, lists = [], [], 0
    if chunk.cells is not None and chunk.cells.num_rows:
        parsed = gateway_fast.records_from_cells(chunk.cells, tz=tz)
        parts.append(parsed.records)
        rejects += parsed.rejects
        lists += 1
    records = []
    for page in chunk.pages:
        lists += 1
        for item in page:
            outcome = parse_item(item, tz=tz, source="api")
            (rejects if isinstance(outcome, GatewayReject) else records).append(outcome)
    parts.append(records_to_table(records))
    return pa.concat_tables(parts), rejects, lists


class Landing:
    """One pull of [first, last], landed a day at a time (`land_window`; see the module docstring).

    `add_day` (or `day_records`, `deduplicated`, then `stage`) for each day in order, then `commit`.
    Leaving a `with` block without `commit` (an exception) removes the day files staged so far.
    """

    def __init__(self, lake_root: Path, first: date, last: date, tz: ZoneInfo, export_files: Iterable[Path] = ()):
        self.lake_root = lake_root
        self.tz = tz
        self.window = GatewayWindow(first, last)
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final) day files
        self._inbox: dict[date, list[GatewayRecord]] = {}
        self._inbox_rejects: list[tuple[str, str | None, GatewayReject]] = []
        for path in export_files:
            self._read_inbox_export(path)

    def __enter__(self) -> Landing:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for temporary, _ in self._staged:
            temporary.unlink(missing_ok=True)
        self._staged.clear()

    def _read_inbox_export(self, path: Path) -> None:
        # rejects.file is inbox-relative (sql/core/rejects.sql), and exports live in <inbox>/gateway/
        # (export_files): "gateway/<name>". The absolute path was stored before, so the same bad row
        # read from two data homes (or a moved one) was two different rejects.
        name = f"{path.parent.name}/{path.name}"
        for outcome in parse_export_csv(path, tz=self.tz):
            if isinstance(outcome, GatewayReject):
                self._inbox_rejects.append(("gateway_csv", name, outcome))
            elif self.window.first <= outcome.usage_date <= self.window.last:
                self._inbox.setdefault(outcome.usage_date, []).append(outcome)

    def add_day(self, day: date, chunk: LogChunk | None) -> int:
        """`day_records`, `deduplicated`, then `stage` them; returns the day's row count."""
        rows = self.deduplicated(self.day_records(day, chunk))
        self.stage(day, rows)
        return rows.num_rows

    def day_records(self, day: date, chunk: LogChunk | None) -> pa.Table:
        """Day D's API records (None: not pulled) and inbox export records, as they came.

        API rows of another day (a gateway ignoring the span) are left out: each day's rows come
        with that day's own pull.
        """
        parts = [self._api_rows(chunk)] if chunk is not None else []
        parts = [pc.filter(rows, pc.equal(rows["usage_date"], pa.scalar(day, pa.date32()))) for rows in parts]
        inbox = self._inbox.pop(day, [])
        if inbox:
            self.window.sources.add("csv_export")
            parts.append(records_to_table(inbox))
        return pa.concat_tables(parts) if parts else GATEWAY_SCHEMA.empty_table()

    def deduplicated(self, records: pa.Table) -> pa.Table:
        """A day's records deduplicated and sorted (`gateway_fast.dedupe_sorted`), and counted in the figures."""
        rows, duplicates = gateway_fast.dedupe_sorted(records)
        self.window.duplicates += duplicates
        self._count(rows)
        return rows

    def _api_rows(self, chunk: LogChunk) -> pa.Table:
        window = self.window
        window.api_calls += chunk.calls
        window.exported += chunk.method == "export"
        window.paged += chunk.method == "paging"
        window.fallbacks += [chunk.fallback] if chunk.fallback else []
        rows, rejects, lists = chunk_records(chunk, self.tz)
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

    def stage(self, day: date, rows: pa.Table) -> None:
        """Write day D's file beside its ledger, hidden (`.*.tmp`), complete and on disk; `commit` renames it."""
        final = lake.partition_dir(self.lake_root, "gateway_logs", "usage_date", day) / "ledger.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        self._staged.append((temporary, final))
        pq.write_table(rows, temporary, compression="zstd")
        with open(temporary, "rb") as fh:
            os.fsync(fh.fileno())

    def commit(self, pulled_at: datetime) -> str:
        """Put the day files in place, then write the rejects and, last, the pull record; returns the pull id."""
        for temporary, final in self._staged:
            os.replace(temporary, final)
            lake.fsync_dir(final.parent)
        self._staged.clear()
        window = self.window
        window.rejects += self._inbox_rejects
        self._inbox_rejects = []
        pull_id = new_id(pulled_at)
        if window.rejects:
            rows = [
                {"source": source, "file": file, "line": r.line, "reason": r.reason, "detail": r.detail, "raw": r.raw}
                for source, file, r in window.rejects
            ]
            lake.write_partition_file(self.lake_root, "gateway_rejects", "pull_id", pull_id, "rejects",
                                      pa.Table.from_pylist(rows, schema=REJECTS))
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
        }
        lake.write_partition_file(self.lake_root, "gateway_pulls", "pulled_date", record["pulled_date"], pull_id,
                                  pa.Table.from_pylist([record], schema=GATEWAY_PULLS))
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
    }


def export_files(inbox: Path) -> list[Path]:
    """The console's CSV exports dropped into `<inbox>/gateway/`."""
    folder = inbox / "gateway"
    return sorted(p for p in folder.glob("*.csv") if not p.name.startswith(".")) if folder.is_dir() else []


def reject_params(lake_root: Path) -> dict:
    """SQL parameter: the gateway reject files (a schema-only file stands in for none)."""
    found = lake.files(lake_root, "gateway_rejects")
    return {"gateway_reject_files": found or [lake.empty_file(lake_root, "gateway_rejects", REJECTS)]}
