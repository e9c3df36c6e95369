"""Request-log inbox: normalising every usage shape, rejects, gzip damage, which copy of a request lands.

The fixture bodies are verbatim copies of CometAPI's published examples (also in
tests/fixtures/cometapi).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.lib.request_logs import lake as request_log_lake
from pipelines.lib.request_logs import (
    RECORD_SCHEMA,
    REJECT_REASONS,
    TOKEN_FIELDS,
    USAGE_FIELDS,
    USAGE_SHAPES,
    Reject,
    RequestRecord,
    fallback_key_for,
    file_fingerprint,
    inbox_files,
    parse_line,
)
from pipelines.lib.request_logs.batch import normalise_lines
from pipelines.lib.warehouse import bind_reporting_day, run_model
from oracles.request_logs import LineResult, read_file

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 4, 1, 12, 0, tzinfo=timezone.utc)

CHAT_COMPLETION = """{"id": "chatcmpl-DNA27oKtBUL8TmbGpBM3B3zhWgYfZ", "object": "chat.completion", "created": 1774412483,
 "model": "gpt-4.1-nano-2025-04-14",
 "choices": [{"index": 0, "message": {"role": "assistant", "content": "Four", "refusal": null, "annotations": []},
              "logprobs": null, "finish_reason": "stop"}],
 "usage": {"prompt_tokens": 29, "completion_tokens": 2, "total_tokens": 31,
           "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                         "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
 "service_tier": "default", "system_fingerprint": "fp_490a4ad033"}"""

CHAT_STREAM_SSE = """data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1774412483,"model":"gpt-4.1-nano-2025-04-14","choices":[{"index":0,"delta":{"content":"Four"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1774412483,"model":"gpt-4.1-nano-2025-04-14","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1774412483,"model":"gpt-4.1-nano-2025-04-14","choices":[],"usage":{"prompt_tokens":29,"completion_tokens":2,"total_tokens":31,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]
"""

RESPONSES_OBJECT = """{"id": "resp_0a153ae8201f73bc0069a7e8044cc481", "object": "response", "created_at": 1772611588, "status": "completed",
 "completed_at": 1772611589, "model": "gpt-4.1-nano",
 "output": [{"id": "msg_0a153ae8201f73bc0069a7e8049a8881", "type": "message", "status": "completed",
             "content": [{"type": "output_text", "annotations": [], "text": "Four."}], "role": "assistant"}],
 "usage": {"input_tokens": 19, "input_tokens_details": {"cached_tokens": 0},
           "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 28}}"""

ANTHROPIC_MESSAGE = """{"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
 "content": [{"type": "text", "text": "Hi there!"}], "stop_reason": "end_turn", "stop_sequence": null,
 "usage": {"input_tokens": 15, "cache_creation_input_tokens": 1200, "cache_read_input_tokens": 3400, "output_tokens": 51}}"""


def sse_events(text: str) -> list[dict]:
    payloads = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def envelope(body: object, **fields: object) -> str:
    return json.dumps({**fields, "response": body})


def parse(line: str | bytes, *, key: str | None = "team-a", now: datetime = NOW):
    return parse_line(line, fallback_key=key, now=now)


def accepted(line: str | bytes, **kwargs) -> RequestRecord:
    outcome = parse(line, **kwargs)
    assert isinstance(outcome, RequestRecord), outcome
    return outcome


def rejected(line: str | bytes, **kwargs) -> Reject:
    outcome = parse(line, **kwargs)
    assert isinstance(outcome, Reject), outcome
    return outcome


def buckets(r: RequestRecord) -> tuple:
    return (
        r.prompt_tokens,
        r.completion_tokens,
        r.total_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.uncached_prompt_tokens,
    )


ANTHROPIC_TS = {"ts": "2026-03-20T10:00:00Z"}


# --- the reference examples ----------------------------------------------------------------


def test_chat_completion_fixture() -> None:
    r = accepted(envelope(json.loads(CHAT_COMPLETION)))
    assert (r.usage_shape, r.usage_status) == ("chat_completion", "known")
    assert buckets(r) == (29, 2, 31, 0, 0, 0, 29)
    # Every identity field came from a fallback.
    assert r.request_id == r.response_id == "chatcmpl-DNA27oKtBUL8TmbGpBM3B3zhWgYfZ"
    assert r.ts == datetime.fromtimestamp(1774412483, tz=timezone.utc)
    assert r.model == "gpt-4.1-nano-2025-04-14"
    assert r.key_name == "team-a"
    assert json.loads(r.raw_usage_json) == json.loads(CHAT_COMPLETION)["usage"]


def test_stream_final_chunk_fixture_and_the_chunks_before_it() -> None:
    *early, final = sse_events(CHAT_STREAM_SSE)
    r = accepted(envelope(final))
    assert (r.usage_shape, r.usage_status) == ("chat_completion_chunk", "known")
    assert buckets(r) == (29, 2, 31, 0, 0, 0, 29)
    for chunk in early:  # a log that stopped here is an interrupted stream: unknown, not zero
        r = accepted(envelope(chunk))
        assert (r.usage_shape, r.usage_status) == ("chat_completion_chunk", "unknown")
        assert all(getattr(r, name) is None for name in TOKEN_FIELDS)
        assert r.raw_usage_json is None


def test_responses_object_fixture_and_its_completed_event() -> None:
    body = json.loads(RESPONSES_OBJECT)
    r = accepted(envelope(body))
    assert (r.usage_shape, r.usage_status) == ("response", "known")
    assert buckets(r) == (19, 9, 28, 0, 0, 0, 19)
    assert r.ts == datetime.fromtimestamp(1772611588, tz=timezone.utc)  # created_at
    event = {"type": "response.completed", "sequence_number": 12, "response": body}
    e = accepted(envelope(event))
    assert e.usage_shape == "response_completed"
    assert buckets(e) == buckets(r)
    assert (e.request_id, e.model, e.ts) == ("resp_0a153ae8201f73bc0069a7e8044cc481", "gpt-4.1-nano", r.ts)


def test_anthropic_message_fixture_counts_cache_inside_prompt() -> None:
    r = accepted(envelope(json.loads(ANTHROPIC_MESSAGE), **ANTHROPIC_TS))
    assert (r.usage_shape, r.usage_status) == ("anthropic_message", "known")
    #              prompt            completion total cached cache_write reasoning uncached
    assert buckets(r) == (15 + 1200 + 3400, 51, 4666, 3400, 1200, 0, 15)
    assert (r.request_id, r.model) == ("msg_01XFDUDYJgAACzvnptvVoYEL", "claude-sonnet-4-20250514")


def test_contract_envelope_fields_are_kept_and_win_over_the_body() -> None:
    line = envelope(
        json.loads(CHAT_COMPLETION),
        request_id="req_123",
        ts="2026-03-01T12:00:03Z",
        key_name="team-a-prod",
        model="gpt-4.1-nano",
        endpoint="/v1/chat/completions",
        status=200,
        source_ip="203.0.113.7",
        latency_ms=812,
    )
    r = accepted(line, key="folder-key")
    assert r.request_id == "req_123" and r.response_id == "chatcmpl-DNA27oKtBUL8TmbGpBM3B3zhWgYfZ"
    assert r.ts == datetime(2026, 3, 1, 12, 0, 3, tzinfo=timezone.utc)
    assert (r.key_name, r.model, r.endpoint, r.status, r.source_ip, r.latency_ms) == (
        "team-a-prod",
        "gpt-4.1-nano",
        "/v1/chat/completions",
        200,
        "203.0.113.7",
        812,
    )


# --- the other shapes ------------------------------------------------------------------------


def anthropic_delta(usage: dict) -> dict:
    return {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage}


DELTA_ENVELOPE = {"request_id": "req-d", "model": "claude-sonnet-4-20250514", "ts": "2026-03-20T10:00:00Z"}


def test_message_delta_with_input_side_is_known() -> None:
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 20, "output_tokens": 7}
    r = accepted(envelope(anthropic_delta(usage), **DELTA_ENVELOPE))
    assert (r.usage_shape, r.usage_status) == ("anthropic_message_delta", "known")
    assert buckets(r) == (35, 7, 42, 20, 5, 0, 10)
    assert r.response_id is None


def test_message_delta_with_only_output_tokens_is_unknown_not_zero() -> None:
    r = accepted(envelope(anthropic_delta({"output_tokens": 15}), **DELTA_ENVELOPE))
    assert r.usage_status == "unknown"
    assert all(getattr(r, name) is None for name in TOKEN_FIELDS)
    assert r.raw_usage_json == '{"output_tokens":15}'


def test_message_delta_needs_envelope_identity() -> None:
    body = anthropic_delta({"input_tokens": 1, "output_tokens": 1})
    assert rejected(envelope(body, model="m", ts="2026-03-20T10:00:00Z")).reason == "missing_request_id"
    assert rejected(envelope(body, request_id="r", ts="2026-03-20T10:00:00Z")).reason == "missing_model"
    assert rejected(envelope(body, request_id="r", model="m")).reason == "missing_timestamp"


def test_message_start_alone_is_an_interrupted_stream() -> None:
    message = {**json.loads(ANTHROPIC_MESSAGE), "content": [], "stop_reason": None}
    message["usage"] = {**message["usage"], "output_tokens": 1}
    r = accepted(envelope({"type": "message_start", "message": message}, **ANTHROPIC_TS))
    assert (r.usage_shape, r.usage_status) == ("anthropic_message_start", "unknown")
    assert r.prompt_tokens is None and r.completion_tokens is None
    assert r.request_id == r.response_id == "msg_01XFDUDYJgAACzvnptvVoYEL"  # the carried message's id
    assert r.model == "claude-sonnet-4-20250514"


@pytest.mark.parametrize(
    ("endpoint", "body", "request_id"),
    [
        ("/mj/submit/imagine", {"code": 1, "description": "Submit success", "result": "1712205491372"}, "1712205491372"),
        (None, {"code": 1, "description": "Submit success", "result": 1712205491372}, "1712205491372"),
        (None, {"code": 0, "message": "SUCCEED", "data": {"task_id": "kling-77", "task_status": "submitted"}}, "kling-77"),
        ("/suno/submit/music", {"code": "success", "message": "", "data": "736a6f88-bd29"}, "736a6f88-bd29"),
        ("/runwayml/v1/image_to_video", {"id": "rw-1", "status": "PENDING"}, "rw-1"),
        ("https://api.cometapi.com/v1/videos?x=1", {"id": "video_9", "object": "video", "status": "queued"}, "video_9"),
        # new-api's reply to a task submit names the task by its public id (model/task.go GenerateTaskID)
        ("/kling/v1/videos/text2video", {"id": "task_9f2c", "task_id": "task_9f2c", "object": "video",
                                         "model": "kling_video", "status": "queued", "progress": 0}, "task_9f2c"),
        ("/suno/submit/music", {"code": "success", "message": "", "data": "task_5e1a"}, "task_5e1a"),
    ],
)
def test_task_replies_are_per_call(endpoint: str | None, body: dict, request_id: str) -> None:
    r = accepted(envelope(body, endpoint=endpoint, model="mj_imagine", ts="2026-03-20T10:00:00Z"))
    assert (r.usage_shape, r.usage_status) == ("task", "per_call")
    assert r.request_id == r.response_id == request_id
    assert all(getattr(r, name) is None for name in TOKEN_FIELDS)


def test_image_generation_without_id_uses_envelope_id_and_created() -> None:
    body = {"created": 1774412483, "data": [{"url": "https://example.test/a.png"}]}
    r = accepted(envelope(body, endpoint="/v1/images/generations", request_id="img-1", model="dall-e-3"))
    assert (r.usage_shape, r.usage_status, r.request_id) == ("task", "per_call", "img-1")
    assert r.ts == datetime.fromtimestamp(1774412483, tz=timezone.utc)
    assert rejected(envelope(body, endpoint="/v1/images/generations", model="dall-e-3")).reason == "missing_request_id"


def test_error_reply_with_error_status_is_kept_with_unknown_usage() -> None:
    body = {"error": {"message": "upstream timeout", "type": "comet_api_error", "param": "", "code": "timeout"}}
    fields = {"request_id": "req-e", "model": "gpt-4o", "ts": "2026-03-20T10:00:00Z"}
    r = accepted(envelope(body, status=504, **fields))
    assert (r.usage_shape, r.usage_status, r.status) == ("error", "unknown", 504)
    assert r.total_tokens is None and r.prompt_tokens is None
    assert rejected(envelope(body, **fields)).reason == "unknown_shape"  # no status: cannot tell
    assert rejected(envelope(body, status=200, **fields)).reason == "unknown_shape"


def test_chat_shape_without_object_field_is_recognised_by_choices() -> None:
    body = json.loads(CHAT_COMPLETION)
    del body["object"]
    assert accepted(envelope(body)).usage_shape == "chat_completion"
    final = sse_events(CHAT_STREAM_SSE)[-1]
    del final["object"]
    assert accepted(envelope(final)).usage_shape == "chat_completion_chunk"


def test_chat_details_absent_mean_zero_and_new_api_cache_writes_are_read() -> None:
    bare = {"id": "c1", "object": "chat.completion", "created": 1774412483, "model": "deepseek-chat",
            "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 10}}  # fmt: skip
    assert buckets(accepted(envelope(bare))) == (100, 10, 110, 0, 0, 0, 100)
    deepseek = {**bare, "usage": {**bare["usage"], "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40}}
    assert buckets(accepted(envelope(deepseek))) == (100, 10, 110, 60, 0, 0, 40)
    new_api = {**bare, "usage": {**bare["usage"], "prompt_tokens_details": {"cached_tokens": 30, "cached_creation_tokens": 50}}}
    assert buckets(accepted(envelope(new_api))) == (100, 10, 110, 30, 50, 0, 20)


def test_usage_object_missing_core_counts_is_unknown() -> None:
    body = {**json.loads(CHAT_COMPLETION), "usage": {"total_tokens": 31}}
    assert accepted(envelope(body)).usage_status == "unknown"
    body = {**json.loads(RESPONSES_OBJECT), "status": "incomplete", "usage": None}
    r = accepted(envelope(body))
    assert r.usage_status == "unknown" and r.cached_tokens is None


# --- fallbacks, time ---------------------------------------------------------------------------


def test_blank_envelope_strings_fall_back() -> None:
    r = accepted(envelope(json.loads(CHAT_COMPLETION), request_id="", model="  ", key_name=""), key="folder")
    assert (r.request_id, r.model, r.key_name) == ("chatcmpl-DNA27oKtBUL8TmbGpBM3B3zhWgYfZ", "gpt-4.1-nano-2025-04-14", "folder")


def test_key_name_envelope_beats_folder_and_folder_is_the_fallback() -> None:
    body = json.loads(CHAT_COMPLETION)
    assert accepted(envelope(body, key_name="k-env"), key="k-dir").key_name == "k-env"
    assert accepted(envelope(body), key="k-dir").key_name == "k-dir"
    assert rejected(envelope(body), key=None).reason == "missing_key"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-03-01T23:30:00Z", datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc)),
        ("2026-03-02T07:30:00+08:00", datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc)),
        ("2026-03-01T23:30:00.123456789Z", datetime(2026, 3, 1, 23, 30, 0, 123456, tzinfo=timezone.utc)),
        (1772407800, datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc)),
        (1772407800.5, datetime(2026, 3, 1, 23, 30, 0, 500000, tzinfo=timezone.utc)),
    ],
)
def test_timestamp_forms(ts: object, expected: datetime) -> None:
    r = accepted(envelope(json.loads(CHAT_COMPLETION), ts=ts))
    assert r.ts == expected and r.ts.tzinfo == timezone.utc


@pytest.mark.parametrize(("ts", "day"), [("2026-03-01T23:30:00Z", date(2026, 3, 1)),
                                          ("2026-03-02T07:30:00+08:00", date(2026, 3, 1)),
                                          ("2026-03-01T19:30:00-05:00", date(2026, 3, 2))])
def test_utc_date_is_the_day_in_utc_whatever_the_offset_written(ts: str, day: date) -> None:
    # the reporting day is the warehouse's (sql/staging/reporting_day.sql): a record knows its UTC day only
    r = accepted(envelope(json.loads(CHAT_COMPLETION), ts=ts))
    assert r.utc_date == day
    assert r.ts.tzinfo == timezone.utc


def test_future_timestamp_boundary() -> None:
    body = json.loads(CHAT_COMPLETION)
    assert accepted(envelope(body, ts=(NOW + timedelta(days=1)).isoformat())).ts == NOW + timedelta(days=1)
    late = (NOW + timedelta(days=1, seconds=1)).isoformat()
    assert rejected(envelope(body, ts=late)).reason == "future_timestamp"
    assert rejected(envelope({**body, "created": int((NOW + timedelta(days=3)).timestamp())})).reason == "future_timestamp"


def test_naive_now_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_line(envelope(json.loads(CHAT_COMPLETION)), fallback_key="k", now=datetime(2026, 4, 1))


# --- one test per reject reason ----------------------------------------------------------------


def chat_with_usage(**usage: object) -> str:
    body = {**json.loads(CHAT_COMPLETION), "usage": {"prompt_tokens": 29, "completion_tokens": 2, **usage}}
    return envelope(body)


REJECT_CASES = {
    "encoding_error": [b'{"response": {"object": "chat.completion", "model": "\xff\xfe"}}', envelope({}, key_name="\ud800")],
    "invalid_json": ['{"response": {', "not json at all", '{"a": NaN}', '{"a": 1} {"b": 2}'],
    "not_an_object": ["[1, 2]", '"text"', "42", "null"],
    "missing_response": ['{"request_id": "r"}', '{"response": null}'],
    "bad_field_type": [
        envelope(json.loads(CHAT_COMPLETION), status="abc"),
        envelope(json.loads(CHAT_COMPLETION), status=True),
        envelope(json.loads(CHAT_COMPLETION), status=99),
        envelope(json.loads(CHAT_COMPLETION), key_name=5),
        envelope(json.loads(CHAT_COMPLETION), request_id=["r"]),
        envelope(json.loads(CHAT_COMPLETION), latency_ms=-1),
        envelope(json.loads(CHAT_COMPLETION), latency_ms="812"),
        '{"response": [1]}',
        envelope({**json.loads(CHAT_COMPLETION), "usage": [29, 2]}),
        chat_with_usage(prompt_tokens_details=7),
    ],
    "unknown_shape": [
        envelope({}),
        envelope({"object": "list", "data": [], "model": "text-embedding-3-small"}),
        envelope({"type": "response.completed"}),
        envelope({"type": "message_start"}),
    ],
    "missing_key": [envelope(json.loads(CHAT_COMPLETION))],  # parsed with key=None below
    "missing_request_id": [envelope({k: v for k, v in json.loads(CHAT_COMPLETION).items() if k != "id"})],
    "missing_timestamp": [envelope({k: v for k, v in json.loads(ANTHROPIC_MESSAGE).items()})],
    "bad_timestamp": [
        envelope(json.loads(CHAT_COMPLETION), ts="yesterday"),
        envelope(json.loads(CHAT_COMPLETION), ts="2026-03-01T12:00:00"),  # naive: ambiguous
        envelope(json.loads(CHAT_COMPLETION), ts=True),
        envelope(json.loads(CHAT_COMPLETION), ts=1e300),
        envelope({**json.loads(CHAT_COMPLETION), "created": "1774412483"}),
    ],
    "future_timestamp": [envelope(json.loads(CHAT_COMPLETION), ts="2027-01-01T00:00:00Z")],
    "missing_model": [envelope({k: v for k, v in json.loads(CHAT_COMPLETION).items() if k != "model"})],
    "bad_token_type": [
        chat_with_usage(prompt_tokens=3.5),
        chat_with_usage(prompt_tokens="29"),
        chat_with_usage(completion_tokens=True),
        chat_with_usage(completion_tokens=2.0),
        chat_with_usage(total_tokens=31.0),
        chat_with_usage(prompt_tokens=2**53),
        chat_with_usage(prompt_tokens_details={"cached_tokens": "0"}),
    ],
    "negative_tokens": [chat_with_usage(prompt_tokens=-1), chat_with_usage(completion_tokens_details={"reasoning_tokens": -2})],
    "inconsistent_tokens": [
        chat_with_usage(total_tokens=32),
        chat_with_usage(prompt_tokens_details={"cached_tokens": 30}),
        chat_with_usage(completion_tokens_details={"reasoning_tokens": 3}),
        envelope({**json.loads(ANTHROPIC_MESSAGE), "usage": {"input_tokens": 15, "output_tokens": 51,
                  "cache_read_input_tokens": 3400, "total_tokens": 66}}, **ANTHROPIC_TS),  # fmt: skip
    ],
}


@pytest.mark.parametrize(
    ("reason", "line"), [(reason, line) for reason, lines in REJECT_CASES.items() for line in lines]
)
def test_reject_reason(reason: str, line: str | bytes) -> None:
    outcome = rejected(line, key=None if reason == "missing_key" else "team-a")
    assert outcome.reason == reason, outcome.detail
    assert outcome.detail


def test_every_reject_reason_is_exercised() -> None:
    assert set(REJECT_CASES) | {"corrupt_gzip"} == set(REJECT_REASONS)  # corrupt_gzip: reader tests
    with pytest.raises(ValueError):
        Reject("made_up", "x")


def test_reject_detail_never_echoes_a_key() -> None:
    outcome = rejected(envelope(json.loads(CHAT_COMPLETION), ts="sk-abcdefghijklmnop1234"))
    assert outcome.reason == "bad_timestamp" and "abcdefghijklmnop" not in outcome.detail


# --- property tests: every shape, random usage ----------------------------------------------------


@dataclass(frozen=True)
class Usage:
    uncached: int
    cached: int
    cache_write: int
    visible: int  # completion tokens that are not reasoning
    reasoning: int

    @property
    def prompt(self) -> int:
        return self.uncached + self.cached + self.cache_write

    @property
    def completion(self) -> int:
        return self.visible + self.reasoning


counts = st.one_of(st.just(0), st.integers(1, 200), st.integers(0, 10**9))
usages = st.builds(Usage, counts, counts, counts, counts, counts)
SHAPES = [s for s in USAGE_SHAPES if s not in ("task", "error", "anthropic_message_start")]
OPENAI_SHAPES = [s for s in SHAPES if not s.startswith("anthropic")]


def render(shape: str, u: Usage, *, total: bool = True, details: bool = True, rich: bool = False) -> dict:
    """A response body of `shape` carrying usage `u` (reasoning folds into Anthropic output).

    `rich`: also the fields the current SDKs write (`rich_usage` tells what they add up to)."""
    if rich:
        return render_rich(shape, u, total=total)
    if shape.startswith("anthropic"):
        usage = {"input_tokens": u.uncached, "output_tokens": u.completion}
        if details or u.cache_write:
            usage["cache_creation_input_tokens"] = u.cache_write
        if details or u.cached:
            usage["cache_read_input_tokens"] = u.cached
        if shape == "anthropic_message_delta":
            return anthropic_delta(usage)
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "usage": usage}
    chat = shape.startswith("chat")
    p, c, inp, out = ("prompt_tokens", "completion_tokens", "prompt", "completion") if chat else (
        "input_tokens", "output_tokens", "input", "output")  # fmt: skip
    usage: dict = {p: u.prompt, c: u.completion}
    if total:
        usage["total_tokens"] = u.prompt + u.completion
    if details or u.cached or u.cache_write:
        usage[f"{inp}_tokens_details"] = {"cached_tokens": u.cached}
        if u.cache_write:
            usage[f"{inp}_tokens_details"]["cached_creation_tokens"] = u.cache_write
    if details or u.reasoning:
        usage[f"{out}_tokens_details"] = {"reasoning_tokens": u.reasoning}
    if chat:
        obj = "chat.completion" if shape == "chat_completion" else "chat.completion.chunk"
        return {"id": "c1", "object": obj, "created": 1774412483, "model": "gpt-x", "choices": [], "usage": usage}
    body = {"id": "resp_1", "object": "response", "created_at": 1772611588, "model": "gpt-x", "usage": usage}
    return body if shape == "response" else {"type": "response.completed", "response": body}


def rich_parts(u: Usage) -> dict:
    """The splits a rich rendering of `u` reports, derived from its counts (each a subset where it must be)."""
    return {"write_1h": u.cache_write // 3, "audio": u.uncached // 2, "image": u.uncached // 3,
            "web_search": u.visible % 5, "web_fetch": u.reasoning % 3}


def render_rich(shape: str, u: Usage, *, total: bool) -> dict:
    parts = rich_parts(u)
    if shape.startswith("anthropic"):  # cache writes by duration, server-tool requests, thinking tokens
        usage = {"input_tokens": u.uncached, "output_tokens": u.completion, "cache_read_input_tokens": u.cached,
                 "cache_creation": {"ephemeral_5m_input_tokens": u.cache_write - parts["write_1h"],
                                    "ephemeral_1h_input_tokens": parts["write_1h"]},
                 "server_tool_use": {"web_search_requests": parts["web_search"], "web_fetch_requests": parts["web_fetch"]},
                 "output_tokens_details": {"thinking_tokens": u.reasoning}, "service_tier": "standard"}
        if u.cache_write % 2:  # the total is optional beside its split
            usage["cache_creation_input_tokens"] = u.cache_write
        if shape == "anthropic_message_delta":
            return anthropic_delta(usage)
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "usage": usage}
    chat = shape.startswith("chat")
    p, c, inp, out = ("prompt_tokens", "completion_tokens", "prompt", "completion") if chat else (
        "input_tokens", "output_tokens", "input", "output")  # fmt: skip
    written = [{"cache_write_tokens": u.cache_write}, {"cached_creation_tokens": u.cache_write},
               {"cache_write_tokens": 0, "cached_creation_tokens": u.cache_write}][u.cache_write % 3]
    usage = {p: u.prompt, c: u.completion,
             f"{inp}_tokens_details": {"cached_tokens": u.cached, **written, "audio_tokens": parts["audio"],
                                       "image_tokens": parts["image"], "text_tokens": None},
             f"{out}_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": None}}
    if total:
        usage["total_tokens"] = u.prompt + u.completion
    if chat:
        if u.cached % 2:  # DeepSeek's names, a 0 under the OpenAI one
            usage |= {"prompt_cache_hit_tokens": u.cached, "prompt_cache_miss_tokens": u.prompt - u.cached}
            usage["prompt_tokens_details"]["cached_tokens"] = 0
        obj = "chat.completion" if shape == "chat_completion" else "chat.completion.chunk"
        return {"id": "c1", "object": obj, "created": 1774412483, "model": "gpt-x", "choices": [], "usage": usage}
    body = {"id": "resp_1", "object": "response", "created_at": 1772611588.0, "model": "gpt-x", "usage": usage,
            "tool_usage": {"web_search": {"num_requests": parts["web_search"]}}}
    return body if shape == "response" else {"type": "response.completed", "response": body}


def rich_usage(shape: str, u: Usage) -> dict:
    """Every USAGE_FIELDS column a rich rendering of `u` must give."""
    parts = rich_parts(u)
    anthropic = shape.startswith("anthropic")
    return {
        "prompt_tokens": u.prompt, "completion_tokens": u.completion, "total_tokens": u.prompt + u.completion,
        "cached_tokens": u.cached, "cache_write_tokens": u.cache_write, "reasoning_tokens": u.reasoning,
        "uncached_prompt_tokens": u.uncached,
        "cache_write_5m_tokens": u.cache_write - parts["write_1h"] if anthropic else None,
        "cache_write_1h_tokens": parts["write_1h"] if anthropic else None,
        "audio_prompt_tokens": None if anthropic else parts["audio"],
        "image_prompt_tokens": None if anthropic else parts["image"],
        "web_search_requests": None if shape.startswith("chat") else parts["web_search"],
        "web_fetch_requests": parts["web_fetch"] if anthropic else None,
    }  # fmt: skip


def usage_of(body: dict) -> dict:
    return body["response"]["usage"] if body.get("type") == "response.completed" else body["usage"]


def property_line(body: dict) -> str:
    return envelope(body, request_id="req-p", model="m", ts="2026-03-20T10:00:00Z")


def expected_buckets(shape: str, u: Usage) -> tuple:
    reasoning = 0 if shape.startswith("anthropic") else u.reasoning
    return (u.prompt, u.completion, u.prompt + u.completion, u.cached, u.cache_write, reasoning, u.uncached)


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(SHAPES), u=usages, total=st.booleans(), details=st.booleans())
def test_every_shape_lands_in_disjoint_buckets(shape: str, u: Usage, total: bool, details: bool) -> None:
    r = accepted(property_line(render(shape, u, total=total, details=details)))
    assert (r.usage_shape, r.usage_status) == (shape, "known")
    assert buckets(r) == expected_buckets(shape, u)
    assert all(getattr(r, name) >= 0 for name in TOKEN_FIELDS)
    assert r.cached_tokens + r.cache_write_tokens <= r.prompt_tokens
    assert r.reasoning_tokens <= r.completion_tokens
    assert r.total_tokens == r.prompt_tokens + r.completion_tokens
    assert r.uncached_prompt_tokens + r.cached_tokens + r.cache_write_tokens == r.prompt_tokens


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(SHAPES), u=usages, total=st.booleans())
def test_the_fields_the_current_sdks_write_land_in_their_columns(shape: str, u: Usage, total: bool) -> None:
    r = accepted(property_line(render(shape, u, total=total, rich=True)))
    assert (r.usage_shape, r.usage_status) == (shape, "known")
    assert {name: getattr(r, name) for name in USAGE_FIELDS} == rich_usage(shape, u)


