"""Bad input, one catalogue: client request-log lines, gateway ledger rows (API items and console CSV
exports), config rows (prices CSV, key owners CSV, budgets CSV) and malformed alert channel settings.

Every kind in the catalogue is checked twice:

- on its own: a bad log line or ledger row is rejected with its reason code (`REJECT_REASONS`,
  `GATEWAY_REJECT_REASONS`); a bad config row stops `comet-ledger run` before any API call with ONE
  line on stderr naming the file and the line (and the column where there is one), exit status 2;
- together, through a real pipeline run: a mixed inbox (the simulator's client logs, a file holding
  every bad line between good ones plus a duplicate and blank lines, a file in the inbox root, two
  broken gzip files, two console CSV exports holding every bad CSV row beside good ones) is run by
  the daily job; then per file and in total `lines read = accepted + rejected + duplicates`
  (`inbox_files`), every bad line / row is in `rejects` with its file, line and reason and nothing
  else is, and every good line landed in `requests`.

`KINDS` counts the distinct kinds (at least 30 are required).
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import materialize_days
from pipelines.cli import main
from pipelines.lib.reconciliation.budgets import BUDGET_COLUMNS
from pipelines.lib.prices.tables import KEY_OWNER_COLUMNS, PRICE_COLUMNS
from pipelines.lib.gateway.ledger import GATEWAY_REJECT_REASONS, GatewayReject, parse_export_csv, parse_item
from pipelines.lib.request_logs import REJECT_REASONS, Reject, parse_line
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer, _log_item
from support import FIRST, LAST, make_world, query, small_traffic

# --- client request-log lines ----------------------------------------------------------------------

DAY = "2026-10-05"  # inside the simulated window


def chat_body(request_id: str, **usage) -> dict:
    return {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": 1791201600, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Four"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, **usage}}


def envelope(request_id: str, *, drop: tuple[str, ...] = (), body: dict | None = None, **fields) -> dict:
    line = {"request_id": request_id, "ts": f"{DAY}T12:00:00Z", "key_name": "team-a-prod", "model": "gpt-4o",
            "endpoint": "/v1/chat/completions", "status": 200, "source_ip": "203.0.113.7", "latency_ms": 812,
            "response": chat_body(request_id) if body is None else body, **fields}
    return {k: v for k, v in line.items() if k not in drop}


def good_line(n: int) -> str:
    return json.dumps(envelope(f"good-{n}", ts=f"{DAY}T{12 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"))


def line(request_id: str, **kwargs) -> str:
    return json.dumps(envelope(request_id, **kwargs))


def without(d: dict, *names: str) -> dict:
    return {k: v for k, v in d.items() if k not in names}


@dataclass(frozen=True)
class LogLine:
    kind: str
    text: str | bytes
    reason: str
    in_root: bool = False  # the file sits in the inbox root, so no key folder to fall back on


LOG_LINES = [
    LogLine("truncated JSON", '{"request_id": "bad-trunc", "response": {"object": "chat.completion"', "invalid_json"),
    LogLine("NaN, which JSON does not have", '{"request_id": "bad-nan", "latency_ms": NaN, "response": {}}',
            "invalid_json"),
    LogLine("two objects on one line", '{"request_id": "a"} {"request_id": "b"}', "invalid_json"),
    LogLine("bytes that are not UTF-8", b'{"request_id": "bad-utf8", "key_name": "\xff\xfe", "response": {}}',
            "encoding_error"),
    LogLine("an unpaired surrogate escape", line("bad-surrogate", key_name="\ud800"), "encoding_error"),
    LogLine("a JSON array instead of an object", '[{"request_id": "bad-array"}]', "not_an_object"),
    LogLine("a bare JSON string", '"just text"', "not_an_object"),
    LogLine("no response field", line("bad-noresp", drop=("response",)), "missing_response"),
    LogLine("response null", json.dumps(envelope("bad-nullresp") | {"response": None}), "missing_response"),
    LogLine("response is an array", json.dumps(envelope("bad-resplist") | {"response": [1, 2]}), "bad_field_type"),
    LogLine("status is a string", line("bad-status", status="200"), "bad_field_type"),
    LogLine("status outside 100..599", line("bad-status99", status=99), "bad_field_type"),
    LogLine("negative latency", line("bad-latency", latency_ms=-5), "bad_field_type"),
    LogLine("usage is an array", line("bad-usagelist", body=chat_body("bad-usagelist") | {"usage": [100, 20]}),
            "bad_field_type"),
    LogLine("a body of no known shape (an embeddings list)",
            line("bad-shape", body={"object": "list", "data": [], "model": "text-embedding-3-small"}), "unknown_shape"),
    LogLine("an error body without an error status",
            line("bad-errbody", body={"error": {"message": "overloaded"}}), "unknown_shape"),
    LogLine("no key_name, and the file is in the inbox root", line("bad-nokey", drop=("key_name",)), "missing_key",
            in_root=True),
    LogLine("no request_id in the envelope nor the body",
            line("x", drop=("request_id",), body=without(chat_body("x"), "id")), "missing_request_id"),
    LogLine("no ts and no created", line("bad-nots", drop=("ts",), body=without(chat_body("bad-nots"), "created")),
            "missing_timestamp"),
    LogLine("ts without a UTC offset", line("bad-naive", ts=f"{DAY}T12:00:00"), "bad_timestamp"),
    LogLine("ts that is not a time", line("bad-tstext", ts="yesterday"), "bad_timestamp"),
    LogLine("ts before the year 2000", line("bad-ts1999", ts="1999-12-31T23:59:59Z"), "bad_timestamp"),
    LogLine("ts a boolean", line("bad-tsbool", ts=True), "bad_timestamp"),
    LogLine("ts years in the future", line("bad-future", ts="2099-01-01T00:00:00Z"), "future_timestamp"),
    LogLine("no model in the envelope nor the body",
            line("bad-nomodel", drop=("model",), body=without(chat_body("bad-nomodel"), "model")), "missing_model"),
    LogLine("a token count as a string", line("bad-tokstr", body=chat_body("bad-tokstr", prompt_tokens="100")),
            "bad_token_type"),
    LogLine("a token count as a float", line("bad-tokfloat", body=chat_body("bad-tokfloat", completion_tokens=20.0)),
            "bad_token_type"),
    LogLine("a token count beyond 2**53", line("bad-tokbig", body=chat_body("bad-tokbig", prompt_tokens=2**53)),
            "bad_token_type"),
    LogLine("a negative token count", line("bad-tokneg", body=chat_body("bad-tokneg", prompt_tokens=-100)),
            "negative_tokens"),
    LogLine("total != prompt + completion", line("bad-total", body=chat_body("bad-total", total_tokens=121)),
            "inconsistent_tokens"),
    LogLine("cache reads exceed the prompt",
            line("bad-cache", body=chat_body("bad-cache", prompt_tokens_details={"cached_tokens": 101})),
            "inconsistent_tokens"),
    LogLine("reasoning exceeds the completion",
            line("bad-reason", body=chat_body("bad-reason", completion_tokens_details={"reasoning_tokens": 21})),
            "inconsistent_tokens"),
]


def gzip_lines(texts: list[str]) -> bytes:
    return gzip.compress(("\n".join(texts) + "\n").encode(), mtime=0)


# Whole files whose stream is broken: read up to the damage, then ONE corrupt_gzip reject.
NOT_GZIP = ("a .jsonl.gz that is not gzip at all", b"this was never compressed\n")
TRUNCATED = ("a gzip stream cut off halfway", gzip_lines([good_line(n) for n in range(1000, 1200)]))
GZIP_FILES = {"team-b-prod/not-gzip.jsonl.gz": NOT_GZIP, "team-b-prod/truncated.jsonl.gz": TRUNCATED}

# --- gateway ledger rows ---------------------------------------------------------------------------

CSV_HEADER = ["id", "created_at", "type", "content", "token_name", "model_name", "quota", "prompt_tokens",
              "completion_tokens", "use_time", "is_stream", "group", "ip", "request_id", "other"]


@dataclass(frozen=True)
class LedgerRow:
    kind: str
    changes: dict  # CSV cells (strings) replacing the good row's, or for API items the JSON values
    reason: str
    source: str = "csv"  # csv: console export; csv_usd: an export with a cost_usd column; api: /api/log/self item


LEDGER_ROWS = [
    LedgerRow("no created_at", {"created_at": ""}, "missing_created_at"),
    LedgerRow("created_at negative", {"created_at": "-5"}, "bad_created_at"),
    LedgerRow("created_at not a time", {"created_at": "yesterday"}, "bad_field_type"),
    LedgerRow("type 300, beyond any log type code", {"type": "300"}, "unknown_log_type"),
    LedgerRow("no type", {"type": ""}, "unknown_log_type"),
    LedgerRow("type an unknown word", {"type": "spend"}, "bad_field_type"),
    LedgerRow("consume row without token_name", {"token_name": ""}, "missing_key_name"),
    LedgerRow("consume row without quota", {"quota": ""}, "missing_quota"),
    LedgerRow("quota a fraction", {"quota": "12.5"}, "bad_quota"),
    LedgerRow("refund with a negative quota", {"type": "6", "quota": "-100"}, "bad_quota"),
    LedgerRow("quota beyond DECIMAL(18,6)", {"quota": str(10**18)}, "bad_quota"),
    LedgerRow("negative prompt_tokens", {"prompt_tokens": "-3"}, "bad_field_type"),
    LedgerRow("use_time not a number", {"use_time": "slow"}, "bad_field_type"),
    LedgerRow("is_stream neither true nor false", {"is_stream": "maybe"}, "bad_field_type"),
    LedgerRow("USD cost not a whole number of quota units", {"quota": "", "cost_usd": "0.0000015"}, "bad_quota",
              "csv_usd"),
    LedgerRow("quota and USD cost disagree", {"quota": "1000", "cost_usd": "1.00"}, "bad_quota", "csv_usd"),
    LedgerRow("USD cost not a number", {"quota": "", "cost_usd": "ten cents"}, "bad_quota", "csv_usd"),
    LedgerRow("an item that is not an object", {"__item__": ["not", "an", "item"]}, "not_an_object", "api"),
    LedgerRow("request_id a number", {"request_id": 12345}, "bad_field_type", "api"),
    LedgerRow("quota a float", {"quota": 1500.0}, "bad_quota", "api"),
    LedgerRow("quota a boolean", {"quota": True}, "bad_quota", "api"),
]


# --- config rows -----------------------------------------------------------------------------------

PRICE_HEADER = ",".join(PRICE_COLUMNS)
OWNER_HEADER = ",".join(KEY_OWNER_COLUMNS)
TOKEN_ROW = dict(model="gpt-4o", billing_category="token", input_usd_per_mtok="2.5", output_usd_per_mtok="10",
                 cache_read_usd_per_mtok="1.25", cache_write_usd_per_mtok="", per_call_usd="", gateway_ratio="0.8",
                 effective_from="2025-01-01", effective_to="", source="list")
CALL_ROW = TOKEN_ROW | dict(model="mj_imagine", billing_category="per_call", input_usd_per_mtok="",
                            output_usd_per_mtok="", cache_read_usd_per_mtok="", per_call_usd="0.05", gateway_ratio="1")
OWNER_ROW = "team-a-prod,team-a,assistant,CC-1001,2025-01-01,2026-06-01"


def price(base: dict = TOKEN_ROW, **changes: str) -> str:
    row = base | changes
    return ",".join(row[c] for c in PRICE_COLUMNS)


@dataclass(frozen=True)
class ConfigRow:
    kind: str
    file: str  # prices.csv, key_owners.csv or budgets.csv
    text: str | bytes  # the whole file
    line: int
    column: str | None
    says: str  # a fragment of the reason


def prices(*rows: str, header: str = PRICE_HEADER) -> str:
    return "\n".join([header, price(CALL_ROW), *rows]) + "\n"


def owners(*rows: str, header: str = OWNER_HEADER) -> str:
    return "\n".join([header, OWNER_ROW, *rows]) + "\n"


BUDGET_HEADER = ",".join(BUDGET_COLUMNS)
BUDGET_ROW = "account,,month,500,80;100,2025-01-01,"


def budgets(*rows: str) -> str:
    return "\n".join([BUDGET_HEADER, BUDGET_ROW, *rows]) + "\n"


CONFIG_ROWS = [
    ConfigRow("negative price", "prices.csv", prices(price(input_usd_per_mtok="-0.5")), 3, "input_usd_per_mtok",
              "is negative"),
    ConfigRow("price not a number", "prices.csv", prices(price(output_usd_per_mtok="ten")), 3, "output_usd_per_mtok",
              "is not a decimal number"),
    ConfigRow("price in scientific notation", "prices.csv", prices(price(output_usd_per_mtok="1e-3")), 3,
              "output_usd_per_mtok", "is not a decimal number"),
    ConfigRow("price with 7 decimal places", "prices.csv", prices(price(cache_read_usd_per_mtok="0.1234567")), 3,
              "cache_read_usd_per_mtok", "more than 6 decimal places"),
    ConfigRow("price too large for DECIMAL(18,6)", "prices.csv", prices(price(input_usd_per_mtok="1" + "0" * 13)), 3,
              "input_usd_per_mtok", "is too large"),
    ConfigRow("unknown billing category", "prices.csv", prices(price(billing_category="tokens")), 3,
              "billing_category", "unknown billing category"),
    ConfigRow("token row without an output price", "prices.csv", prices(price(output_usd_per_mtok="")), 3,
              "output_usd_per_mtok", "required on a token row"),
    ConfigRow("token row with a per-call price", "prices.csv", prices(price(per_call_usd="0.05")), 3,
              "per_call_usd", "must be empty on a token row"),
    ConfigRow("per-call row without its price", "prices.csv", prices(price(CALL_ROW, model="suno", per_call_usd="")),
              3, "per_call_usd", "required on a per_call row"),
    ConfigRow("per-call row with a token price", "prices.csv",
              prices(price(CALL_ROW, model="suno", input_usd_per_mtok="2.5")), 3, "input_usd_per_mtok",
              "must be empty on a per_call row"),
    ConfigRow("gateway_ratio 0", "prices.csv", prices(price(gateway_ratio="0")), 3, "gateway_ratio",
              "must be greater than 0"),
    ConfigRow("gateway_ratio empty", "prices.csv", prices(price(gateway_ratio="")), 3, "gateway_ratio",
              "required, but empty"),
    ConfigRow("effective_from in another date format", "prices.csv", prices(price(effective_from="2025/01/01")), 3,
              "effective_from", "is not a date in YYYY-MM-DD form"),
    ConfigRow("effective_to a day that does not exist", "prices.csv", prices(price(effective_to="2025-02-30")), 3,
              "effective_to", "is not a date in YYYY-MM-DD form"),
    ConfigRow("effective_to not after effective_from", "prices.csv", prices(price(effective_to="2024-12-31")), 3,
              "effective_to", "is not after effective_from"),
    ConfigRow("two versions of a model overlapping", "prices.csv",
              prices(price(), price(effective_from="2025-06-01", input_usd_per_mtok="2")), 4, "effective_from",
              "overlap"),
    ConfigRow("a gap between two versions of a model", "prices.csv",
              prices(price(effective_to="2025-03-01"), price(effective_from="2025-04-01")), 4, "effective_from",
              "leave a gap"),
    ConfigRow("model name with a trailing space", "prices.csv", prices(price(model="gpt-4o ")), 3, "model",
              "has surrounding spaces"),
    ConfigRow("model name empty", "prices.csv", prices(price(model="")), 3, "model", "required, but empty"),
    ConfigRow("a field too many", "prices.csv", prices(price() + ",extra"), 3, "#12", "extra field"),
    ConfigRow("a field too few", "prices.csv", prices(price().rsplit(",", 1)[0]), 3, "source", "missing"),
    ConfigRow("an unterminated quote swallowing the line", "prices.csv", prices('"gpt-4o,token,2.5'), 3,
              "billing_category", "missing"),
    ConfigRow("unknown header column", "prices.csv", prices(header=PRICE_HEADER + ",notes"), 1, "notes",
              "unknown column"),
    ConfigRow("header column twice", "prices.csv", prices(header=PRICE_HEADER + ",model"), 1, "model",
              "appears twice in the header"),
    ConfigRow("a byte that is not UTF-8", "prices.csv",
              prices(price(source="caf\u00e9")).encode("utf-8").replace("caf\u00e9".encode(), b"caf\xe9"), 3, None,
              "not UTF-8"),
    ConfigRow("an empty file", "prices.csv", "", 1, None, "empty file"),
    ConfigRow("owner without a team", "key_owners.csv", owners("team-b-prod,,search,,2025-01-01,"), 3, "team",
              "required, but empty"),
    ConfigRow("key name with a leading space", "key_owners.csv", owners(" team-b-prod,team-b,,,2025-01-01,"), 3,
              "key_name", "has surrounding spaces"),
    ConfigRow("owner rows of one key overlapping", "key_owners.csv",
              owners("team-a-prod,team-b,,,2026-01-01,"), 3, "effective_from", "overlap"),
    ConfigRow("owner effective_from in words", "key_owners.csv", owners("team-b-prod,team-b,,,July 2025,"), 3,
              "effective_from", "is not a date in YYYY-MM-DD form"),
    ConfigRow("owner effective_to before effective_from", "key_owners.csv",
              owners("team-b-prod,team-b,,,2025-07-01,2025-06-01"), 3, "effective_to", "is not after effective_from"),
    ConfigRow("owners header without project", "key_owners.csv",
              owners(header=OWNER_HEADER.replace(",project", "")), 1, "project", "missing from the header"),
    ConfigRow("budget for an unknown scope", "budgets.csv", budgets("project,search,month,50,,2025-01-01,"), 3,
              "scope", "unknown scope 'project'"),
    ConfigRow("budget with a negative amount", "budgets.csv", budgets("team,team-a,month,-50,,2025-01-01,"), 3,
              "amount_usd", "-50 is negative"),
    ConfigRow("two rows of one budget overlapping", "budgets.csv", budgets("account,,month,800,,2026-01-01,"), 3,
              "effective_from", "budget rows of account (month) on lines 2 and 3 overlap"),
    ConfigRow("a month budget from the middle of a month", "budgets.csv",
              budgets("team,team-a,month,50,,2025-01-15,"), 3, "effective_from", "does not start a month"),
    ConfigRow("budget thresholds that are not percentages", "budgets.csv",
              budgets("key,team-a-prod,day,5,eighty,2025-01-01,"), 3, "thresholds_pct", "not a list of percentages"),
]

KINDS = ([f"log line: {c.kind}" for c in LOG_LINES] + [f"log file: {kind}" for kind, _ in GZIP_FILES.values()]
         + [f"ledger row ({c.source}): {c.kind}" for c in LEDGER_ROWS]
         + [f"{c.file}: {c.kind}" for c in CONFIG_ROWS])


def test_the_catalogue_holds_at_least_30_distinct_kinds_covering_every_reason():
    assert len(KINDS) == len(set(KINDS)) >= 30
    assert {c.reason for c in LOG_LINES} | {"corrupt_gzip"} == set(REJECT_REASONS)
    assert {c.reason for c in LEDGER_ROWS} == set(GATEWAY_REJECT_REASONS)
    print(f"{len(KINDS)} kinds: {len(LOG_LINES) + len(GZIP_FILES)} log, {len(LEDGER_ROWS)} ledger, "
          f"{len(CONFIG_ROWS)} config")


# --- each kind on its own --------------------------------------------------------------------------

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("case", LOG_LINES, ids=lambda c: c.kind)
def test_each_bad_log_line_is_rejected_with_its_reason(case):
    outcome = parse_line(case.text, fallback_key=None if case.in_root else "team-a-prod", now=NOW)
    assert isinstance(outcome, Reject) and outcome.reason == case.reason, outcome
    assert outcome.detail and "\n" not in outcome.detail


def good_ledger_item(traffic) -> dict:
    """A real consume row of the simulated ledger (the API serves the same item)."""
    row = next(r for r in traffic.requests_for_day(LAST) if r.log_type == 2 and r.correction_of is None
               and r.key_name == "team-a-prod")
    return _log_item(0, row)


def csv_text(rows: list[dict], usd: bool) -> str:
    header = CSV_HEADER + (["cost_usd"] if usd else [])
    out = io.StringIO()
    writer = csv.DictWriter(out, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v)
                       for k, v in row.items()} for row in rows])
    return out.getvalue()


def bad_ledger_row(good: dict, case: LedgerRow):
    if "__item__" in case.changes:
        return case.changes["__item__"]
    changed = copy.deepcopy(good) | case.changes
    if case.source == "csv_usd" and changed["quota"] and "cost_usd" not in case.changes:
        changed["cost_usd"] = f"{int(changed['quota']) / 500000:.6f}"
    return changed


@pytest.mark.parametrize("case", LEDGER_ROWS, ids=lambda c: f"{c.source}: {c.kind}")
def test_each_bad_ledger_row_is_rejected_with_its_reason(case):
    good = good_ledger_item(small_traffic())
    if case.source == "api":
        outcome = parse_item(bad_ledger_row(good, case))
    else:
        [outcome] = parse_export_csv(csv_text([bad_ledger_row(good, case)], case.source == "csv_usd"))
        assert outcome.line == 2
    assert isinstance(outcome, GatewayReject) and outcome.reason == case.reason, outcome
    assert outcome.detail and "\n" not in outcome.detail


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(small_traffic()) as server:
        server.mark_restated()
        yield server


@pytest.mark.parametrize("case", CONFIG_ROWS, ids=lambda c: f"{c.file}: {c.kind}")
def test_each_bad_config_row_stops_the_run_before_any_call_with_one_line_naming_file_and_line(
        case, sim, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config"
    config.mkdir()
    (config / "prices.csv").write_text(prices())
    (config / "key_owners.csv").write_text(owners())
    (config / "budgets.csv").write_text(budgets())
    bad = config / case.file
    bad.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode())
    for name, value in {"COMET_LEDGER_HOME": str(tmp_path / "home"), "COMETAPI_KEY": sim.api_key,
                        "COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url,
                        "COMET_LEDGER_PRICES": "config/prices.csv", "COMET_LEDGER_KEY_OWNERS": "config/key_owners.csv",
                        "COMET_LEDGER_BUDGETS": "config/budgets.csv",
                        "COMET_LEDGER_START_DATE": "2026-09-01", "DAGSTER_HOME": str(tmp_path / "dagster")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COMETAPI_ACCESS_TOKEN", raising=False)
    calls = len(sim.calls)

    assert main(["run", "--date", LAST.isoformat()]) == 2
    out, err = capsys.readouterr()
    [message] = err.strip().splitlines()
    where = f"config/{case.file} line {case.line}" + (f", column {case.column}" if case.column else "")
    assert message.startswith(f"comet-ledger: error: {where}: "), message
    assert case.says in message
    assert len(sim.calls) == calls  # failed fast: no API call made
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()


BAD_CHANNELS = [
    ("COMET_LEDGER_ALERT_SLACK_URL", "hooks.example.com/services/T0/B0/SECRETPATH", "is not an http(s) URL"),
    ("COMET_LEDGER_ALERT_WEBHOOK_URL", "https://exa mple.com/hook/SECRETPATH", "is not an http(s) URL"),
    ("COMET_LEDGER_ALERT_SMTP_PORT", "smtp", "is set but COMET_LEDGER_ALERT_SMTP_HOST is not"),
]


@pytest.mark.parametrize("variable, value, says", BAD_CHANNELS, ids=[v for v, _, _ in BAD_CHANNELS])
def test_a_malformed_alert_channel_stops_the_run_before_any_call_naming_the_variable_not_the_value(
        variable, value, says, sim, tmp_path, monkeypatch, capsys):
    for name, setting in {"COMET_LEDGER_HOME": str(tmp_path / "home"), "COMETAPI_KEY": sim.api_key,
                          "COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url, variable: value,
                          "COMET_LEDGER_START_DATE": "2026-09-01", "DAGSTER_HOME": str(tmp_path / "dagster")}.items():
        monkeypatch.setenv(name, setting)
    calls = len(sim.calls)
    assert main(["run", "--date", LAST.isoformat()]) == 2
    out, err = capsys.readouterr()
    [message] = err.strip().splitlines()
    assert message.startswith(f"comet-ledger: error: {variable}") and says in message, message
    assert "SECRETPATH" not in out + err
    assert len(sim.calls) == calls and not (tmp_path / "home" / "warehouse.duckdb").exists()


# --- all of them together, through a real run ------------------------------------------------------

BAD_FILE = "team-a-prod/bad-lines.jsonl"
ROOT_FILE = "no-key.jsonl"


@dataclass
class Inbox:
    """What was written into the inbox, and what each line must become."""

    read: dict[str, int] = field(default_factory=dict)  # file -> non-blank lines
    blank: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rejects: set[tuple] = field(default_factory=set)  # (source, file, line, reason)
    raw: dict[tuple, str] = field(default_factory=dict)  # (file, line) -> the text of a rejected line
    good_ids: set[str] = field(default_factory=set)


def write_file(inbox: Path, name: str, lines: list[str | bytes | None], expect: Inbox,
               reasons: dict[int, str], duplicates: int = 0) -> None:
    """Write `lines` (None = a blank line); `reasons`: 1-based line -> expected reject reason."""
    data = b"".join((b"" if text is None else text if isinstance(text, bytes) else text.encode()) + b"\n"
                    for text in lines)
    (inbox / name).parent.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(data)
    expect.blank[name] = sum(text is None for text in lines)
    expect.read[name] = len(lines) - expect.blank[name]
    expect.duplicates[name] = duplicates
    expect.accepted[name] = expect.read[name] - len(reasons) - duplicates
    for number, reason in reasons.items():
        expect.rejects.add(("client_log", name, number, reason))
        text = lines[number - 1]
        if isinstance(text, str):
            expect.raw[(name, number)] = text


def write_mixed_inbox(inbox: Path, traffic) -> Inbox:
    expect = Inbox()
    # every bad line between good ones, a blank line every few, and a duplicate of the first good line
    lines, reasons, n = [], {}, 0
    for case in (c for c in LOG_LINES if not c.in_root):
        n += 1
        lines.append(good_line(n))
        expect.good_ids.add(f"good-{n}")
        lines.append(case.text)
        reasons[len(lines)] = case.reason
        if n % 5 == 0:
            lines.append(None)
    lines.append(good_line(1))  # the same request again: a duplicate, neither accepted nor rejected
    write_file(inbox, BAD_FILE, lines, expect, reasons, duplicates=1)
    # the inbox root has no key folder: a line without key_name cannot be attributed
    rooted = [c for c in LOG_LINES if c.in_root]
    keyed = json.dumps(envelope("good-root", ts=f"{DAY}T13:00:00Z"))
    expect.good_ids.add("good-root")
    write_file(inbox, ROOT_FILE, [c.text for c in rooted] + [keyed], expect,
               {i: c.reason for i, c in enumerate(rooted, start=1)})
    for name, (_, data) in GZIP_FILES.items():
        (inbox / name).write_bytes(data[: len(data) // 2] if "truncated" in name else data)
    expect.rejects.add(("client_log", "team-b-prod/not-gzip.jsonl.gz", 1, "corrupt_gzip"))  # the truncated
    # file's reject line depends on where the stream broke: checked apart
    # the console's CSV exports: the good row (which the API also serves) and every bad CSV row
    good = good_ledger_item(traffic)
    for source, name in (("csv", "gateway/export.csv"), ("csv_usd", "gateway/export-usd.csv")):
        cases = [c for c in LEDGER_ROWS if c.source == source]
        rows = [bad_ledger_row(good, LedgerRow("good", {}, "", source))] + [bad_ledger_row(good, c) for c in cases]
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_text(csv_text(rows, source == "csv_usd"))
        expect.rejects |= {("gateway_csv", name, line, c.reason) for line, c in enumerate(cases, start=3)}
    return expect


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, sim):
    traffic = sim.traffic
    world = make_world(tmp_path_factory.mktemp("mixed"), sim, traffic, inbox=False)
    settings = world.settings
    simulated = write_inbox(traffic, settings.inbox)
    expect = write_mixed_inbox(settings.inbox, traffic)
    assert materialize_days(settings, FIRST, LAST).success
    return settings, expect, simulated


def test_every_line_of_a_mixed_inbox_is_accepted_rejected_or_a_duplicate(mixed_run):
    settings, expect, simulated = mixed_run
    files = {f: (read, blank, accepted, rejected, duplicates, balanced) for f, read, blank, accepted, rejected,
             duplicates, balanced in query(settings.warehouse_path,
                                           "SELECT file, lines_read, blank_lines, accepted, rejected, duplicates, "
                                           "balanced FROM inbox_files")}
    # per file: lines read = accepted + rejected + duplicates
    for name, (read, _, accepted, rejected, duplicates, balanced) in files.items():
        assert balanced and read == accepted + rejected + duplicates, name
    for name in expect.read:  # the files written here: exactly the expected split
        read, blank, accepted, rejected, duplicates, _ = files[name]
        assert (read, blank, accepted, duplicates) == (
            expect.read[name], expect.blank[name], expect.accepted[name], expect.duplicates[name]), name
        assert rejected == sum(1 for _, f, _, _ in expect.rejects if f == name), name
    assert files["team-b-prod/not-gzip.jsonl.gz"][:5] == (1, 0, 0, 1, 0)
    truncated = files["team-b-prod/truncated.jsonl.gz"]
    assert truncated[3] == 1 and 0 < truncated[2] < 200  # the lines before the break, then one reject
    # in total
    [(read, accepted, rejected, duplicates)] = query(
        settings.warehouse_path,
        "SELECT sum(lines_read), sum(accepted), sum(rejected), sum(duplicates) FROM inbox_files")
    assert read == accepted + rejected + duplicates
    assert read == simulated["lines"] + sum(expect.read.values()) + 1 + truncated[0]
    # every good line landed
    landed = {r for (r,) in query(settings.warehouse_path,
                                  "SELECT request_id FROM requests WHERE request_id LIKE 'good-%'")}
    assert expect.good_ids <= landed


def test_every_bad_line_and_row_is_in_rejects_with_its_reason_and_nothing_else(mixed_run):
    settings, expect, _ = mixed_run
    rows = query(settings.warehouse_path, "SELECT source, file, line, reason, detail, raw FROM rejects")
    truncated = [r for r in rows if r[1] == "team-b-prod/truncated.jsonl.gz"]
    assert [r[3] for r in truncated] == ["corrupt_gzip"]
    found = {(source, file, line, reason) for source, file, line, reason, _, _ in rows} - {truncated[0][:4]}
    assert found - expect.rejects == set()  # nothing but the bad input is rejected
    assert expect.rejects - found == set()  # every bad line and row is there, with its reason
    assert len(rows) == len(expect.rejects) + 1  # each once (every gateway pull re-reads the CSV exports)
    for source, file, line, reason, detail, raw in rows:
        assert detail and "\n" not in detail, (file, line)
        if (file, line) in expect.raw:
            assert raw == expect.raw[(file, line)], (file, line)
        if source == "gateway_csv":
            assert json.loads(raw)["request_id"] is not None  # the CSV row as it was
