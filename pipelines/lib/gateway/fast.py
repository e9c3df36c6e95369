"""The gateway ledger's fetched CSV export, a day at a time: column operations for the common rows,
the reference functions of `gateway_ledger` for every other row.

`gateway_ledger.export_items` and `parse_item` are the reference, row by row; at ~40 us a row a day
of 100 000 requests takes seconds (a simulated day on 2 shared cores: ~100 us a row through the
reference, ~9 us a row here). This module gives the same answer in bulk:

1. `export_cells` reads a fetched export with `pyarrow.csv` into string columns, once it has seen
   that the body is CSV on which pyarrow and Python's `csv` module (what `export_items` reads with)
   agree: UTF-8 ending in a line break, no line break before the header, every `\\r` starting a
   `\\r\\n`, and every quote opening a field, closing one before a delimiter or a line break, or
   doubled inside one. It checks what `export_items` checks (the header, whole rows, every
   `created_at` plain unix seconds inside the window). A body it is not sure of goes to
   `export_items` itself, which returns the items or raises `ExportError`, as for any export.
2. `records_from_cells` takes the rows in the common form: plain numbers, `type` 1-6, a request_id,
   the key and quota a money row needs, `is_stream` true/false/empty, and an `other` that `msgspec`
   decodes into the typed view below with values the rules keep as they are (finite numbers, whole
   non-negative counts, a string path) and none of the task, subscription or surcharge keys
   (`_REFERENCE_KEYS`). Their cells become typed columns here; what the money and the row mean comes
   from `gateway_ledger`'s own rule functions, called on whole columns (`billed_units`,
   `is_correction`) or once per distinct value (`billing_category`, `is_correction_marker`,
   `content_says_correction`, `content_says_usage_estimated`). Every other row (a reject, a row
   without request_id (its identity is a digest of its values), a cell with spaces around it, a number
   spelt unusually, anything else in `other`) becomes an item through `export_row_item` and a record
   or a reject through `parse_item`, so every reject and every edge case comes from the reference.

Deduplication and the lake's order are `gateway_ledger.number_repeats` and `dedupe_sorted`, on the
tables this module makes.

So the fast path may decline anything, but never accepts differently: for every row it takes, the
record equals `parse_item`'s. `tests/lib/test_gateway_fast.py` holds it to that on the simulator's
traffic, on every gateway test item and bad-input case, and on generated rows of every field type.
Where the exactness rests on a library, the test pins it: `msgspec` takes the last of duplicate keys
as `json.loads` does and refuses what it does not, and Python's `round` and `numpy.round` both round
half to even.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.lib.gateway.ledger import (
    CORRECTION_OTHER_KEYS,
    CSV_COLUMNS,
    SUBSCRIPTION_OTHER_KEYS,
    SURCHARGE_OTHER_KEYS,
    TASK_OTHER_KEYS,
    GATEWAY_SCHEMA,
    LOG_CONSUME,
    LOG_REFUND,
    LOG_TYPE_NAMES,
    RATIOS,
    USD_PER_UNIT,
    ExportError,
    GatewayReject,
    billed_units,
    billing_category,
    content_says_correction,
    content_says_usage_estimated,
    csv_lines,
    csv_mapping,
    export_items,
    export_row_item,
    is_correction,
    is_correction_marker,
    parse_item,
    records_to_table,
)

MAX_BRACKETS: Final = 256  # deeper `other` goes to parse_item (json.loads' recursion limit decides)
_BOM: Final = b"\xef\xbb\xbf"
_EXACT: Final = 2.0**53  # floats below this are whole numbers exactly
# Python's str.strip() removes exactly the characters for which str.isspace() is true (all below U+3001).
_SPACE_CLASS: Final = "".join(f"\\x{{{ord(c):x}}}" for c in map(chr, range(0x3001)) if c.isspace())
_EDGE_SPACE: Final = f"^[{_SPACE_CLASS}]|[{_SPACE_CLASS}]$"
_UNSIGNED: Final = r"^[0-9]{1,18}$"  # fits int64
_QUOTA: Final = r"^-?[0-9]{1,17}$"  # |quota| < 10**17 < 5 * 10**17 (MAX_ABS_QUOTA)
_UNIX_SECONDS: Final = r"^[1-9][0-9]{0,10}$"  # before the year 5000
_COUNTS: Final = ("id", "prompt_tokens", "completion_tokens", "use_time")
_TEXTS: Final = ("request_id", "token_name", "model_name", "content", "group", "ip", "response_id")
_OTHER_COUNTS: Final = ("cache_tokens", "cache_creation_tokens")
_OTHER_INTEGERS: Final = ("frt", "total_ms")
_LOG_TYPE_NAMES: Final = pa.array([LOG_TYPE_NAMES.get(code, "") for code in range(max(LOG_TYPE_NAMES) + 1)])
_US_PER_S: Final = 1_000_000
# columns from other keys that send a row to parse_item: NULL on every row the fast path takes
_ABSENT_HERE: Final = ("task_id", "reason", "pre_consumed_quota", "actual_quota", "billing_source", "billing_mode",
                       "cache_write_1h_tokens")

# Keys of task billing, subscriptions and surcharges: a row carrying any of them goes to parse_item
# (they are rare, and their columns come from the reference alone).
_REFERENCE_KEYS: Final = tuple(dict.fromkeys((*TASK_OTHER_KEYS, *SUBSCRIPTION_OTHER_KEYS, *SURCHARGE_OTHER_KEYS)))
_MARKERS: Final = tuple(key for key in CORRECTION_OTHER_KEYS if key not in _REFERENCE_KEYS)
# The typed view of `other`: only the keys parse_item reads. A value of another type fails to decode
# (the row goes to parse_item); unknown keys are skipped.
_Other = msgspec.defstruct(
    "_Other",
    [(name, float | None, None) for name in (*RATIOS, *_OTHER_COUNTS, *_OTHER_INTEGERS)]
    + [("request_path", str | None, None)]
    + [(name, Any, None) for name in ("usage_semantic", *_MARKERS, *_REFERENCE_KEYS)],
    gc=False,
)
_decode_other = msgspec.json.Decoder(_Other).decode
_UNDECODED: Final = (None,) * len(_Other.__struct_fields__)  # `is`-compared: a decoded `{}` is another tuple


# --- the export's body -> string columns -----------------------------------------------------------------


def export_cells(body: bytes | bytearray, *, start_ts: int, end_ts: int,
                 name: str = "the export") -> pa.Table | list[dict]:
    """A fetched export's rows: string columns named by item field (cells as written), or its items.

    Checks what `export_items` checks; where this reader is not sure of the body (see the module
    docstring), the items are `export_items`' own, and its `ExportError` is raised as it is.
    """
    table = _read_plain_csv(body)
    if table is None or table.num_rows == 0:
        return _reference_items(body, start_ts, end_ts, name)
    header = [column[0].as_py() for column in table.columns]
    try:
        mapping, usd_column = csv_mapping(name, header)
    except ValueError as exc:
        raise ExportError(str(exc), lasting=True) from None
    rows = table.slice(1)
    created = rows.column(mapping["created_at"])
    if usd_column is not None or not _unix_seconds_within(created, start_ts, end_ts):
        return _reference_items(body, start_ts, end_ts, name)
    return pa.table({field: rows.column(index).combine_chunks() for field, index in mapping.items()})


def _reference_items(body: bytes | bytearray, start_ts: int, end_ts: int, name: str) -> list[dict]:
    return export_items(csv_lines([body]), start_ts=start_ts, end_ts=end_ts, name=name)


def _read_plain_csv(body: bytes | bytearray) -> pa.Table | None:
    """Every row of the body as strings (the header is row 0), or None when the body is not plain."""
    start = len(_BOM) if body.startswith(_BOM) else 0
    header_end = body.find(b"\n", start)
    if (header_end <= start or not body.endswith(b"\n") or body.startswith(b"\r", start)
            or body.count(b"\r") != body.count(b"\r\n") or body.find(b'"', start, header_end) != -1):
        return None  # the header must be the first line, without quotes (so its commas are its cells)
    data = memoryview(body)[start:]
    if not _quotes_plain(data):
        return None
    width = body.count(b",", start, header_end) + 1
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={f"f{i}": pa.string() for i in range(width)},
                                                 strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a row of another width, not UTF-8
        return None


def _quotes_plain(body: memoryview) -> bool:
    """Every quote opens a field, closes one before `,` / a line break / the end, or is doubled inside one.

    Inside or outside quotes is then the parity of the quotes before a byte, and both CSV readers
    split the body the same way.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    if len(quotes) % 2:
        return False
    opening, closing = quotes[0::2], quotes[1::2]
    before = data[np.maximum(opening - 1, 0)]
    opens_field = (opening == 0) | np.isin(before, (ord(","), ord("\n")))
    doubled_open = np.zeros(len(opening), dtype=bool)
    doubled_open[1:] = opening[1:] == closing[:-1] + 1
    after = data[np.minimum(closing + 1, len(data) - 1)]
    closes_field = (closing == len(data) - 1) | np.isin(after, (ord(","), ord("\n"), ord("\r")))
    doubled_close = np.zeros(len(closing), dtype=bool)
    doubled_close[:-1] = opening[1:] == closing[:-1] + 1
    return bool(np.all(opens_field | doubled_open) and np.all(closes_field | doubled_close))


