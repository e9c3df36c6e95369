"""The bulk export reader (`gateway_fast`) against the reference (`export_items`, then `parse_item`).

For a fetched export body the reference is `export_items` (its items, or its `ExportError`) and then
`parse_item` on each item (source `api`). `export_cells` + `records_from_cells` must give the same:
the same error, or the same records in the same order (the Arrow tables equal) and the same rejects.
Checked on the simulator's exports (every row type: calls, errors, refunds, positive and negative
corrections, account events), on every gateway test item, reject case and bad-input row, on
generated rows whose cells take every kind of value, and on CSV spelt every way; plus that the fast
path does take the simulator's rows, and `dedupe_sorted` against `dedupe` and the lake's sort.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.lib.gateway.fast import _SPACE_CLASS, export_cells, records_from_cells
from pipelines.lib.gateway.ledger import (
    ExportError,
    GatewayReject,
    csv_lines,
    dedupe_sorted,
    export_items,
    parse_item,
    records_to_table,
)
from conftest import bad_input_catalogue
from oracles.gateway import dedupe
from test_gateway_ledger import ITEM_FIELDS, REJECT_CASES, item

ZONES = [ZoneInfo("UTC"), ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]
START_TS, END_TS = 1774396800, 1774483199  # 2026-03-25 UTC, inclusive (item()'s day)
NAME = "the export of a day"
EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "cometapi" / "gateway_log_page.json"


def reference(body: bytes, start_ts: int, end_ts: int):
    try:
        items = export_items(csv_lines([body]), start_ts=start_ts, end_ts=end_ts, name=NAME)
    except ExportError as exc:
        return "refused", str(exc), exc.lasting
    outcomes = [parse_item(i, source="api") for i in items]
    records = [o for o in outcomes if not isinstance(o, GatewayReject)]
    return records_to_table(records), [o for o in outcomes if isinstance(o, GatewayReject)]


def assert_same(body: bytes | str, *, start_ts: int = START_TS, end_ts: int = END_TS) -> int:
    """Read `body` both ways and compare; returns how many rows the fast path took (-1: refused, -2: declined)."""
    body = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else body
    expected = reference(body, start_ts, end_ts)
    try:
        cells = export_cells(bytearray(body), start_ts=start_ts, end_ts=end_ts, name=NAME)
    except ExportError as exc:
        assert ("refused", str(exc), exc.lasting) == expected
        return -1
    if isinstance(cells, list):  # the reader was not sure of the body: the reference's items
        assert cells == export_items(csv_lines([body]), start_ts=start_ts, end_ts=end_ts, name=NAME)
        return -2
    parsed = records_from_cells(cells)
    assert expected[0] != "refused", f"refused by the reference, not by the fast path: {expected}"
    records, rejects = expected
    assert parsed.rejects == rejects
    assert parsed.records.schema == records.schema
    assert parsed.records.to_pylist() == records.to_pylist()
    assert parsed.records.equals(records)
    return parsed.fast


def csv_of(rows: list[dict], columns: list[str] = ITEM_FIELDS, line_end: str = "\r\n") -> str:
    """Rows of cells (strings, or values written as the simulator writes them) as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else str(row[c]).lower() if isinstance(row[c], bool) else row[c]
                         for c in columns])
    return out.getvalue()


# --- the simulator's exports ---------------------------------------------------------------------------


def simulator_export(sim, first: date, last: date, tz: ZoneInfo = ZONES[0]) -> tuple[bytes, int, int]:
    sim.export = True  # CometAPI's own export (upstream has no route): behind the simulator's flag
    start = int(datetime.combine(first, datetime.min.time(), tz).timestamp())
    end = int(datetime.combine(last + timedelta(days=1), datetime.min.time(), tz).timestamp()) - 1
    answer = httpx.get(f"{sim.url}/api/log/self/export", params={"start_timestamp": start, "end_timestamp": end},
                       headers={"Authorization": f"Bearer {sim.access_token}"}, timeout=60)
    answer.raise_for_status()
    return answer.content, start, end


