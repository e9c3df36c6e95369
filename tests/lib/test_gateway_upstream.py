"""The gateway ledger pulled from a gateway that behaves like upstream new-api (issue: capped totals,
rows without request ids, new type codes, task refunds, bare 429s), against the simulator."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pyarrow.parquet as pq
import pytest

from pipelines.lib import lake
from pipelines.lib.gateway import ledger as gateway_ledger
from pipelines.lib.cometapi.gateway import (
    FAILED,
    NOT_CHECKED,
    PASSED,
    GatewayClient,
    LedgerIncomplete,
    total_check,
)
from pipelines.lib.cometapi.http import RetryPolicy
from pipelines.lib.cometapi.pacing import Pacer, PacedTransport, RateLimit
from pipelines.lib.gateway.lake import backfill_estimate, calls_per_day, day_bounds, land_window, progress_line
from pipelines.lib.gateway.pull import consume_units, pull_span
from pipelines.lib.gateway.ledger import (
    GatewayRecord,
    GatewayReject,
    parse_item,
    records_to_table,
)
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import LOG_LOGIN, REQUEST_IDS_FROM, generate_traffic
from tests.conftest import tree_digest
from oracles.gateway import dedupe, number_repeats

UTC_ZONE = ZoneInfo("UTC")
FAST = RetryPolicy(max_attempts=3, base_delay=0.01)
BIG_DAY = date(2026, 2, 3)  # the day before request ids: > 10 000 rows at 16 000 requests a day


def now() -> datetime:
    return datetime(2026, 3, 1, 6, tzinfo=UTC)


def client(sim: SimulatorServer, **options) -> GatewayClient:
    return GatewayClient(sim.url, sim.access_token, policy=FAST, **options)


def day_truth(traffic, day: date) -> tuple[int, Decimal, int]:
    """(rows, signed USD of the money rows, type-2 quota units) the gateway shows for a day (the planted
    late correction stays hidden: no query-service call covered its day)."""
    rows = [r for r in traffic.requests_for_day(day) if traffic.is_visible(r, restated=False)]
    money = sum((r.usd for r in rows if r.log_type in (2, 6)), Decimal(0))
    return len(rows), money, sum(r.quota_units for r in rows if r.log_type == 2)


def landed(lake_root, day: date):
    return pq.read_table(lake.partition_dir(lake_root, "gateway_logs", "utc_date", day) / "ledger.parquet")


@pytest.fixture(scope="module")
def big_traffic():
    return generate_traffic(seed=7, start=date(2026, 2, 1), days=6, requests_per_day=16_000)


# --- 1. paging never trusts total -------------------------------------------------------------------


def test_a_day_above_10000_rows_is_pulled_whole_although_total_says_10000(big_traffic, tmp_path):
    rows, usd, units = day_truth(big_traffic, BIG_DAY)
    assert rows > 10_000
    with SimulatorServer(big_traffic) as sim, client(sim) as gateway:
        start, end = day_bounds(BIG_DAY, BIG_DAY)
        assert pull_span(gateway, start, end).total == 10_000  # what upstream's capped count says
        _, window = land_window(tmp_path, BIG_DAY, BIG_DAY, client=gateway, now=now)
    table = landed(tmp_path, BIG_DAY)
    assert table.num_rows == window.rows == rows
    assert sum(table["billed_usd"].to_pylist()) == usd == window.billed_usd
    checks = {check.name: check for _, _, check in window.checks}
    assert checks["total"].status == NOT_CHECKED and "cap" in checks["total"].detail
    assert (checks["log_stat"].status, checks["log_stat"].ledger_units, checks["log_stat"].server_units) == \
        (PASSED, units, units)
    assert checks["data_self"].status == PASSED


def test_total_only_raises_an_alarm_below_the_cap():
    assert total_check(3, 5).status == FAILED
    assert total_check(5, 5).status == PASSED
    assert total_check(7, 5).status == PASSED  # more rows than total: not an alarm
    assert total_check(3, 10_000).status == NOT_CHECKED
    assert total_check(12_000, 10_000).status == NOT_CHECKED
    assert total_check(3, None).status == NOT_CHECKED


def paged_gateway(pages: list[list[dict]], total: int | None, **options) -> GatewayClient:
    """A gateway answering /api/log/self with `pages` (then empty ones), and no stat or data route."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/api/log/self":
            return httpx.Response(404, json={"error": {"message": "Invalid URL", "type": "invalid_request_error"}})
        page = int(request.url.params["p"])
        items = pages[page - 1] if page <= len(pages) else []
        return httpx.Response(200, json={"success": True, "data": {"page": page, "page_size": 100, "total": total,
                                                                    "items": items}})

    return GatewayClient("http://gateway.test", "token", policy=FAST, transport=httpx.MockTransport(answer),
                         rate_limit=RateLimit(10_000, 1.0, margin_s=0), **options)