def _unix_seconds_within(column: pa.ChunkedArray, start_ts: int, end_ts: int) -> bool:
    if not pc.all(pc.match_substring_regex(column, _UNIX_SECONDS)).as_py():
        return False
    if len(column) == 0:
        return True
    seconds = pc.cast(column, pa.int64())
    low, high = pc.min_max(seconds).values()
    return start_ts <= low.as_py() and high.as_py() <= end_ts


# --- string columns -> ledger records -----------------------------------------------------------------


@dataclass(frozen=True)
class ParsedCells:
    """A cell table's `records` (GATEWAY_SCHEMA, in row order) and `rejects`; `fast`: rows the fast path took."""

    records: pa.Table
    rejects: list[GatewayReject]
    fast: int


def records_from_cells(cells: pa.Table, *, source: str = "api") -> ParsedCells:
    """`parse_item` over every row of an `export_cells` table, each row the item `export_items` makes of it."""
    n = cells.num_rows
    text = {field: (cells.column(field).combine_chunks() if field in cells.column_names
                    else pa.nulls(n, pa.string())).fill_null("")
            for field in CSV_COLUMNS}
    common = _common_form(text)
    other = _OtherColumns.decode(text["other"], common)
    common &= other.usable
    fast_rows = np.flatnonzero(common)
    fast = _fast_records(text, other, fast_rows, source)
    slow_rows = np.flatnonzero(~common)
    slow, slow_positions, rejects = _reference_records(cells, slow_rows, source)
    if not slow.num_rows:
        return ParsedCells(fast, rejects, len(fast_rows))
    order = np.argsort(np.concatenate([fast_rows, slow_positions]), kind="stable")
    return ParsedCells(pa.concat_tables([fast, slow]).take(pa.array(order)), rejects, len(fast_rows))


