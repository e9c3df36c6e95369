"""The one request discipline every CometAPI call uses: timeouts, retries, JSON checks, redaction.

CometAPI's guide: retry 429/500/502/503/504/524 with `min(30, 2**attempt) + random()` seconds
(up to 5 attempts) or the server's `Retry-After`; never retry other 4xx, nor a 500 whose
`error.code` is `invalid_request`. Redirects are not followed: a wrong path may answer with a 301
or an HTML page. The query service takes its key in the URL, so no httpx exception text or full URL
ever reaches an error message or a log line: every message here is built from parts and redacted.
`send_raw` is the same discipline for an answer that is a file (the gateway ledger's CSV export).

Every attempt has a deadline from sending the request to the answer's last byte. httpx's read
timeout restarts on every byte, so without one a server that sends a byte a second keeps a call
going as long as it likes (a 1.9 KB answer: about 31 minutes). At the deadline a watchdog shuts the
client's sockets down, which ends a blocked read at once, headers or body, and the attempt fails
like a timeout. The sockets are found through httpx's documented `trace` request extension (the
`connection.connect_tcp.complete` event of every connection these calls open). Defaults: a JSON
answer `JSON_DEADLINE_READS` x the read timeout (60 s), a file `FILE_DEADLINE_READS` x (300 s). A
JSON answer is at most `MAX_JSON_BYTES`: a longer one is not read further. JSON nested deeper than
the parser allows is said to be that, and not retried (it is complete, only unreadable).

A server that refuses the very first connection of a client (wrong URL, nothing listening) is
rarely back a few seconds later: `RetryPolicy.unreachable_attempts` caps the attempts in that case
(the command line gives up at once; a scheduled run keeps the whole budget). Every retry is logged
with the attempt that failed and when the next one starts.

The retry loop itself (attempts, stop, wait, sleep, the log line before each sleep) is `tenacity`.
What stays written here is what no retry library knows, CometAPI's own rules: which answers are
worth another attempt (the statuses above, but not a 500 saying `invalid_request`; a truncated 2xx
JSON body; a transport failure), `Retry-After` read as seconds or as an HTTP-date against the
answer's own `Date`, the backoff for a 429 without it (the guide's formula, with a `rng` tests
inject), the cap for a server never reached, the per-attempt deadline (no library ends a read that
trickles: httpx's read timeout restarts on every byte) and the one redacted line every error is.
Pacing under the gateway's rate limit is a transport (`pacing.py`), so every attempt is paced.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity

from pipelines.lib import clock
from pipelines.lib.redact import RedactingFilter, Redactor, install_log_filter, redact

logger = logging.getLogger("comet_ledger.http")

RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
NEVER_RETRY_CODES = frozenset({"invalid_request"})
JSON_DEADLINE_READS = 2  # a JSON answer must be complete within 2 x the read timeout (60 s)
FILE_DEADLINE_READS = 10  # a file (a day's CSV export, ~40 MB at 100 000 requests) within 10 x (300 s)
UNBOUNDED_READ_DEADLINE_S = 600.0  # the deadline when the client has no read timeout at all
MAX_JSON_BYTES = 32 * 2**20  # the largest JSON answer read (a 31-day query answer for 1000 keys is ~3 MB)

# httpx logs every request URL (query string and key included) at INFO on "httpx"; httpcore logs
# response headers (a Location may echo the key) at DEBUG. Their records are redacted at the source.
THIRD_PARTY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
_LOG_REDACTOR = Redactor()
_LOG_FILTER = RedactingFilter(_LOG_REDACTOR)


def _version() -> str:
    try:
        return metadata.version("comet-ledger")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"comet-ledger/{_version()}"


class CometAPIError(Exception):
    """A CometAPI call that failed; `str()` is one redacted line a person can act on.

    `kind` says what went wrong: "http_status", "error_body" (HTTP 2xx carrying an error envelope),
    "redirect", "not_json", "truncated", "transport", "deadline" (no complete answer in time),
    "too_large" (more than MAX_JSON_BYTES), "unexpected_body" (JSON of the wrong shape, or nested
    too deeply to read).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retriable: bool = False,
        url: str = "",
        kind: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retriable = retriable
        self.url = url
        self.kind = kind

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep the attributes when pickled (e.g. across processes)
        return (
            _rebuild_error,
            (self.message, self.status, self.code, self.retriable, self.url, self.kind),
        )