def rows(n: int, first: int = 0) -> list[dict]:
    return [{"id": i + 1, "type": 2, "created_at": 1_775_000_000 + i, "token_name": "k", "quota": 10,
             "request_id": f"r{first + i}"} for i in range(first, first + n)]


@pytest.mark.parametrize("pages, total, problem", [
    ([rows(100), rows(100)], None, "page 2 repeats page 1"),
    ([rows(100), rows(40, 100), rows(100, 140)], None, "page 2 held fewer items than page 1"),
    ([rows(100), rows(30, 100)], 150, "the pages held 130 rows but total says 150"),
])
def test_bad_paging_fails_the_span_with_one_line(pages, total, problem):
    with paged_gateway(pages, total) as gateway, pytest.raises(LedgerIncomplete) as failure:
        pull_span(gateway, 1_775_000_000, 1_775_086_399, export=False)
    message = str(failure.value)
    assert problem in message and "\n" not in message and "2026-03-31" in message


def test_paging_goes_on_to_an_empty_page_past_total_and_past_a_short_first_page():
    with paged_gateway([rows(100), rows(100, 100), rows(7, 200)], 10_000) as gateway:
        chunk = pull_span(gateway, 1_775_000_000, 1_775_086_399, export=False)
    # 3 pages, the empty one and the stat call; not /api/data/self: the span is not whole UTC hours
    assert chunk.items == 207 and chunk.calls == 3 + 1 + 1
    assert {check.name: check.status for check in chunk.checks} == {
        "total": NOT_CHECKED, "log_stat": NOT_CHECKED, "data_self": NOT_CHECKED}


# --- 2. completeness checks ------------------------------------------------------------------------


def test_a_stat_that_disagrees_fails_the_day_and_keeps_the_previous_lake(tmp_path):
    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=3, requests_per_day=30)
    day = date(2026, 3, 2)
    with SimulatorServer(traffic) as sim, client(sim) as gateway:
        land_window(tmp_path, day, day, client=gateway, now=now)
        before = tree_digest(tmp_path)
        sim.stat_adjust_units = 1
        with pytest.raises(LedgerIncomplete) as failure:
            land_window(tmp_path, day - timedelta(days=1), day, client=gateway, now=now)
        message = str(failure.value)
        assert message.startswith("gateway ledger of 2026-03-01 not landed") and "/api/log/self/stat says" in message
        assert "\n" not in message
        assert tree_digest(tmp_path) == before
        sim.stat_adjust_units = 0  # the cause is gone: a re-run converges
        _, window = land_window(tmp_path, day - timedelta(days=1), day, client=gateway, now=now)
    assert window.rows == sum(day_truth(traffic, d)[0] for d in (day - timedelta(days=1), day))
    statuses = {(d, check.name): check.status for d, _, check in window.checks}
    assert statuses[(day, "log_stat")] == statuses[(day, "data_self")] == PASSED


def test_a_check_the_gateway_does_not_offer_is_not_checked_never_passed(tmp_path):
    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=2, requests_per_day=30)
    with SimulatorServer(traffic, stat=False, data_self=False) as sim, client(sim) as gateway:
        _, window = land_window(tmp_path, date(2026, 3, 1), date(2026, 3, 2), client=gateway, now=now)
    statuses = {(check.name, check.status) for _, _, check in window.checks}
    assert statuses == {("log_stat", NOT_CHECKED), ("data_self", NOT_CHECKED), ("total", PASSED)}
    checks = pq.read_table(lake.files(tmp_path, "gateway_checks")[0]).to_pylist()
    assert {(c["check_name"], c["status"]) for c in checks} == statuses and len(checks) == 6
    assert all("not offered" in c["detail"] for c in checks if c["status"] == NOT_CHECKED)


