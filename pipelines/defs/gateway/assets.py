"""CometAPI's gateway: its own per-request ledger (/api/log/self and the console's CSV exports) and
its public model catalog (/api/models), both pulled with the `gateway` resource."""

import contextlib
from collections import Counter

import dagster as dg

from pipelines.defs.metadata import lake_metadata, lake_spec_metadata, markdown_table
from pipelines.defs.resources import GatewayLedger, LedgerHome
from pipelines.defs.upkeep import swept
from pipelines.defs.window import run_days
from pipelines.lib import clock, lake
from pipelines.lib.days import window_days
from pipelines.lib.gateway import lake as gateway_lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.prices import catalog

GROUP = "gateway"
GATEWAY_PREVIEW = ["utc_date", "created_at", "key_name", "model", "log_type_name", "billed_usd", "prompt_tokens",
                   "completion_tokens", "request_id"]


def build_gateway_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=lake_datasets.GATEWAY_LOGS.key,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"parquet"},
        owners=["team:platform"],
        metadata=lake_spec_metadata(lake_datasets.GATEWAY_LOGS.schema),
        description=(
            "CometAPI's own per-request ledger (/api/log/self: its CSV export where it checks out, else paged to "
            "an empty page; plus console CSV exports in <inbox>/gateway/): billed USD per row (quota / 500000), "
            "refunds and task corrections as their own rows. Each day is checked against /api/log/self/stat and "
            "/api/data/self before it lands. Pulled only when COMETAPI_ACCESS_TOKEN is set."
        ),
    )
    def gateway_logs_lake(context: dg.AssetExecutionContext, ledger: LedgerHome, gateway: GatewayLedger):
        start, end = run_days(context)
        swept(context, ledger, lake_datasets.names(lake_datasets.GATEWAY_LOGS, lake_datasets.GATEWAY_REJECTS,
                                                   lake_datasets.GATEWAY_PULLS, lake_datasets.GATEWAY_CHECKS))
        exports = gateway_lake.export_files(ledger.inbox_path)
        if not gateway.configured and not exports:
            context.log.info("COMETAPI_ACCESS_TOKEN is not set and no CSV export is in the inbox: ledger skipped")
            return dg.MaterializeResult(metadata={
                **lake_metadata([], lake_datasets.GATEWAY_LOGS.schema, GATEWAY_PREVIEW),
                "window": f"{start} .. {end}", "skipped": True,
                "reason": "COMETAPI_ACCESS_TOKEN not set; no CSV export"})
        first_utc, last_utc = lake.utc_days_covering(start, end, ledger.timezone)  # the lake keeps UTC days
        with gateway.client() if gateway.configured else contextlib.nullcontext() as client:
            pull_id, window = gateway_lake.land_window(ledger.lake, first_utc, last_utc, client=client,
                                                       export_files=exports, now=clock.now, warn=context.log.warning,
                                                       progress=context.log.info)
        figures = gateway_lake.summary(window)
        written = lake_datasets.GATEWAY_LOGS.files(ledger.lake, window_days(first_utc, last_utc))
        return dg.MaterializeResult(
            metadata={
                **lake_metadata(written, lake_datasets.GATEWAY_LOGS.schema, GATEWAY_PREVIEW,
                                dataset=lake_datasets.GATEWAY_LOGS.files(ledger.lake)),
                "window": f"{start} .. {end}",
                "pull_id": pull_id,
                "billed_usd": round(float(figures["billed_usd"]), 6),
                "requests": figures["requests"],
                "rows_by_type": dg.MetadataValue.json(figures["rows_by_type"]),
                "corrections": figures["corrections"],
                "duplicates": figures["duplicates"],
                "rejects_by_reason": dg.MetadataValue.json(figures["rejects_by_reason"]),
                "pages": figures["pages"],
                "sources": ", ".join(figures["sources"]),
                "api_method": figures["api_method"],
                "api_calls": figures["api_calls"],
                # completeness: each day's type-2 quota against the gateway's own totals (never `total`)
                "checks": dg.MetadataValue.json(figures["checks"]),
                "checks_by_day": dg.MetadataValue.md(markdown_table(
                    ["day", "check", "status", "ledger units", "server units", "detail"],
                    gateway_lake.check_rows(window.checks))),
                "rows_without_request_id": figures["rows_without_request_id"],
                "unknown_type_codes": dg.MetadataValue.json(figures["unknown_type_codes"]),
                "subscription_rows": figures["subscription_rows"],
                "subscription_usd": float(figures["subscription_usd"]),
            }
        )

    @dg.asset(
        key=lake_datasets.CATALOG_SNAPSHOTS.key,
        # Not partitioned: the catalog is pulled once per run, whatever the range of days. The single-run
        # policy says so to the Dagster CLI (`--partition-range` needs it on every asset it selects).
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"parquet"},
        owners=["team:finance"],
        metadata=lake_spec_metadata(catalog.CATALOG_SNAPSHOTS),
        description=(
            "CometAPI's public model catalog (/api/models, no auth) as it stood today: one snapshot a reporting "
            "day (a re-pull replaces it), unusable entries in catalog_rejects. A price change between two "
            "snapshots becomes a price version with source 'catalog' (pipelines/lib/prices/catalog.py)."
        ),
    )
    def catalog_snapshots_lake(context: dg.AssetExecutionContext, ledger: LedgerHome, gateway: GatewayLedger):
        swept(context, ledger, lake_datasets.names(lake_datasets.CATALOG_SNAPSHOTS, lake_datasets.CATALOG_REJECTS))
        day = clock.today(ledger.timezone)
        try:
            with gateway.client() as client:
                entries = client.fetch_models()
        except Exception as failed:  # the catalog is the last price source: its outage must not stop a run
            context.log.warning(f"/api/models not pulled: {failed}; the last snapshot stays in use")
            return dg.MaterializeResult(metadata={"snapshot_date": str(day), "skipped": True,
                                                  "reason": str(failed)[:500]})
        snapshot = catalog.parse_catalog(day, entries)
        models, rejects = catalog.land(ledger.lake, snapshot)
        return dg.MaterializeResult(metadata={
            **lake_metadata([models], catalog.CATALOG_SNAPSHOTS,
                            dataset=lake_datasets.CATALOG_SNAPSHOTS.files(ledger.lake)),
            "snapshot_date": str(day), "models": len(snapshot.rows), "rejects": len(snapshot.rejects),
            "rejects_by_reason": dg.MetadataValue.json(dict(Counter(r["reason"] for r in snapshot.rejects))),
        })

    return [gateway_logs_lake, catalog_snapshots_lake]
