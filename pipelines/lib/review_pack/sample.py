"""A deterministic sample of the raw response objects behind the month's requests.

Which requests: per usage shape (chat completion, stream chunk, Responses object, Anthropic
message, task reply, ...), the first `per_shape` request_ids of the month in SHA-256 order. The
order depends only on the ids, so the same month always gives the same sample, whatever order the
files arrived in, and every shape the month holds is shown.

Where from: the normalised rows in `lake/request_logs/utc_date=D/requests.parquet` (the UTC days that
cover the month; a row's reporting day is `reporting_day(ts)`, sql/staging/reporting_day.sql) name the inbox
file and 1-based line each request landed from; the original line is read back from the inbox and
its `response` object is shown as logged, next to the token counts the pipeline took from it.
A file rotated out of the inbox, or rewritten since, is said so in the line, never guessed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from pipelines.lib import lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.days import window_days
from pipelines.lib.redact import redact
from pipelines.lib.review_pack.period import Period
from pipelines.lib.warehouse import bind_reporting_day, run_query

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens",
                "reasoning_tokens")
COLUMNS = ("request_id", "usage_date", "key_name", "model", "endpoint", "usage_shape", "usage_status",
           *TOKEN_FIELDS, "raw_usage_json", "file", "line_no")


def sample_responses(lake_root: Path, inbox: Path, period: Period, per_shape: int = 3) -> list[dict[str, Any]]:
    """The sample as JSON-ready records, ordered by usage shape, then by hash of the request id."""
    chosen = _choose(_month_rows(lake_root, period), per_shape)
    lines = _read_lines(inbox, {(r["file"], r["line_no"]) for r in chosen})
    return [_record(row, lines.get((row["file"], row["line_no"]))) for row in chosen]


def sample_jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _month_rows(lake_root: Path, period: Period) -> list[dict[str, Any]]:
    days = window_days(*lake.utc_days_covering(period.first_day, period.last_day, period.timezone))
    files = lake_datasets.REQUEST_LOGS.files(lake_root, days) if lake_root.is_dir() else []
    if not files:
        return []
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        bind_reporting_day(con, period.timezone)
        cursor = run_query(con, "pack/sample_rows", {"files": files, "first": period.first_day,
                                                     "last": period.last_day})
        if tuple(d[0] for d in cursor.description) != COLUMNS:
            raise RuntimeError("sql/reports/pack/sample_rows.sql does not select sample.COLUMNS in order")
        return [dict(zip(COLUMNS, values)) for values in cursor.fetchall()]


def _choose(rows: list[dict[str, Any]], per_shape: int) -> list[dict[str, Any]]:
    by_shape: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
    for row in rows:
        by_shape[row["usage_shape"]].append((_hash(row["request_id"]), row["request_id"], row))
    chosen = []
    for shape in sorted(by_shape):
        chosen.extend(row for _, _, row in sorted(by_shape[shape], key=lambda t: t[:2])[:per_shape])
    return chosen


def _hash(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()


def _read_lines(inbox: Path, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], bytes | str]:
    """(file, line) → the line's bytes, or a reason string when it cannot be read."""
    by_file: dict[str, set[int]] = defaultdict(set)
    for file, line_no in wanted:
        by_file[file].add(line_no)
    found: dict[tuple[str, int], bytes | str] = {}
    for file, numbers in sorted(by_file.items()):
        path = inbox / file
        if not path.is_file():
            found.update({(file, n): "the inbox file is no longer in the inbox" for n in numbers})
            continue
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        last = max(numbers)
        try:
            with opener(path, "rb") as handle:
                for line_no, line in enumerate(handle, start=1):
                    if line_no in numbers:
                        found[(file, line_no)] = line
                    if line_no >= last:
                        break
        except (OSError, EOFError, zlib.error):
            pass  # lines before the damage were kept; the rest are reported missing below
        for n in numbers:
            found.setdefault((file, n), "the inbox file ends before this line")
    return found


def _record(row: dict[str, Any], line: bytes | str | None) -> dict[str, Any]:
    response, note = None, None
    if isinstance(line, bytes):
        try:
            envelope = json.loads(line)
        except ValueError:
            envelope = None
        # the id is the envelope's request_id or the response's own id: either way it is in the line
        if isinstance(envelope, dict) and row["request_id"] in line.decode("utf-8", "replace"):
            response = _redacted(envelope.get("response"))
        else:
            note = "the inbox line no longer holds this request (the file was rewritten)"
    else:
        note = line or "the inbox line could not be read"
    record: dict[str, Any] = {
        "usage_shape": row["usage_shape"],
        "request_id": row["request_id"],
        "usage_date": row["usage_date"].isoformat(),
        "key_name": row["key_name"],
        "model": row["model"],
        "endpoint": row["endpoint"],
        "usage_status": row["usage_status"],
        "tokens": {name: row[name] for name in TOKEN_FIELDS},
        "raw_usage": json.loads(row["raw_usage_json"]) if row["raw_usage_json"] else None,
        "source": {"file": row["file"], "line": row["line_no"]},
        "response": response,
    }
    if note:
        record["response_unavailable"] = note
    return record


def _redacted(value: Any) -> Any:
    """The object with anything shaped like a credential masked in its strings."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value
