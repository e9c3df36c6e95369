"""Normalise many inbox lines at once: compiled and typed decoders for the common forms, `parse_line` for the rest.

`normalize.parse_line` is the definition of every rule. Applied line by line it costs ~15 us a line
(most of it `json.loads` building every object of the body, the chat text included), too slow for
inboxes of millions of lines. This module gives the same answer faster for the lines that take the
common path:

1. `msgspec` decodes each line straight into small typed structs holding only the fields the rules
   read; everything else in the line (messages, choices' text, image data) is validated as JSON and
   skipped without building Python objects. The types are strict (a token count must be a JSON
   integer, `status` an integer, ...), so a line whose fields have any unusual type fails to decode.
2. `_fast_row` applies the rules of `parse_line` to those structs, for the shapes that make up
   nearly all traffic (chat completions and chunks, Responses objects and events, Anthropic
   messages and deltas, task replies). It returns None as soon as a line needs anything it does
   not handle: another shape, a missing field, a value a rule would reject, a timestamp in an
   unusual form.
3. Every line the fast path declines (or that is not UTF-8, has more than `MAX_BRACKETS` brackets,
   or fails to decode) goes through `parse_line` itself. Every reject therefore comes from
   `parse_line`, with its reason and detail.

`normalise_block` puts a third tier in front, for whole blocks of lines as the reader gives them:
the compiled scanner `_scan.c` (built by `pip install`, see hatch_build.py) parses each line with a
strict JSON parser that records only the fields the rules read, applies the same rules, and writes
Arrow columns directly; the lines it declines (its header lists why it may) go through
`normalise_lines`. Without the compiled module every line takes that way: the same outcomes, slower.

So the fast path may decline anything, but must never accept differently: for every line it accepts,
the record equals `parse_line`'s. `tests/lib/test_request_logs_fast.py` checks that on every line of
the request-log tests, on generated lines of every shape, and on the simulator's traffic
(tests/lib/test_request_logs_native.py does the same for the compiled scanner).

Differences from `parse_line` by design (the same JSON value, another spelling): `raw_usage_json` is
the usage object as logged with whitespace removed, where `parse_line` re-serialises what it decoded
(escapes and number spelling may differ, a duplicated key appears once).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
from msgspec import UNSET, Raw, Struct, UnsetType

try:
    from pipelines.lib.request_logs import _scan
except ImportError:  # a checkout that was not installed: the Python tiers take every line
    _scan = None
from pipelines.lib.request_logs.normalize import (
    EARLIEST_TIMESTAMP,
    FUTURE_TOLERANCE,
    MAX_TOKENS,
    RECORD_SCHEMA,
    Reject,
    RequestRecord,
    endpoint_is_task,
    parse_line,
)

MAX_BRACKETS: Final = 256  # deeper nesting than this goes to parse_line (its recursion limit decides)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US_PER_S: Final = 1_000_000
_EARLIEST_US: Final = int(EARLIEST_TIMESTAMP.timestamp()) * _US_PER_S
_ISO_LENGTHS: Final = frozenset({20, 24, 25, 27, 29, 32})  # ...Z, .fffZ, +hh:mm, .ffffffZ, .fff+hh:mm, .ffffff+hh:mm

NUMBERED_SCHEMA: Final = RECORD_SCHEMA.append(pa.field("line_no", pa.int64()))


# --- the typed view of a line: only what the rules read ------------------------------------------


class _Details(Struct, gc=False):
    """Any `*_tokens_details` object (prompt, completion, input, output): the counts read from one."""

    cached_tokens: int | None = None
    cached_creation_tokens: int | None = None
    cache_write_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None
    reasoning_tokens: int | None = None
    thinking_tokens: int | None = None


class _CacheCreation(Struct, gc=False):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _ServerToolUse(Struct, gc=False):
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None


class _Usage(Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_cache_hit_tokens: int | None = None
    prompt_cache_miss_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerToolUse | None = None


class _WebSearch(Struct, gc=False):
    num_requests: int | None = None


class _ToolUsage(Struct, gc=False):
    """A Responses object's `tool_usage` (hosted tools, beside `usage`)."""

    web_search: _WebSearch | None = None


