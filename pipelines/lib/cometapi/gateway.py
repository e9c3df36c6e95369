"""The console API on api.cometapi.com: the per-request ledger, the model catalog, a key's identity.

Only transport and envelopes live here; what a ledger item means is parsed elsewhere.
`/api/log/self` wants the console's access token (`Authorization: Bearer <token>`; some
deployments want the raw token). Upstream new-api also checks a `New-Api-User: <user id>` header
against the token's owner: pass `user_id` where the deployment demands it.

A span of the ledger (the lake pulls one reporting day at a time) is fetched by `pull_span`, and
checked without trusting `total` (upstream caps it at 10 000: model/log.go logSearchCountLimit):
- paging (`iter_log_pages`) reads pages of at most 100 items from p=1 until an EMPTY page; `total`
  only raises an alarm (fewer rows than a `total` below 10 000); a page that repeats the one before,
  or a short page followed by more, fails the span;
- the span's type-2 quota is compared with `/api/log/self/stat` (upstream sums type 2 only:
  model/log.go SumUsedQuota) and with `/api/data/self` (hourly totals of consume rows per model:
  model/usedata.go) where the server offers them (`SpanCheck`); a mismatch fails the span
  (`LedgerIncomplete`), a check the server does not offer is "not_checked";
- the CSV export (`/api/log/self/export`, CometAPI's own: no route upstream) is tried first and
  used only when its header is recognised and its rows pass those same checks (at least one of them
  offered); otherwise the span is paged. An export that checks out comes back as string columns (`gateway_fast.export_cells`).
`pull_log` pulls a window in chunks of days the same way.

Every call to `/api/...` is paced under upstream's rate limit (`pacing.PacedTransport`: 360 requests
per 180 s per IP; 20 per 20 min on `/api/usage/token`). Paging 100 000 rows a day is ~1 000 calls,
about 8.5 minutes at that pace; a year about 51 hours (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lib.cometapi.http import (
    DEFAULT_TIMEOUT,
    CometAPIError,
    RetryPolicy,
    make_client,
    request_json,
    send_raw,
)
from pipelines.lib.cometapi.pacing import CRITICAL_LIMIT, CRITICAL_WINDOW_S, PacedTransport, RateLimit
from pipelines.lib.gateway.fast import export_cells
from pipelines.lib.gateway.ledger import LOG_CONSUME, ExportError
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
# One export call per day: as fast as one call per window (docs/benchmarks.md), while a day's CSV
# (~40 MB at 100 000 requests) bounds how long one answer takes (a proxy may time out a long one)
# and what a failed or cut-short export costs to fetch again or to page instead.
EXPORT_CHUNK_DAYS = 1
logger = logging.getLogger("comet_ledger.http")


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
class LogChunk:
    """One span of the ledger [start_ts, end_ts] as it came: exported, or paged, and how it was checked."""

    start_ts: int
    end_ts: int
    method: str = "none"  # export or paging
    cells: pa.Table | None = None  # an export, as `gateway_fast.export_cells` read it in bulk
    pages: list[list[dict]] = field(default_factory=list)  # API pages (or an export read item by item)
    calls: int = 0  # HTTP calls made (exports, checks, pages), retries not counted
    fallback: str | None = None  # why it was paged instead of exported (one redacted line)
    checks: list[SpanCheck] = field(default_factory=list)
    consume_units: int = 0  # the type-2 quota of every item received (rejected ones too)
    total: int | None = None  # `total` of the last page, for the record

    @property
    def items(self) -> int:
        return (0 if self.cells is None else self.cells.num_rows) + sum(len(page) for page in self.pages)


@dataclass
class LogPull:
    """The chunks of one window (`pull_log`)."""

    chunks: list[LogChunk] = field(default_factory=list)

    @property
    def exported_chunks(self) -> int:
        return sum(1 for chunk in self.chunks if chunk.method == "export")

    @property
    def paged_spans(self) -> int:
        return sum(1 for chunk in self.chunks if chunk.method == "paging")

    @property
    def calls(self) -> int:
        return sum(chunk.calls for chunk in self.chunks)

    @property
    def fallbacks(self) -> list[str]:
        return [chunk.fallback for chunk in self.chunks if chunk.fallback]

    @property
    def method(self) -> str:
        """`export`, `paging`, `export+paging` (some chunks fell back), or `none` (empty window)."""
        return method_of(self.exported_chunks, self.paged_spans)

    @property
    def items(self) -> int:
        return sum(chunk.items for chunk in self.chunks)


def method_of(exported: int, paged: int) -> str:
    """How a window was read: `export`, `paging`, `export+paging` or `none`."""
    used = [name for name, n in (("export", exported), ("paging", paged)) if n]
    return "+".join(used) or "none"


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
        self.export_available: bool | None = None  # False once the export answered that it is not there
        self.offered: dict[str, bool] = {}  # check name -> False once the server said it has no such route
        self.calls = 0  # calls to the ledger endpoints so far

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r}, access_token={mask(self._token)!r})"

    def pull_span(self, start_ts: int, end_ts: int, *, export: bool = True) -> LogChunk:
        """Every ledger item of [start_ts, end_ts] (unix seconds), checked; raises `LedgerIncomplete`.

        With `export` (the default), the CSV export is tried first: one call, whose CSV must pass `export_cells`
        (header, whole rows, every `created_at` inside the span) and the span's checks (`SpanCheck`),
        and at least one check must be offered. An export that is not there (404, 405, an HTML page,
        `success: false`, a header not understood) is not asked again by this client; one cut short,
        out of its span, failing or lacking a check, or still failing after the retries is paged for
        this span only. Each fallback logs one line why. Paged rows must pass the same checks.
        """
        _check_window(start_ts, end_ts)
        chunk = LogChunk(start_ts, end_ts)
        calls_before = self.calls
        totals = self._server_totals(start_ts, end_ts)
        exported = self._exported(start_ts, end_ts, chunk, totals) if self._exporting(export) else None
        if isinstance(exported, pa.Table):
            chunk.method, chunk.cells = "export", exported
        elif exported is not None:
            chunk.method, chunk.pages = "export", [exported] if exported else []
        else:
            chunk.method = "paging"
            pages = self._checked_pages(start_ts, end_ts, chunk)
            chunk.pages = pages
            chunk.consume_units = sum(consume_units(page) for page in pages)
            chunk.checks = chunk.checks + _compare(totals, chunk.consume_units)
            failed = [check for check in chunk.checks if check.status == FAILED]
            if failed:
                raise LedgerIncomplete(redact(f"{SERVICE} ledger of {_span(start_ts, end_ts)} is incomplete: "
                                              f"{'; '.join(check.detail for check in failed)}", (self._token,)))
        chunk.calls = self.calls - calls_before
        return chunk

    def _checked_pages(self, start_ts: int, end_ts: int, chunk: LogChunk) -> list[list[dict]]:
        return list(self._pages(start_ts, end_ts, MAX_PAGE_SIZE, None, chunk))

    def _server_totals(self, start_ts: int, end_ts: int) -> dict[str, tuple[int | None, str]]:
        """check name -> (the server's type-2 quota for the span, or None, and why not)."""
        return {"log_stat": self._stat_units(start_ts, end_ts), "data_self": self._data_units(start_ts, end_ts)}

    def _stat_units(self, start_ts: int, end_ts: int) -> tuple[int | None, str]:
        params = {"type": LOG_CONSUME, "start_timestamp": start_ts, "end_timestamp": end_ts}
        data = self._optional("log_stat", STAT_PATH, params)
        if isinstance(data, str):
            return None, data
        quota = data.get("quota") if isinstance(data, dict) else None
        if isinstance(quota, bool) or not isinstance(quota, int):
            raise self._error(f"data.quota is {quota!r}, not whole quota units", path=STAT_PATH)
        return quota, ""

    def _data_units(self, start_ts: int, end_ts: int) -> tuple[int | None, str]:
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

    def pull_log(self, start_ts: int, end_ts: int, *, export: bool = True,
                 chunk_days: int = EXPORT_CHUNK_DAYS) -> LogPull:
        """Every ledger item of [start_ts, end_ts], as `pull_span`s of `chunk_days` x 86 400 s."""
        _check_window(start_ts, end_ts)
        if isinstance(chunk_days, bool) or not isinstance(chunk_days, int) or chunk_days < 1:
            raise ValueError(f"chunk_days must be a whole number of days >= 1, got {chunk_days!r}")
        pull = LogPull()
        chunk_start = start_ts
        while chunk_start <= end_ts:
            chunk_end = min(chunk_start + chunk_days * 86_400 - 1, end_ts)
            pull.chunks.append(self.pull_span(chunk_start, chunk_end, export=export))
            chunk_start = chunk_end + 1
        return pull

    def _exporting(self, export: bool) -> bool:
        return export and self.export_available is not False

    def _exported(self, start_ts: int, end_ts: int, chunk: LogChunk,
                  totals: dict[str, tuple[int | None, str]]) -> pa.Table | list[dict] | None:
        """The span's rows from the export, or None (after logging why) when it must be paged."""
        span = _span(start_ts, end_ts)
        if all(units is None for units, _ in totals.values()):
            return self._fall_back(chunk, f"{SERVICE} GET {EXPORT_PATH}: the export of {span} cannot be checked "
                                          "(neither /api/log/self/stat nor /api/data/self is offered)", lasting=False)
        try:
            rows = self._export(start_ts, end_ts, f"the export of {span}")
        except CometAPIError as exc:
            lasting = not exc.retriable
            return self._fall_back(chunk, f"{exc} ({span})", lasting, expected=exc.status in (404, 405, 501))
        except ExportError as exc:
            return self._fall_back(chunk, f"{SERVICE} GET {EXPORT_PATH}: {exc}", exc.lasting)
        units = consume_units(rows)
        checks = _compare(totals, units)
        failed = [check for check in checks if check.status == FAILED]
        if failed:
            return self._fall_back(chunk, f"{SERVICE} GET {EXPORT_PATH}: the export of {span} does not add up: "
                                          f"{'; '.join(check.detail for check in failed)}", lasting=False)
        self.export_available = True
        chunk.checks, chunk.consume_units = checks, units
        return rows

    def _fall_back(self, chunk: LogChunk, reason: str, lasting: bool, expected: bool = False) -> None:
        """Page instead, saying why; a gateway without the export (upstream has no such route) is `expected`
        and logged at INFO, anything else at WARNING."""
        if lasting:
            self.export_available = False
        line = redact(f"{reason}; paging {'the rest of the window' if lasting else 'this chunk'} instead",
                      (self._token,))
        logger.log(logging.INFO if expected else logging.WARNING, "%s", line)
        chunk.fallback = line
        return None

    def _export(self, start_ts: int, end_ts: int, name: str) -> pa.Table | list[dict]:
        """The export's rows (`export_cells`: columns, or items), `ExportError` if it does not check out."""

        def read(chunks: Iterator[bytes]) -> pa.Table | list[dict]:
            body = bytearray()
            for piece in chunks:
                body += piece
            return export_cells(body, start_ts=start_ts, end_ts=end_ts, name=name)

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
        _check_window(start_ts, end_ts)
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise ValueError(f"page_size must be an int, got {type(page_size).__name__}")
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        return self._pages(start_ts, end_ts, min(page_size, MAX_PAGE_SIZE), log_type, LogChunk(start_ts, end_ts))

    def _pages(self, start_ts: int, end_ts: int, page_size: int, log_type: int | None,
               chunk: LogChunk) -> Iterator[list[dict]]:
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
            chunk.total = total
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
        check = total_check(seen, total)
        chunk.checks.append(check)
        if check.status == FAILED:
            raise self._incomplete(start_ts, end_ts, check.detail)

    def _incomplete(self, start_ts: int, end_ts: int, problem: str) -> LedgerIncomplete:
        return LedgerIncomplete(redact(f"{SERVICE} GET {LOG_PATH} for {_span(start_ts, end_ts)}: {problem}",
                                       (self._token,)))

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


def _check_window(start_ts: int, end_ts: int) -> None:
    for name, value in (("start_ts", start_ts), ("end_ts", end_ts)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if end_ts < start_ts:
        raise ValueError(f"end_ts {end_ts} is before start_ts {start_ts}")


def _span(start_ts: int, end_ts: int) -> str:
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


def consume_units(rows: pa.Table | list[dict]) -> int:
    """The type-2 quota of a span's items as received (what upstream's stat and data endpoints sum)."""
    if isinstance(rows, pa.Table):
        if "quota" not in rows.column_names or "type" not in rows.column_names or not rows.num_rows:
            return 0
        consume = rows.filter(pc.and_(pc.equal(rows["type"], str(LOG_CONSUME)),
                                      pc.match_substring_regex(rows["quota"], r"^-?[0-9]{1,17}$")))
        return int(pc.sum(pc.cast(consume["quota"], pa.int64())).as_py() or 0)
    total = 0
    for item in rows:
        quota = item.get("quota")
        if item.get("type") == LOG_CONSUME and isinstance(quota, int) and not isinstance(quota, bool) \
                and not isinstance(item.get("type"), bool):
            total += quota
    return total


_CHECK_SOURCES = {"log_stat": STAT_PATH, "data_self": DATA_PATH}


def _compare(totals: dict[str, tuple[int | None, str]], units: int) -> list[SpanCheck]:
    checks = []
    for name, (server, why) in totals.items():
        if server is None:
            checks.append(SpanCheck(name, NOT_CHECKED, units, None, why))
        elif server == units:
            checks.append(SpanCheck(name, PASSED, units, server))
        else:
            checks.append(SpanCheck(name, FAILED, units, server,
                                    f"its type-2 rows sum to {units} quota units, {_CHECK_SOURCES[name]} says {server}"))
    return checks


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