def _rebuild_error(message, status, code, retriable, url, kind) -> CometAPIError:
    return CometAPIError(message, status=status, code=code, retriable=retriable, url=url, kind=kind)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait; `rng` is injectable so tests are deterministic."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    # Attempts when a client that never had an answer cannot connect at all (refused, unreachable,
    # DNS); None: max_attempts. Once a server has answered, a refused connection gets every attempt.
    unreachable_attempts: int | None = None
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}")
        if self.unreachable_attempts is not None and self.unreachable_attempts < 1:
            raise ValueError(f"RetryPolicy.unreachable_attempts must be at least 1, got {self.unreachable_attempts}")
        if min(self.base_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) when the server named no time."""
        exponential = self.base_delay * 2.0 ** min(attempt, 64)
        return min(self.max_delay, exponential) + self.rng() * self.base_delay

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return self.backoff(attempt)


@dataclass(frozen=True)
class JsonReply:
    """A successful JSON answer: the parsed body, the raw bytes, and when it arrived (UTC)."""

    data: Any
    body: bytes = field(repr=False)
    status: int
    received_at: datetime


@dataclass(frozen=True)
class RawReply:
    """A successful answer that is a file: what `consume` made of its bytes (by default the bytes)."""

    value: Any = field(repr=False)
    status: int
    content_type: str
    received_at: datetime


@dataclass(frozen=True)
class _Failure:
    kind: str
    reason: str  # already one line; redacted when the error is built
    retriable: bool
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None
    hint: str = ""
    unreachable: bool = False  # no connection could be made (refused, unreachable, DNS)


# Clients that have had at least one answer (see RetryPolicy.unreachable_attempts).
_ANSWERED: weakref.WeakSet[httpx.Client] = weakref.WeakSet()


def make_client(
    base_url: str,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client with explicit timeouts, no redirect following, and redacted library logs."""
    install_log_filter(THIRD_PARTY_LOGGERS, _LOG_FILTER)
    if not isinstance(timeout, httpx.Timeout):
        timeout = httpx.Timeout(timeout)
    return httpx.Client(
        base_url=base_url,
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


def protect_secrets(*secrets: str) -> None:
    """Mask these values in every record of the third-party HTTP loggers, whatever their shape."""
    _LOG_REDACTOR.add(*secrets)
    install_log_filter(THIRD_PARTY_LOGGERS, _LOG_FILTER)


def request_json(client: httpx.Client, method: str, path: str, **options: Any) -> Any:
    """The parsed JSON body of a successful call, or `CometAPIError`; options as `send_json`."""
    return send_json(client, method, path, **options).data


def send_json(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    secrets: Iterable[str] = (),
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    service: str = "CometAPI",
    parse_float: Callable[[str], Any] | None = None,
    auth_hint: str | None = None,
    url_hint: str | None = None,
    deadline_s: float | None = None,
) -> JsonReply:
    """Send one request with retries; return the JSON reply or raise a redacted `CometAPIError`.

    `auth_hint` / `url_hint` name the setting to check when the answer says the credential or the
    URL is wrong (e.g. "COMETAPI_KEY", "COMETAPI_QUERY_URL"). `parse_float=Decimal` keeps money exact.
    `deadline_s`: each attempt's deadline (default: JSON_DEADLINE_READS x the client's read timeout).
    """
    deadline_s = deadline_s or _deadline(client, JSON_DEADLINE_READS)
    return _send(client, method, path, lambda request: _attempt(client, request, parse_float), params=params,
                 headers=headers, json=json, secrets=secrets, policy=policy, sleep=sleep, service=service,
                 auth_hint=auth_hint, url_hint=url_hint, deadline_s=deadline_s)


def send_raw(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    service: str = "CometAPI",
    auth_hint: str | None = None,
    url_hint: str | None = None,
    consume: Callable[[Iterator[bytes]], Any] = b"".join,
    deadline_s: float | None = None,
) -> RawReply:
    """`send_json` for an answer that is a file (a CSV export), with the same retries and redaction.

    A 2xx body that is neither JSON nor HTML nor empty is the answer: its bytes are streamed into
    `consume` as they arrive (so a large file is parsed while it downloads), and `RawReply.value` is
    what `consume` returns. A connection lost mid-body is a transport failure and the file is asked
    for again from the start; whatever `consume` raises propagates untouched. A 2xx JSON body is a
    failure (an error envelope such as `{"success": false}` is `error_body`, anything else
    `unexpected_body`), and so is a 2xx HTML page (a console that serves its web app for an
    unknown path): neither is worth retrying. `deadline_s`: each attempt's deadline (default:
    FILE_DEADLINE_READS x the client's read timeout).
    """
    deadline_s = deadline_s or _deadline(client, FILE_DEADLINE_READS)
    return _send(client, method, path, lambda request: _attempt_file(client, request, consume), params=params,
                 headers=headers, json=None, secrets=secrets, policy=policy, sleep=sleep, service=service,
                 auth_hint=auth_hint, url_hint=url_hint, deadline_s=deadline_s)


def _deadline(client: httpx.Client, reads: int) -> float:
    read = client.timeout.read
    return reads * read if read else UNBOUNDED_READ_DEADLINE_S


class _Sockets:
    """The sockets of the connections one client opened for these calls (weakly held), so that a
    watchdog can end a read blocked on any of them; `trace` is the request extension that finds them."""

    def __init__(self) -> None:
        self._held: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            found = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(found, socket.socket):
                with self._lock:
                    self._held.add(found)

    def shut_down(self) -> None:
        with self._lock:
            held = list(self._held)
        for sock in held:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass


_CLIENT_SOCKETS: weakref.WeakKeyDictionary[httpx.Client, _Sockets] = weakref.WeakKeyDictionary()
_CLIENT_SOCKETS_LOCK = threading.Lock()


def _sockets_of(client: httpx.Client) -> _Sockets:
    with _CLIENT_SOCKETS_LOCK:
        found = _CLIENT_SOCKETS.get(client)
        if found is None:
            found = _CLIENT_SOCKETS[client] = _Sockets()
        return found


class _Watchdog:
    """Shuts the client's sockets down if the attempt inside is still going after `seconds`.

    Every socket of the client: the clients here make one call at a time (the ledger's pulls run one
    after another, in one thread), so the others are idle and are simply opened again when needed;
    a call of another thread on the same client would fail like a reset and be retried.
    (It waits with `clock.wait_for`, which returns under libfaketime, unlike `threading.Timer`.)"""

    def __init__(self, sockets: _Sockets, seconds: float) -> None:
        self.fired = False
        self._sockets = sockets
        self._seconds = seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="comet-ledger-deadline", daemon=True)

    def _watch(self) -> None:
        if not clock.wait_for(self._done, self._seconds):
            self.fired = True
            self._sockets.shut_down()

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()


