"""The console API on api.cometapi.com: the per-request ledger, the model catalog, a key's identity.

Only transport and envelopes live here: pages of items, the CSV export as bytes, the gateway's own
totals. What a ledger item means, and whether a span's rows add up to those totals, is read in
`pipelines/lib/gateway/` (`pull.pull_span`), which this module never imports.
`/api/log/self` wants the console's access token (`Authorization: Bearer <token>`; some
deployments want the raw token). Upstream new-api also checks a `New-Api-User: <user id>` header
against the token's owner: pass `user_id` where the deployment demands it.

For one span of the ledger [start_ts, end_ts] (unix seconds, both inclusive) the client offers:
- `page_span` / `iter_log_pages`: pages of at most 100 items from p=1 until an EMPTY page, without
  trusting `total` (upstream caps it at 10 000: model/log.go logSearchCountLimit): `total` only
  raises an alarm (fewer rows than a `total` below 10 000); a page that repeats the one before, or a
  short page followed by more, fails the span (`LedgerIncomplete`);
- `server_totals`: the consume rows' quota by `/api/log/self/stat` (upstream sums type 2 only:
  model/log.go SumUsedQuota) and by `/api/data/self` (hourly totals of consume rows per model:
  model/usedata.go), where the server offers them; a route the server does not offer is None with
  the reason;
- `fetch_export`: the body of the CSV export (`/api/log/self/export`, CometAPI's own: no route
  upstream).

Every call to `/api/...` is paced under upstream's rate limit (`pacing.PacedTransport`: 360 requests
per 180 s per IP; 20 per 20 min on `/api/usage/token`). Paging 100 000 rows a day is ~1 000 calls,
about 8.5 minutes at that pace; a year about 51 hours (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from pipelines.lib.cometapi.http import (
    DEFAULT_TIMEOUT,
    CometAPIError,
    RetryPolicy,
    make_client,
    request_json,
    send_raw,
)
from pipelines.lib.cometapi.pacing import CRITICAL_LIMIT, CRITICAL_WINDOW_S, PacedTransport, RateLimit
from pipelines.lib.redact import mask, redact, remember

SERVICE = "CometAPI gateway"
LOG_PATH = "/api/log/self"
EXPORT_PATH = "/api/log/self/export"
STAT_PATH = "/api/log/self/stat"
DATA_PATH = "/api/data/self"
TOTAL_CAP = 10_000  # model/log.go logSearchCountLimit: a total of 10 000 or more says nothing
PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not_checked"
MODELS_PATH = "/api/models"
TOKEN_USAGE_PATH = "/api/usage/token"
MAX_PAGE_SIZE = 100
CHECK_PATHS = {"log_stat": STAT_PATH, "data_self": DATA_PATH}  # a server total's check name -> its route


class LedgerIncomplete(CometAPIError):
    """A span's rows disagree with the gateway's own totals (or its paging is inconsistent): not landed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ledger_incomplete", kind="ledger_incomplete")


@dataclass(frozen=True)
class SpanCheck:
    """One completeness check of a span: the ledger rows' type-2 quota against a server's total."""

    name: str  # "log_stat" (/api/log/self/stat), "data_self" (/api/data/self), "total" (the pages' total)
    status: str  # passed | failed | not_checked
    ledger_units: int | None  # what the pulled rows say (type-2 quota units; rows for "total")
    server_units: int | None  # what the server says
    detail: str = ""  # why not checked, or what disagreed (one line)


