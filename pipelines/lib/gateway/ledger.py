"""CometAPI's own per-request ledger (`/api/log/self` items, the console's CSV export) as records.

One item becomes one `GatewayRecord`, or a `GatewayReject` with a reason from
`GATEWAY_REJECT_REASONS`. A reject is only for what would make the money or the identity of a row
wrong; everything that is merely audit data degrades to NULL instead. The rules:

Money (`billed_usd`, USD, exact, 6 decimals; 500 000 quota units = 1 USD, so a unit is 0.000002):
- consume rows (type 2), corrections included: `quota / 500000` with the sign as given; a task
  correction's quota is a signed delta.
- refund rows (type 6) carry a *positive* quota that gives money back: `billed_usd = -quota / 500000`.
  A refund with a negative quota has an ambiguous sign and is rejected `bad_quota`, never guessed.
- every other type (top-up 1, manage 3, system 4, error 5, login 7, and any code this module does
  not know: upstream added 7, derivatives renumber error and refund) bills nothing: `billed_usd = 0`,
  with `quota_units` kept as given (a top-up's quota is credit, not spend). An unknown code is kept
  (`log_type_name` "unknown") and counted by the pull; it never stops a pull nor counts as spend.
- `quota` must be a JSON integer (not a float, a bool or a string) with |quota| < 5e17 (what
  DECIMAL(18,6) holds). It is required on consume and refund rows (`missing_quota`); on the other
  types an absent or null quota is 0.

Identity:
- `request_id` is the row's identity when the gateway logged one (`has_request_id`); `id` is not an
  identity (upstream rewrites it to `id % 1024`, since 2026-02 to the row's place on the page).
  Upstream logs no request id before 2026-02, nor on account events and task refunds and corrections
  (model/log.go, service/task_billing.go). Such a row is kept, and `request_id` holds its own identity
  (`row_identity`: `<type name>-<created_at>-<digest of its values>`); `number_repeats` numbers rows
  that look exactly alike, each a charge of its own. `response_id` (the provider's id, the `id` a
  client received) is kept to match such rows to client logs.
- `created_at` is unix seconds (a JSON integer); `utc_date` is its calendar day in UTC
  (the lake's partition; the reporting day is derived in the warehouse, `sql/staging/reporting_day.sql`).
- consume and refund rows need a key (`token_name`), else `missing_key_name`: spend that cannot be
  attributed to a key cannot be reconciled against the query service's per-key figures.
- `type` must be a whole number 0..127 (else `bad_field_type` / `unknown_log_type`). The other
  top-level fields are typed columns in new-api's database; a wrong type there (a string token
  count, a negative `use_time`, a count beyond 64 bits, text that is not valid Unicode: a lone
  surrogate from a `\\ud800` escape) means the row is malformed as a whole and is rejected `bad_field_type`.

`other` (a JSON string with the ratios actually applied) is audit data only: when it is not a JSON
object (or not valid Unicode text), or one of its values has the wrong type (or is a whole number
beyond 64 bits, or text that is not valid Unicode), the row is KEPT, the unreadable values are NULL
and `other_parse_error` is True. (An already-decoded object is accepted too.)

`billing_category`: `per_call` when `other.model_price >= 0` (a fixed price per call, also 0 for a
free one); `token` when `model_price == -1`, or when `model_price` is absent and `model_ratio > 0`;
otherwise NULL (unknown; e.g. error rows, which carry no ratios). This is new-api's own record
(`model_price` = -1 means token-priced, otherwise per-call) plus the absent-price case; it fills
`requests.billing_category` for an unpriced request (docs/data-dictionary.md).

`usage_semantic`: `anthropic` when `other.usage_semantic == "anthropic"` (then `prompt_tokens` is
Anthropic's `input_tokens`, cache excluded; the cache is in `cache_tokens` and
`cache_creation_tokens`), else `openai`. Tokens are stored as the gateway logged them.

`is_correction` (a late billing correction of an async task, a row of its own): a consume row whose
quota is negative (the legacy form, model/log.go RecordReConsumeLog), OR whose `other` carries a
truthy marker key (`CORRECTION_OTHER_KEYS`: upstream's `pre_consumed_quota`, the legacy
`pre_consumed` / `quota_delta`, or a `correction_of` task id), OR whose `content` says so
(`CORRECTION_CONTENT`: "correction", "adjustment", 补差, 调整). A positive correction therefore needs a
marker to be told apart from a normal call; refunds are type 6 and never corrections (since 2026-02 a
task whose final price is lower gets a type-6 row, service/task_billing.go).

Kept from `other` as columns: `task_id`, `reason`, `pre_consumed_quota`, `actual_quota` (a refund or
correction tied to its task); `billing_source` and `is_subscription` (paid by a subscription:
`billing_source` "subscription" or `wallet_quota_deducted: 0`: spend that did not come out of the
balance); `billing_mode` (tiered billing), `has_surcharge` (tool surcharges: web search, file search,
image generation) and `cache_write_1h_tokens` (1-hour cache writes), so that a variance they cause
is explained. `usage_estimated`: `content` says the provider returned no usage and the gateway
billed its own estimate of the prompt (`USAGE_ESTIMATED_CONTENT`).

The console's CSV export (a file in the inbox, `parse_export_csv`, or fetched from
`/api/log/self/export`, `export_items`) has the item fields as columns and goes through `parse_item`
row by row: an exported row becomes the same item, and so the same record, as the row paged.

Many records (`number_repeats`, `dedupe_sorted`: the ledger row's identity `DEDUP_KEY`, and the lake's
order) are tables: rules are documented where they are defined.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lib.redact import redact

UNITS_PER_USD: Final = 500_000
USD_PER_UNIT: Final = Decimal("0.000002")  # 1 / 500 000, exact
USD_QUANTUM: Final = Decimal("0.000001")
MAX_ABS_QUOTA: Final = 5 * 10**17  # exclusive: quota / 500 000 must fit DECIMAL(18,6)
MAX_INT64: Final = 2**63 - 1  # counts are BIGINT columns

LOG_TOPUP, LOG_CONSUME, LOG_MANAGE, LOG_SYSTEM, LOG_ERROR, LOG_REFUND, LOG_LOGIN = 1, 2, 3, 4, 5, 6, 7
LOG_TYPE_NAMES: Final = {
    LOG_TOPUP: "topup",
    LOG_CONSUME: "consume",
    LOG_MANAGE: "manage",
    LOG_SYSTEM: "system",
    LOG_ERROR: "error",
    LOG_REFUND: "refund",
    LOG_LOGIN: "login",  # upstream model/log.go LogTypeLogin
}
UNKNOWN_TYPE_NAME: Final = "unknown"
MAX_LOG_TYPE: Final = 127  # log_type is a TINYINT column: a larger code is malformed, not merely unknown
MONEY_TYPES: Final = frozenset({LOG_CONSUME, LOG_REFUND})
# What upstream writes into `content` when it billed its own estimate of the prompt because the
# provider returned no usage (service/text_quota.go PostTextConsumeQuota: an interrupted stream).
USAGE_ESTIMATED_CONTENT: Final = re.compile("上游无计费信息|上游没有返回计费信息")
SOURCES: Final = ("api", "csv_export")
BILLING_CATEGORIES: Final = ("token", "per_call")

GATEWAY_REJECT_REASONS: Final = (
    "not_an_object",
    "missing_created_at",
    "bad_created_at",
    "unknown_log_type",
    "missing_key_name",
    "missing_quota",
    "bad_quota",
    "bad_field_type",
)

# `pre_consumed_quota`: service/task_billing.go RecalculateTaskQuota (since 2026-02); `pre_consumed` and
# `quota_delta`: model/log.go RecordReConsumeLog (before)
CORRECTION_OTHER_KEYS: Final = ("correction_of", "is_correction", "correction", "adjustment_of", "is_adjustment",
                                "pre_consumed_quota", "pre_consumed", "quota_delta")
# `other` keys of task billing, subscriptions and surcharges (service/task_billing.go, service/text_quota.go):
# kept as columns so a correction is tied to its task and a variance they cause is explained.
TASK_OTHER_KEYS: Final = ("task_id", "reason", "pre_consumed_quota", "pre_consumed", "actual_quota")
SUBSCRIPTION_OTHER_KEYS: Final = ("billing_source", "wallet_quota_deducted")
SURCHARGE_OTHER_KEYS: Final = ("billing_mode", "tool_surcharges", "web_search", "web_search_call_count",
                               "file_search", "file_search_call_count", "image_generation_call",
                               "cache_creation_tokens_1h")
CORRECTION_CONTENT: Final = re.compile(r"(?i)\bcorrection\b|\badjustment\b|补差|调整")

Column = int | bool | np.ndarray  # one row's value, or a numpy column of them: rules written for both

RATIOS: Final = (
    "model_ratio", "group_ratio", "completion_ratio", "cache_ratio", "cache_creation_ratio", "model_price",
)


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """One ledger row as the gateway billed it (see the module docstring for every rule)."""

    request_id: str
    log_id: int | None  # the item's `id`: NOT unique (id % 1024), kept for audit
    created_at: datetime  # aware, UTC
    utc_date: date  # created_at's calendar day in UTC
    log_type: int
    log_type_name: str
    key_name: str | None
    model: str | None
    quota_units: int
    billed_usd: Decimal  # signed effect on spend; refunds negative, non-money rows 0
    prompt_tokens: int | None
    completion_tokens: int | None
    cache_tokens: int | None
    cache_creation_tokens: int | None
    usage_semantic: str  # 'openai' | 'anthropic'
    billing_category: str | None  # 'token' | 'per_call' | None (unknown)
    model_ratio: float | None
    group_ratio: float | None
    completion_ratio: float | None
    cache_ratio: float | None
    cache_creation_ratio: float | None
    model_price: float | None
    is_stream: bool | None
    use_time_s: int | None
    frt_ms: int | None
    total_ms: int | None
    request_path: str | None
    source_ip: str | None
    group: str | None
    content: str | None
    is_correction: bool
    other_parse_error: bool
    other_json: str | None  # the raw `other`, for audit
    source: str  # 'api' | 'csv_export'
    has_request_id: bool  # False: the gateway logged none; request_id is the row's own identity (`row_identity`)
    response_id: str | None  # the provider's response id (the `id` a client received), when the row has one
    task_id: str | None  # other.task_id: ties a task's refund or correction to the task
    reason: str | None  # other.reason
    pre_consumed_quota: int | None  # other.pre_consumed_quota (or the legacy pre_consumed)
    actual_quota: int | None  # other.actual_quota
    billing_source: str | None  # other.billing_source
    is_subscription: bool  # paid by a subscription, not the wallet (billing_source, wallet_quota_deducted: 0)
    billing_mode: str | None  # other.billing_mode (tiered_expr: tiered billing)
    has_surcharge: bool  # a tool surcharge (web search, file search, image generation) was billed
    cache_write_1h_tokens: int | None  # other.cache_creation_tokens_1h (1-hour cache writes, dearer)
    usage_estimated: bool  # the gateway billed its own estimate: the provider returned no usage

    @property
    def is_request(self) -> bool:
        """Counted as a request by the query service: a consume row that is not a correction."""
        return self.log_type == LOG_CONSUME and not self.is_correction

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}


@dataclass(frozen=True, slots=True)
class GatewayReject:
    """An unusable ledger row: `reason` from `GATEWAY_REJECT_REASONS`, `detail` for a person."""

    reason: str
    detail: str
    raw: str  # the item as JSON (or the CSV row), for the rejects table
    request_id: str | None = None
    source: str = "api"
    line: int | None = None  # CSV export: the row's line in the file

    def __post_init__(self) -> None:
        if self.reason not in GATEWAY_REJECT_REASONS:
            raise ValueError(f"unknown gateway reject reason {self.reason!r}")


_FIELD_NAMES: Final = tuple(f.name for f in fields(GatewayRecord))

GATEWAY_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("log_id", pa.int64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("utc_date", pa.date32(), nullable=False),
        pa.field("log_type", pa.int8(), nullable=False),
        pa.field("log_type_name", pa.string(), nullable=False),
        pa.field("key_name", pa.string()),
        pa.field("model", pa.string()),
        pa.field("quota_units", pa.int64(), nullable=False),
        pa.field("billed_usd", pa.decimal128(18, 6), nullable=False),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("cache_tokens", pa.int64()),
        pa.field("cache_creation_tokens", pa.int64()),
        pa.field("usage_semantic", pa.string(), nullable=False),
        pa.field("billing_category", pa.string()),
        *(pa.field(name, pa.float64()) for name in RATIOS),
        pa.field("is_stream", pa.bool_()),
        pa.field("use_time_s", pa.int64()),
        pa.field("frt_ms", pa.int64()),
        pa.field("total_ms", pa.int64()),
        pa.field("request_path", pa.string()),
        pa.field("source_ip", pa.string()),
        pa.field("group", pa.string()),
        pa.field("content", pa.string()),
        pa.field("is_correction", pa.bool_(), nullable=False),
        pa.field("other_parse_error", pa.bool_(), nullable=False),
        pa.field("other_json", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("has_request_id", pa.bool_(), nullable=False),
        pa.field("response_id", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("pre_consumed_quota", pa.int64()),
        pa.field("actual_quota", pa.int64()),
        pa.field("billing_source", pa.string()),
        pa.field("is_subscription", pa.bool_(), nullable=False),
        pa.field("billing_mode", pa.string()),
        pa.field("has_surcharge", pa.bool_(), nullable=False),
        pa.field("cache_write_1h_tokens", pa.int64()),
        pa.field("usage_estimated", pa.bool_(), nullable=False),
    ]
)
assert tuple(GATEWAY_SCHEMA.names) == _FIELD_NAMES, "GATEWAY_SCHEMA must follow GatewayRecord"


def records_to_table(records: Iterable[GatewayRecord]) -> pa.Table:
    """The records as an Arrow table with `GATEWAY_SCHEMA`."""
    return pa.Table.from_pylist([r.to_row() for r in records], schema=GATEWAY_SCHEMA)


# --- one item ----------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_item(item: Mapping[str, Any], *, source: str = "api") -> GatewayRecord | GatewayReject:
    """Normalise one `/api/log/self` item. Never raises for bad input."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not isinstance(item, Mapping):
        return GatewayReject("not_an_object", f"a ledger item is a JSON object, not {type(item).__name__}",
                             _raw(item), source=source)
    try:
        return _parse(item, source)
    except _Rejected as rejected:
        request_id = item.get("request_id")
        return GatewayReject(
            rejected.reason,
            redact(rejected.detail),
            _raw(item),
            request_id=request_id if isinstance(request_id, str) and request_id else None,
            source=source,
        )


