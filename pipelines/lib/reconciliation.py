"""How the reconciliation warehouse is built: the config tables, then the window's models.

Used by the Dagster assets (`pipelines/defs/warehouse`) and by `comet-ledger reprice`, so that both
compute every figure with the same SQL.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from pipelines.lib import config_tables, gateway_lake, lake, request_log_lake
from pipelines.lib.quota_lake import window_days
from pipelines.lib.warehouse import record_models, reset_models, run_model, stale_models

CONFIG_MODELS = ("prices", "key_owners")
# The tables the window rebuild maintains (each downstream of the one before).
RECON_TABLES = ("requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily", "cost_category_monthly",
                "chargeback_monthly")
RECON_MODELS = (
    "stg_client_requests", "stg_gateway_rows", "stg_gateway_coverage",
    "requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily",
    "cost_category_monthly", "chargeback_monthly",
)


def window_params(lake_root: Path, start: date, end: date, tolerance_usd: float, tolerance_pct: float) -> dict:
    """SQL parameters for the reconciliation models over [start, end]: the lake files they read."""
    days = window_days(start, end)

    def listed(dataset: str, schema, column: str | None = None, values=None) -> list[str]:
        return lake.files(lake_root, dataset, column, values) or [lake.empty_file(lake_root, dataset, schema)]

    return {
        "start": start,
        "end": end,
        "tolerance_usd": float(tolerance_usd),
        "tolerance_pct": float(tolerance_pct),
        "request_log_files": listed("request_logs", request_log_lake.REQUEST_LOGS, "usage_date", days),
        "gateway_log_files": listed("gateway_logs", gateway_lake.GATEWAY_SCHEMA, "usage_date", days),
        "gateway_pull_files": listed("gateway_pulls", gateway_lake.GATEWAY_PULLS),
    }


def load_config(con: duckdb.DuckDBPyConnection, prices_path: Path | str, key_owners_path: Path | str) -> tuple[int, int]:
    """Validate the config files and (re)build `prices` and `key_owners`; returns their row counts."""
    prices = config_tables.load_prices(prices_path)
    owners = config_tables.load_key_owners(key_owners_path)
    con.register("prices_input", prices)
    con.register("key_owners_input", owners)
    for model in CONFIG_MODELS:
        run_model(con, model, {})
    con.unregister("prices_input")
    con.unregister("key_owners_input")
    return prices.num_rows, owners.num_rows


def history(lake_root: Path) -> tuple[date, date] | None:
    """First and last reporting day any lake dataset holds."""
    days = [d for dataset in ("quota_daily", "request_logs", "gateway_logs")
            for d in lake.partition_values(lake_root, dataset, "usage_date")]
    return (date.fromisoformat(min(days)), date.fromisoformat(max(days))) if days else None


def rebuild_window(con: duckdb.DuckDBPyConnection, lake_root: Path, start: date, end: date,
                   tolerance_usd: float, tolerance_pct: float) -> tuple[date, date]:
    """Delete and rebuild every reconciliation model for [start, end]; returns the window rebuilt.

    When the SQL of a model changed since its table was built, every reconciliation table is
    dropped and the whole history in the lake is rebuilt, so no row made by older SQL survives.
    """
    if stale_models(con, RECON_TABLES):
        reset_models(con, RECON_TABLES)
        span = history(lake_root)
        if span:
            start, end = min(start, span[0]), max(end, span[1])
    params = window_params(lake_root, start, end, tolerance_usd, tolerance_pct)
    for model in RECON_MODELS:
        run_model(con, model, params)
    record_models(con, RECON_TABLES)
    return start, end
