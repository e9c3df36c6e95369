"""The balance/usage query service: `GET /user/quota?key=...[&start_date=&end_date=]`.

Totals and `keys[]` describe the moment of the call; only `daily_quota` is historical. Money is
parsed from the JSON number's text (`Decimal`), so 2.099206 stays 2.099206. "Unlimited" sentinels
(`-1`, or a remain_quota of 999999999 and more) become `is_unlimited=True` with no amounts.

What an answer must be, checked here before anything is stored (each failure is one line naming the
field, and for `daily_quota` the day and the key, and the value):
- a dated pull (`fetch_daily`) must carry `daily_quota`: a day without usage is a day absent from
  it, so an answer without the field (or with `null`) says nothing about the days, and taking it
  for "no usage" would replace every reported figure of the window by nothing;
- money fits the warehouse's DECIMAL(18,6) (at most 6 decimal places, less than 10^12 USD) and
  counts fit a BIGINT;
- no object names a key twice (a date twice in `daily_quota` would silently keep the last);
- at most `MAX_KEYS` entries in `keys[]` (the answer's size is capped in `http.MAX_JSON_BYTES`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.lib.cometapi.http import (
    DEFAULT_TIMEOUT,
    CometAPIError,
    JsonReply,
    RetryPolicy,
    make_client,
    send_json,
)
from pipelines.lib.days import chunks
from pipelines.lib.redact import mask, redact, remember

SERVICE = "CometAPI query service"
QUOTA_PATH = "/user/quota"
UNLIMITED_REMAIN = Decimal(999999999)
UNLIMITED_MARK = Decimal(-1)
DEFAULT_CHUNK_DAYS = 31
MAX_KEYS = 100_000  # keys[] entries an answer may list (an account has tens; a million is not an answer)
MONEY_PLACES = 6  # the warehouse's DECIMAL(18,6)
MONEY_LIMIT = Decimal(10) ** 12  # amounts must be below this (18 digits, 6 of them decimals)
COUNT_LIMIT = 2**63  # counts must be below this (BIGINT)
_DATE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NOT_JSON = object()


class KeySnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    remain_quota_usd: Decimal | None
    used_quota_usd: Decimal | None
    is_unlimited: bool


class DailyEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    usage_date: date
    key_name: str
    cost_usd: Decimal = Field(ge=0)
    requests: int = Field(ge=0)


class QuotaResponse(BaseModel):
    """One answer of the query service. `daily` is None when the body had no `daily_quota`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str
    balance_usd: Decimal  # total_quota: the CURRENT remaining balance, not the amount ever credited
    total_used_usd: Decimal = Field(ge=0)
    request_count: int = Field(ge=0)
    keys: list[KeySnapshot]
    daily: list[DailyEntry] | None
    raw_sha256: str
    fetched_at: datetime | None = None  # when the answer arrived (UTC); None for a parsed file
    dropped_dates: list[date] = []  # daily_quota days outside the requested/kept range


@dataclass(frozen=True)
class DailyPull:
    """One chunk of a range: what was asked (`requested_*`, end one day past), what was kept."""

    kept_start: date
    kept_end: date
    requested_start: date
    requested_end: date
    pulled_at: datetime
    response: QuotaResponse


class _BodyError(ValueError):
    """The body's shape is wrong; the message names the field."""


def parse_quota(
    body: bytes | str,
    *,
    keep: tuple[date, date] | None = None,
    fetched_at: datetime | None = None,
) -> QuotaResponse:
    """Validate a `/user/quota` body; days outside `keep` (inclusive) are dropped.

    Raises `CometAPIError` (kind "unexpected_body", not retriable) naming the offending field.
    """
    raw = body.encode() if isinstance(body, str) else body
    problem = None
    try:
        data = json.loads(raw, parse_float=Decimal)
    except RecursionError:
        problem = "its JSON is nested deeper than the parser allows"
    except ValueError:
        problem = "it is not valid JSON"
    if problem is not None:  # raised outside the handler: no __context__ holding the body
        raise _unexpected(problem) from None
    return _validated(data, raw, keep, fetched_at)