def _parse(item: Mapping[str, Any], source: str) -> GatewayRecord:
    log_type = _log_type(item)
    created_at = _created_at(item)
    quota = _quota(item, log_type)
    key_name = _text(item, "token_name")
    if log_type in MONEY_TYPES and key_name is None:
        raise _Rejected("missing_key_name", f"a {LOG_TYPE_NAMES[log_type]} row has no token_name")
    content = _text(item, "content")
    other, other_json, other_error = _other(item.get("other"))
    audit = _OtherReader(other, other_error)
    ratios = {name: audit.number(name) for name in RATIOS}
    request_id = _request_id(item)
    response_id = _text(item, "response_id")
    billing_source = audit.text("billing_source")
    wallet = other.get("wallet_quota_deducted")
    pre_consumed = audit.count("pre_consumed_quota")
    record = GatewayRecord(
        request_id=request_id or "",
        log_id=_count(item, "id"),
        created_at=datetime.fromtimestamp(created_at, UTC),
        utc_date=datetime.fromtimestamp(created_at, UTC).date(),
        log_type=log_type,
        log_type_name=LOG_TYPE_NAMES.get(log_type, UNKNOWN_TYPE_NAME),
        key_name=key_name,
        model=_text(item, "model_name"),
        quota_units=quota,
        billed_usd=billed_usd(log_type, quota),
        prompt_tokens=_count(item, "prompt_tokens"),
        completion_tokens=_count(item, "completion_tokens"),
        cache_tokens=audit.count("cache_tokens"),
        cache_creation_tokens=audit.count("cache_creation_tokens"),
        usage_semantic="anthropic" if other.get("usage_semantic") == "anthropic" else "openai",
        billing_category=billing_category(ratios["model_price"], ratios["model_ratio"]),
        **ratios,
        is_stream=_flag(item, "is_stream"),
        use_time_s=_count(item, "use_time"),
        frt_ms=audit.integer("frt"),
        total_ms=audit.integer("total_ms"),
        request_path=audit.text("request_path"),
        source_ip=_text(item, "ip"),
        group=_text(item, "group"),
        content=content,
        is_correction=is_correction(log_type, quota, has_correction_marker(other), content_says_correction(content)),
        other_parse_error=audit.error,
        other_json=other_json,
        source=source,
        has_request_id=request_id is not None,
        response_id=response_id.strip() if response_id else None,
        task_id=audit.identifier("task_id"),
        reason=audit.text("reason"),
        pre_consumed_quota=pre_consumed if pre_consumed is not None else audit.count("pre_consumed"),
        actual_quota=audit.count("actual_quota"),
        billing_source=billing_source,
        is_subscription=billing_source == "subscription" or (wallet is not None and not isinstance(wallet, str)
                                                             and wallet in (0, False)),
        billing_mode=audit.text("billing_mode"),
        has_surcharge=any(other.get(key) not in (None, False, "", 0, [], {}) for key in SURCHARGE_OTHER_KEYS[1:-1]),
        cache_write_1h_tokens=audit.count("cache_creation_tokens_1h"),
        usage_estimated=content_says_usage_estimated(content),
    )
    if request_id is None:
        record = replace(record, request_id=row_identity(record))
    return record


