"""The compiled scanner (`request_logs/_scan.c`) against the reference rules, on the lines it must decline.

Every check goes through `assert_same_as_reference_in_a_block`: `normalise_block` on the lines,
outcome by outcome against `parse_line`. The scanner takes a line only when it is sure; these lines
are the ones where a lenient JSON reader or a careless rule would accept differently (duplicated
keys, escapes, NaN, trailing commas, odd Unicode, calendar edges), as written and as generated.
"""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.lib.request_logs import Reject, batch
from pipelines.lib.request_logs.reader import read_file_batches
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.traffic import generate_traffic
from oracles.request_logs import read_file
from test_request_logs import CHAT_COMPLETION, SHAPES, Usage, envelope, render, usages
from test_request_logs_batch import assert_same_as_reference_in_a_block, lines, normalised_usage, reference_row

CHAT = json.loads(CHAT_COMPLETION)
GOOD = envelope(CHAT, request_id="r1", ts="2026-03-20T10:00:00Z", key_name="team-a", model="gpt-4o",
                endpoint="/v1/chat/completions", status=200, source_ip="203.0.113.9", latency_ms=1200)


def test_the_compiled_scanner_is_built() -> None:
    assert batch._scan is not None, "pipelines/lib/request_logs/_scan.c is not built: run `make` (pip install -e .)"


def line_with(text: str, old: str, new: str) -> bytes:
    assert old in text, old
    return text.replace(old, new, 1).encode("utf-8", errors="surrogatepass")


# Each is a small change to a good line; the reason it is here is the comment beside it.
EDGE_CASES = [
    GOOD.encode(),
    line_with(GOOD, '"request_id"', '"request_id": "first", "request_id"'),  # duplicated key: Python keeps the last
    line_with(GOOD, '"model": "gpt-4o"', '"model": "gpt-4o", "model": "other"'),
    line_with(GOOD, '"prompt_tokens"', '"prompt_tokens": 1, "prompt_tokens"'),  # ... in usage
    line_with(GOOD, '"cached_tokens"', '"cached_tokens": 9999999, "cached_tokens"'),  # ... in its details
    line_with(GOOD, '"object"', '"object": "response", "object"'),  # ... in the body
    line_with(GOOD, '"usage": {', '"usage": {"prompt_tokens_details": {"cached_creation_tokens": 3}}, "usage": {'),  # ... an object
    line_with(GOOD, '"model": "gpt-4o"', '"model": "模型"'),  # non-ASCII only, not whitespace
    line_with(GOOD, '"team-a"', '"é"'),
    line_with(GOOD, '"prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}', '"prompt_cache_hit_tokens": 7'),
    line_with(GOOD, '"prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}',
              '"prompt_tokens_details": {"cached_tokens": null}, "prompt_cache_hit_tokens": 7'),
    line_with(GOOD, '"model": "gpt-4o"', '"mod\\u0065l": "gpt-4o"'),  # an escaped key
    line_with(GOOD, '"gpt-4o"', '"gpt-4\\u006f"'),  # an escaped value
    line_with(GOOD, '"chat.completion"', '"chat\\u002ecompletion"'),
    line_with(GOOD, '"r1"', '"r\\ud800"'),  # an unpaired surrogate
    line_with(GOOD, '"r1"', '" \\u3000"'),  # Unicode whitespace only: blank
    line_with(GOOD, '"r1"', '"\u3000"'),
    line_with(GOOD, '"r1"', '"\u00a0r"'),
    line_with(GOOD, '"team-a"', '"   "'),
    line_with(GOOD, '"team-a"', '""'),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": -0, "x": '),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": 1.0, "x": '),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": 1e2, "x": '),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": 99999999999999999999, "x": '),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": 9007199254740992, "x": '),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": true, "x": '),
    line_with(GOOD, '"prompt_tokens": ', '"prompt_tokens": "19", "x": '),
    line_with(GOOD, '"status": 200', '"status": 200.0'),
    line_with(GOOD, '"status": 200', '"status": true'),
    line_with(GOOD, '"latency_ms": 1200', '"latency_ms": 1200.4'),
    line_with(GOOD, '"latency_ms": 1200', '"latency_ms": NaN'),  # not JSON
    line_with(GOOD, '"latency_ms": 1200', '"latency_ms": Infinity'),
    line_with(GOOD, '"logprobs": null', '"logprobs": NaN'),  # ... even where no rule looks
    line_with(GOOD, '"logprobs": null', '"logprobs": [1, 2, ]'),  # a trailing comma
    line_with(GOOD, '"logprobs": null', '"logprobs": {"a": 1, }'),
    line_with(GOOD, '"logprobs": null', '"logprobs": 01'),
    line_with(GOOD, '"logprobs": null', '"logprobs": .5'),
    line_with(GOOD, '"logprobs": null', '"logprobs": "tab\there"'),  # a raw control character
    line_with(GOOD, '"logprobs": null', '"logprobs": ' + "[" * 70 + "]" * 70),  # deep nesting
    line_with(GOOD, '"logprobs": null', '"logprobs": ' + "[" * 5000 + "]" * 5000),
    line_with(GOOD, '"logprobs": null', '"logprobs": "\\x"'),  # a bad escape
    line_with(GOOD, '"logprobs": null', '"logprobs": "\\u12"'),
    line_with(GOOD, '"logprobs": null', '"logprobs": 1e400'),  # a float Python reads as inf
    GOOD.encode() + b" x",  # extra data
    GOOD.encode() + b" \r",  # trailing whitespace
    b" \t" + GOOD.encode(),
    b"\xef\xbb\xbf" + GOOD.encode(),  # a byte-order mark: parse_line removes it
    GOOD.encode().replace(b"gpt-4o", b"gpt-4o\xc3\xa9", 1),  # UTF-8 in a value
    GOOD.encode().replace(b"gpt-4o", b"gpt\xc0\xaf", 1),  # overlong UTF-8
    GOOD.encode().replace(b"gpt-4o", b"gpt\xed\xa0\x80", 1),  # a surrogate encoded in UTF-8
    GOOD.encode().replace(b"gpt-4o", b"gpt\xf4\x90\x80\x80", 1),  # beyond U+10FFFF
    GOOD.encode().replace(b"gpt-4o", b"gpt\xe2\x82", 1),  # truncated
    *(line_with(GOOD, "2026-03-20T10:00:00Z", ts) for ts in [
        "2024-02-29T23:59:59Z", "2026-02-29T10:00:00Z", "2026-03-20T10:00:60Z", "2026-03-20T24:00:00Z",
        "2026-03-20T10:00:00.123456-23:59", "2026-03-20T10:00:00+24:00", "2026-03-20T10:00:00.5Z",
        "2026-03-20T10:00:00.1234567Z", "2026-03-20t10:00:00Z", "2026-03-20T10:00:00z", "2000-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999999Z", "2026-04-02T12:00:00Z", "2026-04-02T12:00:00.000001Z", "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z", "2026-03-00T00:00:00Z", "+2026-03-20T10:00:00Z", "2026-03-20T10:00:00+08:30"]),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1774000800"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1774000800.0"),  # an integral float: the SDK's created_at
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1774000800.000"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1774000800.01"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1774000800.0e0"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "17740008e2"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "-1.0"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "99999999999999.0"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1774000800.5"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "-5"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "946684800"),  # exactly 2000-01-01
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "946684799"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1775131200"),  # exactly NOW + 1 day
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "1775131201"),
    line_with(GOOD, '"2026-03-20T10:00:00Z"', "99999999999999"),
    line_with(GOOD, '"/v1/chat/completions"', '"/\u212aling/v1/video"'),  # the Kelvin sign lowercases to k
    line_with(GOOD, '"/v1/chat/completions"', '"https://x/MJ/submit?y=/suno"'),
    line_with(GOOD, '"/v1/chat/completions"', '"/v1/chat?mode=://images"'),
]


