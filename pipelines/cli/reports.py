"""The commands that read or check what was pulled: `review` (the month's evidence pack),
`export focus` (FOCUS 1.2), `reprice` (history recomputed after a price or owner change) and
`smoke-test`, with the two steps the demo shares: building a review pack and recording a smoke test;
and `open-latest` (the latest warehouse published to an object storage lake, opened read-only).
"""

from __future__ import annotations

import argparse
import sys

from pipelines.lib.settings import ConfigError, Settings


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipelines.lib.review_pack.period import parse_month

    if parse_month(args.month, settings.timezone).last_day < settings.start_date:
        raise ValueError(f"month {args.month} ends before the first reporting day, COMET_LEDGER_START_DATE "
                         f"({settings.start_date}): there is nothing to review")
    result = build_review_pack(settings, args.month)
    if args.json:
        print(json.dumps({"path": str(result.path), "files": result.files, "totals": result.totals,
                          "coverage": result.coverage}, indent=2, sort_keys=True, default=str))
    else:
        print(f"review pack for {args.month}{' (partial month)' if result.partial else ''}: {result.path}")
        print(f"  {result.coverage}")
        print(f"  {result.flagged_key_days} flagged key-day(s); "
              + ("anomaly detection has not run" if result.anomalies is None else f"{result.anomalies} anomaly finding(s)"))
        for name in sorted(result.files):
            print(f"  {name}")
    return 0


def cmd_export_focus(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.lib import clock, focus

    result = focus.export_month(settings.warehouse_path, args.month, settings.reports, timezone=settings.timezone,
                                now=clock.now(), partial=args.partial)
    if args.json:
        import json

        print(json.dumps({"path": str(result.path), "month": result.month, "partial": result.partial,
                          "rows": result.rows, "billed_cost_usd": format(result.billed_cost_usd, "f"),
                          "note": result.note, "files": result.files}, indent=2, sort_keys=True))
        return 0
    print(f"FOCUS {focus.FOCUS_VERSION} export for {args.month}: {result.path}")
    print(f"  {result.note}")
    print(f"  BilledCost total: ${result.billed_cost_usd}")
    for name in sorted(result.files):
        print(f"  {name}")
    return 0


def cmd_reprice(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipelines import runs
    from pipelines.lib.prices.reprice import dry_run

    if args.sources is not None and not args.dry_run:
        raise ConfigError("reprice --sources shows a change of price sources and needs --dry-run; to apply one, "
                          "set COMET_LEDGER_PRICE_SOURCES and run comet-ledger reprice")
    sources = args.sources if args.sources is not None else settings.price_sources
    window, changes = dry_run(settings.warehouse_path, settings.lake, settings.prices_path, settings.key_owners_path,
                              settings.tolerance_usd, settings.tolerance_pct, settings.timezone, sources)
    if window is None:
        print("the warehouse holds no history yet: nothing to re-price", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps([{"month": c.month.isoformat(), "model": c.model, "before_usd": c.before_usd,
                           "after_usd": c.after_usd, "delta_usd": c.delta_usd, "unpriced_before": c.unpriced_before,
                           "unpriced_after": c.unpriced_after} for c in changes], indent=2))
    else:
        print(f"re-pricing {window[0]} .. {window[1]} with price sources {','.join(sources)}"
              + (f" (config: {settings.prices_path})" if "config" in sources else ""))
        if not changes:
            print("no estimated cost changes")
        for c in changes:
            before = "unpriced" if c.before_usd is None else f"{c.before_usd:.6f}"
            after = "unpriced" if c.after_usd is None else f"{c.after_usd:.6f}"
            print(f"  {c.month:%Y-%m}  {c.model:<32} {before:>14} -> {after:>14}  ({c.delta_usd:+.6f} USD)")
        print(f"total change: {sum(c.delta_usd for c in changes):+.6f} USD")
    if args.dry_run:
        print("dry run: nothing was written", file=sys.stderr)
        return 0
    runs.run_range(settings, window[0], window[1], job_name="reconciliation_rebuild")
    print(f"re-priced {window[0]} .. {window[1]} in {settings.warehouse_path}", file=sys.stderr)
    return 0


def cmd_smoke_test(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.lib import smoke_test
    from pipelines.lib.cometapi.http import RetryPolicy

    result = smoke_test.run_from_settings(settings, reviewer=args.reviewer, chat=args.chat,
                                          known_active_range=args.known_active_range,
                                          policy=RetryPolicy(unreachable_attempts=1))
    record_smoke_test(settings, result)
    print(result.to_json() if args.json else result.summary())
    return result.exit_code


def build_review_pack(settings: Settings, month: str):
    """Write the month's pack and record it in the Dagster instance as the `reports/review_pack`
    partition it is (so the UI shows it); returns the PackResult."""
    from pipelines import runs
    from pipelines.lib import clock
    from pipelines.lib.review_pack import build_pack

    pack = build_pack(settings.warehouse_path, settings.lake, settings.inbox, month, settings.reports,
                      timezone=settings.timezone, built_at=clock.now())
    if runs.record_review_pack(settings, pack) is None:
        print(f"note: {month} is not a partition of reports/review_pack (COMET_LEDGER_START_DATE "
              f"{settings.start_date}): the pack is not recorded in Dagster", file=sys.stderr)
    return pack


def record_smoke_test(settings: Settings, result) -> None:
    """Store a smoke test's row in `smoke_tests` and record it in the Dagster instance."""
    from pipelines import runs
    from pipelines.lib import smoke_test

    smoke_test.record(settings.warehouse_path, result)
    runs.record_smoke_test(settings, result)


def cmd_open_latest(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.lib import lake
    from pipelines.lib.warehouse.copies import open_latest

    store = lake.object_lake(settings.lake)
    if store is None:
        raise ConfigError("open-latest reads the object storage lake: set COMET_LEDGER_LAKE_URL=s3://bucket/prefix")
    path, manifest = open_latest(store, args.to)
    print(f"latest published warehouse ({manifest['version']}) in {path}; open it read-only: "
          f"duckdb.connect('{path}', read_only=True)", file=sys.stderr)
    if args.sql:
        import duckdb

        with duckdb.connect(str(path), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            for row in con.execute(args.sql).fetchall():
                print("\t".join("" if v is None else str(v) for v in row))
    else:
        print(path)
    return 0
