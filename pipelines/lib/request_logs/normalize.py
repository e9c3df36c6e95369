"""Turn one captured request-log line into a `RequestRecord`, or a `Reject` with a reason code.

A line is an envelope (README.md, "Request logs") around a response body. The body's
*structure* decides its usage shape; the shape decides how its token counts are read; every
shape is normalised to OpenAI semantics so that the token buckets are disjoint:

    uncached_prompt + cached (cache reads) + cache_write = prompt_tokens
    (completion - reasoning) + reasoning                 = completion_tokens
    prompt + completion                                  = total_tokens

Shapes (`USAGE_SHAPES`) and how they are recognised:

- `chat_completion` / `chat_completion_chunk`: `object` is `chat.completion` / `.chunk` (or no
  `object` but a `choices` list: a chunk if a choice has a `delta` or the list is empty).
  `usage.prompt_tokens` already includes cache reads and writes.
- `response` / `response_completed`: `object: "response"`, or the `response.completed` event
  whose `response` carries the object. input/output tokens are prompt/completion, read like chat.
- `anthropic_message`: `type: "message"`. `input_tokens` EXCLUDES the cache, so prompt =
  input + cache writes + cache_read_input_tokens (absent or null cache fields count 0).
- `anthropic_message_delta`: the stream's last event. Its usage always has the final
  `output_tokens` but only sometimes the input side. Decision: with `input_tokens` present it
  is read like a message (absent cache fields count 0); without it the record is accepted with
  usage `unknown`, because inventing a zero input would under-cost the request.
- `anthropic_message_start`: the stream's first event (`type: "message_start"`). Its usage has
  the input side but a placeholder `output_tokens`, so a log that ends there is an interrupted
  stream: usage `unknown`.
- `task`: image / video / music task replies, billed per call (usage `per_call`, tokens NULL):
  an endpoint with a path segment in `TASK_PATH_SEGMENTS` (`/mj/...`, `/v1/images/...`), or a
  body with `task_id` (top level or under `data`) or Midjourney's `{"code", "result"}`.
- `error`: an `{"error": ...}` body with an envelope status >= 400. Kept with usage `unknown`
  (the gateway may still have billed it). An error body without such a status is `unknown_shape`.

Where each count comes from (`details` is `prompt_tokens_details` for chat, `input_tokens_details`
for Responses; what the official SDKs write, openai 3.63 and anthropic 2.17, and new-api's names):

| column | OpenAI chat / Responses | Anthropic message / delta |
|---|---|---|
| cached_tokens (reads) | `details.cached_tokens`; chat: DeepSeek's `prompt_cache_hit_tokens` (or prompt - `prompt_cache_miss_tokens`) | `cache_read_input_tokens` |
| cache_write_tokens | `details.cache_write_tokens` (OpenAI); new-api's `details.cached_creation_tokens` | `cache_creation_input_tokens`, else the sum of its split |
| cache_write_5m_tokens / _1h_ | never reported (NULL) | `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` |
| audio_prompt_tokens / image_ | `details.audio_tokens` / `details.image_tokens` | never reported (NULL) |
| reasoning_tokens | `completion_tokens_details` / `output_tokens_details.reasoning_tokens` | `output_tokens_details.thinking_tokens` |
| web_search_requests / web_fetch_ | Responses: `tool_usage.web_search.num_requests` (beside `usage`) / NULL | `server_tool_use.web_search_requests` / `web_fetch_requests` |

- Absent and null are the same: "not reported". The four columns of the disjoint buckets
  (cached, cache_write, reasoning, and through them uncached) count an unreported kind as 0;
  the splits and the server-tool counts stay NULL when not reported, so that NULL never
  reads as "0 tokens of that kind" (an Anthropic write whose duration is not reported is counted
  in cache_write_tokens, and in neither split).
- Two names for the same tokens (DeepSeek's hit count beside `cached_tokens`; OpenAI's
  `cache_write_tokens` beside new-api's `cached_creation_tokens`): the larger reported value is
  taken, never their sum, so that a 0 filled in by a proxy cannot hide tokens reported under the
  other name. DeepSeek's hit + miss, when both are reported, must equal prompt_tokens.
- Subsets: cached + cache_write <= prompt; 5m + 1h <= cache_write (a remainder is a write of
  unreported duration); audio + image <= prompt; reasoning <= completion.
- Not read (no price here depends on them): `text_tokens` (the rest of the prompt), output audio
  and prediction counts, the Responses `cache_write_tokens_details` retention split (30 minutes /
  12 hours) and `tool_usage.image_gen` tokens.

Usage status: `known` (counts read), `unknown` (a token shape without final usage: tokens
NULL, never 0) or `per_call`. A token shape whose usage object lacks its core counts (prompt
and completion, or input and output) is `unknown` too; the counts that *are* present are still
validated.

Token values are strict: JSON integers only, 0 <= n < 2**53. `true`, `12.0`, `"12"` are
`bad_token_type`. A present `total_tokens` must equal prompt + completion (for Anthropic shapes
the normalised prompt), and every subset rule above must hold: otherwise `inconsistent_tokens`.

Envelope fields win over the body; a missing (absent, null or blank) field falls back:
`request_id` -> the body's id (the carried object's for events; a task's id; a `message_delta`
or error body has none), `ts` -> `created` / `created_at` (unix seconds), `model` -> the body's
model, `key_name` -> `fallback_key` (the inbox folder). A field that is present but malformed is
rejected, never silently replaced by its fallback. `ts` is an ISO-8601 string with an offset
(a naive time is ambiguous: `bad_timestamp`) or unix seconds; more than a day after `now` is
`future_timestamp`. `status` must be an integer 100..599 and `latency_ms` a non-negative number
(floats are rounded): otherwise `bad_field_type`. A record needs a model to be priced, so a
line without one is rejected `missing_model`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

import pyarrow as pa

from pipelines.lib.redact import redact

USAGE_SHAPES: Final = (
    "chat_completion",
    "chat_completion_chunk",
    "response",
    "response_completed",
    "anthropic_message",
    "anthropic_message_start",
    "anthropic_message_delta",
    "task",
    "error",
)
USAGE_STATUSES: Final = ("known", "unknown", "per_call")
REJECT_REASONS: Final = (
    "encoding_error",
    "invalid_json",
    "not_an_object",
    "missing_response",
    "bad_field_type",
    "unknown_shape",
    "missing_key",
    "missing_request_id",
    "missing_timestamp",
    "bad_timestamp",
    "future_timestamp",
    "missing_model",
    "bad_token_type",
    "negative_tokens",
    "inconsistent_tokens",
    "corrupt_gzip",
)
TOKEN_FIELDS: Final = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "uncached_prompt_tokens",
)  # the disjoint buckets: NULL exactly when the usage is not known
DETAIL_FIELDS: Final = (
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "audio_prompt_tokens",
    "image_prompt_tokens",
    "web_search_requests",
    "web_fetch_requests",
)  # splits and server-tool counts: NULL also when known usage does not report them
USAGE_FIELDS: Final = TOKEN_FIELDS + DETAIL_FIELDS  # every count a record carries, in column order
TASK_PATH_SEGMENTS: Final = frozenset(
    {"mj", "suno", "kling", "runway", "runwayml", "luma", "pika", "videos", "images"}
)
FUTURE_TOLERANCE: Final = timedelta(days=1)
EARLIEST_TIMESTAMP: Final = datetime(2000, 1, 1, tzinfo=timezone.utc)  # older is a broken clock, not a request
MAX_TOKENS: Final = 2**53  # exclusive; JSON integers beyond this lose precision in many producers


@dataclass(frozen=True, slots=True)
class Reject:
    """Why a line is unusable: `reason` from `REJECT_REASONS`, `detail` for a person."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {self.reason!r}")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One accepted request, tokens in OpenAI semantics (see the module docstring)."""

    request_id: str
    ts: datetime  # aware, UTC
    utc_date: date  # ts's calendar day in UTC: the lake's partition (the reporting day is the warehouse's)
    key_name: str
    model: str
    endpoint: str | None
    status: int | None
    source_ip: str | None
    latency_ms: int | None
    usage_shape: str
    usage_status: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    uncached_prompt_tokens: int | None
    cache_write_5m_tokens: int | None  # the splits and server-tool counts: NULL when not reported
    cache_write_1h_tokens: int | None
    audio_prompt_tokens: int | None
    image_prompt_tokens: int | None
    web_search_requests: int | None
    web_fetch_requests: int | None
    response_id: str | None
    raw_usage_json: str | None

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}


_FIELD_NAMES: Final = tuple(f.name for f in fields(RequestRecord))

RECORD_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("utc_date", pa.date32(), nullable=False),
        pa.field("key_name", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("endpoint", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("source_ip", pa.string()),
        pa.field("latency_ms", pa.int64()),
        pa.field("usage_shape", pa.string(), nullable=False),
        pa.field("usage_status", pa.string(), nullable=False),
        *(pa.field(name, pa.int64()) for name in USAGE_FIELDS),
        pa.field("response_id", pa.string()),
        pa.field("raw_usage_json", pa.string()),
    ]
)
assert tuple(RECORD_SCHEMA.names) == _FIELD_NAMES, "RECORD_SCHEMA must follow RequestRecord"


def parse_line(
    text: str | bytes, *, fallback_key: str | None, now: datetime
) -> RequestRecord | Reject:
    """Normalise one inbox line. Never raises for bad input; a naive `now` is a caller bug."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        return _parse(text, fallback_key=fallback_key, now=now)
    except _Rejected as rejected:
        return Reject(rejected.reason, redact(rejected.detail))


