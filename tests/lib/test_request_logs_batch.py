"""The block normaliser (`request_logs.batch`) against the reference rules (`parse_line`), line by line.

`normalise_block` gives each block to the compiled scanner first; it may decline a line (parse_line
then decides), but for every line the outcome must be parse_line's: the same record, or the same
reject. Checked on every line the request-log tests use (every REJECT_CASES line: a rule made
stricter in parse_line comes with its case there), the bad-input catalogue, generated lines of every
shape with random field types, and the simulator's traffic; plus that the scanner really takes the
common lines.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.lib.request_logs import Reject, parse_line
from pipelines.lib.request_logs.batch import NormalisedLines, block_lines, normalise_block, normalise_lines
from pipelines.lib.request_logs.reader import read_file_batches
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.traffic import generate_traffic
from conftest import bad_input_catalogue
from oracles.request_logs import read_file
from test_request_logs import (
    ANTHROPIC_MESSAGE,
    CHAT_COMPLETION,
    CHAT_STREAM_SSE,
    REJECT_CASES,
    RESPONSES_OBJECT,
    SHAPES,
    envelope,
    render,
    sse_events,
    usages,
)

NOW = datetime(2026, 4, 1, 12, 0, tzinfo=timezone.utc)
SDK_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sdk" / "dumps.jsonl"
ZONES = [ZoneInfo("UTC"), ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]


def reference_row(outcome, line_no: int) -> dict:
    row = outcome.to_row() | {"line_no": line_no}
    return normalised_usage(row)


def normalised_usage(row: dict) -> dict:
    """raw_usage_json may differ in spelling only (batch.py's docstring): compare the JSON values."""
    raw = row["raw_usage_json"]
    return row | {"raw_usage_json": None if raw is None else json.loads(raw)}


def assert_same_as_reference(lines: list[bytes], *, key: str | None = "team-a") -> int:
    """`assert_same_as_reference_in_a_block` on the lines without b"\\n" (a block is split there);
    returns how many the compiled scanner took."""
    return assert_same_as_reference_in_a_block([line for line in lines if b"\n" not in line], key=key)


def assert_same_as_reference_in_a_block(lines: list[bytes], *, key: str | None) -> int:
    """`normalise_block` on the lines joined into one block; returns how many the compiled scanner took."""
    block = b"".join(line + b"\n" for line in lines)
    normalised = normalise_block(block, 1, fallback_key=key, now=NOW)
    assert_outcomes(normalised, list(enumerate(lines, start=1)), key)
    return normalised.compiled


def assert_outcomes(batch: NormalisedLines, numbered: list[tuple[int, bytes]], key: str | None) -> None:
    records = iter(batch.records.to_pylist())
    rejects = iter(batch.rejects)
    blank = 0
    for line_no, line in numbered:
        if not line.strip():
            blank += 1
            continue
        expected = parse_line(line, fallback_key=key, now=NOW)
        if isinstance(expected, Reject):
            got_no, got, got_line = next(rejects)
            assert (got_no, got, got_line) == (line_no, expected, line)
        else:
            assert normalised_usage(next(records)) == reference_row(expected, line_no), line[:300]
    assert next(records, None) is None and next(rejects, None) is None
    assert batch.blank == blank


def encoded(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass")


# --- the fixed corpus ----------------------------------------------------------------------------


def test_reference_examples_and_every_reject_case() -> None:
    bodies = [json.loads(CHAT_COMPLETION), json.loads(RESPONSES_OBJECT), json.loads(ANTHROPIC_MESSAGE),
              *sse_events(CHAT_STREAM_SSE)]
    lines = [encoded(envelope(b, ts="2026-03-20T10:00:00Z", request_id=f"r{i}")) for i, b in enumerate(bodies)]
    lines += [encoded(envelope(b)) for b in bodies]  # the body's id and created
    lines += [encoded(line) for cases in REJECT_CASES.values() for line in cases]
    lines += [b"", b"   \r\n", b"\xef\xbb\xbf" + lines[0]]
    assert assert_same_as_reference(lines) >= len(bodies)
    assert_same_as_reference(lines, key=None)  # no key folder: missing_key, from parse_line


def test_the_bad_input_catalogue() -> None:
    catalogue = bad_input_catalogue().LOG_LINES
    assert len(catalogue) > 20
    assert_same_as_reference([encoded(item.text) for item in catalogue], key="team-a-prod")
    assert_same_as_reference([encoded(item.text) for item in catalogue], key=None)


def test_the_sdk_dumps_line_by_line() -> None:
    """What the official SDKs write (tests/fixtures/sdk, see test_sdk_usage.py), every dump of every shape."""
    lines = SDK_FIXTURE.read_bytes().splitlines()
    assert len(lines) == 52
    for key in ("team-a-prod", None):
        assert_same_as_reference(lines, key=key)
    # the scanner takes every line but the interrupted stream's message_start (a rarer shape, declined)
    taken = [line for line in lines if b'"fixture": "anthropic_message_start/' not in line]
    assert len(taken) == len(lines) - 4
    assert assert_same_as_reference_in_a_block(taken, key="team-a-prod") == len(taken)


def test_the_simulator_traffic_goes_the_compiled_way(tmp_path: Path) -> None:
    traffic = generate_traffic(seed=11, start=date(2026, 3, 1), days=3, requests_per_day=300)
    counts = write_inbox(traffic, tmp_path)
    lines = []
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines += block_lines(data)
    assert len(lines) == counts["lines"]
    compiled = assert_same_as_reference(lines, key="team-a-prod")
    assert compiled >= 0.95 * len(lines), f"the compiled scanner took only {compiled} of {len(lines)} lines"


def test_file_batches_give_what_read_file_gives(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "team-a").mkdir(parents=True)
    good = envelope(json.loads(CHAT_COMPLETION), request_id="r1")
    text = "\n".join([good, "", "not json", envelope(json.loads(RESPONSES_OBJECT), request_id="r2")] * 3) + "\n"
    path = inbox / "team-a" / "log.jsonl.gz"
    path.write_bytes(gzip.compress(text.encode())[:-12])  # truncated: the stream breaks near the end
    expected = list(read_file(path, inbox_root=inbox, now=NOW))
    batches = list(read_file_batches(path, inbox_root=inbox, now=NOW, block_bytes=100))
    assert len(batches) > 3
    records = [r for b in batches for r in b.records.to_pylist()]
    rejects = [(n, r) for b in batches for n, r, _ in b.rejects]
    assert [normalised_usage(r) for r in records] == [
        reference_row(e.outcome, e.line_no) for e in expected if e.outcome is not None and not isinstance(e.outcome, Reject)]
    assert rejects == [(e.line_no, e.outcome) for e in expected if isinstance(e.outcome, Reject)]
    assert rejects[-1][1].reason == "corrupt_gzip"
    assert sum(b.blank for b in batches) == sum(e.outcome is None for e in expected)


# --- generated lines ---------------------------------------------------------------------------

odd_values = st.one_of(st.none(), st.just(""), st.just("  "), st.booleans(), st.integers(-5, 2**64),
                       st.floats(allow_nan=False), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
VALID_TS = ["2026-03-20T10:00:00Z", "2026-03-20T10:00:00.123Z", "2026-03-20T10:00:00.123456+08:00",
            "2026-03-20T23:59:59-05:00", "2026-04-02T12:00:00Z", "2026-04-02T12:00:00.000001Z"]
ODD_TS = ["2026-03-20T10:00:00", "2026-03-20 10:00:00Z", " 2026-03-20T10:00:00Z", "2026-02-30T10:00:00Z",
          "2026-03-20T10:00:00.1234Z", "2026-03-20T10:00:00+0800", "1999-12-31T23:59:59Z", "20260320T100000Z"]
timestamps = st.one_of(st.sampled_from(VALID_TS), st.sampled_from(VALID_TS), st.integers(1_700_000_000, 1_775_100_000),
                       st.sampled_from(ODD_TS), st.integers(0, 2 * 10**9), st.floats(1.7e9, 1.8e9))
strings = st.one_of(st.sampled_from(["team-a", "gpt-4o", "req-1", "/v1/chat/completions", "/mj/submit/imagine"]),
                    st.sampled_from(["", " ", "x"]), st.text(max_size=8))
ENVELOPE_FIELDS = ("request_id", "ts", "key_name", "model", "endpoint", "status", "source_ip", "latency_ms")


@st.composite
def bodies(draw) -> dict:
    kind = draw(st.sampled_from([*SHAPES, "task", "error", "message_start", "choices"]))
    if kind in SHAPES:
        body = render(kind, draw(usages), total=draw(st.booleans()), details=draw(st.booleans()), rich=draw(st.booleans()))
    elif kind == "task":
        body = draw(st.sampled_from([{"code": 1, "result": "17122"}, {"code": "success", "data": "abc-1"},
                                     {"data": {"task_id": "k-7"}}, {"task_id": 99}, {"id": "v1", "status": "queued"},
                                     {"id": "task_a", "task_id": "task_a", "object": "video", "progress": 0}]))
    elif kind == "error":
        body = {"error": draw(st.one_of(st.just({"message": "x"}), odd_values))}
    elif kind == "message_start":
        body = {"type": "message_start", "message": json.loads(ANTHROPIC_MESSAGE)}
    else:
        body = {"id": "c", "created": 1774412483, "model": "m",
                "choices": draw(st.lists(st.sampled_from([{"delta": {}}, {"delta": None}, {"message": {}}, 3]), max_size=2))}
    body = dict(body)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # disturb a field of the body or of its usage
        target = usage if usage is not None and draw(st.booleans()) else body
        if target:
            name = draw(st.sampled_from(sorted(target)))
            target[name] = draw(odd_values)
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(["id", "model", "created", "created_at", "object", "type", "task_id", "data"]))] = draw(odd_values)
    return body


@st.composite
def lines(draw) -> bytes:
    fields = {}
    for name in ENVELOPE_FIELDS:
        choice = draw(st.integers(0, 29))  # mostly plausible values, sometimes absent, now and then odd
        if 5 <= choice <= 28:
            fields[name] = draw(timestamps if name == "ts" else st.integers(100, 599) if name == "status"
                                else st.integers(0, 10**6) if name == "latency_ms" else strings)
        elif choice == 29:
            fields[name] = draw(odd_values)
    text = json.dumps({**fields, "response": draw(bodies())}, indent=draw(st.sampled_from([None, 1])))
    return text.replace("\n", " ").encode()


@settings(max_examples=600, deadline=None)
@given(batch=st.lists(lines(), min_size=1, max_size=8), key=st.sampled_from(["team-a", None, ""]))
def test_generated_lines_match_the_reference(batch: list[bytes], key: str | None) -> None:
    assert_same_as_reference(batch, key=key)


def test_utc_dates_through_a_year() -> None:
    # Every 91 minutes through 2026: the scanner's UTC day is the reference's (and parse_line's own, below).
    start = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
    body = json.loads(CHAT_COMPLETION)
    stamps = range(start, start + 365 * 86_400, 7 * 60 * 13)
    lines = [encoded(envelope(body, ts=ts, request_id=f"r{ts}")) for ts in stamps]
    now = datetime(2027, 1, 1, tzinfo=timezone.utc)
    expected = [datetime.fromtimestamp(ts, timezone.utc).date() for ts in stamps]
    scanned = normalise_block(b"".join(line + b"\n" for line in lines), 1, fallback_key="k", now=now)
    assert scanned.compiled == len(lines)
    assert scanned.records.column("utc_date").to_pylist() == expected
    referenced = normalise_lines(list(enumerate(lines, 1)), fallback_key="k", now=now)
    assert referenced.records.column("utc_date").to_pylist() == expected


# --- staging in worker processes ---------------------------------------------------------------


def test_staging_in_two_processes_lands_what_one_process_lands(tmp_path: Path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from pipelines.lib.request_logs import lake as request_log_lake

    inbox = tmp_path / "inbox"
    write_inbox(generate_traffic(seed=5, start=date(2026, 3, 1), days=3, requests_per_day=120), inbox)
    (inbox / "team-a-prod" / "bad.jsonl").write_text('{"response": {\n\n' + envelope({}, key_name="x") + "\n")
    monkeypatch.setattr(request_log_lake, "PARALLEL_MIN_BYTES", 0)
    landed = {}
    for workers in (1, 2):
        lake = tmp_path / f"lake-{workers}"
        items = request_log_lake.pending_files(lake, inbox)
        staged = list(request_log_lake.stage_files(lake, inbox, items, NOW, workers=workers))
        assert sorted(s.file for s in staged) == sorted(i.relative for i in items) and len(items) > 2
        assert request_log_lake.pending_files(lake, inbox) == []  # every manifest written
        landed[workers] = {
            dataset: sorted(map(str, pq.read_table(request_log_lake.lake.files(lake, dataset), partitioning=None).to_pylist()))
            for dataset in ("inbox_records", "inbox_rejects", "inbox_manifest")
        }
    assert landed[1] == landed[2]
    assert len(landed[2]["inbox_rejects"]) == 2  # the broken line and the empty body (a blank line is not read)
