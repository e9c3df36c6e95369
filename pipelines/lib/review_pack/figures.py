"""Everything the pack says about a month, read from the warehouse (read-only, one connection, so
every figure comes from the same published version) and from the lake's record of query-service pulls.

Money stays as the warehouse holds it (Decimal for DECIMAL columns, float for DOUBLE); formatting
is the renderers' job. Every query orders its rows completely, so a rebuild reads the same rows in
the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from pipelines.lib import lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.reconciliation import day_boundary
from pipelines.lib.review_pack.period import Period
from pipelines.lib.warehouse import run_query

REQUIRED_TABLES = ("quota_daily", "recon_key_daily", "requests", "prices", "balance_snapshots",
                   "chargeback_monthly", "cost_model_daily", "cost_category_monthly")
# Columns newer than some warehouses: one built before them lacks them until the next run rebuilds it.
REQUIRED_COLUMNS = (("recon_key_daily", "is_flagged"),)

Row = dict[str, Any]


class PackError(RuntimeError):
    """The pack cannot be built; the message says what is missing and what to do."""


@dataclass
class MonthFigures:
    period: Period
    reported_days: list[date]  # days the query service was pulled for, or has figures for
    logged_days: list[date]  # days with requests in your logs or the gateway ledger
    totals: Row
    export: list[Row]  # quota_daily for the month, with the key's team
    recon: list[Row]  # recon_key_daily for the month
    opening: Row | None  # the first snapshot at or after the month's start (see opening_balance)
    closing: Row | None  # the first snapshot at or after the month's end
    by_key: list[Row]
    by_team: list[Row]
    by_model: list[Row]
    by_category: list[Row]
    by_day: list[Row]
    by_status: list[Row]
    flagged: list[Row]  # is_flagged: beyond tolerance, or not comparable
    within_tolerance: list[Row]  # not matched exactly, but within tolerance: not flagged
    restatements: list[Row] | None  # None: the table does not exist
    anomalies: list[Row] | None  # None: anomaly detection has not run
    anomaly_columns: list[str] = field(default_factory=list)
    price_versions: list[Row] = field(default_factory=list)
    unpriced_models: list[Row] = field(default_factory=list)
    per_call_models: list[Row] = field(default_factory=list)
    price_changes: list[Row] = field(default_factory=list)  # anomalies of kind price_change in the month
    pricing_status: list[Row] = field(default_factory=list)
    inbox: Row | None = None
    gateway_days: int = 0  # days of the month the gateway ledger covers (billed figures known)
    gateway_checks: list[Row] = field(default_factory=list)  # the latest pull's completeness checks per day
    day_boundary: str | None = None  # what the service's day boundary was inferred to be (day_boundary.Verdict.line)
    partial_days: list[date] = field(default_factory=list)  # days not over when the warehouse built them (so far)

    @property
    def has_data(self) -> bool:
        return bool(self.reported_days or self.logged_days)

    @property
    def opening_balance(self) -> Row | None:
        """The opening snapshot when it is one: taken during the month. The first snapshot at or after
        the month's start, taken only after the month ended, says nothing of how the month began."""
        if self.opening is None or self.opening["fetched_at"] >= self.period.ends_at:
            return None
        return self.opening


# The queries, one file each under sql/reports/pack/ (each states its grain and parameters).
EXPORT = "pack/export"
RECON = "pack/recon"
TOTALS = "pack/totals"
REQUEST_TOTALS = "pack/request_totals"
SNAPSHOT_AT_OR_AFTER = "pack/snapshot_at_or_after"
BY_KEY = "pack/by_key"
BY_TEAM = "pack/by_team"
BY_MODEL = "pack/by_model"
BY_CATEGORY = "pack/by_category"
BY_DAY = "pack/by_day"
BY_STATUS = "pack/by_status"
RESTATEMENTS = "pack/restatements"
PRICE_VERSIONS = "pack/price_versions"
PRICE_CHANGES = "pack/price_changes"
UNPRICED_MODELS = "pack/unpriced_models"
PER_CALL_MODELS = "pack/per_call_models"
PRICING_STATUS = "pack/pricing_status"
INBOX = "pack/inbox"
PARTIAL_DAYS = "pack/partial_days"
LOGGED_DAYS = "pack/logged_days"
QUOTA_DAYS = "pack/quota_days"
PULLED_DAYS = "pack/pulled_days"
GATEWAY_CHECKS = "pack/gateway_checks"

ANOMALY_COLUMNS = ("usage_date", "key_name", "kind", "severity", "detail", "amount_usd", "evidence", "action")