# --- internals -------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Tokens:
    prompt: int
    completion: int
    cached: int
    cache_write: int
    reasoning: int
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    audio: int | None = None
    image: int | None = None
    web_search: int | None = None
    web_fetch: int | None = None


def _parse(text: str | bytes, *, fallback_key: str | None, now: datetime) -> RequestRecord:
    envelope = _load_object(text)
    body = envelope.get("response")
    if body is None:
        raise _Rejected("missing_response", "the envelope has no 'response' object")
    if not isinstance(body, dict):
        raise _Rejected("bad_field_type", f"response is {_kind(body)}, expected an object")

    endpoint = _opt_text(envelope, "endpoint")
    status = _opt_status(envelope)
    source_ip = _opt_text(envelope, "source_ip")
    latency_ms = _opt_latency(envelope)
    key_name = _opt_text(envelope, "key_name")
    request_id = _opt_text(envelope, "request_id")
    model = _opt_text(envelope, "model")

    shape, carried = _detect_shape(body, endpoint, status)
    response_id = _body_id(shape, carried)

    key_name = key_name or fallback_key or None
    if key_name is None:
        raise _Rejected("missing_key", "no key_name in the envelope and the file is not in a key folder")
    request_id = request_id or response_id
    if request_id is None:
        detail = f"no request_id in the envelope and a {shape} body has no id"
        raise _Rejected("missing_request_id", detail)
    ts = _timestamp(envelope, carried, now)
    model = model or _body_text(carried, "model")
    if model is None:
        raise _Rejected("missing_model", "no model in the envelope or the response body")

    usage = body.get("usage") if shape == "anthropic_message_delta" else carried.get("usage")
    usage_status, tokens = _read_usage(shape, usage, carried)
    return RequestRecord(
        request_id=request_id,
        ts=ts,
        utc_date=ts.astimezone(timezone.utc).date(),
        key_name=key_name,
        model=model,
        endpoint=endpoint,
        status=status,
        source_ip=source_ip,
        latency_ms=latency_ms,
        usage_shape=shape,
        usage_status=usage_status,
        **_token_columns(tokens),
        response_id=response_id,
        raw_usage_json=None if usage is None else json.dumps(usage, separators=(",", ":")),
    )


