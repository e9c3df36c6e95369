"""The alert sensors: after each run, look at what is wrong and tell the configured channels.

Two run-status sensors, because Dagster gives each sensor one run status: `alert_sensor` after every
run of this code location that succeeds (the daily run, a re-price, a smoke test, the freshness
checks' runs) and `alert_failure_sensor` after every run that fails. Both do the same thing
(`pipelines/lib/alerts/ledger.py`, `evaluate`): the conditions in the warehouse (budgets,
anomalies, smoke tests) and in the instance (a failing daily run, failed freshness checks) against
the `alerts` table; one note per new alert, one per resolved alert. A run-status sensor evaluates
after the run has ended, so nothing it does can fail the data run, and a channel that is down costs
its retries, not the run. Like the schedules, both are off on a new instance.

A tick that cannot take the warehouse's writer lock within `LOCK_TIMEOUT_S` fails (Dagster retries
the same run's evaluation at the next tick); a channel that fails is recorded, not raised.
"""

from __future__ import annotations

import dagster as dg

from pipelines.defs.alerts.resources import AlertChannels
from pipelines.defs.alerts.sources import instance_conditions
from pipelines.defs.resources import LedgerHome
from pipelines.lib import clock
from pipelines.lib.alerts.ledger import evaluate
from pipelines.lib.redact import redact

ALERT_SENSOR = "alert_sensor"
ALERT_FAILURE_SENSOR = "alert_failure_sensor"
LOCK_TIMEOUT_S = 45.0


def run_alerts(instance: dg.DagsterInstance, ledger: LedgerHome, alert_channels: AlertChannels,
               log=None) -> str:
    """One evaluation; returns its one-line summary (each failed note is logged as a warning)."""
    sender = alert_channels.sender()
    secrets = sender.settings.secrets()
    found = instance_conditions(instance, ledger.timezone, secrets)
    try:
        outcome = evaluate(ledger.warehouse_path, sender, clock.now(), found, lock_timeout_s=LOCK_TIMEOUT_S)
    except Exception as exc:  # one clean line; Dagster retries the tick
        raise RuntimeError(redact(f"alert evaluation failed: {type(exc).__name__}: {exc}", secrets)
                           .splitlines()[0]) from None
    if log is not None:
        for alert_id, note, delivery in outcome.failed:
            log.warning(f"alert {alert_id} ({note}) not delivered: {delivery.error}")
    return outcome.summary()


def build_alert_sensors() -> list[dg.SensorDefinition]:
    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=ALERT_SENSOR,
        description="After each successful run: budget thresholds crossed or forecast, critical anomalies (unlogged "
                    "gateway calls, a new source address with spend, a running-out balance), stale data, a failed "
                    "smoke test; one note per new alert and one when it clears (Slack, JSON webhook, e-mail).",
    )
    def alert_sensor(context: dg.RunStatusSensorContext, ledger: LedgerHome, alert_channels: AlertChannels):
        return dg.SkipReason(run_alerts(context.instance, ledger, alert_channels, context.log))

    @dg.run_failure_sensor(
        name=ALERT_FAILURE_SENSOR,
        description="After each failed run: the same evaluation as alert_sensor, which opens a run_failed alert when "
                    "the daily run failed.",
    )
    def alert_failure_sensor(context: dg.RunFailureSensorContext, ledger: LedgerHome,
                             alert_channels: AlertChannels):
        return dg.SkipReason(run_alerts(context.instance, ledger, alert_channels, context.log))

    return [alert_sensor, alert_failure_sensor]