@pytest.mark.parametrize("tz", ZONES, ids=str)
def test_the_simulator_export_goes_the_fast_way_with_the_reference_rows(sim, traffic, tz):
    sim.mark_restated()  # the late positive correction too
    body, start, end = simulator_export(sim, traffic.start, traffic.end - timedelta(days=1), tz)
    rows = body.count(b"\n") - 1
    assert rows > 1000
    without_request_id = sum(1 for line in body.decode().splitlines()[1:] if ",," in line and _no_request_id(line))
    assert without_request_id > 30  # task refunds, corrections and logins: no request id, parse_item's rows
    assert assert_same(body, start_ts=start, end_ts=end) == rows - without_request_id  # the rest, fast
    table = records_from_cells(export_cells(body, start_ts=start, end_ts=end)).records
    kinds = set(zip(table["log_type"].to_pylist(), table["is_correction"].to_pylist(), strict=True))
    assert {(2, False), (2, True), (5, False), (6, False), (7, False)} <= kinds  # calls, corrections, errors,
    # refunds, logins; task refunds and corrections have no request id: they are the reference's rows
    assert set(table.filter(pa.compute.invert(table["has_request_id"]))["log_type"].to_pylist()) == {2, 6, 7}
    assert {"anthropic", "openai"} == set(table["usage_semantic"].to_pylist())
    assert {"token", "per_call"} <= set(table["billing_category"].to_pylist())


def _no_request_id(line: str) -> bool:
    return next(csv.reader([line]))[13] == ""


def test_account_events_and_rejects_in_a_simulator_export_come_from_parse_item(sim, traffic):
    body, start, end = simulator_export(sim, traffic.start, traffic.start + timedelta(days=2))
    lines = body.decode().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    topup = next(csv.reader([rows[0]]))
    topup[2], topup[13], topup[4] = "1", "", ""  # a top-up: no request_id, no key (a synthetic id)
    no_key = next(csv.reader([rows[1]]))
    no_key[2], no_key[4] = "2", ""  # a consume row without a key: missing_key_name
    out = io.StringIO()
    csv.writer(out).writerows([topup, no_key])
    fast = assert_same((header + out.getvalue() + "".join(rows[2:])).encode(), start_ts=start, end_ts=end)
    assert fast == len(rows) - 2 - sum(1 for line in rows[2:] if _no_request_id(line))


# --- every gateway test item, reject case and bad-input row ---------------------------------------------


def test_the_fixture_items_and_every_reject_case():
    examples = json.loads(EXAMPLE.read_text())["data"]["items"]
    cases = [item(**overrides) for overrides, _ in REJECT_CASES
             if "created_at" not in overrides and utf8(overrides)]  # a lone surrogate: the export is not UTF-8
    assert assert_same(csv_of(examples)) == 2
    assert assert_same(csv_of([item(), *cases, item(request_id="last")])) >= 2
    outcomes = [assert_same(csv_of([item(), item(**overrides)])) for overrides, _ in REJECT_CASES]
    assert outcomes.count(-1) >= 3  # a created_at that is not unix seconds in the window refuses the export
    assert outcomes.count(1) >= 10  # the good row the fast way, the other (a reject) from parse_item


def utf8(value: dict) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def test_every_bad_input_ledger_row():
    catalogue = bad_input_catalogue()
    good = catalogue.good_ledger_item(catalogue.small_traffic())
    day = datetime.fromtimestamp(good["created_at"], ZONES[0]).date()
    start = int(datetime.combine(day, datetime.min.time(), ZONES[0]).timestamp())
    outcomes = []
    for case in catalogue.LEDGER_ROWS:
        row = catalogue.bad_ledger_row(good, case)
        if not isinstance(row, dict):
            continue
        text = catalogue.csv_text([good, row], case.source == "csv_usd")
        outcomes.append(assert_same(text, start_ts=start, end_ts=start + 86_399))
    assert outcomes.count(1) >= 8  # the bad row from parse_item, the good one the fast way


# --- generated rows: every kind of cell ---------------------------------------------------------------------