def _common_form(text: dict[str, pa.Array]) -> np.ndarray:
    """Rows whose cells (`other`'s content aside) the fast path takes: plain values, nothing parse_item rejects."""

    def mask(array: pa.Array) -> np.ndarray:
        return array.to_numpy(zero_copy_only=False)

    def matches(field: str, pattern: str) -> np.ndarray:
        return mask(pc.match_substring_regex(text[field], pattern))

    def empty(field: str) -> np.ndarray:
        return mask(pc.equal(text[field], ""))

    def one_of(field: str, values: list[str]) -> np.ndarray:
        return mask(pc.is_in(text[field], value_set=pa.array(values)))

    ok = one_of("type", [str(code) for code in LOG_TYPE_NAMES])
    for field in _TEXTS:
        ok &= ~matches(field, _EDGE_SPACE)  # strip() would change the cell
    ok &= matches("created_at", _UNIX_SECONDS)
    ok &= matches("quota", _QUOTA) | empty("quota")
    for field in _COUNTS:
        ok &= matches(field, _UNSIGNED) | empty(field)
    ok &= one_of("is_stream", ["", "true", "false"])
    ok &= ~empty("request_id")  # traffic rows need one; account events get a synthetic id from parse_item
    money = one_of("type", [str(LOG_CONSUME), str(LOG_REFUND)])
    ok &= ~money | (~empty("token_name") & ~empty("quota"))
    ok &= ~(one_of("type", [str(LOG_REFUND)]) & mask(pc.starts_with(text["quota"], "-")))
    other = text["other"]
    # An object with nothing around it (so strip() keeps it), and not nested deeper than json.loads goes.
    ok &= empty("other") | (mask(pc.starts_with(other, "{")) & mask(pc.ends_with(other, "}")))
    long = np.flatnonzero(mask(pc.greater(pc.binary_length(other), MAX_BRACKETS)))  # could be that deep
    if long.size:
        tail = other.take(pa.array(long))
        brackets = pc.add(pc.count_substring(tail, "{"), pc.count_substring(tail, "["))
        ok[long] &= mask(pc.less_equal(brackets, MAX_BRACKETS))
    return ok


