"""The one entry point: Dagster loads `defs` from here (workspace.yaml, `dagster dev`)."""

from __future__ import annotations

import warnings

import dagster as dg

from pipelines.defs.partitions import daily_partitions
from pipelines.defs.quota.assets import build_quota_assets
from pipelines.defs.resources import LedgerHome, QueryService
from pipelines.defs.schedules import build_jobs_and_schedules
from pipelines.lib.settings import Settings, load_settings

# Single-run backfills are the design (one query call per chunk of days); Dagster labels the
# parameter beta, which is noise for operators.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_definitions(settings: Settings, query_service: QueryService | None = None) -> dg.Definitions:
    """Everything Dagster needs, from validated settings (`query_service` replaces the default, for tests)."""
    partitions = daily_partitions(settings)
    jobs, schedules = build_jobs_and_schedules(partitions, settings.timezone)
    return dg.Definitions(
        assets=[*build_quota_assets(partitions)],
        jobs=jobs,
        schedules=schedules,
        resources={
            "ledger": LedgerHome(home=str(settings.home), timezone=settings.timezone, chunk_days=settings.chunk_days),
            "query_service": query_service
            or QueryService(base_url=settings.query_url, api_key=dg.EnvVar("COMETAPI_KEY")),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
