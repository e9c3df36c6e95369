"""The embedded CometAPI simulator: traffic, prices, inbox files, HTTP endpoints and faults."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from pipelines.simulator.catalog import CATALOG, PRICE_CSV_COLUMNS, UNITS_PER_USD, price_versions, prices_csv
from pipelines.simulator.faults import FaultPlan
from pipelines.simulator.inbox import EXTENSIONS, write_inbox
from pipelines.lib.gateway.ledger import parse_export_csv, parse_item
from pipelines.simulator.server import EXPORT_COLUMNS, EXPORT_PATH, MAX_PAGE_SIZE, SimulatorServer
from pipelines.simulator.traffic import USAGE_SHAPES, generate_traffic

START = date(2026, 10, 1)
DAYS = 30
LAST = START + timedelta(days=DAYS - 1)
ONE_UNIT = Decimal("0.000001")


@pytest.fixture(scope="module")
def traffic():
    return generate_traffic(seed=7, start=START, days=DAYS)


@pytest.fixture()
def server(traffic):
    with SimulatorServer(traffic, export=True) as srv:
        yield srv


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def quota(client, server, **params):
    return client.get("/user/quota", params={"key": server.api_key, **params})


def log_pages(client, server, page_size=100, **params):
    """Every item of /api/log/self, paging like the pipeline does; also returns the last envelope."""
    items, page, envelope = [], 1, None
    while True:
        envelope = client.get(
            "/api/log/self",
            params={"p": page, "page_size": page_size, **params},
            headers={"Authorization": f"Bearer {server.access_token}"},
        ).json()
        batch = envelope["data"]["items"]
        items += batch
        if len(batch) < envelope["data"]["page_size"] or len(items) >= envelope["data"]["total"]:
            return items, envelope
        page += 1


def daily_from_log(items) -> dict[tuple[date, str], Decimal]:
    out: dict[tuple[date, str], Decimal] = defaultdict(Decimal)
    for item in items:
        if item["type"] not in (2, 6):
            continue
        day = datetime.fromtimestamp(item["created_at"], UTC).date()
        sign = -1 if item["type"] == 6 else 1
        out[(day, item["token_name"])] += Decimal(sign * item["quota"]) / UNITS_PER_USD
    return out


def read_inbox(inbox: Path) -> list[tuple[Path, dict]]:
    lines = []
    for path in sorted(inbox.rglob("*")):
        if path.is_dir():
            continue
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines += [(path, json.loads(line)) for line in raw.decode().splitlines() if line.strip()]
    return lines


# --- traffic ------------------------------------------------------------------------------------
def test_same_seed_gives_identical_requests_and_inbox_bytes(tmp_path):
    a = generate_traffic(seed=7, start=START, days=DAYS)
    b = generate_traffic(seed=7, start=START, days=DAYS)
    c = generate_traffic(seed=8, start=START, days=DAYS)
    assert list(a.iter_requests()) == list(b.iter_requests())
    assert [r.request_id for r in a.iter_requests()] != [r.request_id for r in c.iter_requests()]

    counts_a = write_inbox(a, tmp_path / "a")
    write_inbox(b, tmp_path / "b")
    write_inbox(c, tmp_path / "c")
    files_a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    files_b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    files_c = {p.relative_to(tmp_path / "c"): p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    assert files_a == files_b
    assert files_a != files_c
    assert len(files_a) == counts_a["files"]

    again = write_inbox(a, tmp_path / "a")  # idempotent: same bytes, nothing rewritten
    assert again["unchanged_files"] == again["files"] == counts_a["files"]


def test_a_day_does_not_depend_on_other_days():
    whole = generate_traffic(seed=7, start=START, days=DAYS)
    lazy = generate_traffic(seed=7, start=START, days=DAYS)
    day = START + timedelta(days=12)
    assert lazy.requests_for_day(day) == whole.requests_for_day(day)
    assert lazy.requests_for_day(START - timedelta(days=1)) == []


def test_request_ids_unique_and_shaped(traffic):
    rows = [r for r in traffic.iter_requests() if r.log_type != 7]  # the console logins carry none
    ids = [r.request_id for r in rows]
    assert len(ids) == len(set(ids))
    assert all(len(i) == 24 and i[:8].isdigit() for i in ids)
    for r in rows:
        assert r.ts.tzinfo is not None and traffic.day_of(r.ts) == r.ts.date()  # UTC service days
        assert r.cached_tokens + r.cache_write_tokens <= r.prompt_tokens
        assert r.reasoning_tokens <= r.completion_tokens
        if r.log_type == 2 and r.correction_of is None:
            assert r.quota_units >= 1


def test_some_key_days_have_no_traffic(traffic):
    reported = traffic.reported_daily(restated=False)
    all_key_days = {(d, k.name) for d in traffic.dates for k in traffic.keys}
    assert 0 < len(all_key_days - reported.keys()) < len(all_key_days) // 3
    # requests_per_day is the average over all keys
    assert 30 <= sum(n for _, n in reported.values()) / DAYS <= 50


def test_reported_daily_equals_the_ledger_rows():
    fresh = generate_traffic(seed=11, start=START, days=10, requests_per_day=80)
    reported = {restated: fresh.reported_daily(restated) for restated in (False, True)}  # before any row exists
    for restated in (False, True):
        expected: dict = defaultdict(lambda: [Decimal(0), 0])
        for row in fresh.iter_requests():
            if row.log_type in (2, 6) and (restated or not row.visible_after_first_pull):
                entry = expected[(fresh.day_of(row.ts), row.key_name)]
                entry[0] += row.usd
                entry[1] += row.log_type == 2 and row.correction_of is None
        assert reported[restated] == {k: (usd, n) for k, (usd, n) in expected.items()}


def test_service_time_zone_defines_the_day():
    shanghai = generate_traffic(seed=7, start=START, days=5, service_tz="Asia/Shanghai")
    for day in shanghai.dates:
        rows = shanghai.requests_for_day(day)
        assert rows and {shanghai.day_of(r.ts) for r in rows} == {day}
    assert any(r.ts.date() != shanghai.day_of(r.ts) for r in shanghai.iter_requests())  # UTC+8 days differ


# --- prices ---------------------------------------------------------------------------------------
def parse_prices(text: str) -> dict[str, list[dict]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == PRICE_CSV_COLUMNS
    out = defaultdict(list)
    for row in reader:
        out[row["model"]].append(row)
    return out


def version_at(versions: list[dict], day: date) -> dict:
    (match,) = [
        v for v in versions
        if date.fromisoformat(v["effective_from"]) <= day
        and (not v["effective_to"] or day < date.fromisoformat(v["effective_to"]))
    ]
    return match


def test_billed_amount_equals_price_csv_estimate_for_every_priced_request(traffic):
    prices = parse_prices(prices_csv(START, DAYS))
    checked = Counter()
    for r in traffic.iter_requests():
        if r.log_type != 2 or r.correction_of or r.model not in prices:
            continue
        v = version_at(prices[r.model], traffic.day_of(r.ts))
        ratio = Decimal(v["gateway_ratio"])
        if v["billing_category"] == "per_call":
            assert v["input_usd_per_mtok"] == ""
            estimate = Decimal(v["per_call_usd"]) * ratio
        else:
            assert v["per_call_usd"] == ""
            estimate = (
                r.uncached_prompt_tokens * Decimal(v["input_usd_per_mtok"])
                + r.cached_tokens * Decimal(v["cache_read_usd_per_mtok"])
                + r.cache_write_tokens * Decimal(v["cache_write_usd_per_mtok"])
                + r.completion_tokens * Decimal(v["output_usd_per_mtok"])
            ) / 1_000_000 * ratio
        billed = Decimal(r.quota_units) / UNITS_PER_USD
        assert abs(estimate - billed) <= ONE_UNIT, (r.request_id, r.model, estimate, billed)
        checked[v["billing_category"]] += 1
    assert checked["token"] > 500 and checked["per_call"] > 50


def test_price_csv_versions_and_price_change(traffic):
    prices = parse_prices(prices_csv(START, DAYS))
    assert "glm-4.6" not in prices
    assert set(prices) == set(CATALOG) - {"glm-4.6"}
    change = traffic.planted["price_change"]["date"]
    assert change == START + timedelta(days=DAYS // 2)
    mini = prices["gpt-4o-mini"]
    assert [(v["effective_from"], v["effective_to"], v["input_usd_per_mtok"]) for v in mini] == [
        ("2024-01-01", change.isoformat(), "0.15"),
        (change.isoformat(), "", "0.12"),
    ]
    for versions in prices.values():
        assert all(v["gateway_ratio"] == "0.8" and v["source"] == "simulator" for v in versions)
    ratios = {(traffic.day_of(r.ts) >= change, r.other["model_ratio"]) for r in traffic.iter_requests()
              if r.model == "gpt-4o-mini" and r.log_type == 2}
    assert ratios == {(False, 0.075), (True, 0.06)}
    assert len(price_versions(START, DAYS)) == len(CATALOG)  # 8 priced models, one with two versions


# --- planted realities ----------------------------------------------------------------------------
def test_planted_missing_logs(traffic, tmp_path):
    planted = traffic.planted["missing_logs"]
    assert planted["date"] == START + timedelta(days=DAYS - 6) and planted["key"] == "team-a-prod"
    leaked = [r for r in traffic.iter_requests() if r.source_ip == "198.51.100.66"]
    assert len(leaked) == 7
    assert {(traffic.day_of(r.ts), r.key_name, r.client_logged, r.log_type) for r in leaked} == {
        (planted["date"], "team-a-prod", False, 2)
    }
    assert sorted(r.request_id for r in leaked) == sorted(planted["request_ids"])
    assert planted["usd"] == sum(r.usd for r in leaked) > Decimal("0.01")
    write_inbox(traffic, tmp_path)
    logged_ids = {env["request_id"] for _, env in read_inbox(tmp_path)}
    assert not logged_ids & set(planted["request_ids"])
    # the key-day still has ordinary, logged traffic
    assert any(r.client_logged for r in traffic.requests_for_day(planted["date"]) if r.key_name == "team-a-prod")


def test_planted_unpriced_model(traffic):
    planted = traffic.planted["unpriced_model"]
    glm_days = {traffic.day_of(r.ts) for r in traffic.iter_requests() if r.model == "glm-4.6"}
    assert len(glm_days) >= 5 and glm_days == set(planted["dates"])
    assert {r.key_name for r in traffic.iter_requests() if r.model == "glm-4.6"} == {"research-batch"}


def test_planted_unknown_usage(traffic, tmp_path):
    planted = traffic.planted["unknown_usage"]
    assert planted["date"] == START + timedelta(days=DAYS - 10) and planted["key"] == "team-a-dev"
    rows = [r for r in traffic.iter_requests() if not r.usage_known_to_client and r.client_logged]
    assert len(rows) == 3
    assert all(r.is_stream and r.key_name == "team-a-dev" and r.quota_units > 0 for r in rows)
    write_inbox(traffic, tmp_path)
    by_id = {env["request_id"]: env for _, env in read_inbox(tmp_path)}
    for r in rows:
        response = by_id[r.request_id]["response"]
        assert response["object"] == "chat.completion.chunk" and response["usage"] is None


def test_planted_corrections_refund_and_errors(traffic):
    rows = list(traffic.iter_requests())
    corrections = [r for r in rows if r.correction_of]
    # upstream since 2026-02 (service/task_billing.go): a higher final price is a type-2 row, a lower one a
    # type-6 row giving the difference back; neither carries a request id
    assert {(r.log_type, r.quota_units) for r in corrections} == {(2, 87_500), (6, 20_000)}
    assert not any(r.logs_request_id for r in corrections)
    late = [r for r in corrections if r.visible_after_first_pull]
    assert len(late) == 1 and late[0].key_name == "media-tasks"
    assert traffic.day_of(late[0].ts) == START + timedelta(days=DAYS - 3)
    by_id = {r.request_id: r for r in rows}
    assert all(by_id[r.correction_of].model == r.model and by_id[r.correction_of].ts < r.ts for r in corrections)

    (refund,) = [r for r in rows if r.log_type == 6 and r.refund_of]
    original = by_id[refund.refund_of]
    assert refund.quota_units == original.quota_units > 0
    day = traffic.day_of(refund.ts)
    before = traffic.reported_daily(False)[(day, "media-tasks")][0]
    consumed = sum(
        r.usd for r in rows if r.key_name == "media-tasks" and traffic.day_of(r.ts) == day and r.log_type == 2
    )
    refunded = sum(Decimal(r.quota_units) / UNITS_PER_USD for r in rows
                   if r.key_name == "media-tasks" and traffic.day_of(r.ts) == day and r.log_type == 6)
    assert before == consumed - refunded

    errors = [r for r in rows if r.log_type == 5]
    assert errors and all(r.quota_units == 0 and not r.client_logged for r in errors)
    requests = sum(n for _, n in traffic.reported_daily(False).values())
    assert requests == sum(1 for r in rows if r.log_type == 2 and not r.correction_of)

    restated = traffic.reported_daily(True)
    changed = {k for k, v in traffic.reported_daily(False).items() if restated[k] != v}
    assert changed == {(START + timedelta(days=DAYS - 3), "media-tasks")}


def test_a_task_refund_or_correction_names_the_task_id_its_client_was_answered_with(traffic, tmp_path):
    write_inbox(traffic, tmp_path)
    replies = {env["request_id"]: env["response"] for _, env in read_inbox(tmp_path)}
    rows = list(traffic.iter_requests())
    by_id = {r.request_id: r for r in rows}
    follow_ups = [r for r in rows if r.task_billing and r.model]
    assert len(follow_ups) == 3
    for row in follow_ups:
        task = by_id[row.refund_of or row.correction_of]
        reply = replies[task.request_id]
        named = {"mj_imagine": reply.get("result"), "suno_music": reply.get("data"),
                 "kling_video": reply.get("task_id")}[task.model]
        assert named == row.other["task_id"] == task.public_task_id and named.startswith("task_")
        assert "task_id" not in task.other  # the submit's own charge names no task
    tasks = [r for r in rows if r.usage_shape == "task" and r.client_logged and r.log_type == 2 and not r.task_billing]
    assert len(tasks) > 20  # every task reply names its task, not only the planted ones
    assert all(task.public_task_id in json.dumps(replies[task.request_id]) for task in tasks)
    assert len({task.public_task_id for task in tasks}) == len(tasks)


def test_a_refund_delay_books_the_refund_after_midnight_on_the_next_day():
    plain = generate_traffic(seed=7, start=date(2026, 10, 31), days=2, requests_per_day=5)
    late = generate_traffic(seed=7, start=date(2026, 10, 31), days=2, requests_per_day=5,
                            refund_delay=timedelta(hours=13))
    refund = late.planted["refund"]
    assert refund["date"] == date(2026, 10, 31) and refund["booked_date"] == date(2026, 11, 1)
    assert plain.planted["refund"]["booked_date"] == date(2026, 10, 31)
    (row,) = [r for r in late.requests_for_day(date(2026, 11, 1)) if r.refund_of]
    (task,) = [r for r in late.requests_for_day(date(2026, 10, 31)) if r.request_id == refund["task_request_id"]]
    assert row.ts - task.ts == timedelta(hours=13) and row.refund_of == task.request_id
    assert row.other["task_id"] == refund["task_id"] and row.usd == -refund["task_usd"] < 0
    assert not [r for r in late.requests_for_day(date(2026, 10, 31)) if r.refund_of]
    before, after = plain.reported_daily(True), late.reported_daily(True)
    day1, day2 = (date(2026, 10, 31), "media-tasks"), (date(2026, 11, 1), "media-tasks")
    assert after[day1][0] == before[day1][0] + refund["task_usd"]  # the refund left the task's day ...
    assert after[day2][0] == before.get(day2, (Decimal(0), 0))[0] - refund["task_usd"]  # ... for the next
    assert after[day1][1] == before[day1][1]  # a refund is no request
    # nothing else moves; a refund after the window is not seen at all
    assert {k: v for k, v in after.items() if k not in (day1, day2)} == \
        {k: v for k, v in before.items() if k not in (day1, day2)}
    cut = generate_traffic(seed=7, start=date(2026, 10, 31), days=1, requests_per_day=5,
                           refund_delay=timedelta(hours=13))
    assert not [r for r in cut.iter_requests() if r.refund_of]
    with pytest.raises(ValueError, match="refund_delay must be positive"):
        generate_traffic(seed=7, start=date(2026, 10, 31), days=2, refund_delay=timedelta(0))


# --- inbox ------------------------------------------------------------------------------------------
def test_inbox_lines_follow_the_contract(traffic, tmp_path):
    counts = write_inbox(traffic, tmp_path)
    lines = read_inbox(tmp_path)
    assert counts["lines"] == len(lines)
    logged = {r.request_id: r for r in traffic.iter_requests() if r.client_logged and r.log_type == 2}
    assert len(lines) == len(logged)
    assert {p.name[10:] for p, _ in lines} == set(EXTENSIONS)
    assert set(counts["by_shape"]) == set(USAGE_SHAPES)
    missing = Counter()
    for path, env in lines:
        req = logged[env["request_id"]]
        assert path.parent.name == req.key_name and path.name.startswith(traffic.day_of(req.ts).isoformat())
        assert env["status"] == 200 and env["endpoint"] == req.endpoint
        for name in ("key_name", "model", "ts"):
            missing[name] += name not in env
        if "ts" in env:
            assert env["ts"] == req.ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            assert env["response"].get("created", env["response"].get("created_at")) == int(req.ts.timestamp())
        if "model" not in env:
            assert env["response"]["model"].startswith(req.model)
        assert normalised_usage(env["response"]) == expected_usage(req)
    assert all(missing[name] > 0 for name in ("key_name", "model", "ts"))
    assert all(missing[name] < len(lines) / 10 for name in ("key_name", "model", "ts"))


def expected_usage(req):
    if req.usage_shape == "task" or not req.usage_known_to_client:
        return None
    return (req.prompt_tokens, req.completion_tokens, req.cached_tokens, req.cache_write_tokens, req.reasoning_tokens)


def normalised_usage(response: dict):
    """The contract's normalisation to OpenAI semantics, written independently of the simulator."""
    if response.get("type") == "response.completed":
        response = response["response"]
    usage = response.get("usage")
    if not usage:
        return None
    if "input_tokens" in usage and "cache_read_input_tokens" in usage:  # Anthropic
        prompt = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
        cache_read, cache_write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
        return (prompt, usage["output_tokens"], cache_read, cache_write, 0)
    if "input_tokens" in usage:  # Responses API
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        return (usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"], 0,
                usage["output_tokens_details"]["reasoning_tokens"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return (usage["prompt_tokens"], usage["completion_tokens"],
            usage.get("prompt_tokens_details", {}).get("cached_tokens", 0), 0,
            usage.get("completion_tokens_details", {}).get("reasoning_tokens", 0))


def test_inbox_for_selected_days_only(traffic, tmp_path):
    day = START + timedelta(days=3)
    counts = write_inbox(traffic, tmp_path, days=[day])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert counts["files"] == len(files) > 0 and {p.name[:10] for p in files} == {day.isoformat()}


# --- /user/quota --------------------------------------------------------------------------------------
def test_daily_quota_equals_reported_daily(traffic, server, client):
    body = quota(client, server, start_date=START.isoformat(), end_date=LAST.isoformat()).json()
    expected = traffic.reported_daily(restated=False)
    got = {
        (date.fromisoformat(day), e["token_name"]): (Decimal(str(e["quota_used"])), e["request_count"])
        for day, entries in body["daily_quota"].items()
        for e in entries
    }
    assert got == expected
    assert body["request_count"] == sum(n for _, n in expected.values())
    assert Decimal(str(body["total_used_quota"])) == sum(v for v, _ in expected.values())
    assert body["total_quota"] == pytest.approx(500 - body["total_used_quota"], abs=1e-6)


def test_daily_quota_needs_both_dates_and_end_is_inclusive(server, client):
    assert "daily_quota" not in quota(client, server).json()
    assert "daily_quota" not in quota(client, server, start_date="2026-10-05").json()
    assert "daily_quota" not in quota(client, server, end_date="2026-10-05").json()
    one_day = quota(client, server, start_date="2026-10-05", end_date="2026-10-05").json()["daily_quota"]
    assert list(one_day) == ["2026-10-05"]
    three = quota(client, server, start_date="2026-10-05", end_date="2026-10-07").json()["daily_quota"]
    assert list(three) == ["2026-10-05", "2026-10-06", "2026-10-07"]
    outside = quota(client, server, start_date="2025-01-01", end_date="2025-01-31").json()
    assert outside["daily_quota"] == {}


def test_bad_dates_and_bad_key(server, client):
    for params in ({"start_date": "2026/06/01", "end_date": "2026-06-30"},
                   {"start_date": "2026-06-01", "end_date": "2026-6-30"},
                   {"start_date": "2026-10-09", "end_date": "2026-10-08"},
                   {"start_date": "2026-02-30", "end_date": "2026-03-01"}):
        r = quota(client, server, **params)
        assert r.status_code == 400, params
        assert r.json()["error"]["code"] == "invalid_request" and r.json()["error"]["type"] == "comet_api_error"
    r = client.get("/user/quota", params={"key": "sk-wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/user/quota").status_code == 401
    assert all(c.params.get("key") in (None, "***") for c in server.calls)


def test_accept_malformed_dates_fault(server, client):
    server.faults.add("accept_malformed_dates")
    for _ in range(2):  # a mode: stays until clear()
        r = quota(client, server, start_date="2026/06/01", end_date="2026/06/30")
        assert r.status_code == 200 and "daily_quota" not in r.json() and "total_quota" in r.json()
    server.faults.clear()
    assert quota(client, server, start_date="2026/06/01", end_date="2026/06/30").status_code == 400


def test_max_range_days(traffic):
    with SimulatorServer(traffic, max_range_days=31) as srv, httpx.Client(base_url=srv.url) as c:
        assert quota(c, srv, start_date="2026-10-01", end_date="2026-10-31").status_code == 200
        assert quota(c, srv, start_date="2026-10-01", end_date="2026-11-01").status_code == 400


def test_unlimited_key_sentinels(traffic, server, client):
    keys = {k["name"]: k for k in quota(client, server).json()["keys"]}
    assert (keys["team-b-prod"]["remain_quota"], keys["team-b-prod"]["used_quota"]) == (999999999, -1)
    totals = traffic.key_totals(restated=False)
    assert Decimal(str(keys["team-a-prod"]["used_quota"])) == totals["team-a-prod"][0]
    assert keys["team-a-prod"]["remain_quota"] == pytest.approx(200 - keys["team-a-prod"]["used_quota"])
    assert (keys["ledger-query"]["remain_quota"], keys["ledger-query"]["used_quota"]) == (0, 0)
    with SimulatorServer(traffic, unlimited_style="minus_one") as srv, httpx.Client(base_url=srv.url) as c:
        keys = {k["name"]: k for k in quota(c, srv).json()["keys"]}
        assert (keys["team-b-prod"]["remain_quota"], keys["team-b-prod"]["used_quota"]) == (-1, 0)


# --- /api/log/self --------------------------------------------------------------------------------------
def test_log_self_pages_add_up_to_daily_quota(traffic, server, client):
    items, envelope = log_pages(client, server, page_size=500)
    assert envelope["success"] is True and envelope["data"]["page_size"] == 100
    assert envelope["data"]["total"] == len(items) == len(list(traffic.iter_requests())) - 1  # late row hidden
    created = [(i["created_at"]) for i in items]
    assert created == sorted(created, reverse=True)
    # upstream model/log.go formatUserLogs: `id` is the row's place in the listing (startIdx + i + 1)
    assert [i["id"] for i in items] == list(range(1, len(items) + 1))
    request_ids = [i["request_id"] for i in items if "request_id" in i]
    assert len(set(request_ids)) == len(request_ids)
    # task refunds and corrections and the console logins carry no request id (the field is omitted)
    assert {i["type"] for i in items if "request_id" not in i} == {6, 7}  # (the late correction is hidden)
    assert any(i["ip"] == "" for i in items) and any(i["ip"] for i in items)

    from_log = daily_from_log(items)
    reported = traffic.reported_daily(restated=False)
    assert {k: v.quantize(ONE_UNIT) for k, v in from_log.items()} == {k: v for k, (v, _) in reported.items()}
    consume = Counter((datetime.fromtimestamp(i["created_at"], UTC).date(), i["token_name"]) for i in items
                      if i["type"] == 2 and "pre_consumed_quota" not in json.loads(i["other"]))
    assert dict(consume) == {k: n for k, (_, n) in reported.items()}


def test_log_self_filters_and_auth(traffic, server, client):
    headers = {"Authorization": server.access_token}  # the raw token is accepted too
    day = START + timedelta(days=4)
    first = int(datetime.combine(day, datetime.min.time(), UTC).timestamp())
    body = client.get("/api/log/self", headers=headers, params={
        "type": 2, "token_name": "team-a-prod", "start_timestamp": first, "end_timestamp": first + 86399,
        "page_size": 100}).json()
    expected = [r for r in traffic.requests_for_day(day) if r.key_name == "team-a-prod" and r.log_type == 2]
    assert body["data"]["total"] == len(expected) > 0
    assert {i["request_id"] for i in body["data"]["items"]} == {r.request_id for r in expected}
    edge = body["data"]["items"][0]["created_at"]  # inclusive bounds
    exact = client.get("/api/log/self", headers=headers,
                       params={"start_timestamp": edge, "end_timestamp": edge}).json()
    assert exact["data"]["total"] >= 1
    bad = client.get("/api/log/self", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 200
    assert bad.json() == {"success": False, "message": "无权进行此操作，access token 无效"}


def test_log_other_is_a_json_string_with_the_ratios(server, client):
    items, _ = log_pages(client, server)
    seen = Counter()
    for item in items:
        assert isinstance(item["other"], str)
        other = json.loads(item["other"])
        if item["type"] != 2 or "correction_of" in other:
            continue
        price = CATALOG[item["model_name"]]
        assert other["group_ratio"] == 0.8 and other["request_path"] == price.endpoint
        if price.per_call:
            assert other["model_price"] == float(price.model_price)
            assert item["quota"] == price.call_units()
            seen["per_call"] += 1
        else:
            assert other["model_price"] == -1
            assert other["completion_ratio"] == float(price.completion_ratio)
            assert other["cache_ratio"] == float(price.cache_ratio)
            assert {"model_ratio", "cache_tokens", "frt", "total_ms"} <= other.keys()
            if price.anthropic:
                assert other["usage_semantic"] == "anthropic" and other["cache_creation_ratio"] == 1.25
                seen["anthropic"] += 1
            seen["token"] += 1
    assert seen["per_call"] and seen["anthropic"] and seen["token"]


def test_log_self_page_size_is_capped_at_100(server, client):
    headers = {"Authorization": f"Bearer {server.access_token}"}
    big = client.get("/api/log/self", headers=headers, params={"page_size": 10_000}).json()["data"]
    assert big["page_size"] == MAX_PAGE_SIZE == 100 and len(big["items"]) == 100 < big["total"]
    default = client.get("/api/log/self", headers=headers).json()["data"]
    assert default["page_size"] == 20 and len(default["items"]) == 20


# --- /api/log/self/export ---------------------------------------------------------------------------------
def export(client, server, headers=None, **params):
    return client.get(EXPORT_PATH, params=params,
                      headers=headers or {"Authorization": f"Bearer {server.access_token}"})


def test_export_is_the_paged_ledger_as_the_console_csv(traffic, server, client):
    items, _ = log_pages(client, server)
    r = export(client, server)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["transfer-encoding"] == "chunked" and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert len(rows) - 1 == len(items) > 1000  # several streamed chunks
    expected = [[("true" if v else "false") if isinstance(v, bool) else str(v)
                 for v in (i.get(c, "") for c in EXPORT_COLUMNS)] for i in items]
    assert rows[1:] == expected  # same rows, same order (newest first), same values
    # the inbox reader reads it as it is, to the same records as the pages
    from_csv = parse_export_csv(r.text)
    assert [replace(rec, source="api") for rec in from_csv] == [parse_item(i) for i in items]
    # (the ids agree too: the export numbers its rows as one listing, as the pages do)


def test_export_filters_and_auth_are_the_paged_ones(traffic, server, client):
    day = START + timedelta(days=4)
    first = int(datetime.combine(day, datetime.min.time(), UTC).timestamp())
    params = {"type": 2, "token_name": "team-a-prod", "start_timestamp": first, "end_timestamp": first + 86399}
    paged = client.get("/api/log/self", headers={"Authorization": server.access_token},
                       params=params | {"page_size": 100}).json()["data"]["items"]
    raw = export(client, server, headers={"Authorization": server.access_token}, **params)  # raw token
    rows = list(csv.DictReader(io.StringIO(raw.text)))
    assert [row["request_id"] for row in rows] == [i["request_id"] for i in paged] and len(rows) > 5
    assert {row["type"] for row in rows} == {"2"} and {row["token_name"] for row in rows} == {"team-a-prod"}
    assert export(client, server, **params | {"model_name": "no-such-model"}).text.strip() == ",".join(EXPORT_COLUMNS)
    bad = export(client, server, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 200 and bad.json() == {"success": False, "message": "无权进行此操作，access token 无效"}


@pytest.mark.parametrize(("style", "status", "content_type"), [
    ("404", 404, "text/html"), ("405", 405, "application/json"), ("html_200", 200, "text/html"),
    ("success_false", 200, "application/json")])
def test_export_unavailable_fault(server, client, style, status, content_type):
    server.faults.add("export_unavailable", style=style)
    for _ in range(2):  # a mode: until cleared
        r = export(client, server)
        assert r.status_code == status and r.headers["content-type"].startswith(content_type)
        assert not r.headers["content-type"].startswith("text/csv")
    if style == "success_false":
        assert r.json()["success"] is False
    headers = {"Authorization": f"Bearer {server.access_token}"}
    assert client.get("/api/log/self", headers=headers).json()["success"] is True  # paging is unaffected
    server.faults.clear()
    assert export(client, server).headers["content-type"].startswith("text/csv")
    with pytest.raises(ValueError, match="style"):
        server.faults.add("export_unavailable", style="teapot")


def test_faults_apply_to_the_export(server, client):
    day = START + timedelta(days=2)
    first = int(datetime.combine(day, datetime.min.time(), UTC).timestamp())
    window = {"start_timestamp": first, "end_timestamp": first + 86399}
    whole = export(client, server, **window).text

    server.faults.add("truncated_json", paths=["/api/log/self"])  # a prefix of both ledger endpoints
    cut = export(client, server, **window)
    assert cut.status_code == 200 and whole.startswith(cut.text) and len(cut.text) == len(whole.encode()) // 2
    assert not cut.text.endswith("\n")

    server.faults.add("renamed_field", from_="request_id", to="req")
    header = export(client, server, **window).text.splitlines()[0].split(",")
    assert "req" in header and "request_id" not in header
    server.faults.add("missing_field", field="quota")
    rows = list(csv.reader(io.StringIO(export(client, server, **window).text)))
    assert "quota" not in rows[0] and {len(row) for row in rows} == {len(EXPORT_COLUMNS) - 1}

    server.faults.add("status", codes=[503], paths=[EXPORT_PATH])
    assert export(client, server, **window).status_code == 503
    server.faults.add("error_body_200", paths=[EXPORT_PATH])
    assert export(client, server, **window).json()["success"] is False
    server.faults.add("maintenance", paths=[EXPORT_PATH])
    assert export(client, server, **window).status_code == 503
    assert [c.fault for c in server.calls if c.path == EXPORT_PATH] == [
        None, "truncated_json", "renamed_field", "missing_field", "status", "error_body_200", "maintenance"]
    server.faults.clear()
    assert export(client, server, **window).text == whole


# --- restatement -----------------------------------------------------------------------------------------
def test_restatement_appears_after_first_covering_pull(traffic, server, client):
    planted = traffic.planted["restatement"]
    day, key = planted["date"], planted["key"]
    before = traffic.reported_daily(False)[(day, key)][0]
    after = traffic.reported_daily(True)[(day, key)][0]
    assert after - before == Decimal("0.175") == planted["usd"]

    def pulled() -> Decimal:
        body = quota(client, server, start_date=(day - timedelta(days=2)).isoformat(), end_date=day.isoformat()).json()
        (entry,) = [e for e in body["daily_quota"][day.isoformat()] if e["token_name"] == key]
        return Decimal(str(entry["quota_used"]))

    def late_row_in_log() -> bool:
        items, _ = log_pages(client, server, token_name=key)
        return any(i["type"] == 2 and i["quota"] == 87_500 and "pre_consumed_quota" in json.loads(i["other"])
                   for i in items)

    # a pull that does not cover the day, a truncated covering pull and a pull without dates change nothing
    quota(client, server, start_date=START.isoformat(), end_date=(day - timedelta(days=1)).isoformat())
    server.faults.add("truncated_json", paths=["/user/quota"])
    quota(client, server, start_date=day.isoformat(), end_date=day.isoformat())
    quota(client, server)
    assert not server.restated and not late_row_in_log()
    assert server.truth() == traffic.reported_daily(False)

    assert pulled() == before
    assert server.restated
    assert pulled() == after
    assert late_row_in_log()
    assert server.truth() == server.truth_after_restatement() == traffic.reported_daily(True)


# --- faults --------------------------------------------------------------------------------------------------
def test_rate_limit_and_status_faults(server, client):
    server.faults.add("rate_limit", retry_after=3)
    r = quota(client, server)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["type"] == "comet_api_error"
    assert quota(client, server).status_code == 200  # times=1

    server.faults.add("status")
    statuses = []
    for _ in range(5):
        r = quota(client, server)
        statuses.append(r.status_code)
        if r.status_code == 524:
            assert r.headers["content-type"].startswith("text/html") and "524" in r.text
        else:
            assert r.json()["error"]["type"] == "comet_api_error"
    assert statuses == [500, 502, 503, 504, 524]
    assert quota(client, server).status_code == 200

    server.faults.add("status", codes=[500], code="invalid_request", times=None, paths=["/api/"])
    assert quota(client, server).status_code == 200  # other paths unaffected
    for _ in range(2):
        r = client.get("/api/models")
        assert r.status_code == 500 and r.json()["error"]["code"] == "invalid_request"
    server.faults.clear()
    assert client.get("/api/models").status_code == 200
    assert [c.fault for c in server.calls].count("status") == 7


def test_slow_reset_redirect_faults(server, client):
    server.faults.add("slow", delay=0.3)
    t0 = time.monotonic()
    assert quota(client, server).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    server.faults.add("slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/models", timeout=0.1)

    server.faults.add("reset")
    with pytest.raises(httpx.TransportError):
        quota(client, server)
    assert server.calls[-1].status == 0 and server.calls[-1].fault == "reset"
    assert quota(client, server).status_code == 200

    server.faults.add("html_redirect")
    r = quota(client, server)
    assert r.status_code == 301 and r.headers["location"] == "https://www.cometapi.com/"
    assert r.headers["content-type"].startswith("text/html")
    r = client.get("/no/such/path")
    assert r.status_code == 301 and r.headers["location"] == "https://www.cometapi.com/"


def test_body_faults(server, client):
    headers = {"Authorization": f"Bearer {server.access_token}"}
    server.faults.add("error_body_200", times=2)
    r = client.get("/api/log/self", headers=headers)
    assert r.status_code == 200 and r.json()["success"] is False
    r = quota(client, server)
    assert r.status_code == 200 and r.json()["error"]["type"] == "comet_api_error"

    server.faults.add("truncated_json")
    r = quota(client, server)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)

    server.faults.add("renamed_field", from_="token_name", to="name")
    body = quota(client, server, start_date="2026-10-02", end_date="2026-10-02").json()
    entry = body["daily_quota"]["2026-10-02"][0]
    assert "name" in entry and "token_name" not in entry

    server.faults.add("missing_field", field="total_quota")
    body = quota(client, server).json()
    assert "total_quota" not in body and "total_used_quota" in body
    assert "total_quota" in quota(client, server).json()


def test_maintenance_fault(server, client):
    server.faults.add("maintenance")
    for path in ("/user/quota", "/api/models"):
        r = client.get(path)
        assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
        assert "maintenance" in r.text
    server.faults.clear()
    assert client.get("/api/models").status_code == 200


def test_fault_plan_validates():
    plan = FaultPlan()
    with pytest.raises(ValueError):
        plan.add("earthquake")
    with pytest.raises(ValueError):
        plan.add("renamed_field", from_="a")
    plan.add("rate_limit", times=2, paths=["/user/"])
    assert plan.take("/api/models") is None
    assert plan.take("/user/quota").kind == "rate_limit"
    assert plan.take("/user/quota").kind == "rate_limit"
    assert plan.take("/user/quota") is None


# --- other endpoints -------------------------------------------------------------------------------------------
def test_models_usage_token_and_chat(traffic, server, client):
    models = {m["id"]: m for m in client.get("/api/models").json()["data"]}
    assert set(models) == set(CATALOG)
    assert models["gpt-4o-mini"]["pricing"]["input"] == 0.12  # the current (second) version
    assert models["mj_imagine"]["pricing"]["per_request"] == 0.05 and models["mj_imagine"]["pricing"]["input"] is None
    assert all("per_second" in m["pricing"] for m in models.values())

    bearer = {"Authorization": f"Bearer {server.api_key}"}
    usage = client.get("/api/usage/token", headers=bearer).json()
    assert usage["code"] is True and usage["data"]["unlimited_quota"] is False and usage["data"]["total_available"] == 0
    assert client.get("/api/usage/token", headers={"Authorization": "Bearer nope"}).status_code == 401
    with SimulatorServer(traffic, query_key_unlimited=True) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/api/usage/token", headers=bearer).json()["data"]["unlimited_quota"] is True

    r = client.post("/v1/chat/completions", headers=bearer,
                    json={"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "What is 2+2?"}]})
    usage = r.json()["usage"]
    assert r.status_code == 200 and r.headers["x-cometapi-request-id"]
    assert isinstance(usage["prompt_tokens"], int)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = client.post("/v1/chat/completions", headers=bearer,
                        json={"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "What is 2+2?"}]})
    assert again.json()["usage"] == usage
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 401


def test_refuses_non_loopback_host(traffic):
    for host in ("0.0.0.0", "10.1.2.3", "example.com", ""):
        with pytest.raises(ValueError):
            SimulatorServer(traffic, host=host)
    with SimulatorServer(traffic, host="localhost") as srv:
        assert httpx.get(f"{srv.url}/api/models").status_code == 200