def row_identity(record: GatewayRecord) -> str:
    """The identity of a row the gateway logged without `request_id`: `<type>-<created_at>-<digest>`.

    The digest covers every value of the row but its `id` (a row number that identifies nothing) and
    where it was read from, so the same row paged and exported gets the same identity. Identical
    rows (two fixed-price task calls in the same second look exactly alike) share it: `number_repeats`
    tells them apart, since each is a charge of its own.
    """
    values = [record.created_at.timestamp(), record.log_type, record.key_name, record.model, record.quota_units,
              record.prompt_tokens, record.completion_tokens, record.use_time_s, record.is_stream, record.group,
              record.source_ip, record.content, record.response_id, _canonical_other(record.other_json)]
    digest = hashlib.sha256(json.dumps(values, ensure_ascii=False, default=str).encode()).hexdigest()[:16]
    return f"{record.log_type_name}-{int(record.created_at.timestamp())}-{digest}"


def _canonical_other(other_json: str | None) -> str | None:
    if other_json is None:
        return None
    try:
        decoded = json.loads(other_json)
    except ValueError:
        return other_json
    return json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False) \
        if isinstance(decoded, dict) else other_json


def billed_units(log_type: Column, quota_units: Column) -> Column:
    """The row's signed effect on spend in quota units: consume as given, refunds negated, other rows 0.

    Written with comparisons and arithmetic only, so it holds for one row's values (ints) and for
    numpy columns alike: `gateway_fast` calls it on a whole export.
    """
    return quota_units * ((log_type == LOG_CONSUME) * 1 - (log_type == LOG_REFUND) * 1)


