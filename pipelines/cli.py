"""`comet-ledger`: the command line.

Every failure ends in one line on stderr (`comet-ledger: error: ...`) and a non-zero exit status;
no secret is ever printed. A SIGTERM (systemd stopping a unit, `kill`, a CI timeout) ends a command
like Ctrl-C does: what was being written is abandoned unpublished, and one line says it was stopped
(exit status 143).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from pipelines.lib.redact import redact
from pipelines.lib.settings import ConfigError, Settings, env_secrets, load_settings

PROG = "comet-ledger"


class Stopped(KeyboardInterrupt):
    """The process was sent SIGTERM. A KeyboardInterrupt, so every `finally` and clean-up that Ctrl-C
    runs (a warehouse build removed, a temporary file deleted) runs for it too."""


STOPPED = "stopped (SIGTERM); nothing half-written was published; re-run the same command to resume"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, with its usage, not the top-level one
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    settings: Settings | None = None
    watch = _SigtermWatch()
    try:
        _load_dotenv()
        settings = load_settings(env=os.environ)
        settings.apply_umask()
        return args.handler(args, settings)
    except KeyboardInterrupt:
        if watch.received():
            print(f"{PROG}: {STOPPED}", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"{PROG}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        if watch.received():  # e.g. Dagster turned the signal into a failed step
            print(f"{PROG}: {STOPPED}", file=sys.stderr)
            return 128 + signal.SIGTERM
        from pipelines.lib import disk

        secrets = settings.secrets() if settings else env_secrets(os.environ)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = disk.explain(str(exc)) or reason  # e.g. Dagster's SQLite storage on a full disk
        print(f"{PROG}: error: {redact(reason, secrets)}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, ValueError)) else 1
    finally:
        watch.close()


class _SigtermWatch:
    """SIGTERM raises `Stopped` for the command's duration, and whether one arrived is known afterwards.

    Dagster installs its own handlers while a run executes (SIGTERM then interrupts the step under
    way, and the run fails with DagsterExecutionInterruptedError), so the handler alone cannot tell:
    Python's wakeup fd records the number of every signal caught, whichever handler catches it.
    Outside the main thread (where Python cannot set handlers) it does nothing."""

    def __init__(self) -> None:
        import socket

        self._previous_handler = self._previous_fd = None
        self._reader = self._writer = None
        try:
            self._previous_handler = signal.signal(signal.SIGTERM, self._stop)
        except ValueError:
            return
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._seen = False

    @staticmethod
    def _stop(signum: int, frame: object) -> None:
        raise Stopped()

    def received(self) -> bool:
        if self._reader is None:
            return False
        try:
            while data := self._reader.recv(4096):
                self._seen = self._seen or signal.SIGTERM in data
        except BlockingIOError:
            pass
        return self._seen

    def close(self) -> None:
        if self._reader is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGTERM, self._previous_handler)
        self._reader.close()
        self._writer.close()


EXAMPLES = """\
examples:
  comet-ledger demo --days 7
      the whole pipeline against the embedded simulator, in $COMET_LEDGER_HOME (default ./data)
  COMETAPI_KEY=sk-... comet-ledger backfill --start 2026-01-01 --end 2026-01-31
      the query service's figures for January, with a progress bar; re-run to resume
  comet-ledger run --json | jq .reported_usd
      yesterday (re-pulling the 3 days before), its figures as one JSON object on stdout
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Prove what your CometAPI traffic cost: pull the gateway's figures, land them as Parquet,\n"
        "reconcile them in DuckDB. Configuration comes from the environment (and .env); see README.md.\n"
        "`comet-ledger COMMAND --help` describes a command and its options.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline against the embedded simulator and print the result",
                          description="Start the CometAPI simulator on a free loopback port, backfill the last N "
                          "days into COMET_LEDGER_HOME, re-pull the latest days, and print reported spend per key, "
                          "the restatements, the reconciliation, and whether the totals equal the simulator's.")
    demo.add_argument("--days", type=_positive_int, default=30, help="days of history to backfill (default: 30)")
    demo.add_argument("--seed", type=int, default=7, help="simulator traffic seed (default: 7)")
    demo.add_argument("--json", action="store_true", help=JSON_HELP)
    demo.set_defaults(handler=cmd_demo)

    run = sub.add_parser("run", help="materialise one reporting day end to end (default: yesterday)",
                         description="Materialise one reporting day, re-pulling the days before it like the daily "
                         "schedule does so that late restatements are caught, and print reported spend per key.")
    run.add_argument("--date", type=_date, metavar="YYYY-MM-DD",
                     help="reporting day (default: yesterday in COMET_LEDGER_TIMEZONE)")
    run.add_argument("--repull", type=_non_negative_int, default=3, metavar="N",
                     help="days before --date to pull again (default: 3)")
    run.add_argument("--json", action="store_true", help=JSON_HELP)
    run.set_defaults(handler=cmd_run)

    backfill = sub.add_parser("backfill", help="materialise a date range (inclusive), with progress; resumable",
                              description="Materialise every reporting day from --start to --end, one query call per "
                              "chunk of COMET_LEDGER_CHUNK_DAYS, with a progress bar on stderr. An interrupted "
                              "backfill resumes where it stopped; a finished one re-pulls.")
    backfill.add_argument("--start", type=_date, required=True, metavar="YYYY-MM-DD",
                          help="first reporting day (required)")
    backfill.add_argument("--end", type=_date, required=True, metavar="YYYY-MM-DD",
                          help="last reporting day, inclusive (required)")
    backfill.add_argument("--restart", action="store_true",
                          help="ignore an interrupted backfill's progress and start over (default: resume)")
    backfill.add_argument("--json", action="store_true", help=JSON_HELP)
    backfill.set_defaults(handler=cmd_backfill)

    review = sub.add_parser("review", help="write the budget-review evidence pack for a month",
                            description="Write $COMET_LEDGER_HOME/reports/review-YYYY-MM/ from the warehouse: the "
                            "query-service export, a sample of raw responses, reconciliation.md/.html with charts, "
                            "and manifest.json. Re-running replaces the pack.")
    review.add_argument("--month", type=_month, required=True, metavar="YYYY-MM", help="the month (required)")
    review.add_argument("--json", action="store_true",
                        help="print the pack's manifest figures as JSON instead of text (default: text)")
    review.set_defaults(handler=cmd_review)

    export = sub.add_parser("export", help="export a month's cost in a standard format (FOCUS 1.2)",
                            description="Write a month's charges in a standard format for other tools.")
    formats = export.add_subparsers(title="formats", metavar="FORMAT", required=True,
                                    help="the format; `focus` is the one there is (required)")
    focus = formats.add_parser("focus", help="FOCUS 1.2, the FinOps Foundation's cost and usage format",
                               description="Write $COMET_LEDGER_HOME/reports/focus-YYYY-MM/: the month's charges in "
                               "FOCUS 1.2 (Parquet and CSV) and manifest.json; docs/focus.md maps every column. "
                               "Re-running replaces the folder.")
    focus.add_argument("--month", type=_month, required=True, metavar="YYYY-MM", help="the month (required)")
    focus.add_argument("--partial", action="store_true",
                       help="export a month that has not ended, marked partial in every row (default: refuse it)")
    focus.add_argument("--json", action="store_true", help=JSON_HELP)
    focus.set_defaults(handler=cmd_export_focus)

    reprice = sub.add_parser("reprice", help="recompute history after prices.csv or key_owners.csv changed",
                             description="Recompute every reporting day in the warehouse with the current price and "
                             "owner files. --dry-run shows the change in estimated cost per month and model and "
                             "writes nothing.")
    reprice.add_argument("--dry-run", action="store_true",
                         help="show the changes only; write nothing (default: show, then recompute)")
    reprice.add_argument("--json", action="store_true",
                         help="print the changes as JSON instead of text (default: text)")
    reprice.add_argument("--sources", type=_price_sources_arg, metavar="LIST",
                         help="with --dry-run: estimate with these price sources, a comma-separated subset of "
                         "config,ledger,catalog (precedence stays config > ledger > catalog), to see what a change "
                         "of source would change (default: COMET_LEDGER_PRICE_SOURCES)")
    reprice.set_defaults(handler=cmd_reprice)

    smoke = sub.add_parser("smoke-test", help="check the API before trusting it for a review; record the result",
                           description="The seed article's smoke test: totals present, daily_quota for a range with "
                           "activity, a malformed date refused, an empty range empty, and the query key's identity. "
                           "Records the result in smoke_tests; exit status 1 when it fails.")
    smoke.add_argument("--chat", action="store_true",
                       help="also make one minimal chat completion; costs a fraction of a cent on the real service "
                       "(default: off)")
    smoke.add_argument("--reviewer", metavar="NAME", help="who ran it, stored with the result (default: none)")
    smoke.add_argument("--known-active-range", type=_date_range, metavar="D1..D2",
                       help="days that had spend, e.g. 2026-11-01..2026-11-07 (default: the last 7 days)")
    smoke.add_argument("--json", action="store_true", help="print the result as JSON instead of text (default: text)")
    smoke.set_defaults(handler=cmd_smoke_test)

    simulate = sub.add_parser("simulate", help="serve the CometAPI simulator in the foreground",
                              description="Serve the embedded CometAPI simulator on 127.0.0.1 until interrupted, and "
                              "print the variables that point comet-ledger at it.")
    simulate.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1; 0 = any free port (default: 8787)")
    simulate.add_argument("--seed", type=int, default=7, help="traffic seed (default: 7)")
    simulate.add_argument("--days", type=_positive_int, default=30,
                          help="days of traffic ending yesterday (default: 30)")
    simulate.add_argument("--inbox", metavar="FOLDER",
                          help="also write the matching client request logs into this folder (default: none)")
    simulate.add_argument("--fault", action="append", default=[], metavar="KIND",
                          help="switch on a fault for every request, e.g. maintenance or accept_malformed_dates; "
                          "repeatable (default: none)")
    simulate.set_defaults(handler=cmd_simulate)
    alerts = sub.add_parser("alerts", help="send a test alert, or look for alert conditions now",
                            description="Alerts go to the channels COMET_LEDGER_ALERT_* configure (see README.md, "
                            "Alerts). The alert sensors look after every run; these commands do it by hand.")
    alert_actions = alerts.add_subparsers(title="actions", metavar="ACTION", required=True,
                                          help="test or check (required)")
    alert_test = alert_actions.add_parser("test", help="send a test message to every configured alert channel",
                                          description="Send one test message to every configured channel and print "
                                          "what each did; exit status 1 when one failed (after its retries).")
    alert_test.set_defaults(handler=cmd_alerts_test)
    alert_check = alert_actions.add_parser(
        "check", help="look for alert conditions now and send what is due (what the alert sensors do)",
        description="Compare what is wrong now (budgets, critical anomalies, a failing daily run, stale data, a "
        "failed smoke test) with the alerts table, and send one note per new or resolved alert. For hosts without "
        "the Dagster daemon: run it after `comet-ledger run`. Exit status 1 when a note could not be delivered.")
    alert_check.set_defaults(handler=cmd_alerts_check)
    dev = sub.add_parser("dev", help="start the Dagster UI on the same data (against the simulator unless configured)",
                         description="Run `dagster dev -w workspace.yaml`. Without COMETAPI_KEY in the environment, "
                         "the embedded simulator is started and the UI's runs talk to it.")
    dev.add_argument("--simulator", action=argparse.BooleanOptionalAction, default=None,
                     help="force the simulator on or off (default: on when COMETAPI_KEY is unset)")
    dev.add_argument("--port", type=int, default=3000, help="UI port (default: 3000)")
    dev.set_defaults(handler=cmd_dev)
    latest = sub.add_parser("open-latest", help="download the latest published warehouse from the object storage "
                            "lake and open it read-only", description="With COMET_LEDGER_LAKE_URL=s3://bucket/prefix "
                            "(and the AWS_* variables), every publish of the warehouse is also copied there; this "
                            "downloads the latest copy into a folder, prints where it is, and with --sql runs one "
                            "query on it, read-only.")
    latest.add_argument("--to", type=Path, default=Path("comet-ledger-latest"),
                        help="folder to download into (default: ./comet-ledger-latest); day files already there "
                        "are kept")
    latest.add_argument("--sql", help="a query to run on the copy, read-only; its rows are printed tab-separated "
                        "(default: none, the copy's path is printed)")
    latest.set_defaults(handler=cmd_open_latest)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)
    return parser