def read_month(warehouse_path: Path, lake_root: Path, period: Period) -> MonthFigures:
    """All figures for the month, from one read-only view of the warehouse."""
    if not warehouse_path.exists():
        raise PackError(f"no warehouse at {warehouse_path}: run `comet-ledger backfill` (or `demo`) first")
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        tables = {name for (name,) in con.execute(  # `requests` is a view over its day files
            "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views()").fetchall()}
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise PackError(f"the warehouse at {warehouse_path} has no table {', '.join(missing)}: "
                            "materialise the reconciliation warehouse first")
        columns = set(con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall())
        outdated = [f"{table}.{column}" for table, column in REQUIRED_COLUMNS if (table, column) not in columns]
        if outdated:
            raise PackError(f"the warehouse at {warehouse_path} was built by an earlier version (no column "
                            f"{', '.join(outdated)}): run `comet-ledger run` first to rebuild it, then review again")
        window = {"first": period.first_day, "last": period.last_day}

        def q(query: str, params: dict | None = None) -> list[Row]:
            return _rows(con, query, window if params is None else params)

        month_start = {"first": period.first_day}
        logged_days = [r["usage_date"] for r in q(LOGGED_DAYS)]
        quota_days = {r["usage_date"] for r in q(QUOTA_DAYS)}
        totals = q(TOTALS)[0] | q(REQUEST_TOTALS)[0]
        recon = q(RECON)
        figures = MonthFigures(
            period=period,
            reported_days=sorted(quota_days | _pulled_days(lake_root, period)),
            logged_days=logged_days,
            totals=totals,
            export=q(EXPORT),
            recon=recon,
            opening=_first(q(SNAPSHOT_AT_OR_AFTER, {"at": period.starts_at})),
            closing=_first(q(SNAPSHOT_AT_OR_AFTER, {"at": period.ends_at})),
            by_key=q(BY_KEY, month_start),
            by_team=q(BY_TEAM, month_start),
            by_model=q(BY_MODEL),
            by_category=q(BY_CATEGORY, month_start),
            by_day=q(BY_DAY),
            by_status=q(BY_STATUS),
            flagged=[r for r in recon if r["is_flagged"]],
            within_tolerance=[r for r in recon if r["status"] == "within_tolerance"],
            restatements=q(RESTATEMENTS) if "quota_restatements" in tables else None,
            anomalies=None,
            price_versions=q(PRICE_VERSIONS),
            unpriced_models=q(UNPRICED_MODELS),
            per_call_models=q(PER_CALL_MODELS),
            price_changes=q(PRICE_CHANGES) if "anomalies" in tables else [],
            pricing_status=q(PRICING_STATUS),
            inbox=q(INBOX)[0] if "inbox_files" in tables else None,
            gateway_days=len({r["usage_date"] for r in recon if r["billed_cost_usd"] is not None}),
        )
        if "anomalies" in tables:
            figures.anomalies, figures.anomaly_columns = _anomalies(con, period)
        figures.gateway_checks = _gateway_checks(lake_root, period)
        found = day_boundary.verdict(con)
        figures.day_boundary = found.line() if found is not None else None
        figures.partial_days = [r["usage_date"] for r in q(PARTIAL_DAYS)]
        return figures


def _anomalies(con: duckdb.DuckDBPyConnection, period: Period) -> tuple[list[Row], list[str]]:
    """The month's findings. The table is written by another job whose columns may grow; use what
    exists. Findings without a day (balance, runway) count when detected during the month.
    The one query of the pack kept here rather than in sql/reports/: its columns and filter depend
    on which columns the table has (grain: one finding of the month)."""
    present = [c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'anomalies' ORDER BY column_index").fetchall()]
    columns = [c for c in ANOMALY_COLUMNS if c in present]
    if not columns:
        return [], []
    selected = ", ".join(f'"{c}"' for c in columns)  # names from the fixed list above, never user input
    if "usage_date" in present and "detected_at" in present:
        where = ("usage_date BETWEEN $first AND $last OR "
                 "(usage_date IS NULL AND detected_at >= $starts_at AND detected_at < $ends_at)")
        params = {"first": period.first_day, "last": period.last_day,
                  "starts_at": period.starts_at, "ends_at": period.ends_at}
    elif "usage_date" in present:
        where, params = "usage_date BETWEEN $first AND $last", {"first": period.first_day, "last": period.last_day}
    else:
        return [], columns
    order = ", ".join(f'"{c}" NULLS FIRST' for c in columns)
    cursor = con.execute(f"SELECT DISTINCT {selected} FROM anomalies WHERE {where} ORDER BY {order}", params)
    return _fetch(cursor), columns


def _pulled_days(lake_root: Path, period: Period) -> set[date]:
    """Days of the month some recorded query-service pull covered (a day without usage counts too)."""
    dataset = lake_datasets.QUOTA_PULLS
    files = dataset.files(lake_root) if (lake_root / dataset.name).is_dir() else []
    if not files:
        return set()
    with duckdb.connect() as con:
        rows = run_query(con, PULLED_DAYS, {"files": files, "first": period.first_day,
                                            "last": period.last_day}).fetchall()
    return {day for (day,) in rows}


def _gateway_checks(lake_root: Path, period: Period) -> list[Row]:
    """Per UTC day covering the month and check: what the latest ledger pull of that day found
    (lake/gateway_checks; the ledger is pulled by UTC day)."""
    dataset = lake_datasets.GATEWAY_CHECKS
    files = dataset.files(lake_root) if (lake_root / dataset.name).is_dir() else []
    if not files:
        return []
    with duckdb.connect() as con:
        return _rows(con, GATEWAY_CHECKS,
                     dict(zip(("first", "last"), lake.utc_days_covering(period.first_day, period.last_day,
                                                                         period.timezone))) | {"files": files})


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: dict) -> list[Row]:
    """The rows of `sql/reports/<query>.sql`, each a dict by column name."""
    return _fetch(run_query(con, query, params))


def _fetch(cursor: duckdb.DuckDBPyConnection) -> list[Row]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None
