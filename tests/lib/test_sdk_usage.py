"""Usage as the official SDKs hand it over (openai 3.63, anthropic 2.17: the `sdk` extra), normalised bucket by bucket.

Each case below is the JSON an API returns for one shape the inbox takes (a chat completion, a stream's chunks,
a Responses object and its `response.completed` event, an Anthropic message and its `message_start` /
`message_delta` events). The SDK builds its own object from it (`ChatCompletion.model_validate(...)`, ...),
which is dumped the four ways applications log it: `model_dump()` and `model_dump_json()`, each with and
without `exclude_none`. Every dump, in an inbox envelope, must give the case's expected row: every token
bucket, split and server-tool count, shape and usage status.

The dumps are kept in `tests/fixtures/sdk/dumps.jsonl` (one envelope a line, its `fixture` field naming the
case and the dump). `test_the_fixture_file_is_what_the_sdks_write` rebuilds it with the installed SDKs and
fails when it differs (`COMET_LEDGER_UPDATE_SDK_FIXTURES=1` rewrites it); the other tests read the file, so
they need no SDK, and `test_request_logs_batch.py` holds the compiled scanner to `parse_line` on it line by line.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pipelines.lib.request_logs import USAGE_FIELDS, RequestRecord, parse_line
from test_request_logs import NOW

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sdk" / "dumps.jsonl"
DUMPS = ("model_dump", "model_dump_exclude_none", "model_dump_json", "model_dump_json_exclude_none")
TS = "2026-03-20T10:00:00Z"
NONE = dict.fromkeys(USAGE_FIELDS)


def known(**counts: int | None) -> dict[str, int | None]:
    """A known usage: every column, those not given NULL (not reported)."""
    return NONE | counts


@dataclass(frozen=True)
class Case:
    name: str
    sdk_type: str  # module:Class of the SDK's response object
    body: dict[str, Any]  # the JSON the API returned
    envelope: dict[str, Any]  # the inbox envelope's other fields
    shape: str
    status: str
    usage: dict[str, int | None]  # every USAGE_FIELDS column
    identity: dict[str, Any] = field(default_factory=dict)  # request_id, model, ts ... when they come from the body


CHAT_USAGE = {
    "prompt_tokens": 2000, "completion_tokens": 120, "total_tokens": 2120,
    "prompt_tokens_details": {"cached_tokens": 800, "cache_write_tokens": 600, "audio_tokens": 0, "image_tokens": 300,
                              "text_tokens": 1700},
    "completion_tokens_details": {"reasoning_tokens": 40, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                  "rejected_prediction_tokens": 0, "text_tokens": 80},
}  # fmt: skip


def chat(usage: dict | None, *, model: str = "gpt-4.1-2025-04-14", chunk: bool = False, **extra: Any) -> dict:
    if chunk:
        choices = [] if usage is not None else [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]
    else:
        choices = [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": None},
                    "logprobs": None, "finish_reason": "stop"}]
    body = {"id": "chatcmpl-sdk1", "object": "chat.completion.chunk" if chunk else "chat.completion",
            "created": 1774000800, "model": model, "choices": choices, "usage": usage,
            "service_tier": "default", "system_fingerprint": "fp_1"}
    return body | extra


def response(usage: dict | None, *, tool_usage: dict | None = None, response_id: str = "resp_sdk1") -> dict:
    return {
        "id": response_id, "object": "response", "created_at": 1774000800, "status": "completed",
        "model": "gpt-4.1-2025-04-14", "output": [{"id": "msg_r1", "type": "message", "status": "completed",
                                                   "role": "assistant", "content": [{"type": "output_text",
                                                   "text": "Hi", "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [{"type": "web_search"}], "usage": usage,
        "tool_usage": tool_usage,
    }  # fmt: skip


RESPONSES_USAGE = {
    "input_tokens": 2000, "output_tokens": 300, "total_tokens": 2300,
    "input_tokens_details": {"cached_tokens": 1200, "cache_write_tokens": 600,
                             "cache_write_tokens_details": {"ttl_30m_tokens": 600, "ttl_12h_tokens": 0}},
    "output_tokens_details": {"reasoning_tokens": 100},
}  # fmt: skip
TOOL_USAGE = {"image_gen": {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                            "output_tokens": 0, "total_tokens": 0},
              "web_search": {"num_requests": 3}}
ANTHROPIC_USAGE = {
    "input_tokens": 15, "cache_creation_input_tokens": 1200, "cache_read_input_tokens": 3400, "output_tokens": 51,
    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 1000},
    "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
    "output_tokens_details": {"thinking_tokens": 20}, "service_tier": "standard",
}  # fmt: skip


def message(usage: dict) -> dict:
    return {"id": "msg_sdk1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}


ENVELOPE = {"request_id": "req-sdk", "ts": TS, "key_name": "team-a-prod", "status": 200, "latency_ms": 812}
DELTA_ENVELOPE = ENVELOPE | {"model": "claude-sonnet-4-20250514", "endpoint": "/v1/messages"}

CASES = [
    # OpenAI chat: cache writes (the SDK's cache_write_tokens), image and audio input, reasoning
    Case("chat_completion", "openai.types.chat:ChatCompletion", chat(CHAT_USAGE),
         ENVELOPE | {"endpoint": "/v1/chat/completions"}, "chat_completion", "known",
         known(prompt_tokens=2000, completion_tokens=120, total_tokens=2120, cached_tokens=800, cache_write_tokens=600,
               reasoning_tokens=40, uncached_prompt_tokens=600, audio_prompt_tokens=0, image_prompt_tokens=300)),
    Case("chat_completion_audio", "openai.types.chat:ChatCompletion",
         chat({"prompt_tokens": 1500, "completion_tokens": 30, "total_tokens": 1530,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 1200, "text_tokens": 300}},
              model="gpt-4o-audio-preview"),
         ENVELOPE | {"request_id": "req-audio"}, "chat_completion", "known",
         known(prompt_tokens=1500, completion_tokens=30, total_tokens=1530, cached_tokens=0, cache_write_tokens=0,
               reasoning_tokens=0, uncached_prompt_tokens=1500, audio_prompt_tokens=1200)),
    # the stream's final chunk, identified by its own id, created and model (no envelope fields)
    Case("chat_completion_chunk", "openai.types.chat:ChatCompletionChunk",
         chat({"prompt_tokens": 29, "completion_tokens": 2, "total_tokens": 31,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                             "rejected_prediction_tokens": 0}}, chunk=True),
         {}, "chat_completion_chunk", "known",
         known(prompt_tokens=29, completion_tokens=2, total_tokens=31, cached_tokens=0, cache_write_tokens=0,
               reasoning_tokens=0, uncached_prompt_tokens=29, audio_prompt_tokens=0),
         {"request_id": "chatcmpl-sdk1", "model": "gpt-4.1-2025-04-14", "ts": 1774000800}),
    Case("chat_completion_chunk_interrupted", "openai.types.chat:ChatCompletionChunk", chat(None, chunk=True),
         ENVELOPE, "chat_completion_chunk", "unknown", NONE),
    # DeepSeek through the OpenAI shape: its hit / miss counts (kept by the SDK as extra fields)
    Case("deepseek_hit_miss", "openai.types.chat:ChatCompletion",
         chat({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "prompt_cache_hit_tokens": 60,
               "prompt_cache_miss_tokens": 40}, model="deepseek-chat"),
         ENVELOPE | {"request_id": "req-ds1"}, "chat_completion", "known",
         known(prompt_tokens=100, completion_tokens=10, total_tokens=110, cached_tokens=60, cache_write_tokens=0,
               reasoning_tokens=0, uncached_prompt_tokens=40)),
    Case("deepseek_zero_details", "openai.types.chat:ChatCompletion",  # a 0 under one name hides nothing
         chat({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "prompt_cache_miss_tokens": 40,
               "prompt_tokens_details": {"cached_tokens": 0}}, model="deepseek-chat"),
         ENVELOPE | {"request_id": "req-ds2"}, "chat_completion", "known",
         known(prompt_tokens=100, completion_tokens=10, total_tokens=110, cached_tokens=60, cache_write_tokens=0,
               reasoning_tokens=0, uncached_prompt_tokens=40)),
    # Responses: cache writes (required by the SDK), hosted web searches; created_at is a float in the SDK
    Case("response", "openai.types.responses:Response", response(RESPONSES_USAGE, tool_usage=TOOL_USAGE),
         {"key_name": "team-a-prod"}, "response", "known",
         known(prompt_tokens=2000, completion_tokens=300, total_tokens=2300, cached_tokens=1200, cache_write_tokens=600,
               reasoning_tokens=100, uncached_prompt_tokens=200, web_search_requests=3),
         {"request_id": "resp_sdk1", "model": "gpt-4.1-2025-04-14", "ts": 1774000800}),
    Case("response_completed", "openai.types.responses:ResponseCompletedEvent",
         {"type": "response.completed", "sequence_number": 12,
          "response": response(RESPONSES_USAGE | {"input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}},
                               response_id="resp_sdk2")},
         {"ts": TS}, "response_completed", "known",
         known(prompt_tokens=2000, completion_tokens=300, total_tokens=2300, cached_tokens=0, cache_write_tokens=0,
               reasoning_tokens=100, uncached_prompt_tokens=2000),
         {"request_id": "resp_sdk2"}),
    # Anthropic: cache writes by duration, server-tool requests, thinking tokens
    Case("anthropic_message", "anthropic.types:Message", message(ANTHROPIC_USAGE), ENVELOPE, "anthropic_message",
         "known",
         known(prompt_tokens=4615, completion_tokens=51, total_tokens=4666, cached_tokens=3400, cache_write_tokens=1200,
               reasoning_tokens=20, uncached_prompt_tokens=15, cache_write_5m_tokens=200, cache_write_1h_tokens=1000,
               web_search_requests=2, web_fetch_requests=1)),
    Case("anthropic_message_plain", "anthropic.types:Message", message({"input_tokens": 10, "output_tokens": 5}),
         ENVELOPE | {"request_id": "req-plain"}, "anthropic_message", "known",
         known(prompt_tokens=10, completion_tokens=5, total_tokens=15, cached_tokens=0, cache_write_tokens=0,
               reasoning_tokens=0, uncached_prompt_tokens=10)),
    Case("anthropic_message_start", "anthropic.types:RawMessageStartEvent",
         {"type": "message_start", "message": message(ANTHROPIC_USAGE | {"output_tokens": 1})},
         {"ts": TS}, "anthropic_message_start", "unknown", NONE, {"request_id": "msg_sdk1"}),
    Case("anthropic_message_delta", "anthropic.types:RawMessageDeltaEvent",
         {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
          "usage": {"input_tokens": 15, "cache_creation_input_tokens": 1200, "cache_read_input_tokens": 3400,
                    "output_tokens": 51, "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0}}},
         DELTA_ENVELOPE, "anthropic_message_delta", "known",  # the delta does not split writes by duration
         known(prompt_tokens=4615, completion_tokens=51, total_tokens=4666, cached_tokens=3400, cache_write_tokens=1200,
               reasoning_tokens=0, uncached_prompt_tokens=15, web_search_requests=2, web_fetch_requests=0)),
    Case("anthropic_message_delta_output_only", "anthropic.types:RawMessageDeltaEvent",
         {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
          "usage": {"output_tokens": 51}},
         DELTA_ENVELOPE | {"request_id": "req-delta2"}, "anthropic_message_delta", "unknown", NONE),
]


# --- the fixture file --------------------------------------------------------------------------


def sdk_dumps(case: Case) -> dict[str, str]:
    """The case's body as the SDK's object, dumped each way, as JSON text (what ends up in a log line)."""
    module, name = case.sdk_type.split(":")
    obj = getattr(importlib.import_module(module), name).model_validate(case.body)
    return {
        "model_dump": json.dumps(obj.model_dump()),
        "model_dump_exclude_none": json.dumps(obj.model_dump(exclude_none=True)),
        "model_dump_json": obj.model_dump_json(),
        "model_dump_json_exclude_none": obj.model_dump_json(exclude_none=True),
    }


def fixture_text() -> str:
    """Every case and dump as an envelope line; the SDK's JSON text is kept byte for byte."""
    lines = []
    for case in CASES:
        for dump, text in sdk_dumps(case).items():
            fields = json.dumps({"fixture": f"{case.name}/{dump}", **case.envelope})
            lines.append(f'{fields[:-1]}, "response": {text}}}')
    return "\n".join(lines) + "\n"


