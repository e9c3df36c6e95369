"""The monthly budget-review evidence pack."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from pipelines.defs.metadata import lake_metadata
from pipelines.defs.resources import LedgerHome
from pipelines.lib.review_pack import build_pack
from pipelines.lib.review_pack.build import EXPORT_SCHEMA

GROUP = "reports"


def build_report_assets(months: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["reports", "review_pack"],
        deps=[["warehouse", name] for name in ("recon_key_daily", "cost_model_daily", "cost_category_monthly",
                                               "chargeback_monthly", "anomalies", "balance_snapshots")],
        partitions_def=months,
        group_name=GROUP,
        kinds={"markdown", "html"},
        owners=["team:finance"],
        description=(
            "reports/review-YYYY-MM/: the month's query-service export (CSV + Parquet), a sample of raw responses, "
            "reconciliation.md and .html with charts, and manifest.json with every file's SHA-256."
        ),
    )
    def review_pack(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        month = context.partition_key[:7]
        result = build_pack(ledger.warehouse_path, ledger.lake, ledger.inbox_path, month,
                            Path(ledger.home) / "reports",
                            timezone=ledger.timezone, built_at=datetime.now(UTC))
        export = result.path / f"quota_daily_{month}.parquet"  # the month's query-service export
        return dg.MaterializeResult(metadata={
            **lake_metadata([export] if export.exists() else [], EXPORT_SCHEMA),
            "path": str(result.path),
            "files": dg.MetadataValue.json(result.files),
            "coverage": result.coverage,
            "flagged_key_days": result.flagged_key_days,
            "anomalies": -1 if result.anomalies is None else result.anomalies,
            "totals": dg.MetadataValue.json(result.totals),
        })

    return [review_pack]