def version() -> str:
    """The installed distribution's version."""
    from importlib import metadata

    try:
        return metadata.version("comet-ledger")
    except metadata.PackageNotFoundError:
        return "0+unknown"


JSON_HELP = ("print the figures as one JSON object on stdout instead of tables (default: tables); "
             "progress and notes stay on stderr")


# --- commands -----------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs

    day = args.date or yesterday(settings)
    _check_before_running(settings, day)
    settings = settle_first_day(settings)
    if day < settings.start_date:
        raise ValueError(f"{day} is before COMET_LEDGER_START_DATE ({settings.start_date}): nothing to materialise")
    first = max(settings.start_date, day - timedelta(days=args.repull))
    print(f"materialising {first} .. {day} (re-pulling {(day - first).days} earlier day(s))", file=sys.stderr)
    result = runs.run_range(settings, first, day)
    if args.json:
        print_json({"command": "run", **window_summary(settings, first, day), "run_ids": [result.run_id]})
    else:
        print_quota_table(settings, first, day)
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs

    if args.end < args.start:
        raise ValueError(f"--end {args.end} is before --start {args.start}")
    _check_before_running(settings, args.end)
    settings = settle_first_day(settings)
    run_ids: list[str] = []
    ran, skipped = _backfill_with_progress(settings, args.start, args.end, restart=args.restart, run_ids=run_ids)
    if skipped:
        print(f"resumed: {skipped} chunk(s) were already done, {ran} run now", file=sys.stderr)
    if args.json:
        print_json({"command": "backfill", **window_summary(settings, args.start, args.end),
                    "chunks_run": ran, "chunks_skipped": skipped, "run_ids": run_ids})
    else:
        print_quota_table(settings, args.start, args.end)
    return 0


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
    from pipelines.lib.reprice import dry_run

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