@dataclass
class PagedSpan:
    """A span read page by page (`GatewayClient.page_span`): the pages, and how they were checked."""

    pages: list[list[dict]] = field(default_factory=list)
    total: int | None = None  # `total` of the last page, for the record
    check: SpanCheck | None = None  # the pages' count against `total` (`total_check`)


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        policy: RetryPolicy = RetryPolicy(),
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        bearer: bool = True,
        user_id: int | str | None = None,
        rate_limit: RateLimit = RateLimit(),
    ) -> None:
        if not access_token:
            raise ValueError("the gateway request log needs the console access token (COMETAPI_ACCESS_TOKEN)")
        self.base_url = base_url
        self._token = access_token
        remember(access_token)  # masked everywhere from now on, by every client (redact.py)
        self._bearer = bearer
        self._user_id = user_id
        self._policy = policy
        self._sleep = sleep
        self.transport = PacedTransport(base_url, transport, limit=rate_limit)
        self._client = make_client(base_url, timeout, self.transport)
        self.rate_limit = rate_limit
        # What the ledger's pull learnt of this gateway's export: False once it answered that it is not
        # there, or in a form that asking again will not change; True once one checked out.
        self.export_available: bool | None = None
        self.offered: dict[str, bool] = {}  # check name -> False once the server said it has no such route
        self.calls = 0  # calls to the ledger endpoints so far

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r}, access_token={mask(self._token)!r})"

    def masked(self, text: str) -> str:
        """`text` with this client's access token (and every remembered secret) masked: for a line that
        quotes an answer of the gateway."""
        return redact(text, (self._token,))

    def page_span(self, start_ts: int, end_ts: int) -> PagedSpan:
        """Every page of [start_ts, end_ts] (unix seconds), 100 items a page, checked against `total`.

        Raises `LedgerIncomplete` as `iter_log_pages` does.
        """
        check_window(start_ts, end_ts)
        paged = PagedSpan()
        paged.pages = list(self._pages(start_ts, end_ts, MAX_PAGE_SIZE, None, paged))
        return paged

    def server_totals(self, start_ts: int, end_ts: int, *, consume_type: int) -> dict[str, tuple[int | None, str]]:
        """check name -> (the gateway's quota units of the span's consume rows, or None, and why not).

        `consume_type` is the ledger's type code of a consume row, asked of `/api/log/self/stat`;
        `/api/data/self` holds consume rows only. A route the gateway does not offer is None with the
        reason, and is not asked again by this client.
        """
        check_window(start_ts, end_ts)
        return {"log_stat": self._stat_units(start_ts, end_ts, consume_type),
                "data_self": self._data_units(start_ts, end_ts)}

    def _stat_units(self, start_ts: int, end_ts: int, consume_type: int) -> tuple[int | None, str]:
        # upstream sums type-2 rows only, whatever the filter (model/log.go SumUsedQuota)
        params = {"type": consume_type, "start_timestamp": start_ts, "end_timestamp": end_ts}
        data = self._optional("log_stat", STAT_PATH, params)
        if isinstance(data, str):
            return None, data
        quota = data.get("quota") if isinstance(data, dict) else None
        if isinstance(quota, bool) or not isinstance(quota, int):
            raise self._error(f"data.quota is {quota!r}, not whole quota units", path=STAT_PATH)
        return quota, ""

    def _data_units(self, start_ts: int, end_ts: int) -> tuple[int | None, str]:
        # hourly totals of consume rows per model (model/usedata.go): only whole UTC hours can be summed
        if start_ts % 3600 or (end_ts + 1) % 3600:
            return None, "the span does not start and end on whole UTC hours, the buckets of /api/data/self"
        data = self._optional("data_self", DATA_PATH, {"start_timestamp": start_ts, "end_timestamp": end_ts})
        if isinstance(data, str):
            return None, data
        if not isinstance(data, list):
            raise self._error("data is not a list of hourly rows", path=DATA_PATH)
        if not data:
            return None, f"{DATA_PATH} has no rows for the span (the gateway's data export may be off)"
        units = 0
        for i, row in enumerate(data):
            quota = row.get("quota") if isinstance(row, dict) else None
            created = row.get("created_at") if isinstance(row, dict) else None
            if isinstance(quota, bool) or not isinstance(quota, int) or isinstance(created, bool) \
                    or not isinstance(created, int):
                raise self._error(f"data[{i}] has no whole quota and created_at", path=DATA_PATH)
            if start_ts <= created <= end_ts:
                units += quota
        return units, ""

    def _optional(self, name: str, path: str, params: dict[str, Any]) -> Any:
        """`data` of a route the gateway may not have; a string saying why when it has not."""
        if self.offered.get(name) is False:
            return f"{path} is not offered by this gateway"
        try:
            data = self._get_data(path, params)
        except CometAPIError as exc:
            if not _not_offered(exc):
                raise
            self.offered[name] = False
            return redact(f"{path} is not offered by this gateway ({exc})", (self._token,))
        self.offered[name] = True
        return data

    def fetch_export(self, start_ts: int, end_ts: int) -> bytearray:
        """The body of the CSV export of [start_ts, end_ts] (`/api/log/self/export`: CometAPI's own, no
        route upstream), whole; `CometAPIError` when the gateway answers anything but a file."""
        check_window(start_ts, end_ts)

        def read(chunks: Iterator[bytes]) -> bytearray:
            body = bytearray()
            for piece in chunks:
                body += piece
            return body

        self.calls += 1
        return send_raw(
            self._client,
            "GET",
            EXPORT_PATH,
            params={"start_timestamp": start_ts, "end_timestamp": end_ts},
            headers=self._headers() | {"Accept": "text/csv, */*;q=0.5"},
            consume=read,
            **self._send_options(),
        ).value

    def iter_log_pages(
        self,
        start_ts: int,
        end_ts: int,
        page_size: int = MAX_PAGE_SIZE,
        log_type: int | None = None,
    ) -> Iterator[list[dict]]:
        """Pages of `/api/log/self` items for [start_ts, end_ts] (unix seconds), from p=1 to an empty page.

        `page_size` is capped at 100; each page is validated (items must be objects). Raises
        `LedgerIncomplete` when a page repeats the one before, when a page shorter than the first is
        followed by more items, or when fewer items came than a `total` below 10 000.
        """
        check_window(start_ts, end_ts)
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise ValueError(f"page_size must be an int, got {type(page_size).__name__}")
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        return self._pages(start_ts, end_ts, min(page_size, MAX_PAGE_SIZE), log_type, PagedSpan())

    def _pages(self, start_ts: int, end_ts: int, page_size: int, log_type: int | None,
               paged: PagedSpan) -> Iterator[list[dict]]:
        seen = 0
        previous: list[dict] | None = None
        size: int | None = None  # the server's page size: what the first page held
        short_page: int | None = None
        page = 1
        while True:
            params: dict[str, Any] = {
                "p": page,
                "page_size": page_size,
                "start_timestamp": start_ts,
                "end_timestamp": end_ts,
            }
            if log_type is not None:
                params["type"] = log_type
            data = self._get_data(LOG_PATH, params)
            items, total, _ = _log_page(data, page)
            paged.total = total
            if not items:
                break
            if items == previous:
                raise self._incomplete(start_ts, end_ts, f"page {page} repeats page {page - 1}: the server "
                                                         "seems to ignore p")
            if short_page is not None:
                raise self._incomplete(start_ts, end_ts, f"page {short_page} held fewer items than page 1 "
                                                         f"({size}) but page {page} is not empty: its pages do not line up")
            size = len(items) if size is None else size
            if len(items) < size:
                short_page = page
            yield items
            seen += len(items)
            previous = items
            page += 1
        check = paged.check = total_check(seen, total)
        if check.status == FAILED:
            raise self._incomplete(start_ts, end_ts, check.detail)

    def _incomplete(self, start_ts: int, end_ts: int, problem: str) -> LedgerIncomplete:
        return LedgerIncomplete(self.masked(f"{SERVICE} GET {LOG_PATH} for {utc_span(start_ts, end_ts)}: "
                                            f"{problem}"))

    def fetch_models(self) -> list[dict]:
        """The public model catalog (`GET /api/models`, no auth): `{"data": [...]}` or a bare list."""
        data = request_json(
            self._client,
            "GET",
            MODELS_PATH,
            policy=self._policy,
            sleep=self._sleep,
            service=SERVICE,
            url_hint="COMETAPI_API_URL",
        )
        models = data.get("data") if isinstance(data, dict) else data
        if not isinstance(models, list):
            raise self._error("the model list is neither a list nor {\"data\": [...]}", path=MODELS_PATH)
        for i, model in enumerate(models):
            if not isinstance(model, dict):
                raise self._error(f"data[{i}] is not an object", path=MODELS_PATH)
        return models

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}" if self._bearer else self._token}
        if self._user_id is not None:
            headers["New-Api-User"] = str(self._user_id)
        return headers

    def _send_options(self) -> dict[str, Any]:
        """What every call to the ledger passes to the HTTP layer: retries, redaction, error hints."""
        return {"secrets": (self._token,), "policy": self._policy, "sleep": self._sleep, "service": SERVICE,
                "auth_hint": "COMETAPI_ACCESS_TOKEN", "url_hint": "COMETAPI_API_URL"}

    def _get_data(self, path: str, params: dict[str, Any]) -> Any:
        self.calls += 1
        body = request_json(
            self._client,
            "GET",
            path,
            params=params,
            headers=self._headers(),
            **self._send_options(),
        )
        if not isinstance(body, dict) or "data" not in body:
            raise self._error("the body is not an envelope {\"success\": true, \"data\": ...}", path=path)
        if body.get("success") is not True and "success" in body:
            raise self._error(f"success is {body.get('success')!r}, not true", path=path)
        return body["data"]

    def _error(self, problem: str, path: str = LOG_PATH) -> CometAPIError:
        return CometAPIError(
            redact(f"{SERVICE} GET {path} answered an unexpected body: {problem}", (self._token,)),
            code="unexpected_body",
            url=path,
            kind="unexpected_body",
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_window(start_ts: int, end_ts: int) -> None:
    """A span is two whole unix times, the end not before the start (`ValueError` before any call)."""
    for name, value in (("start_ts", start_ts), ("end_ts", end_ts)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if end_ts < start_ts:
        raise ValueError(f"end_ts {end_ts} is before start_ts {start_ts}")


def utc_span(start_ts: int, end_ts: int) -> str:
    """`2026-11-01 00:00:00..2026-11-01 23:59:59 UTC`: a span as messages name it."""
    first, last = datetime.fromtimestamp(start_ts, UTC), datetime.fromtimestamp(end_ts, UTC)
    return f"{first:%Y-%m-%d %H:%M:%S}..{last:%Y-%m-%d %H:%M:%S} UTC"


def _log_page(data: Any, page: int) -> tuple[list[dict], int | None, int | None]:
    """(items, total, page_size echoed by the server) of one `/api/log/self` page."""

    def bad(problem: str) -> CometAPIError:
        return CometAPIError(
            f"{SERVICE} GET {LOG_PATH} answered an unexpected body on page {page}: {problem}",
            code="unexpected_body",
            url=LOG_PATH,
            kind="unexpected_body",
        )

    if not isinstance(data, dict):
        raise bad("data is not an object with page, page_size, total, items")
    items = data.get("items")
    if items is None and "items" not in data:
        raise bad("data has no items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise bad("data.items is not a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad(f"data.items[{i}] is not an object")
    total = _optional_count(data, "total", bad)
    echoed = _optional_count(data, "page_size", bad)
    return items, total, echoed or None


def _optional_count(data: dict, name: str, bad: Callable[[str], CometAPIError]) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad(f"data.{name} is not a whole number")
    return value


def total_check(rows: int, total: int | None) -> SpanCheck:
    """`total` as an alarm only: fewer rows than a `total` below 10 000 fail; 10 000 or none says nothing."""
    if total is None:
        return SpanCheck("total", NOT_CHECKED, rows, None, "the pages carry no total")
    if total >= TOTAL_CAP:
        return SpanCheck("total", NOT_CHECKED, rows, total,
                         f"total {total} is upstream's cap ({TOTAL_CAP}), not a count")
    if rows < total:
        return SpanCheck("total", FAILED, rows, total, f"the pages held {rows} rows but total says {total}")
    return SpanCheck("total", PASSED, rows, total)


def _not_offered(exc: CometAPIError) -> bool:
    """The answer of a gateway without the route: 404/405/501, a redirect, `success: false`, an HTML page."""
    if exc.status in (404, 405, 501) or exc.kind in ("redirect", "error_body"):
        return True
    return exc.kind in ("not_json", "unexpected_body") and exc.status is not None and 200 <= exc.status < 300


def fetch_token_usage(
    api_url: str,
    api_key: str,
    *,
    policy: RetryPolicy = RetryPolicy(),
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """`GET /api/usage/token` with the API key as Bearer: the calling key's own identity (`data`).

    Amounts are in internal units (500 000 = 1 USD); `unlimited_quota` or a positive
    `total_available` means a leaked copy of the key could spend money.
    """
    if not api_key:
        raise ValueError("fetch_token_usage needs an API key (COMETAPI_KEY)")
    remember(api_key)
    paced = PacedTransport(api_url, transport, critical=RateLimit(CRITICAL_LIMIT, CRITICAL_WINDOW_S))
    with make_client(api_url, timeout, paced) as client:
        body = request_json(
            client,
            "GET",
            TOKEN_USAGE_PATH,
            headers={"Authorization": f"Bearer {api_key}"},
            secrets=(api_key,),
            policy=policy,
            sleep=sleep,
            service="CometAPI token usage",
            auth_hint="COMETAPI_KEY",
            url_hint="COMETAPI_API_URL",
        )
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise CometAPIError(
            f"CometAPI token usage GET {TOKEN_USAGE_PATH} answered an unexpected body: no data object",
            code="unexpected_body",
            url=TOKEN_USAGE_PATH,
            kind="unexpected_body",
        )
    return data