def _load_object(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Rejected("encoding_error", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _Rejected("invalid_json", f"not JSON: {str(exc)[:160]}") from None
    if not isinstance(value, dict):
        raise _Rejected("not_an_object", f"the line is {_kind(value)}, expected a JSON object")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _opt_text(envelope: dict[str, Any], name: str) -> str | None:
    """An optional envelope string; absent, null or blank is None."""
    value = envelope.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Rejected("bad_field_type", f"{name} is {_kind(value)}, expected a string")
    _check_encodable(value, name)
    return value if value.strip() else None


def _check_encodable(value: str, name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Rejected("encoding_error", f"{name} holds an unpaired surrogate escape") from None


def _opt_status(envelope: dict[str, Any]) -> int | None:
    value = envelope.get("status")
    if value is None:
        return None
    if type(value) is not int or not 100 <= value <= 599:
        raise _Rejected("bad_field_type", f"status is {_short(value)}, expected an HTTP status 100..599")
    return value


def _opt_latency(envelope: dict[str, Any]) -> int | None:
    value = envelope.get("latency_ms")
    if value is None:
        return None
    if type(value) not in (int, float) or value < 0 or value >= MAX_TOKENS or not math.isfinite(value):
        raise _Rejected("bad_field_type", f"latency_ms is {_short(value)}, expected milliseconds >= 0")
    return round(value)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _detect_shape(
    body: dict[str, Any], endpoint: str | None, status: int | None
) -> tuple[str, dict[str, Any]]:
    """(usage shape, the object whose id / model / created / usage belong to the request)."""
    obj, event = body.get("object"), body.get("type")
    if obj == "chat.completion":
        return "chat_completion", body
    if obj == "chat.completion.chunk":
        return "chat_completion_chunk", body
    if obj == "response":
        return "response", body
    if event == "response.completed":
        return "response_completed", _carried(body, "response", event)
    if event == "message":
        return "anthropic_message", body
    if event == "message_start":
        return "anthropic_message_start", _carried(body, "message", event)
    if event == "message_delta":
        return "anthropic_message_delta", body
    if obj is None and isinstance(body.get("choices"), list):
        choices = body["choices"]
        is_chunk = not choices or any(isinstance(c, dict) and "delta" in c for c in choices)
        return ("chat_completion_chunk" if is_chunk else "chat_completion"), body
    if body.get("error") and status is not None and status >= 400:
        return "error", body
    if _is_task(body, endpoint):
        return "task", body
    hint = f"object={obj!r}" if obj is not None else f"type={event!r}" if event is not None else "no type"
    raise _Rejected("unknown_shape", f"unrecognised response body ({hint[:40]}; keys: {_keys(body)})")


def _carried(body: dict[str, Any], name: str, event: str) -> dict[str, Any]:
    inner = body.get(name)
    if not isinstance(inner, dict):
        raise _Rejected("unknown_shape", f"a {event} event without its '{name}' object")
    return inner


def _keys(body: dict[str, Any]) -> str:
    names = sorted(body)[:6]
    return ", ".join(names) + (", ..." if len(body) > 6 else "") if names else "none"


def endpoint_is_task(endpoint: str) -> bool:
    """Whether the endpoint's path has a task segment (`/mj/submit/imagine`, `/v1/images/generations`)."""
    path = endpoint.split("?", 1)[0].split("://", 1)[-1]
    return bool(TASK_PATH_SEGMENTS & set(path.lower().split("/")))


def _is_task(body: dict[str, Any], endpoint: str | None) -> bool:
    if endpoint is not None and endpoint_is_task(endpoint):
        return True
    data = body.get("data")
    if "task_id" in body or (isinstance(data, dict) and "task_id" in data):
        return True
    return "code" in body and "result" in body  # Midjourney: {"code": 1, "description", "result"}


def _body_id(shape: str, carried: dict[str, Any]) -> str | None:
    if shape == "anthropic_message_delta":
        return None
    if shape == "task":
        data = carried.get("data")
        candidates = [
            carried.get("task_id"),
            data.get("task_id") if isinstance(data, dict) else None,
            carried.get("result"),
            carried.get("id"),
            data if isinstance(data, str) else None,  # Suno: {"code": "success", "data": "<task id>"}
        ]
    else:
        candidates = [carried.get("id")]
    for value in candidates:
        if type(value) is int:
            return str(value)
        if isinstance(value, str) and value.strip():
            _check_encodable(value, "response id")
            return value
    return None


def _body_text(carried: dict[str, Any], name: str) -> str | None:
    value = carried.get(name)
    if isinstance(value, str) and value.strip():
        _check_encodable(value, f"response {name}")
        return value
    return None


def _timestamp(envelope: dict[str, Any], carried: dict[str, Any], now: datetime) -> datetime:
    if envelope.get("ts") is not None:
        ts = _to_utc(envelope["ts"], "ts")
    else:
        source = next((n for n in ("created", "created_at") if carried.get(n) is not None), None)
        if source is None:
            detail = "no ts in the envelope and no created/created_at in the body"
            raise _Rejected("missing_timestamp", detail)
        ts = _to_utc(carried[source], f"response {source}")
    if ts < EARLIEST_TIMESTAMP:
        raise _Rejected("bad_timestamp", f"{ts.isoformat()} is before {EARLIEST_TIMESTAMP.date()}: not a plausible request time")
    if ts > now + FUTURE_TOLERANCE:
        detail = f"{ts.isoformat()} is more than a day after {now.isoformat()}"
        raise _Rejected("future_timestamp", detail)
    return ts


def _to_utc(value: Any, name: str) -> datetime:
    if type(value) in (int, float):
        try:
            if not math.isfinite(value):
                raise ValueError
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise _Rejected("bad_timestamp", f"{name} {_short(value)} is not a unix time") from None
    if not isinstance(value, str):
        raise _Rejected("bad_timestamp", f"{name} is {_kind(value)}, expected ISO-8601 or unix seconds")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _Rejected("bad_timestamp", f"{name} {_short(value)} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise _Rejected("bad_timestamp", f"{name} {_short(value)} has no UTC offset")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise _Rejected("bad_timestamp", f"{name} {_short(value)} is out of range") from None


# --- usage -------------------------------------------------------------------------------------


def _read_usage(shape: str, usage: Any, carried: dict[str, Any]) -> tuple[str, _Tokens | None]:
    if shape == "task":
        return "per_call", None
    if shape in ("error", "anthropic_message_start") or usage is None:
        return "unknown", None
    if not isinstance(usage, dict):
        raise _Rejected("bad_field_type", f"usage is {_kind(usage)}, expected an object")
    if shape.startswith("chat_"):
        tokens = _chat_tokens(usage)
    elif shape.startswith("response"):
        tokens = _responses_tokens(usage)
        searches = _hosted_web_searches(carried)
        if tokens is not None and searches is not None:
            tokens = replace(tokens, web_search=searches)
    else:
        tokens = _anthropic_tokens(usage)
    return ("unknown", None) if tokens is None else ("known", tokens)


def _chat_tokens(usage: dict[str, Any]) -> _Tokens | None:
    return _openai_tokens(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details",
                          "completion_tokens_details", deepseek=True)


def _responses_tokens(usage: dict[str, Any]) -> _Tokens | None:
    return _openai_tokens(usage, "input_tokens", "output_tokens", "input_tokens_details",
                          "output_tokens_details", deepseek=False)


def _openai_tokens(usage: dict[str, Any], prompt_name: str, completion_name: str, details_name: str,
                   out_details_name: str, *, deepseek: bool) -> _Tokens | None:
    prompt = _count(usage, prompt_name)
    completion = _count(usage, completion_name)
    total = _count(usage, "total_tokens")
    details = _details(usage, details_name)
    where = details_name + "."
    cached = _count(details, "cached_tokens", where)
    if deepseek:
        cached = _larger(cached, _deepseek_hits(usage, prompt))
    cache_write = _larger(_count(details, "cache_write_tokens", where), _count(details, "cached_creation_tokens", where))
    audio = _count(details, "audio_tokens", where)
    image = _count(details, "image_tokens", where)
    reasoning = _count(_details(usage, out_details_name), "reasoning_tokens", out_details_name + ".")
    if prompt is None or completion is None:
        return None
    return _checked(prompt, completion, total, cached or 0, cache_write or 0, reasoning or 0, audio=audio, image=image)


def _hosted_web_searches(response: dict[str, Any]) -> int | None:
    """A Responses object's billable web searches: `tool_usage.web_search.num_requests` (beside `usage`)."""
    tools = response.get("tool_usage")
    if tools is None:
        return None
    if not isinstance(tools, dict):
        raise _Rejected("bad_field_type", f"response tool_usage is {_kind(tools)}, expected an object")
    search = tools.get("web_search")
    if search is None:
        return None
    if not isinstance(search, dict):
        raise _Rejected("bad_field_type", f"response tool_usage.web_search is {_kind(search)}, expected an object")
    value = search.get("num_requests")
    if value is None:
        return None
    if type(value) is not int:
        raise _Rejected("bad_token_type", f"tool_usage.web_search.num_requests is {_short(value)}, expected an integer")
    if value < 0:
        raise _Rejected("negative_tokens", f"tool_usage.web_search.num_requests is {value}")
    if value >= MAX_TOKENS:
        raise _Rejected("bad_token_type", f"tool_usage.web_search.num_requests is {value}, beyond 2**53")
    return value


def _deepseek_hits(usage: dict[str, Any], prompt: int | None) -> int | None:
    """DeepSeek's cache reads: prompt_cache_hit_tokens, else prompt - prompt_cache_miss_tokens."""
    hits = _count(usage, "prompt_cache_hit_tokens")
    misses = _count(usage, "prompt_cache_miss_tokens")
    if misses is None or prompt is None:
        return hits
    if hits is not None and hits + misses != prompt:
        raise _Rejected("inconsistent_tokens", f"cache hits {hits} + misses {misses} != prompt {prompt}")
    if misses > prompt:
        raise _Rejected("inconsistent_tokens", f"cache misses {misses} exceed prompt {prompt}")
    return prompt - misses


def _larger(a: int | None, b: int | None) -> int | None:
    """One count reported under two names: the larger, None when neither is reported."""
    if a is None:
        return b
    return a if b is None or a >= b else b


def _anthropic_tokens(usage: dict[str, Any]) -> _Tokens | None:
    uncached = _count(usage, "input_tokens")
    completion = _count(usage, "output_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens")
    split = _details(usage, "cache_creation")
    write_5m = _count(split, "ephemeral_5m_input_tokens", "cache_creation.")
    write_1h = _count(split, "ephemeral_1h_input_tokens", "cache_creation.")
    if cache_write is None:
        cache_write = (write_5m or 0) + (write_1h or 0)
    cached = _count(usage, "cache_read_input_tokens") or 0
    total = _count(usage, "total_tokens")  # not Anthropic's; a proxy may add one
    reasoning = _count(_details(usage, "output_tokens_details"), "thinking_tokens", "output_tokens_details.")
    tools = _details(usage, "server_tool_use")
    web_search = _count(tools, "web_search_requests", "server_tool_use.")
    web_fetch = _count(tools, "web_fetch_requests", "server_tool_use.")
    if uncached is None or completion is None:
        return None
    return _checked(uncached + cache_write + cached, completion, total, cached, cache_write, reasoning or 0,
                    write_5m=write_5m, write_1h=write_1h, web_search=web_search, web_fetch=web_fetch)


def _details(usage: dict[str, Any], name: str) -> dict[str, Any]:
    value = usage.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Rejected("bad_field_type", f"usage.{name} is {_kind(value)}, expected an object")
    return value


def _count(container: dict[str, Any], name: str, prefix: str = "") -> int | None:
    value = container.get(name)
    if value is None:
        return None
    if type(value) is not int:
        detail = f"usage.{prefix}{name} is {_short(value)}, expected an integer"
        raise _Rejected("bad_token_type", detail)
    if value < 0:
        raise _Rejected("negative_tokens", f"usage.{prefix}{name} is {value}")
    if value >= MAX_TOKENS:
        raise _Rejected("bad_token_type", f"usage.{prefix}{name} is {value}, beyond 2**53")
    return value


def _checked(
    prompt: int, completion: int, total: int | None, cached: int, cache_write: int, reasoning: int, *,
    write_5m: int | None = None, write_1h: int | None = None, audio: int | None = None, image: int | None = None,
    web_search: int | None = None, web_fetch: int | None = None,
) -> _Tokens:
    if total is not None and total != prompt + completion:
        detail = f"total {total} != prompt {prompt} + completion {completion}"
        raise _Rejected("inconsistent_tokens", detail)
    if cached + cache_write > prompt:
        detail = f"cache reads {cached} + cache writes {cache_write} exceed prompt {prompt}"
        raise _Rejected("inconsistent_tokens", detail)
    if (write_5m or 0) + (write_1h or 0) > cache_write:
        detail = f"5-minute {write_5m or 0} + 1-hour {write_1h or 0} cache writes exceed cache writes {cache_write}"
        raise _Rejected("inconsistent_tokens", detail)
    if (audio or 0) + (image or 0) > prompt:
        raise _Rejected("inconsistent_tokens", f"audio {audio or 0} + image {image or 0} tokens exceed prompt {prompt}")
    if reasoning > completion:
        raise _Rejected("inconsistent_tokens", f"reasoning {reasoning} exceeds completion {completion}")
    return _Tokens(prompt, completion, cached, cache_write, reasoning, write_5m, write_1h, audio, image,
                   web_search, web_fetch)


def _token_columns(tokens: _Tokens | None) -> dict[str, int | None]:
    if tokens is None:
        return dict.fromkeys(USAGE_FIELDS)
    return {
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "total_tokens": tokens.prompt + tokens.completion,
        "cached_tokens": tokens.cached,
        "cache_write_tokens": tokens.cache_write,
        "reasoning_tokens": tokens.reasoning,
        "uncached_prompt_tokens": tokens.prompt - tokens.cached - tokens.cache_write,
        "cache_write_5m_tokens": tokens.cache_write_5m,
        "cache_write_1h_tokens": tokens.cache_write_1h,
        "audio_prompt_tokens": tokens.audio,
        "image_prompt_tokens": tokens.image,
        "web_search_requests": tokens.web_search,
        "web_fetch_requests": tokens.web_fetch,
    }