@settings(max_examples=200, deadline=None)
@given(u=usages, openai=st.sampled_from(OPENAI_SHAPES), anthropic=st.sampled_from(["anthropic_message", "anthropic_message_delta"]))
def test_same_usage_in_openai_and_anthropic_semantics_gives_same_buckets(u: Usage, openai: str, anthropic: str) -> None:
    a = accepted(property_line(render(openai, u)))
    b = accepted(property_line(render(anthropic, u)))
    pricing = lambda r: (r.uncached_prompt_tokens, r.cached_tokens, r.cache_write_tokens, r.completion_tokens,  # noqa: E731
                         r.prompt_tokens, r.total_tokens)  # fmt: skip
    assert pricing(a) == pricing(b)
    # Anthropic does not break reasoning out of output tokens; at reasoning 0 every bucket agrees.
    if u.reasoning == 0:
        assert buckets(a) == buckets(b)


def token_leaves(usage: dict, prefix: tuple = ()) -> list[tuple]:
    leaves = []
    for name, value in usage.items():
        if isinstance(value, dict):
            leaves += token_leaves(value, (*prefix, name))
        else:
            leaves.append((*prefix, name))
    return leaves


def set_leaf(usage: dict, path: tuple, value: object) -> None:
    for name in path[:-1]:
        usage = usage[name]
    usage[path[-1]] = value


