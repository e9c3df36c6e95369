"""The embedded CometAPI: query service, gateway ledger, model catalogue and a chat endpoint on loopback.

`SimulatorServer(traffic)` serves `Traffic` over HTTP from a daemon thread (stdlib
`ThreadingHTTPServer`), silently, and only on a loopback address. Endpoints and their habits
(as CometAPI documents them, quirks included):

- `GET /user/quota?key=...[&start_date=&end_date=]`: balance, lifetime totals and `keys[]` as of now
  (the whole simulated window has happened); `daily_quota` only when both dates are given, for the
  days of `[start, end]` (inclusive) that had billed rows, keyed by reporting day in the traffic's
  `service_tz`. Bad key: 401. Malformed date, end before start, or a range over `max_range_days`:
  400 with `error.code = "invalid_request"`. The account's `keys[]` also lists the quota-0 query key.
- `GET /api/log/self`: the gateway ledger, newest first, `Authorization: Bearer <access token>` or the
  raw token. A bad token is HTTP 200 with `success: false`. `p` from 1; `page_size` defaults to 20 and
  is capped at `MAX_PAGE_SIZE` (100) rows, the cap echoed in `data.page_size`. Filters: `type` (0 or
  absent: all), `start_timestamp` / `end_timestamp` (unix seconds, inclusive), `token_name`,
  `model_name`, `group`. As upstream new-api does (model/log.go): `total` is capped at 10 000
  (`total_cap`, logSearchCountLimit); `id` is the row's place in the listing (`row_ids="page"`, since
  2026-02) or `id % 1024` (`"mod1024"`); `request_id` is omitted on rows logged before 2026-02-04 and on
  task refunds, corrections and logins (`SimRequest.logs_request_id`); token-billed calls carry the
  provider's `response_id`. `ip` is empty for task rows and for about one token row in 13. For Claude
  rows `prompt_tokens` is Anthropic's `input_tokens` (cache excluded) and `other.usage_semantic =
  "anthropic"` says so; cache reads and writes are in `other.cache_tokens` / `other.cache_creation_tokens`.
- `GET /api/log/self/stat`: `{quota, rpm, tpm}`, `quota` the sum of the window's type-2 rows
  (controller/log.go, model/log.go SumUsedQuota); `stat=False` serves no such route.
- `GET /api/data/self`: the consume rows' hourly totals per model (controller/usedata.go,
  model/usedata.go), at most a month per call; `data_self=False` serves no such route.
- `GET /api/log/self/export`: CometAPI's own (no route upstream): only with `export=True`, else 404 as
  upstream answers an unknown /api path (controller/relay.go RelayNotFound). The same rows for the
  same filters (no paging), same auth, as one CSV
- `GET /api/models`: the catalogue at the current price version. Documented fields are
  `pricing.input` / `pricing.output` (USD per 1M tokens) and `pricing.per_request` /
  `pricing.per_second`; this simulator states them before the group ratio and adds `group_ratio`,
  `cache_read`, `cache_write`, `billing_category`, `owned_by`, `endpoint` (plausible guesses).
  glm-4.6 is listed: the gateway knows its price, only our price table lacks it.
- `GET /api/usage/token`: the calling key's identity (`ledger-query`, quota 0, or unlimited with
  `query_key_unlimited=True`).
- `POST /v1/chat/completions`: a small deterministic completion (stream or not); not billed.
- Anything else: 301 to https://www.cometapi.com/ with an HTML body, like the real service (an /api or
  /v1 path: upstream's 404 JSON).

Rate limits, as upstream by default (common/init.go, middleware/rate-limit.go, common/rate-limit.go):
360 requests per 180 s per client IP on `/api`, 20 per 1 200 s on `/api/usage/token`, a sliding
window in whole unix seconds; a refusal is HTTP 429 with an empty body and no `Retry-After`
(`rate_limit`, `critical_limit`: None switches one off; `whole_seconds=False` counts fractions).

Restatement: the late correction of `traffic.planted["restatement"]` is hidden until a `/user/quota`
response whose `daily_quota` covers its day has been handed to the socket (a truncated body does not
count); from then on `/user/quota` and `/api/log/self` include it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pipelines.lib import clock
from pipelines.simulator.catalog import GROUP, GROUP_RATIO, current_catalog, json_number
from pipelines.simulator.faults import FaultPlan, Injected
from pipelines.simulator.inbox import chat_usage, response_body
from pipelines.simulator.traffic import (
    LOG_CONSUME,
    LOG_ERROR,
    LOG_LOGIN,
    LOG_REFUND,
    NO_USAGE_CONTENT,
    SimRequest,
    Traffic,
    generate_traffic,
)

DEFAULT_API_KEY = "sk-sim-query-key-0000"
DEFAULT_ACCESS_TOKEN = "sim-access-token-0000"
QUERY_KEY_NAME = "ledger-query"
UNLIMITED_REMAIN = 999999999
HOME_URL = "https://www.cometapi.com/"
LOG_PATH = "/api/log/self"
EXPORT_PATH = "/api/log/self/export"
STAT_PATH = "/api/log/self/stat"
DATA_PATH = "/api/data/self"
TOKEN_USAGE_PATH = "/api/usage/token"
# model/log.go: the user-log count runs with Limit(logSearchCountLimit), so `total` stops at 10 000
TOTAL_CAP = 10_000
# controller/usedata.go GetUserQuotaDates: at most one month (2 592 000 s) per call
DATA_MAX_SPAN_S = 2_592_000
# common/init.go defaults: GLOBAL_API_RATE_LIMIT 360 per GLOBAL_API_RATE_LIMIT_DURATION 180 s per client
# IP on /api; middleware/rate-limit.go CriticalRateLimit (20 per 1200 s) on /api/usage/token
API_RATE_LIMIT = (360, 180.0)
CRITICAL_RATE_LIMIT = (20, 1200.0)
CRITICAL_PATHS = (TOKEN_USAGE_PATH, "/api/log/token")
MAX_PAGE_SIZE = 100  # rows per /api/log/self page, whatever page_size asks for
DEFAULT_PAGE_SIZE = 20
EXPORT_COLUMNS = ("id", "created_at", "type", "content", "token_name", "model_name", "quota", "prompt_tokens",
                  "completion_tokens", "use_time", "is_stream", "group", "ip", "request_id", "response_id", "other")
_EXPORT_BATCH_ROWS = 2000  # rows per streamed chunk
BAD_TOKEN_MESSAGE = "无权进行此操作，access token 无效"
_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    405: "method_not_allowed",
    429: "rate_limit_exceeded",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_OWNERS = {"gpt": "openai", "o4": "openai", "claude": "anthropic", "glm": "zhipu", "mj": "midjourney",
           "suno": "suno", "kling": "kling"}


@dataclass(frozen=True)
class CallRecord:
    """One request the simulator received. `params` has `key` masked; `status` 0 = connection reset."""

    method: str
    path: str
    params: dict[str, str]
    status: int
    fault: str | None = None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    payload: object = None  # the JSON value of `body`, for faults that alter it
    on_sent: Callable[[], None] | None = None
    stream: Iterator[bytes] | None = None  # sent chunked instead of `body`


def _json_reply(status: int, payload, **kwargs) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Reply(status, body, "application/json", payload=payload, **kwargs)


def _html_reply(status: int, html: str, **kwargs) -> _Reply:
    return _Reply(status, html.encode("utf-8"), "text/html; charset=utf-8", **kwargs)


def error_envelope(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "comet_api_error", "param": "", "code": code}}


def _error(status: int, message: str, code: str | None = None, **kwargs) -> _Reply:
    return _json_reply(status, error_envelope(message, code or _STATUS_CODES.get(status, "error")), **kwargs)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # no tracebacks on stderr
        pass


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 30
    sim: SimulatorServer  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: no access log
        pass

    def do_GET(self) -> None:
        self.sim._handle(self, "GET")

    def do_POST(self) -> None:
        self.sim._handle(self, "POST")

    def do_PUT(self) -> None:
        self.sim._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.sim._handle(self, "DELETE")


class SimulatorServer:
    """CometAPI on loopback for tests and the demo. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        traffic: Traffic,
        api_key: str = DEFAULT_API_KEY,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_range_days: int | None = None,
        unlimited_style: str = "huge",
        initial_credit_usd: float = 500.0,
        query_key_unlimited: bool = False,
        username: str = "sim_user",
        export: bool = False,
        stat: bool = True,
        data_self: bool = True,
        total_cap: int | None = TOTAL_CAP,
        row_ids: str = "page",
        rate_limit: tuple[int, float] | None = API_RATE_LIMIT,
        critical_limit: tuple[int, float] | None = CRITICAL_RATE_LIMIT,
        whole_seconds: bool = True,
    ):
        if not is_loopback(host):
            raise ValueError(f"the simulator serves on loopback only (127.0.0.1, ::1, localhost), not {host!r}")
        if unlimited_style not in ("huge", "minus_one"):
            raise ValueError("unlimited_style is 'huge' (remain 999999999, used -1) or 'minus_one' (remain -1, used 0)")
        self.traffic = traffic
        self.api_key = api_key
        self.access_token = access_token
        self.host = host
        self.port = port
        self.max_range_days = max_range_days
        self.unlimited_style = unlimited_style
        self.initial_credit_usd = Decimal(str(initial_credit_usd))
        self.query_key_unlimited = query_key_unlimited
        if row_ids not in ("page", "mod1024"):
            raise ValueError("row_ids is 'page' (upstream since 2026-02) or 'mod1024' (before)")
        self.username = username
        self.export = export
        self.stat = stat
        self.data_self = data_self
        self.total_cap = total_cap
        self.stat_adjust_units = 0  # added to /api/log/self/stat's quota: a gateway whose totals disagree
        self.row_ids = row_ids
        self.limiters = [
            _SlidingWindow(*limit, paths, whole_seconds=whole_seconds)
            for limit, paths in ((rate_limit, ("/api/",)), (critical_limit, CRITICAL_PATHS)) if limit is not None
        ]
        self.faults = FaultPlan()
        self.calls: list[CallRecord] = []
        self._calls_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._restated = False
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log_cache: OrderedDict[tuple, list[tuple[int, SimRequest]]] = OrderedDict()

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> SimulatorServer:
        if self._httpd is not None:
            return self
        handler = type("SimHandler", (_Handler,), {"sim": self})
        server_cls = _QuietServer6 if ":" in self.host else _QuietServer
        self._httpd = server_cls((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="comet-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- state --------------------------------------------------------------------------------
    @property
    def restated(self) -> bool:
        """Whether the late correction is visible (a covering daily_quota has been served)."""
        with self._state_lock:
            return self._restated

    def reset_restatement(self) -> None:
        with self._state_lock:
            self._restated = False

    def mark_restated(self) -> None:
        """Start with the late correction visible (a world whose restatement was already pulled)."""
        with self._state_lock:
            self._restated = True

    _mark_restated = mark_restated

    def truth(self) -> dict[tuple[date, str], tuple[Decimal, int]]:
        """What daily_quota reports right now, per (reporting day, key)."""
        return self.traffic.reported_daily(restated=self.restated)

    def truth_after_restatement(self) -> dict[tuple[date, str], tuple[Decimal, int]]:
        return self.traffic.reported_daily(restated=True)

    def _record(self, call: CallRecord) -> None:
        with self._calls_lock:
            self.calls.append(call)

    # --- request handling ---------------------------------------------------------------------
    def _handle(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        shown = {k: ("***" if k == "key" else v) for k, v in params.items()}

        if any(not limiter.allow(handler.client_address[0], path) for limiter in self.limiters):
            # middleware/rate-limit.go: c.Status(http.StatusTooManyRequests); c.Abort(): no body, no Retry-After
            self._record(CallRecord(method, path, shown, 429, "rate_limited"))
            _send(handler, method, _Reply(429, b"", ""))
            return
        injected = self.faults.mode("maintenance", path) or self.faults.take(path)
        kind = injected.kind if injected else None
        if kind == "reset":
            self._record(CallRecord(method, path, shown, 0, kind))
            _abort(handler)
            return
        reply = self._fault_reply(injected, path)
        if reply is None:
            if kind == "slow":
                time.sleep(float(injected.opts.get("delay", 1.0)))
            reply = self._route(handler, method, path, params, body)
            if kind in ("truncated_json", "renamed_field", "missing_field"):
                reply = _transform(reply, injected)
        if reply.on_sent is not None and kind != "truncated_json":
            reply.on_sent()  # before the bytes go out, so a client's next call already sees it
        self._record(CallRecord(method, path, shown, reply.status, kind))
        _send(handler, method, reply)

    def _fault_reply(self, injected: Injected | None, path: str) -> _Reply | None:
        if injected is None:
            return None
        opts = injected.opts
        if injected.kind == "maintenance":
            return _html_reply(503, _MAINTENANCE_HTML)
        if injected.kind == "rate_limit":
            retry_after = str(opts.get("retry_after", 1))
            message = "Rate limit reached for requests, please try again later"
            return _error(429, message, headers={"Retry-After": retry_after})
        if injected.kind == "status":
            if injected.status == 524:
                return _html_reply(524, _CLOUDFLARE_524)
            code = opts.get("code") or _STATUS_CODES.get(injected.status, "upstream_error")
            return _error(injected.status, f"simulated upstream failure ({injected.status})", code)
        if injected.kind == "html_redirect":
            location = opts.get("location", HOME_URL)
            return _html_reply(301, _redirect_html(location), headers={"Location": location})
        if injected.kind == "error_body_200":
            message = opts.get("message", "当前分组上游负载已饱和，请稍后再试")
            if path.startswith("/api/"):
                return _json_reply(200, {"success": False, "message": message})
            return _json_reply(200, error_envelope(message, "upstream_error"))
        return None

    def _route(self, handler: _Handler, method: str, path: str, params: dict, body: bytes) -> _Reply:
        routes = {
            "/user/quota": ("GET", self._user_quota),
            LOG_PATH: ("GET", self._log_self),
            EXPORT_PATH: ("GET", self._log_export),
            STAT_PATH: ("GET", self._log_stat),
            DATA_PATH: ("GET", self._data_self),
            "/api/models": ("GET", self._models),
            "/api/usage/token": ("GET", self._usage_token),
            "/v1/chat/completions": ("POST", self._chat),
        }
        route = routes.get(path.rstrip("/") or "/")
        if route is None or not self._offers(path.rstrip("/")):
            if path.startswith(("/api", "/v1")):
                return _relay_not_found(method, path)
            return _html_reply(301, _redirect_html(HOME_URL), headers={"Location": HOME_URL})
        allowed, fn = route
        if method != allowed:
            return _error(405, f"{method} is not allowed on {path}", headers={"Allow": allowed})
        return fn(handler, params, body)

    # --- /user/quota --------------------------------------------------------------------------
    def _user_quota(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        if params.get("key") != self.api_key:
            return _error(401, "Invalid API key: the key is missing, wrong or disabled", "invalid_api_key")
        raw = {name: params.get(name) or None for name in ("start_date", "end_date")}
        parsed = {name: _parse_date(value) for name, value in raw.items() if value is not None}
        malformed = [name for name, value in parsed.items() if value is None]
        window: tuple[date, date] | None = None
        if malformed:
            if not self.faults.mode("accept_malformed_dates", "/user/quota"):
                name = malformed[0]
                return _error(400, f"{name} must be a date in YYYY-MM-DD form, got {raw[name]!r}", "invalid_request")
        elif len(parsed) == 2:
            first, last = parsed["start_date"], parsed["end_date"]
            if last < first:
                return _error(400, f"end_date {last} is before start_date {first}", "invalid_request")
            span = (last - first).days + 1
            if self.max_range_days is not None and span > self.max_range_days:
                message = f"date range of {span} days exceeds the maximum of {self.max_range_days}"
                return _error(400, message, "invalid_request")
            window = (first, last)

        restated = self.restated
        totals = self.traffic.key_totals(restated)
        used = sum((usd for usd, _ in totals.values()), Decimal(0))
        payload: dict = {
            "username": self.username,
            "total_quota": _usd(self.initial_credit_usd - used),
            "total_used_quota": _usd(used),
            "request_count": sum(n for _, n in totals.values()),
            "keys": [
                self._key_entry(k.name, k.unlimited, k.remain_quota_usd, totals[k.name][0]) for k in self.traffic.keys
            ]
            + [self._key_entry(QUERY_KEY_NAME, self.query_key_unlimited, 0.0, Decimal(0))],
        }
        on_sent = None
        if window is not None:
            payload["daily_quota"] = self._daily_quota(*window, restated)
            planted_day = self.traffic.planted_dates["restatement"]
            if window[0] <= planted_day <= window[1] and not restated:
                on_sent = self._mark_restated
        return _json_reply(200, payload, on_sent=on_sent)

    def _key_entry(self, name: str, unlimited: bool, allowance: float | None, used: Decimal) -> dict:
        if unlimited:
            if self.unlimited_style == "huge":
                return {"name": name, "remain_quota": UNLIMITED_REMAIN, "used_quota": -1}
            return {"name": name, "remain_quota": -1, "used_quota": 0}
        remain = max(Decimal(str(allowance or 0)) - used, Decimal(0))  # an exhausted key stops at 0
        return {"name": name, "remain_quota": _usd(remain), "used_quota": _usd(used)}

    def _daily_quota(self, first: date, last: date, restated: bool) -> dict[str, list[dict]]:
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        reported = self.traffic.reported_daily(restated, days=days)
        out: dict[str, list[dict]] = {}
        for day in days:
            entries = [
                {"token_name": k.name, "quota_used": _usd(usd), "request_count": count}
                for k in self.traffic.keys
                if (day, k.name) in reported
                for usd, count in [reported[(day, k.name)]]
            ]
            if entries:
                out[day.isoformat()] = entries
        return out

    # --- /api/log/self ------------------------------------------------------------------------
    def _access_token_ok(self, handler: _Handler) -> bool:
        auth = (handler.headers.get("Authorization") or "").strip()
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else auth
        return token == self.access_token

    def _log_filters(self, params: dict) -> tuple:
        return (
            self.restated,
            _int(params.get("type"), 0),
            _int(params.get("start_timestamp"), 0) or None,
            _int(params.get("end_timestamp"), 0) or None,
            params.get("token_name") or None,
            params.get("model_name") or None,
            params.get("group") or None,
        )

    def _offers(self, path: str) -> bool:
        """Whether this gateway has the route: the export is CometAPI's own (no route upstream)."""
        return {EXPORT_PATH: self.export, STAT_PATH: self.stat, DATA_PATH: self.data_self}.get(path, True)

    def _log_self(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        if not self._access_token_ok(handler):
            return _json_reply(200, {"success": False, "message": BAD_TOKEN_MESSAGE})
        page = max(1, _int(params.get("p"), 1))
        page_size = _int(params.get("page_size"), DEFAULT_PAGE_SIZE)
        page_size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        rows = self._log_rows(self._log_filters(params))
        start = (page - 1) * page_size
        window = rows[start : start + page_size]
        # model/log.go formatUserLogs: `id` is the row's place on the page (startIdx + i + 1) since
        # 2026-02, `id % 1024` before: it identifies nothing
        items = [_log_item(start + i + 1 if self.row_ids == "page" else running_id % 1024, row)
                 for i, (running_id, row) in enumerate(window)]
        total = len(rows) if self.total_cap is None else min(len(rows), self.total_cap)
        data = {"page": page, "page_size": page_size, "total": total, "items": items}
        return _json_reply(200, {"success": True, "message": "", "data": data})

    def _log_stat(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        """controller/log.go GetLogsSelfStat -> model/log.go SumUsedQuota: `quota` sums the type-2 rows
        of the window (refunds not subtracted, whatever `type` asks); rpm/tpm cover the last 60 s."""
        if not self._access_token_ok(handler):
            return _json_reply(200, {"success": False, "message": BAD_TOKEN_MESSAGE})
        restated, _, *rest = self._log_filters(params)
        rows = self._log_rows((restated, LOG_CONSUME, *rest))
        quota = sum(row.quota_units for _, row in rows) + self.stat_adjust_units
        return _json_reply(200, {"success": True, "message": "", "data": {"quota": quota, "rpm": 0, "tpm": 0}})

    def _data_self(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        """controller/usedata.go GetUserQuotaDates / model/usedata.go: the consume rows' hourly totals per
        model (LogQuotaData truncates created_at to the hour), the hour inside [start, end]; at most a month."""
        if not self._access_token_ok(handler):
            return _json_reply(200, {"success": False, "message": BAD_TOKEN_MESSAGE})
        try:
            start, end = int(params.get("start_timestamp", "")), int(params.get("end_timestamp", ""))
        except ValueError:
            return _json_reply(400, {"success": False, "message": "start_timestamp 格式错误"})
        if end - start > DATA_MAX_SPAN_S:
            return _json_reply(200, {"success": False, "message": "时间跨度不能超过 1 个月"})
        rows = self._log_rows((self.restated, LOG_CONSUME, start - 3600, end + 3600, None, None, None))
        buckets: dict[tuple[str, int], list[int]] = {}
        for _, row in rows:
            created = int(row.ts.timestamp())
            hour = created - created % 3600
            if start <= hour <= end:
                entry = buckets.setdefault((row.model, hour), [0, 0, 0])
                entry[0] += row.prompt_tokens + row.completion_tokens
                entry[1] += 1
                entry[2] += row.quota_units
        data = [{"id": 0, "user_id": 1, "username": self.username, "model_name": model, "created_at": hour,
                 "token_used": used, "count": count, "quota": quota}
                for (model, hour), (used, count, quota) in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
        return _json_reply(200, {"success": True, "message": "", "data": data})

    def _log_export(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        unavailable = self.faults.mode("export_unavailable", EXPORT_PATH)
        if unavailable is not None:
            return _export_unavailable(unavailable.opts.get("style", "404"))
        if not self._access_token_ok(handler):
            return _json_reply(200, {"success": False, "message": BAD_TOKEN_MESSAGE})
        rows = self._log_rows(self._log_filters(params))
        name = f"log-{params.get('start_timestamp') or 'all'}-{params.get('end_timestamp') or 'all'}.csv"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return _Reply(200, b"", "text/csv; charset=utf-8", headers=headers, stream=_export_chunks(rows))

    def _log_rows(self, filters: tuple) -> list[tuple[int, SimRequest]]:
        """(running id, row) matching the filters, newest first; cached per filter set."""
        with self._state_lock:
            cached = self._log_cache.get(filters)
        if cached is not None:
            return cached
        restated, log_type, start_ts, end_ts, token_name, model_name, group = filters
        traffic = self.traffic
        first = traffic.day_of(datetime.fromtimestamp(start_ts, UTC)) - timedelta(days=1) if start_ts else traffic.start
        last = traffic.day_of(datetime.fromtimestamp(end_ts, UTC)) + timedelta(days=1) if end_ts else traffic.end
        first, last = max(first, traffic.start), min(last, traffic.end - timedelta(days=1))
        out: list[tuple[int, SimRequest]] = []
        day = last
        while day >= first:
            base = day.toordinal() * 104_729
            rows = traffic.requests_for_day(day)
            for index in range(len(rows) - 1, -1, -1):
                row = rows[index]
                created = int(row.ts.timestamp())
                if (
                    (not log_type or row.log_type == log_type)
                    and (start_ts is None or created >= start_ts)
                    and (end_ts is None or created <= end_ts)
                    and (token_name is None or row.key_name == token_name)
                    and (model_name is None or row.model == model_name)
                    and (group is None or group == GROUP)
                    and traffic.is_visible(row, restated)
                ):
                    out.append((base + index, row))
            day -= timedelta(days=1)
        with self._state_lock:
            self._log_cache[filters] = out
            while len(self._log_cache) > 16:
                self._log_cache.popitem(last=False)
        return out

    # --- /api/models, /api/usage/token, /v1/chat/completions ----------------------------------
    def _models(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        data = []
        for model, price in current_catalog(self.traffic.start, self.traffic.days).items():
            token = not price.per_call
            data.append(
                {
                    "id": model,
                    "object": "model",
                    "owned_by": next((v for k, v in _OWNERS.items() if model.startswith(k)), "cometapi"),
                    "billing_category": price.billing_category,
                    "endpoint": price.endpoint,
                    "pricing": {
                        "input": json_number(price.input_usd_per_mtok) if token else None,
                        "output": json_number(price.output_usd_per_mtok) if token else None,
                        "cache_read": json_number(price.cache_read_usd_per_mtok) if token else None,
                        "cache_write": json_number(price.cache_write_usd_per_mtok) if token else None,
                        "per_request": None if token else json_number(price.model_price),
                        "per_second": None,
                        "group_ratio": json_number(GROUP_RATIO),
                    },
                }
            )
        return _json_reply(200, {"success": True, "message": "", "data": data})

    def _bearer_ok(self, handler: _Handler) -> bool:
        auth = (handler.headers.get("Authorization") or "").strip()
        return auth.lower().startswith("bearer ") and auth[7:].strip() == self.api_key

    def _usage_token(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        if not self._bearer_ok(handler):
            return _error(401, "Invalid API key: the key is missing, wrong or disabled", "invalid_api_key")
        data = {
            "object": "token_usage",
            "name": QUERY_KEY_NAME,
            "total_granted": 0,
            "total_used": 0,
            "total_available": 0,
            "unlimited_quota": self.query_key_unlimited,
            "model_limits": {},
            "model_limits_enabled": False,
            "expires_at": 0,
        }
        return _json_reply(200, {"code": True, "message": "ok", "data": data})

    def _chat(self, handler: _Handler, params: dict, body: bytes) -> _Reply:
        if not self._bearer_ok(handler):
            return _error(401, "Invalid API key: the key is missing, wrong or disabled", "invalid_api_key")
        try:
            request = json.loads(body or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            return _error(400, "the body must be a JSON object with a 'messages' list", "invalid_request")
        model = str(request.get("model") or "gpt-4o-mini")
        text = "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in request["messages"])
        prompt = 7 + 4 * len(request["messages"]) + len(text) // 4
        now = clock.now()
        created = int(now.timestamp())
        digest = hashlib.blake2b(f"{model}:{text}".encode(), digest_size=8).hexdigest()
        request_id = now.strftime("%Y%m%d%H%M%S") + digest[:10]
        head = {"id": "chatcmpl-sim" + request_id[-12:], "created": created, "model": model}
        usage = chat_usage(prompt, 2)
        headers = {"X-Cometapi-Request-Id": request_id}
        if request.get("stream"):
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            chunks = [
                head | {"object": "chat.completion.chunk",
                        "choices": [
                            {"index": 0, "delta": {"role": "assistant", "content": "Four"}, "finish_reason": None}
                        ],
                        "usage": None},
                head | {"object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
            ]
            if include_usage:
                chunks.append(head | {"object": "chat.completion.chunk", "choices": [], "usage": usage})
            sse = "".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return _Reply(200, sse.encode(), "text/event-stream", headers=headers)
        payload = head | {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Four"}, "finish_reason": "stop"}],
            "usage": usage,
        }
        return _json_reply(200, payload, headers=headers)


# --- ledger items -----------------------------------------------------------------------------
def _log_item(row_id: int, row: SimRequest) -> dict:
    anthropic = row.other.get("usage_semantic") == "anthropic"
    consume = row.log_type == LOG_CONSUME and row.correction_of is None
    item = {
        "id": row_id,
        "created_at": int(row.ts.timestamp()),
        "type": row.log_type,
        "content": _content(row),
        "token_name": row.key_name,
        "model_name": row.model,
        "quota": row.quota_units,
        "prompt_tokens": row.uncached_prompt_tokens if anthropic else row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "use_time": max(1, round(row.latency_ms / 1000)) if consume else 0,
        "is_stream": row.is_stream,
        "group": GROUP,
        "ip": row.source_ip if row.ip_logged else "",
        "request_id": row.request_id,
        "other": json.dumps(row.other, separators=(",", ":")),
    }
    if not row.logs_request_id:
        del item["request_id"]  # model/log.go: `request_id,omitempty`, and empty before 2026-02
    response_id = _response_id(row) if consume and row.usage_shape != "task" else ""
    if response_id:
        # the provider's response id, the `id` the client received (CometAPI's CLI reads `response_id`)
        item["response_id"] = response_id
    return item


def _response_id(row: SimRequest) -> str:
    body = response_body(row)
    carried = body.get("response") or body.get("message") or body
    return str(carried.get("id") or body.get("id") or "")


def _content(row: SimRequest) -> str:
    other = row.other
    if row.log_type == LOG_ERROR:
        return f"upstream error: status {other.get('status_code', 500)}"
    if row.correction_of:
        return "adaptor调整"  # service/task_billing.go RecalculateTaskQuota logs its `reason` as the content
    if row.log_type == LOG_REFUND:
        return ""  # service/task_billing.go RefundTaskQuota: no content, the reason is in other
    if row.log_type == LOG_LOGIN:
        return f"用户登录，登录方式：{other['op']['params']['method']}"  # model/log.go RecordLoginLog
    if row.log_type == LOG_CONSUME and not row.usage_known_to_client:
        return NO_USAGE_CONTENT  # service/text_quota.go: usage == nil -> "上游无计费信息"
    if other.get("model_price", -1) != -1:
        return f"fixed price {other['model_price']}, group ratio {other['group_ratio']}"
    return (
        f"model ratio {other['model_ratio']}, completion ratio {other['completion_ratio']}, "
        f"group ratio {other['group_ratio']}"
    )


def _export_chunks(rows: list[tuple[int, SimRequest]]) -> Iterator[bytes]:
    """The CSV export of `rows`, a batch of rows per chunk (None is an empty cell, a bool true/false)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    def cells(item: dict) -> list:
        return [item.get(column, "") for column in EXPORT_COLUMNS]

    for first in range(0, len(rows), _EXPORT_BATCH_ROWS):
        batch = [_log_item(first + i + 1, row) for i, (_, row) in enumerate(rows[first : first + _EXPORT_BATCH_ROWS])]
        for item in batch:
            item["is_stream"] = "true" if item["is_stream"] else "false"
        writer.writerows(map(cells, batch))
        yield out.getvalue().encode("utf-8")
        out.seek(0)
        out.truncate()
    yield out.getvalue().encode("utf-8")


def _relay_not_found(method: str, path: str) -> _Reply:
    """controller/relay.go RelayNotFound, what upstream answers for an /api or /v1 path it has no route for."""
    return _json_reply(404, {"error": {"message": f"Invalid URL ({method} {path})", "type": "invalid_request_error",
                                       "param": "", "code": ""}})


class _SlidingWindow:
    """common/rate-limit.go InMemoryRateLimiter.Request, per client IP: the arrival times of the last
    `limit` allowed requests; a request is refused while the oldest of them is less than `window` old.
    Upstream counts whole unix seconds (`whole_seconds`); refused requests are not recorded."""

    def __init__(self, limit: int, window: float, paths: tuple[str, ...], *, whole_seconds: bool = True) -> None:
        self.limit, self.window, self.paths, self.whole_seconds = limit, window, paths, whole_seconds
        self._queues: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def allow(self, ip: str, path: str) -> bool:
        if not any(path == p or path.startswith(p) for p in self.paths):
            return True
        now = time.time()
        now = float(int(now)) if self.whole_seconds else now
        with self._lock:
            queue = self._queues.setdefault(ip, [])
            if len(queue) < self.limit:
                queue.append(now)
                return True
            if now - queue[0] >= self.window:
                queue.pop(0)
                queue.append(now)
                return True
            self.refused += 1
            return False


def _export_unavailable(style: str) -> _Reply:
    """What a gateway without the export answers (fault `export_unavailable`)."""
    if style == "405":
        return _error(405, f"GET is not allowed on {EXPORT_PATH}", headers={"Allow": "POST"})
    if style == "success_false":
        return _json_reply(200, {"success": False, "message": "日志导出功能未开启"})
    if style == "html_200":  # the console's web app, served for any path it does not know
        return _html_reply(200, _CONSOLE_APP_HTML)
    return _html_reply(404, _NOT_FOUND_HTML)


# --- wire helpers -----------------------------------------------------------------------------
def _send(handler: _Handler, method: str, reply: _Reply) -> None:
    try:
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.content_type:
            handler.send_header("Content-Type", reply.content_type)
        if reply.stream is not None:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for chunk in reply.stream:
                if chunk:
                    handler.wfile.write(b"%x\r\n" % len(chunk))
                    handler.wfile.write(chunk)
                    handler.wfile.write(b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(reply.body)
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True


def _abort(handler: _Handler) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP reset and no response at all."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass


def _transform(reply: _Reply, injected: Injected) -> _Reply:
    if reply.stream is not None:
        return _transform_csv(reply, injected)
    if reply.payload is None:
        return reply
    if injected.kind == "truncated_json":
        return _Reply(reply.status, reply.body[: len(reply.body) // 2], reply.content_type, reply.headers)
    if injected.kind == "renamed_field":
        payload = _rename(reply.payload, injected.opts["from_"], injected.opts["to"])
    else:
        payload = _drop(reply.payload, injected.opts["field"])
    still_daily = isinstance(payload, dict) and "daily_quota" in payload  # the restatement needs it served
    return _json_reply(reply.status, payload, headers=reply.headers, on_sent=reply.on_sent if still_daily else None)


def _transform_csv(reply: _Reply, injected: Injected) -> _Reply:
    """The body faults on a CSV export: cut in half (the HTTP answer complete), a column renamed or dropped."""
    body = b"".join(reply.stream or ())
    if injected.kind == "truncated_json":
        body = body[: len(body) // 2]
    else:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        header = rows[0] if rows else []
        if injected.kind == "renamed_field":
            old, new = injected.opts["from_"], injected.opts["to"]
            rows[0] = [new if column == old else column for column in header]
        else:
            keep = [i for i, column in enumerate(header) if column != injected.opts["field"]]
            rows = [[row[i] for i in keep if i < len(row)] for row in rows]
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        body = out.getvalue().encode("utf-8")
    return _Reply(reply.status, body, reply.content_type, reply.headers)


def _rename(value, old: str, new: str):
    if isinstance(value, dict):
        return {(new if k == old else k): _rename(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, old, new) for v in value]
    return value


def _drop(value, name: str):
    if isinstance(value, dict):
        return {k: _drop(v, name) for k, v in value.items() if k != name}
    if isinstance(value, list):
        return [_drop(v, name) for v in value]
    return value


def _parse_date(raw: str) -> date | None:
    if len(raw) != 10 or raw[4] != "-" or raw[7] != "-":
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def _usd(amount: Decimal) -> float:
    return float(Decimal(amount).quantize(Decimal("0.000001")))


def _redirect_html(location: str) -> str:
    return (
        "<html>\r\n<head><title>301 Moved Permanently</title></head>\r\n<body>\r\n"
        f"<center><h1>301 Moved Permanently</h1></center>\r\n<hr><center>nginx</center>\r\n"
        f"<p><a href=\"{location}\">{location}</a></p>\r\n</body>\r\n</html>\r\n"
    )


_NOT_FOUND_HTML = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_CONSOLE_APP_HTML = (
    "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><title>CometAPI</title>"
    "<script type=\"module\" src=\"/assets/index.js\"></script></head><body><div id=\"root\"></div></body></html>"
)
_MAINTENANCE_HTML = (
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>CometAPI - scheduled maintenance</title></head>"
    "<body><h1>Scheduled maintenance</h1><p>CometAPI is undergoing scheduled maintenance (01:00-05:00). "
    "Please try again later.</p></body></html>"
)
_CLOUDFLARE_524 = (
    "<!DOCTYPE html>\n<!--[if lt IE 7]> <html class=\"no-js ie6 oldie\" lang=\"en-US\"> <![endif]-->\n"
    "<html lang=\"en-US\"><head><title>api.cometapi.com | 524: A timeout occurred</title>"
    "<meta charset=\"UTF-8\" /></head><body><div id=\"cf-wrapper\"><div id=\"cf-error-details\">"
    "<h1><span class=\"cf-error-type\">A timeout occurred</span> <span class=\"code-label\">Error code 524</span></h1>"
    "<p>The origin web server timed out responding to this request.</p>"
    "<span>Cloudflare Ray ID: <strong>8f2b6c1d9a7e4c3b</strong></span>"
    "<span>Performance &amp; security by <a href=\"https://www.cloudflare.com/5xx-error-landing\">Cloudflare</a></span>"
    "</div></div></body></html>\n"
)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    traffic: Traffic | None = None,
    *,
    seed: int = 7,
    start: date | None = None,
    days: int = 30,
    requests_per_day: int = 40,
    service_tz: str = "UTC",
    announce: Callable[[str], None] = print,
    **server_kwargs,
) -> None:
    """Serve the simulator in the foreground until interrupted (for `comet-ledger simulate`).

    Announces the base URL and the planted dates; the simulator's credentials are the
    `DEFAULT_API_KEY` / `DEFAULT_ACCESS_TOKEN` constants unless given in `server_kwargs`.
    """
    traffic = traffic or generate_traffic(seed=seed, start=start, days=days, requests_per_day=requests_per_day,
                                          service_tz=service_tz)
    stop = threading.Event()
    with SimulatorServer(traffic, host=host, port=port, **server_kwargs) as server:
        announce(f"CometAPI simulator on {server.url} (query service and API base URL)")
        announce(f"traffic: {traffic.start} .. {traffic.end - timedelta(days=1)}, seed {traffic.seed}, "
                 f"{traffic.requests_per_day} requests/day, reporting days in {traffic.service_tz}")
        try:
            stop.wait()
        except KeyboardInterrupt:
            announce("simulator stopped")
