"""Deterministic gateway traffic: what five API keys did, request by request, and what it cost.

Every reporting day (a calendar day in `service_tz`) is generated on its own, lazily, from random
generators seeded by `(seed, day ordinal, key index)`, so a year at 100 000 requests a day can be
streamed one day at a time and a day's traffic does not depend on which other days were asked for.
On top of that ordinary traffic sit the *planted realities* (`Traffic.planted`), the facts the
reconciliation must find. With `days=30` all of them fall inside the window:

- `missing_logs`: day `start + days - 6`, key `team-a-prod`: 7 extra gpt-4o / gpt-4o-mini calls
  billed by the gateway from 198.51.100.66 (an address no other request uses) that no client logged.
- `price_change`: gpt-4o-mini's model_ratio drops from 0.075 to 0.06 from day `start + days // 2`.
- `unpriced_model`: `research-batch` calls glm-4.6 (billed, absent from `prices_csv()`) on every day
  whose ordinal is divisible by 4.
- `restatement`: day `start + days - 3`, key `media-tasks`: a kling_video task whose late billing
  correction (+0.175 USD) is a type-2 row of its own (`other.task_id`, `pre_consumed_quota`,
  `actual_quota`: upstream service/task_billing.go), and `visible_after_first_pull`: the server shows
  it only after it has once served that day.
- `negative_correction`: day `start + days - 8`, `media-tasks`: a suno_music task whose final price
  is 0.04 USD lower: a type-6 row giving the difference back (since 2026-02), or, on a day before
  `REQUEST_IDS_FROM`, the legacy type-2 row with a negative quota (model/log.go RecordReConsumeLog).
- `refund`: day `start + days - 12`, `media-tasks`: a mj_imagine task that failed upstream and
  was refunded in full (a type-6 row later the same day, `other.task_id` and `reason`; with
  `refund_delay` that long after the task, possibly on the next day, as a task that fails after
  midnight is refunded then).

A task's client log (the submit reply) names the task by the public id that its refund or
correction names in `other.task_id` (`SimRequest.public_task_id`); its own consume row does not.
- `unknown_usage`: day `start + days - 10`, `team-a-dev`: 3 streamed gpt-4o calls whose stream
  broke before the usage chunk: the client does not know the usage, and the gateway bills its own
  estimate of the prompt (no completion tokens; upstream service/text_quota.go).

Every day also has the account's console login, a type-7 row (upstream's LogTypeLogin) without key
or quota. Ledger rows carry a `request_id` only from `REQUEST_IDS_FROM` (2026-02-04) on, and task
refunds and corrections never do (`SimRequest.logs_request_id`).

Days outside `[start, start + days)` are clamped into the window, so short simulations keep every
planted fact (possibly several on one day).

Counting rules (what the query service reports per day and key, `reported_daily`):
- spend = sum of the `quota` of type-2 rows (consumption and corrections, whose quota is a signed
  delta) minus the `quota` of type-6 refund rows (positive numbers that give money back), in the
  reporting day of each row's own timestamp, / 500 000;
- requests = number of type-2 rows that are not corrections. A refunded request still counts as a
  request; errors (type 5, quota 0) never count.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from zoneinfo import ZoneInfo

import numpy as np

from pipelines.lib import clock
from pipelines.simulator.catalog import (
    CATALOG,
    PRICE_CHANGE_MODEL,
    PRICE_CHANGE_NEW_RATIO,
    UNITS_PER_USD,
    UNPRICED_MODEL,
    ModelPrice,
    price_at,
    price_change_date,
)

LOG_CONSUME = 2
LOG_ERROR = 5
LOG_REFUND = 6
LOG_LOGIN = 7  # upstream model/log.go LogTypeLogin (added after CometAPI's CLI mapped 1-6)
# Upstream added request_id to log rows in 2026-02 (new-api commit 3570bc2d8, model/log.go
# `request_id,omitempty`): rows logged before this day carry none.
REQUEST_IDS_FROM = date(2026, 2, 4)
# What upstream writes into `content` when the provider returned no usage (service/text_quota.go
# PostTextConsumeQuota): the call is billed on the gateway's own estimate of the prompt.
NO_USAGE_CONTENT = "上游无计费信息"

LEAK_IP = "198.51.100.66"
MISSING_LOGS_COUNT = 7
UNKNOWN_USAGE_COUNT = 3
RESTATEMENT_DELTA_UNITS = 87_500  # +0.175 USD
NEGATIVE_CORRECTION_UNITS = -20_000  # -0.04 USD
_USD_QUANTUM = Decimal("0.000001")


@dataclass(frozen=True)
class SimKey:
    """An API key of the simulated account. `remain_quota_usd` is its allowance before any traffic."""

    name: str
    remain_quota_usd: float | None
    unlimited: bool


KEYS: tuple[SimKey, ...] = (
    SimKey("team-a-prod", 200.0, False),
    SimKey("team-a-dev", 50.0, False),
    SimKey("team-b-prod", None, True),
    SimKey("research-batch", 150.0, False),
    SimKey("media-tasks", 40.0, False),
)


@dataclass(frozen=True)
class _Profile:
    weight: float  # share of the day's requests
    weekend: float  # volume factor on Saturday and Sunday
    business_hours: float  # share of calls drawn around 13:30 local, the rest uniform
    mix: tuple[tuple[str, float], ...]
    ips: tuple[str, ...]
    stream_p: float = 0.35


_PROFILES: dict[str, _Profile] = {
    "team-a-prod": _Profile(
        0.32, 0.6, 0.7,
        (("gpt-4o", 0.3), ("gpt-4o-mini", 0.4), ("claude-sonnet-4-20250514", 0.2), ("o4-mini", 0.1)),
        ("203.0.113.7", "203.0.113.8"),
    ),
    "team-a-dev": _Profile(
        0.14, 0.3, 0.85, (("gpt-4o-mini", 0.5), ("gpt-4.1-nano", 0.3), ("gpt-4o", 0.2)), ("203.0.113.21",)
    ),
    "team-b-prod": _Profile(
        0.28, 0.8, 0.5,
        (("gpt-4.1-nano", 0.4), ("claude-sonnet-4-20250514", 0.35), ("gpt-4o-mini", 0.25)),
        ("203.0.113.40", "203.0.113.41", "203.0.113.42"),
    ),
    "research-batch": _Profile(
        0.16, 1.0, 0.1, (("o4-mini", 0.4), ("claude-sonnet-4-20250514", 0.3), ("gpt-4o", 0.3)), ("192.0.2.10",), 0.2
    ),
    "media-tasks": _Profile(
        0.10, 1.0, 0.4, (("mj_imagine", 0.5), ("suno_music", 0.3), ("kling_video", 0.2)), ("192.0.2.55",), 0.0
    ),
}
_QUIET_P = 0.08  # chance that a key has no traffic at all on a day
_ERROR_P = 0.02  # chance that a call fails (type-5 row, quota 0)
_GLM_SHARE = 0.3

USAGE_SHAPES = (
    "chat_completion",
    "chat_completion_chunk",
    "response",
    "response_completed",
    "anthropic_message",
    "anthropic_message_delta",
    "task",
)
_SHAPES = {
    "/v1/chat/completions": ("chat_completion", "chat_completion_chunk"),
    "/v1/responses": ("response", "response_completed"),
    "/v1/messages": ("anthropic_message", "anthropic_message_delta"),
}


@dataclass(frozen=True)
class SimRequest:
    """One row of the gateway's ledger (and, when `client_logged`, of a client's request log).

    Token fields use OpenAI semantics: `prompt_tokens` includes cache reads (`cached_tokens`) and
    cache writes (`cache_write_tokens`); `reasoning_tokens` is part of `completion_tokens`.
    `quota_units` is signed for corrections, positive for refunds, 0 for errors.
    """

    request_id: str
    ts: datetime
    key_name: str
    model: str
    endpoint: str
    is_stream: bool
    usage_shape: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    quota_units: int
    log_type: int
    source_ip: str
    latency_ms: int
    client_logged: bool
    usage_known_to_client: bool
    other: dict = field(hash=False)
    correction_of: str | None = None
    visible_after_first_pull: bool = False
    refund_of: str | None = None
    response_model: str = ""  # the model name the upstream answers with (a dated snapshot for OpenAI)
    ip_logged: bool = True  # whether the gateway ledger shows `source_ip` (else "")
    seq: int = field(default=0, compare=False)  # position key inside the day; unique per day
    task_billing: bool = False  # a task's later refund or correction (no request id, service/task_billing.go)

    @property
    def usd(self) -> Decimal:
        """Signed effect on the day's reported spend (refunds negative)."""
        sign = -1 if self.log_type == LOG_REFUND else 1
        return (Decimal(sign * self.quota_units) / UNITS_PER_USD).quantize(_USD_QUANTUM)

    @property
    def is_request(self) -> bool:
        """Counted as a request by the query service."""
        return self.log_type == LOG_CONSUME and self.correction_of is None

    @property
    def logs_request_id(self) -> bool:
        """Whether the gateway's ledger row carries `request_id` (upstream: since 2026-02, and never on
        task billing rows: model/log.go RecordTaskBillingLog)."""
        return not self.task_billing and self.ts.date() >= REQUEST_IDS_FROM

    @property
    def public_task_id(self) -> str | None:
        """The id the gateway gives a per-call task and answers its client with (upstream model/task.go
        GenerateTaskID, `task_` + random characters; relay/relay_task.go hands it to the adaptor, whose
        reply carries it: relay/channel/task/suno/adaptor.go `data`, the video adaptors `id`/`task_id`).
        A later refund or correction of the task names it in `other.task_id` (service/task_billing.go
        RefundTaskQuota / RecalculateTaskQuota); the submit's own charge does not (LogTaskConsumption)."""
        return "task_" + _hex_id(self.request_id, 24) if self.usage_shape == "task" and not self.task_billing else None

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Traffic:
    """The simulated account's traffic over `[start, start + days)` (reporting days in `service_tz`)."""

    def __init__(self, seed: int, start: date, days: int, requests_per_day: int, service_tz: str = "UTC",
                 refund_delay: timedelta | None = None):
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if requests_per_day < 0:
            raise ValueError(f"requests_per_day must not be negative, got {requests_per_day}")
        if refund_delay is not None and refund_delay <= timedelta(0):
            raise ValueError(f"refund_delay must be positive, got {refund_delay}")
        self.seed = seed
        self.refund_delay = refund_delay
        self.start = start
        self.days = days
        self.requests_per_day = requests_per_day
        self.service_tz = service_tz
        self.tz = ZoneInfo(service_tz)
        self.keys: tuple[SimKey, ...] = KEYS
        self._lock = threading.RLock()
        self._day_cache: OrderedDict[date, tuple[SimRequest, ...]] = OrderedDict()
        self._cache_days = max(4, 400_000 // max(requests_per_day, 1))
        self._totals: dict[date, dict[str, list[int]]] = {}

    # --- calendar ---------------------------------------------------------------------------
    @property
    def end(self) -> date:
        """First day after the simulated window."""
        return self.start + timedelta(days=self.days)

    @property
    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def day_of(self, ts: datetime) -> date:
        """Reporting day of an instant."""
        return ts.astimezone(self.tz).date()

    def day_bounds(self, day: date) -> tuple[int, int]:
        """(unix seconds at the day's first instant, length of the day in seconds) in service_tz."""
        first = datetime.combine(day, time(0), tzinfo=self.tz).timestamp()
        after = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz).timestamp()
        return int(first), int(after - first)

    def _clamp(self, offset: int) -> date:
        return self.start + timedelta(days=min(max(offset, 0), self.days - 1))

    @cached_property
    def planted_dates(self) -> dict[str, date]:
        return {
            "missing_logs": self._clamp(self.days - 6),
            "price_change": price_change_date(self.start, self.days),
            "restatement": self._clamp(self.days - 3),
            "negative_correction": self._clamp(self.days - 8),
            "refund": self._clamp(self.days - 12),
            "unknown_usage": self._clamp(self.days - 10),
        }

    @staticmethod
    def is_glm_day(day: date) -> bool:
        return day.toordinal() % 4 == 0

    # --- requests ---------------------------------------------------------------------------
    def requests_for_day(self, day: date) -> list[SimRequest]:
        """Every ledger row of one reporting day, oldest first (empty outside the window)."""
        if not self.start <= day < self.end:
            return []
        with self._lock:
            rows = self._day_cache.get(day)
            if rows is not None:
                self._day_cache.move_to_end(day)
                return list(rows)
        rows = self._generate_day(day)
        with self._lock:
            self._day_cache[day] = rows
            while len(self._day_cache) > self._cache_days:
                self._day_cache.popitem(last=False)
            totals = _day_totals(rows)
            self._totals.setdefault(day, {k.name: totals[k.name] for k in self.keys if k.name in totals})
        return list(rows)

    def iter_requests(self, days: Iterable[date] | None = None) -> Iterator[SimRequest]:
        for day in self.dates if days is None else days:
            yield from self.requests_for_day(day)

    def _generate_day(self, day: date) -> tuple[SimRequest, ...]:
        epoch0, length = self.day_bounds(day)
        rows: list[SimRequest] = []
        for key_index, key in enumerate(self.keys):
            rows.extend(self._key_day(day, key_index, key.name, epoch0, length))
        rows.extend(self._planted_rows(day, epoch0, length))
        rows.append(self._login_row(day, epoch0))
        rows.sort(key=lambda r: (r.ts, r.seq))
        return tuple(rows)

    def _forced_minimum(self, day: date, key_name: str) -> int:
        """Planted facts need ordinary traffic beside them on their key-day."""
        dates = self.planted_dates
        if key_name == "team-a-prod" and day == dates["missing_logs"]:
            return 6
        if key_name == "team-a-dev" and day == dates["unknown_usage"]:
            return 3
        if key_name == "research-batch" and self.is_glm_day(day):
            return 4
        return 0

    def _key_day_columns(self, day: date, key_index: int, key_name: str, length: int) -> _Columns | None:
        """The numeric draft of one key-day (numpy arrays), or None when the key was idle."""
        profile = _PROFILES[key_name]
        rng = np.random.default_rng([self.seed, day.toordinal(), key_index])
        quiet = rng.random() < _QUIET_P
        volume = self.requests_per_day * profile.weight * rng.lognormal(0.0, 0.25)
        if day.weekday() >= 5:
            volume *= profile.weekend
        n = int(rng.poisson(volume))
        forced = self._forced_minimum(day, key_name)
        n = max(n, forced) if forced else (0 if quiet else n)
        if n == 0:
            return None

        models = [m for m, _ in profile.mix]
        weights = np.array([w for _, w in profile.mix], dtype=float)
        glm = key_name == "research-batch" and self.is_glm_day(day)
        if glm:
            models.append(UNPRICED_MODEL)
            weights = np.append(weights * (1 - _GLM_SHARE), _GLM_SHARE)
        model_idx = rng.choice(len(models), size=n, p=weights / weights.sum())
        if glm:
            model_idx[:2] = len(models) - 1

        business = rng.normal(13.5 * 3600, 3.5 * 3600, n)
        anytime = rng.uniform(0, length, n)
        offsets = np.where(rng.random(n) < profile.business_hours, business, anytime)
        offsets = np.clip(offsets, 0, length - 1).astype(np.int64)
        stream = rng.random(n) < profile.stream_p
        error = rng.random(n) < _ERROR_P
        ip_idx = rng.integers(0, len(profile.ips), n)
        prompt = np.clip(rng.lognormal(np.log(1500), 1.0, n), 60, 150_000).astype(np.int64)
        completion = np.clip(rng.lognormal(np.log(300), 0.9, n), 5, 12_000).astype(np.int64)
        u_cache, u_write, f_cache, f_write, f_reason = rng.random((5, n))
        latency = np.clip(rng.lognormal(np.log(1800), 0.7, n), 150, 120_000).astype(np.int64)
        task_latency = np.clip(rng.lognormal(np.log(9000), 0.5, n), 1000, 300_000).astype(np.int64)
        frt_share = rng.uniform(0.05, 0.3, n)

        cached = np.zeros(n, dtype=np.int64)
        cache_write = np.zeros(n, dtype=np.int64)
        reasoning = np.zeros(n, dtype=np.int64)
        units = np.zeros(n, dtype=np.int64)
        prices: list[ModelPrice] = [price_at(m, day, self.start, self.days) for m in models]
        for j, price in enumerate(prices):
            mask = model_idx == j
            if not mask.any():
                continue
            if price.per_call:
                units[mask] = price.call_units()
                prompt[mask] = completion[mask] = 0
                stream[mask] = False
                latency[mask] = task_latency[mask]
                continue
            p = prompt[mask]
            if price.anthropic:
                cw = np.where(u_write[mask] < 0.25, (p * (0.2 + 0.4 * f_write[mask])).astype(np.int64), 0)
                cr = np.where(u_cache[mask] < 0.4, ((p - cw) * (0.3 + 0.6 * f_cache[mask])).astype(np.int64), 0)
                cr = np.minimum(cr, p - cw - 1)
            elif price.model == UNPRICED_MODEL:
                cw = cr = np.zeros(int(mask.sum()), dtype=np.int64)
            else:  # OpenAI prompt caching: prompts of 1024+ tokens, in steps of 128
                cw = np.zeros(int(mask.sum()), dtype=np.int64)
                share = 0.3 + 0.6 * f_cache[mask]
                cr = np.where((p >= 1024) & (u_cache[mask] < 0.35), ((p * share).astype(np.int64) // 128) * 128, 0)
            c = completion[mask]
            if price.reasoning:
                r = (c * (0.5 + 2.5 * f_reason[mask])).astype(np.int64)
                c = c + r
                reasoning[mask] = r
                completion[mask] = c
            cached[mask] = cr
            cache_write[mask] = cw
            units[mask] = price.token_units(p - cr - cw, cr, cw, c)
        units[error] = 0
        return _Columns(prices, model_idx, offsets, stream, error, ip_idx, prompt, completion, cached, cache_write,
                        reasoning, units, latency, frt_share)

    def _key_day(self, day: date, key_index: int, key_name: str, epoch0: int, length: int) -> list[SimRequest]:
        cols = self._key_day_columns(day, key_index, key_name, length)
        if cols is None:
            return []
        profile = _PROFILES[key_name]
        prices = cols.prices
        day_hash = _day_hash(self.seed, day)
        base_others = [price.other() for price in prices]
        rows = []
        columns = zip(
            cols.offsets.tolist(), cols.model_idx.tolist(), cols.stream.tolist(), cols.error.tolist(),
            cols.ip_idx.tolist(), cols.prompt.tolist(), cols.completion.tolist(), cols.cached.tolist(),
            cols.cache_write.tolist(), cols.reasoning.tolist(), cols.units.tolist(), cols.latency.tolist(),
            cols.frt_share.tolist(),
        )
        seq0 = key_index << 24
        for i, (off, j, st, err, ipi, pt, ct, ch, cw, rs, un, lat, frs) in enumerate(columns):
            price = prices[j]
            ts = datetime.fromtimestamp(epoch0 + off, UTC)
            seq = seq0 + i
            request_id = _format_request_id(ts, seq, day_hash)
            ip = profile.ips[ipi]
            ip_logged = not price.per_call and int(request_id[-2:], 16) % 13 != 5
            shape = "task" if price.per_call else _SHAPES[price.endpoint][1 if st else 0]
            if err:
                rows.append(_error_row(request_id, ts, key_name, price, st, shape, ip, ip_logged, lat, seq))
                continue
            other = base_others[j].copy()
            if not price.per_call:
                other["cache_tokens"] = ch
                if price.anthropic:
                    other["cache_creation_tokens"] = cw
                other["frt"] = int(lat * frs) if st else lat
            other["total_ms"] = lat
            other["request_path"] = price.endpoint
            rows.append(
                SimRequest(
                    request_id=request_id,
                    ts=ts,
                    key_name=key_name,
                    model=price.model,
                    endpoint=price.endpoint,
                    is_stream=st,
                    usage_shape=shape,
                    prompt_tokens=pt,
                    completion_tokens=ct,
                    cached_tokens=ch,
                    cache_write_tokens=cw,
                    reasoning_tokens=rs,
                    quota_units=un,
                    log_type=LOG_CONSUME,
                    source_ip=ip,
                    latency_ms=lat,
                    client_logged=True,
                    usage_known_to_client=True,
                    other=other,
                    response_model=price.response_model,
                    ip_logged=ip_logged,
                    seq=seq,
                )
            )
        return rows

    # --- planted realities -------------------------------------------------------------------
    def _planted_rows(self, day: date, epoch0: int, length: int) -> list[SimRequest]:
        dates = self.planted_dates
        rows: list[SimRequest] = []
        if day == dates["missing_logs"]:
            rows += self._missing_logs(day, epoch0)
        if day == dates["unknown_usage"]:
            rows += self._unknown_usage(day, epoch0)
        # A task's follow-up is booked on its own reporting day: with `refund_delay` the refund can come
        # after midnight, on the day after the task's.
        for kind in _FOLLOW_UPS:
            if day - timedelta(days=1) <= dates[kind] <= day:
                rows += [r for r in self._task_with_follow_up(kind) if self.day_of(r.ts) == day]
        return rows

    def _login_row(self, day: date, epoch0: int) -> SimRequest:
        """The account holder's console login that day: a type-7 row (upstream model/log.go RecordLoginLog),
        user-level, with no key, no request id and no quota."""
        rng = self._planted_rng(day, _PLANTED_KIND["login"])
        ts = datetime.fromtimestamp(epoch0 + 8 * 3600 + int(rng.integers(0, 3600)), UTC)
        return SimRequest(
            request_id="", ts=ts, key_name="", model="", endpoint="", is_stream=False, usage_shape="task",
            prompt_tokens=0, completion_tokens=0, cached_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
            quota_units=0, log_type=LOG_LOGIN, source_ip="203.0.113.7", latency_ms=0, client_logged=False,
            usage_known_to_client=False, other={"op": {"action": "login", "params": {"method": "password"}}},
            ip_logged=True, seq=_planted_seq("login"), task_billing=True,
        )

    def _planted_rng(self, day: date, kind: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, day.toordinal(), 100 + kind])

    def _missing_logs(self, day: date, epoch0: int) -> list[SimRequest]:
        """7 calls from an unfamiliar address between 02:00 and 03:30 local: a leaked key in use."""
        rng = self._planted_rng(day, _PLANTED_KIND["missing_logs"])
        offsets = np.sort(rng.integers(2 * 3600, int(3.5 * 3600), MISSING_LOGS_COUNT))
        rows = []
        for i, off in enumerate(offsets.tolist()):
            price = price_at("gpt-4o" if i % 2 == 0 else "gpt-4o-mini", day, self.start, self.days)
            prompt = int(rng.integers(1500, 6000))
            completion = int(rng.integers(300, 1500))
            seq = _planted_seq("missing_logs") + i
            latency = int(rng.integers(2000, 9000))
            rows.append(
                self._token_row(day, epoch0 + off, seq, "team-a-prod", price, prompt, completion,
                                source_ip=LEAK_IP, client_logged=False, latency=latency)
            )
        return rows

    def _unknown_usage(self, day: date, epoch0: int) -> list[SimRequest]:
        """3 streamed calls whose final usage chunk never reached the client, nor the gateway.

        Upstream bills such a call on its own estimate of the prompt, with no completion tokens, and
        says so in `content` (service/text_quota.go: `usage == nil` -> GetEstimatePromptTokens).
        """
        rng = self._planted_rng(day, _PLANTED_KIND["unknown_usage"])
        offsets = np.sort(rng.integers(14 * 3600, 16 * 3600, UNKNOWN_USAGE_COUNT))
        price = price_at("gpt-4o", day, self.start, self.days)
        return [
            self._token_row(day, epoch0 + off, _planted_seq("unknown_usage") + i, "team-a-dev", price,
                            int(rng.integers(800, 3000)), _no_completion(rng.integers(50, 400)),
                            source_ip=_PROFILES["team-a-dev"].ips[0], client_logged=True, stream=True,
                            usage_known=False, latency=int(rng.integers(5000, 30000)))
            for i, off in enumerate(offsets.tolist())
        ]

    def _token_row(self, day, ts_epoch, seq, key_name, price: ModelPrice, prompt, completion, *, source_ip,
                   client_logged, latency, stream=False, usage_known=True) -> SimRequest:
        request_id = _request_id(ts_epoch, seq, _day_hash(self.seed, day))
        other = price.other()
        other["frt"] = latency // 5 if stream else latency
        other["total_ms"] = latency
        other["request_path"] = price.endpoint
        return SimRequest(
            request_id=request_id,
            ts=datetime.fromtimestamp(ts_epoch, UTC),
            key_name=key_name,
            model=price.model,
            endpoint=price.endpoint,
            is_stream=stream,
            usage_shape=_SHAPES[price.endpoint][1 if stream else 0],
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=0,
            cache_write_tokens=0,
            reasoning_tokens=0,
            quota_units=price.token_units(prompt, 0, 0, completion),
            log_type=LOG_CONSUME,
            source_ip=source_ip,
            latency_ms=latency,
            client_logged=client_logged,
            usage_known_to_client=usage_known,
            other=other,
            response_model=price.response_model,
            ip_logged=True,
            seq=seq,
        )

    def _task_with_follow_up(self, follow_up: str) -> list[SimRequest]:
        """A per-call task on media-tasks plus its refund or its (late) billing correction.

        The refund comes 20-30 minutes after the task, or `refund_delay` after it when that is set
        (possibly on the next reporting day, or after the window, where it is not seen)."""
        day = self.planted_dates[follow_up]
        epoch0, _ = self.day_bounds(day)
        model, hour = _FOLLOW_UPS[follow_up]
        kind = _PLANTED_KIND[follow_up]
        rng = self._planted_rng(day, kind)
        price = price_at(model, day, self.start, self.days)
        day_hash = _day_hash(self.seed, day)
        seq = _planted_seq(follow_up)
        task_epoch = epoch0 + hour * 3600 + int(rng.integers(0, 3000))
        latency = int(rng.integers(8000, 60000))
        task_id = _request_id(task_epoch, seq, day_hash)
        base_other = price.other() | {"total_ms": latency, "request_path": price.endpoint}
        task = SimRequest(
            request_id=task_id,
            ts=datetime.fromtimestamp(task_epoch, UTC),
            key_name="media-tasks",
            model=model,
            endpoint=price.endpoint,
            is_stream=False,
            usage_shape="task",
            prompt_tokens=0,
            completion_tokens=0,
            cached_tokens=0,
            cache_write_tokens=0,
            reasoning_tokens=0,
            quota_units=price.call_units(),
            log_type=LOG_CONSUME,
            source_ip=_PROFILES["media-tasks"].ips[0],
            latency_ms=latency,
            client_logged=True,
            usage_known_to_client=True,
            other=base_other,
            response_model=model,
            ip_logged=False,
            seq=seq,
        )
        upstream_task_id = task.public_task_id
        pre_consumed = price.call_units()
        if follow_up == "refund":
            # service/task_billing.go RefundTaskQuota: a type-6 row giving the whole pre-consumed quota back
            later = task_epoch + 1200 + int(rng.integers(0, 600))
            if self.refund_delay is not None:
                later = task_epoch + int(self.refund_delay.total_seconds())
            units, log_type = pre_consumed, LOG_REFUND
            extra = {"task_id": upstream_task_id, "reason": "task failed upstream: FAILURE"}
        else:
            later = task_epoch + (11 if follow_up == "restatement" else 12) * 3600 + int(rng.integers(0, 1800))
            delta = RESTATEMENT_DELTA_UNITS if follow_up == "restatement" else NEGATIVE_CORRECTION_UNITS
            if datetime.fromtimestamp(later, UTC).date() >= REQUEST_IDS_FROM:
                # service/task_billing.go RecalculateTaskQuota (since 2026-02): a higher final price is a
                # type-2 row with a positive quota, a lower one a type-6 row giving the difference back
                units, log_type = abs(delta), LOG_CONSUME if delta > 0 else LOG_REFUND
                extra = {"task_id": upstream_task_id, "pre_consumed_quota": pre_consumed,
                         "actual_quota": pre_consumed + delta}
            else:
                # model/log.go RecordReConsumeLog (before): a type-2 row with the signed delta
                units, log_type = delta, LOG_CONSUME
                extra = {"task_id": upstream_task_id, "pre_consumed": pre_consumed, "actual_quota": pre_consumed + delta,
                         "quota_delta": delta}
        other = price.other() | extra | {"request_path": price.endpoint}
        # The follow-up row is the task's own row with the gateway's later bookkeeping applied.
        follow = replace(
            task,
            request_id=_request_id(later, seq + 1, day_hash),
            ts=datetime.fromtimestamp(later, UTC),
            quota_units=units,
            log_type=log_type,
            source_ip="",
            latency_ms=0,
            client_logged=False,
            usage_known_to_client=False,
            other=other,
            correction_of=task_id if follow_up != "refund" else None,
            task_billing=True,
            visible_after_first_pull=follow_up == "restatement",
            refund_of=task_id if follow_up == "refund" else None,
            seq=seq + 1,
        )
        return [task, follow]

    @cached_property
    def planted(self) -> dict:
        """The planted realities: dates, keys, counts, request ids and USD amounts."""
        dates = self.planted_dates
        by_kind: dict[str, list[SimRequest]] = {}
        for name in ("missing_logs", "unknown_usage"):
            day = dates[name]
            epoch0, length = self.day_bounds(day)
            rows = self._planted_rows(day, epoch0, length)
            lo = _planted_seq(name)
            by_kind[name] = [r for r in rows if lo <= r.seq < lo + 0x100]
        for name in _FOLLOW_UPS:
            by_kind[name] = self._task_with_follow_up(name)

        def usd(rows: list[SimRequest]) -> Decimal:
            return sum((r.usd for r in rows), Decimal(0)).quantize(_USD_QUANTUM)

        def follow_up(name: str) -> dict:
            task, row = by_kind[name]
            return {
                "date": dates[name],
                "key": "media-tasks",
                "model": task.model,
                "task_request_id": task.request_id,
                "task_id": task.public_task_id,
                "task_usd": task.usd,
                "request_id": row.request_id,
                "booked_date": self.day_of(row.ts),
                "usd": row.usd,
                "visible_after_first_pull": row.visible_after_first_pull,
            }

        glm_dates = [d for d in self.dates if self.is_glm_day(d)]
        return {
            "missing_logs": {
                "date": dates["missing_logs"],
                "key": "team-a-prod",
                "count": MISSING_LOGS_COUNT,
                "source_ip": LEAK_IP,
                "usd": usd(by_kind["missing_logs"]),
                "request_ids": [r.request_id for r in by_kind["missing_logs"]],
            },
            "price_change": {
                "date": dates["price_change"],
                "model": PRICE_CHANGE_MODEL,
                "old_model_ratio": CATALOG[PRICE_CHANGE_MODEL].model_ratio,
                "new_model_ratio": PRICE_CHANGE_NEW_RATIO,
            },
            "unpriced_model": {"model": UNPRICED_MODEL, "key": "research-batch", "dates": glm_dates},
            "restatement": follow_up("restatement"),
            "negative_correction": follow_up("negative_correction"),
            "refund": follow_up("refund"),
            "unknown_usage": {
                "date": dates["unknown_usage"],
                "key": "team-a-dev",
                "count": UNKNOWN_USAGE_COUNT,
                "usd": usd(by_kind["unknown_usage"]),
                "request_ids": [r.request_id for r in by_kind["unknown_usage"]],
            },
        }

    # --- what the query service reports ------------------------------------------------------
    def _totals_for(self, day: date) -> dict[str, list[int]]:
        """A day's totals, from the numpy draft when its rows are not in memory (10x faster)."""
        with self._lock:
            totals = self._totals.get(day)
        if totals is not None:
            return totals
        epoch0, length = self.day_bounds(day)
        totals = _day_totals(self._planted_rows(day, epoch0, length))
        for key_index, key in enumerate(self.keys):
            cols = self._key_day_columns(day, key_index, key.name, length)
            if cols is None or cols.error.all():  # a key-day of errors only reports nothing
                continue
            entry = totals.setdefault(key.name, [0, 0, 0])
            entry[0] += int(cols.units.sum())
            entry[2] += int((~cols.error).sum())
        ordered = {k.name: totals[k.name] for k in self.keys if k.name in totals}
        with self._lock:
            return self._totals.setdefault(day, ordered)

    def reported_daily(
        self, restated: bool, days: Iterable[date] | None = None
    ) -> dict[tuple[date, str], tuple[Decimal, int]]:
        """(reporting day, key) -> (USD spend, request count), before or after the restatement.

        Key-days with no billed row are absent (like the query service's daily_quota).
        """
        out = {}
        for day in self.dates if days is None else days:
            if not self.start <= day < self.end:
                continue
            for key, (units, late_units, count) in self._totals_for(day).items():
                total = units + (late_units if restated else 0)
                out[(day, key)] = ((Decimal(total) / UNITS_PER_USD).quantize(_USD_QUANTUM), count)
        return out

    def key_totals(self, restated: bool) -> dict[str, tuple[Decimal, int]]:
        """key -> lifetime (USD spend, request count) over the whole window."""
        out = {k.name: (Decimal(0).quantize(_USD_QUANTUM), 0) for k in self.keys}
        for (_, key), (usd, count) in self.reported_daily(restated).items():
            spent, n = out[key]
            out[key] = (spent + usd, n + count)
        return out

    def is_visible(self, row: SimRequest, restated: bool) -> bool:
        return restated or not row.visible_after_first_pull


@dataclass(frozen=True)
class _Columns:
    """One key-day before it becomes SimRequest objects; error rows already carry 0 units."""

    prices: list[ModelPrice]
    model_idx: np.ndarray
    offsets: np.ndarray
    stream: np.ndarray
    error: np.ndarray
    ip_idx: np.ndarray
    prompt: np.ndarray
    completion: np.ndarray
    cached: np.ndarray
    cache_write: np.ndarray
    reasoning: np.ndarray
    units: np.ndarray
    latency: np.ndarray
    frt_share: np.ndarray


# planted task -> (model, hour of the day it is submitted)
_FOLLOW_UPS = {"refund": ("mj_imagine", 11), "negative_correction": ("suno_music", 9),
               "restatement": ("kling_video", 10)}
_PLANTED_SEQ = 0xF000_0000  # planted rows take seq numbers far above any ordinary row's
_PLANTED_KIND = {"missing_logs": 1, "unknown_usage": 2, "refund": 3, "negative_correction": 4, "restatement": 5,
                 "login": 6}


def _planted_seq(kind: str) -> int:
    return _PLANTED_SEQ + _PLANTED_KIND[kind] * 0x100


def _day_totals(rows: Iterable[SimRequest]) -> dict[str, list[int]]:
    """key -> [signed units always visible, signed units visible after restatement, request count]."""
    totals: dict[str, list[int]] = {}
    for r in rows:
        if r.log_type not in (LOG_CONSUME, LOG_REFUND):
            continue
        entry = totals.setdefault(r.key_name, [0, 0, 0])
        units = -r.quota_units if r.log_type == LOG_REFUND else r.quota_units
        entry[1 if r.visible_after_first_pull else 0] += units
        entry[2] += r.is_request
    return totals


def _no_completion(drawn) -> int:
    """An interrupted stream bills no completion tokens; the draw is kept so later draws stay the same."""
    del drawn
    return 0


def _hex_id(text: str, length: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]


def _day_hash(seed: int, day: date) -> int:
    digest = hashlib.blake2b(f"{seed}:{day.toordinal()}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def _request_id(ts_epoch: int, seq: int, day_hash: int) -> str:
    return _format_request_id(datetime.fromtimestamp(ts_epoch, UTC), seq, day_hash)


def _format_request_id(t: datetime, seq: int, day_hash: int) -> str:
    """`YYYYMMDDhhmmss` (UTC) + 2 digits + 8 hex: unique, as seq -> suffix is a bijection per day.

    Two rows of different reporting days never share a second, so ids are unique everywhere.
    """
    suffix = (seq * 2654435761 + day_hash) & 0xFFFF_FFFF
    return (
        f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}"
        f"{(suffix >> 7) % 100:02d}{suffix:08x}"
    )


def _error_row(request_id, ts, key_name, price: ModelPrice, stream, shape, ip, ip_logged, latency, seq) -> SimRequest:
    return SimRequest(
        request_id=request_id,
        ts=ts,
        key_name=key_name,
        model=price.model,
        endpoint=price.endpoint,
        is_stream=stream,
        usage_shape=shape,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        quota_units=0,
        log_type=LOG_ERROR,
        source_ip=ip,
        latency_ms=latency,
        client_logged=False,
        usage_known_to_client=False,
        other={"error_type": "upstream_error", "status_code": 502, "request_path": price.endpoint},
        response_model=price.response_model,
        ip_logged=ip_logged,
        seq=seq,
    )


def generate_traffic(
    seed: int = 7,
    start: date | None = None,
    days: int = 30,
    requests_per_day: int = 40,
    service_tz: str = "UTC",
    refund_delay: timedelta | None = None,
) -> Traffic:
    """Traffic for `days` reporting days from `start` (default: the `days` days before today, UTC).

    Nothing is generated until a day is asked for.
    """
    if start is None:
        start = clock.today("UTC") - timedelta(days=days)
    return Traffic(seed=seed, start=start, days=days, requests_per_day=requests_per_day, service_tz=service_tz,
                   refund_delay=refund_delay)
