"""Configuration from the environment (and `.env` in the working directory).

The variable table is the README's "Configuration" section, declared here once as `Variables`: each
variable's name, type, default (as it would be written in `.env`) and rule. Everything is read when
`load_settings()` is called, never at import time: from the mapping it is given and nothing else, or
else by pydantic-settings from the process's environment over `.env` (the environment wins). Names
are exact (case-sensitive); a blank value counts as unset. `load_settings` then derives `Settings`,
what the code uses (the defaults that depend on the data home, the first day, the alert channels),
hands the secrets to the redactor, and attaches the lake to the process.

A bad value raises `ConfigError` whose message is one line naming the variable; secrets are never
echoed. pydantic's own error texts quote the input, so none is ever shown: `_config_error` writes
the line from the variable's rule (its field's `description`, or what a validator raised).

Written by hand still: the rules pydantic has no type for (a YYYY-MM-DD day and nothing else, a
whole number in digits only, an octal umask, a base URL, a lake URL, the price sources), as small
validators; and the alert channels' rules (pipelines/lib/alerts/config.py), which tie variables
to each other, applied to the values read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.lib import clock, first_day
from pipelines.lib.alerts import config as alert_config
from pipelines.lib.alerts.config import AlertSettings, load_alert_settings
from pipelines.lib.redact import MIN_SECRET_LENGTH, held, remember

DEFAULT_QUERY_URL = "https://query.cometapi.com"
DEFAULT_API_URL = "https://api.cometapi.com"
DEFAULT_CHUNK_DAYS = 31
# Files 0640 and folders 0750 by default: the lake and the warehouse hold spend by team, and other
# users of the host have no business reading them (the owner's group may: analysts, backups).
DEFAULT_UMASK = 0o027
DAGSTER_PG_PASSWORD = "DAGSTER_PG_PASSWORD"
PRICE_SOURCES_VARIABLE = "COMET_LEDGER_PRICE_SOURCES"
# Every secret variable -> where Settings keeps its value. The one list: `Settings.secrets()`, what
# `load_settings` hands the redactor to remember, what the command line masks when the settings
# fail to load (`env_secrets`), and which values a message about a bad setting leaves out, all read it.
SECRET_VARIABLES: dict[str, str] = {
    "COMETAPI_KEY": "api_key",
    "COMETAPI_ACCESS_TOKEN": "access_token",
    DAGSTER_PG_PASSWORD: "dagster_pg_password",
    "AWS_SECRET_ACCESS_KEY": "lake_secret_key",
    **{name: f"alerts.{place}" for name, place in alert_config.SECRET_VARIABLES.items()},
}
DEFAULT_PRICES = "config/prices.csv"
DEFAULT_BUDGETS = "config/budgets.csv"
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
    the folder COMET_LEDGER_LAKE_URL names, or for an `s3://` URL its local cache. A path only: the
    object store is attached to this process once, by `load_settings` (pipelines/lib/lake, `attach`)."""
    from pipelines.lib import lake

    return lake.root_of(home, lake_url)


def warehouse_path(home: Path) -> Path:
    """The warehouse file of a data home (Settings.warehouse_path, and the Dagster resource's), wherever
    the lake is; on object storage each publish is also copied there, the lake being attached by
    `load_settings`."""
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
    budgets_path: Path = field(default_factory=lambda: _path(DEFAULT_BUDGETS))
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
        return warehouse_path(self.home)

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


# --- each variable's rule. A validator raising a bare ValueError (or pydantic failing to read the
# type) means "breaks the rule in the field's description"; `_Broken` carries a rule of its own, and
# a ConfigError is the whole message already.


class _Broken(ValueError):
    """The value breaks this rule: the message completes `NAME='value' ...` (for a secret, `NAME ...`)."""


def _path(raw: str | Path) -> Path:
    return Path(raw).expanduser().absolute()


def _instant(raw: str | None) -> str | None:
    if raw is not None:  # read by pipelines/lib/clock.py itself, from the process's environment
        try:
            clock.parse(raw)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return raw


def _day(raw: Any) -> Any:
    """YYYY-MM-DD exactly (pydantic alone would also take seconds since the epoch)."""
    if isinstance(raw, str):
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    return raw


def _digits(raw: Any) -> Any:
    """A whole number written in digits only (pydantic alone would also take +5, 5.0 and 1_000)."""
    if isinstance(raw, str) and not (raw.isascii() and raw.isdigit()):
        raise ValueError
    return raw


def _octal(raw: Any) -> Any:
    if isinstance(raw, str):
        if not (raw.isascii() and len(raw) <= 4 and raw.isdigit() and set(raw) <= set("01234567")):
            raise ValueError
        return int(raw, 8)
    return raw


def _readable(umask: int) -> int:
    if umask & 0o700:
        raise _Broken("would keep the pipeline from reading its own files; use e.g. 0027")
    return umask


def _credential(secret: str | None) -> str | None:
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise _Broken(f"is {len(secret)} characters long: too short to be a CometAPI credential "
                      f"(and to be masked in what the pipeline writes); at least {MIN_SECRET_LENGTH}")
    return secret


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError
    return raw.rstrip("/")


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


