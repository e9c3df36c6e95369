"""Configuration from the environment (and `.env` in the working directory).

The variable table is the public contract (`CONTRACT.md`, "Configuration"). Everything is read
when `load_settings()` is called, never at import time. A bad value raises `ConfigError` whose
message is one line naming the variable; secrets are never echoed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_QUERY_URL = "https://query.cometapi.com"
DEFAULT_API_URL = "https://api.cometapi.com"
DEFAULT_START_DATE = "2025-01-01"
DEFAULT_CHUNK_DAYS = 31


class ConfigError(ValueError):
    """A missing or malformed setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    home: Path
    inbox: Path
    prices_path: Path
    key_owners_path: Path
    timezone: str
    start_date: date
    query_url: str
    api_url: str
    chunk_days: int
    tolerance_usd: float = 0.01
    tolerance_pct: float = 1.0
    # UTC hour by which yesterday's partition must exist; None: two hours after the daily schedule
    # (`pipelines/defs/schedules.py` knows that hour, see `freshness_hour_utc` there).
    freshness_hour_utc: int | None = None
    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.access_token) if s]

    def require_api_key(self) -> str:
        if not self.api_key:
            raise ConfigError("COMETAPI_KEY is not set: the query service needs an API key (a quota-0 key is advised)")
        return self.api_key


def read_dotenv(path: Path) -> dict[str, str]:
    """Values from a `.env` file; variables already in the environment win."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(env: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> Settings:
    """Settings from `env` (default: `.env` overlaid by `os.environ`)."""
    if env is None:
        merged = read_dotenv(dotenv_path or Path.cwd() / ".env")
        merged.update(os.environ)
        env = merged

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    home = Path(get("COMET_LEDGER_HOME", "./data")).expanduser().absolute()
    inbox = Path(get("COMET_LEDGER_INBOX") or str(home / "inbox")).expanduser().absolute()
    timezone = get("COMET_LEDGER_TIMEZONE", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"COMET_LEDGER_TIMEZONE={timezone!r} is not an IANA time zone (e.g. UTC, Asia/Shanghai)") from None
    start_raw = get("COMET_LEDGER_START_DATE", DEFAULT_START_DATE)
    try:
        start_date = date.fromisoformat(start_raw)
        if len(start_raw) != 10:
            raise ValueError
    except ValueError:
        raise ConfigError(f"COMET_LEDGER_START_DATE={start_raw!r} is not a date in YYYY-MM-DD form") from None
    chunk_raw = get("COMET_LEDGER_CHUNK_DAYS", str(DEFAULT_CHUNK_DAYS))
    if not chunk_raw.isdigit() or not 2 <= int(chunk_raw) <= 366:
        raise ConfigError(f"COMET_LEDGER_CHUNK_DAYS={chunk_raw!r} must be a whole number of days from 2 to 366")

    tolerance_usd = _non_negative_number("COMET_LEDGER_TOLERANCE_USD", get("COMET_LEDGER_TOLERANCE_USD", "0.01"))
    tolerance_pct = _non_negative_number("COMET_LEDGER_TOLERANCE_PCT", get("COMET_LEDGER_TOLERANCE_PCT", "1"))
    freshness_raw = get("COMET_LEDGER_FRESHNESS_HOUR_UTC")
    freshness_hour = None if freshness_raw is None else _hour("COMET_LEDGER_FRESHNESS_HOUR_UTC", freshness_raw)

    return Settings(
        home=home,
        inbox=inbox,
        prices_path=_path(get("COMET_LEDGER_PRICES", "config/prices.csv")),
        key_owners_path=_path(get("COMET_LEDGER_KEY_OWNERS", "config/key_owners.csv")),
        timezone=timezone,
        start_date=start_date,
        query_url=_url("COMETAPI_QUERY_URL", get("COMETAPI_QUERY_URL", DEFAULT_QUERY_URL)),
        api_url=_url("COMETAPI_API_URL", get("COMETAPI_API_URL", DEFAULT_API_URL)),
        chunk_days=int(chunk_raw),
        tolerance_usd=tolerance_usd,
        tolerance_pct=tolerance_pct,
        freshness_hour_utc=freshness_hour,
        api_key=get("COMETAPI_KEY"),
        access_token=get("COMETAPI_ACCESS_TOKEN"),
    )


def _non_negative_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a number >= 0")
    return value


def _hour(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and int(raw) <= 23):
        raise ConfigError(f"{name}={raw!r} must be a whole hour from 0 to 23 (UTC)")
    return int(raw)


def _path(raw: str) -> Path:
    return Path(raw).expanduser().absolute()


def _url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"{name}={raw!r} is not a base URL like https://host[:port]")
    return raw.rstrip("/")