def test_data_self_is_not_checked_where_the_span_is_not_whole_utc_hours(tmp_path):
    # the lake pulls whole UTC days; a span such as a day in Asia/Kolkata (UTC+05:30) cuts hourly buckets in half
    zone = ZoneInfo("Asia/Kolkata")
    start = int(datetime.combine(date(2026, 3, 2), datetime.min.time(), zone).timestamp())
    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=3, requests_per_day=30)
    with SimulatorServer(traffic) as sim, client(sim) as gateway:
        chunk = pull_span(gateway, start, start + 86_399)
    checks = {check.name: check for check in chunk.checks}
    assert checks["log_stat"].status == PASSED
    assert checks["data_self"].status == NOT_CHECKED and "whole UTC hours" in checks["data_self"].detail


# --- the export: only when it checks out, never against total ---------------------------------------


def test_the_export_is_used_only_where_it_adds_up_else_the_day_is_paged(big_traffic):
    day = date(2026, 2, 5)
    start, end = day_bounds(day, day)
    rows_, _, units = day_truth(big_traffic, day)
    with SimulatorServer(big_traffic, export=True) as sim, client(sim) as gateway:
        chunk = pull_span(gateway, start, end)
        assert (chunk.method, chunk.items, chunk.calls, chunk.consume_units) == ("export", rows_, 3, units)
        sim.stat_adjust_units = -5
        with pytest.raises(LedgerIncomplete):  # the export does not add up, and neither do the pages
            pull_span(gateway, start, end)
        assert gateway.export_available is True  # a disagreeing export is paged for its span only
    with SimulatorServer(big_traffic) as sim, client(sim) as gateway:  # upstream: no export route
        chunk = pull_span(gateway, start, end)
        assert chunk.method == "paging" and chunk.items == rows_ and gateway.export_available is False
        assert "HTTP 404" in chunk.fallback


def test_an_export_that_cannot_be_checked_is_not_taken(tmp_path):
    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=1, requests_per_day=30)
    start, end = day_bounds(date(2026, 3, 1), date(2026, 3, 1))
    with SimulatorServer(traffic, export=True, stat=False, data_self=False) as sim, client(sim) as gateway:
        chunk = pull_span(gateway, start, end)
    assert chunk.method == "paging" and "cannot be checked" in chunk.fallback


# --- 3. identity without request_id ------------------------------------------------------------------


def test_rows_before_request_ids_are_kept_counted_and_repulled_without_duplicates(big_traffic, tmp_path):
    day = BIG_DAY
    assert day < REQUEST_IDS_FROM
    rows_, usd, _ = day_truth(big_traffic, day)
    with SimulatorServer(big_traffic) as sim, client(sim) as gateway:
        _, first = land_window(tmp_path, day, day, client=gateway, now=now)
        _, again = land_window(tmp_path, day, day, client=gateway, now=now)
    table = landed(tmp_path, day)
    assert first.rows == again.rows == table.num_rows == rows_
    assert first.rows_without_request_id == rows_ and not any(table["has_request_id"].to_pylist())
    assert len(set(table["request_id"].to_pylist())) == rows_  # every row an identity of its own
    assert sum(table["billed_usd"].to_pylist()) == usd


def task_row(**changes) -> dict:
    item = {"id": 1, "type": 2, "created_at": 1_769_000_000, "token_name": "media-tasks", "model_name": "mj_imagine",
            "quota": 20_000, "content": "操作 imagine，按次计费", "other": json.dumps({"model_price": 0.05})}
    return item | changes


def test_identical_rows_are_separate_charges_and_an_export_of_them_does_not_double_them(tmp_path):
    items = [task_row(id=1), task_row(id=2), task_row(id=3, quota=40_000)]
    parsed = number_repeats(parse_item(item) for item in items)
    assert [r.has_request_id for r in parsed] == [False] * 3
    assert parsed[0].request_id != parsed[1].request_id == parsed[0].request_id + "-2"
    kept, duplicates = dedupe(parsed + number_repeats(parse_item(item) for item in items[:2]))
    assert len(kept) == 3 and len(duplicates) == 2  # the same two rows read twice: still two charges
    assert sum(r.billed_usd for r in kept) == Decimal("0.160000")
    table = gateway_ledger.number_repeats(records_to_table(parse_item(item) for item in items))
    assert table["request_id"].to_pylist() == [r.request_id for r in parsed]  # the fast path numbers alike


def test_rows_with_request_ids_keep_them_as_their_identity():
    record = parse_item(task_row(request_id=" 2026020409300012abcdef12 "))
    assert (record.request_id, record.has_request_id) == ("2026020409300012abcdef12", True)


# --- 4. money rows as upstream writes them -----------------------------------------------------------