@dataclass(frozen=True)
class _OtherColumns:
    """`other` decoded for the rows asked about, as full-length columns (NaN / null where absent)."""

    usable: np.ndarray  # bool: empty, or decoded with values the rules keep as they are
    numbers: dict[str, np.ndarray]  # float64, NaN where absent
    request_path: pa.Array
    anthropic: np.ndarray
    marker: np.ndarray  # a truthy CORRECTION_OTHER_KEYS value

    @classmethod
    def decode(cls, column: pa.Array, asked: np.ndarray) -> _OtherColumns:
        n = len(column)
        rows = np.flatnonzero(asked & pc.not_equal(column, "").to_numpy(zero_copy_only=False))
        collecting = gc.isenabled()
        gc.disable()  # ~10^5 acyclic tuples: the collections they would trigger only re-scan the heap
        try:
            decoded = [_decoded(value) for value in column.take(pa.array(rows, pa.int64())).to_pylist()]
            fields = dict(zip(_Other.__struct_fields__, zip(*decoded, strict=True), strict=True)) if decoded \
                else dict.fromkeys(_Other.__struct_fields__, ())
            usable = np.ones(n, dtype=bool)
            usable[rows] = np.array([values is not _UNDECODED for values in decoded], dtype=bool)
            del decoded  # freed before collections resume, which would otherwise scan every tuple once
        finally:
            if collecting:
                gc.enable()
        numbers = {}
        for name in (*RATIOS, *_OTHER_COUNTS, *_OTHER_INTEGERS):
            full = np.full(n, np.nan)
            full[rows] = pa.array(fields[name], pa.float64()).to_numpy(zero_copy_only=False)
            numbers[name] = full
        with np.errstate(invalid="ignore"):
            for name in _OTHER_COUNTS:  # a negative or fractional count is NULL with a flag: parse_item does that
                x = numbers[name]
                usable &= np.isnan(x) | ((x >= 0) & (x == np.floor(x)) & (x < _EXACT))
            for name in _OTHER_INTEGERS:
                usable &= np.isnan(numbers[name]) | (np.abs(numbers[name]) < _EXACT)
        anthropic, marker = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        if _any_set(fields["usage_semantic"]):
            anthropic[rows] = np.array([value == "anthropic" for value in fields["usage_semantic"]], dtype=bool)
        for key in _MARKERS:
            if _any_set(fields[key]):
                marker[rows] |= np.array([is_correction_marker(value) for value in fields[key]], dtype=bool)
        for key in _REFERENCE_KEYS:
            if _any_set(fields[key]):
                usable[rows] &= np.array([value is None for value in fields[key]], dtype=bool)
        return cls(usable, numbers, _scatter(pa.array(fields["request_path"], pa.string()), rows, n), anthropic,
                   marker)


