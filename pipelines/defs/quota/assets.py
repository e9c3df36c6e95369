"""Quota-service data: daily spend per key (lake + warehouse) and point-in-time snapshots."""


from decimal import Decimal
from pathlib import Path

import dagster as dg

from pipelines.defs.metadata import (
    lake_metadata, lake_spec_metadata, markdown_table, preview, table_metadata, warehouse_spec_metadata,
)
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.resources import LedgerHome, QueryService
from pipelines.defs.window import run_days
from pipelines.lib import clock, lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.quota import lake as quota_lake
from pipelines.lib.days import window_days
from pipelines.lib.warehouse import publish, record_models, run_model, run_query, window_to_build

GROUP = "quota"
# Not partitioned: a snapshot is taken once per run, whatever the range of days. The single-run
# policy says so to the Dagster CLI (`--partition-range` needs it on every asset it selects).
SNAPSHOT_ONCE_PER_RUN = dg.BackfillPolicy.single_run()
QUOTA_TABLES = ("quota_daily", "quota_restatements")  # window-incremental tables


def build_quota_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=lake_datasets.QUOTA_DAILY.key,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"parquet"},
        owners=["team:platform"],
        metadata=lake_spec_metadata(quota_lake.QUOTA_DAILY),
        description=(
            "Every pull of CometAPI's `daily_quota` (spend and requests per key and day) for the run's "
            "days, kept immutably with `pulled_at`. One query-service call per chunk of days."
        ),
    )
    def quota_daily_lake(
        context: dg.AssetExecutionContext, ledger: LedgerHome, query_service: QueryService
    ) -> dg.MaterializeResult:
        start, end = run_days(context)
        # what a killed pull left
        lake.remove_stale_temporaries(ledger.lake, lake_datasets.names(lake_datasets.QUOTA_DAILY, lake_datasets.QUOTA_PULLS))
        # Fetch every chunk before writing anything: a failed call leaves the lake untouched.
        with query_service.client() as client:
            pulls = list(client.fetch_daily(start, end, ledger.chunk_days))
        landed = [quota_lake.land_daily_pull(ledger.lake, pull) for pull in pulls]
        per_key: dict[str, list] = {}
        for pull in pulls:
            for e in pull.response.daily or []:
                row = per_key.setdefault(e.key_name, [Decimal(0), 0])
                row[0] += e.cost_usd
                row[1] += e.requests
        context.log.info(f"{len(pulls)} query call(s) for {start}..{end}: {sum(p.rows for p in landed)} key-day rows")
        pull_ids = {p.pull_id for p in landed}
        written = [f for f in lake_datasets.QUOTA_DAILY.files(ledger.lake, window_days(start, end))
                   if Path(f).stem in pull_ids]
        return dg.MaterializeResult(
            metadata={
                **lake_metadata(written, quota_lake.QUOTA_DAILY, dataset=lake_datasets.QUOTA_DAILY.files(ledger.lake)),
                "window": f"{start} .. {end}",
                "query_calls": len(pulls),
                "days_with_usage": sum(p.days_with_usage for p in landed),
                "reported_cost_usd": round(float(sum(p.cost_usd for p in landed)), 6),
                "reported_requests": sum(p.requests for p in landed),
                "pull_ids": ", ".join(p.pull_id for p in landed),
                "preview": dg.MetadataValue.md(
                    markdown_table(["key_name", "cost_usd", "requests"], [(k, v[0], v[1]) for k, v in sorted(per_key.items())])
                ),
            }
        )

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                lake_datasets.BALANCE_SNAPSHOTS.key, group_name=GROUP, kinds={"parquet"}, owners=["team:platform"],
                metadata=lake_spec_metadata(quota_lake.BALANCE_SNAPSHOTS),
                description="Account balance, lifetime spend and request count at the moment of each run (point-in-time).",
            ),
            dg.AssetSpec(
                lake_datasets.KEY_SNAPSHOTS.key, group_name=GROUP, kinds={"parquet"}, owners=["team:platform"],
                metadata=lake_spec_metadata(quota_lake.KEY_SNAPSHOTS),
                description="Each key's remaining and used quota at the moment of each run; unlimited sentinels flagged.",
            ),
        ],
        backfill_policy=SNAPSHOT_ONCE_PER_RUN,
    )
    def quota_snapshots_lake(context: dg.AssetExecutionContext, ledger: LedgerHome, query_service: QueryService):
        with query_service.client() as client:
            response = client.fetch_quota()
        fetched_at = clock.now()
        snapshot_id = quota_lake.land_snapshot(ledger.lake, response, fetched_at)
        context.log.info(f"snapshot {snapshot_id}: balance {response.balance_usd} USD, {len(response.keys)} keys")

        def written(dataset: lake_datasets.Dataset) -> list[str]:
            return [f for f in dataset.files(ledger.lake, [fetched_at.date()])
                    if Path(f).name.startswith(f"{snapshot_id}.")]

        yield dg.MaterializeResult(
            asset_key=lake_datasets.BALANCE_SNAPSHOTS.key,
            metadata={**lake_metadata(written(lake_datasets.BALANCE_SNAPSHOTS), quota_lake.BALANCE_SNAPSHOTS,
                                      ["fetched_at", "username", "balance_usd", "total_used_usd", "request_count"],
                                      dataset=lake_datasets.BALANCE_SNAPSHOTS.files(ledger.lake)),
                      "snapshot_id": snapshot_id, "fetched_at": fetched_at.isoformat(),
                      "balance_usd": round(float(response.balance_usd), 6)},
        )
        yield dg.MaterializeResult(
            asset_key=lake_datasets.KEY_SNAPSHOTS.key,
            metadata={**lake_metadata(written(lake_datasets.KEY_SNAPSHOTS), quota_lake.KEY_SNAPSHOTS,
                                      ["key_name", "remain_quota_usd", "used_quota_usd", "is_unlimited"], limit=20,
                                      dataset=lake_datasets.KEY_SNAPSHOTS.files(ledger.lake)),
                      "snapshot_id": snapshot_id, "unlimited_keys": sum(k.is_unlimited for k in response.keys)},
        )

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                ["warehouse", "quota_daily"], deps=[lake_datasets.QUOTA_DAILY.key], group_name=GROUP, kinds={"duckdb"},
                owners=["team:platform"], partitions_def=partitions,
                metadata=warehouse_spec_metadata("quota_daily", "stg_quota_pulls", "stg_quota_daily", "quota_daily"),
                description="Reported spend and requests per reporting day and key, from the latest pull of each day.",
            ),
            dg.AssetSpec(
                ["warehouse", "quota_restatements"], deps=[lake_datasets.QUOTA_DAILY.key], group_name=GROUP,
                kinds={"duckdb"}, owners=["team:platform"], partitions_def=partitions,
                metadata=warehouse_spec_metadata("quota_restatements", "stg_quota_pulls", "stg_quota_daily",
                                                 "quota_restatements"),
                description="Every change of a past day's reported figure between consecutive pulls.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec("one_row_per_key_day", asset=["warehouse", "quota_daily"], blocking=True,
                              description="quota_daily has at most one row per usage_date and key_name"),
        ],
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WRITER_POOL,
    )
    def quota_daily_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome):
        start, end = run_days(context)
        with publish(ledger.warehouse_path) as con:
            start, end, reset = window_to_build(con, QUOTA_TABLES, start, end, lambda: quota_lake.history(ledger.lake))
            if reset:
                context.log.info(f"quota models changed: rebuilt {start} .. {end}")
            window = {"start": start, "end": end}
            params = quota_lake.model_params(ledger.lake, start, end)
            for model in ("stg_quota_pulls", "stg_quota_daily", *QUOTA_TABLES):
                run_model(con, model, params)
            record_models(con, QUOTA_TABLES)
            cost, requests = run_query(con, "previews/quota_totals", window).fetchone()
            [duplicates] = run_query(con, "previews/quota_duplicates").fetchone()
            daily_meta = {
                "window": f"{start} .. {end}",
                **table_metadata(con, "quota_daily", window),
                "reported_cost_usd": round(float(cost), 6),
                "reported_requests": int(requests),
                "preview": preview(con, "previews/quota_daily", window),
            }
            restatement_meta = {
                "window": f"{start} .. {end}",
                **table_metadata(con, "quota_restatements", window),
                "preview": preview(con, "previews/quota_restatements", window),
            }
            if duplicates:
                raise dg.Failure(f"quota_daily would hold {duplicates} duplicated key-days; nothing was published")
        yield dg.MaterializeResult(asset_key=["warehouse", "quota_daily"], metadata=daily_meta)
        yield dg.MaterializeResult(asset_key=["warehouse", "quota_restatements"], metadata=restatement_meta)
        yield dg.AssetCheckResult(check_name="one_row_per_key_day", asset_key=["warehouse", "quota_daily"],
                                  passed=duplicates == 0, metadata={"duplicated_key_days": duplicates})

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(["warehouse", "balance_snapshots"], deps=[lake_datasets.BALANCE_SNAPSHOTS.key], group_name=GROUP,
                         kinds={"duckdb"}, owners=["team:platform"], metadata=warehouse_spec_metadata("balance_snapshots"),
                         description="Balance at the moment of each call; a backfill never invents past balances."),
            dg.AssetSpec(["warehouse", "key_snapshots"], deps=[lake_datasets.KEY_SNAPSHOTS.key], group_name=GROUP,
                         kinds={"duckdb"}, owners=["team:platform"], metadata=warehouse_spec_metadata("key_snapshots"),
                         description="Per-key quota at the moment of each call; is_unlimited with NULL amounts for sentinels."),
        ],
        backfill_policy=SNAPSHOT_ONCE_PER_RUN,
        pool=WRITER_POOL,
    )
    def quota_snapshots_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome):
        params = quota_lake.model_params(ledger.lake)
        with publish(ledger.warehouse_path) as con:
            run_model(con, "balance_snapshots", params)
            run_model(con, "key_snapshots", params)
            balance_meta = {
                **table_metadata(con, "balance_snapshots"),
                "preview": preview(con, "previews/balance_snapshots"),
            }
            key_meta = {
                **table_metadata(con, "key_snapshots"),
                "preview": preview(con, "previews/key_snapshots"),
            }
        yield dg.MaterializeResult(asset_key=["warehouse", "balance_snapshots"], metadata=balance_meta)
        yield dg.MaterializeResult(asset_key=["warehouse", "key_snapshots"], metadata=key_meta)

    return [quota_daily_lake, quota_snapshots_lake, quota_daily_warehouse, quota_snapshots_warehouse]
