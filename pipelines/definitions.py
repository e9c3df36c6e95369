"""The one entry point: Dagster loads `defs` from here (workspace.yaml, `dagster dev`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import dagster as dg

from pipelines.defs.alerts.resources import alert_channels
from pipelines.defs.alerts.sensors import build_alert_sensors
from pipelines.defs.checks.freshness import build_freshness_checks
from pipelines.defs.checks.smoke_test import build_smoke_test_assets
from pipelines.defs.gateway.assets import build_gateway_assets
from pipelines.defs.partitions import daily_partitions, monthly_partitions
from pipelines.defs.reports.assets import build_report_assets
from pipelines.defs.quota.assets import build_quota_assets
from pipelines.defs.reconciliation.assets import build_reconciliation_assets
from pipelines.defs.reconciliation.budgets import build_budget_assets
from pipelines.defs.request_logs.assets import build_request_log_assets
from pipelines.defs.resources import GatewayLedger, LedgerHome, QueryService
from pipelines.defs.schedules import build_jobs_and_schedules, freshness_hour_utc
from pipelines.defs.sensors import build_inbox_sensor
from pipelines.lib.settings import Settings, load_settings

# Single-run backfills are the design (one query call per chunk of days); Dagster labels the
# parameter beta, which is noise for operators.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_definitions(settings: Settings, resources: Mapping[str, dg.ConfigurableResource] | None = None, *,
                      interactive: bool = False) -> dg.Definitions:
    """Everything Dagster needs, from validated settings (`resources` replace the defaults, for tests).
    `interactive`: for a person at the command line, who is better served by a quick failure when
    the API cannot be reached at all than by the scheduled run's minute of retries."""
    partitions = daily_partitions(settings)
    months = monthly_partitions(settings)
    freshness_checks, freshness_sensor = build_freshness_checks(
        freshness_hour_utc(settings.timezone, settings.freshness_hour_utc))
    jobs, schedules = build_jobs_and_schedules(partitions, months, settings.timezone, freshness_checks)
    return dg.Definitions(
        assets=dg.with_source_code_references([
            *build_quota_assets(partitions),
            *build_request_log_assets(partitions),
            *build_gateway_assets(partitions),
            *build_reconciliation_assets(partitions),
            *build_budget_assets(),
            *build_smoke_test_assets(settings.api_url),
            *build_report_assets(months),
        ]),
        asset_checks=freshness_checks,
        jobs=jobs,
        schedules=schedules,
        sensors=[build_inbox_sensor(settings, partitions), freshness_sensor, *build_alert_sensors()],
        resources={**default_resources(settings, interactive=interactive), **(resources or {})},
    )


def default_resources(settings: Settings, *, interactive: bool = False) -> dict[str, dg.ConfigurableResource]:
    """Secrets only as `EnvVar` references; the access token is optional (no token, no ledger pull)."""
    unreachable = {"unreachable_attempts": 1} if interactive else {}
    return {
        "ledger": LedgerHome.from_settings(settings),
        "query_service": QueryService(base_url=settings.query_url, api_key=dg.EnvVar("COMETAPI_KEY"), **unreachable),
        "alert_channels": alert_channels(settings),
        "gateway": GatewayLedger(
            base_url=settings.api_url,
            access_token=dg.EnvVar("COMETAPI_ACCESS_TOKEN") if settings.access_token else None,
            **unreachable,
        ),
    }


@dg.definitions
def defs() -> dg.Definitions:
    settings = load_settings()
    settings.apply_umask()  # a code location's runs write the lake and the warehouse: 0640 / 0750
    return build_definitions(settings)
