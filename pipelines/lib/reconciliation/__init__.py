"""How the reconciliation warehouse is built: the config tables, then the window's models.

Used by the Dagster assets (`pipelines/defs/reconciliation`) and by `comet-ledger reprice`, so that both
compute every figure with the same SQL.

A run costs what its window holds, not what the history holds: `requests` is kept in one Parquet
file per day (`warehouse.replace_days`; see pipelines/lib/warehouse/__init__.py for why), every model reads
and rewrites the window's days only, and `window_checks` checks the window. The one check that is
about the whole history, one row per request_id, compares the window's ids with only those other
days whose smallest..largest request_id range overlaps the window's (`warehouse_files`): exact,
since a day outside the range cannot hold one of the window's ids, and cheap because CometAPI's
request ids start with their timestamp, so other days' ranges do not overlap. (With ids that are
not time-ordered it reads the request_id column of every overlapping day: still exact, then O(history).)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from pipelines.lib import clock, lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.lake import layout as lake_layout
from pipelines.lib.prices import catalog, tables as config_tables
from pipelines.lib.days import month_chunks, window_days
from pipelines.lib.warehouse import (
    bound_zone,
    day_files,
    record_models,
    recorded_zones,
    replace_days,
    run_model,
    window_to_build,
)

CONFIG_MODELS = ("config_prices", "key_owners")
# Where prices come from, in precedence order (sql/core/prices.sql); COMET_LEDGER_PRICE_SOURCES picks.
PRICE_SOURCES = ("config", "ledger", "catalog")
# The tables the window rebuild maintains (each downstream of the one before).
RECON_TABLES = ("ledger_price_days", "ledger_quota_mismatches", "requests", "key_ip_daily", "ledger_task_adjustments", "recon_key_daily", "cost_key_model_daily",
                "cost_model_daily", "cost_category_monthly", "chargeback_monthly")
# price_observations .. prices: the ledger's applied ratios and the catalog snapshots become price
# versions before the window's requests are priced (sql/core/prices.sql).
RECON_MODELS = (
    "stg_client_requests", "stg_gateway_rows", "stg_gateway_coverage",
    "price_observations", "catalog_snapshot_prices", "stg_ledger_units", "ledger_quota_mismatches", "ledger_price_days",
    "prices", "requests", "key_ip_daily", "ledger_task_adjustments", "recon_key_daily", "cost_key_model_daily",
    "cost_model_daily", "cost_category_monthly", "chargeback_monthly",
)


def window_params(lake_root: Path, start: date, end: date, tolerance_usd: float, tolerance_pct: float,
                  zone: str) -> dict:
    """SQL parameters for the reconciliation models over reporting days [start, end] in `zone`: the
    lake files they read (the UTC days that cover the window)."""
    days = window_days(*lake.utc_days_covering(start, end, zone))
    return {
        "start": start,
        "end": end,
        "tolerance_usd": float(tolerance_usd),
        "tolerance_pct": float(tolerance_pct),
        # with the schema-only file always: day files written before a column existed read it as NULL
        "request_log_files": lake_datasets.REQUEST_LOGS.files_and_empty(lake_root, days),
        "gateway_log_files": lake_datasets.GATEWAY_LOGS.files_and_empty(lake_root, days),
        "gateway_pull_files": lake_datasets.GATEWAY_PULLS.files_or_empty(lake_root),
        **catalog.snapshot_params(lake_root),
    }


def load_config(con: duckdb.DuckDBPyConnection, prices_path: Path | str, key_owners_path: Path | str,
                sources: Sequence[str] = PRICE_SOURCES) -> tuple[int, int]:
    """Validate the config files and (re)build `prices` (with the price `sources` in force, kept in
    price_settings for the window rebuilds) and `key_owners`; returns the config files' row counts.
    Without `config` among the sources the prices file is not read at all."""
    sources = check_price_sources(sources)
    prices = (config_tables.load_prices(prices_path) if "config" in sources
              else config_tables.PRICES_SCHEMA.empty_table())
    owners = config_tables.load_key_owners(key_owners_path)
    con.register("prices_input", prices)
    con.register("key_owners_input", owners)
    for model in CONFIG_MODELS:
        run_model(con, model, {})
    con.unregister("prices_input")
    con.unregister("key_owners_input")
    run_model(con, "price_observations", {})
    con.execute("DELETE FROM price_settings")
    con.execute("INSERT INTO price_settings VALUES ($s)", {"s": list(sources)})
    run_model(con, "prices", {})
    return prices.num_rows, owners.num_rows


def check_price_sources(sources: Sequence[str]) -> tuple[str, ...]:
    """The price sources, validated, in precedence order whatever order they were given in."""
    unknown = [s for s in sources if s not in PRICE_SOURCES]
    if unknown:
        raise ValueError(f"unknown price source {unknown[0]!r} (expected some of {', '.join(PRICE_SOURCES)})")
    return tuple(s for s in PRICE_SOURCES if s in sources)


def history(lake_root: Path, zone: str = "UTC") -> tuple[date, date] | None:
    """First and last reporting day (in `zone`) any lake dataset holds: quota_daily's own days, and
    the reporting days the UTC days of request_logs and gateway_logs touch, up to today at most: in a zone
    ahead of UTC, today's UTC day also touches tomorrow, which has not begun."""
    quota = [date.fromisoformat(d) for d in lake_datasets.QUOTA_DAILY.partition_values(lake_root)]
    utc = [date.fromisoformat(d) for dataset in (lake_datasets.REQUEST_LOGS, lake_datasets.GATEWAY_LOGS)
           for d in dataset.partition_values(lake_root)]
    today = clock.today(zone)
    days = [d for d in quota + (list(lake.reporting_days_of(min(utc), max(utc), zone)) if utc else []) if d <= today]
    return (min(days), max(days)) if days else None


