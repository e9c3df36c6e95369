"""Prices from the gateway's own ratios and the public catalog: ledger-observed versions, the price
change read from the data, precedence config > ledger > catalog, the unit-exact quota check, and
bad input (a mistyped ratio, a bad catalog entry) rejected while the rest loads.

One small hand-made lake (three days of ledger rows, two catalog snapshots) and one warehouse build
shared by the module."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import duckdb
import pytest

from pipelines.lib import lake
from pipelines.lib.gateway import lake as gateway_lake
from pipelines.lib.prices import catalog
from pipelines.lib.quota import lake as quota_lake
from pipelines.lib.reconciliation import anomalies
from pipelines.lib.request_logs import lake as request_log_lake
from pipelines.lib.gateway.ledger import parse_item, records_to_table
from pipelines.lib.reconciliation import load_config, rebuild_window
from pipelines.lib.warehouse import publish, run_model

DAYS = (date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3))
HEADER = ("model,billing_category,input_usd_per_mtok,output_usd_per_mtok,cache_read_usd_per_mtok,"
          "cache_write_usd_per_mtok,per_call_usd,gateway_ratio,effective_from,effective_to,source\n")
CONFIG_ROW = "gpt-4o,token,3,12,1.5,,,0.8,2024-01-01,,operator\n"


def other(model_ratio=0.075, completion_ratio=4, cache_ratio=0.5, group_ratio=0.8, **extra) -> str:
    return json.dumps({"model_ratio": model_ratio, "completion_ratio": completion_ratio, "cache_ratio": cache_ratio,
                       "group_ratio": group_ratio, "model_price": -1, "cache_tokens": extra.pop("cache_tokens", 0),
                       **extra})


def units(prompt, completion, cached, model_ratio, completion_ratio=4, cache_ratio=0.5, group_ratio=0.8) -> int:
    """An independent statement of upstream's rule, in exact decimals: half away from zero, at least 1."""
    from decimal import ROUND_HALF_UP, Decimal as D
    q = ((D(prompt - cached) + D(cached) * D(str(cache_ratio)) + D(completion) * D(str(completion_ratio)))
         * D(str(model_ratio)) * D(str(group_ratio)))
    return max(1, int(q.quantize(D(1), rounding=ROUND_HALF_UP)))


def item(n: int, day: date, model: str, prompt: int, completion: int, quota: int, other_json: str,
         cached: int = 0) -> dict:
    ts = int(datetime(day.year, day.month, day.day, 12, n % 60, tzinfo=timezone.utc).timestamp())
    return {"created_at": ts, "type": 2, "content": "", "token_name": "team-a-prod", "model_name": model,
            "quota": quota, "prompt_tokens": prompt, "completion_tokens": completion, "use_time": 1,
            "group": "default", "request_id": f"req-{day:%d}-{n:03d}", "other": other_json}


def ledger_items() -> dict[date, list[dict]]:
    days: dict[date, list[dict]] = {}
    for d, day in enumerate(DAYS):
        ratio = 0.075 if d < 2 else 0.06  # gpt-4o-mini gets cheaper on the third day
        rows = [item(i, day, "gpt-4o-mini", 1000 + 37 * i, 200 + i, units(1000 + 37 * i, 200 + i, 100, ratio),
                     other(ratio, cache_tokens=100), cached=100) for i in range(5)]
        rows.append(item(10, day, "gpt-4o", 400, 100, units(400, 100, 0, 1.25), other(1.25)))
        # tiny call: 0.3 units before rounding, billed the minimum of 1
        rows.append(item(11, day, "gpt-4.1-nano", 3, 0, 1, other(0.05, cache_ratio=0.25)))
        rows.append(item(12, day, "mj_imagine", 0, 0, 20000,
                         json.dumps({"model_ratio": 0, "group_ratio": 0.8, "completion_ratio": 0, "model_price": 0.05})))
        days[day] = rows
    # a ratio of the wrong type: billed and kept, but no price version made from it
    days[DAYS[0]].append(item(20, DAYS[0], "gpt-4o-mini", 500, 50, 999, other("0.075")))
    # billed otherwise than its ratios say (a unit off): listed with the reason, never hidden
    days[DAYS[1]].append(item(21, DAYS[1], "gpt-4o", 400, 100, units(400, 100, 0, 1.25) + 1, other(1.25)))
    return days


