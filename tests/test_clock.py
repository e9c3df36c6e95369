"""Every default that depends on today, at the clocks where it is easy to get wrong: the end of a
month and of a year, a leap day, and both DST changes of a zone that has them.

"Now" is set through COMET_LEDGER_NOW (pipelines/lib/clock.py), the one place the product reads it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from conftest import make_settings, table_rows
from pipelines import cli
from pipelines.cli.common import yesterday
from pipelines.cli.simulated import demo_window
from pipelines.definitions import build_definitions
from pipelines.lib import clock
from pipelines.lib.settings import ConfigError, load_settings
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic


def test_a_stopped_clock_reads_its_instant_in_utc(monkeypatch):
    monkeypatch.setenv("COMET_LEDGER_NOW", "2027-01-01T08:05:00+08:00")
    assert clock.now() == datetime(2027, 1, 1, 0, 5, tzinfo=UTC) and clock.now().tzinfo is UTC
    time.sleep(0.01)
    assert clock.now() == datetime(2027, 1, 1, 0, 5, tzinfo=UTC)  # stopped


def test_a_running_clock_starts_at_its_instant_and_keeps_the_system_clocks_pace(monkeypatch):
    monkeypatch.setenv("COMET_LEDGER_NOW", f"2027-12-31T23:59:59Z@{time.time() - 2.0!r}")
    now = clock.now()
    assert datetime(2028, 1, 1, 0, 0, 1, tzinfo=UTC) <= now < datetime(2028, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert clock.today("UTC") == date(2028, 1, 1) and clock.yesterday("UTC") == date(2027, 12, 31)


def test_unset_it_is_the_system_clock(monkeypatch):
    monkeypatch.delenv("COMET_LEDGER_NOW")
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)


@pytest.mark.parametrize("raw", ["2027-01-01", "2027-01-01T00:05:00", "tomorrow", "2027-01-01T00:05:00Z@soon",
                                 "2027-01-01T00:05:00Z@nan"])
def test_a_malformed_now_fails_fast_with_one_line_naming_the_variable(raw, tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"^COMET_LEDGER_NOW=.* is not an instant with its offset"):
        load_settings(env={"COMET_LEDGER_HOME": str(tmp_path), "COMET_LEDGER_NOW": raw})
    monkeypatch.setenv("COMET_LEDGER_NOW", raw)
    monkeypatch.setenv("COMET_LEDGER_HOME", str(tmp_path))
    assert cli.main(["run"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("comet-ledger: error: COMET_LEDGER_NOW=")


# (the instant, the reporting zone, yesterday there): the day `run` takes by default, the last day of the
# demo's window and the month of its pack.
CLOCKS = [
    ("2027-01-01T00:05:00Z", "UTC", date(2026, 12, 31)),  # just after a year's end
    ("2027-12-31T23:58:00Z", "UTC", date(2027, 12, 30)),  # its last minutes
    ("2026-12-31T16:05:00Z", "Asia/Shanghai", date(2026, 12, 31)),  # 00:05 on 1 January there
    ("2026-12-31T15:55:00Z", "Asia/Shanghai", date(2026, 12, 30)),  # 23:55 on 31 December there
    ("2028-02-29T12:00:00Z", "UTC", date(2028, 2, 28)),  # a leap day
    ("2028-03-01T00:30:00Z", "UTC", date(2028, 2, 29)),  # the day after it
    ("2026-03-09T04:30:00Z", "America/New_York", date(2026, 3, 8)),  # 00:30 EDT: the 23-hour day is over
    ("2026-03-09T03:30:00Z", "America/New_York", date(2026, 3, 7)),  # 23:30 EDT on that day
    ("2026-11-02T05:30:00Z", "America/New_York", date(2026, 11, 1)),  # 00:30 EST: the 25-hour day is over
    ("2026-11-02T04:30:00Z", "America/New_York", date(2026, 10, 31)),  # 23:30 EST on that day
    ("2026-03-29T22:30:00Z", "Europe/Berlin", date(2026, 3, 29)),  # 00:30 CEST after the spring change
    ("2026-10-25T22:30:00Z", "Europe/Berlin", date(2026, 10, 24)),  # 23:30 CET on the 25-hour day
    ("2026-10-25T23:30:00Z", "Europe/Berlin", date(2026, 10, 25)),  # 00:30 CET after it
]


@pytest.mark.parametrize(("instant", "zone", "expected"), CLOCKS)
def test_run_and_the_demo_take_yesterday_in_the_reporting_zone(instant, zone, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("COMET_LEDGER_NOW", instant)
    settings = load_settings(env={"COMET_LEDGER_HOME": str(tmp_path), "COMET_LEDGER_TIMEZONE": zone})
    assert yesterday(settings) == expected
    assert demo_window(settings, 30) == (expected - timedelta(days=29), expected)


# (the daily schedule's tick, the reporting zone, the window it asks for)
TICKS = [
    (datetime(2027, 1, 1, 6, 15, tzinfo=UTC), "UTC", ("2026-12-28", "2026-12-31")),
    (datetime(2028, 3, 1, 6, 15, tzinfo=UTC), "UTC", ("2028-02-26", "2028-02-29")),
    (datetime(2026, 3, 9, 7, 15, tzinfo=UTC), "America/New_York", ("2026-03-05", "2026-03-08")),
    (datetime(2026, 11, 2, 7, 15, tzinfo=UTC), "America/New_York", ("2026-10-29", "2026-11-01")),
    (datetime(2026, 12, 31, 22, 15, tzinfo=UTC), "Asia/Shanghai", ("2026-12-28", "2026-12-31")),  # 06:15 there
]


@pytest.mark.parametrize(("tick", "zone", "window"), TICKS)
def test_the_daily_schedule_asks_for_yesterday_and_the_three_days_before(tick, zone, window, tmp_path):
    settings = load_settings(env={"COMET_LEDGER_HOME": str(tmp_path), "COMET_LEDGER_TIMEZONE": zone,
                                  "COMET_LEDGER_START_DATE": "2026-01-01"})
    schedule = build_definitions(settings).resolve_schedule_def("daily_ledger_schedule")
    assert schedule.cron_schedule == f"15 {tick.hour} * * *"
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key_range == dg.PartitionKeyRange(*window)


@pytest.mark.parametrize(("tick", "month"), [(datetime(2027, 1, 2, 6, 45, tzinfo=UTC), "2026-12-01"),
                                             (datetime(2028, 3, 2, 6, 45, tzinfo=UTC), "2028-02-01")])
def test_the_monthly_review_schedule_asks_for_the_month_just_ended(tick, month, tmp_path):
    settings = load_settings(env={"COMET_LEDGER_HOME": str(tmp_path), "COMET_LEDGER_START_DATE": "2026-01-01"})
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("monthly_review_schedule")
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == month


def test_run_just_after_new_year_builds_the_last_day_of_the_year_before(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMET_LEDGER_NOW", "2027-01-01T00:05:00Z")
    traffic = generate_traffic(seed=5, start=date(2026, 12, 28), days=4, requests_per_day=6)
    with SimulatorServer(traffic) as sim:
        settings = make_settings(tmp_path / "home", sim, COMET_LEDGER_START_DATE="2026-12-01")
        for name, value in (("COMET_LEDGER_HOME", settings.home), ("COMETAPI_QUERY_URL", sim.url),
                            ("COMETAPI_API_URL", sim.url), ("COMETAPI_KEY", sim.api_key),
                            ("COMET_LEDGER_START_DATE", "2026-12-01"), ("DAGSTER_HOME", tmp_path / "dagster")):
            monkeypatch.setenv(name, str(value))
        monkeypatch.setenv("COMET_LEDGER_PRICES", str(cli_prices(tmp_path, traffic)))
        assert cli.main(["run", "--json", "--repull", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["first_day"], summary["last_day"]) == ("2026-12-30", "2026-12-31")
    days = table_rows(settings, "SELECT DISTINCT usage_date FROM quota_daily ORDER BY 1")
    assert days == [(date(2026, 12, 30),), (date(2026, 12, 31),)]
    [(fetched_at,)] = table_rows(settings, "SELECT fetched_at FROM balance_snapshots")
    assert fetched_at == datetime(2027, 1, 1, 0, 5, tzinfo=UTC)


def cli_prices(tmp_path, traffic):
    from pipelines.simulator.catalog import prices_csv

    path = tmp_path / "sim-prices.csv"
    path.write_text(prices_csv(traffic.start, traffic.days))
    return path


def test_the_suite_itself_reads_a_pinned_clock():
    """conftest.py pins the clock for every test and the processes they start; the wall clock is never read."""
    instant, since = clock.parse(__import__("os").environ["COMET_LEDGER_NOW"])
    assert instant == datetime(2026, 11, 3, 6, 15, tzinfo=UTC) and since is not None
    assert clock.today(ZoneInfo("UTC")) == date(2026, 11, 3)


# --- days that have not happened --------------------------------------------------------------------

class CountingServer:
    """A loopback server that counts the calls it gets (the refusals must come before any)."""

    def __enter__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                calls.append(self.path)
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("argv", "day"), [(["run", "--date", "2026-11-04"], "2026-11-04"),
                                          (["run", "--date", "2026-12-13"], "2026-12-13"),
                                          (["backfill", "--start", "2026-11-01", "--end", "2026-11-04"], "2026-11-04")])
def test_a_run_or_backfill_reaching_a_day_that_has_not_happened_is_refused_before_any_call(
        argv, day, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMET_LEDGER_NOW", "2026-11-03T06:15:00Z")
    with CountingServer() as server:
        for name, value in (("COMET_LEDGER_HOME", tmp_path / "home"), ("COMETAPI_QUERY_URL", server.url),
                            ("COMETAPI_API_URL", server.url), ("COMETAPI_KEY", "sk-test-0123456789"),
                            ("COMETAPI_ACCESS_TOKEN", "token-0123456789"), ("DAGSTER_HOME", tmp_path / "dagster"),
                            ("COMET_LEDGER_START_DATE", "2026-10-01")):
            monkeypatch.setenv(name, str(value))
        assert cli.main(argv) == 2
        assert server.calls == []
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"comet-ledger: error: {day} has not happened yet: today is 2026-11-03 in UTC; nothing was pulled"
    assert not (tmp_path / "home" / "lake").exists()


def test_today_in_the_reporting_zone_is_a_day_that_has_begun():
    clock.refuse_future(date(2026, 11, 3), "UTC")  # today: allowed, as a partial day
    with pytest.raises(ValueError, match="2026-11-04 has not happened yet: today is 2026-11-03 in UTC"):
        clock.refuse_future(date(2026, 11, 4), "UTC")
    # 06:15 UTC is 15:15 in Tokyo, still 2026-11-03; and 22:15 on 2026-11-02 in Los Angeles
    clock.refuse_future(date(2026, 11, 3), "Asia/Tokyo")
    with pytest.raises(ValueError, match="2026-11-03 has not happened yet: today is 2026-11-02 in America/Los_Angeles"):
        clock.refuse_future(date(2026, 11, 3), "America/Los_Angeles")


def test_a_review_of_a_month_that_has_not_started_or_ended_before_the_first_day_is_refused(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMET_LEDGER_NOW", "2026-11-03T06:15:00Z")
    monkeypatch.setenv("COMET_LEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-01-01")
    assert cli.main(["review", "--month", "2026-12"]) == 2
    assert capsys.readouterr().err.strip() == ("comet-ledger: error: month 2026-12 has not started yet: today is "
                                               "2026-11-03 in UTC")
    assert cli.main(["review", "--month", "2020-01"]) == 2
    assert capsys.readouterr().err.strip() == (
        "comet-ledger: error: month 2020-01 ends before the first reporting day, COMET_LEDGER_START_DATE "
        "(2026-01-01): there is nothing to review")
    assert not (tmp_path / "home" / "reports").exists()


# --- the first daily partition ------------------------------------------------------------------------

def test_without_a_start_date_the_first_run_looks_up_the_first_day_of_usage_once_and_records_it(
        tmp_path, monkeypatch, capsys):
    from pipelines.definitions import build_definitions as definitions
    from pipelines.lib import first_day

    monkeypatch.setenv("COMET_LEDGER_NOW", "2026-11-03T06:15:00Z")
    traffic = generate_traffic(seed=5, start=date(2026, 10, 20), days=14, requests_per_day=3)
    with SimulatorServer(traffic) as sim:
        for name, value in (("COMET_LEDGER_HOME", tmp_path / "home"), ("COMETAPI_QUERY_URL", sim.url),
                            ("COMETAPI_API_URL", sim.url), ("COMETAPI_KEY", sim.api_key),
                            ("DAGSTER_HOME", tmp_path / "dagster")):
            monkeypatch.setenv(name, str(value))
        monkeypatch.delenv("COMET_LEDGER_START_DATE", raising=False)
        monkeypatch.setenv("COMET_LEDGER_PRICES", str(cli_prices(tmp_path, traffic)))
        before = load_settings()
        assert (before.start_date, before.start_date_source) == (date(2026, 8, 5), "fallback")  # 90 days back
        assert cli.main(["run", "--repull", "0"]) == 0
        def lookups():
            return [c for c in sim.calls if c.path == "/user/quota" and c.params.get("start_date") == "2025-11-02"]

        assert len(lookups()) == 1  # the first of 12 calls of 31 days back from yesterday
        assert cli.main(["run", "--repull", "0"]) == 0  # looked up once: the second run asks nothing more
        assert len(lookups()) == 1
    err = capsys.readouterr().err
    assert err.count("first reporting day: 2026-10-20 (the first day the query service reported usage for") == 1
    assert first_day.recorded(tmp_path / "home").day == date(2026, 10, 20)
    after = load_settings()
    assert (after.start_date, after.start_date_source) == (date(2026, 10, 20), "recorded")
    keys = definitions(after).resolve_assets_def(dg.AssetKey(["warehouse", "quota_daily"])).partitions_def
    assert keys.get_first_partition_key() == "2026-10-20"
    monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-10-25")  # the setting always wins
    assert load_settings().start_date == date(2026, 10, 25)


def test_a_service_with_no_usage_in_the_look_back_records_ninety_days_back():
    from pipelines.lib import first_day

    found = first_day.look_up([], date(2026, 11, 3), datetime(2026, 11, 3, 6, 15, tzinfo=UTC))
    assert (found.day, found.source) == (date(2026, 8, 5), "fallback")
    assert "reported no usage in the 366 days before it" in found.detail