def cmd_alerts_test(args: argparse.Namespace, settings: Settings) -> int:
    import socket

    from pipelines.lib.alerts.channels import LABELS, Sender, send_test

    sender = Sender(settings.alerts)
    if not sender.channels:
        raise ConfigError("no alert channel is configured: set COMET_LEDGER_ALERT_SLACK_URL, "
                          "COMET_LEDGER_ALERT_WEBHOOK_URL or COMET_LEDGER_ALERT_SMTP_HOST (README.md, Alerts)")
    results = send_test(sender, host=socket.gethostname())
    for d in results:
        print(f"{LABELS[d.channel]}: " + (f"sent ({d.attempts} attempt(s))" if d.ok
                                           else f"FAILED after {d.attempts} attempt(s): {d.error}"))
    return 0 if all(d.ok for d in results) else 1


def cmd_alerts_check(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs
    from pipelines.defs.alerts.sources import instance_conditions
    from pipelines.lib import clock
    from pipelines.lib.alerts.channels import LABELS, Sender
    from pipelines.lib.alerts.ledger import evaluate

    sender = Sender(settings.alerts)
    if not sender.channels:
        print("no alert channel is configured: alerts are recorded in the warehouse's alerts table only",
              file=sys.stderr)
    found = instance_conditions(runs.instance_for(settings), settings.timezone, settings.secrets())
    outcome = evaluate(settings.warehouse_path, sender, clock.now(), found)
    for label, alerts in (("opened", outcome.opened), ("resolved", outcome.resolved), ("expired", outcome.expired)):
        for alert in alerts:
            print(f"{label:<8}  {alert.severity:<8}  {alert.summary}")
    for alert_id, note, delivery in outcome.failed:
        print(f"not delivered: {note} note of alert {alert_id} to {LABELS.get(delivery.channel, delivery.channel)}: "
              f"{delivery.error}", file=sys.stderr)
    print(outcome.summary())
    return 1 if outcome.failed else 0


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


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import threading
    from pathlib import Path

    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

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
    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    from pipelines.lib import clock, smoke_test

    first, last = demo_window(settings, args.days)
    if settings.start_date_source != "setting" and (settings.start_date_source == "fallback"
                                                     or first < settings.start_date):
        from pipelines.lib import first_day

        first_day.record(settings.home, first_day.FirstDay(first, "demo", "the first day of the demo's traffic"))
        settings = _replace(settings, start_date=first, start_date_source="recorded")
    elif first < settings.start_date:
        settings = _replace(settings, start_date=first)
    traffic = generate_traffic(seed=args.seed, start=first, days=args.days)
    settings = _demo_config(settings, args.seed, first, args.days)
    written = write_inbox(traffic, settings.inbox)
    print(f"client request logs in {settings.inbox}: {written['files']} files, {written['lines']} lines", file=sys.stderr)
    with SimulatorServer(traffic) as server:
        if _restatement_already_pulled(settings, traffic):
            server.mark_restated()  # a re-run continues the same simulated world
        _use_simulator(server)
        settings = _replace(settings, query_url=server.url, api_url=server.url, api_key=server.api_key,
                            access_token=server.access_token)
        print(f"simulator on {server.url}; data home {settings.home}", file=sys.stderr)
        run_ids: list[str] = []
        _backfill_with_progress(settings, first, last, restart=True, run_ids=run_ids)
        from pipelines import runs

        repull_first = max(first, last - timedelta(days=3))
        print(f"daily run for {last} (re-pulls {repull_first} .. {last})", file=sys.stderr)
        run_ids.append(runs.run_range(settings, repull_first, last).run_id)
        truth = {k: v for k, v in server.truth().items() if first <= k[0] <= last}
        smoke = smoke_test.run_from_settings(settings, reviewer="comet-ledger demo")
        record_smoke_test(settings, smoke)
    # The pack to hand over is the last complete month's; the current month's, while it has days in
    # the window, is built too and labelled partial.
    this_month = clock.today(settings.tz).replace(day=1)
    pack = build_review_pack(settings, f"{this_month - timedelta(days=1):%Y-%m}")
    partial = build_review_pack(settings, f"{this_month:%Y-%m}") if last >= this_month else None
    quota = quota_rows(settings, first, last)
    totals = (sum((r[2] for r in quota), Decimal(0)), sum(r[3] for r in quota), sum(r[1] for r in quota))
    expected = (sum((v[0] for v in truth.values()), Decimal(0)), sum(v[1] for v in truth.values()), len(truth))
    if args.json:
        if totals != expected:
            raise RuntimeError(f"warehouse totals {totals} differ from the simulator's {expected}")
        if not smoke.passed:
            raise RuntimeError("the smoke test failed against the simulator: " + "; ".join(smoke.failures))
        print_json({"command": "demo", **window_summary(settings, first, last),
                    "request_logs": request_log_figures(settings),
                    "review_pack": {"month": pack.month, "path": str(pack.path), "coverage": pack.coverage},
                    "partial_review_pack": partial and {"month": partial.month, "path": str(partial.path),
                                                        "coverage": partial.coverage},
                    "smoke_test": {"passed": smoke.passed, "failures": smoke.failures},
                    "matches_simulator": True, "run_ids": run_ids})
        return 0
    print_quota_table(settings, first, last)
    print_restatements(settings, first, last)
    print_request_log_summary(settings)
    print_reconciliation(settings, first, last)
    print(f"review pack, {pack.month} (last complete month): {pack.path} ({pack.coverage})")
    if partial is not None:
        print(f"review pack, {partial.month} (partial month, to {last}): {partial.path} ({partial.coverage})")
    print(f"smoke test: {'passed' if smoke.passed else 'FAILED: ' + '; '.join(smoke.failures)} (in smoke_tests)")
    if totals != expected:
        raise RuntimeError(f"warehouse totals {totals} differ from the simulator's {expected}")
    print(f"matches the simulator exactly: {expected[2]} key-days, {expected[0]} USD, {expected[1]} requests")
    return 0 if smoke.passed else 1


def _demo_config(settings: Settings, seed: int, first: date, days: int) -> Settings:
    """Record the simulated world in the data home (`demo/world.json`), so that `comet-ledger dev`
    serves the same one. The simulated gateway bills by its own price list (with a mid-period
    change), which its ledger rows (the ratios applied) and /api/models state: unless
    COMET_LEDGER_PRICES or COMET_LEDGER_PRICE_SOURCES is set, the demo prices from those two sources
    alone, and so does every later run in this home (settings.default_price_sources), from the
    command line or the Dagster UI alike. Key owners default to the shipped file."""
    import json

    from pipelines.lib.settings import SIMULATED_WORLD, default_price_sources

    folder = settings.home / SIMULATED_WORLD.parent
    folder.mkdir(parents=True, exist_ok=True)
    _write_text(settings.home / SIMULATED_WORLD,
                json.dumps({"seed": seed, "first_day": first.isoformat(), "days": days}))
    if not os.environ.get("COMET_LEDGER_PRICE_SOURCES"):
        sources = default_price_sources(settings.home, os.environ.get("COMET_LEDGER_PRICES") or None)
        settings = _replace(settings, price_sources=tuple(sources.split(",")))
    if not settings.key_owners_path.exists() and not os.environ.get("COMET_LEDGER_KEY_OWNERS"):
        from pipelines.lib.config_tables import shipped_config

        settings = _replace(settings, key_owners_path=shipped_config("key_owners.csv"))
    if not settings.budgets_path.exists() and not settings.budgets_required:
        from pipelines.lib.config_tables import shipped_config

        settings = _replace(settings, budgets_path=shipped_config("budgets.csv"))
    print(f"prices: {', '.join(settings.price_sources)} (COMET_LEDGER_PRICE_SOURCES; config = {settings.prices_path}); "
          f"key owners: {settings.key_owners_path}", file=sys.stderr)
    return settings


def _recorded_world(settings: Settings) -> tuple[int, date, int] | None:
    """(seed, first day, days) of the simulated world this home holds, if one was recorded."""
    import json

    from pipelines.lib.settings import SIMULATED_WORLD

    path = settings.home / SIMULATED_WORLD
    if not path.is_file():
        return None
    world = json.loads(path.read_text())
    return int(world["seed"]), date.fromisoformat(world["first_day"]), int(world["days"])


def _write_text(path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_before_running(settings: Settings, last: date) -> None:
    """Fail fast, before any API call, on what would stop a run halfway (or pull a day not begun)."""
    from pipelines.lib import clock, lake
    from pipelines.lib.budgets import read_budgets
    from pipelines.lib.config_tables import load_key_owners, load_prices
    from pipelines.lib.settings import SIMULATED_PRICES

    clock.refuse_future(last, settings.timezone)
    settings.require_api_key()
    if "config" in settings.price_sources:  # without it the file is not read (sql/core/prices.sql)
        load_prices(settings.prices_path)
    load_key_owners(settings.key_owners_path)
    read_budgets(settings.budgets_path, required=settings.budgets_required)
    lake.check(settings.lake)  # the lake on object storage: reachable, credentials accepted, bucket there
    if settings.prices_path == settings.home / SIMULATED_PRICES:
        print(f"prices: {settings.prices_path}, the simulated world's list (COMET_LEDGER_PRICES chooses another)",
              file=sys.stderr)


def settle_first_day(settings: Settings) -> Settings:
    """Without COMET_LEDGER_START_DATE and before any look-up: find the first day the query service
    reports usage for (pipelines/lib/first_day.py), record it, and start the partitions there."""
    if settings.start_date_source != "fallback":
        return settings
    from pipelines.lib import clock, first_day
    from pipelines.lib.cometapi.http import RetryPolicy
    from pipelines.lib.cometapi.query import QueryClient

    today = clock.today(settings.tz)
    # a person waits for this: a refused first connection fails at once (as the run's own calls do)
    with QueryClient(settings.query_url, settings.require_api_key(),
                     policy=RetryPolicy(unreachable_attempts=1)) as client:
        pulls = client.fetch_daily(today - timedelta(days=first_day.LOOK_BACK_DAYS), today - timedelta(days=1),
                                   settings.chunk_days)
        days = sorted({entry.usage_date for pull in pulls for entry in pull.response.daily})
    found = first_day.look_up(days, today, clock.now())
    first_day.record(settings.home, found)
    print(f"first reporting day: {found.describe()}; recorded in {first_day.record_path(settings.home)}",
          file=sys.stderr)
    return _replace(settings, start_date=found.day, start_date_source="recorded")


def _restatement_already_pulled(settings: Settings, traffic) -> bool:
    """Whether an earlier demo run in this data home already pulled the planted restatement day."""
    from pipelines.lib import lake

    day = traffic.planted["restatement"]["date"]
    return bool(lake.files(settings.lake, "quota_daily", "usage_date", [day]))


def _use_simulator(server) -> None:
    """Point this process's configuration at a running simulator (its credentials are not secrets)."""
    os.environ.update(COMETAPI_QUERY_URL=server.url, COMETAPI_API_URL=server.url, COMETAPI_KEY=server.api_key,
                      COMETAPI_ACCESS_TOKEN=server.access_token)


def cmd_open_latest(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.lib import lake
    from pipelines.lib.warehouse_copies import open_latest

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


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess
    from contextlib import ExitStack
    from pathlib import Path

    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic
    from pipelines.runs import ensure_dagster_home

    use_simulator = args.simulator if args.simulator is not None else not settings.api_key
    env = dict(os.environ, COMET_LEDGER_HOME=str(settings.home))
    env.setdefault("DAGSTER_HOME", str(settings.home / "dagster"))
    ensure_dagster_home(Path(env["DAGSTER_HOME"]))
    with ExitStack() as stack:
        if use_simulator:
            # The world `comet-ledger demo` recorded in this home, else the demo's default one, recorded
            # now: either way the UI's runs see the same traffic and price it the way it is billed.
            world = _recorded_world(settings)
            if world is None:
                world = (7, yesterday(settings) - timedelta(days=29), 30)
                _demo_config(settings, *world)
            seed, first, days = world
            traffic = generate_traffic(seed=seed, start=first, days=days)
            write_inbox(traffic, settings.inbox)
            server = stack.enter_context(SimulatorServer(traffic))
            if _restatement_already_pulled(settings, traffic):
                server.mark_restated()
            env.update(COMETAPI_QUERY_URL=server.url, COMETAPI_API_URL=server.url, COMETAPI_KEY=server.api_key,
                       COMETAPI_ACCESS_TOKEN=server.access_token)
            print(f"simulator on {server.url}: {days} days of traffic from {first} (seed {seed})", file=sys.stderr)
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(args.port)]
        return subprocess.call(command, env=env)


# --- output -------------------------------------------------------------------------------------
# Each figure is read once (`*_rows`, `*_figures`) and either printed as a table or put in the JSON
# summary, so `--json` carries what the tables show. Money in JSON is a string with 6 decimals.

def _read(settings: Settings, query: str, params: dict | None = None) -> list[tuple]:
    """The rows of `sql/reports/<query>.sql` (the summary's queries are in sql/reports/cli/)."""
    from pipelines.lib.warehouse import connect_readonly, run_query

    with connect_readonly(settings.warehouse_path) as con:
        return run_query(con, query, params).fetchall()


def quota_rows(settings: Settings, first: date, last: date) -> list[tuple[str, int, Decimal, int]]:
    """(key_name, days, reported USD, requests) per key for [first, last]."""
    return _read(settings, "cli/quota_by_key", {"first": first, "last": last})


def restatement_rows(settings: Settings, first: date, last: date) -> list[tuple]:
    """(usage_date, key_name, previous USD, new USD, pulled_at) of the window's days, latest first."""
    return _read(settings, "cli/restatements", {"first": first, "last": last})


def reconciliation_figures(settings: Settings, first: date, last: date) -> dict:
    """Key-days per status (with reported and estimated USD), the flagged key-days, the coverage."""
    window = {"first": first, "last": last}
    statuses = _read(settings, "cli/recon_statuses", window)
    flagged = _read(settings, "cli/flagged", window)
    [(coverage,)] = _read(settings, "cli/coverage", window)
    return {"statuses": statuses, "flagged": flagged, "coverage_pct": coverage or 0}


def partial_days(settings: Settings, first: date, last: date) -> list[date]:
    """Days of [first, last] the warehouse marks partial: not over when they were built (data so far)."""
    return [day for (day,) in _read(settings, "cli/partial_days", {"first": first, "last": last})]


def partial_day_line(settings: Settings, day: date) -> str:
    return (f"{day} is partial: data so far (the day is not over in {settings.timezone}; "
            "the run after it ends rebuilds it)")


def request_log_figures(settings: Settings) -> dict[str, int]:
    [row] = _read(settings, "cli/inbox_totals")
    return dict(zip(("files", "lines_read", "accepted", "rejected", "duplicates"), map(int, row)))


def window_summary(settings: Settings, first: date, last: date) -> dict:
    """The figures of [first, last] that the tables show, JSON-ready."""
    keys = quota_rows(settings, first, last)
    recon = reconciliation_figures(settings, first, last)
    return {
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "timezone": settings.timezone,
        "days": (last - first).days + 1,
        "partial_days": [day.isoformat() for day in partial_days(settings, first, last)],
        "key_days": sum(r[1] for r in keys),
        "reported_usd": _usd(sum((r[2] for r in keys), Decimal(0))),
        "requests": int(sum(r[3] for r in keys)),
        "keys": [{"key_name": key, "days": days, "reported_usd": _usd(cost), "requests": int(requests)}
                 for key, days, cost, requests in keys],
        "reconciliation": {
            "statuses": {status: key_days for status, key_days, _, _ in recon["statuses"]},
            "coverage_pct": f"{recon['coverage_pct']:.2f}",
            "flagged": [{"usage_date": day.isoformat(), "key_name": key, "status": status, "explanation": text}
                        for day, key, status, text in recon["flagged"]],
        },
        "restatements": [{"usage_date": day.isoformat(), "key_name": key, "previous_usd": _usd(before),
                          "new_usd": _usd(after), "pulled_at": pulled_at.isoformat()}
                         for day, key, before, after, pulled_at in restatement_rows(settings, first, last)],
    }


def print_json(summary: dict) -> None:
    import json

    print(json.dumps(summary, indent=2))


def _usd(amount: Decimal | float | None) -> str | None:
    return None if amount is None else f"{amount:.6f}"


def print_quota_table(settings: Settings, first: date, last: date) -> tuple[Decimal, int, int]:
    """Per-key reported spend and requests for [first, last]; returns (USD, requests, key-days)."""
    rows = quota_rows(settings, first, last)
    cost = sum((r[2] for r in rows), Decimal(0))
    requests = sum(r[3] for r in rows)
    key_days = sum(r[1] for r in rows)
    width = max([len("key_name"), len("total")] + [len(r[0]) for r in rows])
    print(f"reported by CometAPI, {first} .. {last} ({settings.timezone} days)")
    print(f"{'key_name':<{width}}  {'days':>4}  {'reported_usd':>14}  {'requests':>9}")
    for key, days, key_cost, key_requests in rows:
        print(f"{key:<{width}}  {days:>4}  {key_cost:>14.6f}  {key_requests:>9}")
    print(f"{'total':<{width}}  {key_days:>4}  {cost:>14.6f}  {requests:>9}")
    for day in partial_days(settings, first, last):
        print(partial_day_line(settings, day))
    return cost, requests, key_days


def print_restatements(settings: Settings, first: date, last: date) -> None:
    for day, key, before, after, _ in restatement_rows(settings, first, last)[:5]:
        print(f"restated: {day} {key}: {before} -> {after} USD")


def print_request_log_summary(settings: Settings) -> None:
    f = request_log_figures(settings)
    print(f"client request logs: {f['files']} files, {f['lines_read']} lines read = {f['accepted']} accepted + "
          f"{f['rejected']} rejected + {f['duplicates']} duplicates")


def print_reconciliation(settings: Settings, first: date, last: date) -> None:
    recon = reconciliation_figures(settings, first, last)
    print("reconciliation per key-day (status: key-days, reported USD, estimated USD)")
    for status, key_days, reported, estimated in recon["statuses"]:
        print(f"  {status:<17} {key_days:>4}  {reported:>12.6f}  {estimated:>12.6f}")
    print(f"  coverage: {recon['coverage_pct']:.2f} % of reported spend explained by priced, logged requests")
    for day, key, status, explanation in recon["flagged"]:
        print(f"  {day} {key} {status}: {explanation}")


def _backfill_with_progress(settings: Settings, first: date, last: date, *, restart: bool,
                            run_ids: list[str] | None = None) -> tuple[int, int]:
    """A progress bar on a terminal; progress lines where stderr is a log (cron, CI, Dagster)."""
    from tqdm import tqdm

    from pipelines import runs

    total_days = (last - first).days + 1
    if settings.access_token:
        from pipelines.lib.cometapi.pacing import RateLimit
        from pipelines.lib.gateway_lake import backfill_estimate

        print(backfill_estimate(total_days, RateLimit()), file=sys.stderr)
    if not sys.stderr.isatty():
        with ProgressLines(runs.backfill_plan(settings, first, last), sys.stderr) as lines:
            return runs.backfill(settings, first, last, restart=restart, on_progress=lines.chunk_done,
                                 run_ids=run_ids)
    with tqdm(total=total_days, unit="day", desc="backfill", file=sys.stderr) as bar:
        def advance(chunk: runs.Chunk, index: int, count: int) -> None:
            bar.set_postfix_str(chunk.label)
            bar.update((chunk.last - chunk.first).days + 1)

        return runs.backfill(settings, first, last, restart=restart, on_progress=advance, run_ids=run_ids)


PROGRESS_EVERY_S = 30.0  # a line at least this often while a chunk runs, when stderr is not a terminal


class ProgressLines:
    """Backfill progress as whole lines, for a log: one when a chunk of days is done, and one every
    PROGRESS_EVERY_S seconds while the next one runs, each with the days done and the time taken.
    (tqdm's bar rewrites one line with carriage returns, which a log shows as a single line at the
    end, or not at all; it is used on a terminal.)"""

    def __init__(self, plan: list, out) -> None:
        import threading

        self.plan, self.out = plan, out
        self.total = sum((c.last - c.first).days + 1 for c in plan)
        self.done = self.chunks_done = 0
        self.started = self.last_line = time.monotonic()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, name="backfill-progress", daemon=True)

    def __enter__(self) -> ProgressLines:
        self._line(f"starting {self._running()}")
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def chunk_done(self, chunk, index: int, count: int) -> None:
        with self.lock:
            self.done += (chunk.last - chunk.first).days + 1
            self.chunks_done = index
        self._line(f"{chunk.label} done" + (f", next {self._running()}" if index < count else ""))

    def _running(self) -> str:
        return self.plan[self.chunks_done].label if self.chunks_done < len(self.plan) else "nothing"

    def _heartbeat(self) -> None:
        from pipelines.lib import clock

        while not clock.wait_for(self.stopped, max(0.01, self.last_line + PROGRESS_EVERY_S - time.monotonic())):
            if time.monotonic() - self.last_line >= PROGRESS_EVERY_S:
                self._line(f"working on {self._running()}")

    def _line(self, what: str) -> None:
        with self.lock:
            self.last_line = now = time.monotonic()
            print(f"backfill: {self.done}/{self.total} days, {now - self.started:.0f} s: {what}", file=self.out,
                  flush=True)


# --- helpers ------------------------------------------------------------------------------------

def yesterday(settings: Settings) -> date:
    from pipelines.lib import clock

    return clock.yesterday(settings.tz)


def demo_window(settings: Settings, days: int) -> tuple[date, date]:
    """The demo's reporting days: the `days` complete days ending yesterday."""
    last = yesterday(settings)
    return last - timedelta(days=days - 1), last


def _replace(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def _load_dotenv() -> None:
    from pathlib import Path

    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)


def _date(raw: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date in YYYY-MM-DD form") from None


def _price_sources_arg(raw: str) -> tuple[str, ...]:
    from pipelines.lib.settings import PRICE_SOURCES

    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [n for n in names if n not in PRICE_SOURCES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{raw!r}: a comma-separated subset of {','.join(PRICE_SOURCES)}")
    return tuple(n for n in PRICE_SOURCES if n in names)


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
