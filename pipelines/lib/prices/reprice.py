"""What a price-table change does to history, before anything is written.

Recomputes every reporting day already in the warehouse with the price and owner files as they are
now, on a throwaway copy (`warehouse.scratch`: the day files of `requests` it rewrites go to a
temporary folder too), and compares estimated cost per month and model with what the warehouse
holds. `comet-ledger reprice --dry-run` prints it (`--sources` estimates with other price
sources than COMET_LEDGER_PRICE_SOURCES: what switching, say, to ledger and catalog alone would do); without `--dry-run` the same rebuild is
materialised for real through Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from pipelines.lib.reconciliation import PRICE_SOURCES, load_config, rebuild_window
from pipelines.lib.warehouse import relation_exists, scratch

_ESTIMATES = """
    SELECT date_trunc('month', usage_date)::DATE AS month, coalesce(model, '(none)') AS model,
           sum(estimated_cost_usd) AS estimated, count(*) FILTER (WHERE estimated_cost_usd IS NULL) AS unpriced
    FROM requests GROUP BY ALL
"""


@dataclass(frozen=True)
class PriceDelta:
    month: date
    model: str
    before_usd: float | None
    after_usd: float | None
    unpriced_before: int
    unpriced_after: int

    @property
    def delta_usd(self) -> float:
        return (self.after_usd or 0.0) - (self.before_usd or 0.0)


def history(con: duckdb.DuckDBPyConnection) -> tuple[date, date] | None:
    """First and last reporting day the warehouse holds requests or reported figures for."""
    if not (relation_exists(con, "requests") and relation_exists(con, "quota_daily")):
        return None
    first, last = con.execute(  # the days of requests from the list of its day files, not from every row
        "SELECT min(d), max(d) FROM (SELECT usage_date AS d FROM warehouse_files WHERE relation = 'requests' "
        "UNION ALL SELECT usage_date FROM quota_daily)"
    ).fetchone()
    return (first, last) if first else None


def dry_run(warehouse_path: Path, lake_root: Path, prices_path: Path, key_owners_path: Path,
            tolerance_usd: float, tolerance_pct: float, zone: str = "UTC",
            sources: Sequence[str] = PRICE_SOURCES) -> tuple[tuple[date, date] | None, list[PriceDelta]]:
    """(history window, changes per month and model); the warehouse itself is not touched. `zone`:
    the reporting zone (COMET_LEDGER_TIMEZONE); `sources`: the price sources to estimate with
    (COMET_LEDGER_PRICE_SOURCES, or another choice to see what it would change)."""
    with scratch(warehouse_path, zone=zone) as con:
        window = history(con)
        if window is None:
            return None, []
        con.execute(f"CREATE TEMP TABLE before_estimates AS {_ESTIMATES}")
        load_config(con, prices_path, key_owners_path, sources)
        rebuild_window(con, lake_root, window[0], window[1], tolerance_usd, tolerance_pct)
        rows = con.execute(f"""
            WITH after_estimates AS ({_ESTIMATES})
            SELECT coalesce(a.month, b.month), coalesce(a.model, b.model), b.estimated, a.estimated,
                   coalesce(b.unpriced, 0), coalesce(a.unpriced, 0)
            FROM after_estimates AS a FULL OUTER JOIN before_estimates AS b USING (month, model)
            WHERE a.estimated IS DISTINCT FROM b.estimated OR a.unpriced IS DISTINCT FROM b.unpriced
            ORDER BY 1, 2
        """).fetchall()
    changes = [PriceDelta(m, model, before, after, ub, ua) for m, model, before, after, ub, ua in rows
               if before is None or after is None or abs(after - before) > 1e-9 or ub != ua]
    return window, changes
