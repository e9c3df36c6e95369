"""Which day boundary CometAPI's `daily_quota` uses (UTC, UTC+8, the configured zone), read off the data.

Nothing documents it, so it is inferred: `sql/core/service_day_boundary.sql` sums the gateway ledger
per key and day under each candidate boundary and compares the sums with `daily_quota` key-day by
key-day, over the ledger's latest `WINDOW_DAYS` UTC days. `verdict` says in one line what the
evidence shows; the Dagster asset check, the smoke test and the evidence pack all print that line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.warehouse import relation_exists, run_model

MODEL = "service_day_boundary"
WINDOW_DAYS = 31


def build(con: duckdb.DuckDBPyConnection, lake_root: Path, inferred_at: datetime) -> None:
    """(Re)build `service_day_boundary` from the ledger's latest WINDOW_DAYS UTC days and `quota_daily`.
    `con` is bound to the reporting zone (`warehouse.publish(zone=...)`)."""
    days = lake_datasets.GATEWAY_LOGS.partition_values(lake_root)[-WINDOW_DAYS:]
    files = lake_datasets.GATEWAY_LOGS.files_and_empty(lake_root, days)
    run_model(con, MODEL, {
        "gateway_log_files": files,
        "first_utc": date.fromisoformat(days[0]) if days else None,
        "last_utc": date.fromisoformat(days[-1]) if days else None,
        "inferred_at": inferred_at,
    })


@dataclass(frozen=True)
class Candidate:
    candidate: str
    zone: str
    is_configured: bool
    compared: int
    matched: int
    is_best_fit: bool


@dataclass(frozen=True)
class Verdict:
    configured: str | None
    candidates: tuple[Candidate, ...]

    @property
    def inferable(self) -> bool:
        return any(c.is_best_fit for c in self.candidates)

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.is_best_fit), None)

    @property
    def configured_fits(self) -> bool:
        """True unless the evidence shows another boundary fitting better than the configured zone."""
        best = self.best
        if best is None:
            return True
        mine = next((c for c in self.candidates if c.is_configured), None)
        return mine is not None and mine.matched >= best.matched

    def evidence(self) -> str:
        return "; ".join(f"{c.candidate}: {c.matched} of {c.compared} key-days match" for c in self.candidates)

    def line(self) -> str:
        """One line for a person: what fits, with the numbers."""
        if not self.inferable:
            return ("CometAPI's day boundary cannot be inferred: no gateway ledger to compare daily_quota with "
                    "(set COMETAPI_ACCESS_TOKEN)")
        best = self.best
        if self.configured_fits:
            return (f"CometAPI's daily_quota days fit the configured zone {self.configured} "
                    f"({self.evidence()})")
        return (f"CometAPI's daily_quota days fit {best.candidate} best, not the configured zone {self.configured}: "
                f"{self.evidence()}; set COMET_LEDGER_TIMEZONE to {best.zone} to reconcile the same hours")


def verdict(con: duckdb.DuckDBPyConnection) -> Verdict | None:
    """What `service_day_boundary` shows; None when it was never built."""
    if not relation_exists(con, MODEL):
        return None
    rows = con.execute(f"SELECT candidate, zone, is_configured, key_days_compared, key_days_matched, is_best_fit "
                       f"FROM {MODEL} ORDER BY is_configured DESC, candidate").fetchall()
    configured = next((zone for _, zone, mine, *_ in rows if mine), None)
    return Verdict(configured, tuple(Candidate(*row) for row in rows))


def read_verdict(warehouse_path: Path) -> Verdict | None:
    """`verdict` of the published warehouse (read-only); None without one."""
    if not Path(warehouse_path).exists():
        return None
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return verdict(con)
