"""The reporting days a (possibly multi-partition) run covers."""

from __future__ import annotations

from datetime import date

import dagster as dg


def run_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """First and last reporting day of the run's partition range (inclusive)."""
    keys = context.partition_keys
    return date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
