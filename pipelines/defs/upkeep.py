"""What an asset does before it writes the lake."""

import dagster as dg

from pipelines.defs.resources import LedgerHome
from pipelines.lib import lake
from pipelines.lib.lake import layout as lake_layout


def swept(context: dg.AssetExecutionContext, ledger: LedgerHome, datasets: tuple[str, ...]) -> None:
    """Convert a lake in the older layout once (`lake_layout`), and remove what a killed writer left in
    `datasets` (lake.remove_stale_temporaries), saying so."""
    converted = lake_layout.ensure_utc_days(ledger.lake)
    if converted:
        context.log.warning(converted)
    removed = lake.remove_stale_temporaries(ledger.lake, datasets)
    if removed:
        context.log.info(f"removed {len(removed)} temporary file(s) left by a killed run over a day ago")
