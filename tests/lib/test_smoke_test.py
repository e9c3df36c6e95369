"""The smoke test against the simulator on loopback: happy path, error path, key hygiene, the record."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from datetime import UTC, date, datetime

import duckdb
import pytest

from pipelines.lib.cometapi.http import RetryPolicy
from pipelines.lib.cometapi.query import QueryClient
from pipelines.simulator.server import QUERY_KEY_NAME, SimulatorServer
from pipelines.lib.smoke_test import (
    MALFORMED_ACCEPTED,
    SmokeTestResult,
    default_active_range,
    record,
    run_from_settings,
    run_smoke_test,
)
from conftest import make_settings

TODAY = date(2026, 10, 31)  # the day after the simulated month (conftest: 2026-10-01, 30 days)
FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)
CANARY = "sk-SMOKECANARY-9d41c7e2f0b8"
CONTRACT_FIELDS = {
    "smoke_test_date", "query_key_name", "query_date_range", "total_quota_returned",
    "total_used_quota_returned", "request_count_returned", "daily_quota_dates_present",
    "sample_chat_total_tokens", "usage_field_present", "date_range_filter_working",
    "error_path_returned_error", "reviewer",
}


def smoke(server: SimulatorServer, *, key: str | None = None, **options) -> SmokeTestResult:
    options.setdefault("known_active_range", None)
    options.setdefault("reviewer", None)
    options.setdefault("today", TODAY)
    return run_smoke_test(server.url, server.url, key or server.api_key, policy=FAST, timeout=5.0, **options)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_one_line_failures(result: SmokeTestResult) -> None:
    assert result.passed is False
    assert result.exit_code == 1
    assert result.failures
    for line in result.failures + result.warnings:
        assert line and "\n" not in line and line == line.strip()


def test_passes_against_the_normal_simulator(sim):
    result = smoke(sim, reviewer="  alice  ")

    assert result.passed is True, result.failures
    assert result.exit_code == 0
    assert result.failures == [] and result.warnings == []
    assert result.smoke_test_date == TODAY
    assert result.query_key_name == QUERY_KEY_NAME
    assert result.query_date_range == "2026-10-24..2026-10-30"  # the 7 days before today
    assert isinstance(result.total_quota_returned, float)
    assert isinstance(result.total_used_quota_returned, float) and result.total_used_quota_returned > 0
    assert isinstance(result.request_count_returned, int) and result.request_count_returned > 0
    assert result.daily_quota_dates_present is True
    assert result.date_range_filter_working is True
    assert result.error_path_returned_error is True
    assert result.sample_chat_total_tokens is None and result.usage_field_present is None  # no --chat: NULL
    assert result.reviewer == "alice"
    assert result.checked_at.tzinfo is not None and result.checked_at.utcoffset().total_seconds() == 0

    payload = json.loads(result.to_json())
    assert CONTRACT_FIELDS <= payload.keys()
    assert {"passed", "failures", "warnings", "checked_at"} <= payload.keys()
    assert list(payload) == sorted(payload)
    assert result.to_json() == result.to_json()
    assert SmokeTestResult.from_json(result.to_json()) == result
    assert "PASSED" in result.summary()


def test_contract_field_types():
    hints = {f.name: f.type for f in dataclasses.fields(SmokeTestResult)}
    assert CONTRACT_FIELDS | {"passed", "failures", "warnings", "checked_at"} == hints.keys()
    assert hints["smoke_test_date"] == "date"
    assert hints["total_quota_returned"] == "float | None"
    assert hints["request_count_returned"] == "int | None"
    assert hints["daily_quota_dates_present"] == "bool"
    assert hints["usage_field_present"] == "bool | None"


def test_explicit_active_range(sim):
    result = smoke(sim, known_active_range=(date(2026, 10, 1), date(2026, 10, 10)))
    assert result.passed is True, result.failures
    assert result.query_date_range == "2026-10-01..2026-10-10"


def test_a_range_without_activity_fails_the_happy_path(sim):
    result = smoke(sim, known_active_range=(date(2026, 12, 1), date(2026, 12, 7)))
    assert_one_line_failures(result)
    assert result.daily_quota_dates_present is False
    assert result.error_path_returned_error is True and result.date_range_filter_working is True
    assert any("2026-12-01..2026-12-07" in line and "daily_quota" in line for line in result.failures)


def test_fails_when_the_service_silently_accepts_a_malformed_date(sim):
    sim.faults.add("accept_malformed_dates")
    result = smoke(sim)

    assert_one_line_failures(result)
    assert result.failures == [MALFORMED_ACCEPTED]
    assert MALFORMED_ACCEPTED == (
        "the service silently accepted the malformed date 2026/06/01: do not trust this pipeline for a review"
    )
    assert result.error_path_returned_error is False
    assert result.daily_quota_dates_present is True and result.date_range_filter_working is True
    assert "FAILED" in result.summary()


def test_fails_when_the_service_ignores_the_date_filter(sim, monkeypatch):
    original = QueryClient._fetch

    def ignore_dates(self, start_date, end_date, *, keep):  # answers October whatever was asked
        if start_date is not None and start_date.startswith("2001-"):
            return original(self, "2026-10-01", "2026-10-30", keep=keep)
        return original(self, start_date, end_date, keep=keep)

    monkeypatch.setattr(QueryClient, "_fetch", ignore_dates)
    result = smoke(sim)
    assert_one_line_failures(result)
    assert result.date_range_filter_working is False
    assert any("2001-01-01..2001-01-07" in line and "ignores the date filter" in line for line in result.failures)


def test_warns_when_the_query_key_can_spend_money(traffic):
    with SimulatorServer(traffic, query_key_unlimited=True) as server:
        result = smoke(server)
    assert result.passed is True, result.failures
    assert result.query_key_name == QUERY_KEY_NAME
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert f"'{QUERY_KEY_NAME}'" in warning and "can spend money" in warning and "quota-0" in warning
    assert "WARNING" in result.summary()


def test_identity_endpoint_failure_is_a_warning_not_a_failure(sim):
    sim.faults.add("html_redirect", times=None, paths=["/api/usage/token"])
    result = smoke(sim)
    assert result.passed is True, result.failures
    assert result.query_key_name is None
    assert len(result.warnings) == 1 and "/api/usage/token" in result.warnings[0]


def test_chat_usage_fields(sim):
    result = smoke(sim, chat=True, chat_model="gpt-4.1-nano")
    assert result.passed is True, result.failures
    assert result.usage_field_present is True
    assert isinstance(result.sample_chat_total_tokens, int) and result.sample_chat_total_tokens > 0
    chats = [call for call in sim.calls if call.path == "/v1/chat/completions"]
    assert len(chats) == 1


def test_missing_totals_field_fails(sim):
    sim.faults.add("missing_field", field="request_count", paths=["/user/quota"])
    result = smoke(sim)
    assert_one_line_failures(result)
    assert "request_count" in result.failures[0]
    assert result.request_count_returned is None
    assert result.error_path_returned_error is False  # skipped, not verified


def check_no_canary(result: SmokeTestResult, tmp_path, caplog) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    record(warehouse, result)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT * FROM smoke_tests").fetchall()
    outputs = [str(result), repr(result), result.to_json(), result.summary(), repr(rows), caplog.text]
    for text in outputs:
        assert CANARY not in text
        assert CANARY[-12:] not in text


def test_unreachable_service(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    url = closed_port_url()
    result = run_smoke_test(url, url, CANARY, known_active_range=None, reviewer="bob", chat=True,
                            today=TODAY, policy=FAST, timeout=2.0)
    assert_one_line_failures(result)
    assert "connection failed" in result.failures[0]
    assert result.usage_field_present is False and result.sample_chat_total_tokens is None
    assert result.query_key_name is None and result.warnings
    assert result.total_quota_returned is None and result.request_count_returned is None
    assert result.error_path_returned_error is False and result.date_range_filter_working is False
    check_no_canary(result, tmp_path, caplog)


def test_wrong_key(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    result = smoke(sim, key=CANARY, chat=True)
    assert_one_line_failures(result)
    assert "401" in result.failures[0] and "COMETAPI_KEY" in result.failures[0]
    assert result.query_key_name is None
    check_no_canary(result, tmp_path, caplog)


def test_record_appends_rows_with_contract_types(sim, tmp_path):
    warehouse = tmp_path / "home" / "warehouse.duckdb"
    first = smoke(sim, chat=True, reviewer="alice")
    sim.faults.add("accept_malformed_dates")
    second = smoke(sim)
    record(warehouse, first)
    record(warehouse, second)

    with duckdb.connect(str(warehouse), read_only=True) as con:
        types = dict(con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'smoke_tests'"
        ).fetchall())
        uncommented = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'smoke_tests' AND comment IS NULL"
        ).fetchall()
        table_comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'smoke_tests'").fetchone()
        rows = con.execute(
            "SELECT passed, reviewer, usage_field_present, sample_chat_total_tokens, failures, warnings, "
            "error_path_returned_error, smoke_test_date, checked_at FROM smoke_tests ORDER BY checked_at"
        ).fetchall()

    assert types == {
        "smoke_test_date": "DATE",
        "query_key_name": "VARCHAR",
        "query_date_range": "VARCHAR",
        "total_quota_returned": "DOUBLE",
        "total_used_quota_returned": "DOUBLE",
        "request_count_returned": "BIGINT",
        "daily_quota_dates_present": "BOOLEAN",
        "sample_chat_total_tokens": "BIGINT",
        "usage_field_present": "BOOLEAN",
        "date_range_filter_working": "BOOLEAN",
        "error_path_returned_error": "BOOLEAN",
        "reviewer": "VARCHAR",
        "passed": "BOOLEAN",
        "failures": "VARCHAR",
        "warnings": "VARCHAR",
        "checked_at": "TIMESTAMP WITH TIME ZONE",
    }
    assert uncommented == [] and table_comment[0]
    assert len(rows) == 2
    assert rows[0][:6] == (True, "alice", True, first.sample_chat_total_tokens, None, None)
    assert rows[1][:4] == (False, None, None, None)
    assert rows[1][4] == MALFORMED_ACCEPTED and rows[1][6] is False
    assert rows[0][7] == TODAY
    assert rows[0][8] == first.checked_at


def test_run_from_settings(tmp_path, sim):
    settings = make_settings(tmp_path / "home", sim)
    result = run_from_settings(settings, reviewer="carol", today=TODAY, policy=FAST, timeout=5.0)
    assert result.passed is True, result.failures
    assert result.reviewer == "carol"


def test_bad_arguments_raise_before_any_call():
    with pytest.raises(ValueError, match="known_active_range"):
        run_smoke_test("http://127.0.0.1:9", "http://127.0.0.1:9", "sk-x", reviewer=None, today=TODAY,
                       known_active_range=(date(2026, 10, 5), date(2026, 10, 1)))
    with pytest.raises(ValueError, match="API key"):
        run_smoke_test("http://127.0.0.1:9", "http://127.0.0.1:9", "", reviewer=None, today=TODAY,
                       known_active_range=None)
    with pytest.raises(ValueError, match="today"):
        run_smoke_test("http://127.0.0.1:9", "http://127.0.0.1:9", "sk-x", reviewer=None,
                       today=datetime.now(UTC), known_active_range=None)


def test_default_active_range():
    assert default_active_range(TODAY) == (date(2026, 10, 24), date(2026, 10, 30))