_SPACES = ["", " ", "\t", "\u00a0", "\u3000", "\x1f", "\u2028"]
# Contents around CORRECTION_CONTENT's edges: word boundaries, case folding, Chinese, CSV quoting.
CONTENTS = ["", "model ratio 0.05, completion ratio 4", "task t billing correction -0.1", "an adjustment",
            "xcorrection", "CORRECTION", "补差 0.1", "调整", "éadjustment", "adjustmentй", "line\nbreak",
            'a "quoted", word', "CORRECTİON", "ſorrection", "correction_of", "KORRECTION"]
_numbers = st.one_of(
    st.integers(-3, 3), st.integers(-(10**20), 10**20), st.sampled_from([0, -1, 2**53, 2**53 + 1, 2**63, 10**17 - 1]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.5, 1.5, 2.5, -0.5, -0.0, 1e-320, 1e308]),
)
_json_value = st.one_of(
    _numbers, st.booleans(), st.none(), st.sampled_from(["", "x", "anthropic", "/v1/chat", "0"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(["a"]), st.integers(), max_size=1),
)
_OTHER_KEYS = ["model_ratio", "group_ratio", "completion_ratio", "cache_ratio", "cache_creation_ratio",
               "model_price", "cache_tokens", "cache_creation_tokens", "frt", "total_ms", "request_path",
               "usage_semantic", "correction_of", "is_correction", "correction", "adjustment_of", "is_adjustment",
               "unknown"]


@st.composite
def other_cell(draw) -> str:
    value = draw(st.dictionaries(st.sampled_from(_OTHER_KEYS), _json_value, max_size=6))
    text = json.dumps(value, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
                      ensure_ascii=draw(st.booleans()))
    return draw(st.sampled_from([
        text, text, text, "", "{not json", "[1, 2]", "42", '"s"', "null", text[:-1], " " + text, text + "\u00a0",
        '{"model_ratio": NaN}', '{"model_ratio": 1e999}', '{"model_ratio": 1, "model_ratio": "x"}',
        '{"model_ratio": "x", "model_ratio": 1}', '{"model_ratio": 2, "model_ratio": 3}',
        '{"request_path": "\\ud800"}', '{"usage_semantic": "anthr\\u006fpic"}', '{"model\\u005fprice": 0.1}',
        '{"cache_tokens": ' + "[" * 300 + "]" * 300 + "}", '{"frt": 12.5, "total_ms": 13.5}',
    ]))


def _spaced(draw, text: str) -> str:
    return draw(st.sampled_from(_SPACES[:1] * 6 + _SPACES)) + text + draw(st.sampled_from(_SPACES[:1] * 6 + _SPACES))


@st.composite
def row_cells(draw) -> dict:
    created = draw(st.one_of(st.integers(START_TS, END_TS), st.sampled_from(["", "0", "-5", "yesterday"])))
    return {
        "id": draw(st.sampled_from(["", "7", "0", "-1", "1023", "+5", "1.5", "x", "007", "٣"])),
        "created_at": _spaced(draw, str(created)) if draw(st.integers(0, 9)) else str(created),
        "type": _spaced(draw, draw(st.sampled_from(["1", "2", "2", "2", "3", "4", "5", "6", "0", "7", "02", "",
                                                     "consume", "Refund", "退款", "2.0"]))),
        "content": _spaced(draw, draw(st.sampled_from(CONTENTS))),
        "token_name": _spaced(draw, draw(st.sampled_from(["team-a", "team-a", "", "k,1", "键"]))),
        "model_name": _spaced(draw, draw(st.sampled_from(["gpt-4o", "", "suno_music"]))),
        "quota": _spaced(draw, draw(st.one_of(st.integers(-(10**18), 10**18).map(str),
                                              st.sampled_from(["", "0", "-0", "+5", "12.5", "1e3", "1500", "-20000",
                                                               str(10**17), str(5 * 10**17), "99999999999999999"])))),
        "prompt_tokens": draw(st.sampled_from(["", "0", "100", "-3", "x", str(2**63), " 5"])),
        "completion_tokens": draw(st.sampled_from(["", "20", "18446744073709551616", "1"])),
        "use_time": draw(st.sampled_from(["", "2", "slow", "-1"])),
        "is_stream": draw(st.sampled_from(["", "true", "false", "True", "FALSE", "1", "0", "yes", "maybe", " true"])),
        "group": draw(st.sampled_from(["default", "", " vip "])),
        "ip": draw(st.sampled_from(["203.0.113.7", "", "::1"])),
        "request_id": _spaced(draw, draw(st.sampled_from(["r1", "r1", "r2", "", "req-é", "r,3"]))),
        "other": draw(other_cell()),
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row_cells(), min_size=1, max_size=12),
       columns=st.sampled_from([ITEM_FIELDS, list(reversed(ITEM_FIELDS)), ITEM_FIELDS[:-1], ITEM_FIELDS[1:]]))
