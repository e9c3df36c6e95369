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

from pipelines.lib import day_boundary, lake
from pipelines.lib.review_pack.period import Period

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


EXPORT = """
SELECT q.usage_date, q.key_name, coalesce(r.team, 'unassigned') AS team,
       q.reported_cost_usd, q.reported_requests, q.pulled_at, q.pull_id
FROM quota_daily AS q
LEFT JOIN recon_key_daily AS r USING (usage_date, key_name)
WHERE q.usage_date BETWEEN $first AND $last
ORDER BY q.usage_date, q.key_name, q.pull_id
"""

RECON = """
SELECT usage_date, key_name, team, reported_cost_usd, reported_requests, estimated_cost_usd, logged_requests,
       is_partial_day,
       billed_cost_usd, gateway_requests, variance_usd, variance_pct, tolerance_usd, status, is_flagged, coverage_pct,
       unpriced_requests, unknown_usage_requests, gateway_only_requests, gateway_only_usd, client_only_requests,
       adjustments_usd, explanation
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
ORDER BY usage_date, key_name
"""

TOTALS = """
SELECT
    (SELECT coalesce(sum(reported_cost_usd), 0)::DECIMAL(18, 6)
     FROM quota_daily WHERE usage_date BETWEEN $first AND $last) AS reported_cost_usd,
    (SELECT coalesce(sum(reported_requests), 0)::BIGINT FROM quota_daily WHERE usage_date BETWEEN $first AND $last)
        AS reported_requests,
    (SELECT count(*) FROM quota_daily WHERE usage_date BETWEEN $first AND $last) AS reported_key_days,
    coalesce(sum(estimated_cost_usd), 0) AS estimated_cost_usd,
    sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd,
    coalesce(sum(variance_usd), 0) AS variance_usd,
    coalesce(sum(logged_requests), 0)::BIGINT AS logged_requests,
    sum(gateway_requests)::BIGINT AS gateway_requests,
    count(*) AS key_days,
    count(*) FILTER (WHERE is_flagged) AS flagged_key_days,
    count(*) FILTER (WHERE status <> 'matched') AS not_matched_key_days,
    coalesce(sum(reported_cost_usd) FILTER (WHERE NOT is_flagged), 0)::DECIMAL(18, 6) AS reconciled_reported_usd
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
"""

REQUEST_TOTALS = """
SELECT
    count(*) AS requests,
    count(*) FILTER (WHERE pricing_status = 'priced') AS priced_requests,
    count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_requests,
    count(*) FILTER (WHERE seen_in = 'gateway') AS gateway_only_requests,
    count(*) FILTER (WHERE seen_in = 'client') AS client_only_requests
FROM requests
WHERE usage_date BETWEEN $first AND $last
"""

# The closest snapshot at or after an instant; none is ever back-dated or interpolated.
SNAPSHOT_AT_OR_AFTER = """
SELECT fetched_at, username, balance_usd, total_used_usd, request_count, snapshot_id
FROM balance_snapshots
WHERE fetched_at >= $at
ORDER BY fetched_at, snapshot_id
LIMIT 1
"""

BY_KEY = """
SELECT key_name, string_agg(DISTINCT team, ', ' ORDER BY team) AS teams, sum(requests)::BIGINT AS reported_requests,
       sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd, sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd
FROM chargeback_monthly
WHERE month = $first
GROUP BY key_name
ORDER BY reported_cost_usd DESC, key_name
"""

BY_TEAM = """
SELECT team, string_agg(DISTINCT key_name, ', ' ORDER BY key_name) AS keys, sum(requests)::BIGINT AS reported_requests,
       sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd, sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd
FROM chargeback_monthly
WHERE month = $first
GROUP BY team
ORDER BY reported_cost_usd DESC, team
"""

BY_MODEL = """
SELECT model, mode(billing_category ORDER BY billing_category) AS billing_category, sum(requests)::BIGINT AS requests,
       sum(prompt_tokens)::BIGINT AS prompt_tokens, sum(completion_tokens)::BIGINT AS completion_tokens,
       sum(cached_tokens)::BIGINT AS cached_tokens, sum(reasoning_tokens)::BIGINT AS reasoning_tokens,
       sum(estimated_cost_usd) AS estimated_cost_usd, sum(allocated_cost_usd)::DECIMAL(18, 6) AS allocated_cost_usd
FROM cost_model_daily
WHERE usage_date BETWEEN $first AND $last
GROUP BY model
ORDER BY allocated_cost_usd DESC, model
"""

BY_CATEGORY = """
SELECT billing_category, requests, estimated_cost_usd, allocated_cost_usd
FROM cost_category_monthly
WHERE month = $first
ORDER BY allocated_cost_usd DESC, billing_category NULLS LAST
"""

BY_DAY = """
SELECT usage_date, sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd,
       sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd, sum(variance_usd) AS variance_usd,
       sum(reported_requests)::BIGINT AS reported_requests, sum(logged_requests)::BIGINT AS logged_requests,
       count(*) FILTER (WHERE is_flagged) AS flagged_key_days
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
GROUP BY usage_date
ORDER BY usage_date
"""

BY_STATUS = """
SELECT status, count(*) AS key_days, sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd,
       sum(estimated_cost_usd) AS estimated_cost_usd, sum(variance_usd) AS variance_usd
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
GROUP BY status
ORDER BY bool_or(is_flagged), status <> 'matched', status
"""