def _any_set(values: tuple) -> bool:
    """Whether any value is not None (absent): usually none are, and counting them is quicker than a test each."""
    return values.count(None) != len(values)


def _decoded(text: str) -> tuple:
    """`other`'s values in _Other's field order, or _UNDECODED when the typed view does not take it."""
    try:
        return msgspec.structs.astuple(_decode_other(text))
    except Exception:  # not JSON, not an object, a value of another type, too deep: parse_item decides
        return _UNDECODED


def _fast_records(text: dict[str, pa.Array], other: _OtherColumns, rows: np.ndarray,
                  source: str) -> pa.Table:
    """The records of the common-form `rows`, by parse_item's rules as column operations."""
    everything = len(rows) == len(text["type"])  # the usual case: no copy
    picked = pa.array(rows, pa.int64())

    def cell(field: str) -> pa.Array:
        return text[field] if everything else text[field].take(picked)

    def count(field: str) -> pa.Array:
        return pc.cast(_null_if_empty(cell(field)), pa.int64())

    def number(name: str) -> pa.Array:
        x = other.numbers[name][rows]
        return pa.array(x, pa.float64(), mask=np.isnan(x))

    def whole(name: str, x: np.ndarray | None = None) -> pa.Array:
        x = other.numbers[name][rows] if x is None else x
        absent = np.isnan(x)
        return pa.array(np.where(absent, 0, x).astype(np.int64), pa.int64(), mask=absent)

    log_type = pc.cast(cell("type"), pa.int8())
    kind = log_type.to_numpy()
    quota_text = cell("quota")
    quota = pc.cast(pc.if_else(pc.equal(quota_text, ""), "0", quota_text), pa.int64()).to_numpy()
    seconds = pc.cast(cell("created_at"), pa.int64())
    content = _null_if_empty(cell("content"))
    price, ratio = other.numbers["model_price"][rows], other.numbers["model_ratio"][rows]
    columns = {
        "request_id": cell("request_id"),
        "log_id": count("id"),
        "created_at": pc.cast(pc.multiply(seconds, _US_PER_S), pa.timestamp("us", tz="UTC")),
        "utc_date": _utc_dates(seconds),
        "log_type": log_type,
        "log_type_name": _LOG_TYPE_NAMES.take(log_type),
        "key_name": _null_if_empty(cell("token_name")),
        "model": _null_if_empty(cell("model_name")),
        "quota_units": pa.array(quota, pa.int64()),
        "billed_usd": _billed_usd(billed_units(kind, quota)),
        "prompt_tokens": count("prompt_tokens"),
        "completion_tokens": count("completion_tokens"),
        "cache_tokens": whole("cache_tokens"),
        "cache_creation_tokens": whole("cache_creation_tokens"),
        "usage_semantic": pc.if_else(pa.array(other.anthropic[rows]), "anthropic", "openai"),
        "billing_category": _billing_categories(price, ratio),
        **{name: number(name) for name in RATIOS},
        "is_stream": pc.if_else(pc.equal(cell("is_stream"), ""), pa.scalar(None, pa.bool_()),
                                pc.equal(cell("is_stream"), "true")),
        "use_time_s": count("use_time"),
        "frt_ms": whole("frt", np.round(other.numbers["frt"][rows])),  # round half to even, as round()
        "total_ms": whole("total_ms", np.round(other.numbers["total_ms"][rows])),
        "request_path": _null_if_empty((other.request_path if everything else other.request_path.take(picked))
                                       .fill_null("")),
        "source_ip": _null_if_empty(cell("ip")),
        "group": _null_if_empty(cell("group")),
        "content": content,
        "is_correction": pa.array(is_correction(kind, quota, other.marker[rows],
                                                _content_matches(content, content_says_correction))),
        "other_parse_error": pa.array(np.zeros(len(rows), dtype=bool)),
        "other_json": _null_if_empty(cell("other")),
        "source": pa.nulls(len(rows), pa.string()).fill_null(source),
        "has_request_id": pa.array(np.ones(len(rows), dtype=bool)),
        "response_id": _null_if_empty(cell("response_id")),
        **{name: pa.nulls(len(rows), GATEWAY_SCHEMA.field(name).type) for name in _ABSENT_HERE},
        "is_subscription": pa.array(np.zeros(len(rows), dtype=bool)),
        "has_surcharge": pa.array(np.zeros(len(rows), dtype=bool)),
        "usage_estimated": pa.array(_content_matches(content, content_says_usage_estimated)),
    }
    return pa.Table.from_arrays([columns[name] for name in GATEWAY_SCHEMA.names], schema=GATEWAY_SCHEMA)


