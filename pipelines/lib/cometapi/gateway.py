"""The console API on api.cometapi.com: the per-request ledger, the model catalog, a key's identity.

Only transport and envelopes live here; what a ledger item means is parsed elsewhere.
`/api/log/self` wants the console's access token (`Authorization: Bearer <token>`; some
deployments want the raw token). Upstream new-api also checks a `New-Api-User: <user id>` header
against the token's owner: pass `user_id` where the deployment demands it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from pipelines.lib.cometapi.http import (
    DEFAULT_TIMEOUT,
    CometAPIError,
    RetryPolicy,
    make_client,
    request_json,
)
from pipelines.lib.redact import mask, redact

SERVICE = "CometAPI gateway"
LOG_PATH = "/api/log/self"
MODELS_PATH = "/api/models"
TOKEN_USAGE_PATH = "/api/usage/token"
MAX_PAGE_SIZE = 100
logger = logging.getLogger("comet_ledger.http")


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

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r}, access_token={mask(self._token)!r})"

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
        for name, value in (("start_ts", start_ts), ("end_ts", end_ts), ("page_size", page_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {type(value).__name__}")
        if end_ts < start_ts:
            raise ValueError(f"end_ts {end_ts} is before start_ts {start_ts}")
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

    def _get_data(self, path: str, params: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self._token}" if self._bearer else self._token}
        if self._user_id is not None:
            headers["New-Api-User"] = str(self._user_id)
        body = request_json(
            self._client,
            "GET",
            path,
            params=params,
            headers=headers,
            secrets=(self._token,),
            policy=self._policy,
            sleep=self._sleep,
            service=SERVICE,
            auth_hint="COMETAPI_ACCESS_TOKEN",
            url_hint="COMETAPI_API_URL",
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
