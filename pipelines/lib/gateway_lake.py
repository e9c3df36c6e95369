"""CometAPI's gateway ledger → lake datasets.

- `gateway_logs/usage_date=D/ledger.parquet`: every ledger row of reporting day D (all types:
  consume, refund, error, corrections), deduplicated. Replaced whole each time day D is pulled:
  the ledger is the gateway's current word on the day (late corrections included).
- `gateway_pulls/pulled_date=P/<pull_id>.parquet`: one row per pull: the days it covered, where
  the rows came from (`api`, `csv_export`), and how the API was read (`api_method`: `export`,
  `paging`, `export+paging` or `none`; `api_calls`). Written last; a day is "covered by the gateway
  ledger" only when a pull record says so, so an empty day and an unpulled day are told apart.
- `gateway_rejects/pull_id=<id>/rejects.parquet`: rows that could not be used, with the reason.

The console's CSV exports dropped into `<inbox>/gateway/*.csv` are read alongside what the API gave
(`GatewayClient.pull_log`: its CSV export, else its pages; rows from either are source `api`); a row
present in both counts once (see `gateway_ledger.dedupe`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa

from pipelines.lib import lake
from pipelines.lib.cometapi.gateway import LogPull
from pipelines.lib.gateway_ledger import (
    GATEWAY_SCHEMA,
    GatewayRecord,
    GatewayReject,
    dedupe,
    parse_export_csv,
    parse_item,
    records_to_table,
)
from pipelines.lib.quota_lake import UTC_TS, new_id, window_days

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
    """What one pull of [first, last] found, before it is written."""

    first: date
    last: date
    records: list[GatewayRecord] = field(default_factory=list)
    rejects: list[tuple[str, str | None, GatewayReject]] = field(default_factory=list)  # (source, file, reject)
    duplicates: int = 0
    sources: set[str] = field(default_factory=set)
    pages: int = 0  # lists of API items read: pages, or one per exported chunk
    api_method: str = "none"  # LogPull.method: export, paging, export+paging, none
    api_calls: int = 0
    fallbacks: list[str] = field(default_factory=list)  # why the API was paged instead of exported


def day_bounds(first: date, last: date, tz: ZoneInfo) -> tuple[int, int]:
    """Unix seconds [start, end] covering reporting days first..last (the API's filter is inclusive)."""
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    return int(start.timestamp()), int(end.timestamp()) - 1


def collect(
    first: date,
    last: date,
    tz: ZoneInfo,
    pages: Iterable[list[dict]] = (),
    export_files: Iterable[Path] = (),
    pull: LogPull | None = None,
) -> GatewayWindow:
    """Normalise API items (`pull`, or bare `pages`) and inbox CSV exports into one deduplicated window."""
    window = GatewayWindow(first, last)
    if pull is not None:
        pages = pull.pages
        window.api_method, window.api_calls, window.fallbacks = pull.method, pull.calls, list(pull.fallbacks)
    parsed: list[GatewayRecord] = []
    for page in pages:
        window.pages += 1
        window.sources.add("api")
        for item in page:
            outcome = parse_item(item, tz=tz, source="api")
            if isinstance(outcome, GatewayReject):
                window.rejects.append(("gateway_api", None, outcome))
            else:
                parsed.append(outcome)
    for path in export_files:
        # rejects.file is inbox-relative (sql/core/rejects.sql), and exports live in <inbox>/gateway/
        # (export_files): "gateway/<name>". The absolute path was stored before, so the same bad row
        # read from two data homes (or a moved one) was two different rejects.
        name = f"{path.parent.name}/{path.name}"
        for outcome in parse_export_csv(path, tz=tz):
            if isinstance(outcome, GatewayReject):
                window.rejects.append(("gateway_csv", name, outcome))
            elif first <= outcome.usage_date <= last:
                window.sources.add("csv_export")
                parsed.append(outcome)
    in_window = [r for r in parsed if first <= r.usage_date <= last]
    kept, duplicates = dedupe(in_window)
    window.records = sorted(kept, key=lambda r: (r.usage_date, r.created_at, r.request_id, r.log_type))
    window.duplicates = len(duplicates)
    return window


def land(lake_root: Path, window: GatewayWindow, pulled_at: datetime) -> str:
    """Replace each day's ledger file in the window, then write the rejects and the pull record."""
    pull_id = new_id(pulled_at)
    by_day: dict[date, list[GatewayRecord]] = {d: [] for d in window_days(window.first, window.last)}
    for record in window.records:
        by_day[record.usage_date].append(record)
    for day, records in by_day.items():
        lake.write_partition_file(lake_root, "gateway_logs", "usage_date", day, "ledger", records_to_table(records))
    if window.rejects:
        rows = [
            {"source": source, "file": file, "line": r.line, "reason": r.reason, "detail": r.detail, "raw": r.raw}
            for source, file, r in window.rejects
        ]
        lake.write_partition_file(lake_root, "gateway_rejects", "pull_id", pull_id, "rejects",
                                  pa.Table.from_pylist(rows, schema=REJECTS))
    record = {
        "pull_id": pull_id,
        "pulled_at": pulled_at,
        "pulled_date": pulled_at.date(),
        "first_day": window.first,
        "last_day": window.last,
        "sources": ",".join(sorted(window.sources)) or "none",
        "rows": len(window.records),
        "rejects": len(window.rejects),
        "api_method": window.api_method,
        "api_calls": window.api_calls,
    }
    lake.write_partition_file(lake_root, "gateway_pulls", "pulled_date", record["pulled_date"], pull_id,
                              pa.Table.from_pylist([record], schema=GATEWAY_PULLS))
    return pull_id


def summary(window: GatewayWindow) -> dict:
    """Figures for the materialisation metadata."""
    by_type = Counter(r.log_type_name for r in window.records)
    return {
        "rows": len(window.records),
        "billed_usd": sum((r.billed_usd for r in window.records), Decimal(0)),
        "requests": sum(1 for r in window.records if r.is_request),
        "rows_by_type": dict(sorted(by_type.items())),
        "corrections": sum(1 for r in window.records if r.is_correction),
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
