"""Anomaly detection: the `anomalies` table (sql/marts/anomalies.sql), rebuilt on an open warehouse.

The methods (baseline, thresholds, balance ledger, runway) are documented in the SQL header; this
module holds their defaults and runs the model, so the Dagster asset can call `detect` inside
`publish()` and read `counts` for its warning checks.

A rebuild reads the requests of its own days only: the history a finding is judged against (the
spend baseline, the IPs seen before) comes from the small per-day tables (quota_daily, key_ip_daily),
so a day's detection costs the same after a month or after years of history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime

import duckdb

from pipelines.lib.warehouse import bind_reporting_day, bound_zone, relation_exists, run_model

MODEL = "anomalies"
KINDS = (
    "spend_spike", "new_source_ip", "unlogged_gateway_requests", "restatement", "unpriced_model",
    "top_up", "balance_jump", "runway", "price_change",
)
SEVERITIES = ("info", "warning", "critical")
# what price_change reads, and the empty stand-in used while a warehouse has no price table yet
PRICE_TABLES = {
    "prices": "SELECT NULL::VARCHAR AS price_version_id, NULL::VARCHAR AS model, NULL::VARCHAR AS billing_category, "
              "NULL::DECIMAL(18, 6) AS input_usd_per_mtok, NULL::DECIMAL(18, 6) AS output_usd_per_mtok, "
              "NULL::DECIMAL(18, 6) AS per_call_usd, NULL::DECIMAL(18, 6) AS gateway_ratio, "
              "NULL::DATE AS effective_from, NULL::DATE AS effective_to, NULL::VARCHAR AS source, "
              "NULL::VARCHAR AS source_detail WHERE false",
    "ledger_price_days": "SELECT NULL::DATE AS usage_date, NULL::VARCHAR AS model, NULL::BIGINT AS requests, "
                         "NULL::DECIMAL(18, 6) AS billed_usd WHERE false",
}
INPUT_TABLES = ("quota_daily", "quota_restatements", "recon_key_daily", "requests", "key_ip_daily", "balance_snapshots")


@dataclass(frozen=True)
class AnomalyRules:
    """Thresholds of the detection methods (see the header of sql/marts/anomalies.sql)."""

    baseline_days: int = 14  # spend_spike: trailing days whose median is the baseline
    min_history_days: int = 7  # spend_spike: no finding before a key has this many days of history
    spike_ratio: float = 3.0  # ... and the day must exceed ratio x median,
    spike_mads: float = 3.5  # median + mads x 1.4826 x MAD (robust z-score),
    spike_min_usd: float = 1.0  # and median + this many USD
    balance_tolerance_usd: float = 0.01  # balance ledger: unexplained less than max(this,
    balance_tolerance_pct: float = 1.0  # this % of the change) is not a finding
    burn_days: int = 7  # runway: days averaged for the burn rate
    runway_critical_days: float = 7.0
    runway_warning_days: float = 30.0
    restatement_warning_usd: float = 1.0  # restatement: warning from this change in USD,
    restatement_warning_pct: float = 10.0  # or this % of the earlier figure (else info)

    def __post_init__(self) -> None:
        if not 1 <= self.min_history_days <= self.baseline_days:
            raise ValueError(f"min_history_days ({self.min_history_days}) must be between 1 and "
                             f"baseline_days ({self.baseline_days})")
        if self.burn_days < 1:
            raise ValueError(f"burn_days must be at least 1, got {self.burn_days}")
        if self.runway_critical_days > self.runway_warning_days:
            raise ValueError("runway_critical_days must not exceed runway_warning_days")


def detect(con: duckdb.DuckDBPyConnection, start: date, end: date, detected_at: datetime, *,
           timezone: str = "UTC", rules: AnomalyRules = AnomalyRules()) -> int:
    """Rebuild `anomalies` for the reporting days [start, end]; returns the findings this run rebuilt.

    Key-day findings are replaced for the window; balance-ledger findings (top_up, balance_jump,
    runway) and price changes are replaced whole, as they belong to no reporting day partition. The count is the
    window's key-day findings plus all balance-ledger findings. `detected_at` must be timezone-aware
    (pass the run's clock; tests pass a fixed time so rebuilds are identical).
    """
    if end < start:
        raise ValueError(f"anomaly window ends ({end}) before it starts ({start})")
    if detected_at.tzinfo is None:
        raise ValueError("detected_at must be timezone-aware (e.g. clock.now())")
    missing = [t for t in INPUT_TABLES if not relation_exists(con, t)]
    if missing:
        raise LookupError(f"anomaly detection needs the warehouse tables {', '.join(missing)}: "
                          "materialise the quota and reconciliation assets first")
    if bound_zone(con) is None:  # a connection not opened by warehouse.publish(zone=...)
        bind_reporting_day(con, timezone)
    # price_change reads the price versions; a warehouse that has none yet (no config load) has no change
    absent = [t for t in PRICE_TABLES if not relation_exists(con, t)]
    for table in absent:
        con.execute(f"CREATE TEMP TABLE {table} AS {PRICE_TABLES[table]}")
    try:
        run_model(con, MODEL, {"start": start, "end": end, "detected_at": detected_at, **asdict(rules)})
    finally:
        for table in absent:
            con.execute(f"DROP TABLE temp.{table}")
    return con.execute(
        "SELECT count(*) FROM anomalies WHERE usage_date BETWEEN $start AND $end "
        "OR kind IN ('top_up', 'balance_jump', 'runway', 'price_change')", {"start": start, "end": end}).fetchone()[0]


def counts(con: duckdb.DuckDBPyConnection, start: date, end: date) -> dict[tuple[str, str], int]:
    """(kind, severity) -> findings whose reporting day is in [start, end] (for asset checks)."""
    rows = con.execute(
        "SELECT kind, severity, count(*) FROM anomalies WHERE usage_date BETWEEN $start AND $end "
        "GROUP BY ALL ORDER BY ALL", {"start": start, "end": end}).fetchall()
    return {(kind, severity): n for kind, severity, n in rows}
