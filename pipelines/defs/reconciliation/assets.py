"""The reconciliation warehouse: prices and owners from config, then requests, reconciliation,
allocation and the marts, rebuilt for the run's window in one private copy published at once.
The group's budget assets are in `budgets.py`."""

import dagster as dg

from pipelines.defs.metadata import code_version, markdown_table, preview, table_metadata, warehouse_spec_metadata
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.resources import LedgerHome
from pipelines.defs.window import run_days
from pipelines.lib import clock, reconciliation
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.reconciliation import anomalies, day_boundary
from pipelines.lib.reconciliation import RECON_MODELS, load_config, rebuild_window
from pipelines.lib.warehouse import publish, record_models, run_query, window_to_build

GROUP = "reconciliation"
PUBLIC = {
    "requests": "Every request seen by your logs or CometAPI's ledger, priced with the version in force that day.",
    "recon_key_daily": "Reported vs billed vs estimated per key and day, with a status and the causes in words.",
    "cost_key_model_daily": "Each key-day's reported cost spread over its models (sums exactly).",
    "cost_model_daily": "Cost per model and day: estimated and allocated.",
    "cost_category_monthly": "Token-billed vs per-call spend per month.",
    "chargeback_monthly": "Spend per month, team and key, for chargebacks.",
}

# The SQL models behind each table, linked from its definition in the UI.
MODELS = {
    "requests": ("stg_client_requests", "stg_gateway_rows", "requests"),
    "recon_key_daily": ("stg_gateway_rows", "stg_gateway_coverage", "recon_key_daily", "service_day_boundary"),
}
MONTHLY = ("cost_category_monthly", "chargeback_monthly")  # marts by month: no usage_date window
FLAGGED = "previews/recon_flagged"

# What each table's materialisation shows in the UI: a few rows of the run's window (all months for
# the monthly marts, as their row counts); the queries are sql/reports/previews/<table>.sql.
PREVIEWS = {name: f"previews/{name}" for name in (
    "requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily", "cost_category_monthly",
    "chargeback_monthly")}


