"""Staying under the gateway's rate limit: a sliding-window pacer, and an httpx transport that uses it.

Upstream new-api limits every `/api` route to 360 requests per 180 s per client IP by default
(`common/init.go`: GLOBAL_API_RATE_LIMIT / GLOBAL_API_RATE_LIMIT_DURATION), and the critical routes
(`/api/usage/token`, `/api/log/token`) to 20 per 20 minutes (`middleware/rate-limit.go`,
CriticalRateLimit). Its in-memory limiter (`common/rate-limit.go`, `InMemoryRateLimiter.Request`)
keeps the arrival times, in whole seconds, of the last N allowed requests and refuses a request while
the oldest of them is less than the window old; a refusal is an HTTP 429 with an empty body and no
`Retry-After`. The same arithmetic on the client's side is a pacer that never sends request N+1 before
request 1 is a window old, plus a margin for the server's whole seconds and for network delay
(`RateLimit.margin_s`, 2 s): the client sends 360 requests every 182 s, 98.9 % of the allowed rate.

Written by hand rather than with a rate-limit library (`pyrate-limiter` is the well-kept one): what
is needed is (a) exactly upstream's sliding-window-log rule with a margin added to the window, (b) a
clock and a sleep that tests inject, so pacing is tested without waiting and without the wall clock,
(c) one pause shared by every request to a host after a bare 429 (someone else on the same IP, or a
gateway configured lower, is using the budget), and (d) one pacer per host shared by every client in
the process. pyrate-limiter gives (a) without the margin and none of (c); the rest is the same ~40
lines either way.

The pacing sits in an httpx transport (`PacedTransport`), so every attempt, retries included, is
paced without the HTTP layer (`http.py`) knowing: a 429 still reaches it and is retried with its
back-off, and the pacer also holds back every other request for a growing pause (`back_off`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# upstream defaults (common/init.go; middleware/rate-limit.go CriticalRateLimit)
API_LIMIT = 360
API_WINDOW_S = 180.0
CRITICAL_LIMIT = 20
CRITICAL_WINDOW_S = 1200.0
CRITICAL_PATHS = ("/api/usage/token", "/api/log/token")
DEFAULT_MARGIN_S = 2.0


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` requests in any `window_s` seconds."""

    requests: int = API_LIMIT
    window_s: float = API_WINDOW_S
    margin_s: float = DEFAULT_MARGIN_S  # added to the window: upstream's whole seconds, network delay

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.window_s > 0 or self.margin_s < 0:
            raise ValueError(f"a rate limit needs at least 1 request per a positive window, got "
                             f"{self.requests} per {self.window_s} s")

    @property
    def per_second(self) -> float:
        """The rate the gateway allows over a long pull."""
        return self.requests / self.window_s

    @property
    def paced_per_second(self) -> float:
        """The rate the pacer keeps to over a long pull."""
        return self.requests / (self.window_s + self.margin_s)

    def seconds_for(self, calls: int) -> float:
        """How long `calls` calls take at this pace, the first `requests` of them sent at once."""
        if calls <= self.requests:
            return 0.0
        return math.ceil(calls / self.requests - 1) * (self.window_s + self.margin_s)


class Pacer:
    """Never lets more than `limit.requests` sends start within `limit.window_s + margin_s` seconds."""

    def __init__(self, limit: RateLimit = RateLimit(), *, margin_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = limit
        self.margin_s = limit.margin_s if margin_s is None else margin_s
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._refusals = 0  # bare 429s in a row
        self._lock = threading.Lock()
        self.waited_s = 0.0  # total time held back
        self.sends = 0
        self.refused = 0  # bare 429s seen

    def acquire(self) -> float:
        """Wait until a send is allowed, record it; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                window = self.limit.window_s + self.margin_s
                while self._sent and now - self._sent[0] >= window:
                    self._sent.popleft()
                ready = self._paused_until
                if len(self._sent) >= self.limit.requests:
                    ready = max(ready, self._sent[0] + window)
                if ready <= now:
                    self._sent.append(now)
                    self.sends += 1
                    self.waited_s += waited
                    return waited
                delay = ready - now
            self._sleep(delay)
            waited += delay

    def back_off(self) -> float:
        """A bare 429 came back: hold every send back for a pause that doubles with each one in a row
        (one send's share of the window, up to the whole window). Returns the pause."""
        with self._lock:
            self._refusals += 1
            self.refused += 1
            pause = min(self.limit.window_s, self.limit.window_s / self.limit.requests * 2 ** self._refusals)
            self._paused_until = max(self._paused_until, self._clock() + pause)
            return pause

    def succeeded(self) -> None:
        with self._lock:
            self._refusals = 0


_PACERS: dict[tuple[str, str], Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(base_url: str, kind: str, limit: RateLimit) -> Pacer:
    """The process-wide pacer of one host (`kind` "api" or "critical"): every client shares its budget."""
    parts = urlsplit(base_url)
    key = (f"{parts.scheme}://{parts.netloc}".lower(), kind)
    with _PACERS_LOCK:
        pacer = _PACERS.get(key)
        if pacer is None or pacer.limit != limit:
            pacer = _PACERS[key] = Pacer(limit)
        return pacer


def is_bare_429(response: httpx.Response) -> bool:
    """Upstream's rate-limit refusal: 429, no Retry-After, nothing in the body (it is read here)."""
    if response.status_code != 429 or "retry-after" in response.headers:
        return False
    return not response.read().strip()


class PacedTransport(httpx.BaseTransport):
    """Paces the requests to `/api/...` paths through the host's pacers; passes everything else on."""

    def __init__(self, base_url: str, inner: httpx.BaseTransport | None = None, *,
                 limit: RateLimit = RateLimit(), critical: RateLimit = RateLimit(CRITICAL_LIMIT, CRITICAL_WINDOW_S),
                 pacers: tuple[Pacer, Pacer] | None = None) -> None:
        self._inner = inner or httpx.HTTPTransport()
        self.api, self.critical = pacers or (pacer_for(base_url, "api", limit), pacer_for(base_url, "critical", critical))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not path.startswith("/api/") and path != "/api":
            return self._inner.handle_request(request)
        pacers = [self.api] + ([self.critical] if path.rstrip("/") in CRITICAL_PATHS else [])
        for pacer in pacers:
            pacer.acquire()
        response = self._inner.handle_request(request)
        if is_bare_429(response):
            for pacer in pacers:
                pacer.back_off()
        elif response.status_code < 400:
            for pacer in pacers:
                pacer.succeeded()
        return response

    def close(self) -> None:
        self._inner.close()