def get_leaf(usage: dict, path: tuple) -> int:
    for name in path:
        usage = usage[name]
    return usage


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(SHAPES), u=usages, rich=st.booleans(), data=st.data())
def test_invalid_token_values_are_rejected_with_the_right_reason(shape: str, u: Usage, rich: bool,
                                                                 data: st.DataObject) -> None:
    body = render(shape, u, rich=rich)
    usage = usage_of(body)
    leaves = [path for path in token_leaves(usage) if isinstance(get_leaf(usage, path), int)]
    path = data.draw(st.sampled_from(leaves), label="field")
    value = get_leaf(usage, path)
    kind = data.draw(st.sampled_from(["negative", "float", "integral_float", "string", "bool"]), label="kind")
    bad = {
        "negative": -(value + 1),
        "float": value + 0.5,
        "integral_float": float(value),
        "string": str(value),
        "bool": data.draw(st.booleans()),
    }[kind]
    set_leaf(usage, path, bad)
    reason = rejected(property_line(body)).reason
    assert reason == ("negative_tokens" if kind == "negative" else "bad_token_type")


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(SHAPES), u=usages, data=st.data())
def test_inconsistent_token_sets_are_rejected(shape: str, u: Usage, data: st.DataObject) -> None:
    body = render(shape, u)
    usage = usage_of(body)
    anthropic = shape.startswith("anthropic")
    kinds = ["total"] if anthropic else ["total", "cache", "reasoning"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    excess = data.draw(st.integers(1, 10**6), label="excess")
    if kind == "total":
        right = u.prompt + u.completion
        usage["total_tokens"] = right + excess if data.draw(st.booleans()) or right < excess else right - excess
    elif kind == "cache":
        details = usage["prompt_tokens_details" if shape.startswith("chat") else "input_tokens_details"]
        details["cached_tokens"] = u.prompt - u.cache_write + excess
    else:
        details = usage["completion_tokens_details" if shape.startswith("chat") else "output_tokens_details"]
        details["reasoning_tokens"] = u.completion + excess
    assert rejected(property_line(body)).reason == "inconsistent_tokens"


@settings(max_examples=200, deadline=None)
@given(shape=st.sampled_from(SHAPES), u=usages, excess=st.integers(1, 10**6), data=st.data())
def test_splits_beyond_their_whole_are_rejected(shape: str, u: Usage, excess: int, data: st.DataObject) -> None:
    body = render(shape, u, rich=True)
    usage = usage_of(body)
    if shape.startswith("anthropic"):  # 1-hour writes beyond all cache writes
        usage["cache_creation_input_tokens"] = u.cache_write
        usage["cache_creation"]["ephemeral_1h_input_tokens"] = u.cache_write + excess
        usage["cache_creation"]["ephemeral_5m_input_tokens"] = 0
    elif shape.startswith("chat") and data.draw(st.booleans()):  # DeepSeek's hits and misses beside the prompt
        usage |= {"prompt_cache_hit_tokens": u.cached, "prompt_cache_miss_tokens": u.prompt - u.cached + excess}
    else:  # audio and image tokens beyond the prompt
        details = usage["prompt_tokens_details" if shape.startswith("chat") else "input_tokens_details"]
        details["audio_tokens"] = u.prompt + excess - details["image_tokens"]
    assert rejected(property_line(body)).reason == "inconsistent_tokens"


def test_a_write_of_unreported_duration_is_in_neither_split() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 300,
             "cache_creation": {"ephemeral_1h_input_tokens": 100}}
    r = accepted(envelope(anthropic_delta(usage), **DELTA_ENVELOPE))
    assert (r.cache_write_tokens, r.cache_write_5m_tokens, r.cache_write_1h_tokens) == (300, None, 100)
    usage["cache_creation"] = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}  # a proxy's zeros
    r = accepted(envelope(anthropic_delta(usage), **DELTA_ENVELOPE))
    assert (r.cache_write_tokens, r.cache_write_5m_tokens, r.cache_write_1h_tokens, r.prompt_tokens) == (300, 0, 0, 310)


