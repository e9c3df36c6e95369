"""The quota assets against the simulator: numbers equal its truth, restatements, call counts, faults."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from conftest import SIM_DAYS, SIM_START, lake_digest, materialize_days, table_rows, warehouse_digest

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)


def quota_calls(sim, with_dates: bool = True) -> list:
    return [c for c in sim.calls if c.path == "/user/quota" and ("start_date" in c.params) == with_dates]


def warehouse_truth(settings) -> dict:
    return {(d, k): (c, n) for d, k, c, n in table_rows(
        settings, "SELECT usage_date, key_name, reported_cost_usd, reported_requests FROM quota_daily")}


def test_a_30_day_backfill_equals_the_simulator_and_makes_one_call(settings, sim, traffic):
    materialize_days(settings, SIM_START, LAST)
    assert warehouse_truth(settings) == traffic.reported_daily(restated=False)
    assert len(quota_calls(sim)) == 1
    # One point-in-time snapshot, from one call without dates.
    assert len(quota_calls(sim, with_dates=False)) == 1
    assert table_rows(settings, "SELECT count(*) FROM balance_snapshots") == [(1,)]


def test_the_repull_catches_the_planted_restatement(settings, sim, traffic):
    planted = traffic.planted["restatement"]
    restated_day, key = planted["date"], planted["key"]
    materialize_days(settings, SIM_START, LAST)
    materialize_days(settings, LAST - timedelta(days=3), LAST)
    assert warehouse_truth(settings) == traffic.reported_daily(restated=True)
    [(day, restated_key, before, after)] = table_rows(
        settings, "SELECT usage_date, key_name, previous_cost_usd, new_cost_usd FROM quota_restatements")
    before_truth = traffic.reported_daily(restated=False)[(restated_day, key)][0]
    after_truth = traffic.reported_daily(restated=True)[(restated_day, key)][0]
    assert (day, restated_key, before, after) == (restated_day, key, before_truth, after_truth)
    assert after - before == planted["usd"]


def test_sixty_days_take_at_most_two_query_calls(tmp_path, monkeypatch):
    from conftest import make_settings
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    traffic = generate_traffic(seed=3, start=date(2026, 8, 1), days=60, requests_per_day=10)
    with SimulatorServer(traffic) as sim:
        settings = make_settings(tmp_path, sim, COMET_LEDGER_START_DATE="2026-01-01")
        materialize_days(settings, date(2026, 8, 1), date(2026, 9, 29))
        calls = quota_calls(sim)
        assert len(calls) == 2
        assert warehouse_truth(settings) == traffic.reported_daily(restated=False)


def test_rerunning_gives_identical_tables(settings, sim):
    materialize_days(settings, SIM_START, LAST)
    materialize_days(settings, SIM_START, LAST)  # after the restatement flipped
    first = table_rows(settings, "SELECT * EXCLUDE (pulled_at, pull_id) FROM quota_daily ORDER BY ALL")
    restatements = table_rows(settings, "SELECT count(*) FROM quota_restatements")
    materialize_days(settings, SIM_START, LAST)
    assert table_rows(settings, "SELECT * EXCLUDE (pulled_at, pull_id) FROM quota_daily ORDER BY ALL") == first
    assert table_rows(settings, "SELECT count(*) FROM quota_restatements") == restatements


def test_unlimited_key_snapshot_has_null_amounts(settings, sim):
    materialize_days(settings, LAST, LAST)
    rows = table_rows(settings, "SELECT key_name, remain_quota_usd, used_quota_usd FROM key_snapshots WHERE is_unlimited")
    assert rows == [("team-b-prod", None, None)]
    limited = table_rows(settings, "SELECT key_name, remain_quota_usd FROM key_snapshots WHERE NOT is_unlimited ORDER BY 1")
    assert [k for k, _ in limited] == ["ledger-query", "media-tasks", "research-batch", "team-a-dev", "team-a-prod"]
    assert dict(limited)["ledger-query"] == 0  # the advised quota-0 query key


@pytest.mark.parametrize("codes", [[500, 502, 503], [504, 524, 503]])
def test_transient_faults_are_retried_to_exactly_the_right_rows(settings, sim, traffic, codes):
    # Four failures, then an answer: within the five attempts CometAPI's guide allows.
    sim.faults.add("rate_limit", times=1, retry_after=0)
    sim.faults.add("status", times=3, codes=codes)
    materialize_days(settings, SIM_START, LAST)
    assert warehouse_truth(settings) == traffic.reported_daily(restated=False)


@pytest.mark.parametrize("kind, opts", [
    ("maintenance", {}),
    ("html_redirect", {}),
    ("error_body_200", {}),
])
def test_a_lasting_fault_fails_the_run_and_changes_nothing(settings, sim, kind, opts):
    materialize_days(settings, SIM_START, LAST)
    before = (lake_digest(settings), warehouse_digest(settings))
    sim.faults.add(kind, times=None, **opts)
    result = materialize_days(settings, SIM_START, LAST, raise_on_error=False)
    assert not result.success
    assert (lake_digest(settings), warehouse_digest(settings)) == before
