"""Ledger-observed prices: what deriving them adds to the reconciliation step (issue 21).

    .venv/bin/python bench/ledger_prices.py --days 365 --per-day 100000 --runs 1

The lake is bench/warehouse.py's synthetic one (cached under bench/out/, its generation not timed):
--per-day client-logged requests a day and a gateway consume row for 99.5 % of them, every row with
the ratios the gateway applied. On an empty warehouse, the config load and then the reconciliation of
the whole history in one window (`reconciliation.rebuild_window`, a month at a time, as a backfill or
a re-price does) run --runs times; every SQL model's time is recorded on the way. The models that
exist for the ledger and catalog prices (`LEDGER_PRICE_MODELS`: the quota check, the ledger's price
days, the catalog snapshots and the `prices` rebuild after each month) are set against the whole
step; the result is printed as JSON. Times are CPU seconds of the process (DuckDB's threads included;
on a shared machine wall time mostly measures waiting for a core), the step's wall time beside them.
Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

LEDGER_PRICE_MODELS = ("price_observations", "catalog_snapshot_prices", "stg_ledger_units", "ledger_price_days",
                       "ledger_quota_mismatches", "prices")


def one_run(lake_cache: Path, days: int) -> dict:
    import warehouse as bench  # bench/warehouse.py

    from pipelines.lib import reconciliation
    from pipelines.lib.quota import lake as quota_lake
    from pipelines.lib.warehouse import publish

    seconds: dict[str, float] = defaultdict(float)
    real_run_model = reconciliation.run_model

    def timed(con, name, params):
        started = time.process_time()
        try:
            return real_run_model(con, name, params)
        finally:
            seconds[name] += time.process_time() - started

    with tempfile.TemporaryDirectory(dir=bench.OUT) as scratch:
        home = Path(scratch) / "home"
        bench.link_lake(lake_cache, days, home)
        settings = bench.settings_for(home)
        first, last = bench.day_of(0), bench.day_of(days - 1)
        reconciliation.run_model = timed
        try:
            with publish(settings.warehouse_path) as con:  # what the reconciliation reads besides the lake
                qp = quota_lake.model_params(settings.lake, first, last)
                for model in ("stg_quota_pulls", "stg_quota_daily", "quota_daily", "quota_restatements"):
                    real_run_model(con, model, qp)
                reconciliation.load_config(con, settings.prices_path, settings.key_owners_path)
            started, wall = time.process_time(), time.perf_counter()
            with publish(settings.warehouse_path, zone=settings.timezone) as con:
                reconciliation.rebuild_window(con, settings.lake, first, last, settings.tolerance_usd,
                                              settings.tolerance_pct)
                step, wall = time.process_time() - started, time.perf_counter() - wall
                price_days, checked, mismatched = con.execute(
                    "SELECT count(*), sum(checked_requests), sum(mismatched_requests) FROM ledger_price_days"
                ).fetchone()
        finally:
            reconciliation.run_model = real_run_model
    ledger = sum(seconds[m] for m in LEDGER_PRICE_MODELS)
    return {"step_cpu_s": round(step, 2), "step_wall_s": round(wall, 2), "ledger_prices_s": round(ledger, 2),
            "added_pct": round(100 * ledger / (step - ledger), 1),
            "per_model_s": {m: round(seconds[m], 2) for m in LEDGER_PRICE_MODELS},
            "ledger_price_days": price_days, "checked_rows": checked, "mismatched_rows": mismatched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    import warehouse as bench

    bench.OUT.mkdir(parents=True, exist_ok=True)
    cache = bench.generate_lake(args.days, args.per_day)
    results = [one_run(cache, args.days) for _ in range(args.runs)]
    for r in results:
        print(json.dumps(r), flush=True)
    print(json.dumps({"days": args.days, "per_day": args.per_day, "runs": args.runs,
                      "median_step_cpu_s": statistics.median(r["step_cpu_s"] for r in results),
                      "median_ledger_prices_s": statistics.median(r["ledger_prices_s"] for r in results),
                      "median_added_pct": statistics.median(r["added_pct"] for r in results)}))
    shutil.rmtree(bench.OUT / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
