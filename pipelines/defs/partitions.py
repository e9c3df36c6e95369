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


def monthly_partitions(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    """One partition per calendar month of reporting days, the current (incomplete) month included."""
    return dg.MonthlyPartitionsDefinition(
        start_date=settings.start_date.replace(day=1).isoformat(),
        timezone=settings.timezone,
        end_offset=1,
    )