def test_generated_rows(rows, columns):
    if "created_at" not in columns:
        columns = [*columns, "created_at"]
    assert_same(csv_of(rows, columns))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row_cells().map(lambda r: r | {"created_at": str(START_TS + 100), "type": "2", "quota": "5",
                                                    "token_name": "k", "request_id": "r"}), min_size=1, max_size=8))
def test_generated_rows_that_are_inside_the_window(rows):
    """The rows above mostly refuse the whole export on one bad created_at; here `other` and the rest decide."""
    assert assert_same(csv_of(rows)) != -1


_plain_number = st.one_of(
    st.integers(-(2**60), 2**60), st.floats(-1e12, 1e12, allow_nan=False), st.sampled_from([
        0, -1, -2, 1, 0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 2**53 - 1, 2**53, 2**53 + 1, 1e-320, 1e20, -1e20, 0.1,
    ]),
)


@st.composite
def plain_other(draw) -> str:
    keys = ["model_ratio", "group_ratio", "completion_ratio", "cache_ratio", "cache_creation_ratio", "model_price",
            "cache_tokens", "cache_creation_tokens", "frt", "total_ms", "unknown"]
    value = draw(st.dictionaries(st.sampled_from(keys), st.one_of(_plain_number, st.none()), max_size=8))
    texts = st.sampled_from(["", "/v1/chat/completions", "anthropic", "openai", None])
    value |= draw(st.dictionaries(st.sampled_from(["request_path", "usage_semantic"]), texts, max_size=2))
    value |= draw(st.dictionaries(st.sampled_from(["correction_of", "is_correction", "correction", "adjustment_of",
                                                   "is_adjustment"]),
                                  st.sampled_from([None, False, True, "", "t-1", 0, 0.0, 1, [], {}, [0], "0"]),
                                  max_size=2))
    return json.dumps(value, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
                      ensure_ascii=draw(st.booleans()))


@st.composite
def plain_row(draw) -> dict:
    """A row in the common form, values varied inside it (and now and then one step outside)."""
    return {
        "id": draw(st.sampled_from(["", "0", "7", "1023", "007", "999999999999999999"])),
        "created_at": str(draw(st.integers(START_TS, END_TS))),
        "type": draw(st.sampled_from(["1", "2", "2", "2", "3", "4", "5", "6", "6"])),
        "content": draw(st.sampled_from(CONTENTS)),
        "token_name": draw(st.sampled_from(["team-a", "team-a", "键", "a,b", "k\"q", ""])),
        "model_name": draw(st.sampled_from(["gpt-4o", "", "suno_music"])),
        "quota": draw(st.one_of(st.integers(-(10**17) + 1, 10**17 - 1).map(str),
                                st.sampled_from(["", "0", "-0", "1", "-1", "25000", "-20000", "0001"]))),
        "prompt_tokens": draw(st.sampled_from(["", "0", "100", "999999999999999999"])),
        "completion_tokens": draw(st.sampled_from(["", "0", "20"])),
        "use_time": draw(st.sampled_from(["", "0", "2"])),
        "is_stream": draw(st.sampled_from(["", "true", "false"])),
        "group": draw(st.sampled_from(["default", "", "vip"])),
        "ip": draw(st.sampled_from(["203.0.113.7", "", "::1"])),
        "request_id": draw(st.sampled_from(["r1", "r1", "r2", "req-é", "r,3", "t-1"])),
        "other": draw(st.one_of(plain_other(), st.just(""))),
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(plain_row(), min_size=1, max_size=12))
def test_generated_rows_in_the_common_form(rows):
    """Rows the fast path mostly takes: every value it takes must come out as parse_item's."""
    assert assert_same(csv_of(rows)) >= 0


