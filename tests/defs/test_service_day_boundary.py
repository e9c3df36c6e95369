"""The service's day boundary, read off the data: the gateway ledger summed under UTC, UTC+8 and the
configured zone, compared with daily_quota key-day by key-day (table service_day_boundary); the asset
check, the smoke test and the evidence pack say so with the numbers, or that it cannot be inferred."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from conftest import make_settings, materialize_days, table_rows
from pipelines.lib import smoke_test
from pipelines.lib.review_pack.build import build_pack
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

FIRST = date(2026, 10, 5)
DAYS = 6
LAST = FIRST + timedelta(days=DAYS - 1)
BOUNDARY = ("SELECT candidate, zone, is_configured, key_days_compared, key_days_matched, is_best_fit "
            "FROM service_day_boundary ORDER BY candidate")


def materialised(tmp_path, service_tz: str, *, ledger: bool):
    """A home in UTC over a simulator whose daily_quota days are `service_tz` days; (settings, check, smoke)."""
    traffic = generate_traffic(seed=21, start=FIRST, days=DAYS, requests_per_day=60, service_tz=service_tz)
    with SimulatorServer(traffic) as sim:
        prices = tmp_path / "sim-prices.csv"
        prices.write_text(prices_csv(traffic.start, traffic.days))
        env = {"COMETAPI_ACCESS_TOKEN": sim.access_token} if ledger else {}
        settings = make_settings(tmp_path / "home", sim, COMET_LEDGER_PRICES=str(prices),
                                 COMET_LEDGER_START_DATE=FIRST.isoformat(), **env)
        write_inbox(traffic, settings.inbox)
        result = materialize_days(settings, FIRST, LAST)
        [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "service_day_boundary"]
        smoke = smoke_test.run_from_settings(settings, today=LAST + timedelta(days=1))
    return settings, check, smoke


def test_a_service_on_utc_plus_8_is_found_and_said_with_the_numbers(tmp_path):
    settings, check, smoke = materialised(tmp_path, "Asia/Shanghai", ledger=True)
    rows = {candidate: rest for candidate, *rest in table_rows(settings, BOUNDARY)}
    assert set(rows) == {"UTC", "UTC+8"}  # the configured zone is UTC: one candidate, not two
    zone, configured, compared, matched, best = rows["UTC+8"]
    assert (zone, configured, best) == ("Etc/GMT-8", False, True) and matched == compared > 10
    utc = rows["UTC"]
    assert utc[1] is True and utc[4] is False and utc[3] < utc[2]  # UTC days: most key-days differ
    # the warning check, the smoke test and the pack say it, with the numbers
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    line = (f"CometAPI's daily_quota days fit UTC+8 best, not the configured zone UTC: UTC: {utc[3]} of {utc[2]} "
            f"key-days match; UTC+8: {matched} of {compared} key-days match")
    assert check.description.startswith(line)
    assert smoke.passed and any(w.startswith(line) for w in smoke.warnings)
    pack = build_pack(settings.warehouse_path, settings.lake, settings.inbox, "2026-10", settings.reports,
                      timezone="UTC", built_at=datetime(2026, 11, 2, tzinfo=UTC))
    assert line in (pack.path / "reconciliation.md").read_text()


def test_a_service_on_the_configured_zone_passes(tmp_path):
    settings, check, smoke = materialised(tmp_path, "UTC", ledger=True)
    rows = {candidate: rest for candidate, *rest in table_rows(settings, BOUNDARY)}
    assert rows["UTC"][4] is True and rows["UTC"][3] == rows["UTC"][2] > rows["UTC+8"][3]
    assert check.passed and check.description.startswith("CometAPI's daily_quota days fit the configured zone UTC")
    assert not [w for w in smoke.warnings if "daily_quota days" in w or "day boundary" in w]


def test_without_the_ledger_it_cannot_be_inferred(tmp_path):
    settings, check, smoke = materialised(tmp_path, "UTC", ledger=False)
    assert all(compared == 0 and not best for _, _, _, compared, _, best in table_rows(settings, BOUNDARY))
    said = "CometAPI's day boundary cannot be inferred: no gateway ledger to compare daily_quota with"
    assert check.passed and check.description.startswith(said)
    assert any(w.startswith(said) for w in smoke.warnings)