def rebuild_window(con: duckdb.DuckDBPyConnection, lake_root: Path, start: date, end: date,
                   tolerance_usd: float, tolerance_pct: float,
                   say: Callable[[str], object] = lambda line: None) -> tuple[date, date]:
    """Delete and rebuild every reconciliation model for [start, end]; returns the window rebuilt.

    `con` is bound to the reporting zone (`warehouse.publish(zone=...)`). When the SQL of a model
    changed since its table was built, or the reporting zone did, every reconciliation table is
    dropped and the whole history in the lake is rebuilt, so no row made by older SQL, or whose
    days were derived in another zone, survives; a zone change is said in one line (`say`).

    A window is rebuilt one calendar month at a time, so a long one (a backfill, a re-price, that
    whole-history rebuild) needs the memory of a month, not of the history (a year of 100k
    requests a day in one piece peaked at 19.6 GiB of RSS, a month at a time at 4.2 GiB:
    docs/benchmarks.md). Each day is built from its own lake files either way; a month's marts
    are recomputed once its last day is.
    """
    converted = lake_layout.ensure_utc_days(lake_root)
    if converted:
        say(converted)
    zone = bound_zone(con)
    if zone is None:
        raise RuntimeError("the reconciliation models need a connection bound to the reporting zone "
                           "(warehouse.publish(zone=...))")
    before = [z for z in recorded_zones(con, RECON_TABLES) if z != zone]
    start, end, _ = window_to_build(con, RECON_TABLES, start, end, lambda: history(lake_root, zone))
    for first, last in month_chunks(start, end):
        params = window_params(lake_root, first, last, tolerance_usd, tolerance_pct, zone)
        for model in RECON_MODELS:
            run_model(con, model, params)
            if model == "requests":  # the rows -> one Parquet file per day, and the view over them
                replace_days(con, "requests", "requests_window", first, last, order_by="ts, request_id",
                             key="request_id")
                con.execute("DROP TABLE requests_window")
    record_models(con, RECON_TABLES)
    if before:
        days = (end - start).days + 1
        say(f"reporting zone changed from {', '.join(before)} to {zone}: rebuilt {', '.join(RECON_TABLES)} for "
            f"{start} .. {end} ({days} days) from the lake")
    return start, end


@dataclass(frozen=True)
class WindowChecks:
    """The invariants the reconciliation asset checks after rebuilding [start, end]."""

    duplicate_request_ids: int  # rows whose request_id is on another row too (window, or window vs other days)
    broken_tokens: int  # token invariant violations in the window
    unpriced_share: float  # share of the window's logged requests without a price
    unbalanced_key_days: int  # key-days whose allocation does not sum to the reported cost
    flagged_key_days: int  # key-days beyond tolerance


def window_checks(con: duckdb.DuckDBPyConnection, start: date, end: date) -> WindowChecks:
    """Check the window just rebuilt; reads the window's days (and the days its request ids could be on)."""
    window = {"start": start, "end": end}
    first, last = con.execute("SELECT min(first_key), max(last_key) FROM warehouse_files WHERE relation = 'requests' "
                              "AND usage_date BETWEEN $start AND $end", window).fetchone()
    others = day_files(con, "requests", key_from=first, key_to=last, outside=(start, end)) if first else []
    duplicates = con.execute(
        "SELECT count(*) - count(DISTINCT request_id) FROM requests WHERE usage_date BETWEEN $start AND $end",
        window).fetchone()[0]
    if others:  # every row on another day whose id is also in the window
        duplicates += con.execute(
            "SELECT count(*) FROM read_parquet($files, hive_partitioning = false) WHERE request_id IN "
            "(SELECT request_id FROM requests WHERE usage_date BETWEEN $start AND $end)",
            window | {"files": others}).fetchone()[0]
    broken, unpriced, unbalanced, flagged = con.execute(
        """
        SELECT
            (SELECT count(*) FROM requests WHERE usage_date BETWEEN $start AND $end AND (
                least(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens) < 0
                OR cached_tokens + cache_write_tokens > prompt_tokens OR reasoning_tokens > completion_tokens
                OR coalesce(cache_write_5m_tokens, 0) + coalesce(cache_write_1h_tokens, 0) > cache_write_tokens
                OR coalesce(audio_prompt_tokens, 0) + coalesce(image_prompt_tokens, 0) > prompt_tokens
                OR total_tokens <> prompt_tokens + completion_tokens)),
            (SELECT count(*) FILTER (WHERE pricing_status = 'unpriced') / greatest(count(*), 1)
               FROM requests WHERE usage_date BETWEEN $start AND $end AND seen_in <> 'gateway'),
            (SELECT count(*) FROM (
                SELECT q.usage_date, q.key_name FROM quota_daily q
                LEFT JOIN cost_key_model_daily a USING (usage_date, key_name)
                WHERE q.usage_date BETWEEN $start AND $end
                GROUP BY ALL HAVING coalesce(sum(a.allocated_cost_usd), 0) <> any_value(q.reported_cost_usd))),
            (SELECT count(*) FROM recon_key_daily WHERE usage_date BETWEEN $start AND $end AND is_flagged)
        """, window).fetchone()
    return WindowChecks(duplicates, broken, float(unpriced), unbalanced, flagged)