def task_line(endpoint: str, body: dict) -> bytes:
    return envelope(body, ts="2026-03-20T10:00:00Z", endpoint=endpoint, model="mj").encode()


TASK_CASES = [
    task_line("/mj/submit/imagine", {"code": 1, "description": "ok", "result": "17122"}),
    task_line("/mj/submit/imagine", {"code": 1, "result": 17122}),
    task_line("/mj/submit/imagine", {"code": 1, "result": -0}),
    task_line("/mj/submit/imagine", {"code": 1, "result": 2**70}),
    task_line("/mj/submit/imagine", {"code": 1, "result": True, "id": "t-1"}),
    task_line("/mj/submit/imagine", {"code": 1, "result": 1.5, "id": "t-1"}),
    task_line("/mj/submit/imagine", {"code": 1, "result": "  ", "id": 7}),
    task_line("/suno/submit/music", {"code": "success", "data": "abc-1"}),
    task_line("/suno/submit/music", {"code": "success", "data": " "}),
    task_line("/v1/videos", {"data": {"task_id": "k-7", "task_id2": 1}}),
    task_line("/v1/other", {"data": {"task_id": None}, "id": "x"}),
    task_line("/v1/other", {"task_id": None, "id": "x"}),
    task_line("/v1/other", {"code": 1, "result": None, "id": "x"}),
    task_line("/v1/other", {"id": "x"}),  # not a task: unknown_shape
    task_line("/v1/images/generations", {"created": 1774000800, "data": [{"url": "u"}], "usage": {"total_tokens": 3}}),
    task_line("/v1/images/generations", {"data": [], "usage": [1, 2]}),
    task_line("/v1/images/generations", {"data": [], "error": None}),
    task_line("/v1/images/generations", {"data": [], "choices": []}),
]


def test_edge_cases_give_the_reference_outcome() -> None:
    for key in ("team-a", None, ""):
        assert_same_as_reference_in_a_block(EDGE_CASES + TASK_CASES, key=key)
    # and the scanner did take the plain ones (not everything is declined)
    assert assert_same_as_reference_in_a_block([GOOD.encode(), *TASK_CASES[:3]], key="k") == 4


