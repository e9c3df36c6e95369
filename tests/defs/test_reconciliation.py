"""Reconciliation against the simulator: every planted reality flagged with its cause, no clean
key-day flagged, per-request costs equal an independent computation, allocations sum exactly."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days, table_rows, warehouse_digest
from pipelines.simulator.catalog import GROUP_RATIO, price_at, price_change_date, prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
REPO_OWNERS = str(Path(__file__).resolve().parents[2] / "config" / "key_owners.csv")


def recon_settings(tmp_path, sim, traffic, name="home"):
    prices = tmp_path / "sim-prices.csv"
    prices.write_text(prices_csv(SIM_START, SIM_DAYS))
    settings = make_settings(tmp_path / name, sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                             COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=REPO_OWNERS,
                             COMET_LEDGER_PRICE_SOURCES="config")  # the operator's table alone: glm-4.6 stays unpriced
    write_inbox(traffic, settings.inbox)
    return settings


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory, traffic):
    """One simulated month, backfilled, then re-pulled like the daily schedule does (shared, read-only)."""
    with SimulatorServer(traffic) as sim:
        settings = recon_settings(tmp_path_factory.mktemp("recon"), sim, traffic)
        materialize_days(settings, SIM_START, LAST)
        materialize_days(settings, LAST - timedelta(days=3), LAST)  # the daily re-pull catches the restatement
        yield settings


def test_every_planted_reality_is_flagged_with_its_cause_and_nothing_else(reconciled, traffic):
    planted = traffic.planted
    expected = {
        (planted["missing_logs"]["date"], planted["missing_logs"]["key"]):
            ("over_reported", f"7 requests billed by CometAPI are missing from your logs: ${planted['missing_logs']['usd']}"),
        (planted["unknown_usage"]["date"], planted["unknown_usage"]["key"]):
            ("over_reported", f"3 requests with unknown usage (interrupted streams or error replies) have no estimate "
                              f"(billed ${planted['unknown_usage']['usd']})"),
        (planted["restatement"]["date"], planted["restatement"]["key"]):
            ("over_reported", "late billing corrections in the ledger: +$0.175000"),
        (planted["negative_correction"]["date"], planted["negative_correction"]["key"]):
            ("under_reported", "late billing corrections in the ledger: -$0.040000"),
        (planted["refund"]["date"], planted["refund"]["key"]):
            ("under_reported", "refunds in the ledger: -$0.040000"),
    }
    for day in planted["unpriced_model"]["dates"]:
        expected[(day, planted["unpriced_model"]["key"])] = ("unpriced", "of unpriced model glm-4.6 have no estimate")
    rows = table_rows(reconciled, "SELECT usage_date, key_name, status, explanation FROM recon_key_daily")
    flagged = {(d, k): (s, e) for d, k, s, e in rows if s != "matched"}
    assert set(flagged) == set(expected)
    for key_day, (status, words) in expected.items():
        assert flagged[key_day][0] == status, (key_day, flagged[key_day])
        assert words in flagged[key_day][1], (key_day, flagged[key_day][1])
    # upstream bills an interrupted stream on its own estimate of the prompt (service/text_quota.go): said so
    unknown = flagged[(planted["unknown_usage"]["date"], planted["unknown_usage"]["key"])][1]
    assert (f"CometAPI billed 3 calls on its own estimate of the prompt because the provider returned no usage "
            f"(an interrupted stream is billed, not free): ${planted['unknown_usage']['usd']}") in unknown
    restated = flagged[(planted["restatement"]["date"], planted["restatement"]["key"])][1]
    assert "restated by a later pull: $0.640000 -> $0.815000" in restated
    # every other key-day is matched to the unit-rounding threshold
    assert len(rows) - len(flagged) == len(traffic.reported_daily(restated=True)) - len(expected)


def test_per_request_costs_equal_an_independent_computation(reconciled, traffic):
    rows = table_rows(reconciled, "SELECT request_id, usage_date, model, estimated_cost_usd, price_version_id, "
                                  "pricing_status FROM requests")
    by_id = {r.request_id: r for r in traffic.iter_requests()}
    checked = 0
    for request_id, day, model, estimated, version, status in rows:
        sim = by_id[request_id]
        if sim.model == "glm-4.6":
            assert (estimated, status, version) == (None, "unpriced", None)
            continue
        price = price_at(sim.model, day, SIM_START, SIM_DAYS)
        if price.per_call:
            expected = price.model_price * GROUP_RATIO
        else:
            uncached = sim.prompt_tokens - sim.cached_tokens - sim.cache_write_tokens
            weighted = (Decimal(uncached) + sim.cached_tokens * price.cache_ratio
                        + sim.cache_write_tokens * price.cache_creation_ratio
                        + sim.completion_tokens * price.completion_ratio)
            expected = weighted * price.model_ratio * GROUP_RATIO * 2 / Decimal(1_000_000)
        assert estimated == pytest.approx(float(expected), abs=1e-9), request_id
        assert status == "priced"
        assert model.startswith(version.split("@")[0])  # the model's own entry, or its base without a snapshot
        checked += 1
    assert checked > 1000


def test_the_price_change_switches_version_on_its_day(reconciled, traffic):
    change = traffic.planted["price_change"]
    versions = table_rows(reconciled, "SELECT usage_date >= $d, price_version_id FROM requests "
                                      "WHERE model = 'gpt-4o-mini' GROUP BY ALL ORDER BY 1",
                          {"d": change["date"]})
    assert [before_after for before_after, _ in versions] == [False, True]
    assert versions[0][1] != versions[1][1]


def test_allocations_sum_exactly_to_what_cometapi_reported(reconciled):
    assert table_rows(reconciled, """
        SELECT count(*) FROM quota_daily q
        LEFT JOIN (SELECT usage_date, key_name, sum(allocated_cost_usd) s FROM cost_key_model_daily GROUP BY ALL) a
        USING (usage_date, key_name) WHERE a.s IS DISTINCT FROM q.reported_cost_usd""") == [(0,)]
    per_day = table_rows(reconciled, """
        SELECT (SELECT sum(allocated_cost_usd) FROM cost_model_daily), (SELECT sum(reported_cost_usd) FROM quota_daily),
               (SELECT sum(allocated_cost_usd) FROM cost_category_monthly),
               (SELECT sum(reported_cost_usd) FROM chargeback_monthly)""")
    [(models, reported, categories, chargeback)] = per_day
    assert models == reported == categories == chargeback
    bases = dict(table_rows(reconciled, "SELECT allocation_basis, count(*) FROM cost_key_model_daily GROUP BY ALL"))
    assert bases.get("gateway_billed", 0) > 0


def test_unpriced_requests_are_null_and_counted_never_zero(reconciled):
    rows = table_rows(reconciled, "SELECT count(*), count(estimated_cost_usd), any_value(billing_category) "
                                  "FROM requests WHERE model = 'glm-4.6'")
    [(count, priced, category)] = rows
    assert count > 0 and priced == 0 and category == "token"  # category from the ledger's model_price -1


def test_teams_follow_the_key_owners_dates(reconciled):
    teams = table_rows(reconciled, "SELECT team, min(usage_date), max(usage_date) FROM recon_key_daily "
                                   "WHERE key_name = 'research-batch' GROUP BY ALL ORDER BY 2")
    assert len(teams) == 2 and teams[0][2] < teams[1][1]


def test_task_refunds_and_corrections_are_tied_to_the_task_they_adjust(reconciled, traffic):
    rows = table_rows(reconciled, "SELECT usage_date, key_name, model, kind, billed_usd, task_id, task_request_id, "
                                  "task_usage_date, task_key_name, task_model FROM ledger_task_adjustments ORDER BY ALL")
    expected = []
    for name, kind in (("refund", "refund"), ("negative_correction", "correction"), ("restatement", "correction")):
        p = traffic.planted[name]
        expected.append((p["booked_date"], "media-tasks", p["model"], kind, p["usd"], p["task_id"],
                         p["task_request_id"], p["date"], "media-tasks", p["model"]))
    assert rows == sorted(expected)
    # the link is the task id your logs hold: the submit's reply, never the ledger's own consume row
    tasks = table_rows(reconciled, "SELECT request_id, task_id, seen_in FROM requests WHERE task_id IS NOT NULL")
    assert {p["task_request_id"] for p in map(traffic.planted.get, ("refund", "restatement"))} <= {r for r, _, _ in tasks}
    assert all(t.startswith("task_") and seen != "gateway" for _, t, seen in tasks) and len(tasks) > 20
    # the amounts are the ledger's adjustments, as recon_key_daily counts them
    [(adjusted,)] = table_rows(reconciled, "SELECT sum(adjustments_usd) FROM recon_key_daily")
    assert sum(r[4] for r in rows) == adjusted


def test_a_refund_after_midnight_is_tied_to_the_task_of_the_day_before_whichever_day_is_built_first(tmp_path):
    late = generate_traffic(seed=7, start=date(2026, 10, 31), days=2, requests_per_day=20,
                            refund_delay=timedelta(hours=13))
    refund = late.planted["refund"]
    assert (refund["date"], refund["booked_date"]) == (date(2026, 10, 31), date(2026, 11, 1))
    query = ("SELECT usage_date, kind, billed_usd, task_request_id, task_usage_date, task_model "
             "FROM ledger_task_adjustments WHERE task_id = $t")
    linked = [(date(2026, 11, 1), "refund", refund["usd"], refund["task_request_id"], date(2026, 10, 31), "mj_imagine")]
    with SimulatorServer(late) as sim:
        prices = tmp_path / "prices.csv"
        prices.write_text(prices_csv(date(2026, 10, 31), 2))
        settings = make_settings(tmp_path / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=REPO_OWNERS)
        write_inbox(late, settings.inbox)
        materialize_days(settings, date(2026, 11, 1), date(2026, 11, 1))  # the refund's day first: no task yet
        unlinked = [(date(2026, 11, 1), "refund", refund["usd"], None, None, None)]
        assert table_rows(settings, query, {"t": refund["task_id"]}) == unlinked
        materialize_days(settings, date(2026, 10, 31), date(2026, 10, 31))  # the task's day links it
        assert table_rows(settings, query, {"t": refund["task_id"]}) == linked


def test_incremental_windows_equal_a_full_rebuild(tmp_path, sim, traffic):
    whole = recon_settings(tmp_path, sim, traffic, "whole")
    materialize_days(whole, SIM_START, LAST)
    sim.reset_restatement()
    pieces = recon_settings(tmp_path, sim, traffic, "pieces")
    for first in range(0, SIM_DAYS, 10):
        materialize_days(pieces, SIM_START + timedelta(days=first), SIM_START + timedelta(days=first + 9))
    tables = ("requests", "ledger_task_adjustments", "recon_key_daily", "cost_key_model_daily", "cost_model_daily",
              "cost_category_monthly", "chargeback_monthly")
    a, b = warehouse_digest(whole), warehouse_digest(pieces)
    assert {t: a[t] for t in tables} == {t: b[t] for t in tables}


def test_every_public_table_and_column_has_a_comment(reconciled):
    tables = table_rows(reconciled, "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal UNION ALL "
                                    "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal ORDER BY 1")
    assert {t for t, _ in tables} >= {"quota_daily", "quota_restatements", "balance_snapshots", "key_snapshots",
                                      "prices", "key_owners", "requests", "recon_key_daily", "cost_model_daily",
                                      "cost_category_monthly", "chargeback_monthly", "rejects", "inbox_files"}
    assert [t for t, comment in tables if not comment] == []
    bare = table_rows(reconciled, "SELECT table_name || '.' || column_name FROM duckdb_columns() "
                                  "WHERE NOT internal AND comment IS NULL ORDER BY 1")
    assert bare == []


def test_tables_built_by_older_sql_are_rebuilt_over_the_whole_history(tmp_path, sim, traffic):
    from pipelines.lib.reconciliation import rebuild_window
    from pipelines.lib.warehouse import publish

    settings = recon_settings(tmp_path, sim, traffic)
    materialize_days(settings, SIM_START, LAST)
    before = warehouse_digest(settings)
    with publish(settings.warehouse_path, zone=settings.timezone) as con:
        # a row left by an older version of the SQL, outside the window rebuilt below; `requests` (a
        # view over its day files) is the model whose SQL changed
        con.execute("UPDATE recon_key_daily SET explanation = 'older' WHERE usage_date = $d", {"d": SIM_START})
        con.execute("UPDATE model_versions SET sql_sha256 = 'older' WHERE model = 'requests'")
        rebuilt = rebuild_window(con, settings.lake, LAST, LAST, settings.tolerance_usd, settings.tolerance_pct)
    assert rebuilt == (SIM_START, LAST)
    after = warehouse_digest(settings)
    tables = ("requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily", "chargeback_monthly")
    assert {t: after[t] for t in tables} == {t: before[t] for t in tables}


def test_the_monthly_review_asset_writes_the_pack(reconciled):
    import dagster as dg

    from pipelines.definitions import build_definitions

    job = build_definitions(reconciled).resolve_job_def("monthly_review")
    result = job.execute_in_process(partition_key="2026-10-01", instance=dg.DagsterInstance.ephemeral())
    assert result.success
    pack = reconciled.home / "reports" / "review-2026-10"
    names = {p.name for p in pack.iterdir()}
    assert {"manifest.json", "reconciliation.md", "reconciliation.html", "quota_daily_2026-10.csv",
            "quota_daily_2026-10.parquet", "sample_responses.jsonl"} <= names
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "review_pack"]
    assert event.materialization.metadata["path"].value == str(pack)
    [focus_event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "focus_export"]
    export = reconciled.home / "reports" / "focus-2026-10"
    metadata = focus_event.materialization.metadata
    assert metadata["path"].value == str(export) and metadata["partial_month"].value is False
    assert {p.name for p in export.iterdir()} == {"manifest.json", "focus_cost_and_usage_2026-10.csv",
                                                  "focus_cost_and_usage_2026-10.parquet"}
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["totals"]["billed_cost_usd"] == metadata["billed_cost_usd"].value and manifest["rows"] > 0


def test_every_token_row_the_simulator_bills_equals_its_own_ratios_to_the_unit(reconciled, traffic):
    """The simulated gateway bills as new-api does (pipelines/simulator/catalog.py), so the unit check
    (sql/macros/ledger_units.sql) finds every token-billed row exact; the ledger's observed ratios show
    the mid-period change of gpt-4o-mini on its day, whatever the price sources in use."""
    checked, mismatched, rows = table_rows(reconciled, "SELECT sum(checked_requests), sum(mismatched_requests), "
                                                       "sum(requests) FROM ledger_price_days")[0]
    token_rows = table_rows(reconciled, "SELECT count(*) FROM requests WHERE billing_category = 'token' "
                                        "AND billed_cost_usd IS NOT NULL AND seen_in <> 'client'")[0][0]
    assert checked == token_rows > 0 and mismatched == 0
    assert table_rows(reconciled, "SELECT count(*) FROM ledger_quota_mismatches") == [(0,)]
    ratios = table_rows(reconciled, "SELECT model_ratio, min(usage_date), max(usage_date) FROM ledger_price_days "
                                    "WHERE model = 'gpt-4o-mini' GROUP BY ALL ORDER BY 2")
    change = price_change_date(SIM_START, SIM_DAYS)
    assert [(r, first == change if r == 0.06 else last < change) for r, first, last in ratios] == [
        (0.075, True), (0.06, True)]
