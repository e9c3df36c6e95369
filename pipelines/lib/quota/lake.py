"""Query-service answers → lake datasets.

Four datasets, each written only by this module:

- `quota_daily/usage_date=D/<pull_id>.parquet`: what one pull said about day D, one row per key.
  Files are never overwritten: every pull is kept, so a later pull that changes a past day is a
  visible restatement, not a silent overwrite.
- `quota_pulls/pulled_date=D/<pull_id>.parquet`: one row per pull: which days it covered. It is
  written last and is the commit marker: day files whose pull has no record are ignored, and a
  covered day without rows means "no usage that day" (the service omits such days from a present
  `daily_quota`; an answer without the field is refused before it gets here).
- `balance_snapshots/fetched_date=D/<snapshot_id>.parquet` and `key_snapshots/...`: the account
  and per-key figures at the moment of one call. They describe only that moment; nothing here
  back-dates them.

Assumption (the service does not document it): a `daily_quota` date is a reporting day in
`COMET_LEDGER_TIMEZONE`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.days import window_days
from pipelines.lib.lake import UTC_TS
from pipelines.lib.cometapi.query import DailyPull, QuotaResponse

MONEY = pa.decimal128(18, 6)
QUOTA_DAILY = pa.schema(
    [
        ("usage_date", pa.date32()),
        ("key_name", pa.string()),
        ("cost_usd", MONEY),
        ("requests", pa.int64()),
        ("pull_id", pa.string()),
        ("pulled_at", UTC_TS),
    ]
)
QUOTA_PULLS = pa.schema(
    [
        ("pull_id", pa.string()),
        ("pulled_at", UTC_TS),
        ("pulled_date", pa.date32()),
        ("kept_start", pa.date32()),
        ("kept_end", pa.date32()),
        ("requested_start", pa.date32()),
        ("requested_end", pa.date32()),
        ("days_with_usage", pa.int64()),
        ("entries", pa.int64()),
        ("response_sha256", pa.string()),
    ]
)
BALANCE_SNAPSHOTS = pa.schema(
    [
        ("snapshot_id", pa.string()),
        ("fetched_at", UTC_TS),
        ("fetched_date", pa.date32()),
        ("username", pa.string()),
        ("balance_usd", MONEY),
        ("total_used_usd", MONEY),
        ("request_count", pa.int64()),
    ]
)
KEY_SNAPSHOTS = pa.schema(
    [
        ("snapshot_id", pa.string()),
        ("fetched_at", UTC_TS),
        ("fetched_date", pa.date32()),
        ("key_name", pa.string()),
        ("remain_quota_usd", MONEY),
        ("used_quota_usd", MONEY),
        ("is_unlimited", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class LandedPull:
    pull_id: str
    days_covered: int
    days_with_usage: int
    rows: int
    cost_usd: Decimal
    requests: int


def new_id(moment: datetime) -> str:
    """Sortable by time, unique across concurrent writers."""
    return f"{moment:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def land_daily_pull(lake_root: Path, pull: DailyPull) -> LandedPull:
    """Write one pull: a file per day that had usage, then the pull record."""
    if pull.response.daily is None:  # QueryClient.fetch_daily refuses such an answer; never land one
        raise ValueError(f"the pull of {pull.kept_start}..{pull.kept_end} has no daily_quota: nothing was landed")
    pull_id = new_id(pull.pulled_at)
    entries = pull.response.daily
    by_day: dict = {}
    for entry in entries:
        by_day.setdefault(entry.usage_date, []).append(entry)
    for day, day_entries in sorted(by_day.items()):
        day_entries.sort(key=lambda e: e.key_name)
        table = pa.Table.from_pylist(
            [
                {
                    "usage_date": day,
                    "key_name": e.key_name,
                    "cost_usd": e.cost_usd,
                    "requests": e.requests,
                    "pull_id": pull_id,
                    "pulled_at": pull.pulled_at,
                }
                for e in day_entries
            ],
            schema=QUOTA_DAILY,
        )
        lake_datasets.QUOTA_DAILY.write(lake_root, day, table, pull_id)
    record = {
        "pull_id": pull_id,
        "pulled_at": pull.pulled_at,
        "pulled_date": pull.pulled_at.date(),
        "kept_start": pull.kept_start,
        "kept_end": pull.kept_end,
        "requested_start": pull.requested_start,
        "requested_end": pull.requested_end,
        "days_with_usage": len(by_day),
        "entries": len(entries),
        "response_sha256": pull.response.raw_sha256,
    }
    lake_datasets.QUOTA_PULLS.write(lake_root, record["pulled_date"],
                                    pa.Table.from_pylist([record], schema=QUOTA_PULLS), pull_id)
    return LandedPull(
        pull_id=pull_id,
        days_covered=(pull.kept_end - pull.kept_start).days + 1,
        days_with_usage=len(by_day),
        rows=len(entries),
        cost_usd=sum((e.cost_usd for e in entries), Decimal(0)),
        requests=sum(e.requests for e in entries),
    )


def land_snapshot(lake_root: Path, response: QuotaResponse, fetched_at: datetime) -> str:
    """Append one point-in-time snapshot (account balance and every key)."""
    snapshot_id = new_id(fetched_at)
    day = fetched_at.date()
    keys = pa.Table.from_pylist(
        [
            {
                "snapshot_id": snapshot_id,
                "fetched_at": fetched_at,
                "fetched_date": day,
                "key_name": k.name,
                "remain_quota_usd": k.remain_quota_usd,
                "used_quota_usd": k.used_quota_usd,
                "is_unlimited": k.is_unlimited,
            }
            for k in response.keys
        ],
        schema=KEY_SNAPSHOTS,
    )
    balance = pa.Table.from_pylist(
        [
            {
                "snapshot_id": snapshot_id,
                "fetched_at": fetched_at,
                "fetched_date": day,
                "username": response.username,
                "balance_usd": response.balance_usd,
                "total_used_usd": response.total_used_usd,
                "request_count": response.request_count,
            }
        ],
        schema=BALANCE_SNAPSHOTS,
    )
    # Keys first: the balance row is the snapshot's commit marker.
    lake_datasets.KEY_SNAPSHOTS.write(lake_root, day, keys, snapshot_id)
    lake_datasets.BALANCE_SNAPSHOTS.write(lake_root, day, balance, snapshot_id)
    return snapshot_id


def model_params(lake_root: Path, start: date | None = None, end: date | None = None) -> dict:
    """SQL parameters for the quota models: file lists, and the window [start, end] when given."""
    params = {
        "quota_pulls_files": lake_datasets.QUOTA_PULLS.files_or_empty(lake_root),
        "balance_snapshot_files": lake_datasets.BALANCE_SNAPSHOTS.files_or_empty(lake_root),
        "key_snapshot_files": lake_datasets.KEY_SNAPSHOTS.files_or_empty(lake_root),
    }
    if start is not None and end is not None:
        params.update(
            start=start,
            end=end,
            quota_daily_files=lake_datasets.QUOTA_DAILY.files_or_empty(lake_root, window_days(start, end)),
        )
    return params


def history(lake_root: Path) -> tuple[date, date] | None:
    """The first and last reporting day `quota_daily` holds in the lake (None: none landed)."""
    days = lake_datasets.QUOTA_DAILY.partition_values(lake_root)
    return (date.fromisoformat(days[0]), date.fromisoformat(days[-1])) if days else None
