"""`comet-ledger`: the command line.

Every failure ends in one line on stderr (`comet-ledger: error: ...`) and a non-zero exit status;
no secret is ever printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

from pipelines.lib.redact import redact
from pipelines.lib.settings import ConfigError, Settings, load_settings

PROG = "comet-ledger"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        _load_dotenv()
        settings = load_settings(env=os.environ)
        return args.handler(args, settings)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        secrets = settings.secrets() if settings else _env_secrets()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{PROG}: error: {redact(reason, secrets)}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, ValueError)) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Prove what your CometAPI traffic cost: pull the gateway's figures, land them as Parquet, "
        "reconcile them in DuckDB. Configuration comes from the environment (and .env); see README.md.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline against the embedded simulator and print the result",
                          description="Start the CometAPI simulator on a free loopback port, backfill the last N "
                          "days into COMET_LEDGER_HOME, re-pull the latest days, and print reported spend per key.")
    demo.add_argument("--days", type=_positive_int, default=30, help="days of history to backfill (default 30)")
    demo.add_argument("--seed", type=int, default=7, help="simulator traffic seed (default 7)")
    demo.set_defaults(handler=cmd_demo)

    run = sub.add_parser("run", help="materialise one reporting day end to end (default: yesterday)",
                         description="Materialise one reporting day, re-pulling the days before it like the daily "
                         "schedule does so that late restatements are caught.")
    run.add_argument("--date", type=_date, help="reporting day YYYY-MM-DD (default: yesterday in COMET_LEDGER_TIMEZONE)")
    run.add_argument("--repull", type=_non_negative_int, default=3, help="days before --date to pull again (default 3)")
    run.set_defaults(handler=cmd_run)

    backfill = sub.add_parser("backfill", help="materialise a date range (inclusive), with progress; resumable",
                              description="Materialise every reporting day from --start to --end, one query call per "
                              "chunk. An interrupted backfill resumes where it stopped; a finished one re-pulls.")
    backfill.add_argument("--start", type=_date, required=True, help="first reporting day YYYY-MM-DD")
    backfill.add_argument("--end", type=_date, required=True, help="last reporting day YYYY-MM-DD (inclusive)")
    backfill.add_argument("--restart", action="store_true", help="ignore an interrupted backfill's progress")
    backfill.set_defaults(handler=cmd_backfill)

    review = sub.add_parser("review", help="write the budget-review evidence pack for a month",
                            description="Write $COMET_LEDGER_HOME/reports/review-YYYY-MM/ from the warehouse: the "
                            "query-service export, a sample of raw responses, reconciliation.md/.html with charts, "
                            "and manifest.json. Re-running replaces the pack.")
    review.add_argument("--month", type=_month, required=True, help="the month, YYYY-MM")
    review.add_argument("--json", action="store_true", help="print the pack's manifest figures as JSON")
    review.set_defaults(handler=cmd_review)

    reprice = sub.add_parser("reprice", help="recompute history after prices.csv or key_owners.csv changed",
                             description="Recompute every reporting day in the warehouse with the current price and "
                             "owner files. --dry-run shows the change in estimated cost per month and model and "
                             "writes nothing.")
    reprice.add_argument("--dry-run", action="store_true", help="show the changes only; write nothing")
    reprice.add_argument("--json", action="store_true", help="print the changes as JSON")
    reprice.set_defaults(handler=cmd_reprice)

    smoke = sub.add_parser("smoke-test", help="check the API before trusting it for a review; record the result",
                           description="The seed article's smoke test: totals present, daily_quota for a range with "
                           "activity, a malformed date refused, an empty range empty, and the query key's identity. "
                           "Records the result in smoke_tests; exit status 1 when it fails.")
    smoke.add_argument("--chat", action="store_true",
                       help="also make one minimal chat completion (costs a fraction of a cent on the real service)")
    smoke.add_argument("--reviewer", help="who ran it (stored with the result)")
    smoke.add_argument("--known-active-range", type=_date_range, metavar="D1..D2",
                       help="days that had spend, e.g. 2026-11-01..2026-11-07 (default: the last 7 days)")
    smoke.add_argument("--json", action="store_true", help="print the result as JSON")
    smoke.set_defaults(handler=cmd_smoke_test)

    simulate = sub.add_parser("simulate", help="serve the CometAPI simulator in the foreground",
                              description="Serve the embedded CometAPI simulator on 127.0.0.1 until interrupted.")
    simulate.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (default 8787; 0 = any free port)")
    simulate.add_argument("--seed", type=int, default=7, help="traffic seed (default 7)")
    simulate.add_argument("--days", type=_positive_int, default=30, help="days of traffic ending yesterday (default 30)")
    simulate.add_argument("--inbox", help="also write the matching client request logs into this folder")
    simulate.add_argument("--fault", action="append", default=[], metavar="KIND",
                          help="switch on a fault for every request (e.g. maintenance, accept_malformed_dates); repeatable")
    simulate.set_defaults(handler=cmd_simulate)
    dev = sub.add_parser("dev", help="start the Dagster UI on the same data (against the simulator unless configured)",
                         description="Run `dagster dev -w workspace.yaml`. Without COMETAPI_KEY in the environment, "
                         "the embedded simulator is started and the UI's runs talk to it.")
    dev.add_argument("--simulator", action=argparse.BooleanOptionalAction, default=None,
                     help="force the simulator on or off (default: on when COMETAPI_KEY is unset)")
    dev.add_argument("--port", type=int, default=3000, help="UI port (default 3000)")
    dev.set_defaults(handler=cmd_dev)
    return parser


# --- commands -----------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs

    _check_before_running(settings)
    day = args.date or yesterday(settings)
    first = max(settings.start_date, day - timedelta(days=args.repull))
    print(f"materialising {first} .. {day} (re-pulling {(day - first).days} earlier day(s))", file=sys.stderr)
    runs.run_range(settings, first, day)
    print_quota_table(settings, first, day)
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs

    if args.end < args.start:
        raise ValueError(f"--end {args.end} is before --start {args.start}")
    _check_before_running(settings)
    ran, skipped = _backfill_with_progress(settings, args.start, args.end, restart=args.restart)
    if skipped:
        print(f"resumed: {skipped} chunk(s) were already done, {ran} run now", file=sys.stderr)
    print_quota_table(settings, args.start, args.end)
    return 0


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    import json
    from datetime import UTC

    from pipelines.lib.review_pack import build_pack

    result = build_pack(settings.warehouse_path, settings.lake, settings.inbox, args.month, settings.reports,
                        timezone=settings.timezone, built_at=datetime.now(UTC))
    if args.json:
        print(json.dumps({"path": str(result.path), "files": result.files, "totals": result.totals,
                          "coverage": result.coverage}, indent=2, sort_keys=True, default=str))
    else:
        print(f"review pack for {args.month}: {result.path}")
        print(f"  {result.coverage}")
        print(f"  {result.flagged_key_days} flagged key-day(s); "
              + ("anomaly detection has not run" if result.anomalies is None else f"{result.anomalies} anomaly finding(s)"))
        for name in sorted(result.files):
            print(f"  {name}")
    return 0


def cmd_reprice(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipelines import runs
    from pipelines.lib.reprice import dry_run

    window, changes = dry_run(settings.warehouse_path, settings.lake, settings.prices_path, settings.key_owners_path,
                              settings.tolerance_usd, settings.tolerance_pct)
    if window is None:
        print("the warehouse holds no history yet: nothing to re-price", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps([{"month": c.month.isoformat(), "model": c.model, "before_usd": c.before_usd,
                           "after_usd": c.after_usd, "delta_usd": c.delta_usd, "unpriced_before": c.unpriced_before,
                           "unpriced_after": c.unpriced_after} for c in changes], indent=2))
    else:
        print(f"re-pricing {window[0]} .. {window[1]} with {settings.prices_path}")
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

    result = smoke_test.run_from_settings(settings, reviewer=args.reviewer, chat=args.chat,
                                          known_active_range=args.known_active_range)
    smoke_test.record(settings.warehouse_path, result)
    print(result.to_json() if args.json else result.summary())
    return result.exit_code


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import threading
    from pathlib import Path

    from pipelines.lib.simulator.inbox import write_inbox
    from pipelines.lib.simulator.server import SimulatorServer
    from pipelines.lib.simulator.traffic import generate_traffic

    last = yesterday(settings)
    traffic = generate_traffic(seed=args.seed, start=last - timedelta(days=args.days - 1), days=args.days)
    if args.inbox:
        written = write_inbox(traffic, Path(args.inbox))
        print(f"wrote client request logs to {args.inbox}: {written}", file=sys.stderr)
    server = SimulatorServer(traffic, port=args.port)
    for kind in args.fault:
        server.faults.add(kind, times=None)
    with server:
        print(f"CometAPI simulator on {server.url} ({args.days} days of traffic ending {last})")
        print(f"  COMETAPI_QUERY_URL={server.url}\n  COMETAPI_API_URL={server.url}")
        print(f"  COMETAPI_KEY={server.api_key}\n  COMETAPI_ACCESS_TOKEN={server.access_token}")
        print("  (simulator credentials, not real secrets)  Ctrl-C stops it.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("simulator stopped", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.lib.simulator.inbox import write_inbox
    from pipelines.lib.simulator.server import SimulatorServer
    from pipelines.lib.simulator.traffic import generate_traffic

    last = yesterday(settings)
    first = last - timedelta(days=args.days - 1)
    if first < settings.start_date:
        settings = _replace(settings, start_date=first)
    traffic = generate_traffic(seed=args.seed, start=first, days=args.days)
    settings = _demo_config(settings, first, args.days)
    written = write_inbox(traffic, settings.inbox)
    print(f"client request logs in {settings.inbox}: {written['files']} files, {written['lines']} lines", file=sys.stderr)
    with SimulatorServer(traffic) as server:
        if _restatement_already_pulled(settings, traffic):
            server.mark_restated()  # a re-run continues the same simulated world
        _use_simulator(server)
        settings = _replace(settings, query_url=server.url, api_url=server.url, api_key=server.api_key,
                            access_token=server.access_token)
        print(f"simulator on {server.url}; data home {settings.home}", file=sys.stderr)
        _backfill_with_progress(settings, first, last, restart=True)
        from pipelines import runs

        repull_first = max(first, last - timedelta(days=3))
        print(f"daily run for {last} (re-pulls {repull_first} .. {last})", file=sys.stderr)
        runs.run_range(settings, repull_first, last)
        truth = {k: v for k, v in server.truth().items() if first <= k[0] <= last}
    totals = print_quota_table(settings, first, last)
    print_restatements(settings, first, last)
    print_request_log_summary(settings)
    print_reconciliation(settings, first, last)
    from datetime import UTC

    from pipelines.lib.review_pack import build_pack

    pack = build_pack(settings.warehouse_path, settings.lake, settings.inbox, f"{last:%Y-%m}", settings.reports,
                      timezone=settings.timezone, built_at=datetime.now(UTC))
    print(f"review pack: {pack.path} ({pack.coverage})")
    expected = (sum((v[0] for v in truth.values()), Decimal(0)), sum(v[1] for v in truth.values()), len(truth))
    if totals != expected:
        raise RuntimeError(f"warehouse totals {totals} differ from the simulator's {expected}")
    print(f"matches the simulator exactly: {expected[2]} key-days, {expected[0]} USD, {expected[1]} requests")
    return 0


def _demo_config(settings: Settings, first: date, days: int) -> Settings:
    """The simulated gateway bills by its own price list (with a mid-period change): unless
    COMET_LEDGER_PRICES is set, the demo prices with that list. Key owners default to the shipped file."""
    from pipelines.lib.simulator.catalog import prices_csv

    if not os.environ.get("COMET_LEDGER_PRICES"):
        path = settings.home / "demo" / "simulator-prices.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prices_csv(first, days))
        settings = _replace(settings, prices_path=path)
    if not settings.key_owners_path.exists() and not os.environ.get("COMET_LEDGER_KEY_OWNERS"):
        from pipelines.lib.config_tables import shipped_config

        settings = _replace(settings, key_owners_path=shipped_config("key_owners.csv"))
    print(f"prices: {settings.prices_path}; key owners: {settings.key_owners_path}", file=sys.stderr)
    return settings


def _check_before_running(settings: Settings) -> None:
    """Fail fast, before any API call, on what would stop a run halfway."""
    from pipelines.lib.config_tables import load_key_owners, load_prices

    settings.require_api_key()
    load_prices(settings.prices_path)
    load_key_owners(settings.key_owners_path)


def _restatement_already_pulled(settings: Settings, traffic) -> bool:
    """Whether an earlier demo run in this data home already pulled the planted restatement day."""
    from pipelines.lib import lake

    day = traffic.planted["restatement"]["date"]
    return bool(lake.files(settings.lake, "quota_daily", "usage_date", [day]))


def _use_simulator(server) -> None:
    """Point this process's configuration at a running simulator (its credentials are not secrets)."""
    os.environ.update(COMETAPI_QUERY_URL=server.url, COMETAPI_API_URL=server.url, COMETAPI_KEY=server.api_key,
                      COMETAPI_ACCESS_TOKEN=server.access_token)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess
    from contextlib import ExitStack
    from pathlib import Path

    from pipelines.lib.simulator.inbox import write_inbox
    from pipelines.lib.simulator.server import SimulatorServer
    from pipelines.lib.simulator.traffic import generate_traffic
    from pipelines.runs import ensure_dagster_home

    use_simulator = args.simulator if args.simulator is not None else not settings.api_key
    env = dict(os.environ, COMET_LEDGER_HOME=str(settings.home))
    env.setdefault("DAGSTER_HOME", str(settings.home / "dagster"))
    ensure_dagster_home(Path(env["DAGSTER_HOME"]))
    with ExitStack() as stack:
        if use_simulator:
            last = yesterday(settings)
            traffic = generate_traffic(start=last - timedelta(days=29), days=30)
            write_inbox(traffic, settings.inbox)
            server = stack.enter_context(SimulatorServer(traffic))
            env.update(COMETAPI_QUERY_URL=server.url, COMETAPI_API_URL=server.url, COMETAPI_KEY=server.api_key,
                       COMETAPI_ACCESS_TOKEN=server.access_token)
            print(f"simulator on {server.url}", file=sys.stderr)
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(args.port)]
        return subprocess.call(command, env=env)


