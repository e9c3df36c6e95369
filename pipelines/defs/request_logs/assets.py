"""Request logs: what applications captured (the inbox), and the warehouse's record of every inbox file
and of every unusable line or row."""

import time
from collections import Counter

import dagster as dg
import duckdb

from pipelines.defs.metadata import (
    lake_metadata, lake_spec_metadata, markdown_table, preview, table_metadata, warehouse_spec_metadata,
)
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.resources import LedgerHome
from pipelines.defs.upkeep import swept
from pipelines.defs.window import run_days
from pipelines.lib import clock, lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.gateway import lake as gateway_lake
from pipelines.lib.prices import catalog
from pipelines.lib.request_logs import lake as request_log_lake
from pipelines.lib.warehouse import built_from, inputs_sha, publish, record_built_from, run_model, run_query

GROUP = "request_logs"
# Not partitioned: the inbox is staged whole once per run, whatever the range of days. The
# single-run policy says so to the Dagster CLI (`--partition-range` needs it on every asset it selects).
ONCE_PER_RUN = dg.BackfillPolicy.single_run()
REQUEST_LOG_PREVIEW = ["utc_date", "ts", "key_name", "model", "prompt_tokens", "completion_tokens", "usage_status",
                       "file", "line_no"]
# what warehouse/inbox_files (and request_conflicts) is built from (kept while these are unchanged)
INBOX_FILES_MODELS = ("stg_inbox_files", "stg_copy_ranks", "request_conflicts", "inbox_files")
INBOX_FILES_TABLES = ("inbox_files", "request_conflicts")
INBOX_FILES_PARAMS = ("inbox_manifest_files", "inbox_record_files")


