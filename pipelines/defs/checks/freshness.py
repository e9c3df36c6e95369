"""Freshness: yesterday's reporting day must be in the warehouse by COMET_LEDGER_FRESHNESS_HOUR_UTC.

Dagster's time-partition freshness check fails once the deadline has passed and the partition of
the last reporting day that ended before it has no materialisation; a sensor evaluates it. Dagster
1.13 marks both builders superseded by `FreshnessPolicy`, whose verdict is per asset, not per
partition: a backfill of an old day would count as fresh. Missing yesterday is what matters here.
"""

from __future__ import annotations

import warnings

import dagster as dg

# Analysts read these two first: what CometAPI reported, and how it reconciles.
FRESHNESS_ASSETS = (dg.AssetKey(["warehouse", "quota_daily"]), dg.AssetKey(["warehouse", "recon_key_daily"]))
FRESHNESS_SENSOR = "freshness_sensor"
SENSOR_INTERVAL_S = 300


def deadline_cron(hour_utc: int) -> str:
    return f"0 {hour_utc} * * *"


def build_freshness_checks(hour_utc: int) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """One freshness check per asset in FRESHNESS_ASSETS (deadline: every day at `hour_utc`:00 UTC),
    and the sensor that evaluates them (stopped by default, like the schedules)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)  # see the module docstring
        checks = list(dg.build_time_partition_freshness_checks(
            assets=list(FRESHNESS_ASSETS), deadline_cron=deadline_cron(hour_utc), timezone="UTC",
            severity=dg.AssetCheckSeverity.ERROR))  # Dagster's default is WARN: a missing day is an error
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name=FRESHNESS_SENSOR, minimum_interval_seconds=SENSOR_INTERVAL_S)
    return checks, sensor