# --- output -------------------------------------------------------------------------------------

def print_quota_table(settings: Settings, first: date, last: date) -> tuple[Decimal, int, int]:
    """Per-key reported spend and requests for [first, last]; returns (USD, requests, key-days)."""
    from pipelines.lib.warehouse import connect_readonly

    with connect_readonly(settings.warehouse_path) as con:
        rows = con.execute(
            """
            SELECT key_name, count(*) AS days, sum(reported_cost_usd) AS cost, sum(reported_requests) AS requests
            FROM quota_daily WHERE usage_date BETWEEN $first AND $last
            GROUP BY key_name ORDER BY key_name
            """,
            {"first": first, "last": last},
        ).fetchall()
    cost = sum((r[2] for r in rows), Decimal(0))
    requests = sum(r[3] for r in rows)
    key_days = sum(r[1] for r in rows)
    width = max([len("key_name"), len("total")] + [len(r[0]) for r in rows])
    print(f"reported by CometAPI, {first} .. {last} ({settings.timezone} days)")
    print(f"{'key_name':<{width}}  {'days':>4}  {'reported_usd':>14}  {'requests':>9}")
    for key, days, key_cost, key_requests in rows:
        print(f"{key:<{width}}  {days:>4}  {key_cost:>14.6f}  {key_requests:>9}")
    print(f"{'total':<{width}}  {key_days:>4}  {cost:>14.6f}  {requests:>9}")
    return cost, requests, key_days