def test_refunds_corrections_and_task_fields():
    refund = parse_item(task_row(type=6, other=json.dumps({"task_id": "task_1", "reason": "FAILURE"})))
    assert (refund.billed_usd, refund.task_id, refund.reason, refund.is_correction) == \
        (Decimal("-0.040000"), "task_1", "FAILURE", False)
    legacy = parse_item(task_row(quota=-10_000, other=json.dumps(
        {"task_id": 77, "pre_consumed": 20_000, "actual_quota": 10_000, "quota_delta": -10_000})))
    assert (legacy.billed_usd, legacy.is_correction, legacy.task_id, legacy.pre_consumed_quota, legacy.actual_quota) \
        == (Decimal("-0.020000"), True, "77", 20_000, 10_000)
    higher = parse_item(task_row(quota=5_000, content="adaptor调整", other=json.dumps(
        {"task_id": "t", "pre_consumed_quota": 20_000, "actual_quota": 25_000})))
    assert (higher.billed_usd, higher.is_correction, higher.is_request) == (Decimal("0.010000"), True, False)


def test_subscription_paid_rows_are_kept_and_marked():
    for other in ({"billing_source": "subscription", "subscription_id": 4}, {"wallet_quota_deducted": 0}):
        record = parse_item(task_row(other=json.dumps(other)))
        assert record.is_subscription and record.billed_usd == Decimal("0.040000")
    assert not parse_item(task_row(other=json.dumps({"wallet_quota_deducted": 20_000}))).is_subscription


@pytest.mark.parametrize("code", [0, LOG_LOGIN, 8, 42, 127])
def test_unknown_type_codes_are_kept_counted_and_never_spend(code, tmp_path):
    record = parse_item(task_row(type=code, token_name=""))
    assert isinstance(record, GatewayRecord) and record.billed_usd == 0 and record.quota_units == 20_000
    assert record.log_type_name == ("login" if code == LOG_LOGIN else "unknown")


def test_a_type_code_beyond_a_tinyint_is_rejected_not_kept():
    assert isinstance(parse_item(task_row(type=300)), GatewayReject)


def test_an_unknown_type_row_in_a_pull_is_counted_in_its_figures(tmp_path):
    day_items = rows(3) + [{"id": 4, "type": 42, "created_at": 1_775_000_100, "quota": 999, "content": "?"}]
    with paged_gateway([day_items], None) as gateway:
        _, window = land_window(tmp_path, date(2026, 3, 31), date(2026, 3, 31), client=gateway, now=now)
    assert window.rows == 4 and dict(window.unknown_type_codes) == {42: 1}
    assert window.billed_usd == Decimal("0.000060")  # 3 x 10 units; the unknown row's 999 units are not spend


# --- 6. what upstream bills that the notes missed ----------------------------------------------------


def test_surcharges_tiers_1h_cache_and_estimated_usage_are_kept():
    other = {"model_ratio": 1.25, "group_ratio": 1, "model_price": -1, "billing_mode": "tiered_expr",
             "tool_surcharges": [{"name": "web_search", "count": 1, "price": 10}], "cache_creation_tokens_1h": 900}
    record = parse_item(task_row(other=json.dumps(other)))
    assert (record.billing_mode, record.has_surcharge, record.cache_write_1h_tokens) == ("tiered_expr", True, 900)
    estimated = parse_item(task_row(content="上游无计费信息", completion_tokens=0))
    assert estimated.usage_estimated and estimated.billed_usd > 0


# --- 5. rate limits ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_keeps_upstreams_sliding_window_with_a_margin():
    clock = FakeClock()
    pacer = Pacer(RateLimit(360, 180.0), clock=clock, sleep=clock.sleep)
    assert sum(pacer.acquire() for _ in range(360)) == 0  # upstream lets a full window through at once
    assert pacer.acquire() == pytest.approx(182.0)  # request 361 waits for request 1 to be a window (+2 s) old
    assert pacer.acquire() == 0  # requests 2..360 went at the same instant: the next slot is open
    assert RateLimit().paced_per_second / RateLimit().per_second == pytest.approx(180 / 182)


