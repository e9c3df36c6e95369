"""Today is a partial day: the daily run may reach it, and every mart, the CLI summary and the review
pack say its figures are the day so far; the run after the day ends rebuilds it as a whole day.

The product's clock is pinned inside a reporting day of Asia/Shanghai whose UTC date is the day
before, so "today" is taken in the reporting zone, not in UTC or the process's zone."""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from conftest import table_rows
from pipelines.cli import main
from pipelines.lib import clock
from pipelines.lib.settings import load_settings
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

REPO = Path(__file__).resolve().parents[2]
ZONE = "Asia/Shanghai"
FIRST = date(2026, 11, 17)
TODAY = date(2026, 11, 20)  # 02:30 in Shanghai, 18:30 UTC on the 19th
NOW = "2026-11-19T18:30:00+00:00"
NEXT_NOW = "2026-11-20T18:30:00+00:00"  # a day later: 2026-11-21 02:30 in Shanghai
BUDGETS = "\n".join(["scope,name,period,amount_usd,thresholds_pct,effective_from,effective_to",
                     "account,,day,100,,2026-11-01,",
                     "account,,month,1000,,2026-11-01,"]) + "\n"
DAILY_TABLES = ("recon_key_daily", "cost_model_daily", "anomalies")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A simulated world in Shanghai days 11-17 .. 11-21, and the environment `comet-ledger` reads."""
    traffic = generate_traffic(seed=11, start=FIRST, days=5, requests_per_day=20, service_tz=ZONE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prices.csv").write_text(prices_csv(traffic.start, traffic.days))
    (tmp_path / "budgets.csv").write_text(BUDGETS)
    with SimulatorServer(traffic) as sim:
        for name, value in {
            "COMET_LEDGER_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster"),
            "COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url, "COMETAPI_KEY": sim.api_key,
            "COMETAPI_ACCESS_TOKEN": sim.access_token, "COMET_LEDGER_TIMEZONE": ZONE,
            "COMET_LEDGER_START_DATE": FIRST.isoformat(), "COMET_LEDGER_PRICES": str(tmp_path / "prices.csv"),
            "COMET_LEDGER_BUDGETS": str(tmp_path / "budgets.csv"),
            # the operator's table alone: glm-4.6 stays unpriced, a finding on each day it is used
            "COMET_LEDGER_PRICE_SOURCES": "config",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("COMET_LEDGER_KEY_OWNERS", str(REPO / "config" / "key_owners.csv"))
        yield traffic


def partial_by_day(settings, table: str) -> dict[date, set[bool]]:
    found: dict[date, set[bool]] = {}
    for day, partial in table_rows(settings, f"SELECT usage_date, is_partial_day FROM {table}"):
        found.setdefault(day, set()).add(partial)
    return found


def budget_rows(settings) -> dict[tuple[str, date], tuple[date, bool]]:
    return {(b, start): (as_of, partial) for b, start, as_of, partial in table_rows(
        settings, "SELECT budget_id, period_start, as_of, is_partial_day FROM budget_status")}


def test_today_is_marked_partial_everywhere_until_the_run_after_it_rebuilds_it(home, monkeypatch, capsys):
    settings = load_settings()
    monkeypatch.setenv("COMET_LEDGER_NOW", clock.running_from(NOW))
    assert clock.today(ZONE) == TODAY and clock.now().date() == TODAY - timedelta(days=1)
    write_inbox(home, settings.inbox, [FIRST + timedelta(days=n) for n in range(4)])

    # the daily run for today: today and the 3 days before
    assert main(["run", "--date", TODAY.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"{TODAY} is partial: data so far" in out.splitlines()[-1]
    assert sum("is partial" in line for line in out.splitlines()) == 1
    for table in DAILY_TABLES:
        days = partial_by_day(settings, table)
        assert days[TODAY] == {True}, table  # today has rows, every one of them partial
        assert all(partial == {False} for day, partial in days.items() if day < TODAY), (table, days)
        assert max(days) == TODAY, table
    [(key_days,)] = table_rows(settings, "SELECT count(*) FROM recon_key_daily WHERE usage_date = $d", {"d": TODAY})
    assert key_days > 0
    budgets = budget_rows(settings)
    assert budgets[("account/day", TODAY)] == (TODAY, True)
    assert budgets[("account/day", TODAY - timedelta(days=1))] == (TODAY - timedelta(days=1), False)
    assert budgets[("account/month", date(2026, 11, 1))] == (TODAY, True)

    assert main(["review", "--month", "2026-11"]) == 0
    capsys.readouterr()
    pack = settings.reports / "review-2026-11"
    text = (pack / "reconciliation.md").read_text()
    assert f"{TODAY} is partial: data so far" in text
    assert json.loads((pack / "manifest.json").read_text())["period"]["partial_days"] == [TODAY.isoformat()]
    with open(pack / "recon_key_daily_2026-11.csv", newline="") as fh:
        marked = {(row["usage_date"], row["is_partial_day"]) for row in csv.DictReader(fh)}
    assert marked == {(str(FIRST + timedelta(days=n)), "true" if n == 3 else "false") for n in range(4)}

    # a day later: the daily run for the new today rebuilds yesterday as a whole day
    monkeypatch.setenv("COMET_LEDGER_NOW", clock.running_from(NEXT_NOW))
    tomorrow = TODAY + timedelta(days=1)
    assert clock.today(ZONE) == tomorrow
    write_inbox(home, settings.inbox, [tomorrow])
    assert main(["run", "--date", tomorrow.isoformat(), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["first_day"], summary["partial_days"]) == ("2026-11-18", [tomorrow.isoformat()])
    for table in DAILY_TABLES:
        days = partial_by_day(settings, table)
        assert days[tomorrow] == {True} and days[TODAY] == {False}, table  # yesterday rebuilt whole
        assert all(partial == {False} for day, partial in days.items() if day < tomorrow), (table, days)
    [(rows,)] = table_rows(settings, "SELECT count(*) FROM recon_key_daily WHERE usage_date = $d", {"d": TODAY})
    assert rows == key_days  # yesterday's rows are still there, now whole
    budgets = budget_rows(settings)
    assert budgets[("account/day", TODAY)] == (TODAY, False)
    assert budgets[("account/day", tomorrow)] == (tomorrow, True)
    assert budgets[("account/month", date(2026, 11, 1))] == (tomorrow, True)

    assert main(["review", "--month", "2026-11"]) == 0
    text = (pack / "reconciliation.md").read_text()
    assert f"{tomorrow} is partial: data so far" in text and f"{TODAY} is partial" not in text
    assert json.loads((pack / "manifest.json").read_text())["period"]["partial_days"] == [tomorrow.isoformat()]