RESTATEMENTS = """
SELECT usage_date, key_name, previous_cost_usd, new_cost_usd, previous_pulled_at, pulled_at
FROM quota_restatements
WHERE usage_date BETWEEN $first AND $last
ORDER BY usage_date, key_name, pulled_at
"""

PRICE_VERSIONS = """
SELECT r.price_version_id, p.model, p.billing_category, p.input_usd_per_mtok, p.output_usd_per_mtok,
       p.cache_read_usd_per_mtok, p.cache_write_usd_per_mtok, p.per_call_usd, p.gateway_ratio,
       p.effective_from, p.effective_to, p.source,
       count(*) AS requests, sum(r.estimated_cost_usd) AS estimated_cost_usd
FROM requests AS r
JOIN prices AS p USING (price_version_id)
WHERE r.usage_date BETWEEN $first AND $last
GROUP BY ALL
ORDER BY p.model, p.effective_from, r.price_version_id
"""

# a price change the ledger shows (sql/marts/anomalies.sql, kind price_change), with the spend it affects
PRICE_CHANGES = """
SELECT usage_date, detail, amount_usd, evidence
FROM anomalies
WHERE kind = 'price_change' AND usage_date BETWEEN $first AND $last
ORDER BY usage_date, evidence
"""

UNPRICED_MODELS = """
SELECT model, count(*) AS requests, string_agg(DISTINCT key_name, ', ' ORDER BY key_name) AS keys,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd
FROM requests
WHERE usage_date BETWEEN $first AND $last AND pricing_status = 'unpriced'
GROUP BY model
ORDER BY model
"""

PER_CALL_MODELS = """
SELECT p.model, p.per_call_usd, p.gateway_ratio, count(*) AS requests, sum(r.estimated_cost_usd) AS estimated_cost_usd
FROM requests AS r
JOIN prices AS p USING (price_version_id)
WHERE r.usage_date BETWEEN $first AND $last AND p.billing_category = 'per_call'
GROUP BY ALL
ORDER BY p.model, p.per_call_usd
"""

PRICING_STATUS = """
SELECT pricing_status, count(*) AS requests
FROM requests
WHERE usage_date BETWEEN $first AND $last
GROUP BY pricing_status
ORDER BY pricing_status
"""

INBOX = """
SELECT count(*) AS files, coalesce(sum(lines_read), 0)::BIGINT AS lines_read,
       coalesce(sum(accepted), 0)::BIGINT AS accepted, coalesce(sum(rejected), 0)::BIGINT AS rejected,
       coalesce(sum(duplicates), 0)::BIGINT AS duplicates, count(*) FILTER (WHERE NOT balanced) AS unbalanced_files
FROM inbox_files
WHERE first_usage_date <= $last AND last_usage_date >= $first
"""

PARTIAL_DAYS = """
SELECT DISTINCT usage_date FROM recon_key_daily
WHERE is_partial_day AND usage_date BETWEEN $first AND $last
ORDER BY usage_date
"""

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

        def q(sql: str, params: dict | None = None) -> list[Row]:
            return _rows(con, sql, window if params is None else params)

        month_start = {"first": period.first_day}
        logged_days = [r["usage_date"] for r in q(
            "SELECT DISTINCT usage_date FROM requests WHERE usage_date BETWEEN $first AND $last ORDER BY 1")]
        quota_days = {r["usage_date"] for r in q(
            "SELECT DISTINCT usage_date FROM quota_daily WHERE usage_date BETWEEN $first AND $last")}
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
    exists. Findings without a day (balance, runway) count when detected during the month."""
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
    rows = _rows(con, f"SELECT DISTINCT {selected} FROM anomalies WHERE {where} ORDER BY {order}", params)
    return rows, columns


def _pulled_days(lake_root: Path, period: Period) -> set[date]:
    """Days of the month some recorded query-service pull covered (a day without usage counts too)."""
    files = lake.files(lake_root, "quota_pulls") if (lake_root / "quota_pulls").is_dir() else []
    if not files:
        return set()
    with duckdb.connect() as con:
        rows = con.execute("""
            SELECT DISTINCT d::DATE AS day
            FROM read_parquet($files, hive_partitioning = false, union_by_name = true) AS p,
                 LATERAL (SELECT unnest(generate_series(p.kept_start, p.kept_end, INTERVAL 1 DAY)) AS d)
            WHERE d::DATE BETWEEN $first AND $last""",
            {"files": files, "first": period.first_day, "last": period.last_day}).fetchall()
    return {day for (day,) in rows}


def _gateway_checks(lake_root: Path, period: Period) -> list[Row]:
    """Per UTC day covering the month and check: what the latest ledger pull of that day found
    (lake/gateway_checks; the ledger is pulled by UTC day)."""
    files = lake.files(lake_root, "gateway_checks") if (lake_root / "gateway_checks").is_dir() else []
    if not files:
        return []
    with duckdb.connect() as con:
        return _rows(con, """
            SELECT utc_date, check_name, status, ledger_units, server_units, detail, api_method, pulled_at
            FROM read_parquet($files, hive_partitioning = false, union_by_name = true)
            WHERE utc_date BETWEEN $first AND $last
            QUALIFY pulled_at = max(pulled_at) OVER (PARTITION BY utc_date)
            ORDER BY utc_date, check_name""",
                     dict(zip(("first", "last"), lake.utc_days_covering(period.first_day, period.last_day,
                                                                         period.timezone))) | {"files": files})


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list[Row]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None