def _price_sources(raw: Any) -> Any:
    """COMET_LEDGER_PRICE_SOURCES: a comma-separated subset of config, ledger, catalog, kept in that order."""
    if not isinstance(raw, str):
        return raw
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for name in names:
        if name not in PRICE_SOURCES:
            raise ConfigError(f"{PRICE_SOURCES_VARIABLE}={raw}: unknown price source {name!r} "
                              f"(a comma-separated subset of {', '.join(PRICE_SOURCES)})")
    return tuple(name for name in PRICE_SOURCES if name in names)


_AbsolutePath = Annotated[Path, AfterValidator(_path)]
_Credential = Annotated[str | None, AfterValidator(_credential)]
_BaseUrl = Annotated[str, AfterValidator(_base_url)]


def _secret(variable: str) -> Any:
    return Field(None, alias=variable, repr=False)


class Variables(BaseModel):
    """The variables as set: each field's alias is the variable, its default what an unset (or blank)
    variable means, its description the rule a bad value is told. In the order they are checked: a
    message names the first bad one. `model_validate(mapping)` reads that mapping alone;
    `_Environment` reads the process's environment and `.env`."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True, hide_input_in_errors=True)

    home: _AbsolutePath = Field("./data", alias="COMET_LEDGER_HOME")
    inbox: _AbsolutePath | None = Field(None, alias="COMET_LEDGER_INBOX")  # None: `<home>/inbox`
    timezone: ZoneInfo = Field("UTC", alias="COMET_LEDGER_TIMEZONE",
                               description="is not an IANA time zone (e.g. UTC, Asia/Shanghai)")
    now: Annotated[str | None, AfterValidator(_instant)] = Field(None, alias=clock.VARIABLE)
    # None: looked up (pipelines/lib/first_day.py)
    start_date: Annotated[date | None, BeforeValidator(_day)] = Field(
        None, alias="COMET_LEDGER_START_DATE", description="is not a date in YYYY-MM-DD form")
    chunk_days: Annotated[int, BeforeValidator(_digits)] = Field(
        DEFAULT_CHUNK_DAYS, ge=2, le=366, alias="COMET_LEDGER_CHUNK_DAYS",
        description="must be a whole number of days from 2 to 366")
    tolerance_usd: float = Field(0.01, ge=0, allow_inf_nan=False, alias="COMET_LEDGER_TOLERANCE_USD",
                                 description="must be a number >= 0")
    tolerance_pct: float = Field(1.0, ge=0, allow_inf_nan=False, alias="COMET_LEDGER_TOLERANCE_PCT",
                                 description="must be a number >= 0")
    freshness_hour_utc: Annotated[Annotated[int, Field(ge=0, le=23)] | None, BeforeValidator(_digits)] = Field(
        None, alias="COMET_LEDGER_FRESHNESS_HOUR_UTC", description="must be a whole hour from 0 to 23 (UTC)")
    umask: Annotated[int, BeforeValidator(_octal), AfterValidator(_readable)] = Field(
        DEFAULT_UMASK, alias="COMET_LEDGER_UMASK",
        description="must be an octal umask such as 0027 (files 0640, folders 0750)")
    api_key: _Credential = _secret("COMETAPI_KEY")
    access_token: _Credential = _secret("COMETAPI_ACCESS_TOKEN")
    # the alert channels, checked together by pipelines/lib/alerts/config.py
    alert_slack_url: str | None = _secret(alert_config.SLACK_URL)
    alert_webhook_url: str | None = _secret(alert_config.WEBHOOK_URL)
    alert_smtp_host: str | None = Field(None, alias=alert_config.SMTP_HOST)
    alert_smtp_port: str | None = Field(None, alias=alert_config.SMTP_PORT)
    alert_smtp_starttls: str | None = Field(None, alias=alert_config.SMTP_STARTTLS)
    alert_smtp_ca_file: str | None = Field(None, alias=alert_config.SMTP_CA_FILE)
    alert_smtp_user: str | None = Field(None, alias=alert_config.SMTP_USER)
    alert_smtp_password: str | None = _secret(alert_config.SMTP_PASSWORD)
    alert_smtp_from: str | None = Field(None, alias=alert_config.SMTP_FROM)
    alert_smtp_to: str | None = Field(None, alias=alert_config.SMTP_TO)
    dagster_pg_password: str | None = _secret(DAGSTER_PG_PASSWORD)
    lake_url: Annotated[str | None, AfterValidator(_lake_url)] = Field(None, alias="COMET_LEDGER_LAKE_URL")
    # None: the simulated world's list in a home that has one, else config/prices.csv (`default_prices`)
    prices: _AbsolutePath | None = Field(None, alias="COMET_LEDGER_PRICES")
    key_owners: _AbsolutePath = Field("config/key_owners.csv", alias="COMET_LEDGER_KEY_OWNERS")
    query_url: _BaseUrl = Field(DEFAULT_QUERY_URL, alias="COMETAPI_QUERY_URL",
                                description="is not a base URL like https://host[:port]")
    api_url: _BaseUrl = Field(DEFAULT_API_URL, alias="COMETAPI_API_URL",
                              description="is not a base URL like https://host[:port]")
    # None: config/budgets.csv, which may then be missing (no budgets)
    budgets: _AbsolutePath | None = Field(None, alias="COMET_LEDGER_BUDGETS")
    # None: `default_price_sources`
    price_sources: Annotated[tuple[str, ...] | None, BeforeValidator(_price_sources)] = Field(
        None, alias=PRICE_SOURCES_VARIABLE)
    lake_secret_key: str | None = _secret("AWS_SECRET_ACCESS_KEY")

    @model_validator(mode="before")
    @classmethod
    def _unblank(cls, given: Any) -> Any:
        """Each value without its surrounding blanks; a blank variable counts as unset."""
        if not isinstance(given, Mapping):
            return given
        return {name: value.strip() if isinstance(value, str) else value for name, value in given.items()
                if not (isinstance(value, str) and not value.strip())}

    def value(self, variable: str) -> Any:
        """The value of `variable` (by its name); None when unset."""
        return getattr(self, _FIELDS[variable])


class _Environment(BaseSettings, Variables):
    """`Variables` as pydantic-settings reads them: the process's environment over `.env` (`_env_file`)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", validate_default=True, hide_input_in_errors=True,
                                      case_sensitive=True, enable_decoding=False)