def fixture_lines() -> dict[str, bytes]:
    """fixture name -> its line, from the committed file."""
    lines = FIXTURE.read_bytes().splitlines()
    return {json.loads(line)["fixture"]: line for line in lines}


def test_the_fixture_file_is_what_the_sdks_write():
    for package, version in (("openai", "3.63.0"), ("anthropic", "2.17.0")):
        try:
            installed = importlib.import_module(package).__version__
        except ImportError:
            pytest.fail(f"the {package} SDK is missing: install the sdk extra (pip install -e '.[dev,sdk]')")
        assert installed == version, f"{package} {installed} installed, the fixtures are from {version}"
    fresh = fixture_text()
    if os.environ.get("COMET_LEDGER_UPDATE_SDK_FIXTURES") == "1":
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(fresh)
    assert FIXTURE.read_text() == fresh, ("tests/fixtures/sdk/dumps.jsonl differs from what the SDKs write; rewrite "
                                          "it with COMET_LEDGER_UPDATE_SDK_FIXTURES=1 .venv/bin/pytest "
                                          "tests/lib/test_sdk_usage.py")


# --- every dump of every case, bucket by bucket -------------------------------------------------------


def test_the_fixture_file_holds_every_case_dumped_every_way():
    assert sorted(fixture_lines()) == sorted(f"{case.name}/{dump}" for case in CASES for dump in DUMPS)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_dump_gives_the_expected_row(case: Case):
    lines = fixture_lines()
    for dump in DUMPS:
        record = parse_line(lines[f"{case.name}/{dump}"], fallback_key="team-a-prod", now=NOW)
        assert isinstance(record, RequestRecord), (dump, record)
        got = {name: getattr(record, name) for name in USAGE_FIELDS}
        assert got == case.usage, dump
        assert (record.usage_shape, record.usage_status) == (case.shape, case.status), dump
        identity = {"request_id": case.envelope.get("request_id"), "model": case.envelope.get("model"),
                    "ts": case.envelope.get("ts")} | case.identity
        identity = {k: v for k, v in identity.items() if v is not None}
        if "ts" in identity:
            expected_ts = identity["ts"]
            identity["ts"] = (datetime.fromtimestamp(expected_ts, timezone.utc) if isinstance(expected_ts, int)
                              else datetime.fromisoformat(expected_ts))
        assert {k: getattr(record, k) for k in identity} == identity, dump


def test_known_buckets_add_up():
    for case in CASES:
        u = case.usage
        if case.status != "known":
            continue
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        assert u["uncached_prompt_tokens"] == u["prompt_tokens"] - u["cached_tokens"] - u["cache_write_tokens"]
        assert (u["cache_write_5m_tokens"] or 0) + (u["cache_write_1h_tokens"] or 0) <= u["cache_write_tokens"]