def test_null_means_not_reported_never_zero_of_a_kind_reported_elsewhere() -> None:
    body = {"id": "c1", "object": "chat.completion", "created": 1774412483, "model": "deepseek-chat", "choices": [],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "prompt_cache_hit_tokens": 60,
                      "prompt_tokens_details": {"cached_tokens": None, "cache_write_tokens": None,
                                                "cached_creation_tokens": 25, "audio_tokens": None}}}
    r = accepted(envelope(body))
    assert (r.cached_tokens, r.cache_write_tokens, r.uncached_prompt_tokens) == (60, 25, 15)
    assert (r.audio_prompt_tokens, r.image_prompt_tokens, r.cache_write_1h_tokens, r.web_search_requests) == (
        None, None, None, None)


# --- Arrow -----------------------------------------------------------------------------------------


def test_records_convert_to_the_arrow_schema_with_nulls_for_unknown_usage() -> None:
    known = accepted(envelope(json.loads(ANTHROPIC_MESSAGE), **ANTHROPIC_TS))
    unknown = accepted(envelope(sse_events(CHAT_STREAM_SSE)[0]))
    lines = [envelope(json.loads(ANTHROPIC_MESSAGE), **ANTHROPIC_TS), envelope(sse_events(CHAT_STREAM_SSE)[0])]
    table = normalise_lines([(1, lines[0].encode()), (2, lines[1].encode())], fallback_key="team-a", now=NOW).records
    assert table.schema == RECORD_SCHEMA.append(pa.field("line_no", pa.int64()))
    rows = table.to_pylist()
    assert [{k: v for k, v in row.items() if k != "line_no"} for row in rows] == [known.to_row(), unknown.to_row()]
    assert rows[0]["prompt_tokens"] == 4615 and rows[0]["utc_date"] == date(2026, 3, 20)
    assert rows[1]["prompt_tokens"] is None and rows[1]["usage_status"] == "unknown"
    assert table.column("ts").type == pa.timestamp("us", tz="UTC")
    assert list(known.to_row()) == RECORD_SCHEMA.names