_FIELDS = {info.alias: name for name, info in Variables.model_fields.items()}


def read_variables(env: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> Variables:
    """The variables of `env` alone when given, else of the process's environment over `.env`
    (default: in the working directory); `ConfigError` on the first bad one."""
    try:
        if env is not None:
            return Variables.model_validate(env)
        return _Environment(_env_file=dotenv_path or Path.cwd() / ".env")
    except ValidationError as exc:
        error = _config_error(exc)
    raise error  # outside the handler: the ConfigError does not carry pydantic's error along as its context


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem as one line naming the variable. Never `str(exc)`: pydantic quotes the input,
    and the input may be a secret."""
    problem = exc.errors(include_url=False)[0]
    cause = (problem.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    variable = str(problem["loc"][0]) if problem["loc"] else "a setting"
    info = Variables.model_fields.get(_FIELDS.get(variable, ""))
    rule = str(cause) if isinstance(cause, _Broken) else (info and info.description) or "is not a usable value"
    if variable in SECRET_VARIABLES or info is None:
        return ConfigError(f"{variable} {rule}")
    return ConfigError(f"{variable}={problem['input']!r} {rule}")


def load_settings(env: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> Settings:
    """Settings from `env` alone when given (neither `os.environ` nor `.env` is read), else from `.env`
    (default: in the working directory) overlaid by `os.environ`."""
    variables = read_variables(env, dotenv_path)
    # masked in every message and stored text from now on (redact.py); a secret shorter than a
    # credential (an SMTP password of a few letters) would mask ordinary words: `remember` leaves it
    # out (the alert code never writes it)
    remember(*(variables.value(name) for name in SECRET_VARIABLES))
    alerts = load_alert_settings(variables.value)
    home, timezone = variables.home, variables.timezone.key
    if variables.start_date is not None:
        start_date, start_source = variables.start_date, "setting"
    elif found := first_day.recorded(home):  # the first day the service reports usage for
        start_date, start_source = found.day, "recorded"
    else:
        start_date, start_source = first_day.fallback(clock.today(timezone)).day, "fallback"
    price_sources = variables.price_sources
    if price_sources is None:
        price_sources = _price_sources(default_price_sources(home, None if variables.prices is None else str(variables.prices)))
    settings = Settings(
        home=home,
        inbox=variables.inbox or home / "inbox",
        prices_path=variables.prices or _path(default_prices(home)),
        key_owners_path=variables.key_owners,
        timezone=timezone,
        start_date=start_date,
        start_date_source=start_source,
        query_url=variables.query_url,
        api_url=variables.api_url,
        chunk_days=variables.chunk_days,
        tolerance_usd=variables.tolerance_usd,
        tolerance_pct=variables.tolerance_pct,
        freshness_hour_utc=variables.freshness_hour_utc,
        budgets_path=variables.budgets or _path(DEFAULT_BUDGETS),
        budgets_required=variables.budgets is not None,
        alerts=alerts,
        api_key=variables.api_key,
        access_token=variables.access_token,
        umask=variables.umask,
        dagster_pg_password=variables.dagster_pg_password,
        price_sources=price_sources,
        lake_url=variables.lake_url,
        lake_secret_key=variables.lake_secret_key,
    )
    attach_lake(settings)
    return settings


def attach_lake(settings: Settings) -> Path:
    """Attach the settings' lake to this process: on object storage, every lake write and read from now
    on goes there through the local cache `settings.lake` (pipelines/lib/lake, `attach`). Done once, by
    `load_settings`; the path functions only compute paths."""
    from pipelines.lib import lake

    return lake.attach(settings.home, settings.lake_url)


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
