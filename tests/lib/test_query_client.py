"""The query service client: parsing `/user/quota`, date-range chunks, the malformed-date probe."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.lib import clock
from pipelines.lib.cometapi.http import CometAPIError, RetryPolicy
from pipelines.lib.cometapi.query import (
    DailyEntry,
    QueryClient,
    parse_quota,
    split_range,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "cometapi"
KEY = "sk-LEAKCANARY-1234567890abcdef"
BASE = "https://query.example.test"
PREFIX = "CometAPI query service /user/quota answered an unexpected body: "


def body(daily=None, **overrides) -> str:
    data = {"username": "u", "total_quota": 5, "total_used_quota": 1.5, "request_count": 3, "keys": []}
    if daily is not None:
        data["daily_quota"] = daily
    data.update(overrides)
    return json.dumps(data)


def body_error(text: str) -> str:
    with pytest.raises(CometAPIError) as caught:
        parse_quota(text)
    err = caught.value
    assert err.kind == "unexpected_body" and not err.retriable and err.url == "/user/quota"
    assert str(err).startswith(PREFIX)
    return str(err)[len(PREFIX):]


# --- the two published examples ---------------------------------------------------------------


def test_example_a_exact_decimals_and_sentinels():
    raw = (EXAMPLES / "quota_example_a.json").read_bytes()
    quota = parse_quota(raw)
    assert quota.username == "example_user"
    assert quota.balance_usd == Decimal("2105.234088") and str(quota.balance_usd) == "2105.234088"
    assert str(quota.total_used_usd) == "21.065912"
    assert quota.request_count == 1221
    assert quota.daily is None
    keys = {k.name: k for k in quota.keys}
    assert str(keys["tts_test"].remain_quota_usd) == "8.93872"
    assert str(keys["tts_test"].used_quota_usd) == "2.099206"
    assert keys["concurrency_test"].remain_quota_usd == Decimal(10) and not keys["concurrency_test"].is_unlimited
    assert (keys["mj_test"].remain_quota_usd, keys["mj_test"].used_quota_usd) == (Decimal("8.55"), Decimal("1.45"))
    unlimited = keys["test_key"]  # remain 999999999, used -1
    assert unlimited.is_unlimited and unlimited.remain_quota_usd is None and unlimited.used_quota_usd is None
    used_sum = sum(k.used_quota_usd for k in quota.keys if not k.is_unlimited)
    assert used_sum == Decimal("3.549206")  # no sentinel summed into money
    import hashlib

    assert quota.raw_sha256 == hashlib.sha256(raw).hexdigest()


def test_example_b_minus_one_in_either_field_is_unlimited():
    quota = parse_quota((EXAMPLES / "quota_example_b.json").read_bytes())
    assert (quota.balance_usd, quota.total_used_usd, quota.request_count) == (Decimal(10000), Decimal(10000), 1000000)
    no_limit, limited = quota.keys
    assert no_limit.name == "no-limited" and no_limit.is_unlimited
    assert no_limit.remain_quota_usd is None and no_limit.used_quota_usd is None
    assert limited.remain_quota_usd == Decimal(100) and limited.used_quota_usd == Decimal(0) and not limited.is_unlimited


# --- daily_quota -------------------------------------------------------------------------------


def test_daily_quota_with_token_name_alias_and_duplicates_summed():
    daily = {
        "2026-11-02": [
            {"token_name": "team-a", "quota_used": 0.1, "request_count": 2},
            {"token_name": "team-a", "quota_used": 0.2, "request_count": 3},  # same name, another key
            {"name": "team-b", "quota_used": 1.000001, "request_count": 1},
        ],
        "2026-11-01": [{"token_name": "team-a", "quota_used": 0, "request_count": 0}],
        "2026-11-03": [],
    }
    quota = parse_quota(body(daily))
    assert quota.daily == [
        DailyEntry(usage_date=date(2026, 11, 1), key_name="team-a", cost_usd=Decimal("0"), requests=0),
        DailyEntry(usage_date=date(2026, 11, 2), key_name="team-a", cost_usd=Decimal("0.3"), requests=5),
        DailyEntry(usage_date=date(2026, 11, 2), key_name="team-b", cost_usd=Decimal("1.000001"), requests=1),
    ]
    assert str(quota.daily[1].cost_usd) == "0.3"  # exact, not 0.30000000000000004


def test_days_outside_the_kept_range_are_dropped():
    daily = {d: [{"token_name": "k", "quota_used": 1, "request_count": 1}] for d in ("2026-10-31", "2026-11-01", "2026-11-02")}
    quota = parse_quota(body(daily), keep=(date(2026, 11, 1), date(2026, 11, 1)))
    assert [e.usage_date for e in quota.daily] == [date(2026, 11, 1)]
    assert quota.dropped_dates == [date(2026, 10, 31), date(2026, 11, 2)]


@pytest.mark.parametrize(
    ("daily", "message"),
    [
        ({"2026-11-02": [{"quota_used": 1, "request_count": 1}]}, 'daily_quota["2026-11-02"][0] has no token_name'),
        ({"2026-11-02": [{"token_name": "k", "request_count": 1}]}, 'daily_quota["2026-11-02"][0] has no quota_used'),
        ({"2026-11-02": [{"token_name": "k", "quota_used": 1}]}, 'daily_quota["2026-11-02"][0] has no request_count'),
        ({"2026-11-02": [{"token_name": "k", "quota_used": -0.5, "request_count": 1}]},
         'daily_quota["2026-11-02"][0].quota_used (key "k") is negative (-0.5)'),
        ({"2026-11-02": [{"token_name": "k", "quota_used": 1, "request_count": -1}]},
         'daily_quota["2026-11-02"][0].request_count (key "k") is negative (-1)'),
        ({"2026-11-02": [{"token_name": "k", "quota_used": "1.5", "request_count": 1}]},
         'daily_quota["2026-11-02"][0].quota_used is a string ("1.5"), not a number'),
        ({"2026-11-02": [{"token_name": "k", "quota_used": 1, "request_count": 2.5}]},
         'daily_quota["2026-11-02"][0].request_count (key "k") is not a whole number (2.5)'),
        ({"2026-11-02": [{"token_name": "k", "quota_used": 1, "request_count": True}]},
         'daily_quota["2026-11-02"][0].request_count is a boolean (true), not a number'),
        ({"2026-11-02": [{"token_name": 7, "quota_used": 1, "request_count": 1}]},
         'daily_quota["2026-11-02"][0].token_name is a number (7), not a string'),
        ({"2026/11/02": []}, 'daily_quota key "2026/11/02" is not a YYYY-MM-DD date'),
        ({"2026-13-02": []}, 'daily_quota key "2026-13-02" is not a YYYY-MM-DD date'),
        ({"2026-11-2": []}, 'daily_quota key "2026-11-2" is not a YYYY-MM-DD date'),
        ({"2026-11-02": {"k": 1}}, 'daily_quota["2026-11-02"] is an object, not a list'),
        ([], "daily_quota is a list, not an object keyed by date"),
    ],
)
def test_daily_quota_validation_errors_name_the_field(daily, message):
    assert body_error(body(daily)) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (body(username=None), "username is null, not a string"),
        (json.dumps({"username": "u"}), "the body has no keys"),
        (body(total_used_quota=-1), "total_used_quota is negative (-1)"),
        (body(request_count="9"), 'request_count is a string ("9"), not a number'),
        (body(keys=[{"name": "k", "remain_quota": -3, "used_quota": 0}]),
         "keys[0].remain_quota is negative (-3) and not the -1 'unlimited' mark"),
        (body(keys=[{"remain_quota": 1, "used_quota": 0}]), "keys[0] has no name"),
        (body(keys=["k"]), "keys[0] is a string (\"k\"), not an object"),
        ("[1, 2]", "the body is a list, not an object"),
        ('{"username": ', "it is not valid JSON"),
    ],
)
def test_account_fields_are_validated(text, message):
    assert body_error(text) == message


def test_sentinel_shapes():
    quota = parse_quota(body(keys=[
        {"name": "a", "remain_quota": 1000000000, "used_quota": 3},
        {"name": "b", "remain_quota": 5, "used_quota": -1},
        {"name": "a", "remain_quota": 0, "used_quota": 0},
    ]))
    assert [k.is_unlimited for k in quota.keys] == [True, True, False]
    assert quota.keys[2].remain_quota_usd == 0


# --- date-range chunks -------------------------------------------------------------------------


@given(
    start=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    length=st.integers(0, 800),
    chunk_days=st.integers(2, 120),
)
def test_split_range_covers_every_day_once_in_order(start, length, chunk_days):
    end = start + timedelta(days=length)
    ranges = split_range(start, end, chunk_days)
    days = [a + timedelta(days=i) for a, b in ranges for i in range((b - a).days + 1)]
    assert days == [start + timedelta(days=i) for i in range(length + 1)]
    assert all(1 <= (b - a).days + 1 <= chunk_days - 1 for a, b in ranges)
    assert len(ranges) == -(-(length + 1) // (chunk_days - 1))  # as few calls as the rule allows


@pytest.mark.parametrize(
    "args",
    [("2026-01-01", date(2026, 1, 2)), (date(2026, 1, 2), date(2026, 1, 1)),
     (datetime(2026, 1, 1), date(2026, 1, 2)), (date(2026, 1, 1), date(2026, 1, 2), 1)],
)
def test_split_range_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        split_range(*args)


class QuotaService:
    """A fake query service holding per-day usage; `inclusive` decides how it reads end_date."""

    def __init__(self, usage: dict[date, list[dict]], inclusive: bool = True):
        self.usage = usage
        self.inclusive = inclusive
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = request.url.params
        data = {"username": "u", "total_quota": 12.5, "total_used_quota": 7, "request_count": 9,
                "keys": [{"name": "k", "remain_quota": 1, "used_quota": 2}]}
        if "start_date" in params:
            start, end = date.fromisoformat(params["start_date"]), date.fromisoformat(params["end_date"])
            last = end if self.inclusive else end - timedelta(days=1)
            data["daily_quota"] = {d.isoformat(): e for d, e in self.usage.items() if start <= d <= last}
        return httpx.Response(200, json=data)


def client_for(service, **kwargs) -> QueryClient:
    return QueryClient(BASE, KEY, transport=httpx.MockTransport(service), sleep=lambda s: None, **kwargs)


def usage_for(start: date, days: int) -> dict[date, list[dict]]:
    return {
        start + timedelta(days=i): [{"token_name": "k", "quota_used": round(0.01 * (i + 1), 6), "request_count": i + 1}]
        for i in range(days)
    }


@pytest.mark.parametrize("inclusive", [True, False])
def test_fetch_daily_60_days_makes_two_calls_and_covers_the_range(inclusive):
    start, end = date(2026, 1, 1), date(2026, 3, 1)  # 60 days
    assert (end - start).days + 1 == 60
    usage = usage_for(start - timedelta(days=5), 80)
    service = QuotaService(usage, inclusive=inclusive)
    with client_for(service) as client:
        pulls = list(client.fetch_daily(start, end))

    assert len(service.requests) == 2
    asked = [dict(r.url.params) for r in service.requests]
    assert asked == [
        {"key": KEY, "start_date": "2026-01-01", "end_date": "2026-01-31"},
        {"key": KEY, "start_date": "2026-01-31", "end_date": "2026-03-02"},
    ]
    assert [(p.kept_start, p.kept_end) for p in pulls] == [(date(2026, 1, 1), date(2026, 1, 30)), (date(2026, 1, 31), date(2026, 3, 1))]
    assert [(p.requested_start, p.requested_end) for p in pulls] == [
        (date(2026, 1, 1), date(2026, 1, 31)), (date(2026, 1, 31), date(2026, 3, 2))
    ]
    days = [e.usage_date for p in pulls for e in p.response.daily]
    assert days == [start + timedelta(days=i) for i in range(60)]  # each day once, none past the end
    expected = sum(Decimal(str(round(0.01 * (i + 6), 6))) for i in range(60))
    assert sum(e.cost_usd for p in pulls for e in p.response.daily) == expected
    for pull in pulls:
        assert pull.pulled_at.tzinfo is not None and pull.pulled_at.utcoffset() == timedelta(0)
        assert timedelta(0) <= clock.now() - pull.pulled_at < timedelta(minutes=1)  # the product's clock
        assert all(pull.kept_start <= e.usage_date <= pull.kept_end for e in pull.response.daily)


def test_fetch_daily_validates_before_any_call():
    service = QuotaService({})
    with client_for(service) as client:
        for args in [("2026-01-01", date(2026, 1, 2)), (date(2026, 1, 5), date(2026, 1, 1)),
                     (date(2026, 1, 1), "2026-01-02"), (date(2026, 1, 1), date(2026, 1, 2), 1)]:
            with pytest.raises(ValueError):
                client.fetch_daily(*args)  # raises at the call, not at first iteration
    assert service.requests == []


def test_fetch_quota_params_and_auth():
    service = QuotaService(usage_for(date(2026, 1, 1), 3))
    with client_for(service) as client:
        snapshot = client.fetch_quota()
        ranged = client.fetch_quota(date(2026, 1, 1), date(2026, 1, 2))
        with pytest.raises(ValueError):
            client.fetch_quota(date(2026, 1, 1))
        with pytest.raises(ValueError):
            client.fetch_quota("2026-01-01", "2026-01-02")
    assert dict(service.requests[0].url.params) == {"key": KEY}
    assert service.requests[0].url.path == "/user/quota"
    assert dict(service.requests[1].url.params) == {"key": KEY, "start_date": "2026-01-01", "end_date": "2026-01-02"}
    for request in service.requests:  # the key travels only as the documented query parameter
        assert all(KEY not in value for value in request.headers.values())
        assert "authorization" not in request.headers
    assert snapshot.daily is None and snapshot.balance_usd == Decimal("12.5")
    assert snapshot.fetched_at is not None and snapshot.fetched_at.tzinfo is not None
    assert [e.usage_date for e in ranged.daily] == [date(2026, 1, 1), date(2026, 1, 2)]
    assert len(service.requests) == 2


def test_fetch_quota_retries_through_a_maintenance_window():
    answers = iter([httpx.Response(503, text="<title>maintenance</title>", headers={"content-type": "text/html"})])
    service = QuotaService({})
    sleeps: list[float] = []

    def handler(request):
        return next(answers, None) or service(request)

    client = QueryClient(BASE, KEY, transport=httpx.MockTransport(handler), sleep=sleeps.append,
                         policy=RetryPolicy(rng=lambda: 0.0))
    with client:
        assert client.fetch_quota().username == "u"
    assert sleeps == [2.0]


def test_client_repr_and_empty_key():
    with client_for(QuotaService({})) as client:
        assert KEY not in repr(client) and "cdef" in repr(client)
    with pytest.raises(ValueError, match="COMETAPI_KEY"):
        QueryClient(BASE, "")


# --- the malformed-date probe ------------------------------------------------------------------


def probe(answer: httpx.Response) -> tuple[bool, httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        return answer

    with QueryClient(BASE, KEY, transport=httpx.MockTransport(handler), sleep=lambda s: None) as client:
        result = client.malformed_date_probe()
    return result, seen[0]


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(400, json={"error": {"message": "invalid date", "code": "invalid_request"}}),
     httpx.Response(422, text="bad date"),
     httpx.Response(200, json={"success": False, "message": "start_date must be YYYY-MM-DD"}),
     httpx.Response(200, json={"error": {"message": "invalid date"}})],
)
def test_probe_true_when_the_service_rejects_malformed_dates(answer):
    rejected, request = probe(answer)
    assert rejected is True
    assert request.url.params["start_date"] == "2026/06/01" and request.url.params["end_date"] == "2026/06/30"
    assert request.url.params["key"] == KEY


def test_probe_false_when_the_service_accepts_them_silently():
    rejected, _ = probe(httpx.Response(200, json={"username": "u", "total_quota": 1, "total_used_quota": 0,
                                                 "request_count": 0, "keys": []}))
    assert rejected is False


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(401, json={"error": {"message": "invalid key", "code": "invalid_api_key"}}),
     httpx.Response(301, headers={"Location": "https://elsewhere.test/"}),
     httpx.Response(503, json={"error": {"message": "down"}})],
)
def test_probe_raises_when_the_answer_says_nothing_about_dates(answer):
    with pytest.raises(CometAPIError):
        probe(answer)
