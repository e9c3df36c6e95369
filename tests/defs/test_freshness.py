"""The freshness checks: once the configured hour has passed, yesterday's partition of quota_daily and
recon_key_daily must exist; the sensor asks for the checks that need evaluating.

The check reads the real clock. The deadline hour is set three hours before now, so which reporting
day it expects is fixed for the test's duration: the day before the deadline's (UTC) date.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from pipelines.defs.checks.freshness import FRESHNESS_ASSETS, FRESHNESS_SENSOR
from pipelines.lib.settings import load_settings


@pytest.fixture
def deadline_passed(tmp_path):
    """Definitions whose freshness deadline passed 3-4 hours ago, and the partition it expects."""
    now = datetime.now(UTC)
    deadline = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    settings = load_settings(env={"COMET_LEDGER_HOME": str(tmp_path), "COMET_LEDGER_START_DATE": "2026-01-01",
                                  "COMET_LEDGER_FRESHNESS_HOUR_UTC": str(deadline.hour)})
    expected = (deadline.date() - timedelta(days=1)).isoformat()
    return build_definitions(settings), expected


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    """Run the freshness checks (only them) against what `instance` records, now."""
    checks = [defs.get_asset_checks_def(dg.AssetCheckKey(key, "freshness_check")) for key in FRESHNESS_ASSETS]
    # The assets as specs: the checks need their partitions, not their code.
    assets = [dg.AssetSpec(key, partitions_def=defs.resolve_assets_def(key).partitions_def) for key in FRESHNESS_ASSETS]
    result = dg.materialize([*assets, *checks], instance=instance, selection=dg.AssetSelection.checks(*checks))
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def materialised(instance: dg.DagsterInstance, partition: str) -> None:
    for key in FRESHNESS_ASSETS:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def test_yesterday_missing_after_the_deadline_fails_and_present_passes(deadline_passed):
    defs, expected = deadline_passed
    day_before = (datetime.fromisoformat(expected) - timedelta(days=1)).date().isoformat()
    with dg.DagsterInstance.ephemeral() as instance:
        materialised(instance, day_before)  # the day before is there, the expected one is not
        missing = evaluate(defs, instance)
        materialised(instance, expected)
        present = evaluate(defs, instance)
    assert set(missing) == set(present) == {"warehouse/quota_daily", "warehouse/recon_key_daily"}
    for evaluation in missing.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert f"expected partition {expected} to have arrived" in evaluation.description
    assert all(evaluation.passed for evaluation in present.values())


def test_the_sensor_requests_the_checks_not_yet_evaluated(deadline_passed):
    defs, _ = deadline_passed
    sensor = defs.resolve_sensor_def(FRESHNESS_SENSOR)
    with dg.DagsterInstance.ephemeral() as instance:
        with dg.build_sensor_context(instance=instance, definitions=defs) as context:
            result = sensor.evaluate_tick(context)
    [request] = result.run_requests
    assert {k.asset_key for k in request.asset_check_keys} == set(FRESHNESS_ASSETS)


def test_the_deadline_defaults_to_two_hours_after_the_daily_schedule(tmp_path):
    from pipelines.defs.checks.freshness import deadline_cron

    for timezone, hour in (("UTC", 8), ("Asia/Shanghai", 0)):
        defs = build_definitions(load_settings(env={"COMET_LEDGER_HOME": str(tmp_path),
                                                    "COMET_LEDGER_TIMEZONE": timezone}))
        schedule = defs.resolve_schedule_def("daily_ledger_schedule")
        assert (int(schedule.cron_schedule.split()[1]) + 2) % 24 == hour
        check = defs.get_asset_checks_def(dg.AssetCheckKey(FRESHNESS_ASSETS[0], "freshness_check"))
        [spec] = [s for s in check.check_specs if s.asset_key == FRESHNESS_ASSETS[0]]
        assert spec.metadata["dagster/freshness_params"].value["deadline_cron"] == deadline_cron(hour)
