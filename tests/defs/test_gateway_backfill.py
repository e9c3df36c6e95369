"""A backfill across 2026-02-04, the day the upstream gateway began to log request ids, end to end:
rows before it are kept, matched to client logs by response id, and billed to the cent."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import make_settings, materialize_days, table_rows
from pipelines.lib import lake
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import REQUEST_IDS_FROM, generate_traffic

FIRST, DAYS = date(2026, 1, 30), 9
LAST = FIRST + timedelta(days=DAYS - 1)
REPO_OWNERS = str(Path(__file__).resolve().parents[2] / "config" / "key_owners.csv")


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    traffic = generate_traffic(seed=7, start=FIRST, days=DAYS, requests_per_day=30)
    home = tmp_path_factory.mktemp("across")
    prices = home / "sim-prices.csv"
    prices.write_text(prices_csv(FIRST, DAYS))
    with SimulatorServer(traffic) as sim:
        settings = make_settings(home / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_START_DATE="2026-01-01", COMET_LEDGER_PRICES=str(prices),
                                 COMET_LEDGER_KEY_OWNERS=REPO_OWNERS)
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, FIRST, LAST)
        yield settings, traffic, sim.truth()


def test_every_day_is_billed_to_the_cent_and_checked(backfilled):
    settings, traffic, truth = backfilled
    assert FIRST < REQUEST_IDS_FROM <= LAST
    billed = table_rows(settings, "SELECT usage_date, key_name, billed_cost_usd FROM recon_key_daily "
                                  "WHERE billed_cost_usd <> 0")
    late = (traffic.planted["restatement"]["date"], "media-tasks")  # its late row shows once the day is reported
    assert {(d, k): b for d, k, b in billed if (d, k) != late} == \
        {k: usd for k, (usd, _) in truth.items() if usd and k != late}
    checks = pq.read_table(lake.files(settings.lake, "gateway_checks")).to_pylist()
    assert {(c["check_name"], c["status"]) for c in checks} == {
        ("log_stat", "passed"), ("data_self", "passed"), ("total", "passed")}
    assert len({c["utc_date"] for c in checks}) == DAYS


def test_rows_before_request_ids_match_client_logs_by_response_id(backfilled):
    settings, traffic, _ = backfilled
    rows = table_rows(settings, "SELECT usage_date >= $cut, seen_in, count(*) FROM requests GROUP BY ALL",
                      {"cut": REQUEST_IDS_FROM})
    seen = {(after, seen_in): n for after, seen_in, n in rows}
    assert seen[(False, "both")] > 20  # matched without a request id
    logged = [r for r in traffic.iter_requests() if r.client_logged and r.log_type == 2 and not r.correction_of]
    before = [r for r in logged if r.ts.date() < REQUEST_IDS_FROM]
    # an Anthropic stream's final event carries no id: such a call matches by neither id before 2026-02-04
    unmatchable = [r for r in before if r.usage_shape in ("anthropic_message_delta", "task")]
    assert seen[(False, "both")] == len(before) - len(unmatchable)
    assert seen.get((True, "client"), 0) == 0  # from 2026-02-04 every logged call matches its request id
    explanations = [e for (e,) in table_rows(settings, "SELECT explanation FROM recon_key_daily WHERE usage_date < $cut",
                                               {"cut": REQUEST_IDS_FROM})]
    assert any("carry neither a request id nor a response id" in e for e in explanations)


def test_the_legacy_and_the_new_task_corrections_are_both_read(backfilled):
    settings, traffic, _ = backfilled
    planted = traffic.planted
    rows = table_rows(settings, "SELECT usage_date, key_name, explanation, adjustments_usd FROM recon_key_daily")
    by_key_day = {(d, k): (e, a) for d, k, e, a in rows}
    negative = by_key_day[(planted["negative_correction"]["date"], "media-tasks")]
    assert planted["negative_correction"]["date"] < REQUEST_IDS_FROM  # a type-2 row with a negative quota
    assert "late billing corrections in the ledger: -$0.040000" in negative[0]
    assert negative[1] <= Decimal("-0.040000")
