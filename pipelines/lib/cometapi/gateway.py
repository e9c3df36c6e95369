"""The console API on api.cometapi.com: the per-request ledger, the model catalog, a key's identity.

Only transport and envelopes live here; what a ledger item means is parsed elsewhere.
`/api/log/self` wants the console's access token (`Authorization: Bearer <token>`; some
deployments want the raw token). Upstream new-api also checks a `New-Api-User: <user id>` header
against the token's owner: pass `user_id` where the deployment demands it.

A span of the ledger (the lake pulls one reporting day at a time) is fetched by `pull_span`: the bulk
CSV export (`/api/log/self/export`) where the gateway serves one and it checks out, else pages of at
most 100 items (`iter_log_pages`); the rows are the same either way. An export that checks out comes
back as string columns (`gateway_fast.export_cells`), for the lake to parse in bulk. `pull_log` pulls
a window in chunks of days the same way. At 100 000 requests a day, paging a year takes about 377 000
calls; the export 730, and half the time even on loopback (docs/benchmarks.md, "Gateway ledger:
export vs paging").
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

from pipelines.lib.cometapi.http import (
    DEFAULT_TIMEOUT,
    CometAPIError,
    RetryPolicy,
    make_client,
    request_json,
    send_raw,
)
from pipelines.lib.gateway_fast import export_cells
from pipelines.lib.gateway_ledger import ExportError
from pipelines.lib.redact import mask, redact

SERVICE = "CometAPI gateway"
LOG_PATH = "/api/log/self"
EXPORT_PATH = "/api/log/self/export"
MODELS_PATH = "/api/models"
TOKEN_USAGE_PATH = "/api/usage/token"
MAX_PAGE_SIZE = 100
# One export call per day: as fast as one call per window (docs/benchmarks.md), while a day's CSV
# (~40 MB at 100 000 requests) bounds how long one answer takes (a proxy may time out a long one)
# and what a failed or cut-short export costs to fetch again or to page instead.
EXPORT_CHUNK_DAYS = 1
logger = logging.getLogger("comet_ledger.http")


@dataclass
class LogChunk:
    """One span of the ledger [start_ts, end_ts] as it came: exported, or paged."""

    start_ts: int
    end_ts: int
    method: str = "none"  # export or paging
    cells: pa.Table | None = None  # an export, as `gateway_fast.export_cells` read it in bulk
    pages: list[list[dict]] = field(default_factory=list)  # API pages (or an export read item by item)
    calls: int = 0  # HTTP calls made (exports, total checks, pages), retries not counted
    fallback: str | None = None  # why it was paged instead of exported (one redacted line)

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
    ) -> None:
        if not access_token:
            raise ValueError("the gateway request log needs the console access token (COMETAPI_ACCESS_TOKEN)")
        self.base_url = base_url
        self._token = access_token
        self._bearer = bearer
        self._user_id = user_id
        self._policy = policy
        self._sleep = sleep
        self._client = make_client(base_url, timeout, transport)
        self.export_available: bool | None = None  # False once the export answered that it is not there
        self.calls = 0  # calls to the ledger endpoints so far

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r}, access_token={mask(self._token)!r})"

    def pull_span(self, start_ts: int, end_ts: int, *, export: bool = True) -> LogChunk:
        """Every ledger item of [start_ts, end_ts] (unix seconds): exported where possible, else paged.

        The export is one call plus a one-item page whose `total` must equal the export's row count (a
        silently capped export is caught); the CSV must pass `export_cells` (header, whole rows, every
        `created_at` inside the span). An export that is not there (404, 405, an HTML page,
        `success: false`, a header not understood) is not asked again by this client: later spans
        are paged. One cut short, out of its span, short of `total`, or still failing after the
        retries is paged for this span only. Each fallback logs one line why. Either way the rows
        are the same; a failing total check or page raises `CometAPIError` as paging does.
        """
        _check_window(start_ts, end_ts)
        chunk = LogChunk(start_ts, end_ts)
        calls_before = self.calls
        exported = self._exported(start_ts, end_ts, chunk) if self._exporting(export) else None
        if isinstance(exported, pa.Table):
            chunk.method, chunk.cells = "export", exported
        elif exported is not None:
            chunk.method, chunk.pages = "export", [exported] if exported else []
        else:
            chunk.method, chunk.pages = "paging", list(self.iter_log_pages(start_ts, end_ts))
        chunk.calls = self.calls - calls_before
        return chunk

    def pull_log(self, start_ts: int, end_ts: int, *, export: bool = True,
                 chunk_days: int = EXPORT_CHUNK_DAYS) -> LogPull:
        """Every ledger item of [start_ts, end_ts], as `pull_span`s of `chunk_days` x 86 400 s.

        Once the export is known not to be there, the rest of the window is paged in one go.
        """
        _check_window(start_ts, end_ts)
        if isinstance(chunk_days, bool) or not isinstance(chunk_days, int) or chunk_days < 1:
            raise ValueError(f"chunk_days must be a whole number of days >= 1, got {chunk_days!r}")
        pull = LogPull()
        chunk_start = start_ts
        while chunk_start <= end_ts:
            chunk_end = min(chunk_start + chunk_days * 86_400 - 1, end_ts)
            if not self._exporting(export):
                chunk_end = end_ts  # no export to come back to: page the rest in one go
            pull.chunks.append(self.pull_span(chunk_start, chunk_end, export=export))
            chunk_start = chunk_end + 1
        return pull

    def _exporting(self, export: bool) -> bool:
        return export and self.export_available is not False

    def _exported(self, start_ts: int, end_ts: int, chunk: LogChunk) -> pa.Table | list[dict] | None:
        """The span's rows from the export, or None (after logging why) when it must be paged."""
        span = _span(start_ts, end_ts)
        try:
            rows = self._export(start_ts, end_ts, f"the export of {span}")
        except CometAPIError as exc:
            lasting = not exc.retriable
            return self._fall_back(chunk, f"{exc} ({span})", lasting)
        except ExportError as exc:
            return self._fall_back(chunk, f"{SERVICE} GET {EXPORT_PATH}: {exc}", exc.lasting)
        count = rows.num_rows if isinstance(rows, pa.Table) else len(rows)
        total = self._log_total(start_ts, end_ts)
        if total is not None and total != count:
            return self._fall_back(
                chunk, f"{SERVICE} GET {EXPORT_PATH}: the export of {span} has {count} rows, "
                       f"{LOG_PATH} says total {total}", lasting=False)
        self.export_available = True
        return rows

    def _fall_back(self, chunk: LogChunk, reason: str, lasting: bool) -> None:
        if lasting:
            self.export_available = False
        line = redact(f"{reason}; paging {'the rest of the window' if lasting else 'this chunk'} instead",
                      (self._token,))
        logger.warning("%s", line)
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

    def _log_total(self, start_ts: int, end_ts: int) -> int | None:
        """`total` of `/api/log/self` for the window, from a one-item page."""
        params = {"p": 1, "page_size": 1, "start_timestamp": start_ts, "end_timestamp": end_ts}
        _, total, _ = _log_page(self._get_data(LOG_PATH, params), 1)
        return total

    def iter_log_pages(
        self,
        start_ts: int,
        end_ts: int,
        page_size: int = MAX_PAGE_SIZE,
        log_type: int | None = None,
    ) -> Iterator[list[dict]]:
        """Pages of `/api/log/self` items for [start_ts, end_ts] (unix seconds), from p=1.

        Stops at an empty page, at a short page, or once `total` items have arrived.
        `page_size` is capped at 100; each page is validated (items must be objects).
        """
        _check_window(start_ts, end_ts)
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise ValueError(f"page_size must be an int, got {type(page_size).__name__}")
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        return self._pages(start_ts, end_ts, min(page_size, MAX_PAGE_SIZE), log_type)

    def _pages(self, start_ts: int, end_ts: int, page_size: int, log_type: int | None) -> Iterator[list[dict]]:
        seen = 0
        previous: list[dict] | None = None
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
            items, total, echoed_size = _log_page(data, page)
            if not items:
                return
            if items == previous:
                raise self._error(f"page {page} repeats page {page - 1}: the server seems to ignore p")
            yield items
            seen += len(items)
            if total is not None and seen >= total:
                return
            # A server that caps page_size silently but echoes it must not end the paging early.
            if len(items) < min(page_size, echoed_size or page_size):
                if total is not None:
                    logger.warning(
                        "%s GET %s page %d is short (%d items) but total says %d; stopping at %d items",
                        SERVICE, LOG_PATH, page, len(items), total, seen,
                    )
                return
            previous = items
            page += 1

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
    with make_client(api_url, timeout, transport) as client:
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