def write_lake(root) -> None:
    for day, items in ledger_items().items():
        lake.write_partition_file(root, "gateway_logs", "utc_date", day, "ledger",
                                  records_to_table([parse_item(it) for it in items]))
    for day, glm_input in ((DAYS[0], 0.6), (DAYS[2], 0.5)):  # the catalog lowers glm-4.6 on the third day
        entries = [{"id": "glm-4.6", "pricing": {"input": glm_input, "output": 2.4, "group_ratio": 0.8}},
                   {"id": "claude-x", "pricing": {"input": 3, "output": 15}},
                   {"id": "broken-negative", "pricing": {"input": -1, "output": 2}},
                   {"id": "broken-absurd", "pricing": {"input": 1e9, "output": 2}},
                   {"id": "broken-type", "pricing": {"input": "2.5", "output": 10}},
                   {"id": "broken-missing", "pricing": {}},
                   {"pricing": {"input": 1, "output": 1}}]
        catalog.land(root, catalog.parse_catalog(day, entries))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("ledger-prices")
    root = home / "lake"
    write_lake(root)
    prices = home / "prices.csv"
    prices.write_text(HEADER + CONFIG_ROW)
    owners = home / "owners.csv"
    owners.write_text("key_name,team,project,cost_center,effective_from,effective_to\n")
    warehouse = home / "warehouse.duckdb"
    with publish(warehouse, zone="UTC") as con:
        for model in ("stg_quota_pulls", "stg_quota_daily", "quota_daily", "quota_restatements"):
            run_model(con, model, quota_lake.model_params(root, DAYS[0], DAYS[-1]))
        run_model(con, "balance_snapshots", quota_lake.model_params(root))
        load_config(con, prices, owners)
        rebuild_window(con, root, DAYS[0], DAYS[-1], 0.01, 1.0)
        anomalies.detect(con, DAYS[0], DAYS[-1], datetime(2026, 10, 4, tzinfo=timezone.utc))
        params = (request_log_lake.staging_params(root) | gateway_lake.reject_params(root)
                  | catalog.snapshot_params(root))
        run_model(con, "stg_inbox_files", params)
        run_model(con, "rejects", params)
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    yield con
    con.close()


def test_each_change_of_applied_ratios_is_a_ledger_price_version_with_the_days_it_was_seen(built):
    rows = built.execute(
        "SELECT effective_from, effective_to, first_seen_date, last_seen_date, input_usd_per_mtok::VARCHAR, "
        "output_usd_per_mtok::VARCHAR, cache_read_usd_per_mtok::VARCHAR, gateway_ratio::VARCHAR FROM prices "
        "WHERE source = 'ledger' AND model = 'gpt-4o-mini' ORDER BY effective_from").fetchall()
    assert rows == [
        (DAYS[0], DAYS[2], DAYS[0], DAYS[1], "0.150000", "0.600000", "0.075000", "0.800000"),
        (DAYS[2], None, DAYS[2], DAYS[2], "0.120000", "0.480000", "0.060000", "0.800000"),
    ]
    per_call = built.execute("SELECT per_call_usd::VARCHAR, billing_category FROM prices "
                             "WHERE source = 'ledger' AND model = 'mj_imagine'").fetchall()
    assert per_call == [("0.050000", "per_call")]


def test_the_price_change_is_an_anomaly_with_the_spend_it_affects(built):
    billed = built.execute("SELECT sum(billed_cost_usd)::DOUBLE FROM requests "
                           "WHERE model = 'gpt-4o-mini' AND usage_date = $d", {"d": DAYS[2]}).fetchone()[0]
    found = built.execute("SELECT usage_date, key_name, amount_usd, detail FROM anomalies "
                          "WHERE kind = 'price_change'").fetchall()
    assert [(d, k, round(a, 6)) for d, k, a, _ in found] == [(DAYS[2], None, round(billed, 6))]
    assert billed > 0
    detail = found[0][3]
    assert "gpt-4o-mini" in detail and "$0.12 in / $0.48 out per 1M tokens x 0.8" in detail
    assert "(before: $0.15 in / $0.6 out per 1M tokens x 0.8)" in detail and "over 5 requests" in detail


def test_config_wins_then_ledger_then_catalog_and_every_estimate_names_its_version(built):
    sources = dict(built.execute("SELECT model, string_agg(DISTINCT price_source, ',' ORDER BY price_source) "
                                 "FROM requests GROUP BY model").fetchall())
    # gpt-4o: the operator's row, although the ledger has its ratios too
    assert sources == {"gpt-4o": "config", "gpt-4o-mini": "ledger", "gpt-4.1-nano": "ledger",
                       "mj_imagine": "ledger"}
    config_id = built.execute("SELECT price_version_id FROM config_prices").fetchone()[0]
    assert built.execute("SELECT DISTINCT price_version_id FROM requests WHERE model = 'gpt-4o'").fetchall() == [
        (config_id,)]
    assert built.execute("SELECT count(*) FROM requests WHERE estimated_cost_usd IS NOT NULL AND "
                         "(price_version_id IS NULL OR price_source IS NULL)").fetchone()[0] == 0
    assert built.execute("SELECT count(*) FROM requests r LEFT JOIN prices p USING (price_version_id) "
                         "WHERE r.price_version_id IS NOT NULL AND p.source IS DISTINCT FROM r.price_source"
                         ).fetchone()[0] == 0


def test_an_estimate_from_the_ledger_is_the_billed_amount_before_rounding(built):
    rows = built.execute("SELECT request_id, estimated_cost_usd, billed_cost_usd::DOUBLE FROM requests "
                         "WHERE price_source = 'ledger' AND billing_category = 'token' "
                         "AND request_id NOT IN (SELECT request_id FROM ledger_quota_mismatches)").fetchall()
    assert len(rows) == 18  # 5 gpt-4o-mini and 1 gpt-4.1-nano a day (the mistyped row is listed)
    off = [(r, e, b) for r, e, b in rows if abs(e - b) > 0.000001 and r != "req-01-011" and r != "req-02-011"
           and r != "req-03-011"]
    assert off == []  # within half a unit (0.000001 USD) of what was billed; the 1-unit minimum aside