def _null_if_empty(column: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _scatter(values: pa.Array, rows: np.ndarray, n: int) -> pa.Array:
    """A length-n array holding values[i] at rows[i], null elsewhere."""
    slot = np.full(n, -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    return values.take(pa.array(slot, mask=slot < 0))


def _utc_dates(seconds: pa.Array) -> pa.Array:
    """Each unix time's calendar day in UTC (floor division: a time before 1970 is on an earlier day)."""
    days = pc.floor(pc.divide(pc.cast(seconds, pa.float64()), 86_400.0))
    return pc.cast(pc.cast(days, pa.int32()), pa.date32())


def _billed_usd(units: np.ndarray) -> pa.Array:
    """units x 0.000002 USD as DECIMAL(18, 6), exact (|units| < 10**17)."""
    usd = pc.multiply(pa.array(units, pa.int64()).cast(pa.decimal128(19, 0)),
                      pa.scalar(USD_PER_UNIT, pa.decimal128(7, 6)))
    return usd.cast(GATEWAY_SCHEMA.field("billed_usd").type)


def _billing_categories(price: np.ndarray, ratio: np.ndarray) -> pa.Array:
    """`billing_category` of each row (NaN = absent), called once per distinct (model_price, model_ratio)."""
    if not len(price):
        return pa.array([], pa.string())
    absent = np.inf  # no value the fast path takes is infinite: msgspec refuses what would be
    pairs = np.empty(len(price), np.complex128)  # one sortable number a pair: quicker than np.unique(axis=0)
    pairs.real = np.where(np.isnan(price), absent, price)
    pairs.imag = np.where(np.isnan(ratio), absent, ratio)
    distinct, row_pair = np.unique(pairs, return_inverse=True)
    categories = pa.array([billing_category(None if p.real == absent else p.real, None if p.imag == absent else p.imag)
                           for p in distinct.tolist()], pa.string())
    return categories.take(pa.array(row_pair.reshape(-1), pa.int64()))


def _content_matches(content: pa.Array, says: Callable[[str | None], bool]) -> np.ndarray:
    """`says` (a rule of `gateway_ledger` on a row's content) of each row, called once per distinct content."""
    distinct = pc.unique(content)
    said = pa.array([says(text) for text in distinct.to_pylist()], pa.bool_())
    return said.take(pc.index_in(content, value_set=distinct)).fill_null(False).to_numpy(zero_copy_only=False)


def _reference_records(cells: pa.Table, rows: np.ndarray,
                       source: str) -> tuple[pa.Table, np.ndarray, list[GatewayReject]]:
    """(records, their row numbers, rejects) of `rows` by the reference: export_row_item, then parse_item."""
    records, positions, rejects = [], [], []
    for position, row in zip(rows.tolist(), cells.take(pa.array(rows, pa.int64())).to_pylist(), strict=True):
        outcome = parse_item(export_row_item(row), source=source)
        if isinstance(outcome, GatewayReject):
            rejects.append(outcome)
        else:
            records.append(outcome)
            positions.append(position)
    return records_to_table(records), np.array(positions, dtype=np.int64), rejects
