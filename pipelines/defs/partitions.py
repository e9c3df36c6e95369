"""Every PartitionsDefinition of the project, defined once from the settings."""

from __future__ import annotations

import dagster as dg

from pipelines.lib.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per reporting day in COMET_LEDGER_TIMEZONE, from COMET_LEDGER_START_DATE to yesterday."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        timezone=settings.timezone,
    )
