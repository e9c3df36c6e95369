"""The alert conditions the Dagster instance knows: a failing daily run, and stale data.

- `run_failed`: the finished runs of `daily_ledger` (newest first) that failed or were cancelled since
  the last one that succeeded. One incident from the first of them (its period is that run's last
  reporting day) until a run succeeds; the detail is the latest failure's one-line reason. The
  command line's runs are in the same instance (`DAGSTER_HOME`), so they count too.
- `data_stale`: the latest evaluation of a freshness check (`pipelines/defs/checks/freshness.py`)
  failed: yesterday's partition of `warehouse/quota_daily` or `warehouse/recon_key_daily` was missing
  at the deadline. Its period is the reporting day that was expected, the day before the deadline's
  date in the reporting zone (as Dagster's check computes it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import dagster as dg

from pipelines.defs.checks.freshness import FRESHNESS_ASSETS
from pipelines.defs.schedules import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from pipelines.lib.alerts.conditions import Condition, Judgement

DAILY_JOB = "daily_ledger"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
LATEST_RUNS = 50


def instance_conditions(instance: dg.DagsterInstance, timezone: str, secrets: Iterable[str] = ()) -> Judgement:
    return run_failures(instance, timezone, secrets) + stale_data(instance, timezone)


def run_failures(instance: dg.DagsterInstance, timezone: str, secrets: Iterable[str] = ()) -> Judgement:
    from pipelines.runs import first_failure

    records = instance.get_run_records(filters=dg.RunsFilter(job_name=DAILY_JOB, statuses=FINISHED),
                                       limit=LATEST_RUNS)
    streak = []
    for record in records:  # newest first
        if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            break
        streak.append(record)
    judged = frozenset({"run_failed"})
    if not streak:
        return Judgement(judged=judged)
    latest, first = streak[0].dagster_run, streak[-1]
    first_day = _days(first.dagster_run, first.create_timestamp, timezone)[1]
    start, end = _days(latest, streak[0].create_timestamp, timezone)
    if latest.status == dg.DagsterRunStatus.CANCELED:
        reason = "the run was cancelled"
    else:
        events = [entry.dagster_event for entry in instance.all_logs(latest.run_id) if entry.dagster_event]
        reason = first_failure(SimpleNamespace(all_events=events), list(secrets))
    runs = f"{len(streak)} failed runs since the last success" if len(streak) > 1 else "the latest run"
    condition = Condition(
        "run_failed", f"job:{DAILY_JOB}", first_day, "critical",
        f"The daily run failed: reporting days up to {end} are not updated ({runs})",
        f"Run {latest.run_id} for {start} .. {end}: {reason}. See docs/operations.md, When a run fails; "
        f"re-run with `comet-ledger run --date {end}` once the cause is fixed.")
    return Judgement([condition], judged)


def _days(run: dg.DagsterRun, created: float, timezone: str) -> tuple[date, date]:
    """The run's first and last reporting day: its partition range, else the day it was created."""
    tags = run.tags
    if PARTITION_RANGE_END_TAG in tags:
        return date.fromisoformat(tags[PARTITION_RANGE_START_TAG]), date.fromisoformat(tags[PARTITION_RANGE_END_TAG])
    if "dagster/partition" in tags:
        day = date.fromisoformat(tags["dagster/partition"])
        return day, day
    day = datetime.fromtimestamp(created, ZoneInfo(timezone)).date()
    return day, day


def stale_data(instance: dg.DagsterInstance, timezone: str) -> Judgement:
    stale: list[tuple[str, date]] = []
    keys = [dg.AssetCheckKey(asset, "freshness_check") for asset in FRESHNESS_ASSETS]
    summaries = instance.event_log_storage.get_asset_check_summary_records(keys)
    for key in keys:
        summary = summaries.get(key)
        record = summary.last_completed_check_execution_record if summary else None
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        if evaluation is None or evaluation.passed:
            continue
        tick = evaluation.metadata.get("dagster/latest_cron_tick_timestamp")
        deadline = datetime.fromtimestamp(tick.value if tick else record.event.timestamp, ZoneInfo(timezone))
        stale.append((key.asset_key.to_user_string(), date.fromordinal(deadline.date().toordinal() - 1)))
    judged = frozenset({"data_stale"})
    if not stale:
        return Judgement(judged=judged)
    day = min(d for _, d in stale)
    assets = ", ".join(name for name, _ in stale)
    return Judgement([Condition(
        "data_stale", "freshness", day, "critical",
        f"Stale data: reporting day {day} is missing from {assets} after the freshness deadline",
        "The daily run has not delivered yesterday's figures in time. Check that the daily_ledger run started and "
        "succeeded (Dagster UI, Runs); see docs/operations.md, When a run fails.")], judged)