class _Empty(Struct, gc=False):
    pass


class _Choice(Struct, gc=False):
    delta: _Empty | None | UnsetType = UNSET


class _Carried(Struct, gc=False):
    """The object a `response.completed` event carries."""

    id: str | int | None = None
    model: str | None = None
    created: int | float | None = None
    created_at: int | float | None = None
    usage: Raw = UNSET
    tool_usage: _ToolUsage | None = None


class _Data(Struct, gc=False):
    task_id: str | int | None | UnsetType = UNSET


class _Body(Struct, gc=False):
    object: str | None = None
    type: str | None = None
    id: str | int | None = None
    model: str | None = None
    created: int | float | None = None
    created_at: int | float | None = None  # the openai SDK types Responses' created_at as a float
    usage: Raw = UNSET
    tool_usage: _ToolUsage | None = None
    choices: list[_Choice] | None = None
    response: _Carried | None | UnsetType = UNSET
    error: Raw = UNSET
    data: Raw = UNSET
    task_id: str | int | None | UnsetType = UNSET
    code: Raw = UNSET
    result: str | int | None | UnsetType = UNSET


class _Envelope(Struct, gc=False):
    request_id: str | None = None
    ts: str | int | None = None
    key_name: str | None = None
    model: str | None = None
    endpoint: str | None = None
    status: int | None = None
    source_ip: str | None = None
    latency_ms: int | None = None
    response: _Body | None = None


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_usage = msgspec.json.Decoder(_Usage).decode
_decode_data = msgspec.json.Decoder(_Data).decode
_decode_str = msgspec.json.Decoder(str).decode
_compact = msgspec.json.format


class _Declined(Exception):
    """The fast path does not take this line; parse_line will."""


# --- the batch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalisedLines:
    """What a batch of numbered lines became: accepted records (with `line_no`), rejects, blanks."""

    records: pa.Table  # NUMBERED_SCHEMA, in line order
    rejects: list[tuple[int, Reject, bytes]]  # (line_no, reject, the line)
    blank: int
    fast: int  # records taken by the fast path: the compiled scanner or the typed decoder (the rest by parse_line)
    compiled: int = 0  # of those, by the compiled scanner


def normalise_lines(
    lines: Sequence[tuple[int, bytes]], *, fallback_key: str | None, now: datetime
) -> NormalisedLines:
    """Normalise numbered lines: the same outcome as `parse_line` on each (module docstring)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    collecting = gc.isenabled()
    gc.disable()  # a batch makes ~10^5 acyclic tuples; collections triggered by them would only re-scan the heap
    try:
        return _normalise(lines, fallback_key, now)
    finally:
        if collecting:
            gc.enable()


def _normalise(lines: Sequence[tuple[int, bytes]], fallback_key: str | None,
               now: datetime) -> NormalisedLines:
    latest_us = _us(now + FUTURE_TOLERANCE)
    endpoints: dict[str, bool] = {}
    rows: list[tuple] = []
    rejects: list[tuple[int, Reject, bytes]] = []
    blank = fast = 0
    for line_no, line in lines:
        row = None
        if (line.isascii() or _utf8(line)) and line.count(b"{") + line.count(b"[") <= MAX_BRACKETS:
            try:
                row = _fast_row(_decode_envelope(line), fallback_key, latest_us, endpoints)
            except (msgspec.DecodeError, _Declined):
                pass
        if row is not None:
            rows.append((*row, line_no))
            fast += 1
            continue
        if not line.strip():
            blank += 1
            continue
        outcome = parse_line(line, fallback_key=fallback_key, now=now)
        if isinstance(outcome, Reject):
            rejects.append((line_no, outcome, line))
        else:
            rows.append((*_record_row(outcome), line_no))
    return NormalisedLines(_table(rows), rejects, blank, fast)


def normalise_block(
    block: bytes, first_line_no: int, *, fallback_key: str | None, now: datetime
) -> NormalisedLines:
    """Normalise every line of `block` (whole lines split at b"\\n", the first numbered `first_line_no`).

    The compiled scanner takes what it can; `normalise_lines` the lines it declines (module docstring).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    key = _scan_key(fallback_key)
    if _scan is None or key is False:
        numbered = list(enumerate(block_lines(block), first_line_no))
        return normalise_lines(numbered, fallback_key=fallback_key, now=now)
    rows, columns, declined = _scan.scan(block, first_line_no, key, _EARLIEST_US, _us(now + FUTURE_TOLERANCE))
    where = np.frombuffer(declined, dtype=np.int64).reshape(-1, 3).tolist()
    rest = normalise_lines([(n, block[start:end]) for n, start, end in where],
                           fallback_key=fallback_key, now=now)
    records = rest.records
    if rows:
        scanned = _scanned_table(rows, columns)
        records = scanned if not records.num_rows else _in_line_order(pa.concat_tables([scanned, records]))
    return NormalisedLines(records, rest.rejects, rest.blank, rows + rest.fast, rows)


