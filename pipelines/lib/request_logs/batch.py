"""Normalise a block of inbox lines at once: the compiled scanner for the lines it is sure of, `parse_line` for the rest.

`normalize.parse_line` is the definition of every rule and the test oracle. Applied line by line it
costs ~15 us a line (most of it `json.loads` building every object of the body, the chat text
included), too slow for inboxes of millions of lines. So `normalise_block` hands each block (whole
lines, as `reader.numbered_blocks` reads them) to the compiled scanner `_scan.c` (built by
`pip install`, see hatch_build.py) first: a strict JSON parser that records only the fields the rules
read, applies the same rules, and writes Arrow columns directly. Every line it is not sure of (its
header lists why it declines) goes to `parse_line`, so every reject comes from `parse_line`, with its
reason and detail. Without the compiled module every line takes `parse_line`: the same outcomes, slower.

One accelerator, one fallback. The scanner may decline anything, but must never accept differently:
for every line it accepts, the record equals `parse_line`'s. A rule made stricter in `parse_line` must
be made so in the scanner too, or the scanner must decline what the rule looks at: its reject case
goes into tests/lib/test_request_logs.py's REJECT_CASES, which tests/lib/test_request_logs_batch.py
runs through the scanner (with the bad-input catalogue, the SDK dumps, generated and disturbed lines
and the simulator's traffic, in tests/lib/test_request_logs_native.py too).

Why no second accelerator (such as a typed `msgspec` decoder for the lines the scanner declines),
measured (docs/benchmarks.md, "One accelerator"): the scanner declines none of the 1,001,040 lines of
bench/ingest.py's simulator inbox and under 5 % of the test traffic (which plants the rarer shapes),
and staging ran as fast without one (1.02x the bare DuckDB COPY at 5M lines, target 0.8x). It would
buy no measurable speed for a third copy of every rule.

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

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

try:
    from pipelines.lib.request_logs import _scan
except ImportError:  # a checkout that was not installed: parse_line takes every line
    _scan = None
from pipelines.lib.request_logs.normalize import (
    EARLIEST_TIMESTAMP,
    FUTURE_TOLERANCE,
    RECORD_SCHEMA,
    Reject,
    RequestRecord,
    parse_line,
)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US_PER_S: Final = 1_000_000
_EARLIEST_US: Final = int(EARLIEST_TIMESTAMP.timestamp()) * _US_PER_S

NUMBERED_SCHEMA: Final = RECORD_SCHEMA.append(pa.field("line_no", pa.int64()))


@dataclass(frozen=True)
class NormalisedLines:
    """What a batch of numbered lines became: accepted records (with `line_no`), rejects, blanks."""

    records: pa.Table  # NUMBERED_SCHEMA, in line order
    rejects: list[tuple[int, Reject, bytes]]  # (line_no, reject, the line)
    blank: int
    compiled: int = 0  # records taken by the compiled scanner (the rest by parse_line)


def normalise_lines(
    lines: Sequence[tuple[int, bytes]], *, fallback_key: str | None, now: datetime
) -> NormalisedLines:
    """`parse_line` on each numbered line, the outcomes gathered as `normalise_block` gives them."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    collecting = gc.isenabled()
    gc.disable()  # a batch makes ~10^5 acyclic records; collections triggered by them would only re-scan the heap
    try:
        rows: list[tuple] = []
        rejects: list[tuple[int, Reject, bytes]] = []
        blank = 0
        for line_no, line in lines:
            if not line.strip():
                blank += 1
                continue
            outcome = parse_line(line, fallback_key=fallback_key, now=now)
            if isinstance(outcome, Reject):
                rejects.append((line_no, outcome, line))
            else:
                rows.append((*_record_row(outcome), line_no))
        return NormalisedLines(_table(rows), rejects, blank)
    finally:
        if collecting:
            gc.enable()


def normalise_block(
    block: bytes, first_line_no: int, *, fallback_key: str | None, now: datetime
) -> NormalisedLines:
    """Normalise every line of `block` (whole lines split at b"\\n", the first numbered `first_line_no`).

    The compiled scanner takes what it is sure of; `parse_line` the lines it declines (module docstring).
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
    return NormalisedLines(records, rest.rejects, rest.blank, rows)


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
