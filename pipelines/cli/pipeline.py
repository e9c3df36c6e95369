"""`comet-ledger run` and `comet-ledger backfill`: materialising reporting days. With them, what
every command that pulls from the gateway does first: the checks before any API call
(`check_before_running`), settling the first reporting day when none is configured
(`settle_first_day`), and the backfill's progress (a bar on a terminal, whole lines in a log).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta

from pipelines.cli.common import replace_settings, yesterday
from pipelines.cli.summary import print_json, print_quota_table, window_summary
from pipelines.lib.settings import Settings


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs

    day = args.date or yesterday(settings)
    check_before_running(settings, day)
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
    if args.end < args.start:
        raise ValueError(f"--end {args.end} is before --start {args.start}")
    check_before_running(settings, args.end)
    settings = settle_first_day(settings)
    from pipelines import runs

    legacy = runs.remove_legacy_backfill_state(settings, args.start, args.end)
    if legacy is not None:
        print(f"removed {legacy}: an interrupted backfill's progress is now read from the Dagster instance; "
              "the chunks it listed run again", file=sys.stderr)
    run_ids: list[str] = []
    ran, skipped = backfill_with_progress(settings, args.start, args.end, restart=args.restart, run_ids=run_ids)
    if skipped:
        print(f"resumed: {skipped} chunk(s) were already done, {ran} run now", file=sys.stderr)
    if args.json:
        print_json({"command": "backfill", **window_summary(settings, args.start, args.end),
                    "chunks_run": ran, "chunks_skipped": skipped, "run_ids": run_ids})
    else:
        print_quota_table(settings, args.start, args.end)
    return 0


def check_before_running(settings: Settings, last: date) -> None:
    """Fail fast, before any API call, on what would stop a run halfway (or pull a day not begun)."""
    from pipelines.lib import clock, lake
    from pipelines.lib.reconciliation.budgets import read_budgets
    from pipelines.lib.prices.tables import load_key_owners, load_prices
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
    return replace_settings(settings, start_date=found.day, start_date_source="recorded")


def backfill_with_progress(settings: Settings, first: date, last: date, *, restart: bool,
                            run_ids: list[str] | None = None) -> tuple[int, int]:
    """A progress bar on a terminal; progress lines where stderr is a log (cron, CI, Dagster)."""
    from tqdm import tqdm

    from pipelines import runs

    total_days = (last - first).days + 1
    if settings.access_token:
        from pipelines.lib.cometapi.pacing import RateLimit
        from pipelines.lib.gateway.lake import backfill_estimate

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