def block_lines(block: bytes) -> list[bytes]:
    """The lines of a block, without their newlines (a final b"\\n" ends the last line, not a new one)."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    return lines


def _scan_key(fallback_key: str | None) -> bytes | None | bool:
    """The key folder as the scanner takes it; False when it cannot (a name that is not UTF-8)."""
    if not fallback_key:
        return None
    try:
        return fallback_key.encode("utf-8")
    except UnicodeEncodeError:
        return False


_USAGE_STATUSES: Final = pa.array(["unknown", "known", "per_call"])  # the scanner's codes 0, 1, 2


def _scanned_table(rows: int, columns: dict[str, tuple[bytes, bytes, bytes]]) -> pa.Table:
    """NUMBERED_SCHEMA from the scanner's buffers: Arrow layouts, wrapped without copying."""
    def array(name: str, type_: pa.DataType) -> pa.Array:
        valid, values, data = (pa.py_buffer(b) for b in columns[name])
        buffers = [valid, values, data] if pa.types.is_string(type_) else [valid, values]
        return pa.Array.from_buffers(type_, rows, buffers)

    ts_us = np.frombuffer(columns["ts"][1], dtype=np.int64)
    arrays = []
    for field in NUMBERED_SCHEMA:
        if field.name == "utc_date":
            arrays.append(pa.array(_utc_days(ts_us), pa.int32()).view(field.type))
        elif field.name == "usage_shape":
            arrays.append(pa.array(_scan.SHAPES).take(array(field.name, pa.int8())))
        elif field.name == "usage_status":
            arrays.append(_USAGE_STATUSES.take(array(field.name, pa.int8())))
        elif field.name == "ts":
            arrays.append(array("ts", pa.int64()).view(field.type))
        else:
            arrays.append(array(field.name, field.type))
    return pa.Table.from_arrays(arrays, schema=NUMBERED_SCHEMA)


def _in_line_order(table: pa.Table) -> pa.Table:
    return table.take(pa.compute.sort_indices(table["line_no"]))


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // _ONE_US


_ONE_US: Final = timedelta(microseconds=1)


# Columns of a row before `_table` adds utc_date: RECORD_SCHEMA without utc_date, then line_no.
_ROW_COLUMNS: Final = tuple(n for n in RECORD_SCHEMA.names if n != "utc_date")


def _record_row(r: RequestRecord) -> tuple:
    return tuple(_us(r.ts) if name == "ts" else getattr(r, name) for name in _ROW_COLUMNS)


