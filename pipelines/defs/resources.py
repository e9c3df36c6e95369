"""Dagster resources: where the ledger lives, and how to reach CometAPI.

Secrets arrive only through `EnvVar` (see `pipelines/definitions.py`); everything else comes from
the validated settings.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from pipelines.lib.cometapi.http import RetryPolicy
from pipelines.lib.cometapi.gateway import GatewayClient
from pipelines.lib.cometapi.pacing import RateLimit
from pipelines.lib.cometapi.query import QueryClient
from pipelines.lib.settings import Settings, lake_path, warehouse_path


def _plain(value):
    """A Settings value as Dagster config holds it: paths as text, a list of names comma-separated,
    an unset optional value as empty text."""
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return ",".join(value)
    return value


class LedgerHome(dg.ConfigurableResource):
    """The data home (lake, warehouse, reports) and the reporting-day rules, as Dagster sees them.

    The values, their defaults and their validation are `Settings`' (pipelines/lib/settings.py), the one
    configuration channel: this resource is made only by `from_settings`, which copies the fields it
    declares by name, and its paths are computed by the same functions as Settings' own.
    """

    home: str
    inbox: str
    timezone: str
    chunk_days: int
    prices_path: str
    key_owners_path: str
    budgets_path: str
    budgets_required: bool  # COMET_LEDGER_BUDGETS set: the file must exist
    tolerance_usd: float
    tolerance_pct: float
    price_sources: str  # COMET_LEDGER_PRICE_SOURCES, in their fixed precedence order, comma-separated
    lake_url: str  # COMET_LEDGER_LAKE_URL (empty: `<home>/lake`)

    @classmethod
    def from_settings(cls, settings: Settings) -> LedgerHome:
        values = {name: getattr(settings, name) for name in cls.model_fields}
        return cls(**{name: _plain(value) for name, value in values.items()})

    @property
    def price_source_list(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.price_sources.split(",") if part.strip())

    @property
    def lake(self) -> Path:
        return lake_path(Path(self.home), self.lake_url or None)

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox)

    @property
    def warehouse_path(self) -> Path:
        return warehouse_path(Path(self.home))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class QueryService(dg.ConfigurableResource):
    """CometAPI's balance/usage query service (`GET /user/quota?key=...`)."""

    base_url: str
    api_key: str
    timeout_s: float = 30.0
    max_attempts: int = 5
    base_delay_s: float = 1.0
    # Attempts when the server refuses the first connection (None: max_attempts); the command line
    # sets 1, so a wrong URL fails at once instead of after the whole retry budget.
    unreachable_attempts: int | None = None

    def client(self) -> QueryClient:
        import httpx

        return QueryClient(
            self.base_url,
            self.api_key,
            policy=RetryPolicy(max_attempts=self.max_attempts, base_delay=self.base_delay_s,
                               unreachable_attempts=self.unreachable_attempts),
            timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
        )


class GatewayLedger(dg.ConfigurableResource):
    """CometAPI's per-request ledger (`GET /api/log/self`), read with the console access token.

    Without a token the ledger is not pulled; CSV exports in `<inbox>/gateway/` are still read.
    """

    base_url: str
    access_token: str | None = None
    timeout_s: float = 30.0
    max_attempts: int = 5
    base_delay_s: float = 1.0
    # upstream's default limit on /api (common/init.go): the client paces itself under it
    rate_limit_requests: int = 360
    rate_limit_window_s: float = 180.0
    # Attempts when the server refuses the first connection (None: max_attempts); the command line
    # sets 1, so a wrong URL fails at once instead of after the whole retry budget.
    unreachable_attempts: int | None = None

    @property
    def configured(self) -> bool:
        return bool(self.access_token)

    def client(self) -> GatewayClient:
        import httpx

        return GatewayClient(
            self.base_url,
            self.access_token or "",
            policy=RetryPolicy(max_attempts=self.max_attempts, base_delay=self.base_delay_s,
                               unreachable_attempts=self.unreachable_attempts),
            timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
            rate_limit=RateLimit(self.rate_limit_requests, self.rate_limit_window_s),
        )