# --- CSV spelt every way ------------------------------------------------------------------------------------

_GOOD = csv_of([item(), item(request_id="req-2", other=json.dumps({"a": "x,\"y\"\nz"}), content="a, \"b\"")])


SPELLINGS = [
    _GOOD, _GOOD.replace("\r\n", "\n"), "\ufeff" + _GOOD, _GOOD + "\r\n", _GOOD + "\n\n",
    _GOOD.replace("\r\n", "\r"), _GOOD[:-2], _GOOD[:-9], _GOOD + "   \r\n", _GOOD + ",,,,,,,,,,,,,,\r\n",
    _GOOD + '1,"2"x\r\n', _GOOD.rstrip("\r\n") + ',"unclosed\r\n', _GOOD.replace('"a, ""b"""', '"a, ""b""" '),
    _GOOD.replace('"a, ""b"""', '"a, "b"'), _GOOD.replace('"a, ""b"""', 'a "b" c'),
    _GOOD.replace('"a, ""b"""', '""""'), _GOOD.replace('"a, ""b"""', '""'), _GOOD.replace('"a, ""b"""', '"x"""y"'),
    "\r\n" + _GOOD, '"id",' + _GOOD[3:], _GOOD.replace("request_id", "req"), "", "\ufeff",
    ",".join(ITEM_FIELDS) + "\r\n", _GOOD.replace("model ratio", "model\rratio"),
    _GOOD.replace("model ratio", "model\r\nratio"), _GOOD.encode() + b"\xff\xfe\r\n",
    _GOOD.encode()[:-30] + b"\xe4\r\n",
    _GOOD.replace("team-a-prod", "team\x00a"), _GOOD.replace("team-a-prod", "\ud800").encode("utf-8", "surrogatepass"),
]


@pytest.mark.parametrize("body", SPELLINGS, ids=[f"spelling{i}" for i in range(len(SPELLINGS))])
def test_csv_spelt_every_way(body):
    assert_same(body)


# --- dedupe and the lake's order ------------------------------------------------------------------------


def test_dedupe_sorted_is_dedupe_then_the_lake_order(sim, traffic):
    body, start, end = simulator_export(sim, traffic.start, traffic.start + timedelta(days=3))
    records = [parse_item(i) for i in export_items(body.decode(), start_ts=start, end_ts=end)]
    twins = [parse_item(item(request_id="tie", created_at=1774412483, quota=q, id=i))
             for q, i in ((5, 1), (7, 2), (5, 3), (6, 4))]  # the same sort key; (5, *) twice: a duplicate
    repeated = records + twins + records[::7] + [r for r in records[::5]]
    kept, duplicates = dedupe(repeated)
    expected = sorted(kept, key=lambda r: (r.utc_date, r.created_at, r.request_id, r.log_type))
    table, dropped = dedupe_sorted(records_to_table(repeated))
    assert dropped == len(duplicates) and table.equals(records_to_table(expected))
    assert [r["log_id"] for r in table.to_pylist() if r["request_id"] == "tie"] == [1, 2, 4]
    assert dedupe_sorted(records_to_table([])) == (records_to_table([]), 0)


def test_the_whitespace_strip_removes_is_all_below_u3001():
    assert not [c for c in map(chr, range(0x3001, 0x110000)) if c.isspace()]
    assert len(_SPACE_CLASS) > 20
    table = pa.table({"x": ["a", " a", "a\u3000", "\x1fa"]})
    assert [s != s.strip() for s in table["x"].to_pylist()] == [False, True, True, True]
