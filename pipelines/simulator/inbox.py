"""Client-captured request logs, as the applications behind each key would have written them.

`write_inbox()` writes one file per key and reporting day, `inbox/<key_name>/<YYYY-MM-DD>.<ext>`,
with the extension rotating by calendar day through `.jsonl`, `.jsonl.gz` and `.ndjson`. Each line
is an envelope of README.md "Request logs" around a faithful response body
(`response_body()`), one per usage shape, modelled on the published examples (copies in tests/fixtures/cometapi):

- `chat_completion`: a `chat.completion` (glm-4.6, a non-OpenAI model, omits the `*_details`);
- `chat_completion_chunk`: the stream's last chunk (`choices: []` plus usage); an interrupted
  stream is logged with its last content chunk instead (`usage: null`, no final usage);
- `response` / `response_completed`: a Responses API object / its `response.completed` event;
- `anthropic_message` / `anthropic_message_delta`: an Anthropic message / its final
  `message_delta` event, with the full final usage (input_tokens excludes cache reads and writes);
- `task`: the gateway's reply to a task submit (Midjourney, Suno, Kling), without token usage,
  naming the task by the public id its later refund or correction names (`other.task_id`).

Only consume rows that a client logged appear: never the gateway's corrections, refunds, errors,
nor the planted unlogged calls. A deterministic minority of lines exercises the contract's
fallbacks by leaving out `key_name` (the folder names the key), `model` (the response carries one,
often a dated snapshot such as `gpt-4o-2024-08-06`) or `ts` (the response has `created` /
`created_at`). Files are written atomically, and identical content gives identical bytes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from pipelines.simulator.traffic import LOG_CONSUME, SimRequest, Traffic

EXTENSIONS = (".jsonl", ".jsonl.gz", ".ndjson")
_REPLIES = ("Four", "Sure, here is the summary.", "Done.", "The answer is 42.", "Hello!", "I can help with that.")

# Fallback exercise: shapes whose body carries a top-level model / created(_at).
_HAS_MODEL = {"chat_completion", "chat_completion_chunk", "response", "anthropic_message"}
_HAS_CREATED = {"chat_completion", "chat_completion_chunk", "response"}


def extension_for(day: date) -> str:
    """The rotating file extension of a day (by calendar day, so it does not depend on the window)."""
    return EXTENSIONS[day.toordinal() % len(EXTENSIONS)]


def write_inbox(traffic: Traffic, inbox_dir: Path, days: Iterable[date] | None = None) -> dict:
    """Write the client logs of `days` (default: the whole window). Returns counts.

    `{"files", "lines", "unchanged_files", "by_shape": {usage_shape: lines}, "fallbacks": {...}}`;
    `unchanged_files` counts files that already held exactly these bytes and were left alone.
    """
    inbox_dir = Path(inbox_dir)
    counts = {"files": 0, "lines": 0, "unchanged_files": 0, "by_shape": {}, "fallbacks": {}}
    for day in traffic.dates if days is None else days:
        by_key: dict[str, list[str]] = {}
        for req in traffic.requests_for_day(day):
            if req.log_type != LOG_CONSUME or not req.client_logged or req.correction_of:
                continue
            envelope = envelope_for(req)
            for name in ("key_name", "model", "ts"):
                if name not in envelope:
                    counts["fallbacks"][name] = counts["fallbacks"].get(name, 0) + 1
            by_key.setdefault(req.key_name, []).append(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False))
            counts["by_shape"][req.usage_shape] = counts["by_shape"].get(req.usage_shape, 0) + 1
        for key_name, lines in by_key.items():
            path = inbox_dir / key_name / f"{day.isoformat()}{extension_for(day)}"
            data = ("\n".join(lines) + "\n").encode("utf-8")
            if path.suffix == ".gz":
                data = gzip.compress(data, compresslevel=6, mtime=0)
            changed = _write_atomic(path, data)
            counts["files"] += 1
            counts["unchanged_files"] += not changed
            counts["lines"] += len(lines)
    return counts


def _write_atomic(path: Path, data: bytes) -> bool:
    """Replace `path` with `data` via a temp file in the same folder; False if it already held them."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def envelope_for(req: SimRequest) -> dict:
    """The inbox line of a client-logged request, with the deterministic fallback omissions."""
    h = _hash_int(req.request_id, "envelope")
    envelope = {
        "request_id": req.request_id,
        "ts": req.ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key_name": req.key_name,
        "model": req.model,
        "endpoint": req.endpoint,
        "status": 200,
        "source_ip": req.source_ip,
        "latency_ms": req.latency_ms,
        "response": response_body(req),
    }
    if h % 23 == 3:
        del envelope["key_name"]
    if h % 29 == 7 and req.usage_shape in _HAS_MODEL:
        del envelope["model"]
    if h % 31 == 11 and req.usage_shape in _HAS_CREATED:
        del envelope["ts"]
    return envelope


def response_body(req: SimRequest) -> dict:
    """The body (or final stream chunk/event) the client received for `req`."""
    builder = {
        "chat_completion": _chat_completion,
        "chat_completion_chunk": _chat_chunk,
        "response": _responses_object,
        "response_completed": lambda r: {
            "type": "response.completed",
            "sequence_number": 8 + _hash_int(r.request_id, "seq") % 40,
            "response": _responses_object(r),
        },
        "anthropic_message": _anthropic_message,
        "anthropic_message_delta": _anthropic_delta,
        "task": _task_reply,
    }[req.usage_shape]
    return builder(req)