def test_every_shape_is_taken_by_the_scanner() -> None:
    usage = Usage(uncached=10, cached=2, cache_write=1, visible=4, reasoning=1)
    rendered = [envelope(render(shape, usage, rich=rich), ts="2026-03-20T10:00:00.123+08:00",
                         request_id=f"r-{shape}", model="m") for shape in SHAPES for rich in (False, True)]
    taken = assert_same_as_reference_in_a_block([r.encode() for r in rendered], key="k")
    assert taken == 2 * len(SHAPES)


# --- generated lines, then disturbed as text ------------------------------------------------


def disturb(text: str, rng: random.Random) -> str:
    """One textual change a JSON reader could get wrong, at a random place."""
    keys = [k for k in ("request_id", "model", "key_name", "object", "type", "usage", "prompt_tokens", "input_tokens",
                        "output_tokens", "cached_tokens", "id", "created", "ts", "status", "task_id",
                        "cache_write_tokens", "cached_creation_tokens", "prompt_cache_hit_tokens",
                        "prompt_cache_miss_tokens", "audio_tokens", "image_tokens", "cache_creation",
                        "ephemeral_1h_input_tokens", "server_tool_use", "web_search_requests", "thinking_tokens",
                        "tool_usage", "web_search", "num_requests", "created_at") if f'"{k}"' in text]
    choice = rng.randrange(9)
    if choice == 0 and keys:  # duplicate a key in its own object
        key = rng.choice(keys)
        return text.replace(f'"{key}":', f'"{key}": {rng.choice(["1", "null", chr(34) + "v" + chr(34)])}, "{key}":', 1)
    if choice == 1 and keys:  # escape a key
        key = rng.choice(keys)
        return text.replace(f'"{key}"', '"' + key[0] + "".join(f"\\u{ord(c):04x}" for c in key[1:2]) + key[2:] + '"', 1)
    if choice == 2:  # whitespace everywhere
        return text.replace(":", " :\t", rng.randrange(1, 20)).replace(",", " ,\r ", rng.randrange(1, 20))
    if choice == 3:  # a trailing comma
        return text.replace("}", ",}", 1) if rng.random() < 0.5 else text.replace("]", ",]", 1)
    if choice == 4:  # a number becomes NaN or a float
        return text.replace("0", rng.choice(["NaN", "0.0", "0e0", "-0"]), 1)
    if choice == 5:  # an escape inside a value
        return text.replace('"gpt', '"\\u0067pt', 1).replace('"team', '"t\\u0065am', 1)
    if choice == 6:  # non-ASCII in a value
        return text.replace('"gpt', '"\u00e9gpt', 1).replace('"r', '"\u3000', 1)
    if choice == 7:  # cut the line short
        return text[: rng.randrange(len(text))]
    return text


@settings(max_examples=400, deadline=None)
@given(batch=st.lists(lines(), min_size=1, max_size=6), seed=st.integers(0, 2**32), key=st.sampled_from(["team-a", None]))
def test_disturbed_lines_match_the_reference(batch: list[bytes], seed: int, key: str | None) -> None:
    rng = random.Random(seed)
    disturbed = [disturb(line.decode(), rng).encode("utf-8", errors="surrogatepass") for line in batch]
    assert_same_as_reference_in_a_block([d for d in disturbed if b"\n" not in d], key=key)


@settings(max_examples=200, deadline=None)
@given(usage=usages, shape=st.sampled_from(SHAPES), total=st.booleans(), details=st.booleans(), rich=st.booleans())
def test_generated_usage_of_every_shape(usage, shape: str, total: bool, details: bool, rich: bool) -> None:
    body = render(shape, usage, total=total, details=details, rich=rich)
    line = envelope(body, ts="2026-03-20T10:00:00Z", request_id="r").encode()
    assert_same_as_reference_in_a_block([line], key="k")


# --- the simulator's traffic, through the reader -------------------------------------------------


def test_the_simulator_traffic_goes_the_compiled_way(tmp_path: Path) -> None:
    from test_request_logs_batch import NOW

    traffic = generate_traffic(seed=13, start=date(2026, 3, 1), days=3, requests_per_day=300)
    write_inbox(traffic, tmp_path)
    lines = compiled = 0
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        expected = list(read_file(path, inbox_root=tmp_path, now=NOW))
        batches = list(read_file_batches(path, inbox_root=tmp_path, now=NOW, block_bytes=4096))
        records = [normalised_usage(r) for b in batches for r in b.records.to_pylist()]
        assert records == [reference_row(e.outcome, e.line_no) for e in expected
                           if e.outcome is not None and not isinstance(e.outcome, Reject)]
        assert [(n, r) for b in batches for n, r, _ in b.rejects] == [
            (e.line_no, e.outcome) for e in expected if isinstance(e.outcome, Reject)]
        lines += len(expected)
        compiled += sum(b.compiled for b in batches)
    assert lines > 700
    assert compiled >= 0.95 * lines, f"the compiled scanner took only {compiled} of {lines} lines"
