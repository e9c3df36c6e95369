"""Scripted misbehaviour for the simulator: what a flaky gateway does to a client.

`FaultPlan.add(kind, times=..., paths=None, **opts)` queues a fault; the server asks the plan once
per request. `paths` is a list of path prefixes (None: every path). `times` counts the requests the
fault applies to; None keeps it until `clear()`. When `times` is not given it is 1, except for
`status` (one request per listed code) and the *modes* (`accept_malformed_dates`, `maintenance`,
`export_unavailable`), which stay active until `clear()`.

Kinds and options:

| kind | effect | options |
|---|---|---|
| rate_limit | 429, `Retry-After`, JSON error envelope | retry_after (1) |
| status | the codes in order, one per request; 524 is Cloudflare's HTML page, the rest the JSON error envelope | codes ([500, 502, 503, 504, 524]), code (error.code, default per status) |
| slow | sleep, then answer normally | delay (1.0 s) |
| reset | abort the TCP connection without a response (RST) | |
| html_redirect | 301 with `Location` and an HTML body | location |
| error_body_200 | HTTP 200 carrying an error: `{"success": false, ...}` for /api/*, the JSON error envelope elsewhere | message |
| truncated_json | HTTP 200 `application/json` with the real body cut in half | |
| accept_malformed_dates | mode: a malformed `start_date`/`end_date` is accepted silently and `daily_quota` omitted | |
| maintenance | mode: every request gets 503 `text/html` "scheduled maintenance" | |
| renamed_field | rename a field wherever it occurs in the JSON body | from_, to |
| missing_field | drop a field wherever it occurs in the JSON body | field |
| export_unavailable | mode: `/api/log/self/export` answers like a gateway without it: an nginx 404 page, a JSON 405, the console's web app (HTTP 200 HTML) or `success: false` | style ("404", "405", "html_200", "success_false") |

On `/api/log/self/export` (a CSV, streamed) the body faults act on the CSV: `truncated_json` cuts it in
half (a complete HTTP answer whose last row is cut), `renamed_field` renames a header column,
`missing_field` drops a column. Path prefixes match the export too: `paths=["/api/log/self"]` covers
both ledger endpoints.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

KINDS = (
    "rate_limit",
    "status",
    "slow",
    "reset",
    "html_redirect",
    "error_body_200",
    "truncated_json",
    "accept_malformed_dates",
    "maintenance",
    "renamed_field",
    "missing_field",
    "export_unavailable",
)
MODES = ("accept_malformed_dates", "maintenance", "export_unavailable")
EXPORT_UNAVAILABLE_STYLES = ("404", "405", "html_200", "success_false")
DEFAULT_STATUS_CODES = (500, 502, 503, 504, 524)

_DEFAULT = object()


@dataclass
class Fault:
    kind: str
    remaining: int | None  # None: until clear()
    paths: tuple[str, ...] | None
    opts: dict = field(default_factory=dict)
    served: int = 0

    def matches(self, path: str) -> bool:
        return self.paths is None or any(path.startswith(prefix) for prefix in self.paths)

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass(frozen=True)
class Injected:
    """One application of a fault to one request."""

    kind: str
    opts: dict
    status: int | None = None  # for kind "status": the code this request gets


class FaultPlan:
    """Thread-safe queue of faults, consulted by the server for every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str, times=_DEFAULT, paths: list[str] | None = None, **opts) -> Fault:
        """Queue a fault; `times` None = until clear(), default 1 (status: one per code; modes: None)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if kind == "status":
            opts["codes"] = [int(c) for c in opts.get("codes", DEFAULT_STATUS_CODES)]
            if not opts["codes"]:
                raise ValueError("fault 'status' needs at least one code")
        if kind == "renamed_field" and not ("from_" in opts and "to" in opts):
            raise ValueError("fault 'renamed_field' needs from_= and to=")
        if kind == "missing_field" and "field" not in opts:
            raise ValueError("fault 'missing_field' needs field=")
        if kind == "export_unavailable":
            opts["style"] = str(opts.get("style", "404"))
            if opts["style"] not in EXPORT_UNAVAILABLE_STYLES:
                raise ValueError(f"fault 'export_unavailable' style is one of {', '.join(EXPORT_UNAVAILABLE_STYLES)}")
        if times is _DEFAULT:
            times = None if kind in MODES else len(opts["codes"]) if kind == "status" else 1
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, got {times}")
        fault = Fault(kind, times, tuple(paths) if paths is not None else None, opts)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def take(self, path: str) -> Injected | None:
        """The first queued (non-mode) fault matching `path`, consuming one of its `times`."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in MODES or fault.exhausted or not fault.matches(path):
                    continue
                return self._consume(fault)
        return None

    def mode(self, kind: str, path: str) -> Injected | None:
        """Whether mode `kind` is active for `path`; consumes one of its `times` if they are counted."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and not fault.exhausted and fault.matches(path):
                    return self._consume(fault)
        return None

    @staticmethod
    def _consume(fault: Fault) -> Injected:
        status = None
        if fault.kind == "status":
            codes = fault.opts["codes"]
            status = codes[fault.served % len(codes)]
        fault.served += 1
        if fault.remaining is not None:
            fault.remaining -= 1
        return Injected(fault.kind, dict(fault.opts), status)
