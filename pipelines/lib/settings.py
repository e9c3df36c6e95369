"""Configuration from the environment (and `.env` in the working directory).

The variable table is the README's "Configuration" section. Everything is read
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

from pipelines.lib import clock, first_day
from pipelines.lib.alerts.config import SECRET_VARIABLES as ALERT_SECRETS
from pipelines.lib.alerts.config import AlertSettings, load_alert_settings
from pipelines.lib.redact import MIN_SECRET_LENGTH, held, remember

DEFAULT_QUERY_URL = "https://query.cometapi.com"
DEFAULT_API_URL = "https://api.cometapi.com"
DEFAULT_CHUNK_DAYS = 31
# Files 0640 and folders 0750 by default: the lake and the warehouse hold spend by team, and other
# users of the host have no business reading them (the owner's group may: analysts, backups).
DEFAULT_UMASK = 0o027
DAGSTER_PG_PASSWORD = "DAGSTER_PG_PASSWORD"
# Every secret variable -> where Settings keeps its value. The one list: `Settings.secrets()`, what
# `load_settings` hands the redactor to remember, and what the command line masks when the settings
# fail to load (`env_secrets`) all read it.
SECRET_VARIABLES: dict[str, str] = {
    "COMETAPI_KEY": "api_key",
    "COMETAPI_ACCESS_TOKEN": "access_token",
    DAGSTER_PG_PASSWORD: "dagster_pg_password",
    "AWS_SECRET_ACCESS_KEY": "lake_secret_key",
    **{name: f"alerts.{place}" for name, place in ALERT_SECRETS.items()},
}
DEFAULT_PRICES = "config/prices.csv"
# In a data home that holds the simulated world (`comet-ledger demo`, or `comet-ledger dev` with its
# simulator), the simulator's own price list, written there: every run in that home, from the
# command line or the Dagster UI, prices the way the simulated gateway bills.
# (Written by versions before ledger-observed prices; such a home keeps using it.)
SIMULATED_PRICES = Path("demo") / "prices.csv"
# The simulated world a home holds (`comet-ledger demo`): its seed and days. Such a home prices from
# what the simulated gateway's ledger and catalog say (`default_price_sources`), no price file needed.
SIMULATED_WORLD = Path("demo") / "world.json"
PRICE_SOURCES = ("config", "ledger", "catalog")


def lake_path(home: Path, lake_url: str | None = None) -> Path:
    """The lake root the code reads and writes (Settings.lake, and the Dagster resource's): `<home>/lake`,
    the folder COMET_LEDGER_LAKE_URL names, or for an `s3://` URL its local cache, the object store
    being attached to it (pipelines/lib/lake/__init__.py, `attach`)."""
    from pipelines.lib import lake

    return lake.attach(home, lake_url)


def warehouse_path(home: Path, lake_url: str | None = None) -> Path:
    """The warehouse file of a data home (Settings.warehouse_path, and the Dagster resource's). The lake
    is attached first: on object storage each publish is also copied there."""
    lake_path(home, lake_url)
    return home / "warehouse.duckdb"


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
    # where start_date came from: 'setting' (COMET_LEDGER_START_DATE), 'recorded' (looked up once, see
    # pipelines/lib/first_day.py) or 'fallback' (90 days back: not looked up yet)
    start_date_source: str = "setting"
    # UTC hour by which yesterday's partition must exist; None: two hours after the daily schedule
    # (`pipelines/defs/schedules.py` knows that hour, see `freshness_hour_utc` there).
    freshness_hour_utc: int | None = None
    # COMET_LEDGER_BUDGETS; without it a missing config/budgets.csv means no budgets (pipelines/lib/reconciliation/budgets.py)
    budgets_path: Path = field(default_factory=lambda: _path("config/budgets.csv"))
    budgets_required: bool = False
    alerts: AlertSettings = field(default_factory=AlertSettings)  # the alert channels (pipelines/lib/alerts/config.py)
    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    umask: int = DEFAULT_UMASK  # what the pipeline's own writes leave out (apply_umask)
    # COMET_LEDGER_PRICE_SOURCES: which price sources estimates may use, always in the order config >
    # ledger > catalog (sql/core/prices.sql; docs/prices.md)
    price_sources: tuple[str, ...] = ("config", "ledger", "catalog")
    # The password of Dagster's PostgreSQL database (deploy/dagster.yaml reads it from the environment).
    # The pipeline never uses it; it is known here only so that no message can print it.
    dagster_pg_password: str | None = field(default=None, repr=False)
    # COMET_LEDGER_LAKE_URL: None for `<home>/lake`, a folder, or s3://bucket/prefix (pipelines/lib/lake/store.py)
    lake_url: str | None = None
    # The object storage's secret key (AWS_SECRET_ACCESS_KEY): pyarrow's S3 client reads it from the
    # environment; it is known here only so that no message can print it.
    lake_secret_key: str | None = field(default=None, repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lake(self) -> Path:
        return lake_path(self.home, self.lake_url)

    @property
    def warehouse_path(self) -> Path:
        return warehouse_path(self.home, self.lake_url)

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def secrets(self) -> list[str]:
        return held(self, SECRET_VARIABLES.values())

    def apply_umask(self) -> int:
        """Make this process create files and folders with `umask` (0027: files 0640, folders 0750);
        returns the previous one. Called where a command or a code location starts (cli.main,
        definitions.defs): the umask is the process's, and threads and child processes share it."""
        return os.umask(self.umask)

    def require_api_key(self) -> str:
        if not self.api_key:
            raise ConfigError("COMETAPI_KEY is not set: the query service needs an API key (a quota-0 key is advised)")
        return self.api_key


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The values of the secret variables set in `env`, whether or not they are valid: known before
    any setting is checked, so no message about a bad setting can show one."""
    return [value for name in SECRET_VARIABLES if (value := (env.get(name) or "").strip())]


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
    now_raw = get(clock.VARIABLE)
    if now_raw is not None:
        try:
            clock.parse(now_raw)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    start_raw = get("COMET_LEDGER_START_DATE")
    if start_raw is None:  # the first day the service reports usage for (pipelines/lib/first_day.py)
        found = first_day.recorded(home)
        start_date, start_source = (found.day, "recorded") if found else (
            first_day.fallback(clock.today(timezone)).day, "fallback")
    else:
        try:
            start_date = date.fromisoformat(start_raw)
            if len(start_raw) != 10:
                raise ValueError
        except ValueError:
            raise ConfigError(f"COMET_LEDGER_START_DATE={start_raw!r} is not a date in YYYY-MM-DD form") from None
        start_source = "setting"
    chunk_raw = get("COMET_LEDGER_CHUNK_DAYS", str(DEFAULT_CHUNK_DAYS))
    if not chunk_raw.isdigit() or not 2 <= int(chunk_raw) <= 366:
        raise ConfigError(f"COMET_LEDGER_CHUNK_DAYS={chunk_raw!r} must be a whole number of days from 2 to 366")

    tolerance_usd = _non_negative_number("COMET_LEDGER_TOLERANCE_USD", get("COMET_LEDGER_TOLERANCE_USD", "0.01"))
    tolerance_pct = _non_negative_number("COMET_LEDGER_TOLERANCE_PCT", get("COMET_LEDGER_TOLERANCE_PCT", "1"))
    freshness_raw = get("COMET_LEDGER_FRESHNESS_HOUR_UTC")
    freshness_hour = None if freshness_raw is None else _hour("COMET_LEDGER_FRESHNESS_HOUR_UTC", freshness_raw)
    umask = _umask("COMET_LEDGER_UMASK", get("COMET_LEDGER_UMASK", f"{DEFAULT_UMASK:04o}"))

    api_key, access_token = get("COMETAPI_KEY"), get("COMETAPI_ACCESS_TOKEN")
    for name, secret in (("COMETAPI_KEY", api_key), ("COMETAPI_ACCESS_TOKEN", access_token)):
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"{name} is {len(secret)} characters long: too short to be a CometAPI credential "
                              f"(and to be masked in what the pipeline writes); at least {MIN_SECRET_LENGTH}")
    # masked in every message and stored text from now on (redact.py); a secret shorter than a
    # credential (an SMTP password of a few letters) would mask ordinary words: `remember` leaves it
    # out (the alert code never writes it)
    remember(*env_secrets(env))
    alerts = load_alert_settings(get)
    pg_password = env.get(DAGSTER_PG_PASSWORD) or None
    lake_url = _lake_url(get("COMET_LEDGER_LAKE_URL"))

    return Settings(
        home=home,
        inbox=inbox,
        prices_path=_path(get("COMET_LEDGER_PRICES") or default_prices(home)),
        key_owners_path=_path(get("COMET_LEDGER_KEY_OWNERS", "config/key_owners.csv")),
        timezone=timezone,
        start_date=start_date,
        start_date_source=start_source,
        query_url=_url("COMETAPI_QUERY_URL", get("COMETAPI_QUERY_URL", DEFAULT_QUERY_URL)),
        api_url=_url("COMETAPI_API_URL", get("COMETAPI_API_URL", DEFAULT_API_URL)),
        chunk_days=int(chunk_raw),
        tolerance_usd=tolerance_usd,
        tolerance_pct=tolerance_pct,
        freshness_hour_utc=freshness_hour,
        budgets_path=_path(get("COMET_LEDGER_BUDGETS", "config/budgets.csv")),
        budgets_required=get("COMET_LEDGER_BUDGETS") is not None,
        alerts=alerts,
        api_key=api_key,
        access_token=access_token,
        umask=umask,
        dagster_pg_password=pg_password,
        price_sources=_price_sources(get("COMET_LEDGER_PRICE_SOURCES")
                                     or default_price_sources(home, get("COMET_LEDGER_PRICES"))),
        lake_url=lake_url,
        lake_secret_key=get("AWS_SECRET_ACCESS_KEY"),
    )


def _price_sources(raw: str) -> tuple[str, ...]:
    """COMET_LEDGER_PRICE_SOURCES: a comma-separated subset of config, ledger, catalog."""
    known = PRICE_SOURCES
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for name in names:
        if name not in known:
            raise ConfigError(f"COMET_LEDGER_PRICE_SOURCES={raw}: unknown price source {name!r} "
                              f"(a comma-separated subset of {', '.join(known)})")
    return tuple(name for name in known if name in names)


def default_price_sources(home: Path, prices_setting: str | None) -> str:
    """COMET_LEDGER_PRICE_SOURCES when unset: all three, except in the simulated world's home without a
    price file of its own (COMET_LEDGER_PRICES unset, no demo/prices.csv), where the shipped
    config/prices.csv (real list prices) would outrank what the simulated gateway bills: ledger, catalog."""
    if prices_setting is None and (home / SIMULATED_WORLD).is_file() and not (home / SIMULATED_PRICES).is_file():
        return "ledger,catalog"
    return ",".join(PRICE_SOURCES)


def default_prices(home: Path) -> str:
    """COMET_LEDGER_PRICES when unset: the simulated world's price list in a home that has one,
    else the shipped config/prices.csv."""
    simulated = home / SIMULATED_PRICES
    return str(simulated) if simulated.is_file() else DEFAULT_PRICES


def _non_negative_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a number >= 0")
    return value


def _umask(name: str, raw: str) -> int:
    if not (raw.isascii() and len(raw) <= 4 and raw.isdigit() and set(raw) <= set("01234567")):
        raise ConfigError(f"{name}={raw!r} must be an octal umask such as 0027 (files 0640, folders 0750)")
    value = int(raw, 8)
    if value & 0o700:
        raise ConfigError(f"{name}={raw!r} would keep the pipeline from reading its own files; use e.g. 0027")
    return value


def _hour(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and int(raw) <= 23):
        raise ConfigError(f"{name}={raw!r} must be a whole hour from 0 to 23 (UTC)")
    return int(raw)


def _lake_url(raw: str | None) -> str | None:
    """COMET_LEDGER_LAKE_URL: unset, a folder, or s3://bucket/prefix (checked, not contacted, here)."""
    if raw is None or "://" not in raw:
        return None if raw is None else str(_path(raw))
    from pipelines.lib.lake.store import parse_url

    try:
        parse_url(raw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return raw.rstrip("/")


def _path(raw: str) -> Path:
    return Path(raw).expanduser().absolute()


def _url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"{name}={raw!r} is not a base URL like https://host[:port]")
    return raw.rstrip("/")