def _validated(data: Any, raw: bytes, keep: tuple[date, date] | None, fetched_at: datetime | None,
               *, dated: bool = False) -> QuotaResponse:
    """`dated`: the call asked for a date range, so `daily_quota` must be there."""
    try:
        _check_unique_keys(raw)
        return _quota(data, keep, hashlib.sha256(raw).hexdigest(), fetched_at, dated)
    except _BodyError as exc:
        problem = str(exc)
    except ValidationError as exc:  # a rule the hand-written checks missed
        first = exc.errors()[0]
        problem = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    raise _unexpected(problem) from None


def _unexpected(problem: str) -> CometAPIError:
    return CometAPIError(
        " ".join(redact(f"{SERVICE} {QUOTA_PATH} answered an unexpected body: {problem}").split()),
        code="unexpected_body",
        retriable=False,
        url=QUOTA_PATH,
        kind="unexpected_body",
    )


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    found: dict = {}
    for name, value in pairs:
        if name in found:
            raise _DuplicateKey(name)
        found[name] = value
    return found


def _check_unique_keys(raw: bytes) -> None:
    """Refuse an answer in which an object names a key twice (JSON parsers silently keep the last)."""
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        name = exc.args[0]
        if _DATE_KEY.match(name):
            raise _BodyError(f"daily_quota has the date {json.dumps(name)} twice: which figures hold cannot be "
                             "told") from None
        raise _BodyError(f"an object names the key {json.dumps(name[:40])} twice: which value holds cannot "
                         "be told") from None
    except (ValueError, RecursionError):  # already parsed once: cannot happen for a body that got here
        pass


def _quota(data: Any, keep: tuple[date, date] | None, sha: str, fetched_at: datetime | None,
           dated: bool = False) -> QuotaResponse:
    if not isinstance(data, dict):
        raise _BodyError(f"the body is {_json_type(data)}, not an object")
    keys_raw = _field(data, "keys", "the body", list)
    if len(keys_raw) > MAX_KEYS:
        raise _BodyError(f"keys[] lists {len(keys_raw)} keys, more than the {MAX_KEYS} an answer may list")
    daily_raw = data.get("daily_quota")
    if daily_raw is None and dated:
        state = "daily_quota is null" if "daily_quota" in data else "it has no daily_quota"
        span = f"{keep[0]}..{keep[1]}" if keep else "the requested days"
        raise _BodyError(f"{state}, though the call asked for {span} (a day without usage is left out of "
                         "daily_quota, not the whole field); nothing was stored")
    daily, dropped = (None, []) if daily_raw is None else _daily(daily_raw, keep)
    return QuotaResponse(
        username=_field(data, "username", "the body", str),
        balance_usd=_money(data, "total_quota", "the body", allow_negative=True),
        total_used_usd=_money(data, "total_used_quota", "the body"),
        request_count=_count(data, "request_count", "the body"),
        keys=[_key(item, f"keys[{i}]") for i, item in enumerate(keys_raw)],
        daily=daily,
        raw_sha256=sha,
        fetched_at=fetched_at,
        dropped_dates=dropped,
    )


def _key(item: Any, where: str) -> KeySnapshot:
    if not isinstance(item, dict):
        raise _BodyError(f"{where} is {_json_type(item)}, not an object")
    name = _field(item, "name", where, str)
    remain = _number(item, "remain_quota", where)
    used = _number(item, "used_quota", where)
    if UNLIMITED_MARK in (remain, used) or remain >= UNLIMITED_REMAIN:
        return KeySnapshot(name=name, remain_quota_usd=None, used_quota_usd=None, is_unlimited=True)
    for field_name, value in (("remain_quota", remain), ("used_quota", used)):
        if value < 0:
            raise _BodyError(f"{where}.{field_name} is negative ({value}) and not the -1 'unlimited' mark")
        _storable(value, where, field_name, name)
    return KeySnapshot(name=name, remain_quota_usd=remain, used_quota_usd=used, is_unlimited=False)