def build_request_log_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["lake", "inbox_files"],
        group_name=GROUP,
        kinds={"parquet"},
        owners=["team:platform"],
        metadata=lake_spec_metadata(request_log_lake.MANIFEST),
        backfill_policy=ONCE_PER_RUN,
        description=(
            "Every version of every inbox file, parsed once: accepted lines (with file and line), rejected "
            "lines with their reason, and the file's counts. A file already staged (same path, same bytes) is "
            "skipped; a changed file is staged again as a new version."
        ),
    )
    def inbox_files_lake(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        started = time.perf_counter()
        swept(context, ledger, lake_datasets.names(lake_datasets.INBOX_RECORDS, lake_datasets.INBOX_REJECTS,
                                                   lake_datasets.INBOX_MANIFEST))
        skipped = request_log_lake.record_skipped(ledger.lake, ledger.inbox_path)
        for entry in skipped:
            context.log.warning(f"inbox: {entry.file} {entry.detail} ({entry.reason})")
        pending = request_log_lake.pending_files(ledger.lake, ledger.inbox_path)
        now = clock.now()
        staged = []
        for index, done in enumerate(request_log_lake.stage_files(ledger.lake, ledger.inbox_path, pending, now),
                                     start=1):
            staged.append(done)
            context.log.info(f"staged {index}/{len(pending)}: {done.file} ({done.lines_read} lines)")
        reasons = Counter()
        for s in staged:
            reasons.update(s.reject_reasons)
        manifests = lake_datasets.INBOX_MANIFEST.files(ledger.lake, [s.file_id for s in staged]) if staged else []
        return dg.MaterializeResult(
            metadata={
                # One row per file version staged by this run: its manifest (the records and rejects
                # it split into are counted in lines_*).
                **lake_metadata(manifests, request_log_lake.MANIFEST,
                                dataset=lake_datasets.INBOX_MANIFEST.files(ledger.lake)),
                "files_staged": len(staged),
                "files_in_inbox": len(request_log_lake.inbox_files(ledger.inbox_path)),
                "files_skipped": len(skipped),  # not read: links out of the inbox, non-UTF-8 names (see rejects)
                "skipped": dg.MetadataValue.md(markdown_table(["file", "reason"],
                                                              [(e.file, e.reason) for e in skipped[:20]])),
                "lines_read": sum(s.lines_read for s in staged),
                "lines_accepted_before_dedupe": sum(s.records for s in staged),
                "lines_rejected": sum(s.rejected for s in staged),
                "rejects_by_reason": dg.MetadataValue.json(dict(sorted(reasons.items()))),
                "bytes": sum(item.path.stat().st_size for item in pending),
                "seconds": round(time.perf_counter() - started, 3),
                "preview": dg.MetadataValue.md(markdown_table(
                    ["file", "lines_read", "accepted", "rejected"],
                    [(s.file, s.lines_read, s.records, s.rejected) for s in staged])),
            }
        )

    @dg.asset(
        key=lake_datasets.REQUEST_LOGS.key,
        deps=[["lake", "inbox_files"]],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"parquet"},
        owners=["team:platform"],
        metadata=lake_spec_metadata(request_log_lake.REQUEST_LOGS),
        description=(
            "One row per client-logged request, in the partition of its own UTC day (a reporting day is landed as "
            "the UTC days that cover it), whatever file it came in: tokens in disjoint buckets (OpenAI semantics), "
            "unknown usage kept as NULL, duplicates removed."
        ),
    )
    def request_logs_lake(context: dg.AssetExecutionContext, ledger: LedgerHome) -> dg.MaterializeResult:
        start, end = run_days(context)
        swept(context, ledger, lake_datasets.names(lake_datasets.REQUEST_LOGS))
        written = request_log_lake.assemble(ledger.lake, *lake.utc_days_covering(start, end, ledger.timezone))
        files = lake_datasets.REQUEST_LOGS.files(ledger.lake, list(written))
        with duckdb.connect() as con:
            shapes = run_query(con, "previews/request_log_shapes",
                               {"files": files}).fetchall() if sum(written.values()) else []
        return dg.MaterializeResult(
            metadata={
                **lake_metadata(files, request_log_lake.REQUEST_LOGS, REQUEST_LOG_PREVIEW,
                                dataset=lake_datasets.REQUEST_LOGS.files(ledger.lake)),
                "window": f"{start} .. {end}",
                "days_with_requests": sum(1 for n in written.values() if n),
                "shapes": dg.MetadataValue.md(markdown_table(["usage_shape", "usage_status", "requests"], shapes)),
                "unknown_usage": sum(n for _, status, n in shapes if status == "unknown"),
            }
        )

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(["warehouse", "inbox_files"], deps=[["lake", "inbox_files"]], group_name=GROUP,
                         kinds={"duckdb"}, owners=["team:platform"],
                         metadata=warehouse_spec_metadata("inbox_files", *INBOX_FILES_MODELS),
                         description="Every current inbox file and what became of its lines "
                                     "(read = accepted + rejected + duplicates)."),
            dg.AssetSpec(["warehouse", "rejects"], deps=[["lake", "inbox_files"], lake_datasets.GATEWAY_LOGS.key,
                                                   lake_datasets.CATALOG_SNAPSHOTS.key],
                         group_name=GROUP, kinds={"duckdb"}, owners=["team:platform"],
                         metadata=warehouse_spec_metadata("rejects"),
                         description="Unusable client log lines and gateway ledger rows, with file, line, "
                                     "reason and raw text."),
        ],
        check_specs=[
            dg.AssetCheckSpec("every_line_accounted_for", asset=["warehouse", "inbox_files"], blocking=True,
                              description="per file: lines read = accepted + rejected + duplicates"),
        ],
        backfill_policy=ONCE_PER_RUN,
        pool=WRITER_POOL,
    )
    def inbox_warehouse(context: dg.AssetExecutionContext, ledger: LedgerHome):
        params = (request_log_lake.staging_params(ledger.lake) | gateway_lake.reject_params(ledger.lake)
                  | catalog.snapshot_params(ledger.lake))
        everything = {"start": request_log_lake.FIRST_DAY, "end": request_log_lake.LAST_DAY}
        with publish(ledger.warehouse_path, zone=ledger.timezone) as con:
            run_model(con, "stg_inbox_files", params)
            # inbox_files ranks every copy ever staged (a new file can turn an old copy into a
            # duplicate), which at a year of history costs tens of seconds: it is kept when neither
            # the staged files nor its SQL changed since it was built (a backfill's later runs).
            inbox_inputs = {k: params[k] for k in INBOX_FILES_PARAMS} | everything | {"zone": ledger.timezone}
            inputs = inputs_sha(INBOX_FILES_MODELS, inbox_inputs)
            rebuilt = not built_from(con, INBOX_FILES_TABLES, inputs)
            if rebuilt:
                run_model(con, "stg_copy_ranks", inbox_inputs)
                run_model(con, "request_conflicts", request_log_lake.conflict_params(con, ledger.lake))
                run_model(con, "inbox_files", inbox_inputs)
                record_built_from(con, INBOX_FILES_TABLES, inputs)
            else:
                context.log.info("warehouse inbox_files kept: no staged file and no model changed since it was built")
            run_model(con, "rejects", params)
            files, read, accepted, rejected, duplicates, conflicts, unbalanced = run_query(
                con, "previews/inbox_totals").fetchone()
            if rebuilt and conflicts:
                for request_id, file, line, landed, differs in run_query(con, "previews/request_conflicts").fetchall():
                    context.log.warning(f"request_id {request_id} at {file}:{line} conflicts with the copy that "
                                        f"landed ({landed}): {differs}")
            by_reason = run_query(con, "previews/rejects_by_reason").fetchall()
            files_meta = {
                **table_metadata(con, "inbox_files"),
                "preview": preview(con, "previews/inbox_files"),
            }
            rejects_meta = {
                **table_metadata(con, "rejects"),
                "preview": preview(con, "previews/rejects"),
            }
            if unbalanced:
                raise dg.Failure(f"{unbalanced} inbox file(s) do not balance read = accepted + rejected + "
                                 "duplicates; nothing was published")
        yield dg.MaterializeResult(asset_key=["warehouse", "inbox_files"], metadata={
            **files_meta, "rebuilt": rebuilt, "lines_read": int(read),
            "accepted": int(accepted), "rejected": int(rejected), "duplicates": int(duplicates),
            "conflicts": int(conflicts)})
        yield dg.MaterializeResult(asset_key=["warehouse", "rejects"], metadata={
            **rejects_meta, "by_reason": dg.MetadataValue.md(markdown_table(["source", "reason", "rows"], by_reason))})
        yield dg.AssetCheckResult(check_name="every_line_accounted_for", asset_key=["warehouse", "inbox_files"],
                                  passed=unbalanced == 0, metadata={"unbalanced_files": unbalanced})

    return [inbox_files_lake, request_logs_lake, inbox_warehouse]
