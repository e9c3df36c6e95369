"""The monthly budget-review evidence pack."""

from pathlib import Path

import dagster as dg

from pipelines.defs.metadata import lake_metadata, lake_spec_metadata
from pipelines.defs.resources import LedgerHome
from pipelines.lib import clock, focus
from pipelines.lib.review_pack import PackResult, build_pack
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
        metadata=lake_spec_metadata(EXPORT_SCHEMA),  # the month's query-service export, the pack's table
        description=(
            "reports/review-YYYY-MM/: the month's query-service export (CSV + Parquet), a sample of raw responses, "
            "reconciliation.md and .html with charts, and manifest.json with every file's SHA-256."
        ),
    )
    def review_pack(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        month = context.partition_key[:7]
        result = build_pack(ledger.warehouse_path, ledger.lake, ledger.inbox_path, month,
                            Path(ledger.home) / "reports",
                            timezone=ledger.timezone, built_at=clock.now())
        return dg.MaterializeResult(metadata=review_pack_metadata(result))

    @dg.asset(
        key=["reports", "focus_export"],
        deps=[["warehouse", name] for name in ("recon_key_daily", "cost_key_model_daily", "requests",
                                               "quota_restatements", "key_owners", "balance_snapshots")],
        partitions_def=months,
        group_name=GROUP,
        kinds={"parquet", "csv"},
        owners=["team:finance"],
        metadata=lake_spec_metadata(focus.SCHEMA),
        description=(
            "reports/focus-YYYY-MM/: the month's charges in FOCUS 1.2, the FinOps Foundation's cost and usage format "
            "(Parquet + CSV, manifest.json); docs/focus.md. A month that has not ended is exported so far, every row "
            "marked x_PartialMonth."
        ),
    )
    def focus_export(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        month = context.partition_key[:7]
        result = focus.export_month(ledger.warehouse_path, month, Path(ledger.home) / "reports",
                                    timezone=ledger.timezone, now=clock.now(), partial=True)
        parquet, _ = focus.file_names(month)
        return dg.MaterializeResult(metadata={
            **lake_metadata([result.path / parquet], focus.SCHEMA, columns=FOCUS_PREVIEW),
            "path": str(result.path),
            "partial_month": result.partial,
            "billed_cost_usd": format(result.billed_cost_usd, "f"),
            "note": result.note,
        })

    return [review_pack, focus_export]


FOCUS_PREVIEW = ("ChargePeriodStart", "SubAccountName", "x_Model", "ChargeCategory", "ChargeClass", "BilledCost",
                 "ConsumedQuantity", "ConsumedUnit")


def review_pack_partition(month: str) -> str:
    """The monthly partition key of a pack's month (YYYY-MM)."""
    return f"{month}-01"


def review_pack_metadata(result: PackResult) -> dict[str, object]:
    """What a materialisation of the pack shows, whoever built it (this asset or `comet-ledger review`)."""
    export = result.path / f"quota_daily_{result.month}.parquet"  # the month's query-service export
    return {
        **lake_metadata([export] if export.exists() else [], EXPORT_SCHEMA),
        "path": str(result.path),
        "partial_month": result.partial,
        "files": dg.MetadataValue.json(result.files),
        "coverage": result.coverage,
        "flagged_key_days": result.flagged_key_days,
        "anomalies": -1 if result.anomalies is None else result.anomalies,
        "totals": dg.MetadataValue.json(result.totals),
    }