def _send(
    client: httpx.Client,
    method: str,
    path: str,
    attempt_once: Callable[[httpx.Request], JsonReply | RawReply | _Failure],
    *,
    params: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    json: Any,
    secrets: Iterable[str],
    policy: RetryPolicy | None,
    sleep: Callable[[float], None],
    service: str,
    auth_hint: str | None,
    url_hint: str | None,
    deadline_s: float,
) -> Any:
    """The retries shared by `send_json` and `send_raw` (run by tenacity): `attempt_once` sends and
    judges one try, which is retried while it is a retriable `_Failure` and attempts are left."""
    policy = policy or RetryPolicy()
    secrets = tuple(s for s in secrets if s)
    protect_secrets(*secrets)
    sockets = _sockets_of(client)
    request = client.build_request(method, path, params=params, headers=headers, json=json,
                                   extensions={"trace": sockets.trace})
    url_path = redact(request.url.path, secrets)
    where = f"{service} {method.upper()} {url_path}"

    attempts = _Attempts(policy, client)

    def one_try() -> JsonReply | RawReply | _Failure:
        attempts.tried += 1
        with _Watchdog(sockets, deadline_s) as watchdog:
            outcome = attempt_once(request)
        if watchdog.fired and isinstance(outcome, _Failure):
            outcome = _Failure(kind="deadline", retriable=True,
                               reason=f"no complete answer within the {deadline_s:g}s deadline (the server "
                                      "sent too slowly or stalled)")
        return outcome

    def log_retry(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.result()
        line = _retry_line(where, state.attempt_number, attempts.total, failure.reason, state.next_action.sleep)
        logger.warning("%s", redact(line, secrets))

    outcome = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda outcome: isinstance(outcome, _Failure) and outcome.retriable),
        after=attempts.after_failure,
        wait=attempts.wait,
        stop=attempts.stop,
        before_sleep=log_retry,
        sleep=sleep,
        retry_error_callback=lambda state: state.outcome.result(),  # the last failure, said below
    )(one_try)
    if not isinstance(outcome, _Failure):
        return outcome
    raise _error(outcome, where, url_path, attempts.tried, secrets, auth_hint, url_hint) from None


