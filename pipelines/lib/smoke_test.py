"""The smoke test a reviewer runs before trusting the numbers (the seed article's, automated).

Usage (what `comet-ledger smoke-test` and the Dagster job do)::

    result = run_smoke_test(settings.query_url, settings.api_url, api_key,
                            known_active_range=None, reviewer="alice", chat=False,
                            today=clock.today(settings.timezone))
    print(result.summary())        # human-readable PASS/FAIL report
    print(result.to_json())        # the record as JSON (sorted keys)
    record(settings.warehouse_path, result)   # one row appended to table `smoke_tests`
    sys.exit(result.exit_code)     # 0 when passed, 1 when not

or, from settings, `run_from_settings(settings, reviewer=..., chat=...)`.

What it checks, in order:

1. totals present: `/user/quota` without dates answers `username`, `total_quota` (the current
   balance), `total_used_quota` and `request_count`, all of the right type;
2. a date range with known activity (`known_active_range`, else the 7 days before `today`) answers a
   `daily_quota` with at least one date;
3. optionally (`chat=True`, it costs money against the real service): one minimal chat completion
   ("Say 4", `max_tokens` 5) whose `usage` has integer prompt/completion/total tokens with
   total = prompt + completion;
4. the error path: the malformed date `2026/06/01` is answered with an error, and a range outside any
   activity (2001-01-01..2001-01-07) gives an absent or empty `daily_quota` (and no days outside it);
5. the query key's identity (`/api/usage/token`): its name goes to `query_key_name`, and a warning
   says so plainly when the key can spend money (the docs advise a quota-0 key for balance queries).
   This step never fails the test: when the endpoint does not answer, the name stays NULL and a
   warning says why;
6. (`run_from_settings`) the service's day boundary as the warehouse inferred it
   (`day_boundary`, table `service_day_boundary`): a warning with the numbers when `daily_quota`'s
   days fit another boundary better than COMET_LEDGER_TIMEZONE, or when it cannot be inferred
   (no gateway ledger); nothing before the first reconciliation. Never fails the test.

What it deliberately does NOT assert: token counts, USD figures, uptime or latency. Those vary from
call to call and from day to day, and measuring them is the pipeline's job (reconciliation compares
them); a smoke test only checks that the service answers in the shape and with the behaviour the
pipeline relies on, so that the numbers it then measures can be trusted.

Never raises for a failing service: every transport or HTTP failure becomes one line in `failures`,
built from the client's already-redacted error text (the key travels in the query service's URL).
After a failed totals call the other query-service checks are skipped (one failure line says so):
nothing else is trustworthy from a service that cannot answer the simplest call. Bad *arguments*
(an empty key, a reversed range) raise `ValueError` before any call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from pipelines.lib import clock
from pipelines.lib.cometapi.gateway import fetch_token_usage
from pipelines.lib.cometapi.http import DEFAULT_TIMEOUT, CometAPIError, RetryPolicy, make_client, request_json
from pipelines.lib.cometapi.query import QueryClient
from pipelines.lib.redact import redact

if TYPE_CHECKING:
    from pipelines.lib.settings import Settings

__all__ = [
    "CHAT_PATH",
    "DEFAULT_CHAT_MODEL",
    "EMPTY_RANGE",
    "MALFORMED_END",
    "MALFORMED_START",
    "SmokeTestResult",
    "default_active_range",
    "record",
    "run_from_settings",
    "run_smoke_test",
]

MODEL = "smoke_tests"  # sql/core/smoke_tests.sql
MALFORMED_START = "2026/06/01"  # the seed article's malformed date
MALFORMED_END = "2026/06/30"
EMPTY_RANGE = (date(2001, 1, 1), date(2001, 1, 7))  # before CometAPI existed: no activity possible
DEFAULT_ACTIVE_DAYS = 7
DEFAULT_CHAT_MODEL = "gpt-4.1-nano"
CHAT_PATH = "/v1/chat/completions"
CHAT_PROMPT = "Say 4"
CHAT_MAX_TOKENS = 5
UNITS_PER_USD = 500_000  # internal quota units of /api/usage/token

MALFORMED_ACCEPTED = (
    f"the service silently accepted the malformed date {MALFORMED_START}: "
    "do not trust this pipeline for a review"
)


@dataclass
class SmokeTestResult:
    """One smoke test: the seed's pass/fail fields (the `smoke_tests` row), plus the verdict.

    Field types follow the contract: dates, text, float for amounts, int for counts, bool for the
    `*_present` / `*_working` / `*_returned_error` fields. `usage_field_present` and
    `sample_chat_total_tokens` are None when no chat completion was asked for (not False / 0).
    """

    smoke_test_date: date
    query_key_name: str | None
    query_date_range: str
    total_quota_returned: float | None
    total_used_quota_returned: float | None
    request_count_returned: int | None
    daily_quota_dates_present: bool
    sample_chat_total_tokens: int | None
    usage_field_present: bool | None
    date_range_filter_working: bool
    error_path_returned_error: bool
    reviewer: str | None
    passed: bool
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_at: datetime = field(default_factory=clock.now)

    @property
    def exit_code(self) -> int:
        """0 when the smoke test passed, 1 when it failed (what the CLI exits with)."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values: dates and `checked_at` as ISO 8601 text."""
        out = asdict(self)
        out["smoke_test_date"] = self.smoke_test_date.isoformat()
        out["checked_at"] = self.checked_at.isoformat()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The record as JSON, keys sorted (stable output for the same result)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmokeTestResult:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["smoke_test_date"] = date.fromisoformat(values["smoke_test_date"])
        if "checked_at" in values:
            values["checked_at"] = datetime.fromisoformat(values["checked_at"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> SmokeTestResult:
        return cls.from_dict(json.loads(text))

    def to_params(self) -> dict[str, Any]:
        """The bound `$parameters` of `sql/core/smoke_tests.sql` (lists joined one line each)."""
        params: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        params["failures"] = "\n".join(self.failures) or None
        params["warnings"] = "\n".join(self.warnings) or None
        params["checked_at"] = self.checked_at.astimezone(UTC).isoformat()
        params["smoke_test_date"] = self.smoke_test_date.isoformat()
        return params

    def summary(self) -> str:
        """A few lines a reviewer can read: verdict, what was seen, then failures and warnings."""

        def show(value: Any, missing: str = "none") -> str:
            if value is None:
                return missing
            return str(value).lower() if isinstance(value, bool) else str(value)

        lines = [
            f"smoke test {'PASSED' if self.passed else 'FAILED'} on {self.smoke_test_date.isoformat()}"
            + (f" (reviewer {self.reviewer})" if self.reviewer else ""),
            f"  query key name:             {show(self.query_key_name)}",
            f"  totals: balance {show(self.total_quota_returned)}, used {show(self.total_used_quota_returned)}, "
            f"requests {show(self.request_count_returned)}",
            f"  daily_quota dates present:  {show(self.daily_quota_dates_present)} ({self.query_date_range})",
            f"  date-range filter working:  {show(self.date_range_filter_working)}",
            f"  malformed date rejected:    {show(self.error_path_returned_error)}",
            f"  chat usage field present:   {show(self.usage_field_present, 'not checked (no --chat)')}"
            + (f" (total_tokens {self.sample_chat_total_tokens})" if self.sample_chat_total_tokens is not None else ""),
        ]
        lines += [f"FAIL: {line}" for line in self.failures]
        lines += [f"WARNING: {line}" for line in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def default_active_range(today: date, days: int = DEFAULT_ACTIVE_DAYS) -> tuple[date, date]:
    """The `days` days before `today` (today excluded: it is not over yet)."""
    return today - timedelta(days=days), today - timedelta(days=1)


def run_smoke_test(
    query_url: str,
    api_url: str,
    api_key: str,
    *,
    known_active_range: tuple[date, date] | None,
    reviewer: str | None,
    chat: bool = False,
    chat_model: str = DEFAULT_CHAT_MODEL,
    chat_api_key: str | None = None,
    today: date,
    empty_range: tuple[date, date] = EMPTY_RANGE,
    policy: RetryPolicy = RetryPolicy(),
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> SmokeTestResult:
    """Run the smoke test against `query_url` (the query service) and `api_url` (the API host).

    `known_active_range` (inclusive) must contain days with spend; None means the 7 days before
    `today`. `chat_api_key` is the key for the optional chat completion (default `api_key`; a
    quota-0 query key, as the docs advise, cannot call models, so pass a key that can).
    Returns the result; never raises for a failing service (see the module docstring).
    """
    _check_inputs(api_key, known_active_range, today, empty_range)
    active = known_active_range or default_active_range(today)
    secrets = tuple(s for s in (api_key, chat_api_key) if s)
    run = _Run(secrets)

    facts: dict[str, Any] = {
        "query_key_name": None,
        "total_quota_returned": None,
        "total_used_quota_returned": None,
        "request_count_returned": None,
        "daily_quota_dates_present": False,
        "sample_chat_total_tokens": None,
        "usage_field_present": None,
        "date_range_filter_working": False,
        "error_path_returned_error": False,
    }

    with QueryClient(query_url, api_key, policy=policy, timeout=timeout) as client:
        totals_ok = run.step("totals", lambda: _check_totals(client, facts, run))
        if not totals_ok:
            run.fail(
                "the date-range and error-path checks were skipped: the query service did not answer "
                "the totals call"
            )
        else:
            run.step(f"daily_quota for {_span(active)}", lambda: _check_active(client, active, facts, run))
            run.step(f"malformed date {MALFORMED_START}", lambda: _check_malformed(client, facts, run))
            run.step(f"daily_quota for {_span(empty_range)}", lambda: _check_empty(client, empty_range, facts, run))

    if chat:  # the API host, not the query service: run it even when the totals call failed
        facts["usage_field_present"] = False  # until a consistent usage object is seen
        run.step("chat completion", lambda: _check_chat(api_url, chat_api_key or api_key, chat_model,
                                                        facts, run, policy, timeout))

    _check_identity(api_url, api_key, facts, run, policy, timeout)

    clean_reviewer = (reviewer or "").strip() or None
    return SmokeTestResult(
        smoke_test_date=today,
        query_key_name=facts["query_key_name"],
        query_date_range=_span(active),
        total_quota_returned=facts["total_quota_returned"],
        total_used_quota_returned=facts["total_used_quota_returned"],
        request_count_returned=facts["request_count_returned"],
        daily_quota_dates_present=facts["daily_quota_dates_present"],
        sample_chat_total_tokens=facts["sample_chat_total_tokens"],
        usage_field_present=facts["usage_field_present"],
        date_range_filter_working=facts["date_range_filter_working"],
        error_path_returned_error=facts["error_path_returned_error"],
        reviewer=run.clean(clean_reviewer) if clean_reviewer else None,
        passed=not run.failures,
        failures=run.failures,
        warnings=run.warnings,
        checked_at=clock.now(),
    )


def run_from_settings(
    settings: Settings,
    *,
    reviewer: str | None = None,
    chat: bool = False,
    chat_model: str = DEFAULT_CHAT_MODEL,
    chat_api_key: str | None = None,
    known_active_range: tuple[date, date] | None = None,
    today: date | None = None,
    policy: RetryPolicy = RetryPolicy(),
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> SmokeTestResult:
    """`run_smoke_test` with the configured URLs and key; `today` defaults to today in
    `COMET_LEDGER_TIMEZONE`. Raises the settings' `ConfigError` when COMETAPI_KEY is missing."""
    api_key = settings.require_api_key()
    result = run_smoke_test(
        settings.query_url,
        settings.api_url,
        api_key,
        known_active_range=known_active_range,
        reviewer=reviewer,
        chat=chat,
        chat_model=chat_model,
        chat_api_key=chat_api_key,
        today=today or clock.today(settings.tz),
        policy=policy,
        timeout=timeout,
    )
    from pipelines.lib.reconciliation.day_boundary import read_verdict

    boundary = read_verdict(settings.warehouse_path)  # None before the first reconciliation
    if boundary is not None and not (boundary.inferable and boundary.configured_fits):
        result.warnings.append(boundary.line())
    return result


def record(warehouse_path: Path, result: SmokeTestResult) -> None:
    """Append `result` as one row of table `smoke_tests` (created if missing) and publish."""
    from pipelines.lib.warehouse import publish, run_model

    with publish(Path(warehouse_path)) as con:
        run_model(con, MODEL, result.to_params())


# --- the steps ---------------------------------------------------------------------------------
class _Run:
    """Collects failure and warning lines, each redacted and on one line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(secrets)
        self.failures: list[str] = []
        self.warnings: list[str] = []

    def clean(self, text: str) -> str:
        return " ".join(redact(str(text), self.secrets).split())

    def fail(self, text: str) -> None:
        self.failures.append(self.clean(text))

    def warn(self, text: str) -> None:
        self.warnings.append(self.clean(text))

    def step(self, what: str, check: Callable[[], None]) -> bool:
        """Run one required check; a raised error becomes one failure line. True if the service answered."""
        try:
            check()
        except CometAPIError as err:  # str(err) is already one redacted line
            self.fail(f"{what}: {err}")
        except Exception as err:  # noqa: BLE001 - a smoke test reports, it does not crash
            self.fail(f"{what}: unexpected {type(err).__name__}: {err}")
        else:
            return True
        return False


def _check_totals(client: QueryClient, facts: dict[str, Any], run: _Run) -> None:
    # fetch_quota validates the shape: username a string, total_quota / total_used_quota numbers,
    # request_count a whole number; anything else raises CometAPIError naming the field.
    reply = client.fetch_quota()
    facts["total_quota_returned"] = float(reply.balance_usd)
    facts["total_used_quota_returned"] = float(reply.total_used_usd)
    facts["request_count_returned"] = int(reply.request_count)
    if not reply.username.strip():
        run.fail("totals: /user/quota answered an empty username")


def _check_active(client: QueryClient, active: tuple[date, date], facts: dict[str, Any], run: _Run) -> None:
    reply = client.fetch_quota(*active)
    dates = sorted({entry.usage_date for entry in reply.daily or []})
    facts["daily_quota_dates_present"] = bool(dates)
    if reply.daily is None:
        run.fail(
            f"the range {_span(active)} with known activity answered no daily_quota at all: "
            "the service ignores the dates (or pick a range with spend: --known-active-range)"
        )
    elif not dates:
        run.fail(
            f"the range {_span(active)} with known activity answered an empty daily_quota "
            "(if the account had no spend then, pick a range that had: --known-active-range)"
        )
    if reply.dropped_dates:
        run.warn(
            f"the range {_span(active)} also answered {len(reply.dropped_dates)} day(s) outside it "
            f"({reply.dropped_dates[0].isoformat()}…); they were ignored"
        )


def _check_malformed(client: QueryClient, facts: dict[str, Any], run: _Run) -> None:
    rejected = client.malformed_date_probe(MALFORMED_START, MALFORMED_END)
    facts["error_path_returned_error"] = rejected
    if not rejected:
        run.fail(MALFORMED_ACCEPTED)


def _check_empty(client: QueryClient, empty: tuple[date, date], facts: dict[str, Any], run: _Run) -> None:
    reply = client.fetch_quota(*empty)
    inside = sorted({entry.usage_date for entry in reply.daily or []})
    outside = list(reply.dropped_dates)
    working = not inside and not outside
    facts["date_range_filter_working"] = working
    if outside:
        run.fail(
            f"the range {_span(empty)}, outside any activity, answered daily_quota for {len(outside)} day(s) "
            f"outside it ({outside[0].isoformat()}…): the service ignores the date filter"
        )
    elif inside:
        run.fail(
            f"the range {_span(empty)}, outside any activity, answered daily_quota for {len(inside)} day(s): "
            "the date filter cannot be trusted"
        )


def _check_chat(
    api_url: str,
    key: str,
    model: str,
    facts: dict[str, Any],
    run: _Run,
    policy: RetryPolicy,
    timeout: httpx.Timeout | float,
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "max_tokens": CHAT_MAX_TOKENS,
        "stream": False,
    }
    with make_client(api_url, timeout) as client:
        reply = request_json(
            client,
            "POST",
            CHAT_PATH,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            secrets=(key,),
            policy=policy,
            service="CometAPI chat",
            auth_hint="the chat key; a quota-0 query key cannot call models",
            url_hint="COMETAPI_API_URL",
        )
    usage = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(usage, dict):
        run.fail(f"chat completion: the reply has no usage object (model {model})")
        return
    counts = {name: usage.get(name) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    bad = [name for name, value in counts.items() if isinstance(value, bool) or not isinstance(value, int) or value < 0]
    if bad:
        run.fail(f"chat completion: usage.{bad[0]} is {json.dumps(counts[bad[0]])}, not a whole number of tokens")
        return
    facts["sample_chat_total_tokens"] = counts["total_tokens"]
    if counts["total_tokens"] != counts["prompt_tokens"] + counts["completion_tokens"]:
        run.fail(
            f"chat completion: usage.total_tokens {counts['total_tokens']} is not prompt_tokens "
            f"{counts['prompt_tokens']} + completion_tokens {counts['completion_tokens']}"
        )
        return
    facts["usage_field_present"] = True


def _check_identity(
    api_url: str,
    api_key: str,
    facts: dict[str, Any],
    run: _Run,
    policy: RetryPolicy,
    timeout: httpx.Timeout | float,
) -> None:
    """Warnings only: the key's name is a nice-to-have, its spending power a hazard to flag."""
    try:
        data = fetch_token_usage(api_url, api_key, policy=policy, timeout=timeout)
    except CometAPIError as err:
        run.warn(f"could not learn the query key's name from /api/usage/token ({err}); query_key_name left empty")
        return
    except Exception as err:  # noqa: BLE001
        run.warn(f"could not learn the query key's name from /api/usage/token (unexpected {type(err).__name__}: "
                 f"{err}); query_key_name left empty")
        return
    name = data.get("name")
    if isinstance(name, str) and name.strip():
        facts["query_key_name"] = run.clean(name.strip())
    else:
        run.warn("/api/usage/token answered no key name; query_key_name left empty")
    who = f"the query key '{facts['query_key_name']}'" if facts["query_key_name"] else "the query key"
    advice = (
        "the docs advise a quota-0 key for balance queries, so that a leaked copy cannot call models; "
        "create one and set COMETAPI_KEY to it"
    )
    available = data.get("total_available")
    if data.get("unlimited_quota") is True:
        run.warn(f"{who} can spend money: it has unlimited quota; {advice}")
    elif isinstance(available, int | float | Decimal) and not isinstance(available, bool) and available > 0:
        usd = Decimal(str(available)) / UNITS_PER_USD
        run.warn(f"{who} can spend money: {available} quota units (about {usd:.2f} USD) available; {advice}")


def _check_inputs(
    api_key: str,
    active: tuple[date, date] | None,
    today: date,
    empty: tuple[date, date],
) -> None:
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("the smoke test needs an API key (COMETAPI_KEY)")
    if not isinstance(today, date) or isinstance(today, datetime):
        raise ValueError(f"today must be a datetime.date, got {type(today).__name__}")
    for name, span in (("known_active_range", active), ("empty_range", empty)):
        if span is None:
            continue
        if (
            not isinstance(span, tuple | list)
            or len(span) != 2
            or not all(isinstance(d, date) and not isinstance(d, datetime) for d in span)
        ):
            raise ValueError(f"{name} must be a (start, end) pair of datetime.date")
        if span[1] < span[0]:
            raise ValueError(f"{name} ends ({span[1]}) before it starts ({span[0]})")


def _span(span: tuple[date, date]) -> str:
    return f"{span[0].isoformat()}..{span[1].isoformat()}"