def _daily(raw: Any, keep: tuple[date, date] | None) -> tuple[list[DailyEntry], list[date]]:
    if not isinstance(raw, dict):
        raise _BodyError(f"daily_quota is {_json_type(raw)}, not an object keyed by date")
    totals: dict[tuple[date, str], list] = {}
    dropped: list[date] = []
    for day_key, entries in raw.items():
        day = _date_key(day_key)
        where = f"daily_quota[{json.dumps(day_key)}]"
        if not isinstance(entries, list):
            raise _BodyError(f"{where} is {_json_type(entries)}, not a list")
        parsed = [_daily_entry(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
        if keep is not None and not keep[0] <= day <= keep[1]:
            dropped.append(day)
            continue
        for name, cost, requests in parsed:  # names need not be unique: sum them
            total = totals.setdefault((day, name), [Decimal(0), 0])
            total[0] += cost
            total[1] += requests
    daily = [
        DailyEntry(usage_date=day, key_name=name, cost_usd=cost, requests=requests)
        for (day, name), (cost, requests) in sorted(totals.items())
    ]
    return daily, sorted(dropped)


def _daily_entry(entry: Any, where: str) -> tuple[str, Decimal, int]:
    if not isinstance(entry, dict):
        raise _BodyError(f"{where} is {_json_type(entry)}, not an object")
    name_field = "token_name" if "token_name" in entry or "name" not in entry else "name"
    name = _field(entry, name_field, where, str)
    return name, _money(entry, "quota_used", where, key=name), _count(entry, "request_count", where, key=name)


def _date_key(key: str) -> date:
    try:
        if not _DATE_KEY.match(key):
            raise ValueError
        return date.fromisoformat(key)
    except ValueError:
        raise _BodyError(f"daily_quota key {json.dumps(key)} is not a YYYY-MM-DD date") from None


def _field(obj: dict, name: str, where: str, kind: type) -> Any:
    if name not in obj:
        raise _BodyError(f"{where} has no {name}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {str: "a string", list: "a list"}.get(kind, kind.__name__)
        raise _BodyError(f"{_at(where, name)} is {_json_type(value)}, not {expected}")
    return value


def _number(obj: dict, name: str, where: str) -> Decimal:
    if name not in obj:
        raise _BodyError(f"{where} has no {name}")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _BodyError(f"{_at(where, name)} is {_json_type(value)}, not a number")
    number = Decimal(value)
    if not number.is_finite():
        raise _BodyError(f"{_at(where, name)} is not a finite number")
    return number


def _money(obj: dict, name: str, where: str, *, allow_negative: bool = False, key: str | None = None) -> Decimal:
    value = _number(obj, name, where)
    if value < 0 and not allow_negative:
        raise _BodyError(f"{_at(where, name, key)} is negative ({_shown(value)})")
    return _storable(value, where, name, key)


def _storable(value: Decimal, where: str, name: str, key: str | None = None) -> Decimal:
    """`value` if the warehouse's DECIMAL(18,6) holds it exactly, else why not."""
    if abs(value) >= MONEY_LIMIT:
        raise _BodyError(f"{_at(where, name, key)} is {_shown(value)}: out of range (amounts must be below "
                         f"{MONEY_LIMIT:,} USD)")
    if value != value.quantize(Decimal(1).scaleb(-MONEY_PLACES)):
        raise _BodyError(f"{_at(where, name, key)} is {_shown(value)}: more than {MONEY_PLACES} decimal places, "
                         "finer than the warehouse stores (USD to the micro-dollar)")
    return value


def _count(obj: dict, name: str, where: str, *, key: str | None = None) -> int:
    value = _number(obj, name, where)
    if value != value.to_integral_value():
        raise _BodyError(f"{_at(where, name, key)} is not a whole number ({_shown(value)})")
    if value < 0:
        raise _BodyError(f"{_at(where, name, key)} is negative ({_shown(value)})")
    if value >= COUNT_LIMIT:
        raise _BodyError(f"{_at(where, name, key)} is {_shown(value)}: out of range (counts must be below 2^63)")
    return int(value)


def _shown(value: Decimal) -> str:
    """A number as the answer wrote it, shortened when it is long (1E+20 stays 1E+20)."""
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _at(where: str, name: str, key: str | None = None) -> str:
    field_path = name if where == "the body" else f"{where}.{name}"
    return field_path if key is None else f"{field_path} (key {json.dumps(key[:60])})"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float | Decimal):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 30 else value[:29] + "…"
        return f"a string ({json.dumps(shown)})"
    if isinstance(value, list):
        return "a list"
    return "an object"


def split_range(start: date, end: date, chunk_days: int = DEFAULT_CHUNK_DAYS) -> list[tuple[date, date]]:
    """Kept day ranges (inclusive), in order, each at most `chunk_days - 1` days long.

    Each chunk is requested with `end_date` one day past its last kept day, so one call spans at
    most `chunk_days` calendar days whether the service treats `end_date` as inclusive or not.
    """
    _check_range(start, end)
    if isinstance(chunk_days, bool) or not isinstance(chunk_days, int) or chunk_days < 2:
        raise ValueError(f"chunk_days must be a whole number of days, at least 2, got {chunk_days!r}")
    return chunks(start, end, chunk_days - 1)


def _check_range(start: Any, end: Any) -> None:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, date) or isinstance(value, datetime):
            raise ValueError(f"{name} must be a datetime.date, got {type(value).__name__} {value!r}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")


class QueryClient:
    """Client of the query service. The key travels only as the documented `key` query parameter."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        policy: RetryPolicy = RetryPolicy(),
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("the query service needs an API key (COMETAPI_KEY)")
        self.base_url = base_url
        self._api_key = api_key
        remember(api_key)  # masked everywhere from now on, by every client (redact.py)
        self._policy = policy
        self._sleep = sleep
        self._client = make_client(base_url, timeout, transport)

    def __repr__(self) -> str:
        return f"QueryClient({self.base_url!r}, api_key={mask(self._api_key)!r})"

    def fetch_quota(self, start: date | None = None, end: date | None = None) -> QuotaResponse:
        """Balance, keys and (with both dates) `daily_quota`; days outside [start, end] are dropped."""
        if (start is None) != (end is None):
            raise ValueError("give both start and end, or neither")
        if start is None:
            return self._fetch(None, None, keep=None)
        _check_range(start, end)
        return self._fetch(start.isoformat(), end.isoformat(), keep=(start, end))

    def fetch_daily(self, start: date, end: date, chunk_days: int = DEFAULT_CHUNK_DAYS) -> Iterator[DailyPull]:
        """`daily_quota` for [start, end] inclusive, one call per chunk (see `split_range`)."""
        ranges = split_range(start, end, chunk_days)  # validates before any call
        return self._pulls(ranges)

    def _pulls(self, ranges: list[tuple[date, date]]) -> Iterator[DailyPull]:
        for kept_start, kept_end in ranges:
            requested_end = kept_end + timedelta(days=1)
            response = self._fetch(kept_start.isoformat(), requested_end.isoformat(), keep=(kept_start, kept_end),
                                   dated=True)
            yield DailyPull(
                kept_start=kept_start,
                kept_end=kept_end,
                requested_start=kept_start,
                requested_end=requested_end,
                pulled_at=response.fetched_at,
                response=response,
            )

    def malformed_date_probe(self, raw_start: str = "2026/06/01", raw_end: str = "2026/06/30") -> bool:
        """True if the service rejects malformed dates (a 4xx or an error body), False if it accepts them.

        An answer that says nothing about the dates (bad key, redirect, outage) raises `CometAPIError`.
        """
        try:
            self._send({"start_date": raw_start, "end_date": raw_end})
        except CometAPIError as err:
            if err.kind == "error_body":
                return True
            if err.status is not None and 400 <= err.status < 500 and err.status not in (401, 403) and not err.retriable:
                return True
            raise
        return False

    def _fetch(self, start_date: str | None, end_date: str | None, *, keep: tuple[date, date] | None,
               dated: bool = False) -> QuotaResponse:
        """`dated`: a pull of days (`fetch_daily`): an answer without `daily_quota` is refused. The smoke
        test's dated calls (`fetch_quota`) take it and report it in their own words."""
        params = {} if start_date is None else {"start_date": start_date, "end_date": end_date}
        reply = self._send(params)
        return _validated(reply.data, reply.body, keep, reply.received_at, dated=dated)

    def _send(self, extra: dict[str, str]) -> JsonReply:
        return send_json(
            self._client,
            "GET",
            QUOTA_PATH,
            params={"key": self._api_key, **extra},
            secrets=(self._api_key,),
            policy=self._policy,
            sleep=self._sleep,
            service=SERVICE,
            parse_float=Decimal,
            auth_hint="COMETAPI_KEY",
            url_hint="COMETAPI_QUERY_URL",
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