def test_every_token_row_is_checked_to_the_unit_and_mismatches_are_listed_with_the_reason(built):
    checked, mismatched = built.execute("SELECT sum(checked_requests), sum(mismatched_requests) "
                                        "FROM ledger_price_days").fetchone()
    assert (checked, mismatched) == (3 * 7 + 1, 1)  # the mistyped row has no price day: listed below
    listed = built.execute("SELECT request_id, quota_units, expected_units, difference_units, reason "
                           "FROM ledger_quota_mismatches ORDER BY request_id").fetchall()
    assert listed == [("req-01-020", 999, None, None, "ratio_unreadable"),
                      ("req-02-021", units(400, 100, 0, 1.25) + 1, units(400, 100, 0, 1.25), 1, "formula_differs")]


def test_a_mistyped_ratio_makes_no_price_and_is_a_reject(built):
    assert built.execute("SELECT sum(requests) FROM ledger_price_days WHERE model = 'gpt-4o-mini' "
                         "AND usage_date = $d", {"d": DAYS[0]}).fetchone()[0] == 5
    assert built.execute("SELECT billed_cost_usd::VARCHAR FROM requests WHERE request_id = 'req-01-020'"
                         ).fetchone() == ("0.001998",)  # still billed and reconciled
    rejects = built.execute("SELECT source, reason, detail FROM rejects WHERE source = 'gateway_ratios'").fetchall()
    assert [(s, r) for s, r, _ in rejects] == [("gateway_ratios", "bad_ratio")]
    assert "req-01-020" in rejects[0][2]


def test_bad_catalog_entries_are_rejects_and_the_rest_becomes_catalog_versions(built):
    rejects = built.execute("SELECT line, reason FROM rejects WHERE source = 'catalog' ORDER BY file, line"
                            ).fetchall()
    expected = [(3, "negative_price"), (4, "absurd_price"), (5, "bad_price_type"), (6, "missing_price"),
                (7, "missing_id")]
    assert rejects == expected * 2  # both snapshots
    versions = built.execute("SELECT model, effective_from, effective_to, input_usd_per_mtok::VARCHAR, "
                             "gateway_ratio::VARCHAR FROM prices WHERE source = 'catalog' ORDER BY ALL").fetchall()
    assert versions == [("claude-x", DAYS[0], None, "3.000000", "1.000000"),
                        ("glm-4.6", DAYS[0], DAYS[2], "0.600000", "0.800000"),
                        ("glm-4.6", DAYS[2], None, "0.500000", "0.800000")]


def test_a_repulled_catalog_day_replaces_its_snapshot(tmp_path):
    day = DAYS[0]
    catalog.land(tmp_path, catalog.parse_catalog(day, [{"id": "m", "pricing": {"input": 1, "output": 2}},
                                                       {"id": "bad", "pricing": {"input": -1, "output": 2}}]))
    catalog.land(tmp_path, catalog.parse_catalog(day, [{"id": "m", "pricing": {"input": 1.5, "output": 2}}]))
    params = catalog.snapshot_params(tmp_path)
    with duckdb.connect() as con:
        rows = con.execute("SELECT model, input_usd_per_mtok::VARCHAR FROM read_parquet($f)",
                           {"f": params["catalog_snapshot_files"]}).fetchall()
        rejects = con.execute("SELECT count(*) FROM read_parquet($f)", {"f": params["catalog_reject_files"]}
                              ).fetchone()[0]
    assert rows == [("m", "1.500000")] and rejects == 0


def test_the_packs_price_section_lists_the_change_with_the_spend_it_affects(built):
    from types import SimpleNamespace

    from pipelines.lib.review_pack.compose import _prices
    from pipelines.lib.review_pack.figures import PRICE_CHANGES
    from pipelines.lib.warehouse import run_query

    cursor = run_query(built, PRICE_CHANGES, {"first": date(2026, 10, 1), "last": date(2026, 10, 31)})
    names = [c[0] for c in cursor.description]
    changes = [dict(zip(names, row)) for row in cursor.fetchall()]
    section = _prices(SimpleNamespace(price_versions=[], unpriced_models=[], price_changes=changes))
    [sub] = [b for b in section.blocks if getattr(b, "title", "") == "Price changes seen in the ledger"]
    [table] = [b for b in sub.blocks if hasattr(b, "rows")]
    [(when, what, billed)] = table.rows
    assert when == "2026-10-03" and what.startswith("CometAPI's ledger shows a new price for gpt-4o-mini")
    spend = built.execute("SELECT sum(billed_cost_usd) FROM requests WHERE model = 'gpt-4o-mini' "
                          "AND usage_date = $d", {"d": DAYS[2]}).fetchone()[0]
    assert billed == f"{spend:,.6f}" or billed == f"{spend:.6f}"