def test_a_bare_429_pauses_every_request_for_a_growing_while():
    clock = FakeClock()
    pacer = Pacer(RateLimit(360, 180.0), clock=clock, sleep=clock.sleep)
    assert [pacer.back_off() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert pacer.acquire() == pytest.approx(4.0)
    pacer.succeeded()
    assert pacer.back_off() == 1.0
    assert max(pacer.back_off() for _ in range(20)) == 180.0


def test_paced_calls_never_trip_the_gateways_limit(tmp_path):
    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=3, requests_per_day=400)
    limit = RateLimit(12, 1.0, margin_s=0.05)
    with SimulatorServer(traffic, rate_limit=(12, 1.0), whole_seconds=False) as sim:
        pacer = Pacer(limit)
        with client(sim, transport=PacedTransport(sim.url, pacers=(pacer, Pacer(RateLimit(20, 1200.0))))) as gateway:
            _, window = land_window(tmp_path, date(2026, 3, 1), date(2026, 3, 3), client=gateway, now=now)
        assert sim.limiters[0].refused == 0 and not [c for c in sim.calls if c.status == 429]
    assert window.api_calls > 12 and pacer.sends == window.api_calls  # the export's 404 included
    assert pacer.waited_s > 0 and window.rows == sum(day_truth(traffic, d)[0] for d in traffic.dates)


def test_bare_429s_are_backed_off_and_the_pull_completes(tmp_path):
    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=1, requests_per_day=300)
    with SimulatorServer(traffic, rate_limit=(3, 0.5), whole_seconds=False) as sim:
        unpaced = Pacer(RateLimit(10_000, 1.0, margin_s=0))
        policy = RetryPolicy(max_attempts=8, base_delay=0.05, max_delay=0.5)
        with GatewayClient(sim.url, sim.access_token, policy=policy,
                           transport=PacedTransport(sim.url, pacers=(unpaced, unpaced))) as gateway:
            _, window = land_window(tmp_path, date(2026, 3, 1), date(2026, 3, 1), client=gateway, now=now)
        refused = [c for c in sim.calls if c.status == 429]
    assert refused and unpaced.refused == len(refused)
    assert window.rows == day_truth(traffic, date(2026, 3, 1))[0]


def test_a_backfill_says_up_front_how_long_the_ledger_takes():
    assert calls_per_day(100_000) == 1_003 and calls_per_day(40) == 3
    line = backfill_estimate(365, RateLimit())
    assert "365 day(s)" in line and "360 calls per 180 s" in line
    assert "51.4 h at 100,000 rows a day" in line  # 366 095 calls, 1 017 windows of 182 s


def test_progress_says_what_is_left_at_the_pace(big_traffic):
    with SimulatorServer(big_traffic) as sim, client(sim, rate_limit=RateLimit(360, 180.0)) as gateway:
        start, end = day_bounds(BIG_DAY, BIG_DAY)
        chunk = pull_span(gateway, start, end)
        line = progress_line(BIG_DAY, 1, 365, chunk, chunk.calls, 3.0, gateway)
    assert line.startswith(f"gateway ledger 1/365 ({BIG_DAY}): {chunk.items} rows in {chunk.calls} calls (paging)")
    assert "the other 364 days take about" in line and "at 360 calls per 180 s" in line


def test_consume_units_counts_type_2_as_received():
    items = rows(3) + [{"type": 6, "quota": 50}, {"type": 2, "quota": "7"}, {"type": True, "quota": 5}]
    assert consume_units(items) == 30


def test_the_evidence_pack_shows_each_days_checks(tmp_path):
    from types import SimpleNamespace

    from pipelines.lib.review_pack.compose import _ledger_completeness
    from pipelines.lib.review_pack.figures import _gateway_checks
    from pipelines.lib.review_pack.period import parse_month

    traffic = generate_traffic(seed=3, start=date(2026, 3, 1), days=2, requests_per_day=30)
    with SimulatorServer(traffic, data_self=False) as sim, client(sim) as gateway:
        land_window(tmp_path, date(2026, 3, 1), date(2026, 3, 2), client=gateway, now=now)
    rows = _gateway_checks(tmp_path, parse_month("2026-03", "UTC"))
    assert [(r["utc_date"], r["check_name"], r["status"]) for r in rows] == [
        (day, name, status) for day in (date(2026, 3, 1), date(2026, 3, 2))
        for name, status in (("data_self", NOT_CHECKED), ("log_stat", PASSED), ("total", PASSED))]
    section = _ledger_completeness(SimpleNamespace(gateway_checks=rows))
    bullets = next(block for block in section.blocks if hasattr(block, "items")).items
    assert "type-2 quota vs /api/log/self/stat: passed on 2 day(s)" in bullets
    assert "type-2 quota vs /api/data/self: not checked on 2 day(s)" in bullets
    table = section.blocks[-1]
    assert len(table.rows) == 6 and table.rows[1][3] == str(day_truth(traffic, date(2026, 3, 1))[2])