def build_reconciliation_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(["warehouse", "prices"], group_name=GROUP, kinds={"duckdb"}, owners=["team:finance"],
                         code_version=code_version("prices"), metadata=warehouse_spec_metadata("prices"),
                         description="Effective-dated price versions: COMET_LEDGER_PRICES (validated), then the ledger's "
                                     "applied ratios, then /api/models snapshots (sql/core/prices.sql)."),
            dg.AssetSpec(["warehouse", "key_owners"], group_name=GROUP, kinds={"duckdb"}, owners=["team:finance"],
                         code_version=code_version("key_owners"), metadata=warehouse_spec_metadata("key_owners"),
                         description="Key name -> team, project, cost centre, effective-dated (COMET_LEDGER_KEY_OWNERS)."),
        ],
        # Not partitioned: the config is read once per run, whatever the range of days. The single-run
        # policy says so to the Dagster CLI (`--partition-range` needs it on every asset it selects).
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WRITER_POOL,
    )
    def config_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome):
        with publish(ledger.warehouse_path) as con:
            prices, owners = load_config(con, ledger.prices_path, ledger.key_owners_path, ledger.price_source_list)
            prices_meta = {**table_metadata(con, "prices"), "path": ledger.prices_path,
                           "models": run_query(con, "previews/price_models").fetchone()[0],
                           "preview": preview(con, "previews/prices")}
            owners_meta = {**table_metadata(con, "key_owners"), "path": ledger.key_owners_path,
                           "preview": preview(con, "previews/key_owners")}
        yield dg.MaterializeResult(asset_key=["warehouse", "prices"], metadata=prices_meta)
        yield dg.MaterializeResult(asset_key=["warehouse", "key_owners"], metadata=owners_meta)

    deps = [lake_datasets.REQUEST_LOGS.key, lake_datasets.GATEWAY_LOGS.key, lake_datasets.CATALOG_SNAPSHOTS.key,
            ["warehouse", "quota_daily"], ["warehouse", "quota_restatements"], ["warehouse", "prices"], ["warehouse", "key_owners"]]

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(["warehouse", name], deps=deps, group_name=GROUP, kinds={"duckdb"}, owners=["team:finance"],
                         partitions_def=partitions, description=text, code_version=code_version(*RECON_MODELS),
                         metadata=warehouse_spec_metadata(name, *MODELS.get(name, (name,))))
            for name, text in PUBLIC.items()
        ],
        check_specs=[
            dg.AssetCheckSpec("unique_request_ids", asset=["warehouse", "requests"], blocking=True,
                              description="one row per request_id"),
            dg.AssetCheckSpec("token_invariants", asset=["warehouse", "requests"], blocking=True,
                              description="no negatives; cached + cache write <= prompt; reasoning <= completion; "
                                          "total = prompt + completion; 5-minute + 1-hour writes <= cache write; "
                                          "audio + image <= prompt"),
            dg.AssetCheckSpec("unpriced_share", asset=["warehouse", "requests"],
                              description="share of logged requests without a price (warning above 0)"),
            dg.AssetCheckSpec("allocation_sums", asset=["warehouse", "cost_key_model_daily"], blocking=True,
                              description="allocated cost per key-day equals the reported cost exactly"),
            dg.AssetCheckSpec("variance_within_tolerance", asset=["warehouse", "recon_key_daily"],
                              description="key-days whose variance is beyond tolerance (warning)"),
            dg.AssetCheckSpec("service_day_boundary", asset=["warehouse", "recon_key_daily"],
                              description="CometAPI's daily_quota days fit COMET_LEDGER_TIMEZONE better than UTC or "
                                          "UTC+8, by the gateway ledger's sums (warning; table service_day_boundary)"),
        ],
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WRITER_POOL,
    )
    def reconciliation_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome):
        start, end = run_days(context)
        with publish(ledger.warehouse_path, zone=ledger.timezone) as con:
            start, end = rebuild_window(con, ledger.lake, start, end, ledger.tolerance_usd, ledger.tolerance_pct,
                                        say=context.log.warning)
            window = {"start": start, "end": end}
            checks = reconciliation.window_checks(con, start, end)
            day_boundary.build(con, ledger.lake, clock.now())
            boundary = day_boundary.verdict(con)
            duplicates, broken_tokens = checks.duplicate_request_ids, checks.broken_tokens
            unpriced_share, unbalanced, flagged = checks.unpriced_share, checks.unbalanced_key_days, checks.flagged_key_days
            metadata = {
                name: {
                    "window": f"{start} .. {end}",
                    **table_metadata(con, name, None if name in MONTHLY else window),
                    "preview": preview(con, PREVIEWS[name], window),
                }
                for name in PUBLIC
            }
            metadata["recon_key_daily"]["statuses"] = preview(con, "previews/recon_statuses", window)
            flagged_rows = run_query(con, FLAGGED, window)
            flagged_columns = [d[0] for d in flagged_rows.description]
            flagged_rows = flagged_rows.fetchall()
            metadata["recon_key_daily"]["flagged"] = dg.MetadataValue.md(markdown_table(flagged_columns, flagged_rows))
            if duplicates or broken_tokens or unbalanced:
                raise dg.Failure(
                    f"reconciliation invariants broken (duplicate request ids: {duplicates}, token invariant "
                    f"violations: {broken_tokens}, unbalanced allocations: {unbalanced}); nothing was published")
        for name in PUBLIC:
            yield dg.MaterializeResult(asset_key=["warehouse", name], metadata=metadata[name])
        yield dg.AssetCheckResult(check_name="unique_request_ids", asset_key=["warehouse", "requests"],
                                  passed=duplicates == 0, metadata={"duplicates": duplicates})
        yield dg.AssetCheckResult(check_name="token_invariants", asset_key=["warehouse", "requests"],
                                  passed=broken_tokens == 0, metadata={"violations": broken_tokens})
        yield dg.AssetCheckResult(check_name="unpriced_share", asset_key=["warehouse", "requests"],
                                  passed=unpriced_share == 0, severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"unpriced_share": float(unpriced_share)})
        yield dg.AssetCheckResult(check_name="allocation_sums", asset_key=["warehouse", "cost_key_model_daily"],
                                  passed=unbalanced == 0, metadata={"unbalanced_key_days": unbalanced})
        yield dg.AssetCheckResult(
            check_name="service_day_boundary", asset_key=["warehouse", "recon_key_daily"],
            passed=boundary.configured_fits, severity=dg.AssetCheckSeverity.WARN, description=boundary.line(),
            metadata={c.candidate: f"{c.matched} of {c.compared} key-days" for c in boundary.candidates})
        yield dg.AssetCheckResult(
            check_name="variance_within_tolerance", asset_key=["warehouse", "recon_key_daily"],
            passed=flagged == 0, severity=dg.AssetCheckSeverity.WARN,
            description=(f"{flagged} key-day(s) of {start} .. {end} beyond tolerance: "
                         + "; ".join(f"{day} {key} {status}" for day, key, status, *_ in flagged_rows[:10])
                         + ("; ..." if flagged > 10 else "") if flagged else "every key-day within tolerance"),
            metadata={"flagged_key_days": flagged,
                      "flagged": dg.MetadataValue.md(markdown_table(flagged_columns, flagged_rows, limit=100))})

    @dg.asset(
        key=["warehouse", "anomalies"],
        deps=[["warehouse", name] for name in ("quota_daily", "quota_restatements", "recon_key_daily", "requests",
                                               "balance_snapshots")],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"duckdb"},
        owners=["team:platform"],
        pool=WRITER_POOL,
        code_version=code_version(anomalies.MODEL),
        metadata=warehouse_spec_metadata("anomalies"),
        description=(
            "Signs of a leaked key or a billing surprise, each with what to do next: spend spikes against the key's "
            "trailing median, new source IPs, gateway-billed requests missing from your logs, balance jumps and "
            "top-ups, runway, restatements and unpriced models."
        ),
        check_specs=[dg.AssetCheckSpec(f"no_{kind}", asset=["warehouse", "anomalies"],
                                       description=f"no {kind.replace('_', ' ')} finding in the window (warning)")
                     for kind in anomalies.KINDS if kind not in ("runway", "top_up")],
    )
    def anomalies_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome):
        start, end = run_days(context)
        with publish(ledger.warehouse_path, zone=ledger.timezone) as con:
            start, end, _ = window_to_build(con, (anomalies.MODEL,), start, end,
                                            lambda: reconciliation.history(ledger.lake, ledger.timezone))
            window = {"start": start, "end": end}
            # A key-day finding judges its day against the days before it (baseline, IPs seen before),
            # so days published after later ones (partitions backfilled in parallel or out of order)
            # change the later days' findings too: re-judge every day up to the last one held. Judging
            # only the run's own days kept e.g. a spurious new_source_ip on a later day for good.
            judged_to = max(end, (reconciliation.history(ledger.lake, ledger.timezone) or (start, end))[1])
            rebuilt = anomalies.detect(con, start, judged_to, clock.now(), timezone=ledger.timezone)
            record_models(con, (anomalies.MODEL,))
            found = anomalies.counts(con, start, end)
            meta = {
                "window": f"{start} .. {end}",
                "findings_rebuilt": rebuilt,
                **table_metadata(con, "anomalies", window),
                "preview": preview(con, "previews/anomalies", window),
            }
        yield dg.MaterializeResult(metadata=meta)
        for kind in anomalies.KINDS:
            if kind in ("runway", "top_up"):
                continue
            n = sum(count for (k, _), count in found.items() if k == kind)
            yield dg.AssetCheckResult(check_name=f"no_{kind}", passed=n == 0, severity=dg.AssetCheckSeverity.WARN,
                                      metadata={"findings": n})

    return [config_warehouse, reconciliation_warehouse, anomalies_warehouse]
