"""Hostile answers: what a query service (or anything answering at its URL) can send that must neither
change a figure nor hang a run nor leak a credential (issue 18; docs/reliability.md, "Hostile answers
and hostile files").

1. a dated answer without `daily_quota` (missing, or null) fails the pull with one line and changes
   nothing: no figure replaced, no false restatement;
5. an answer sent one byte at a time ends at the attempt's deadline, and SIGTERM stops a command with
   one line;
6. out-of-range numbers are refused at the edge with a message naming field, day, key and value;
7. an error body that echoes both the API key and the access token leaks neither, in any output or file
   (Parquet and DuckDB contents decoded, not only their bytes grepped), the smoke test included;
9. a date twice in `daily_quota`, an answer over the size cap, a `keys[]` over its cap, and JSON nested
   too deeply are each refused with what they are, and the last is not retried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import date

import httpx
import pytest

from conftest import materialize_days
from pipelines.lib.cometapi.http import MAX_JSON_BYTES, CometAPIError, RetryPolicy
from pipelines.lib.cometapi.query import MAX_KEYS, QueryClient
from pipelines.simulator.server import SimulatorServer
from support import (
    FIRST,
    LAST,
    AnswerServer,
    cli,
    file_digests,
    make_world,
    query,
    run_cli,
    secrets_found,
    small_traffic,
)

DAY = "2026-10-05"
ACCOUNT = {"username": "u", "total_quota": 10, "total_used_quota": 1, "request_count": 3,
           "keys": [{"name": "team-a-prod", "remain_quota": 5, "used_quota": 1}]}
PREFIX = "CometAPI query service /user/quota answered an unexpected body: "


def answer(**fields) -> bytes:
    return json.dumps(ACCOUNT | fields).encode()


def query_client(handler, **kwargs) -> QueryClient:
    return QueryClient("http://query.test", "sk-hostile-answers-0000", transport=httpx.MockTransport(handler),
                       sleep=lambda s: None, **kwargs)


def fixed(body: bytes, calls: list | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})
    return handler


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(small_traffic()) as server:
        server.mark_restated()  # the planted restatement is old news: healthy re-pulls restate nothing
        yield server


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, sim):
    """A home where the whole window ran once, healthy."""
    world = make_world(tmp_path_factory.mktemp("healthy"), sim, sim.traffic)
    assert materialize_days(world.settings, FIRST, LAST).success
    return world


QUOTA_TABLES = ("quota_daily", "quota_restatements", "recon_key_daily", "anomalies")


def quota_state(world) -> dict:
    lake = world.home / "lake"
    tables = {t: query(world.home / "warehouse.duckdb", f'SELECT * EXCLUDE (detected_at) FROM "{t}" ORDER BY ALL')
              if t == "anomalies" else query(world.home / "warehouse.duckdb", f'SELECT * FROM "{t}" ORDER BY ALL')
              for t in QUOTA_TABLES}
    return {"lake": {d: file_digests(lake / d) for d in ("quota_daily", "quota_pulls")}, "tables": tables}


# --- 1. a dated answer without daily_quota ---------------------------------------------------------


def test_a_dated_answer_without_daily_quota_fails_the_run_and_changes_nothing(healthy, sim, monkeypatch, tmp_path):
    before = quota_state(healthy)
    sim.faults.add("missing_field", times=None, paths=["/user/quota"], field="daily_quota")
    try:
        status, err = run_cli(monkeypatch, healthy, "run", "--date", LAST.isoformat(),
                              DAGSTER_HOME=str(tmp_path / "dagster"))
    finally:
        sim.faults.clear()
    assert status == 1
    [line] = err[1:]  # after the "materialising ..." note
    assert line.startswith("comet-ledger: error: lake__quota_daily: " + PREFIX), line
    assert "it has no daily_quota, though the call asked for 2026-10-03..2026-10-06" in line
    after = quota_state(healthy)
    assert after["lake"] == before["lake"]  # no pull landed
    assert after["tables"] == before["tables"]  # no figure replaced, no restatement, no new anomaly
    [(restated,)] = query(healthy.home / "warehouse.duckdb", "SELECT count(*) FROM quota_restatements "
                                                             "WHERE new_cost_usd = 0")
    assert restated == 0


def test_daily_quota_null_is_refused_and_an_absent_day_is_no_usage():
    with query_client(fixed(answer(daily_quota=None))) as client:
        with pytest.raises(CometAPIError) as caught:
            list(client.fetch_daily(date(2026, 10, 5), date(2026, 10, 5)))
    assert str(caught.value) == (PREFIX + "daily_quota is null, though the call asked for 2026-10-05..2026-10-05 "
                                 "(a day without usage is left out of daily_quota, not the whole field); nothing "
                                 "was stored")
    assert caught.value.kind == "unexpected_body" and not caught.value.retriable
    # the day absent from a present daily_quota: that day had no usage
    with query_client(fixed(answer(daily_quota={}))) as client:
        [pull] = client.fetch_daily(date(2026, 10, 5), date(2026, 10, 5))
    assert pull.response.daily == []


# --- 6. out-of-range numbers -----------------------------------------------------------------------

OUT_OF_RANGE = [
    ("quota_used", "1e15", f'daily_quota["{DAY}"][0].quota_used (key "team-a-prod") is 1E+15: out of range '
                           "(amounts must be below 1,000,000,000,000 USD)"),
    ("quota_used", "0.1234567", f'daily_quota["{DAY}"][0].quota_used (key "team-a-prod") is 0.1234567: more than 6 '
                                "decimal places, finer than the warehouse stores (USD to the micro-dollar)"),
    ("request_count", "1e20", f'daily_quota["{DAY}"][0].request_count (key "team-a-prod") is 1E+20: out of range '
                              "(counts must be below 2^63)"),
]


@pytest.mark.parametrize("field, value, message", OUT_OF_RANGE, ids=[f"{f}={v}" for f, v, _ in OUT_OF_RANGE])
def test_an_out_of_range_number_stops_the_run_naming_field_day_key_and_value(healthy, monkeypatch, tmp_path,
                                                                               field, value, message):
    entry = {"token_name": "team-a-prod", "quota_used": "Q", "request_count": "N"}
    text = json.dumps(ACCOUNT | {"daily_quota": {DAY: [entry]}})
    text = text.replace('"Q"', value if field == "quota_used" else "1.5").replace(
        '"N"', value if field == "request_count" else "3")
    before = quota_state(healthy)
    with AnswerServer(text.encode()) as server:
        status, err = run_cli(monkeypatch, healthy, "run", "--date", DAY, "--repull", "0",
                              COMETAPI_QUERY_URL=server.url, DAGSTER_HOME=str(tmp_path / "dagster"))
    assert status == 1
    assert err[-1] == f"comet-ledger: error: lake__quota_daily: {PREFIX}{message}"
    assert quota_state(healthy) == before


# --- 9. duplicated date, size caps, deep nesting -----------------------------------------------------


def test_a_date_twice_in_daily_quota_rejects_the_answer():
    entry = '[{"token_name": "team-a-prod", "quota_used": 1.5, "request_count": 3}]'
    body = answer()[:-1] + f', "daily_quota": {{"{DAY}": {entry}, "{DAY}": []}}}}'.encode()
    with query_client(fixed(body)) as client:
        with pytest.raises(CometAPIError) as caught:
            list(client.fetch_daily(date(2026, 10, 5), date(2026, 10, 5)))
    assert str(caught.value) == PREFIX + f'daily_quota has the date "{DAY}" twice: which figures hold cannot be told'


def test_an_answer_over_the_size_cap_is_not_read_and_fails_with_one_line():
    # declared 300 MB: refused from its header; sent chunked without a length: read up to the cap only
    for server in (AnswerServer(declared_length=300 * 2**20), AnswerServer(chunked_bytes=300 * 2**20)):
        with server, QueryClient(server.url, "sk-hostile-answers-0000", sleep=lambda s: None,
                                 policy=RetryPolicy(max_attempts=2)) as client:
            with pytest.raises(CometAPIError) as caught:
                client.fetch_quota()
        assert caught.value.kind == "too_large" and not caught.value.retriable
        assert str(caught.value) == ("CometAPI query service GET /user/quota failed: HTTP 200 answer larger than "
                                     "32 MiB, the most a JSON answer may be (not read further)")
        assert server.requests == 1
        assert server.sent[0] < MAX_JSON_BYTES + 8 * 2**20  # not 300 MB: the client stopped reading


def test_more_keys_than_the_cap_is_refused():
    keys = [{"name": f"k{i}", "remain_quota": 1, "used_quota": 0} for i in range(MAX_KEYS + 1)]
    with query_client(fixed(answer(keys=keys))) as client:
        with pytest.raises(CometAPIError) as caught:
            client.fetch_quota()
    assert str(caught.value) == PREFIX + f"keys[] lists {MAX_KEYS + 1} keys, more than the {MAX_KEYS} an answer may list"


def test_deeply_nested_complete_json_says_what_it_is_and_is_not_retried():
    body = b'{"username": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    calls: list = []
    with query_client(fixed(body, calls)) as client:
        with pytest.raises(CometAPIError) as caught:
            client.fetch_quota()
    assert len(calls) == 1  # not retried
    assert caught.value.kind == "unexpected_body" and not caught.value.retriable
    assert str(caught.value) == (f"CometAPI query service GET /user/quota failed: HTTP 200 JSON nested deeper than "
                                 f"the parser allows ({len(body)} bytes): not an answer this client can read, "
                                 "not retried")


# --- 5. deadlines and SIGTERM ----------------------------------------------------------------------


def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_attempts_deadline():
    body = answer(daily_quota={})  # ~170 bytes: 17 s at the drip below, the read timeout never trips
    with AnswerServer(body, drip_s=0.1) as server:
        with QueryClient(server.url, "sk-hostile-answers-0000", timeout=httpx.Timeout(0.5, connect=0.5),
                         policy=RetryPolicy(max_attempts=2, base_delay=0.01), sleep=lambda s: None) as client:
            with pytest.raises(CometAPIError) as caught:
                client.fetch_quota()
    assert caught.value.kind == "deadline" and caught.value.retriable
    assert str(caught.value) == ("CometAPI query service GET /user/quota gave up after 2 attempts: no complete answer "
                                 "within the 1s deadline (the server sent too slowly or stalled)")
    assert server.requests == 2
    assert all(0 < sent < len(body) for sent in server.sent)  # each attempt ended mid-answer


def test_sigterm_stops_a_run_with_one_line(healthy, tmp_path):
    """The run hangs on a query service that drips its answer; SIGTERM ends it at once."""
    before = file_digests(healthy.home, skip=lambda p: "inbox" in p.parts)
    with AnswerServer(answer(daily_quota={}), drip_s=1.0) as server:
        env = healthy.env() | {"COMETAPI_QUERY_URL": server.url, "DAGSTER_HOME": str(tmp_path / "dagster")}
        process = subprocess.Popen(cli("run", "--date", LAST.isoformat()), env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert server.received.wait(120), "the run never called the query service"
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    lines = err.strip().splitlines()
    assert lines[-1] == ("comet-ledger: stopped (SIGTERM); nothing half-written was published; re-run the same "
                         "command to resume"), err
    assert "Traceback" not in err
    assert not (healthy.home / "warehouse.duckdb.build").exists()
    # what the run got to write before the signal: the inbox staging and the snapshot (whole files); no
    # quota pull, no warehouse swap of a quota table
    after = file_digests(healthy.home, skip=lambda p: "inbox" in p.parts)
    assert {k: v for k, v in after.items() if "quota_" in k} == {k: v for k, v in before.items() if "quota_" in k}


# --- 7. secrets --------------------------------------------------------------------------------------

KEY = "qk-HOSTILEKEY-8c1e77aa5d"  # neither looks like sk-...: only knowing the value masks it
TOKEN = "HOSTILETOKEN-51c0ffee-77"


def test_an_error_body_echoing_both_credentials_leaks_neither_anywhere(tmp_path, monkeypatch, capfd):
    echo = f"invalid credentials: key {KEY} token {TOKEN}"
    with SimulatorServer(small_traffic(), api_key=KEY, access_token=TOKEN) as sim:
        world = make_world(tmp_path / "world", sim, sim.traffic)
        assert materialize_days(world.settings, FIRST, LAST).success  # a healthy home first
        sim.faults.add("error_body_200", times=None, paths=["/user/quota", "/api/"], message=echo)
        status, err = run_cli(monkeypatch, world, "run", "--date", LAST.isoformat())
        assert status == 1 and err[-1].startswith("comet-ledger: error: "), err
        smoke_status, smoke_err = run_cli(monkeypatch, world, "smoke-test", "--reviewer", "ops")
        assert smoke_status == 1
        # the Dagster CLI as a deployment runs it: its own process, compute logs captured
        env = world.env() | {"COMET_LEDGER_NOW": os.environ["COMET_LEDGER_NOW"]}
        done = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
                               "--select", "lake/quota_daily,lake/gateway_logs", "--partition", LAST.isoformat()],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
    [(failures,)] = query(world.home / "warehouse.duckdb", "SELECT failures FROM smoke_tests")
    assert "invalid credentials: key *** token ***" in failures  # the failure is recorded, masked
    out, captured = capfd.readouterr()
    printed = "\n".join([out, captured, *err, *smoke_err, done.stdout, done.stderr])
    assert KEY not in printed and TOKEN not in printed
    assert "invalid credentials: key *** token ***" in printed
    storage = list((world.dagster_home / "storage").rglob("*"))
    assert any(p.suffix in (".out", ".err", ".complete") for p in storage), "no compute log was captured"
    assert secrets_found([world.home, world.dagster_home], [KEY, TOKEN]) == []


def test_each_client_masks_both_configured_credentials():
    from pipelines.lib.cometapi.gateway import GatewayClient
    from pipelines.lib.settings import load_settings

    load_settings(env={"COMETAPI_KEY": KEY, "COMETAPI_ACCESS_TOKEN": TOKEN})  # what configures a process
    echo = json.dumps({"success": False, "message": f"bad key {KEY} or token {TOKEN}"}).encode()
    with query_client(fixed(echo)) as client, pytest.raises(CometAPIError) as from_query:
        client.fetch_quota()
    transport = httpx.MockTransport(fixed(echo))
    with GatewayClient("http://gateway.test", TOKEN, transport=transport, sleep=lambda s: None) as client:
        with pytest.raises(CometAPIError) as from_gateway:
            client.fetch_models()
    for caught in (from_query, from_gateway):
        assert KEY not in str(caught.value) and TOKEN not in str(caught.value)
        assert "bad key *** or token ***" in str(caught.value)

