"""SQL parameters for the reconciliation models: which lake files a window reads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pipelines.lib import gateway_lake, lake, request_log_lake
from pipelines.lib.quota_lake import window_days


def window_params(lake_root: Path, start: date, end: date, tolerance_usd: float, tolerance_pct: float) -> dict:
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
