"""Jobs and the daily schedule."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

# CometAPI's maintenance window is 01-05 at night, time zone unstated: UTC or UTC+8 (17-21 UTC).
MAINTENANCE_HOURS_UTC = frozenset(range(1, 5)) | frozenset(range(17, 21))
# Leave an hour either side of a window, and two hours after the reporting day closes for late billing.
SAFETY_MARGIN_H = 1
SETTLE_H = 2
REPULL_DAYS = 3  # days before yesterday pulled again, so restatements are caught
# Yesterday's partition is overdue this many hours after the daily schedule fires (unless
# COMET_LEDGER_FRESHNESS_HOUR_UTC says otherwise): the run, with its retries, is done by then.
FRESHNESS_AFTER_SCHEDULE_H = 2

PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def schedule_hour_utc(timezone: str, on: datetime | None = None) -> int:
    """The first whole UTC hour at least SETTLE_H after the reporting day ends that is at least
    SAFETY_MARGIN_H away from both possible maintenance windows."""
    on = on or datetime(2026, 1, 15, tzinfo=ZoneInfo("UTC"))
    local_midnight = datetime(on.year, on.month, on.day, tzinfo=ZoneInfo(timezone))
    earliest = local_midnight.astimezone(ZoneInfo("UTC")) + timedelta(hours=SETTLE_H)
    hour = earliest.hour + (1 if earliest.minute else 0)
    for step in range(24):
        candidate = (hour + step) % 24
        near = {(candidate + d) % 24 for d in range(-SAFETY_MARGIN_H, SAFETY_MARGIN_H + 1)}
        if not near & MAINTENANCE_HOURS_UTC:
            return candidate
    raise AssertionError("no hour clear of the maintenance windows")


def freshness_hour_utc(timezone: str, configured: int | None = None) -> int:
    """The UTC hour by which yesterday's partition must exist: the configured one, else two hours
    after the daily schedule's (wrapped past midnight)."""
    if configured is not None:
        return configured
    return (schedule_hour_utc(timezone) + FRESHNESS_AFTER_SCHEDULE_H) % 24


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}


def build_jobs_and_schedules(partitions: dg.TimeWindowPartitionsDefinition,
                             months: dg.TimeWindowPartitionsDefinition, timezone: str,
                             sensor_checks: Sequence[dg.AssetChecksDefinition] = ()):
    """The jobs and schedules. `sensor_checks` (the freshness checks) are left out of every job: they
    judge the clock, not a run's days, and their sensor evaluates them."""
    not_sensor_checks = dg.AssetSelection.all() - dg.AssetSelection.checks(*sensor_checks)
    daily_job = dg.define_asset_job(
        "daily_ledger",
        selection=not_sensor_checks - dg.AssetSelection.groups("checks", "reports"),
        description=(
            "Materialise a range of reporting days end to end (query-service pulls, lake, warehouse) "
            "and append one point-in-time balance/key snapshot."
        ),
    )
    rebuild_job = dg.define_asset_job(
        "reconciliation_rebuild",
        selection=dg.AssetSelection.groups("reconciliation") - dg.AssetSelection.checks(*sensor_checks),
        description="Re-read prices and key owners, and recompute requests, reconciliation and marts for a range "
                    "of days from what the lake already holds (no API calls): what `comet-ledger reprice` runs.",
    )
    smoke_job = dg.define_asset_job(
        "smoke_test",
        selection=dg.AssetSelection.groups("checks"),
        description="Run the pre-review smoke test against the configured API and record it in smoke_tests.",
    )
    hour = schedule_hour_utc(timezone)

    @dg.schedule(
        name="daily_ledger_schedule",
        cron_schedule=f"15 {hour} * * *",
        execution_timezone="UTC",
        job=daily_job,
        description=(
            f"Every day at {hour:02d}:15 UTC, clear of both possible maintenance windows (01-05 and 17-21 UTC): "
            f"yesterday's reporting day plus the {REPULL_DAYS} days before it, re-pulled to catch restatements."
        ),
    )
    def daily_ledger_schedule(context: dg.ScheduleEvaluationContext):
        keys = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
        if not keys:
            return dg.SkipReason("no complete reporting day yet")
        window = keys[-(REPULL_DAYS + 1):]
        return dg.RunRequest(run_key=f"daily-{window[-1]}", tags=partition_range_tags(window[0], window[-1]))

    review_job = dg.define_asset_job(
        "monthly_review",
        selection=dg.AssetSelection.groups("reports"),
        description="Write the budget-review evidence pack (reports/review-YYYY-MM/) and the FOCUS export "
                    "(reports/focus-YYYY-MM/) for a month.",
    )

    @dg.schedule(
        name="monthly_review_schedule",
        cron_schedule=f"45 {hour} 2 * *",
        execution_timezone="UTC",
        job=review_job,
        description="On the 2nd of each month, after the daily run has pulled the month's last day: last month's pack.",
    )
    def monthly_review_schedule(context: dg.ScheduleEvaluationContext):
        keys = months.get_partition_keys(current_time=context.scheduled_execution_time)
        if len(keys) < 2:
            return dg.SkipReason("no complete month yet")
        return dg.RunRequest(run_key=f"review-{keys[-2]}", partition_key=keys[-2])

    return [daily_job, rebuild_job, smoke_job, review_job], [daily_ledger_schedule, monthly_review_schedule]