def _table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [()] * (len(_ROW_COLUMNS) + 1)
    by_name = dict(zip((*_ROW_COLUMNS, "line_no"), columns))
    ts_us = np.fromiter(by_name["ts"], dtype=np.int64, count=len(rows))
    arrays = []
    for field in NUMBERED_SCHEMA:
        if field.name == "ts":
            arrays.append(pa.array(ts_us, pa.int64()).view(field.type))
        elif field.name == "utc_date":
            arrays.append(pa.array(_utc_days(ts_us), pa.int32()).view(field.type))
        else:
            arrays.append(pa.array(by_name[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=NUMBERED_SCHEMA)


def _utc_days(ts_us: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of each instant's calendar day in UTC (what `ts.astimezone(UTC).date()` gives)."""
    return (ts_us // (86_400 * _US_PER_S)).astype(np.int32)


# --- the rules, for the common forms -----------------------------------------------------------


def _text(value: str | None) -> str | None:
    """parse_line's blank rule (absent, null or only whitespace is None), without building a stripped copy."""
    return value if value and not value.isspace() else None


def _fast_row(env: _Envelope, fallback_key: str | None, latest_us: int, endpoints: dict[str, bool]) -> tuple:
    body = env.response
    if body is None:
        raise _Declined
    endpoint = _text(env.endpoint)
    status = env.status
    if status is not None and not 100 <= status <= 599:
        raise _Declined
    latency = env.latency_ms
    if latency is not None and not 0 <= latency < MAX_TOKENS:
        raise _Declined

    obj, event = body.object, body.type
    carried: _Body | _Carried = body
    if obj == "chat.completion":
        shape = "chat_completion"
    elif obj == "chat.completion.chunk":
        shape = "chat_completion_chunk"
    elif obj == "response":
        shape = "response"
    elif event == "response.completed":
        shape = "response_completed"
        if not isinstance(body.response, _Carried):
            raise _Declined
        carried = body.response
    elif event == "message":
        shape = "anthropic_message"
    elif event == "message_delta":
        shape = "anthropic_message_delta"
    elif event == "message_start" or body.error is not UNSET:
        raise _Declined
    elif obj is None and body.choices is not None:
        choices = body.choices
        chunk = not choices or any(c.delta is not UNSET for c in choices)
        shape = "chat_completion_chunk" if chunk else "chat_completion"
    elif _is_task(body, endpoint, endpoints):
        shape = "task"
    else:
        raise _Declined

    response_id = _task_id(body) if shape == "task" else None if shape == "anthropic_message_delta" else _id(carried.id)
    key_name = _text(env.key_name) or fallback_key or None
    request_id = _text(env.request_id) or response_id
    model = _text(env.model) or _text(carried.model)
    if key_name is None or request_id is None or model is None:
        raise _Declined
    ts_us = _timestamp_us(env.ts, carried)
    if not _EARLIEST_US <= ts_us <= latest_us:
        raise _Declined

    usage = carried.usage
    if usage is not UNSET and memoryview(usage) == b"null":
        usage = UNSET
    raw_usage = None if usage is UNSET else _compact(usage, indent=-1).decode()
    usage_status, tokens = _usage(shape, usage)
    if shape[0] == "r" and carried.tool_usage is not None and carried.tool_usage.web_search is not None:
        searches = carried.tool_usage.web_search.num_requests
        if searches is not None:
            if not 0 <= searches < MAX_TOKENS:
                raise _Declined
            if usage_status == "known":
                tokens = (*tokens[:-2], searches, tokens[-1])
    return (request_id, ts_us, key_name, model, endpoint, status, _text(env.source_ip), latency, shape,
            usage_status, *tokens, response_id, raw_usage)


def _first(raw: Raw) -> bytes:
    """The first byte of a raw JSON value: which type it is (`{`, `[`, `"`, ...)."""
    return memoryview(raw)[:1].tobytes()


def _id(value: str | int | None) -> str | None:
    if type(value) is int:
        return str(value)
    return value if value and not value.isspace() else None


def _is_task(body: _Body, endpoint: str | None, endpoints: dict[str, bool]) -> bool:
    if endpoint is not None:
        known = endpoints.get(endpoint)
        if known is None:
            known = endpoints[endpoint] = endpoint_is_task(endpoint)
        if known:
            return True
    if body.task_id is not UNSET:
        return True
    data = body.data
    if data is not UNSET and _first(data) == b"{" and _decode_data(data).task_id is not UNSET:
        return True
    return body.code is not UNSET and body.result is not UNSET


def _task_id(body: _Body) -> str | None:
    """A task's id: task_id, data.task_id, result, id, or data when it is a string (parse_line's order)."""
    data = body.data
    first = _first(data) if data is not UNSET else b""
    inner = _decode_data(data).task_id if first == b"{" else UNSET
    for value in (body.task_id, inner, body.result, body.id):
        if value is not UNSET and (found := _id(value)) is not None:
            return found
    return _id(_decode_str(data)) if first == b'"' else None


def _timestamp_us(ts: str | int | None, carried: _Body | _Carried) -> int:
    if ts is None:
        ts = carried.created if carried.created is not None else carried.created_at
        if ts is None:
            raise _Declined
    if type(ts) is float:  # 1772611588.0 (a float unix time with a fraction: parse_line decides)
        if not ts.is_integer():
            raise _Declined
        ts = int(ts)
    if type(ts) is int:
        return ts * _US_PER_S
    if len(ts) not in _ISO_LENGTHS or ts[10] != "T":  # other spellings: parse_line decides
        raise _Declined
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        raise _Declined from None
    if parsed.tzinfo is None:
        raise _Declined
    return _us(parsed)


_NO_TOKENS: Final = (None,) * 13


def _usage(shape: str, usage: Raw | UnsetType) -> tuple[str, tuple]:
    if shape == "task":
        return "per_call", _NO_TOKENS
    if usage is UNSET:
        return "unknown", _NO_TOKENS
    if _first(usage) != b"{":
        raise _Declined
    u = _decode_usage(usage)
    write_5m = write_1h = audio = image = web_search = web_fetch = None
    if shape[0] != "a":  # chat_* and response*: OpenAI semantics
        chat = shape[0] == "c"
        details, out = (u.prompt_tokens_details, u.completion_tokens_details) if chat else (
            u.input_tokens_details, u.output_tokens_details)
        prompt, completion = (u.prompt_tokens, u.completion_tokens) if chat else (u.input_tokens, u.output_tokens)
        cached = cache_write = None
        if details is not None:
            cached, audio, image = details.cached_tokens, details.audio_tokens, details.image_tokens
            cache_write = _larger(details.cache_write_tokens, details.cached_creation_tokens)
        if chat and (u.prompt_cache_hit_tokens is not None or u.prompt_cache_miss_tokens is not None):
            hits, misses = u.prompt_cache_hit_tokens, u.prompt_cache_miss_tokens
            if misses is not None and prompt is not None:
                if misses > prompt or (hits is not None and hits + misses != prompt):
                    raise _Declined
                hits = prompt - misses
            cached = _larger(cached, hits)
        reasoning = out.reasoning_tokens if out is not None else None
    else:
        cache_write, cached, completion = u.cache_creation_input_tokens, u.cache_read_input_tokens, u.output_tokens
        if u.cache_creation is not None:
            write_5m, write_1h = u.cache_creation.ephemeral_5m_input_tokens, u.cache_creation.ephemeral_1h_input_tokens
            if cache_write is None:
                cache_write = (write_5m or 0) + (write_1h or 0)
        if u.server_tool_use is not None:
            web_search, web_fetch = u.server_tool_use.web_search_requests, u.server_tool_use.web_fetch_requests
        out = u.output_tokens_details
        reasoning = out.thinking_tokens if out is not None else None
        prompt = None if u.input_tokens is None else u.input_tokens + (cache_write or 0) + (cached or 0)
        if u.input_tokens is not None and not 0 <= u.input_tokens < MAX_TOKENS:
            raise _Declined
    for value in (prompt, completion, u.total_tokens, cached, cache_write, reasoning, write_5m, write_1h, audio,
                  image, web_search, web_fetch, u.prompt_cache_hit_tokens, u.prompt_cache_miss_tokens):
        if value is not None and not 0 <= value < MAX_TOKENS:
            raise _Declined
    if prompt is None or completion is None:
        return "unknown", _NO_TOKENS
    cached, cache_write, reasoning = cached or 0, cache_write or 0, reasoning or 0
    total = prompt + completion
    if ((u.total_tokens is not None and u.total_tokens != total) or cached + cache_write > prompt
            or reasoning > completion or (write_5m or 0) + (write_1h or 0) > cache_write
            or (audio or 0) + (image or 0) > prompt):
        raise _Declined
    return "known", (prompt, completion, total, cached, cache_write, reasoning, prompt - cached - cache_write,
                     write_5m, write_1h, audio, image, web_search, web_fetch)


def _larger(a: int | None, b: int | None) -> int | None:
    """normalize._larger: one count under two names, the larger."""
    if a is None:
        return b
    return a if b is None or a >= b else b