# --- OpenAI chat ------------------------------------------------------------------------------
def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0, details: bool = True) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _openai_details(req: SimRequest) -> bool:
    return not req.model.startswith("glm-")  # non-OpenAI upstreams omit the *_details objects


def _chat_completion(req: SimRequest) -> dict:
    body = {
        "id": _chatcmpl_id(req),
        "object": "chat.completion",
        "created": _created(req),
        "model": req.response_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _reply(req), "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": chat_usage(
            req.prompt_tokens, req.completion_tokens, req.cached_tokens, req.reasoning_tokens, _openai_details(req)
        ),
    }
    if _openai_details(req):
        body["service_tier"] = "default"
        body["system_fingerprint"] = "fp_" + _hex(req.request_id, "fp", 10)
    return body


def _chat_chunk(req: SimRequest) -> dict:
    chunk = {
        "id": _chatcmpl_id(req),
        "object": "chat.completion.chunk",
        "created": _created(req),
        "model": req.response_model,
    }
    if not req.usage_known_to_client:  # the stream broke: the last chunk that arrived
        chunk["choices"] = [{"index": 0, "delta": {"content": _reply(req)}, "finish_reason": None}]
        chunk["usage"] = None
        return chunk
    chunk["choices"] = []
    chunk["usage"] = chat_usage(
        req.prompt_tokens, req.completion_tokens, req.cached_tokens, req.reasoning_tokens, _openai_details(req)
    )
    return chunk


# --- OpenAI Responses -------------------------------------------------------------------------
def _responses_object(req: SimRequest) -> dict:
    created = _created(req)
    output = []
    if req.reasoning_tokens:
        output.append({"id": "rs_" + _hex(req.request_id, "rs", 48), "type": "reasoning", "summary": []})
    output.append(
        {
            "id": "msg_" + _hex(req.request_id, "msg", 48),
            "type": "message",
            "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "text": _reply(req)}],
            "role": "assistant",
        }
    )
    return {
        "id": "resp_" + _hex(req.request_id, "resp", 48),
        "object": "response",
        "created_at": created,
        "status": "completed",
        "completed_at": created + max(1, req.latency_ms // 1000),
        "model": req.response_model,
        "output": output,
        "usage": {
            "input_tokens": req.prompt_tokens,
            "input_tokens_details": {"cached_tokens": req.cached_tokens},
            "output_tokens": req.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": req.reasoning_tokens},
            "total_tokens": req.prompt_tokens + req.completion_tokens,
        },
    }


# --- Anthropic Messages -----------------------------------------------------------------------
def anthropic_usage(req: SimRequest) -> dict:
    """Anthropic semantics: input_tokens excludes cache reads and cache writes."""
    return {
        "input_tokens": req.uncached_prompt_tokens,
        "cache_creation_input_tokens": req.cache_write_tokens,
        "cache_read_input_tokens": req.cached_tokens,
        "output_tokens": req.completion_tokens,
    }


def _anthropic_message(req: SimRequest) -> dict:
    return {
        "id": "msg_01" + _b62(req.request_id, "msg", 22),
        "type": "message",
        "role": "assistant",
        "model": req.response_model,
        "content": [{"type": "text", "text": _reply(req)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(req),
    }


def _anthropic_delta(req: SimRequest) -> dict:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": anthropic_usage(req),
    }


# --- per-call task services -------------------------------------------------------------------
def _task_reply(req: SimRequest) -> dict:
    """The gateway's answer to a task submit, which names the task by its public id (`task_…`,
    upstream model/task.go GenerateTaskID): the id its later refund or correction names in
    `other.task_id`. Upstream's adaptors put it where the provider's own reply has its task id:
    Suno's `data` (relay/channel/task/suno/adaptor.go), an OpenAI video object's `id` and `task_id`
    for video models such as Kling (relay/channel/task/*/adaptor.go DoResponse, dto NewOpenAIVideo);
    the simulator bills Midjourney through the same task billing, so its `result` carries it too."""
    task_id = req.public_task_id
    if req.model == "mj_imagine":
        return {
            "code": 1,
            "description": "Submit success",
            "result": task_id,
            "properties": {
                "discordChannelId": str(1_100_000_000_000_000_000 + _hash_int(req.request_id, "ch") % 10**17)
            },
        }
    if req.model == "suno_music":
        return {"code": "success", "message": "", "data": task_id}
    return {
        "id": task_id,
        "task_id": task_id,
        "object": "video",
        "model": req.model,
        "status": "queued",
        "progress": 0,
        "created_at": int(req.ts.timestamp()),
    }


# --- deterministic details ----------------------------------------------------------------------
def _created(req: SimRequest) -> int:
    return int(req.ts.timestamp())


def _reply(req: SimRequest) -> str:
    return _REPLIES[_hash_int(req.request_id, "reply") % len(_REPLIES)]


def _digest(request_id: str, salt: str) -> bytes:
    return hashlib.blake2b(f"{salt}:{request_id}".encode(), digest_size=32).digest()


def _hash_int(request_id: str, salt: str) -> int:
    return int.from_bytes(_digest(request_id, salt)[:8], "big")


def _hex(request_id: str, salt: str, length: int) -> str:
    return _digest(request_id, salt).hex()[:length]


def _b62(request_id: str, salt: str, length: int) -> str:
    """Letters and digits only, like OpenAI's and Anthropic's ids."""
    return base64.b64encode(_digest(request_id, salt), altchars=b"xZ").decode()[:length]


def _chatcmpl_id(req: SimRequest) -> str:
    return "chatcmpl-" + _b62(req.request_id, "chatcmpl", 29)