def billed_usd(log_type: int, quota_units: int) -> Decimal:
    """The row's signed effect on spend, exact to 0.000001 USD (refunds negative, non-money rows 0)."""
    return (billed_units(log_type, quota_units) * USD_PER_UNIT).quantize(USD_QUANTUM)


def billing_category(model_price: float | None, model_ratio: float | None) -> str | None:
    """`per_call` when model_price >= 0, `token` when it is -1 (or absent with model_ratio > 0)."""
    if model_price is not None:
        if model_price >= 0:
            return "per_call"
        return "token" if model_price == -1 else None
    if model_ratio is not None and model_ratio > 0:
        return "token"
    return None


def is_correction(log_type: Column, quota_units: Column, marked: Column, says_so: Column) -> Column:
    """A consume row that corrects an earlier task's billing (see the module docstring): its quota is
    negative, or `other` carries a marker (`marked`: `has_correction_marker`), or its content says so
    (`says_so`: `content_says_correction`).

    Written with comparisons and `&` / `|` only, so it holds for one row's values and for numpy
    columns alike: `gateway_fast` calls it on a whole export.
    """
    return (log_type == LOG_CONSUME) & ((quota_units < 0) | marked | says_so)


def is_correction_marker(value: Any) -> bool:
    """Whether a `CORRECTION_OTHER_KEYS` value in `other` marks a correction (absent, false, "" and 0 do not)."""
    return value not in (None, False, "", 0)