def print_restatements(settings: Settings, first: date, last: date) -> None:
    from pipelines.lib.warehouse import connect_readonly

    with connect_readonly(settings.warehouse_path) as con:
        rows = con.execute(
            "SELECT usage_date, key_name, previous_cost_usd, new_cost_usd FROM quota_restatements "
            "WHERE usage_date BETWEEN $first AND $last ORDER BY pulled_at DESC LIMIT 5",
            {"first": first, "last": last},
        ).fetchall()
    for day, key, before, after in rows:
        print(f"restated: {day} {key}: {before} -> {after} USD")


def print_request_log_summary(settings: Settings) -> None:
    from pipelines.lib.warehouse import connect_readonly

    with connect_readonly(settings.warehouse_path) as con:
        files, read, accepted, rejected, duplicates = con.execute(
            "SELECT count(*), coalesce(sum(lines_read), 0), coalesce(sum(accepted), 0), coalesce(sum(rejected), 0), "
            "coalesce(sum(duplicates), 0) FROM inbox_files").fetchone()
    print(f"client request logs: {files} files, {read} lines read = {accepted} accepted + {rejected} rejected "
          f"+ {duplicates} duplicates")


def print_reconciliation(settings: Settings, first: date, last: date) -> None:
    from pipelines.lib.warehouse import connect_readonly

    window = {"first": first, "last": last}
    with connect_readonly(settings.warehouse_path) as con:
        statuses = con.execute(
            "SELECT status, count(*), sum(reported_cost_usd), sum(estimated_cost_usd) FROM recon_key_daily "
            "WHERE usage_date BETWEEN $first AND $last GROUP BY ALL ORDER BY count(*) DESC, status", window).fetchall()
        flagged = con.execute(
            "SELECT usage_date, key_name, status, explanation FROM recon_key_daily "
            "WHERE usage_date BETWEEN $first AND $last AND status NOT IN ('matched', 'within_tolerance') "
            "ORDER BY usage_date, key_name", window).fetchall()
        coverage = con.execute(
            "SELECT 100 * sum(estimated_cost_usd) / nullif(sum(reported_cost_usd), 0) FROM recon_key_daily "
            "WHERE usage_date BETWEEN $first AND $last", window).fetchone()[0]
    print("reconciliation per key-day (status: key-days, reported USD, estimated USD)")
    for status, key_days, reported, estimated in statuses:
        print(f"  {status:<17} {key_days:>4}  {reported:>12.6f}  {estimated:>12.6f}")
    print(f"  coverage: {coverage or 0:.2f} % of reported spend explained by priced, logged requests")
    for day, key, status, explanation in flagged:
        print(f"  {day} {key} {status}: {explanation}")


