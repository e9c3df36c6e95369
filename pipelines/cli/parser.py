"""`comet-ledger`: the command line's entry point and its arguments.

`main` parses the arguments, loads .env and the settings, runs the command's handler and turns any
failure into one line on stderr (`comet-ledger: error: ...`) and a non-zero exit status; no secret is
ever printed. A SIGTERM (systemd stopping a unit, `kill`, a CI timeout) ends a command like Ctrl-C
does: what was being written is abandoned unpublished, and one line says it was stopped (exit status
143). `build_parser` describes every command and option; the commands themselves live in the
package's other modules (pipeline, reports, alerts, simulated).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from pipelines.cli.alerts import cmd_alerts_check, cmd_alerts_test
from pipelines.cli.pipeline import cmd_backfill, cmd_run
from pipelines.cli.reports import cmd_export_focus, cmd_open_latest, cmd_reprice, cmd_review, cmd_smoke_test
from pipelines.cli.simulated import cmd_demo, cmd_dev, cmd_simulate
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