# --- reader ----------------------------------------------------------------------------------------


def chat_line(request_id: str, *, content: str = "Four", usage: bool = True) -> str:
    body = json.loads(CHAT_COMPLETION)
    body["choices"][0]["message"]["content"] = content
    if not usage:
        body["usage"] = None
    return envelope(body, request_id=request_id)


def outcomes(results: list[LineResult]) -> list[str]:
    def label(o: RequestRecord | Reject | None) -> str:
        return "blank" if o is None else o.reason if isinstance(o, Reject) else o.request_id

    return [label(r.outcome) for r in results]


def test_read_file_numbers_lines_and_counts_blanks(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    path = inbox / "team-a" / "2026" / "log.jsonl"
    path.parent.mkdir(parents=True)
    long_garbage = "x" * 5000
    path.write_bytes(
        "\n".join([chat_line("r1"), "", "   ", long_garbage, chat_line("r2")]).encode() + b"\r\n\xff\xfe\n\n"
    )
    results = list(read_file(path, inbox_root=inbox, now=NOW))
    assert [r.line_no for r in results] == [1, 2, 3, 4, 5, 6, 7]
    assert outcomes(results) == ["r1", "blank", "blank", "invalid_json", "r2", "encoding_error", "blank"]
    assert results[0].outcome.key_name == "team-a"  # the first folder under the inbox
    assert results[3].raw == "x" * 2000
    assert results[5].raw == "\ufffd\ufffd"
    assert results[0].raw == "" and results[1].raw == ""
    stats, _ = inbox_accounting(inbox, tmp_path / "lake")  # what the pipeline counts for the file
    assert stats == {"team-a/2026/log.jsonl": Counts(read=4, blank=3, accepted=2, rejected=2, duplicates=0)}


def test_files_in_the_inbox_root_have_no_fallback_key(tmp_path: Path) -> None:
    path = tmp_path / "loose.ndjson"
    path.write_text(chat_line("r1") + "\n" + envelope(json.loads(CHAT_COMPLETION), key_name="k") + "\n")
    assert fallback_key_for(path, tmp_path) is None
    assert outcomes(list(read_file(path, inbox_root=tmp_path, now=NOW))) == [
        "missing_key",
        "chatcmpl-DNA27oKtBUL8TmbGpBM3B3zhWgYfZ",
    ]


def test_rejected_raw_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "k" / "a.jsonl"
    path.parent.mkdir()
    path.write_text('{"headers": "Authorization: Bearer sk-abcdefghijklmnopqrstuvwxyz"}\n')
    (result,) = read_file(path, inbox_root=tmp_path, now=NOW)
    assert result.outcome.reason == "missing_response"
    assert "abcdefghijklmnop" not in result.raw


def test_a_30_mib_line_is_read_whole(tmp_path: Path) -> None:
    content = "lorem ipsum " * (30 * 2**20 // 12)
    path = tmp_path / "inbox" / "team-a" / "big.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(chat_line("small-1") + "\n" + chat_line("big", content=content) + "\n" + chat_line("small-2") + "\n")
    assert path.stat().st_size > 30 * 2**20
    results = list(read_file(path, inbox_root=tmp_path / "inbox", now=NOW))
    assert outcomes(results) == ["small-1", "big", "small-2"]
    assert buckets(results[1].outcome) == (29, 2, 31, 0, 0, 0, 29)


def gz_lines(count: int, prefix: str) -> list[str]:
    rng = random.Random(prefix)  # incompressible content: the compressed stream is long
    return [chat_line(f"{prefix}-{i}", content=rng.randbytes(300).hex()) for i in range(count)]


def test_gzip_multi_member(tmp_path: Path) -> None:
    path = tmp_path / "team-a" / "a.jsonl.gz"
    path.parent.mkdir()
    first, second = gz_lines(3, "m1"), gz_lines(2, "m2")
    path.write_bytes(gzip.compress("\n".join(first).encode() + b"\n") + gzip.compress("\n".join(second).encode()))
    results = list(read_file(path, inbox_root=tmp_path, now=NOW))
    assert outcomes(results) == [f"m1-{i}" for i in range(3)] + [f"m2-{i}" for i in range(2)]


def assert_good_prefix_then_one_corrupt_reject(results: list[LineResult], written: list[str]) -> int:
    good = 0
    while good < len(results) and isinstance(results[good].outcome, RequestRecord):
        assert results[good].outcome.request_id == f"gz-{good}"
        good += 1
    assert good >= 10, "the lines before the damage are kept"
    corrupt = [r for r in results if isinstance(r.outcome, Reject) and r.outcome.reason == "corrupt_gzip"]
    assert len(corrupt) == 1 and corrupt[0] is results[-1]
    assert corrupt[0].line_no == (results[-2].line_no + 1 if len(results) > 1 else 1)
    assert len(results) <= len(written) + 1
    return good


def test_truncated_gzip_keeps_the_lines_before_the_break(tmp_path: Path) -> None:
    written = gz_lines(200, "gz")
    data = gzip.compress("\n".join(written).encode() + b"\n")
    for cut in (len(data) // 2, len(data) - 5):  # mid-stream; and inside the CRC trailer
        path = tmp_path / "team-a" / f"cut-{cut}.jsonl.gz"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data[:cut])
        results = list(read_file(path, inbox_root=tmp_path, now=NOW))
        good = assert_good_prefix_then_one_corrupt_reject(results, written)
        assert good == len(results) - 1  # a truncation never yields garbage lines
        if cut == len(data) - 5:
            assert good == 200  # every line decoded; only the trailer is missing


def test_gzip_with_flipped_bytes_keeps_the_lines_before_the_damage(tmp_path: Path) -> None:
    written = gz_lines(200, "gz")
    data = bytearray(gzip.compress("\n".join(written).encode() + b"\n"))
    for offset in range(len(data) // 2, len(data) // 2 + 16):
        data[offset] ^= 0xFF
    path = tmp_path / "team-a" / "flipped.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(bytes(data))
    results = list(read_file(path, inbox_root=tmp_path, now=NOW))
    assert_good_prefix_then_one_corrupt_reject(results, written)


def test_not_gzip_at_all_is_one_corrupt_gzip_reject(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl.gz"
    path.write_text(chat_line("r1") + "\n")
    results = list(read_file(path, inbox_root=tmp_path, now=NOW))
    assert [(r.line_no, r.outcome.reason) for r in results] == [(1, "corrupt_gzip")]


def test_file_fingerprint_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"abc\n")
    assert file_fingerprint(path) == hashlib.sha256(b"abc\n").hexdigest()
    path.write_bytes(b"abd\n")
    assert file_fingerprint(path) == hashlib.sha256(b"abd\n").hexdigest()


def test_inbox_files_match_the_contract_patterns(tmp_path: Path) -> None:
    for name in ["k/a.jsonl", "k/b.jsonl.gz", "c.ndjson", "k/notes.txt", "k/.partial.jsonl", "k/d.json"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in inbox_files(tmp_path)] == ["c.ndjson", "k/a.jsonl", "k/b.jsonl.gz"]
    assert inbox_files(tmp_path / "missing") == []


def test_walk_inbox_follows_links_only_inside_and_skips_names_that_are_not_utf8(tmp_path: Path) -> None:
    import os

    from pipelines.lib.request_logs.reader import walk_inbox

    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "k").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jsonl").write_text("{}\n")
    (inbox / "k" / "a.jsonl").write_text("{}\n")
    (inbox / "k" / "notes.txt").symlink_to(outside / "secret.jsonl")  # not something the inbox reads
    (inbox / "k" / "again.jsonl").symlink_to(inbox / "k" / "a.jsonl")  # inside: read
    (inbox / "k" / "out.jsonl").symlink_to(outside / "secret.jsonl")
    (inbox / "linked").symlink_to(outside)
    (inbox / "k-copy").symlink_to(inbox / "k")  # a folder link inside: never walked (its files are read as k/...)
    with open(os.fsencode(inbox / "k") + b"/b\xfe.jsonl", "wb") as fh:
        fh.write(b"{}\n")
    listing = walk_inbox(inbox)
    assert [p.relative_to(inbox).as_posix() for p in listing.files] == ["k/a.jsonl", "k/again.jsonl"]
    assert [(s.file, s.reason) for s in listing.skipped] == [
        ("k/b\\xfe.jsonl", "name_not_utf8"), ("k/out.jsonl", "link_outside_inbox"), ("linked", "link_outside_inbox")]
    assert [p.name for p in inbox_files(inbox)] == ["a.jsonl", "again.jsonl"]


# --- which copy of a request lands (sql/staging/stg_copy_ranks.sql) ---------------------------------


class Counts(NamedTuple):
    read: int
    blank: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0


def inbox_accounting(inbox: Path, lake_root: Path, *, reverse: bool = False
                     ) -> tuple[dict[str, Counts], dict[str, tuple[str, int, str, str]]]:
    """Stage the inbox's new files (in reverse order if asked) and build what the pipeline builds from
    them (stg_inbox_files, stg_copy_ranks, request_conflicts, inbox_files): every file's line
    accounting, and the copy of each request that lands as request_id -> (file, line, usage_status,
    key_name). Every file must balance (read = accepted + rejected + duplicates)."""
    items = request_log_lake.pending_files(lake_root, inbox)
    list(request_log_lake.stage_files(lake_root, inbox, items[::-1] if reverse else items, NOW, workers=1))
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        bind_reporting_day(con, "UTC")
        params = request_log_lake.staging_params(lake_root) | {
            "start": request_log_lake.FIRST_DAY, "end": request_log_lake.LAST_DAY}
        run_model(con, "stg_inbox_files", params)
        run_model(con, "stg_copy_ranks", params)
        run_model(con, "request_conflicts", request_log_lake.conflict_params(con, lake_root))
        run_model(con, "inbox_files", params)
        rows = con.execute("SELECT file, lines_read, blank_lines, accepted, rejected, duplicates, balanced "
                           "FROM inbox_files ORDER BY file").fetchall()
        assert all(row[-1] for row in rows), rows
        winners = con.execute(
            "SELECT c.request_id, r.file, r.line_no, r.usage_status, r.key_name FROM stg_copy_ranks AS c "
            "JOIN read_parquet($files, hive_partitioning = false) AS r USING (file_id, line_no) "
            "WHERE c.copy_rank = 1", {"files": params["inbox_record_files"]}).fetchall()
    return {file: Counts(*counts) for file, *counts, _ in rows}, {rid: tuple(rest) for rid, *rest in winners}


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_each_file_counts_its_duplicates_and_balances(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_lines(inbox / "team-a" / "a.jsonl", [chat_line("r1"), "", chat_line("r1"), "not json"])
    write_lines(inbox / "team-a" / "b.jsonl", [chat_line("r2"), chat_line("r1")])
    stats, winners = inbox_accounting(inbox, tmp_path / "lake")
    assert stats == {"team-a/a.jsonl": Counts(read=3, blank=1, accepted=1, rejected=1, duplicates=1),
                     "team-a/b.jsonl": Counts(read=2, blank=0, accepted=1, rejected=0, duplicates=1)}
    assert {rid: w[:2] for rid, w in winners.items()} == {"r1": ("team-a/a.jsonl", 1), "r2": ("team-a/b.jsonl", 1)}


def test_which_copy_wins_does_not_depend_on_arrival_order(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_lines(inbox / "k" / "a.jsonl", [chat_line("r1", usage=False),  # earliest, but an interrupted stream
                                          chat_line("r2"), chat_line("r2"), chat_line("r3", usage=False)])
    write_lines(inbox / "k" / "b.jsonl", [""] * 6 + [chat_line("r1"), chat_line("r3", usage=False)])
    write_lines(inbox / "k" / "c.jsonl", ["", chat_line("r1")])
    outcomes = [inbox_accounting(inbox, tmp_path / f"lake-{reverse}", reverse=reverse) for reverse in (False, True)]
    assert outcomes[0] == outcomes[1]
    stats, winners = outcomes[0]
    assert {rid: w[:3] for rid, w in winners.items()} == {
        "r1": ("k/b.jsonl", 7, "known"),  # usage beats the earlier interrupted copy
        "r2": ("k/a.jsonl", 2, "known"),  # then the earliest line
        "r3": ("k/a.jsonl", 4, "unknown"),  # copies without usage: the earliest file
    }
    assert {f: c.duplicates for f, c in stats.items()} == {"k/a.jsonl": 2, "k/b.jsonl": 1, "k/c.jsonl": 1}


def test_a_damaged_file_loses_to_an_intact_resent_copy(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "team-a").mkdir(parents=True)
    data = gzip.compress("\n".join(gz_lines(50, "gz")).encode() + b"\n")
    (inbox / "team-a" / "a-damaged.jsonl.gz").write_bytes(data[:-5])  # all lines decoded, trailer lost
    (inbox / "team-a" / "b-resent.jsonl.gz").write_bytes(data)
    stats, winners = inbox_accounting(inbox, tmp_path / "lake")
    assert stats == {"team-a/a-damaged.jsonl.gz": Counts(read=51, accepted=0, rejected=1, duplicates=50),
                     "team-a/b-resent.jsonl.gz": Counts(read=50, accepted=50)}
    assert {w[0] for w in winners.values()} == {"team-a/b-resent.jsonl.gz"} and len(winners) == 50


def test_a_resent_file_with_complete_usage_replaces_the_interrupted_copies(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_lines(inbox / "team-a" / "day1.jsonl",
                [chat_line("r1"), "", chat_line("r2", usage=False), "garbage", chat_line("r1")])
    (inbox / "team-b").mkdir()
    with gzip.open(inbox / "team-b" / "resent.jsonl.gz", "wt") as handle:  # the same requests again, complete
        handle.write(chat_line("r2") + "\n" + chat_line("r3") + "\n")
    stats, winners = inbox_accounting(inbox, tmp_path / "lake")
    assert stats == {"team-a/day1.jsonl": Counts(read=4, blank=1, accepted=1, rejected=1, duplicates=2),
                     "team-b/resent.jsonl.gz": Counts(read=2, blank=0, accepted=2, rejected=0, duplicates=0)}
    assert {rid: (w[0], w[2], w[3]) for rid, w in winners.items()} == {
        "r1": ("team-a/day1.jsonl", "known", "team-a"),
        "r2": ("team-b/resent.jsonl.gz", "known", "team-b"),  # known usage beats the earlier unknown copy
        "r3": ("team-b/resent.jsonl.gz", "known", "team-b"),
    }


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+00:00", "0001-01-01T00:30:00+01:00", "1999-12-31T23:59:59Z"])
def test_implausibly_old_timestamps_are_rejected_not_raised(ts):
    line = json.dumps({"request_id": "r1", "ts": ts, "key_name": "k", "model": "gpt-4o",
                       "response": {"object": "chat.completion", "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                                            "total_tokens": 2}}})
    outcome = parse_line(line, fallback_key=None, now=datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert isinstance(outcome, Reject) and outcome.reason == "bad_timestamp"
