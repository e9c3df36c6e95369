"""The gateway ledger normaliser: exact money, identity, rejects, dedupe, CSV export, daily sums."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.lib.cometapi.gateway import GatewayClient
from pipelines.lib.cometapi.http import RetryPolicy
from pipelines.lib.gateway.ledger import (
    GATEWAY_REJECT_REASONS,
    GATEWAY_SCHEMA,
    ExportError,
    GatewayRecord,
    GatewayReject,
    export_items,
    parse_export_csv,
    parse_item,
    records_to_table,
)
from oracles.gateway import KeyDayTotal, dedupe, summarise

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "cometapi" / "gateway_log_page.json"
UTC_ZONE = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
ITEM_FIELDS = ["id", "created_at", "type", "content", "token_name", "model_name", "quota", "prompt_tokens",
               "completion_tokens", "use_time", "is_stream", "group", "ip", "request_id", "other"]


@pytest.fixture(scope="module")
def example_items() -> list[dict]:
    return json.loads(EXAMPLE.read_text())["data"]["items"]


def item(**overrides) -> dict:
    """A valid token-billed consume item; `overrides` replace fields (None values stay None)."""
    base = {
        "id": 7, "created_at": 1774412483, "type": 2, "content": "model ratio 0.05", "token_name": "team-a-prod",
        "model_name": "gpt-4o", "quota": 1500, "prompt_tokens": 100, "completion_tokens": 20, "use_time": 2,
        "is_stream": True, "group": "default", "ip": "203.0.113.7", "request_id": "req-1",
        "other": json.dumps({"model_ratio": 1.25, "group_ratio": 1, "completion_ratio": 4, "cache_tokens": 0,
                             "cache_ratio": 0.5, "model_price": -1, "frt": 210.4, "total_ms": 900}),
    }
    base.update(overrides)
    return base


def record(it: dict) -> GatewayRecord:
    parsed = parse_item(it)
    assert isinstance(parsed, GatewayRecord), parsed
    return parsed


def reject(it: dict) -> GatewayReject:
    parsed = parse_item(it)
    assert isinstance(parsed, GatewayReject), parsed
    return parsed


# --- the reference example -----------------------------------------------------------------------


def test_example_token_item_parses_exactly(example_items):
    r = record(example_items[0])
    assert r.request_id == "20260325123456789abcdef"
    assert r.log_id == 517
    assert r.created_at == datetime(2026, 3, 25, 4, 21, 23, tzinfo=UTC)
    assert r.utc_date == date(2026, 3, 25)
    assert (r.log_type, r.log_type_name) == (2, "consume")
    assert (r.key_name, r.model) == ("team-a-prod", "gpt-4.1-nano-2025-04-14")
    assert r.quota_units == 1
    assert r.billed_usd == Decimal("0.000002") and str(r.billed_usd) == "0.000002"
    assert r.billing_category == "token"
    assert (r.model_ratio, r.group_ratio, r.completion_ratio, r.cache_ratio) == (0.05, 0.8, 4.0, 0.25)
    assert r.model_price == -1.0 and r.cache_creation_ratio is None
    assert (r.cache_tokens, r.cache_creation_tokens) == (0, None)
    assert (r.prompt_tokens, r.completion_tokens) == (29, 2)
    assert (r.frt_ms, r.total_ms, r.use_time_s) == (310, 812, 1)
    assert r.request_path == "/v1/chat/completions"
    assert (r.source_ip, r.group, r.is_stream) == ("203.0.113.7", "default", False)
    assert r.usage_semantic == "openai"
    assert not r.is_correction and not r.other_parse_error
    assert r.other_json == example_items[0]["other"]
    assert r.source == "api"


def test_example_per_call_item_parses_exactly(example_items):
    r = record(example_items[1])
    assert r.log_id == 518 and r.model == "mj_imagine" and r.key_name == "mj_test"
    assert r.quota_units == 25000
    assert r.billed_usd == Decimal("0.050000") and str(r.billed_usd) == "0.050000"
    assert r.billing_category == "per_call"
    assert (r.model_price, r.model_ratio, r.group_ratio) == (0.05, 0.0, 1.0)
    assert r.source_ip is None  # "" in the item
    assert (r.total_ms, r.frt_ms, r.request_path) == (12000, None, "/mj/submit/imagine")


def test_records_fill_the_arrow_schema(example_items):
    table = records_to_table([record(i) for i in example_items])
    assert table.schema == GATEWAY_SCHEMA
    assert table.column("billed_usd").to_pylist() == [Decimal("0.000002"), Decimal("0.050000")]


# --- money rules ---------------------------------------------------------------------------------


def test_refund_reduces_spend():
    r = record(item(type=6, quota=25000, content="task x failed, refund 0.050000"))
    assert r.log_type_name == "refund" and r.quota_units == 25000
    assert r.billed_usd == Decimal("-0.050000")
    assert not r.is_correction and not r.is_request


def test_refund_with_negative_quota_is_rejected_not_guessed():
    assert reject(item(type=6, quota=-25000)).reason == "bad_quota"


def test_error_rows_bill_nothing():
    r = record(item(type=5, quota=0, other=json.dumps({"error_type": "upstream_error", "status_code": 502})))
    assert r.billed_usd == Decimal("0.000000") and r.log_type_name == "error"
    assert r.billing_category is None and not r.is_request
    assert record(item(type=5, quota=None)).quota_units == 0


def test_topup_is_not_spend_and_gets_a_stable_synthetic_id():
    topup = item(type=1, quota=5_000_000, request_id="", token_name="", model_name="", other="",
                 content="online top-up $10")
    r = record(topup)
    assert r.billed_usd == Decimal("0.000000") and r.key_name is None and r.model is None
    assert r.request_id.startswith("topup-1774412483-")
    assert record({**topup, "id": 99}).request_id == r.request_id  # id is not part of the identity


def test_negative_correction_is_its_own_row():
    task = record(item(request_id="task-1", quota=50_000, model_name="suno_music"))
    fix = record(item(request_id="task-1-fix", quota=-20_000, model_name="suno_music", created_at=1774455683,
                      content="task task-1 billing correction -0.040000"))
    assert fix.is_correction and fix.billed_usd == Decimal("-0.040000")
    kept, duplicates = dedupe([task, fix])
    assert kept == [task, fix] and duplicates == []
    assert summarise(kept) == {(date(2026, 3, 25), "team-a-prod"): KeyDayTotal(Decimal("0.060000"), 1)}


@pytest.mark.parametrize(
    ("other", "content"),
    [({"correction_of": "task-1", "model_price": 0.35}, "task done"),
     ({"model_price": 0.35}, "task task-1 billing correction +0.175000")],
)
def test_positive_correction_needs_a_marker(other, content):
    r = record(item(quota=87_500, other=json.dumps(other), content=content))
    assert r.is_correction and r.billed_usd == Decimal("0.175000") and not r.is_request
    plain = record(item(quota=87_500, other=json.dumps({"model_price": 0.35}), content="fixed price 0.35"))
    assert not plain.is_correction and plain.is_request


def test_billing_category_rule():
    def category(other: dict) -> str | None:
        return record(item(other=json.dumps(other))).billing_category

    assert category({"model_price": -1, "model_ratio": 0}) == "token"
    assert category({"model_ratio": 2.5}) == "token"  # price absent, ratio positive
    assert category({"model_price": 0}) == "per_call"
    assert category({"model_price": 0.05, "model_ratio": 0}) == "per_call"
    assert category({"model_ratio": 0}) is None
    assert category({}) is None


def test_anthropic_semantics_and_cache_creation_from_other():
    r = record(item(other=json.dumps({"model_ratio": 1.5, "model_price": -1, "cache_tokens": 800,
                                      "cache_creation_tokens": 120, "cache_creation_ratio": 1.25,
                                      "usage_semantic": "anthropic"})))
    assert (r.usage_semantic, r.cache_tokens, r.cache_creation_tokens, r.cache_creation_ratio) == (
        "anthropic", 800, 120, 1.25)


# --- `other` is audit data: kept with a flag -----------------------------------------------------


@pytest.mark.parametrize("other", ["{not json", "[1, 2]", "42", {"model_ratio": "high"}, ["x"]])
def test_unreadable_other_keeps_the_row_with_a_flag(other):
    if isinstance(other, dict):
        other = json.dumps(other)
    r = record(item(other=other))
    assert r.other_parse_error
    assert r.model_ratio is None and r.billing_category is None
    assert r.billed_usd == Decimal("0.003000")  # the money is untouched
    assert r.other_json is not None


@pytest.mark.parametrize("other", [
    {"cache_tokens": 1e20}, {"frt": -1e300}, {"total_ms": 2.0**63}, {"request_path": "/v1/\ud800"},
    "{\"model_ratio\": 1, \"note\": \"\ud800\"}",
])
def test_other_values_that_cannot_be_stored_are_null_with_a_flag(other):
    r = record(item(other=json.dumps(other) if isinstance(other, dict) else other))
    assert r.other_parse_error and r.billed_usd == Decimal("0.003000")
    assert (r.cache_tokens, r.frt_ms, r.total_ms, r.request_path) == (None, None, None, None)
    assert records_to_table([r]).num_rows == 1  # and it lands
    assert json.loads(records_to_table([r]).column("other_json")[0].as_py()) is not None


def test_rejects_with_unstorable_text_can_be_stored():
    r = reject(item(model_name="gpt-\ud800"))
    assert r.raw.isascii() and json.loads(r.raw)["model_name"] == "gpt-\ud800"
    r.raw.encode("utf-8")


def test_other_as_a_decoded_object_is_accepted():
    r = record(item(other={"model_price": 0.1, "group_ratio": 1}))
    assert r.billing_category == "per_call" and not r.other_parse_error
    assert json.loads(r.other_json) == {"model_price": 0.1, "group_ratio": 1}


def test_absent_other_is_not_an_error():
    r = record(item(other=None))
    assert not r.other_parse_error and r.other_json is None and r.billing_category is None


# --- rejects -------------------------------------------------------------------------------------


REJECT_CASES = [
    ({"request_id": 12345}, "bad_field_type"),
    ({"created_at": None}, "missing_created_at"),
    ({"created_at": "2026-03-25"}, "bad_field_type"),
    ({"created_at": -5}, "bad_created_at"),
    ({"created_at": 10**15}, "bad_created_at"),
    ({"type": 300}, "unknown_log_type"),
    ({"type": None}, "unknown_log_type"),
    ({"type": "2"}, "bad_field_type"),
    ({"token_name": ""}, "missing_key_name"),
    ({"quota": None}, "missing_quota"),
    ({"quota": 12.5}, "bad_quota"),
    ({"quota": 1500.0}, "bad_quota"),
    ({"quota": "1500"}, "bad_quota"),
    ({"quota": True}, "bad_quota"),
    ({"quota": 10**18}, "bad_quota"),
    ({"prompt_tokens": "100"}, "bad_field_type"),
    ({"completion_tokens": -1}, "bad_field_type"),
    ({"is_stream": "yes"}, "bad_field_type"),
    ({"ip": 17}, "bad_field_type"),
    ({"prompt_tokens": 2**63}, "bad_field_type"),  # beyond BIGINT: it could not be stored
    ({"model_name": "gpt-\ud800"}, "bad_field_type"),  # a lone surrogate (JSON "\ud800"): not storable text
    ({"request_id": "\udfff"}, "bad_field_type"),
]


@pytest.mark.parametrize(("overrides", "reason"), REJECT_CASES)
def test_each_reject_reason(overrides, reason):
    r = reject(item(**overrides))
    assert r.reason == reason and r.source == "api"
    assert r.detail and "\n" not in r.detail
    assert json.loads(r.raw)["token_name"] == item(**overrides)["token_name"]


def test_non_object_is_rejected():
    r = parse_item(["not", "an", "item"])  # type: ignore[arg-type]
    assert isinstance(r, GatewayReject) and r.reason == "not_an_object"


def test_reject_reasons_are_a_closed_vocabulary_all_exercised():
    assert {reason for _, reason in REJECT_CASES} | {"not_an_object"} == set(GATEWAY_REJECT_REASONS)
    with pytest.raises(ValueError):
        GatewayReject("bad_other_json", "x", "{}")  # a bad `other` is kept and flagged instead


# --- time zones ----------------------------------------------------------------------------------


def test_a_row_keeps_its_utc_day_the_reporting_day_is_the_warehouses():
    ts = int(datetime(2026, 3, 25, 20, 0, tzinfo=UTC).timestamp())  # 26 March in Shanghai
    parsed = record(item(created_at=ts))
    assert parsed.utc_date == date(2026, 3, 25)
    assert parsed.created_at == datetime(2026, 3, 25, 20, 0, tzinfo=UTC)
    late = record(item(created_at=int(datetime(2026, 3, 25, 23, 59, 59, tzinfo=UTC).timestamp())))
    assert late.utc_date == date(2026, 3, 25)


# --- dedupe --------------------------------------------------------------------------------------


def test_exact_repeats_are_duplicates_but_distinct_rows_sharing_a_request_id_are_kept():
    consume = record(item(request_id="task-9", quota=25_000))
    refund = record(item(request_id="task-9", type=6, quota=25_000, created_at=1774413683))
    repeat = record(item(request_id="task-9", quota=25_000, id=1023))  # id rewritten: still the same row
    kept, duplicates = dedupe([consume, refund, repeat, consume])
    assert kept == [consume, refund]
    assert duplicates == [repeat, consume]
    assert summarise(kept) == {(date(2026, 3, 25), "team-a-prod"): KeyDayTotal(Decimal("0.000000"), 1)}


def test_paging_overlap_is_counted_once():
    """A new row arrives between page 1 and page 2: the last item of page 1 comes again on page 2."""
    ledger = [item(request_id=f"r{n}", id=n % 1024, quota=1000 + n, created_at=1774412000 + n) for n in range(5, 0, -1)]
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["p"])
        size = int(request.url.params["page_size"])
        served.append(page)
        if page == 2:  # the newest-first ledger grew while we paged
            ledger.insert(0, item(request_id="r6", id=6, quota=1006, created_at=1774412006))
        window = ledger[(page - 1) * size: page * size]
        data = {"page": page, "page_size": size, "total": None, "items": window}
        body = {"success": True, "message": "", "data": data}
        return httpx.Response(200, json=body)

    client = GatewayClient("http://gateway.test", "tok", transport=httpx.MockTransport(handler),
                           policy=RetryPolicy(max_attempts=1), sleep=lambda _: None)
    with client:
        items = [it for page in client.iter_log_pages(1774412000, 1774413000, page_size=2) for it in page]
    records = [record(it) for it in items]
    kept, duplicates = dedupe(records)
    assert [r.request_id for r in duplicates] == ["r4"]
    assert sorted(r.request_id for r in kept) == ["r1", "r2", "r3", "r4", "r5"]
    assert summarise(kept)[(date(2026, 3, 25), "team-a-prod")] == KeyDayTotal(
        Decimal(sum(1000 + n for n in range(1, 6))) / 500000, 5)


# --- summarise: property ---------------------------------------------------------------------------

KEYS = ("team-a-prod", "team-b", "media-tasks")
_money_item = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["consume", "refund", "correction", "error"]),
        "units": st.integers(min_value=1, max_value=10**9),
        "key": st.sampled_from(KEYS),
        "created_at": st.integers(min_value=1767225600, max_value=1767225600 + 5 * 86400),
    }
)


def _as_item(n: int, spec: dict) -> dict:
    kind, units = spec["kind"], spec["units"]
    quota = {"consume": units, "refund": units, "correction": -units, "error": 0}[kind]
    return item(request_id=f"req-{n}", id=n % 1024, token_name=spec["key"], created_at=spec["created_at"],
                type={"refund": 6, "error": 5}.get(kind, 2), quota=quota)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(_money_item, max_size=40),
    zone=st.sampled_from([UTC_ZONE, SHANGHAI, ZoneInfo("America/New_York")]),
)
def test_summarise_equals_signed_quota_over_500000(specs, zone):
    items = [_as_item(n, spec) for n, spec in enumerate(specs)]
    records = [record(it) for it in items]
    expected: dict[tuple[date, str], list] = {}
    for it in items:
        if it["type"] == 5:
            continue
        day = datetime.fromtimestamp(it["created_at"], zone).date()
        entry = expected.setdefault((day, it["token_name"]), [0, 0])
        entry[0] += -it["quota"] if it["type"] == 6 else it["quota"]
        entry[1] += it["type"] == 2 and it["quota"] > 0
    got = summarise(records, zone.key)
    assert got == {k: KeyDayTotal(Decimal(units) / Decimal(500000), n) for k, (units, n) in expected.items()}
    for total in got.values():
        assert total.billed_usd.as_tuple().exponent == -6  # exact 6-decimal Decimals


# --- CSV export ------------------------------------------------------------------------------------


def _csv(items: list[dict], columns: list[str] = ITEM_FIELDS, rename: dict | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([(rename or {}).get(c, c) for c in columns])
    for it in items:
        writer.writerow(["" if it.get(c) is None else str(it[c]).lower() if isinstance(it[c], bool) else it[c]
                         for c in columns])
    return out.getvalue()


def test_csv_export_round_trips_to_the_api_records(example_items, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("\ufeff" + _csv(example_items, list(reversed(ITEM_FIELDS))), encoding="utf-8")
    from_csv = parse_export_csv(path)
    from_api = [record(i) for i in example_items]
    assert all(isinstance(r, GatewayRecord) for r in from_csv)
    assert [replace(r, source="api") for r in from_csv] == from_api
    assert {r.source for r in from_csv} == {"csv_export"}
    assert dedupe(from_api + from_csv)[1] == from_csv  # the same rows, whatever the source


def test_csv_console_variants_datetime_text_and_usd_cost(example_items):
    columns = [c for c in ITEM_FIELDS if c != "quota"] + ["cost"]
    rows = []
    for it in example_items:
        row = dict(it)
        row["created_at"] = datetime.fromtimestamp(it["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        row["cost"] = f"${Decimal(it['quota']) / 500000:.6f}"
        row["type"] = "consume"
        rows.append(row)
    text = _csv(rows, columns, rename={"token_name": "Token Name", "model_name": "Model", "created_at": "Time"})
    parsed = parse_export_csv(text)
    assert [replace(r, source="api") for r in parsed] == [record(i) for i in example_items]


def test_csv_rows_are_validated_like_items():
    rows = [item(request_id="ok"), item(request_id="frac"), item(request_id="", quota=5, token_name=""),
            item(request_id="t", type="nope")]
    columns = ITEM_FIELDS + ["cost_usd"]
    rows[0]["cost_usd"], rows[1]["cost_usd"] = "0.003", "0.0000031"
    rows[1]["quota"] = None
    parsed = parse_export_csv(_csv(rows, columns))
    assert isinstance(parsed[0], GatewayRecord) and parsed[0].billed_usd == Decimal("0.003000")
    assert [(p.reason, p.line) for p in parsed[1:]] == [
        ("bad_quota", 3), ("missing_key_name", 4), ("bad_field_type", 5)]
    assert all(p.source == "csv_export" for p in parsed)
    assert json.loads(parsed[1].raw)["request_id"] == "frac"


def test_csv_quota_and_cost_must_agree():
    it = item()
    it["cost"] = "0.5"
    (parsed,) = parse_export_csv(_csv([it], ITEM_FIELDS + ["cost"]))
    assert isinstance(parsed, GatewayReject) and parsed.reason == "bad_quota"


def test_unknown_csv_header_raises_one_line_naming_the_file(tmp_path):
    path = tmp_path / "weird-export.csv"
    path.write_text("when,who,what,how much\n2026-03-25,alice,gpt-4o,0.1\n")
    with pytest.raises(ValueError) as caught:
        parse_export_csv(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "request_id" in message and "created_at" in message
    with pytest.raises(ValueError, match="two columns for token_name"):
        parse_export_csv("token,key_name,request_id,created_at,type,quota\n")


# --- a CSV export fetched from the API: all or nothing ----------------------------------------------

WINDOW = {"start_ts": 1774396800, "end_ts": 1774483199}  # 2026-03-25 UTC, inclusive


def test_export_items_are_the_items_the_pages_would_have_given(example_items):
    text = _csv(example_items)
    exported = export_items(text, **WINDOW)
    assert [record(i) for i in exported] == [record(i) for i in example_items]  # same records, source api
    assert exported[0]["created_at"] == 1774412483 and exported[0]["is_stream"] is False
    assert export_items("\ufeff" + _csv(example_items, list(reversed(ITEM_FIELDS))), **WINDOW) == exported
    offset = _csv([item(created_at="2026-03-25T12:00:00+08:00")])  # an explicit offset is fine
    assert export_items(offset, **WINDOW)[0]["created_at"] == 1774411200
    assert export_items(_csv([]), **WINDOW) == []


def test_an_exported_row_that_is_a_bad_item_is_rejected_as_the_paged_one_would_be():
    (exported,) = export_items(_csv([item(token_name=None)]), **WINDOW)
    outcome = parse_item(exported)
    assert isinstance(outcome, GatewayReject) and outcome.reason == "missing_key_name"


@pytest.mark.parametrize(
    ("text", "words", "lasting"),
    [
        ("when,who,what\n1,2,3\n", "not a recognised CometAPI gateway log export", True),
        (_csv([item()])[:-9], "cut short", False),
        (_csv([item()]).rstrip("\r\n") + ",extra\r\n", "has 16 cells, the header 15", False),
        (_csv([item()]).rstrip("\r\n") + ',"unclosed\r\n', "not well-formed CSV", False),
        (_csv([item()]) + '1,"2"x\r\n', "not well-formed CSV", False),
        (_csv([item(created_at=1774483200)]), "inside the window", False),
        (_csv([item(created_at="2026-03-25 12:00:00")]), "no UTC offset", False),
        (_csv([item(created_at="yesterday")]), "not a unix time", False),
        (_csv([{**item(), "cost_usd": "0.5"}], ITEM_FIELDS + ["cost_usd"]), "disagrees", False),
    ],
    ids=["header", "cut", "extra-cell", "unclosed-quote", "bad-csv", "outside", "naive-time", "bad-time", "usd"],
)
def test_a_doubtful_export_is_refused_whole(text, words, lasting):
    with pytest.raises(ExportError) as caught:
        export_items(text, **WINDOW, name="the export of day X")
    assert words in str(caught.value) and caught.value.lasting is lasting
    assert "\n" not in str(caught.value)


# --- against the simulator -------------------------------------------------------------------------


def test_simulator_ledger_sums_to_daily_quota(sim, traffic):
    sim.mark_restated()  # the late positive correction too
    start = int(datetime.combine(traffic.start, datetime.min.time(), UTC).timestamp())
    end = int(datetime.combine(traffic.end, datetime.min.time(), UTC).timestamp()) - 1
    with GatewayClient(sim.url, sim.access_token, policy=RetryPolicy(max_attempts=1)) as client:
        parsed = [parse_item(it) for page in client.iter_log_pages(start, end)
                  for it in page]
    rejects = [p for p in parsed if isinstance(p, GatewayReject)]
    assert rejects == []
    kept, duplicates = dedupe(parsed)
    assert duplicates == []
    truth = sim.truth()
    assert len(truth) > 30
    assert summarise(kept, traffic.service_tz) == truth
    assert {r.billing_category for r in kept if r.log_type == 2} == {"token", "per_call"}
    assert any(r.log_type == 6 and r.billed_usd < 0 and r.task_id and r.reason for r in kept)  # a failed task
    # a task whose final price was lower: a type-6 row tied to its task (service/task_billing.go)
    assert any(r.log_type == 6 and r.billed_usd < 0 and r.pre_consumed_quota and r.actual_quota for r in kept)
    assert any(r.is_correction and r.billed_usd > 0 and r.task_id for r in kept)
    assert any(r.usage_semantic == "anthropic" for r in kept)
