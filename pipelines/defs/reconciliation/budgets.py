"""Budgets: the budgets file in the warehouse, and how each budget stands in each of its periods.

In the reconciliation group: spend by team follows key_owners, so `comet-ledger reprice` (the
reconciliation_rebuild job) rebuilds the budgets' history with the reconciliation it comes from."""

import dagster as dg

from pipelines.defs.metadata import code_version, preview, table_metadata, warehouse_spec_metadata
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.reconciliation.assets import GROUP
from pipelines.defs.resources import LedgerHome
from pipelines.lib.reconciliation import budgets
from pipelines.lib.warehouse import publish


def build_budget_assets() -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["warehouse", "budgets"], group_name=GROUP, kinds={"duckdb"}, owners=["team:finance"], pool=WRITER_POOL,
        code_version=code_version("budgets"), metadata=warehouse_spec_metadata("budgets"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        description="Spend budgets per account, team or key and day, week or month, effective-dated "
                    "(COMET_LEDGER_BUDGETS, default config/budgets.csv), validated.",
    )
    def budgets_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        with publish(ledger.warehouse_path) as con:
            budgets.load_table(con, ledger.budgets_path, required=ledger.budgets_required)
            meta = {
                **table_metadata(con, "budgets"),
                "path": ledger.budgets_path,
                "preview": preview(con, "previews/budgets"),
            }
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        key=["warehouse", "budget_status"], group_name=GROUP, kinds={"duckdb"}, owners=["team:finance"],
        pool=WRITER_POOL, deps=[["warehouse", "budgets"], ["warehouse", "recon_key_daily"]],
        code_version=code_version("budget_status"), metadata=warehouse_spec_metadata("budget_status"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        description="Each budget in each of its periods: reported spend to date, the forecast to the period's end "
                    "(the last 7 days' daily mean x days remaining) and the thresholds crossed. Rebuilt whole on "
                    "every run; the alert sensors read it.",
    )
    def budget_status_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        with publish(ledger.warehouse_path) as con:
            budgets.rebuild_status(con)
            meta = {
                **table_metadata(con, "budget_status"),
                "preview": preview(con, "previews/budget_status"),
            }
        return dg.MaterializeResult(metadata=meta)

    return [budgets_warehouse, budget_status_warehouse]