class _Attempts:
    """tenacity's stop and wait for one call: `policy.max_attempts`, fewer once a client that never had
    an answer cannot connect at all (`RetryPolicy.unreachable_attempts`); the wait is the policy's
    (`Retry-After` when the server named a time, else the backoff), drawn only before an attempt that
    will be made (so an injected `rng` is called once per retry, as the policy says)."""

    def __init__(self, policy: RetryPolicy, client: httpx.Client) -> None:
        self.policy = policy
        self.client = client
        self.total = policy.max_attempts
        self.tried = 0

    def after_failure(self, state: tenacity.RetryCallState) -> None:
        failure = state.outcome.result()
        if failure.unreachable and self.policy.unreachable_attempts and self.client not in _ANSWERED:
            self.total = min(self.total, max(state.attempt_number, self.policy.unreachable_attempts))

    def stop(self, state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= self.total

    def wait(self, state: tenacity.RetryCallState) -> float:
        if self.stop(state):  # tenacity asks for the wait before it asks whether to stop
            return 0.0
        return self.policy.delay(state.attempt_number, state.outcome.result().retry_after)


def _retry_line(where: str, attempt: int, attempts: int, reason: str, delay: float) -> str:
    """`... attempt 1/5 failed: <reason>; attempt 2/5 in 2.3 s, at 06:15:03 UTC`."""
    at = clock.now() + timedelta(seconds=delay)
    return (f"{where} attempt {attempt}/{attempts} failed: {reason}; "
            f"attempt {attempt + 1}/{attempts} in {delay:.1f} s, at {at:%H:%M:%S} UTC")


def _error(
    failure: _Failure,
    where: str,
    url_path: str,
    attempts: int,
    secrets: tuple[str, ...],
    auth_hint: str | None,
    url_hint: str | None,
) -> CometAPIError:
    hint = ""
    if failure.hint == "auth" and auth_hint:
        hint = f" (check {auth_hint})"
    elif failure.hint == "url" and url_hint:
        hint = f" (check {url_hint})"
    if failure.retriable and attempts > 1:
        text = f"{where} gave up after {attempts} attempts: {failure.reason}{hint}"
    elif attempts > 1:
        text = f"{where} failed after {attempts} attempts: {failure.reason}{hint}"
    else:
        text = f"{where} failed: {failure.reason}{hint}"
    return CometAPIError(
        _one_line(redact(text, secrets)),
        status=failure.status,
        code=redact(failure.code, secrets) if failure.code else None,
        retriable=failure.retriable,
        url=url_path,
        kind=failure.kind,
    )


def _attempt(
    client: httpx.Client, request: httpx.Request, parse_float: Callable[[str], Any] | None
) -> JsonReply | _Failure:
    try:
        response = client.send(request, stream=True)
    except httpx.HTTPError as exc:
        # Never keep the exception: its text and its request carry the full URL.
        return _transport_failure(exc, client.timeout)
    _ANSWERED.add(client)
    try:
        body = _read_capped(response, MAX_JSON_BYTES)
    except httpx.HTTPError as exc:
        return _transport_failure(exc, client.timeout)
    finally:
        response.close()
    if body is None:
        return _Failure(kind="too_large", retriable=False, status=response.status_code,
                        reason=f"HTTP {response.status_code} answer larger than {MAX_JSON_BYTES // 2**20} MiB, "
                               "the most a JSON answer may be (not read further)")
    return _judge(response, parse_float, body)


def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to be longer than `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    pieces, size = [], 0
    for piece in response.iter_bytes():
        size += len(piece)
        if size > limit:
            return None
        pieces.append(piece)
    return b"".join(pieces)


def _attempt_file(
    client: httpx.Client, request: httpx.Request, consume: Callable[[Iterator[bytes]], Any]
) -> RawReply | _Failure:
    """One try of `send_raw`: a 2xx file is streamed into `consume`; anything else is read and judged."""
    try:
        response = client.send(request, stream=True)
    except httpx.HTTPError as exc:
        return _transport_failure(exc, client.timeout)
    _ANSWERED.add(client)
    status = response.status_code
    content_type = _content_type(response)
    try:
        if 200 <= status < 300 and content_type and "html" not in content_type and "json" not in content_type:
            return RawReply(consume(response.iter_bytes()), status, content_type, clock.now())
        response.read()
    except httpx.HTTPError as exc:  # cut off mid-body: the whole file is asked for again
        return _transport_failure(exc, client.timeout)
    finally:
        response.close()
    if 200 <= status < 300:
        return _unlabelled_file(status, content_type, response.content, consume)
    return _judge(response, None)


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _judge(response: httpx.Response, parse_float: Callable[[str], Any] | None,
           body: bytes | None = None) -> JsonReply | _Failure:
    """A read response (its body given, or read) as a JSON reply, or what went wrong."""
    received_at = clock.now()
    status = response.status_code
    content_type = _content_type(response)
    body = response.content if body is None else body

    if 300 <= status < 400:
        return _redirect_failure(status, response.headers.get("location", ""))

    try:
        data = json.loads(body, parse_float=parse_float) if body.strip() else _EMPTY
    except RecursionError:
        return _too_deep_failure(status, body)
    except ValueError:
        data = _EMPTY
    if data is _EMPTY:
        return _not_json_failure(status, content_type, body, response.headers)

    if 200 <= status < 300:
        envelope = _error_envelope(data)
        if envelope is None:
            return JsonReply(data=data, body=body, status=status, received_at=received_at)
        code, message = envelope
        return _Failure(
            kind="error_body",
            reason=f"HTTP {status} with an error body: {_code_message(code, message)}",
            retriable=False,
            status=status,
            code=code,
            hint="auth" if _looks_like_auth(code, message) else "",
        )

    code, message = _error_envelope(data) or _loose_error(data)
    retriable = status in RETRIABLE_STATUSES and code not in NEVER_RETRY_CODES
    return _Failure(
        kind="http_status",
        reason=f"HTTP {status} {_code_message(code, message)}".rstrip(),
        retriable=retriable,
        status=status,
        code=code,
        retry_after=_retry_after(response.headers) if retriable else None,
        hint=_status_hint(status),
    )


_EMPTY = object()


def _too_deep_failure(status: int, body: bytes) -> _Failure:
    return _Failure(kind="unexpected_body", retriable=False, status=status,
                    reason=f"HTTP {status} JSON nested deeper than the parser allows ({len(body)} bytes): "
                           "not an answer this client can read, not retried")


def _unlabelled_file(
    status: int, content_type: str, body: bytes, consume: Callable[[Iterator[bytes]], Any]
) -> RawReply | _Failure:
    """A 2xx answer labelled HTML, JSON or nothing where a file is expected: the file, or why it is not one."""
    shown_type = content_type or "no content-type"
    if not body.strip():
        return _Failure(kind="unexpected_body", reason=f"HTTP {status} with an empty body ({shown_type})",
                        retriable=False, status=status)
    head = body[:512].lstrip().lower()
    if "html" in content_type or head.startswith((b"<!doctype", b"<html", b"<head", b"<body")):
        return _Failure(kind="unexpected_body",
                        reason=f"HTTP {status} answered an HTML page, not a file ({_body_summary(body) or shown_type})",
                        retriable=False, status=status, hint="url")
    if "json" in content_type or head[:1] in (b"{", b"["):
        try:
            data = json.loads(body)
        except RecursionError:
            return _too_deep_failure(status, body)
        except ValueError:
            data = _EMPTY
        if data is not _EMPTY:
            envelope = _error_envelope(data)
            if envelope is not None:
                code, message = envelope
                return _Failure(kind="error_body",
                                reason=f"HTTP {status} with an error body: {_code_message(code, message)}",
                                retriable=False, status=status, code=code,
                                hint="auth" if _looks_like_auth(code, message) else "")
            return _Failure(kind="unexpected_body", reason=f"HTTP {status} answered JSON, not a file",
                            retriable=False, status=status)
    return RawReply(consume(iter((body,))), status, content_type, clock.now())

_TRANSPORT_REASONS: tuple[tuple[type[Exception], str, bool], ...] = (
    (httpx.ConnectTimeout, "connect timeout (no connection within {connect}s)", True),
    (httpx.ReadTimeout, "read timeout (no data for {read}s)", True),
    (httpx.WriteTimeout, "write timeout", True),
    (httpx.PoolTimeout, "connection pool timeout", True),
    (httpx.TimeoutException, "timeout", True),
    (httpx.ConnectError, "connection failed (refused, unreachable or DNS error)", True),
    (httpx.ReadError, "connection reset while reading the response", True),
    (httpx.WriteError, "connection reset while sending the request", True),
    (httpx.NetworkError, "network error", True),
    (httpx.RemoteProtocolError, "connection closed mid-response (incomplete body or protocol error)", True),
    (httpx.DecodingError, "response body could not be decoded (truncated or corrupt)", True),
    (httpx.UnsupportedProtocol, "unsupported URL scheme", False),
    (httpx.ProxyError, "proxy error", False),
    (httpx.LocalProtocolError, "invalid request (local protocol error)", False),
)


def _transport_failure(exc: httpx.HTTPError, timeout: httpx.Timeout) -> _Failure:
    for exc_type, text, retriable in _TRANSPORT_REASONS:
        if isinstance(exc, exc_type):
            reason = text.format(connect=timeout.connect, read=timeout.read)
            refused = isinstance(exc, httpx.ConnectError)
            return _Failure(kind="transport", reason=f"{reason} [{type(exc).__name__}]", retriable=retriable,
                            unreachable=refused, hint="url" if refused else "")
    return _Failure(kind="transport", reason=f"request failed [{type(exc).__name__}]", retriable=False)


def _redirect_failure(status: int, location: str) -> _Failure:
    host = urlsplit(location).hostname if location else None
    target = f"to host {host}" if host else ("to another path on the same host" if location else "without a Location")
    return _Failure(
        kind="redirect",
        reason=f"HTTP {status} redirect {target}: the URL is probably wrong (redirects are not followed)",
        retriable=False,
        status=status,
        hint="url",
    )


def _not_json_failure(status: int, content_type: str, body: bytes, headers: httpx.Headers) -> _Failure:
    shown_type = content_type or "no content-type"
    is_json_type = "json" in content_type
    ok = 200 <= status < 300
    if ok and is_json_type:
        return _Failure(
            kind="truncated",
            reason=f"HTTP {status} JSON body that does not parse (truncated?, {len(body)} bytes)",
            retriable=True,
            status=status,
        )
    retriable = status in RETRIABLE_STATUSES
    summary = _body_summary(body)
    detail = f"{summary}, {shown_type}" if summary else f"empty body, {shown_type}"
    if retriable:
        reason = f"HTTP {status} (last: {detail})"
    elif ok:
        reason = f"HTTP {status} answered {shown_type}, not JSON ({summary or 'empty body'})"
    else:
        reason = f"HTTP {status} ({detail})"
    return _Failure(
        kind="not_json",
        reason=reason,
        retriable=retriable,
        status=status,
        retry_after=_retry_after(headers) if retriable else None,
        hint=_status_hint(status) or ("url" if ok else ""),
    )


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _body_summary(body: bytes, limit: int = 80) -> str:
    """A short human hint about a non-JSON body: an HTML title, else its first words."""
    match = _TITLE.search(body[:65536])
    raw = match.group(1) if match else body[:2048]
    text = raw.decode("utf-8", errors="replace")
    if not match:
        text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_envelope(data: Any) -> tuple[str | None, str | None] | None:
    """(code, message) when `data` is an error envelope, else None."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and error:
        return (_text(error.get("code")), _text(error.get("message")))
    if isinstance(error, str) and error.strip():
        return (None, error)
    if data.get("success") is False or data.get("code") is False:
        return (None, _text(data.get("message") or data.get("msg")))
    return None


def _loose_error(data: Any) -> tuple[str | None, str | None]:
    """(code, message) from a non-envelope error body such as `{"message": ...}` or `{"detail": ...}`."""
    if not isinstance(data, dict):
        return (None, None)
    code = data.get("code") if isinstance(data.get("code"), str) else None
    return (code, _text(data.get("message") or data.get("msg") or data.get("detail")))


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _code_message(code: str | None, message: str | None) -> str:
    message = _one_line(message or "")[:200]
    if code and message:
        return f"{code}: {message}"
    return code or message or "(no message)"


_AUTH_WORDS = re.compile(r"(?i)(api[_ -]?key|token|auth|credential|unauthori[sz]ed|forbidden|令牌|密钥)")


def _looks_like_auth(code: str | None, message: str | None) -> bool:
    return bool(_AUTH_WORDS.search(f"{code or ''} {message or ''}"))


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status in (404, 405):
        return "url"
    return ""


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date), or None. An HTTP-date is
    measured from the answer's own `Date` header when it has one (the server's clock), else from now."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max((_aware(when) - _server_now(headers)).total_seconds(), 0.0)


def _server_now(headers: httpx.Headers) -> datetime:
    try:
        return _aware(parsedate_to_datetime(headers.get("date", "")))
    except (TypeError, ValueError, IndexError):
        return clock.now()


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _one_line(text: str) -> str:
    return " ".join(text.split())