def has_correction_marker(other: Mapping[str, Any]) -> bool:
    return any(is_correction_marker(other.get(key)) for key in CORRECTION_OTHER_KEYS)


def content_says_correction(content: str | None) -> bool:
    """`content` names a correction (`CORRECTION_CONTENT`)."""
    return bool(content and CORRECTION_CONTENT.search(content))


def content_says_usage_estimated(content: str | None) -> bool:
    """`content` says the gateway billed its own estimate: the provider returned no usage."""
    return bool(content and USAGE_ESTIMATED_CONTENT.search(content))


def _log_type(item: Mapping[str, Any]) -> int:
    value = item.get("type")
    if value is None:
        raise _Rejected("unknown_log_type", "the item has no type")
    if not _is_int(value):
        raise _Rejected("bad_field_type", f"type is {_show(value)}, not an integer")
    if not 0 <= value <= MAX_LOG_TYPE:
        raise _Rejected("unknown_log_type", f"type {value} is not a log type code (0..{MAX_LOG_TYPE})")
    return value


def _created_at(item: Mapping[str, Any]) -> int:
    value = item.get("created_at")
    if value is None or value == "":
        raise _Rejected("missing_created_at", "the item has no created_at")
    if not _is_int(value):
        raise _Rejected("bad_field_type", f"created_at is {_show(value)}, not unix seconds")
    try:
        if value <= 0:
            raise ValueError
        datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        raise _Rejected("bad_created_at", f"created_at {value} is not a plausible unix time") from None
    return value


def _quota(item: Mapping[str, Any], log_type: int) -> int:
    value = item.get("quota")
    if value is None:
        if log_type in MONEY_TYPES:
            raise _Rejected("missing_quota", f"a {LOG_TYPE_NAMES[log_type]} row has no quota")
        return 0
    if not _is_int(value):
        raise _Rejected("bad_quota", f"quota is {_show(value)}, not integer units")
    if abs(value) >= MAX_ABS_QUOTA:
        raise _Rejected("bad_quota", f"quota {value} is out of range")
    if log_type == LOG_REFUND and value < 0:
        raise _Rejected("bad_quota", f"a refund row has a negative quota {value}: its sign is ambiguous")
    return value


def _request_id(item: Mapping[str, Any]) -> str | None:
    """The gateway's request id, or None: upstream logs none before 2026-02, nor on account events and
    task billing rows, and omits the field when it is empty (model/log.go `request_id,omitempty`)."""
    value = item.get("request_id")
    if value is not None and not _is_text(value):
        raise _Rejected("bad_field_type", f"request_id is {_show(value)}, not a string")
    return value.strip() if value and value.strip() else None


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not _is_text(value):
        raise _Rejected("bad_field_type", f"{name} is {_show(value)}, not a string")
    return value if value.strip() else None


