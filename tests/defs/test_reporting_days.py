"""Reporting days in a zone with DST: a 23-hour and a 25-hour day lose no request and count none
twice, and CometAPI's daily figures are compared over the same hours (both 2026 changes in New York)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from conftest import make_settings, materialize_days, table_rows
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

ZONE = "America/New_York"


def hours(day: date) -> float:
    tz = ZoneInfo(ZONE)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return (end - start).total_seconds() / 3600


@pytest.mark.parametrize(("change", "length"), [(date(2026, 3, 8), 23), (date(2026, 11, 1), 25)])
def test_a_dst_change_day_keeps_every_request_once_and_matches_the_services_day(change, length, tmp_path):
    assert hours(change) == length
    first = change - timedelta(days=2)
    traffic = generate_traffic(seed=13, start=first, days=5, requests_per_day=40, service_tz=ZONE)
    with SimulatorServer(traffic) as sim:
        prices = tmp_path / "sim-prices.csv"
        prices.write_text(prices_csv(traffic.start, traffic.days))
        settings = make_settings(tmp_path / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_TIMEZONE=ZONE, COMET_LEDGER_PRICES=str(prices),
                                 COMET_LEDGER_START_DATE=first.isoformat())
        write_inbox(traffic, settings.inbox)
        last = first + timedelta(days=traffic.days - 1)
        materialize_days(settings, first, last)
        materialize_days(settings, first, last)  # the re-pull catches the simulator's planted restatement
        truth = {k: v for k, v in sim.truth().items() if first <= k[0] <= last}

    expected = Counter(traffic.day_of(r.ts) for r in traffic.iter_requests() if r.is_request)
    found = dict(table_rows(settings, "SELECT usage_date, count(*) FROM requests WHERE seen_in <> 'client' "
                                      "GROUP BY ALL"))
    assert found == dict(expected) and found[change] > 0
    [(ids, distinct)] = table_rows(settings, "SELECT count(*), count(DISTINCT request_id) FROM requests")
    assert ids == distinct  # none counted twice
    # every request of the change day lies inside that day's 23 or 25 hours, in the zone
    [(earliest, latest)] = table_rows(settings, "SELECT min(ts), max(ts) FROM requests WHERE usage_date = $d",
                                      {"d": change})
    tz = ZoneInfo(ZONE)
    assert datetime.combine(change, time(0), tzinfo=tz) <= earliest and latest < datetime.combine(
        change + timedelta(days=1), time(0), tzinfo=tz)
    # the service's daily figures and the ledger's sums over the same hours agree key-day by key-day
    reported = {(d, k): (usd, n) for d, k, usd, n in table_rows(
        settings, "SELECT usage_date, key_name, reported_cost_usd, reported_requests FROM quota_daily")}
    assert reported == truth
    billed = {(d, k): b for d, k, b in table_rows(
        settings, "SELECT usage_date, key_name, billed_cost_usd FROM recon_key_daily WHERE usage_date = $d",
        {"d": change})}
    assert billed and all(billed[key_day] == truth[key_day][0] for key_day in billed)
