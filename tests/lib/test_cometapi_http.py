"""The request discipline (retries, JSON checks, redaction) and the console API client."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.lib import clock
from pipelines.lib.cometapi.gateway import GatewayClient, fetch_token_usage
from pipelines.lib.cometapi.http import CometAPIError, RetryPolicy, make_client, request_json
from pipelines.lib.cometapi.query import QueryClient

KEY = "sk-LEAKCANARY-1234567890abcdef"
LEAK_PARTS = (KEY, "LEAKCANARY", "1234567890abcdef")
TOKEN = "console-token-LEAKCANARY-0987654321"
BASE = "https://query.example.test"
SERVICE = "CometAPI query service"


class Server:
    """A scripted MockTransport: each request takes the next step (a Response, or an exception to raise)."""

    def __init__(self, *steps: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step

    @property
    def calls(self) -> int:
        return len(self.requests)


def ok(body=None) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"ok": True})


def error_json(status: int, code: str | None, message: str, headers: dict | None = None) -> httpx.Response:
    error = {"message": message, "type": "comet_api_error", "param": ""}
    if code is not None:
        error["code"] = code
    return httpx.Response(status, json={"error": error}, headers=headers)


def html(status: int, title: str, headers: dict | None = None) -> httpx.Response:
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return httpx.Response(status, text=body, headers={"content-type": "text/html; charset=utf-8", **(headers or {})})


def truncated() -> httpx.Response:
    return httpx.Response(200, content=b'{"username": "u", "total_quota": 12.5, "ke', headers={"content-type": "application/json"})


def call(server: Server, sleeps: list | None = None, **kwargs):
    sleeps = sleeps if sleeps is not None else []
    with make_client(BASE, transport=httpx.MockTransport(server)) as client:
        return request_json(
            client,
            "GET",
            "/user/quota",
            params={"key": KEY, "start_date": "2026-11-01", "end_date": "2026-11-02"},
            secrets=(KEY,),
            policy=RetryPolicy(rng=lambda: 0.5),
            sleep=sleeps.append,
            service=SERVICE,
            auth_hint="COMETAPI_KEY",
            url_hint="COMETAPI_QUERY_URL",
            **kwargs,
        )


def fail(server: Server, sleeps: list | None = None) -> CometAPIError:
    with pytest.raises(CometAPIError) as caught:
        call(server, sleeps)
    return caught.value


# --- retry matrix -----------------------------------------------------------------------------


def test_429_with_retry_after_waits_exactly_that_long():
    sleeps: list[float] = []
    server = Server(error_json(429, "rate_limited", "slow down", {"Retry-After": "2"}), ok({"v": 1}))
    assert call(server, sleeps) == {"v": 1}
    assert sleeps == [2]
    assert server.calls == 2


def test_retry_after_as_http_date_and_cap():
    soon = format_datetime(clock.now() + timedelta(seconds=8), usegmt=True)
    sleeps: list[float] = []
    call(Server(httpx.Response(503, headers={"Retry-After": soon}, json={}), ok()), sleeps)
    assert 5 <= sleeps[0] <= 8
    sleeps.clear()  # measured from the server's own Date header when it sends one, whatever our clock says
    served = {"Date": "Sun, 01 Mar 2026 10:00:00 GMT", "Retry-After": "Sun, 01 Mar 2026 10:00:07 GMT"}
    call(Server(httpx.Response(503, headers=served, json={}), ok()), sleeps)
    assert sleeps == [7.0]
    sleeps.clear()
    call(Server(httpx.Response(429, headers={"Retry-After": "3600"}, json={}), ok()), sleeps)
    assert sleeps == [120.0]
    sleeps.clear()
    call(Server(httpx.Response(429, headers={"Retry-After": "soon-ish"}, json={}), ok()), sleeps)
    assert sleeps == [2.5]  # unparseable: the policy's own backoff


@pytest.mark.parametrize("status", [500, 502, 503, 504, 524])
def test_retriable_status_burst_of_four_then_success(status):
    sleeps: list[float] = []
    server = Server(*[error_json(status, "upstream_error", "try later")] * 4, ok({"v": 2}))
    assert call(server, sleeps) == {"v": 2}
    assert server.calls == 5
    assert sleeps == [2.5, 4.5, 8.5, 16.5]  # min(30, 2**n) + 0.5 jitter


@pytest.mark.parametrize("status", [500, 502, 503, 504, 524])
def test_retriable_status_burst_of_five_gives_up(status):
    sleeps: list[float] = []
    server = Server(*[error_json(status, "upstream_error", "try later")] * 5, ok())
    err = fail(server, sleeps)
    assert server.calls == 5
    assert len(sleeps) == 4
    assert err.status == status and err.retriable and err.kind == "http_status"
    assert str(err) == f"{SERVICE} GET /user/quota gave up after 5 attempts: HTTP {status} upstream_error: try later"


@pytest.mark.parametrize(
    ("status", "code", "hint"),
    [(400, "invalid_request", ""), (401, "invalid_api_key", " (check COMETAPI_KEY)"),
     (403, "forbidden", " (check COMETAPI_KEY)"), (404, "not_found", " (check COMETAPI_QUERY_URL)"),
     (422, None, "")],
)
def test_client_errors_are_not_retried(status, code, hint):
    sleeps: list[float] = []
    server = Server(error_json(status, code, "nope"), ok())
    err = fail(server, sleeps)
    assert server.calls == 1 and sleeps == []
    assert err.status == status and err.code == code and not err.retriable
    shown = f"{code}: nope" if code else "nope"
    assert str(err) == f"{SERVICE} GET /user/quota failed: HTTP {status} {shown}{hint}"


def test_401_message_is_actionable():
    err = fail(Server(error_json(401, "invalid_api_key", "invalid key")))
    assert str(err) == "CometAPI query service GET /user/quota failed: HTTP 401 invalid_api_key: invalid key (check COMETAPI_KEY)"
    assert err.url == "/user/quota"


def test_500_invalid_request_is_not_retried():
    server = Server(error_json(500, "invalid_request", "bad date"), ok())
    err = fail(server)
    assert server.calls == 1 and not err.retriable and err.code == "invalid_request"


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout("timed out"), httpx.ConnectError("refused"),
     httpx.ReadError("connection reset by peer"), httpx.RemoteProtocolError("incomplete chunked read")],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_are_retried(exc):
    sleeps: list[float] = []
    server = Server(exc, ok({"v": 3}))
    assert call(server, sleeps) == {"v": 3}
    assert server.calls == 2 and sleeps == [2.5]
    err = fail(Server(exc), [])
    assert err.kind == "transport" and err.retriable and err.status is None
    assert "gave up after 5 attempts" in str(err) and type(exc).__name__ in str(err)


def test_redirect_is_an_error_naming_the_target_host():
    server = Server(html(301, "Moved", {"Location": f"https://www.cometapi.example/user/quota?key={KEY}"}), ok())
    err = fail(server)
    assert server.calls == 1 and err.kind == "redirect" and err.status == 301 and not err.retriable
    assert str(err) == (
        f"{SERVICE} GET /user/quota failed: HTTP 301 redirect to host www.cometapi.example: "
        "the URL is probably wrong (redirects are not followed) (check COMETAPI_QUERY_URL)"
    )


def test_html_200_is_not_json_and_not_retried():
    server = Server(html(200, "CometAPI Console"), ok())
    err = fail(server)
    assert server.calls == 1 and err.kind == "not_json" and not err.retriable
    assert "HTTP 200 answered text/html, not JSON (CometAPI Console)" in str(err)


def test_maintenance_html_503_is_retried_then_reported():
    sleeps: list[float] = []
    err = fail(Server(html(503, "scheduled maintenance page")), sleeps)
    assert len(sleeps) == 4 and err.retriable and err.status == 503
    assert str(err) == (
        f"{SERVICE} GET /user/quota gave up after 5 attempts: HTTP 503 (last: scheduled maintenance page, text/html)"
    )


def test_truncated_json_is_retried():
    sleeps: list[float] = []
    assert call(Server(truncated(), ok({"v": 4})), sleeps) == {"v": 4}
    assert sleeps == [2.5]
    server = Server(truncated())
    err = fail(server)
    assert server.calls == 5 and err.kind == "truncated" and err.retriable
    assert "does not parse" in str(err)


@pytest.mark.parametrize(
    ("body", "shown"),
    [({"success": False, "message": "date range too long"}, "date range too long"),
     ({"error": {"message": "invalid key", "code": "invalid_api_key"}}, "invalid_api_key: invalid key"),
     ({"code": False, "message": "token expired", "data": None}, "token expired")],
)
def test_error_envelope_in_a_200_is_an_error(body, shown):
    server = Server(ok(body))
    err = fail(server)
    assert server.calls == 1 and err.kind == "error_body" and not err.retriable and err.status == 200
    assert shown in str(err)


def test_each_retry_logs_one_warning_naming_the_attempt_and_when_the_next_starts(caplog, monkeypatch):
    monkeypatch.setenv("COMET_LEDGER_NOW", "2026-11-03T06:15:00Z")
    caplog.set_level(logging.DEBUG)
    call(Server(error_json(503, None, "busy"), httpx.ReadTimeout("t"), ok()), [])
    warnings = [r for r in caplog.records if r.name == "comet_ledger.http" and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"{SERVICE} GET /user/quota attempt 1/5 failed: HTTP 503 busy; attempt 2/5 in 2.5 s, at 06:15:02 UTC",
        f"{SERVICE} GET /user/quota attempt 2/5 failed: read timeout (no data for 30.0s) [ReadTimeout]; "
        "attempt 3/5 in 4.5 s, at 06:15:04 UTC",
    ]


def unreachable_call(client: httpx.Client, sleeps: list, attempts: int | None):
    return request_json(client, "GET", "/user/quota", params={"key": KEY}, secrets=(KEY,),
                        policy=RetryPolicy(rng=lambda: 0.5, unreachable_attempts=attempts), sleep=sleeps.append,
                        service=SERVICE, url_hint="COMETAPI_QUERY_URL")


def test_a_refused_first_connection_gives_up_after_the_unreachable_attempts(caplog):
    caplog.set_level(logging.WARNING)
    sleeps: list[float] = []
    server = Server(httpx.ConnectError("refused"))
    with make_client(BASE, transport=httpx.MockTransport(server)) as client, pytest.raises(CometAPIError) as caught:
        unreachable_call(client, sleeps, 1)
    assert server.calls == 1 and sleeps == []  # no retry, no wait
    assert str(caught.value) == (f"{SERVICE} GET /user/quota failed: connection failed (refused, unreachable or DNS "
                                 "error) [ConnectError] (check COMETAPI_QUERY_URL)")
    assert not [r for r in caplog.records if r.name == "comet_ledger.http"]
    server = Server(httpx.ConnectError("refused"))  # two allowed: one retry, its line says 2 attempts in all
    with make_client(BASE, transport=httpx.MockTransport(server)) as client, pytest.raises(CometAPIError) as caught:
        unreachable_call(client, sleeps, 2)
    assert server.calls == 2 and sleeps == [2.5] and "gave up after 2 attempts" in str(caught.value)
    [line] = [r.getMessage() for r in caplog.records if r.name == "comet_ledger.http"]
    assert "attempt 1/2 failed: connection failed" in line and "; attempt 2/2 in 2.5 s, at " in line


def test_a_server_that_answered_once_gets_every_attempt_when_it_refuses_later():
    sleeps: list[float] = []
    server = Server(ok({"v": 1}), httpx.ConnectError("refused"), httpx.ConnectError("refused"), ok({"v": 2}))
    with make_client(BASE, transport=httpx.MockTransport(server)) as client:
        assert unreachable_call(client, sleeps, 1) == {"v": 1}
        assert unreachable_call(client, sleeps, 1) == {"v": 2}  # a restart, not a wrong URL: retried
    assert server.calls == 4 and sleeps == [2.5, 4.5]
    # other failures of a first request keep the whole budget too
    server = Server(httpx.ReadTimeout("t"), ok({"v": 3}))
    with make_client(BASE, transport=httpx.MockTransport(server)) as client:
        assert unreachable_call(client, sleeps, 1) == {"v": 3}


@given(
    base=st.floats(0.01, 5), cap=st.floats(0.5, 60), jitter=st.floats(0, 0.999),
    attempt=st.integers(1, 200),
)
def test_backoff_grows_and_is_capped(base, cap, jitter, attempt):
    policy = RetryPolicy(base_delay=base, max_delay=cap, rng=lambda: jitter)
    delay = policy.backoff(attempt)
    assert policy.backoff(attempt + 1) >= delay
    assert min(cap, base * 2**min(attempt, 64)) <= delay <= cap + base
    assert policy.delay(attempt, retry_after=10**6) == policy.max_retry_after


def test_backoff_follows_cometapi_guide():
    policy = RetryPolicy(rng=lambda: 0.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [2, 4, 8, 16, 30, 30, 30]


def test_make_client_settings():
    with make_client(BASE) as client:
        assert client.follow_redirects is False
        assert client.headers["User-Agent"].startswith("comet-ledger/")
        assert client.timeout.connect == 10.0 and client.timeout.read == 30.0


# --- redaction: drive every failure path with a key echoed everywhere -----------------------


def echo_url(status: int, content_type: str = "application/json") -> Callable[[httpx.Request], httpx.Response]:
    """A server that puts the full request URL (key included) into its answer."""

    def answer(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if content_type == "text/html":
            body = f"<html><title>Error for {url}</title><body>{url} {KEY}</body></html>"
            return httpx.Response(status, text=body, headers={"content-type": "text/html"})
        return httpx.Response(status, json={"error": {"message": f"bad request {url} {KEY}", "code": KEY}})

    return answer


def raise_with_url(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"failed talking to {request.url}", request=request)

    return answer


FAILURES = {
    "401": lambda: Server(echo_url(401)),
    "403": lambda: Server(echo_url(403)),
    "400": lambda: Server(echo_url(400)),
    "404": lambda: Server(echo_url(404, "text/html")),
    "500-invalid_request": lambda: Server(error_json(500, "invalid_request", f"bad {KEY}")),
    "503-gave-up": lambda: Server(echo_url(503)),
    "503-html": lambda: Server(echo_url(503, "text/html")),
    "429-gave-up": lambda: Server(error_json(429, "rate_limited", f"key={KEY} too fast", {"Retry-After": "1"})),
    "read-timeout": lambda: Server(raise_with_url(httpx.ReadTimeout)),
    "connect-error": lambda: Server(raise_with_url(httpx.ConnectError)),
    "remote-protocol": lambda: Server(raise_with_url(httpx.RemoteProtocolError)),
    "redirect": lambda: Server(
        httpx.Response(301, text="<a>moved</a>", headers={"Location": f"https://{KEY}.evil.test/?key={KEY}"})
    ),
    "html-200": lambda: Server(echo_url(200, "text/html")),
    "truncated": lambda: Server(
        lambda r: httpx.Response(200, content=f'{{"u": "{r.url}'.encode(), headers={"content-type": "application/json"})
    ),
    "success-false": lambda: Server(lambda r: ok({"success": False, "message": f"no such key {r.url}"})),
    "error-200": lambda: Server(lambda r: ok({"error": {"message": f"invalid key {KEY}", "code": "invalid_api_key"}})),
}


def assert_no_leak(text: str) -> None:
    for part in LEAK_PARTS:
        assert part not in text


@pytest.mark.parametrize("scenario", sorted(FAILURES))
def test_no_failure_path_leaks_the_key(scenario, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "comet_ledger"):
        caplog.set_level(logging.DEBUG, logger=name)
    err = fail(FAILURES[scenario]())
    assert err.__cause__ is None and err.__context__ is None
    assert_no_leak(str(err))
    assert_no_leak(repr(err))
    assert_no_leak("".join(traceback.format_exception(err)))
    assert_no_leak(f"{err.url} {err.code}")
    assert "\n" not in str(err)
    for record in caplog.records:
        assert_no_leak(record.getMessage())
        assert_no_leak(str(record.msg) + str(record.args))
    assert_no_leak(caplog.text)
    if scenario not in ("read-timeout", "connect-error", "remote-protocol"):
        httpx_lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
        assert httpx_lines and all("key=***" in line for line in httpx_lines)  # logged, but redacted


def test_query_client_failure_does_not_leak(caplog):
    caplog.set_level(logging.DEBUG)
    server = Server(echo_url(401))
    client = QueryClient(BASE, KEY, transport=httpx.MockTransport(server), sleep=lambda s: None)
    with client, pytest.raises(CometAPIError) as caught:
        client.fetch_quota()
    assert_no_leak(str(caught.value) + repr(caught.value) + caplog.text + repr(client))
    assert str(caught.value).endswith("(check COMETAPI_KEY)")


# --- a real loopback server: httpcore's own DEBUG logs, an incomplete body, a slow answer ------


class _Handler(BaseHTTPRequestHandler):
    script: list[str] = []

    def do_GET(self):  # noqa: N802
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            time.sleep(0.4)
            return self._send(200, b'{"late": true}')
        if step == "incomplete":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "500")
            self.end_headers()
            self.wfile.write(b'{"username": "u"')
            self.wfile.flush()
            self.close_connection = True
            return None
        if step == "redirect":
            self.send_response(301)
            self.send_header("Location", f"https://elsewhere.test{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(200, b'{"ok": true}')

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def loopback():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_real_socket_incomplete_body_and_read_timeout_are_retried(loopback, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    _Handler.script = ["incomplete", "slow", "ok"]
    sleeps: list[float] = []
    with make_client(loopback, timeout=httpx.Timeout(0.2, connect=1.0)) as client:
        data = request_json(
            client, "GET", "/user/quota", params={"key": KEY}, secrets=(KEY,),
            policy=RetryPolicy(rng=lambda: 0.0), sleep=sleeps.append, service=SERVICE,
        )
        assert data == {"ok": True}
        assert sleeps == [2.0, 4.0]
        reasons = [r.getMessage() for r in caplog.records if r.name == "comet_ledger.http"]
        assert "RemoteProtocolError" in reasons[0] and "ReadTimeout" in reasons[1]

        _Handler.script = ["redirect"]
        with pytest.raises(CometAPIError) as caught:
            request_json(client, "GET", "/user/quota", params={"key": KEY}, secrets=(KEY,), sleep=sleeps.append)
        assert "redirect to host elsewhere.test" in str(caught.value)
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # httpcore did log, at DEBUG
    assert_no_leak(caplog.text)
    for record in caplog.records:
        assert_no_leak(record.getMessage())


def test_unused_port_is_a_retriable_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    with make_client(f"http://127.0.0.1:{port}", timeout=1.0) as client, pytest.raises(CometAPIError) as caught:
        request_json(client, "GET", "/x", policy=RetryPolicy(max_attempts=2, rng=lambda: 0), sleep=sleeps.append)
    assert caught.value.kind == "transport" and caught.value.retriable and sleeps == [2.0]


# --- the console API: request log paging, model catalog, key identity ------------------------


def log_page(items: list[dict], total: int | None = None, page_size: int | None = None, page: int = 1) -> httpx.Response:
    data = {"page": page, "items": items}
    if total is not None:
        data["total"] = total
    if page_size is not None:
        data["page_size"] = page_size
    return httpx.Response(200, json={"success": True, "message": "", "data": data})


def items(n: int, start: int = 0) -> list[dict]:
    return [{"id": i % 1024, "request_id": f"r{i}", "quota": i} for i in range(start, start + n)]


def gateway(server: Server, **kwargs) -> GatewayClient:
    return GatewayClient(
        "https://api.example.test", TOKEN, transport=httpx.MockTransport(server), sleep=lambda s: None, **kwargs
    )


def pages(server: Server, page_size: int = 100, **kwargs) -> list[list[dict]]:
    with gateway(server, **kwargs) as client:
        return list(client.iter_log_pages(1_700_000_000, 1_700_086_399, page_size=page_size, log_type=2))


def test_gateway_paging_goes_past_a_short_page_to_an_empty_one():
    server = Server(log_page(items(3)), log_page(items(3, 3)), log_page(items(1, 6)), log_page([]))
    assert [len(p) for p in pages(server, page_size=3)] == [3, 3, 1]
    assert [r.url.params["p"] for r in server.requests] == ["1", "2", "3", "4"]
    first = server.requests[0]
    assert first.url.path == "/api/log/self"
    assert dict(first.url.params) == {
        "p": "1", "page_size": "3", "start_timestamp": "1700000000", "end_timestamp": "1700086399", "type": "2",
    }
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"


def test_gateway_paging_stops_on_an_empty_page():
    server = Server(log_page(items(2)), log_page(items(2, 2)), log_page([]), log_page(items(2)))
    assert [len(p) for p in pages(server, page_size=2)] == [2, 2]
    assert server.calls == 3


def test_gateway_paging_does_not_stop_at_total():
    server = Server(log_page(items(2), total=2), log_page(items(2, 2), total=2), log_page([], total=2))
    assert [len(p) for p in pages(server, page_size=2)] == [2, 2]  # upstream's total is capped: not a count
    assert server.calls == 3


def test_gateway_page_size_is_capped_at_100_and_a_smaller_server_page_is_followed():
    server = Server(log_page(items(50), page_size=50), log_page(items(50, 50), page_size=50), log_page(items(7)),
                    log_page([]))
    assert [len(p) for p in pages(server, page_size=500)] == [50, 50, 7]
    assert {r.url.params["page_size"] for r in server.requests} == {"100"}


def test_gateway_raw_token_and_user_header():
    server = Server(log_page([]))
    pages(server, bearer=False, user_id=42)
    assert server.requests[0].headers["Authorization"] == TOKEN
    assert server.requests[0].headers["New-Api-User"] == "42"


@pytest.mark.parametrize(
    ("body", "text"),
    [({"success": False, "message": "access token invalid"}, "access token invalid"),
     ({"success": True, "data": {"items": "nope"}}, "data.items is not a list"),
     ({"success": True, "data": {"items": [1, 2]}}, "data.items[0] is not an object"),
     ({"success": True, "data": {"total": 3}}, "data has no items"),
     ({"success": True, "data": {"items": [], "total": "3"}}, "data.total is not a whole number"),
     ([1, 2], "not an envelope")],
)
def test_gateway_envelope_is_validated(body, text):
    with pytest.raises(CometAPIError) as caught:
        pages(Server(httpx.Response(200, json=body)))
    assert text in str(caught.value) and not caught.value.retriable
    assert_no_leak(str(caught.value))


def test_gateway_detects_a_server_ignoring_p():
    with pytest.raises(CometAPIError, match="ignore p"):
        pages(Server(log_page(items(2), total=10)), page_size=2)


def test_gateway_401_names_the_token_setting_without_leaking(caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CometAPIError) as caught:
        pages(Server(lambda r: httpx.Response(401, json={"success": False, "message": f"bad {TOKEN}"})))
    assert str(caught.value).endswith("(check COMETAPI_ACCESS_TOKEN)")
    assert TOKEN not in str(caught.value) + caplog.text


def test_gateway_arguments_are_checked_before_any_call():
    server = Server(log_page([]))
    with gateway(server) as client:
        with pytest.raises(ValueError):
            client.iter_log_pages(10, 5)
        with pytest.raises(ValueError):
            client.iter_log_pages("1", 5)
        with pytest.raises(ValueError):
            client.iter_log_pages(1, 5, page_size=0)
    assert server.calls == 0


@pytest.mark.parametrize("body", [{"success": True, "data": [{"id": "gpt-4o"}]}, [{"id": "gpt-4o"}]])
def test_fetch_models_accepts_data_or_a_bare_list(body):
    server = Server(httpx.Response(200, json=body))
    with gateway(server) as client:
        assert client.fetch_models() == [{"id": "gpt-4o"}]
    assert server.requests[0].url.path == "/api/models"
    assert "Authorization" not in server.requests[0].headers


def test_fetch_models_rejects_other_shapes():
    with gateway(Server(httpx.Response(200, json={"data": {"x": 1}}))) as client, pytest.raises(CometAPIError):
        client.fetch_models()


def test_fetch_token_usage_returns_data():
    payload = {"object": "token_usage", "name": "ledger-readonly", "total_available": 0, "unlimited_quota": False}
    server = Server(httpx.Response(200, json={"code": True, "message": "ok", "data": payload}))
    assert fetch_token_usage("https://api.example.test", KEY, transport=httpx.MockTransport(server)) == payload
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert server.requests[0].url.path == "/api/usage/token"


def test_fetch_token_usage_error_body():
    server = Server(httpx.Response(200, json={"code": False, "message": f"invalid token {KEY}"}))
    with pytest.raises(CometAPIError) as caught:
        fetch_token_usage("https://api.example.test", KEY, transport=httpx.MockTransport(server))
    assert "invalid token" in str(caught.value) and caught.value.kind == "error_body"
    assert str(caught.value).endswith("(check COMETAPI_KEY)")
    assert_no_leak(str(caught.value))


def test_error_survives_pickling():
    import pickle

    err = CometAPIError("x failed", status=503, code="c", retriable=True, url="/p", kind="http_status")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.status, back.code, back.retriable, back.url, back.kind) == (
        "x failed", 503, "c", True, "/p", "http_status",
    )


def test_json_bodies_keep_float_text_when_asked():
    from decimal import Decimal

    server = Server(httpx.Response(200, content=b'{"a": 2.099206}', headers={"content-type": "application/json"}))
    assert call(server, parse_float=Decimal) == {"a": Decimal("2.099206")}
    assert json.dumps(call(Server(ok({"a": 1.5})))) == '{"a": 1.5}'


def test_library_loggers_are_redacted_even_for_tracebacks(caplog):
    make_client(BASE).close()  # installs the filter on httpx/httpcore loggers
    caplog.set_level(logging.DEBUG)
    try:
        raise RuntimeError(f"GET {BASE}/user/quota?key={KEY}")
    except RuntimeError:
        logging.getLogger("httpx").exception("request to %s failed", f"{BASE}/?key={KEY}")
    logging.getLogger("httpcore.http11").debug("headers [(b'Location', b'https://x/?key=%s')]", KEY)
    assert len(caplog.records) == 2
    assert_no_leak(caplog.text)
    assert "key=***" in caplog.text
