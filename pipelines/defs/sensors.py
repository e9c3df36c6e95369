"""The inbox sensor: new or changed request-log files get staged, then their days assembled."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import dagster as dg

from pipelines.defs.schedules import partition_range_tags
from pipelines.lib import lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.request_logs import lake as request_log_lake
from pipelines.lib.request_logs.reader import inbox_files
from pipelines.lib.settings import Settings

STAGING_JOB = "inbox_staging"
ASSEMBLY_JOB = "request_logs_assembly"


def build_inbox_sensor(settings: Settings, partitions: dg.TimeWindowPartitionsDefinition) -> dg.SensorDefinition:
    staging_job = dg.define_asset_job(
        STAGING_JOB,
        selection=dg.AssetSelection.assets(["lake", "inbox_files"], ["warehouse", "inbox_files"], ["warehouse", "rejects"]),
        description="Parse inbox files not seen before (new, or changed since they were read).",
    )
    assembly_job = dg.define_asset_job(
        ASSEMBLY_JOB,
        selection=dg.AssetSelection.assets(lake_datasets.REQUEST_LOGS.key),
        description="Rebuild the request-log partitions of the days newly staged files touch.",
    )

    @dg.sensor(
        name="inbox_sensor",
        jobs=[staging_job, assembly_job],
        minimum_interval_seconds=60,
        description=(
            "Every minute: inbox files that are new or changed (size or modification time) are staged; once "
            "staged, the reporting days their requests fall on are re-assembled."
        ),
    )
    def inbox_sensor(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {"seen": {}, "assembled_through": ""}
        requests, inbox = [], settings.inbox
        seen = {
            p.relative_to(inbox).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in inbox_files(inbox)
        }
        changed = sorted(name for name, signature in seen.items() if cursor["seen"].get(name) != signature)
        if changed:
            digest = hashlib.sha256(json.dumps([(n, seen[n]) for n in changed]).encode()).hexdigest()[:16]
            requests.append(dg.RunRequest(run_key=f"stage-{digest}", job_name=STAGING_JOB))

        fresh = [m for m in request_log_lake.read_manifests(settings.lake)
                 if m["staged_at"].isoformat() > cursor["assembled_through"] and m.get("first_utc_date")]
        keys = partitions.get_partition_keys()
        if fresh and keys:
            # the staged UTC days touch these reporting days
            touched = lake.reporting_days_of(min(m["first_utc_date"] for m in fresh),
                                             max(m["last_utc_date"] for m in fresh), settings.timezone)
            first = max(touched[0], date.fromisoformat(keys[0]))
            last = min(touched[1], date.fromisoformat(keys[-1]))
            through = max(m["staged_at"] for m in fresh).isoformat()
            if first <= last:
                requests.append(dg.RunRequest(run_key=f"assemble-{through}", job_name=ASSEMBLY_JOB,
                                              tags=partition_range_tags(first.isoformat(), last.isoformat())))
            cursor["assembled_through"] = through
        cursor["seen"] = seen
        context.update_cursor(json.dumps(cursor))
        return requests or dg.SkipReason("no new inbox files")

    return inbox_sensor