def _backfill_with_progress(settings: Settings, first: date, last: date, *, restart: bool) -> tuple[int, int]:
    from tqdm import tqdm

    from pipelines import runs

    total_days = (last - first).days + 1
    with tqdm(total=total_days, unit="day", desc="backfill", file=sys.stderr, disable=None) as bar:
        def advance(chunk: runs.Chunk, index: int, count: int) -> None:
            bar.set_postfix_str(chunk.label)
            bar.update((chunk.last - chunk.first).days + 1)

        return runs.backfill(settings, first, last, restart=restart, on_progress=advance)


# --- helpers ------------------------------------------------------------------------------------

def yesterday(settings: Settings) -> date:
    return datetime.now(tz=settings.tz).date() - timedelta(days=1)


def _replace(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def _load_dotenv() -> None:
    from pathlib import Path

    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)


def _env_secrets() -> list[str]:
    return [v for k in ("COMETAPI_KEY", "COMETAPI_ACCESS_TOKEN") if (v := os.environ.get(k))]


def _date(raw: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date in YYYY-MM-DD form") from None


def _month(raw: str) -> str:
    try:
        if len(raw) != 7:
            raise ValueError
        date.fromisoformat(raw + "-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a month in YYYY-MM form") from None
    return raw


def _date_range(raw: str) -> tuple[date, date]:
    first, sep, last = raw.partition("..")
    if not sep:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a range like 2026-11-01..2026-11-07")
    start, end = _date(first), _date(last)
    if end < start:
        raise argparse.ArgumentTypeError(f"{raw!r} ends before it starts")
    return start, end


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 1")
    return int(raw)


def _non_negative_int(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 0")
    return int(raw)


if __name__ == "__main__":
    sys.exit(main())