def _count(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise _Rejected("bad_field_type", f"{name} is {_show(value)}, not a whole number")
    if value > MAX_INT64:
        raise _Rejected("bad_field_type", f"{name} {value} is out of range")
    return value


def _flag(item: Mapping[str, Any], name: str) -> bool | None:
    value = item.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise _Rejected("bad_field_type", f"{name} is {_show(value)}, not true/false")


def _other(value: Any) -> tuple[dict, str | None, bool]:
    """(decoded `other`, its raw text, whether it could not be read as an object)."""
    if value is None or value == "":
        return {}, None, False
    if isinstance(value, Mapping):
        return dict(value), json.dumps(value, separators=(",", ":"), sort_keys=True, default=str), False
    if not isinstance(value, str):
        return {}, json.dumps(value, default=str), True
    if not _is_text(value):
        return {}, value.encode("utf-8", "backslashreplace").decode(), True  # a lone surrogate as \udXXXX
    try:
        decoded = json.loads(value)
    except ValueError:
        return {}, value, True
    return (decoded, value, False) if isinstance(decoded, dict) else ({}, value, True)


class _OtherReader:
    """Reads audit values from `other`; a value of the wrong type becomes None and sets `error`."""

    def __init__(self, other: dict, error: bool) -> None:
        self.other = other
        self.error = error

    def number(self, name: str) -> float | None:
        value = self.other.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.error = True
            return None
        return float(value)

    def integer(self, name: str) -> int | None:
        value = self.number(name)
        if value is None:
            return None
        if abs(round(value)) > MAX_INT64:
            self.error = True
            return None
        return round(value)

    def count(self, name: str) -> int | None:
        value = self.number(name)
        if value is None:
            return None
        if value < 0 or value != int(value) or value > MAX_INT64:
            self.error = True
            return None
        return int(value)

    def text(self, name: str) -> str | None:
        value = self.other.get(name)
        if value is None or _is_text(value):
            return value or None
        self.error = True
        return None

    def identifier(self, name: str) -> str | None:
        """A string, or a whole number written as one (task ids come as either)."""
        value = self.other.get(name)
        if _is_int(value):
            return str(value)
        return self.text(name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    """A str that UTF-8 can hold (JSON's `\\ud800` escape gives Python a lone surrogate, which it cannot)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _raw(item: Any) -> str:
    try:
        raw = json.dumps(item, ensure_ascii=False, sort_keys=True, default=str)
        return raw if _is_text(raw) else json.dumps(item, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(item)


# --- many records ------------------------------------------------------------------------------

# A ledger row's identity: not `request_id` alone, as a consume row and its refund, or a task and its
# billing correction, may share a request_id and are distinct money movements. The same row seen
# twice (paging overlap when new rows arrive while paging, a re-pull, the API and the CSV export of
# one row) is a duplicate, whatever its `id` (which new-api rewrites to id % 1024) or `source`.
DEDUP_KEY: Final = ("request_id", "log_type", "created_at", "quota_units")
SORT_KEY: Final = ("utc_date", "created_at", "request_id", "log_type")  # the lake's order of a day's rows


def number_repeats(records: pa.Table) -> pa.Table:
    """Rows without a request id that look exactly alike, told apart: the 2nd, 3rd... get `-2`, `-3`...

    Call it on what one source gave for one day (a pull's pages or export, one CSV file), rows in the
    order they came. Each repeat is a charge of its own and keeps it; the same row from another
    source (a CSV export of the same day) gets the same numbers, so `dedupe_sorted` keeps the larger
    of the two counts, never their sum. Rows with a request id are returned as they are.
    """
    without = np.flatnonzero(pc.invert(records["has_request_id"]).to_numpy(zero_copy_only=False)) \
        if records.num_rows else np.array([], dtype=np.int64)
    if not without.size:
        return records
    ids = records["request_id"].to_pylist()
    seen: Counter[str] = Counter()
    for row in without.tolist():
        seen[ids[row]] += 1
        if seen[ids[row]] > 1:
            ids[row] = f"{ids[row]}-{seen[ids[row]]}"
    position = records.schema.get_field_index("request_id")
    return records.set_column(position, records.schema.field(position), pa.array(ids, pa.string()))


def dedupe_sorted(records: pa.Table) -> tuple[pa.Table, int]:
    """(kept rows in the lake's order, duplicates dropped) of a table of records.

    The first of rows sharing DEDUP_KEY is kept; then rows are sorted by SORT_KEY, rows equal in it
    keeping the order they came in.
    """
    if not records.num_rows:
        return records, 0
    arrival = pa.array(np.arange(records.num_rows, dtype=np.int64))
    numbered = records.append_column("_arrival", arrival)
    first = numbered.group_by(list(DEDUP_KEY), use_threads=False).aggregate([("_arrival", "min")])
    kept = numbered.filter(pc.is_in(arrival, value_set=first.column("_arrival_min")))
    ordered = kept.sort_by([(name, "ascending") for name in (*SORT_KEY, "_arrival")])
    return ordered.drop_columns(["_arrival"]), records.num_rows - kept.num_rows


# --- the console's CSV export --------------------------------------------------------------------

# Column names are not documented. Headers are matched case-insensitively, with spaces and dashes
# read as underscores; each item field accepts its own name and the plausible console labels below.
CSV_COLUMNS: Final = {
    "id": ("id", "log_id"),
    "created_at": ("created_at", "created_time", "time", "timestamp", "created", "时间"),
    "type": ("type", "log_type", "类型"),
    "content": ("content", "detail", "details", "详情"),
    "token_name": ("token_name", "token", "key_name", "key", "令牌"),
    "model_name": ("model_name", "model", "模型"),
    "quota": ("quota", "quota_units"),
    "prompt_tokens": ("prompt_tokens", "prompt", "input_tokens", "提示"),
    "completion_tokens": ("completion_tokens", "completion", "output_tokens", "补全"),
    "use_time": ("use_time", "use_time_s", "用时"),
    "is_stream": ("is_stream", "stream", "流"),
    "group": ("group", "分组"),
    "ip": ("ip", "source_ip", "client_ip"),
    "request_id": ("request_id", "requestid", "x_cometapi_request_id", "请求id"),
    "response_id": ("response_id",),
    "other": ("other",),
}
# A USD amount instead of quota units; only under these explicit names.
CSV_USD_COLUMNS: Final = ("cost", "cost_usd", "quota_usd", "usd", "花费")
CSV_REQUIRED: Final = ("created_at", "type", "token_name")
_CSV_TYPE_NAMES: Final = {
    **{name: code for code, name in LOG_TYPE_NAMES.items()},
    "充值": 1, "消费": 2, "管理": 3, "系统": 4, "错误": 5, "退款": 6,
}
_TRUE = frozenset({"true", "1", "yes", "y", "t", "是"})
_FALSE = frozenset({"false", "0", "no", "n", "f", "否"})
_INT = re.compile(r"[+-]?\d+")
_CSV_INT_FIELDS: Final = ("id", "quota", "prompt_tokens", "completion_tokens", "use_time")


def parse_export_csv(path_or_text: str | Path) -> list[GatewayRecord | GatewayReject]:
    """Normalise the console's CSV export, row by row, through `parse_item` (source `csv_export`).

    `path_or_text` is a `Path`, a path string, or the CSV text itself (a string with a newline).
    The header must name `request_id`, `created_at`, `type`, `token_name` and either `quota`
    (integer units) or a USD column (`CSV_USD_COLUMNS`); columns may come in any order, unknown
    columns are ignored. Anything else raises ValueError with one line naming the file.
    Assumptions, as nothing is documented: `created_at` is unix seconds, an ISO-8601 time with an
    offset, or a naive `YYYY-MM-DD HH:MM:SS` read as UTC; `type` is the number or its name (English
    or the console's Chinese label); a USD amount must be an exact number of quota units (a
    multiple of 0.000002), else the row is rejected `bad_quota`; with both quota and USD columns the
    two must agree. Empty cells are absent values.
    """
    name, text = _read_csv_source(path_or_text)
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    mapping, usd_column = csv_mapping(name, header or [])
    out: list[GatewayRecord | GatewayReject] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        cells = {field: row[i].strip() if i < len(row) else "" for field, i in mapping.items()}
        usd = row[usd_column].strip() if usd_column is not None and usd_column < len(row) else ""
        raw = json.dumps(dict(zip(header, row, strict=False)), ensure_ascii=False)
        try:
            item = _csv_item(cells, usd)
        except _Rejected as rejected:
            out.append(GatewayReject(rejected.reason, rejected.detail, raw,
                                     request_id=cells.get("request_id") or None, source="csv_export", line=line))
            continue
        parsed = parse_item(item, source="csv_export")
        out.append(replace(parsed, raw=raw, line=line) if isinstance(parsed, GatewayReject) else parsed)
    return out


class ExportError(ValueError):
    """A CSV export fetched from the API that cannot be trusted whole (one line, no secret).

    `lasting` when the format itself is not understood (asking again will not help), not when
    this one answer is cut short or out of its window.
    """

    def __init__(self, message: str, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting


def export_items(
    source: str | Iterable[str], *, start_ts: int, end_ts: int, name: str = "the export"
) -> list[dict[str, Any]]:
    """The rows of a CSV export fetched for [start_ts, end_ts] (unix seconds), as `/api/log/self` items.

    `source` is the CSV text or its lines as they arrive (`csv_lines`). The same format as
    `parse_export_csv`, all or nothing: a file a person dropped into the inbox keeps what can be read,
    but an export the pipeline fetched instead of paging must be whole, so anything doubtful raises
    `ExportError` and the caller pages instead:
    - the header must be recognised (`lasting`);
    - the text ends with a line break (a body cut short ends mid-row), and every row has as many
      cells as the header, with its quotes closed;
    - every cell converts as in `parse_export_csv` (e.g. a USD amount that is a whole number of
      quota units);
    - `created_at` is unix seconds or a time with an explicit UTC offset (a console's naive local time
      is in an unknown zone), inside [start_ts, end_ts].
    A row that converts but is not a usable ledger row (no request_id, say) is returned: `parse_item`
    rejects it exactly as it would the same item from a page.
    """
    lines = _LastLine(io.StringIO(source) if isinstance(source, str) else source)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None) or []
        try:
            mapping, usd_column = csv_mapping(name, header)
        except ValueError as exc:
            raise ExportError(str(exc), lasting=True) from None
        width, pairs = len(header), tuple(mapping.items())
        items: list[dict[str, Any]] = []
        for row in reader:
            if len(row) != width:
                if not any(cell.strip() for cell in row):
                    continue
                raise ExportError(f"{name} line {reader.line_num} has {len(row)} cells, the header {width}")
            try:
                item = export_row_item({field: row[i] for field, i in pairs},
                                       row[usd_column] if usd_column is not None else "")
            except ExportError as exc:
                raise ExportError(f"{name} line {reader.line_num}: {exc}") from None
            created = item.get("created_at")
            if not _is_int(created) or not start_ts <= created <= end_ts:
                raise ExportError(
                    f"{name} line {reader.line_num}: created_at {row[mapping['created_at']]!r} is not a unix time "
                    f"inside the window {start_ts}..{end_ts}"
                )
            items.append(item)
    except csv.Error as exc:
        lines.check_whole(name)
        raise ExportError(f"{name} is not well-formed CSV at line {reader.line_num}: {exc}") from None
    except ExportError:
        lines.check_whole(name)
        raise
    lines.check_whole(name)
    return items


def export_row_item(cells: Mapping[str, str], usd: str = "") -> dict[str, Any]:
    """One row of a fetched export (item field -> cell, and the USD cell if any) as the item `export_items` makes.

    Cells are stripped, an empty one is absent, numbers and names convert as in `parse_export_csv`;
    raises `ExportError` (the detail only) where a fetched export cannot be trusted: a time without a
    UTC offset, a USD amount that is not whole quota units or disagrees with `quota`.
    """
    item: dict[str, Any] = {field: cell.strip() or None for field, cell in cells.items()}
    try:
        _convert_csv_item(item, usd.strip(), naive_time=False)
    except _Rejected as rejected:
        raise ExportError(rejected.detail) from None
    return item


def csv_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 bytes as they arrive (a leading BOM dropped) -> text lines, each with its line break."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    try:
        for chunk in chunks:
            *lines, pending = (pending + decoder.decode(chunk)).split("\n")
            for line in lines:
                yield line + "\n"
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ExportError(f"the export is not UTF-8 text ({exc.reason})") from None
    if pending:
        yield pending


class _LastLine:
    """Iterates lines and remembers the last one: only the last line of a file can lack a line break."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.last = "\n"

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        self.last = next(self._lines)
        return self.last

    def check_whole(self, name: str) -> None:
        if not self.last.endswith(("\n", "\r")):
            raise ExportError(f"{name} does not end with a line break: it was cut short")


def _read_csv_source(path_or_text: str | Path) -> tuple[str, str]:
    if isinstance(path_or_text, str) and ("\n" in path_or_text or "\r" in path_or_text):
        return "<csv text>", path_or_text
    path = Path(path_or_text)
    try:
        return str(path), path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the gateway log export ({exc.__class__.__name__}: {exc})") from None


def _normalise_header(cell: str) -> str:
    return re.sub(r"[\s\-]+", "_", cell.strip().lstrip("\ufeff").lower())


def csv_mapping(name: str, header: list[str]) -> tuple[dict[str, int], int | None]:
    """item field -> column index, and the USD column's index (or None), of an export's header (ValueError if
    it is not one, naming `name`)."""
    aliases = {alias: field for field, names in CSV_COLUMNS.items() for alias in names}
    mapping: dict[str, int] = {}
    usd_column = None
    for index, cell in enumerate(header):
        column = _normalise_header(cell)
        if column in CSV_USD_COLUMNS:
            if usd_column is not None:
                raise ValueError(
                    f"{name}: the gateway log export has two USD columns ({header[usd_column]!r}, {cell!r})"
                )
            usd_column = index
        elif column in aliases:
            field = aliases[column]
            if field in mapping:
                raise ValueError(
                    f"{name}: the gateway log export has two columns for {field} "
                    f"({header[mapping[field]]!r}, {cell!r})"
                )
            mapping[field] = index
    missing = [field for field in CSV_REQUIRED if field not in mapping]
    if "quota" not in mapping and usd_column is None:
        missing.append("quota (or cost_usd)")
    if missing:
        got = ", ".join(cell.strip() for cell in header) or "no header"
        raise ValueError(
            f"{name}: not a recognised CometAPI gateway log export: missing {', '.join(missing)}; "
            f"expected columns {', '.join(CSV_COLUMNS)} (any order); got {got}"
        )
    return mapping, usd_column


def _csv_item(cells: dict[str, str], usd: str) -> dict[str, Any]:
    """The CSV cells as an `/api/log/self` item; values that do not convert stay strings."""
    item: dict[str, Any] = {field: value or None for field, value in cells.items()}
    _convert_csv_item(item, usd)
    return item


def _convert_csv_item(item: dict[str, Any], usd: str, *, naive_time: bool = True) -> None:
    """Convert an item's CSV strings (empty ones already None) in place.

    `naive_time=False`: a `created_at` without a UTC offset is refused (`_Rejected`), not read as UTC.
    """
    for field in _CSV_INT_FIELDS:
        value = item.get(field)
        if value is not None and _INT.fullmatch(value):
            item[field] = int(value)
    if item.get("type") is not None:
        code = item["type"].lower()
        item["type"] = int(code) if _INT.fullmatch(code) else _CSV_TYPE_NAMES.get(code, item["type"])
    if item.get("created_at") is not None:
        item["created_at"] = _csv_time(item["created_at"], naive_time)
    if item.get("is_stream") is not None:
        flag = item["is_stream"].lower()
        item["is_stream"] = True if flag in _TRUE else False if flag in _FALSE else item["is_stream"]
    if usd:
        units = _usd_to_units(usd)
        if item.get("quota") is not None and item["quota"] != units:
            raise _Rejected("bad_quota", f"quota {item['quota']} disagrees with the USD amount {usd}")
        item["quota"] = units


def _csv_time(value: str, naive_time: bool = True) -> int | str:
    if _INT.fullmatch(value):
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("/", "-"))
    except ValueError:
        return value  # parse_item rejects it as bad_field_type
    if moment.tzinfo is None:
        if not naive_time:
            raise _Rejected("bad_created_at", f"created_at {value!r} has no UTC offset: its time zone is unknown")
        moment = moment.replace(tzinfo=UTC)  # the console's local time is unknown: assume UTC
    return int(moment.timestamp())


def _usd_to_units(text: str) -> int:
    cleaned = text.replace("$", "").replace(",", "").strip()
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise _Rejected("bad_quota", f"the USD amount {text!r} is not a number") from None
    if not amount.is_finite():
        raise _Rejected("bad_quota", f"the USD amount {text!r} is not a number")
    units = amount * UNITS_PER_USD
    if units != units.to_integral_value():
        raise _Rejected("bad_quota", f"the USD amount {text} is not a whole number of quota units (0.000002 USD)")
    return int(units)
