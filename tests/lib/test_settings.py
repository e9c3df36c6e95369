import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipelines.lib.settings import SECRET_VARIABLES, ConfigError, env_secrets, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_contract(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert s.home == tmp_path / "data"
    assert s.inbox == tmp_path / "data" / "inbox"
    assert s.query_url == "https://query.cometapi.com"
    assert s.api_url == "https://api.cometapi.com"
    assert s.timezone == "UTC"
    # no COMET_LEDGER_START_DATE and nothing looked up yet: 90 days before today (pipelines/lib/first_day.py)
    assert (s.start_date, s.start_date_source) == (date(2026, 11, 3) - timedelta(days=90), "fallback")
    assert s.prices_path == tmp_path / "config" / "prices.csv"
    assert s.key_owners_path == tmp_path / "config" / "key_owners.csv"
    assert s.chunk_days == 31
    assert s.freshness_hour_utc is None  # two hours after the daily schedule (tests/defs/test_freshness.py)
    assert s.api_key is None and s.access_token is None


def test_inbox_follows_home(tmp_path: Path):
    s = load_settings(env={"COMET_LEDGER_HOME": str(tmp_path / "h")})
    assert s.inbox == tmp_path / "h" / "inbox"
    assert s.warehouse_path == tmp_path / "h" / "warehouse.duckdb"


@pytest.mark.parametrize(
    "name, value",
    [
        ("COMET_LEDGER_TIMEZONE", "Mars/Olympus"),
        ("COMET_LEDGER_START_DATE", "2025/01/01"),
        ("COMET_LEDGER_START_DATE", "2025-1-1"),
        ("COMET_LEDGER_CHUNK_DAYS", "0"),
        ("COMET_LEDGER_CHUNK_DAYS", "many"),
        ("COMETAPI_QUERY_URL", "query.cometapi.com"),
        ("COMETAPI_API_URL", "ftp://api.cometapi.com"),
        ("COMETAPI_QUERY_URL", "https://query.cometapi.com/user/quota?key=sk-secret"),
        ("COMET_LEDGER_FRESHNESS_HOUR_UTC", "24"),
        ("COMET_LEDGER_FRESHNESS_HOUR_UTC", "-1"),
        ("COMET_LEDGER_FRESHNESS_HOUR_UTC", "8.5"),
        ("COMET_LEDGER_FRESHNESS_HOUR_UTC", "8am"),
        ("COMET_LEDGER_UMASK", "0999"),
        ("COMET_LEDGER_UMASK", "0700"),
        ("COMET_LEDGER_UMASK", "u=rwx"),
        # what a laxer reading would take: a sign, a fraction, seconds since the epoch, an infinity
        ("COMET_LEDGER_CHUNK_DAYS", "+5"),
        ("COMET_LEDGER_CHUNK_DAYS", "31.0"),
        ("COMET_LEDGER_START_DATE", "1767225600"),
        ("COMET_LEDGER_TOLERANCE_USD", "inf"),
        ("COMET_LEDGER_TOLERANCE_PCT", "nan"),
        ("COMETAPI_QUERY_URL", "https://[::1"),
    ],
)
def test_bad_value_fails_fast_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as err:
        load_settings(env={name: value})
    message = str(err.value)
    assert message.startswith(f"{name}=") and "\n" not in message


@pytest.mark.parametrize("raw, hour", [("0", 0), ("9", 9), (" 23 ", 23), ("", None)])
def test_freshness_hour_is_a_utc_hour(raw, hour):
    assert load_settings(env={"COMET_LEDGER_FRESHNESS_HOUR_UTC": raw}).freshness_hour_utc == hour


def test_missing_key_is_one_line_naming_the_variable():
    with pytest.raises(ConfigError, match=r"^COMETAPI_KEY is not set"):
        load_settings(env={}).require_api_key()


def test_secrets_are_not_in_the_repr():
    s = load_settings(env={"COMETAPI_KEY": "sk-REPRCANARY123456", "COMETAPI_ACCESS_TOKEN": "tok-REPRCANARY",
                           "DAGSTER_PG_PASSWORD": "pg-REPRCANARY"})
    assert "REPRCANARY" not in repr(s)
    assert s.secrets() == ["sk-REPRCANARY123456", "tok-REPRCANARY", "pg-REPRCANARY"]


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch):
    (tmp_path / ".env").write_text("COMET_LEDGER_TIMEZONE=Asia/Shanghai\nCOMET_LEDGER_START_DATE=2026-01-01\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-02-01")
    monkeypatch.delenv("COMET_LEDGER_TIMEZONE", raising=False)
    s = load_settings()
    assert s.timezone == "Asia/Shanghai"
    assert s.start_date == date(2026, 2, 1)


def test_a_given_mapping_replaces_the_environment_and_the_dotenv_file(tmp_path: Path, monkeypatch):
    (tmp_path / ".env").write_text("COMET_LEDGER_CHUNK_DAYS=40\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_LEDGER_TIMEZONE", "Asia/Shanghai")
    s = load_settings(env={"COMET_LEDGER_START_DATE": "2026-03-01"})
    assert (s.timezone, s.chunk_days, s.start_date) == ("UTC", 31, date(2026, 3, 1))
    assert load_settings().chunk_days == 40


def test_a_bad_secret_leaves_no_trace_of_its_value_in_the_error():
    import traceback

    secret = "-".join(["abc", "12"])  # not spelled out: the traceback quotes this file's lines
    with pytest.raises(ConfigError) as err:
        load_settings(env={"COMETAPI_KEY": secret, "COMET_LEDGER_UMASK": "0022"})
    told = "".join(traceback.format_exception(err.value))
    assert str(err.value).startswith("COMETAPI_KEY is 6 characters long") and secret not in told


def test_every_secret_variable_is_kept_by_the_settings_and_masked_by_every_redaction():
    """SECRET_VARIABLES is the one list of secrets: each one's value is in `Settings.secrets()` (where
    the list says Settings keeps it), in `env_secrets` (what the command line masks before the settings
    load), and masked by every later redaction."""
    from pipelines.lib.redact import redact

    documented = set(re.findall(r"^\| `(\w+)` \|.*\*\*a secret\*\*", (REPO / "README.md").read_text(), flags=re.M))
    assert documented and documented | {"COMETAPI_KEY", "COMETAPI_ACCESS_TOKEN", "DAGSTER_PG_PASSWORD"} == set(SECRET_VARIABLES)
    values = {"COMETAPI_KEY": "plainKEY-everysecret-01", "COMETAPI_ACCESS_TOKEN": "plainTOKEN-everysecret-02",
              "DAGSTER_PG_PASSWORD": "plainPG-everysecret-03",
              "COMET_LEDGER_ALERT_SLACK_URL": "https://hooks.example.com/services/plainSLACK-everysecret-04",
              "COMET_LEDGER_ALERT_WEBHOOK_URL": "https://example.org/hook/plainHOOK-everysecret-05",
              "COMET_LEDGER_ALERT_SMTP_PASSWORD": "plainSMTP-everysecret-06",
              "AWS_SECRET_ACCESS_KEY": "plainAWS-everysecret-07"}
    assert set(values) == set(SECRET_VARIABLES)
    env = values | {"COMET_LEDGER_ALERT_SMTP_HOST": "smtp.example.org", "COMET_LEDGER_ALERT_SMTP_USER": "ledger",
                    "COMET_LEDGER_ALERT_SMTP_FROM": "a@example.org", "COMET_LEDGER_ALERT_SMTP_TO": "b@example.org"}
    in_order = [values[name] for name in SECRET_VARIABLES]
    assert env_secrets(env) == in_order
    assert load_settings(env=env).secrets() == in_order
    assert redact(" ".join(in_order)) == " ".join(["***"] * len(in_order))


@pytest.mark.parametrize("name", ["COMETAPI_KEY", "COMETAPI_ACCESS_TOKEN"])
def test_a_credential_too_short_to_mask_is_refused_without_echoing_it(name):
    with pytest.raises(ConfigError) as err:
        load_settings(env={name: "abc12"})
    assert str(err.value).startswith(f"{name} is 5 characters long: too short") and "abc12" not in str(err.value)


def test_the_umask_defaults_to_0027_and_is_applied(tmp_path: Path):
    import os
    import stat

    settings = load_settings(env={})
    assert settings.umask == 0o027 and load_settings(env={"COMET_LEDGER_UMASK": "0022"}).umask == 0o022
    previous = settings.apply_umask()
    try:
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "file").write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "folder" / "file").stat().st_mode) == 0o640


def test_configured_secrets_are_masked_by_every_redaction_whatever_their_shape():
    from pipelines.lib.redact import redact

    load_settings(env={"COMETAPI_KEY": "plainKEYvalue-0042", "COMETAPI_ACCESS_TOKEN": "plainTOKENvalue-0042"})
    assert redact("key plainKEYvalue-0042, token plainTOKENvalue-0042") == "key ***, token ***"


def test_a_home_holding_the_simulated_world_prices_with_its_list(tmp_path: Path, monkeypatch):
    """`comet-ledger demo` (and `dev` with its simulator) write the simulator's price list into the home:
    every run there prices with it unless COMET_LEDGER_PRICES says otherwise."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "h"
    assert load_settings(env={"COMET_LEDGER_HOME": str(home)}).prices_path == tmp_path / "config" / "prices.csv"
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "prices.csv").write_text("model\n")
    assert load_settings(env={"COMET_LEDGER_HOME": str(home)}).prices_path == home / "demo" / "prices.csv"
    chosen = load_settings(env={"COMET_LEDGER_HOME": str(home), "COMET_LEDGER_PRICES": "mine.csv"})
    assert chosen.prices_path == tmp_path / "mine.csv"


def test_price_sources_keep_their_precedence_and_a_demo_home_needs_no_price_file(tmp_path: Path):
    assert load_settings(env={}).price_sources == ("config", "ledger", "catalog")
    assert load_settings(env={"COMET_LEDGER_PRICE_SOURCES": "catalog, ledger"}).price_sources == ("ledger", "catalog")
    with pytest.raises(ConfigError, match="^COMET_LEDGER_PRICE_SOURCES=config,list: unknown price source 'list'"):
        load_settings(env={"COMET_LEDGER_PRICE_SOURCES": "config,list"})
    home = tmp_path / "home"
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "world.json").write_text("{}")  # the simulated world: its ledger and catalog say the prices
    assert load_settings(env={"COMET_LEDGER_HOME": str(home)}).price_sources == ("ledger", "catalog")
    assert load_settings(env={"COMET_LEDGER_HOME": str(home), "COMET_LEDGER_PRICES": "config/prices.csv"}
                         ).price_sources == ("config", "ledger", "catalog")


@pytest.mark.parametrize("raw", ["s3://", "s3:///prefix", "gs://bucket/lake", "s3://bucket/lake?x=1"])
def test_a_lake_url_that_is_not_a_bucket_is_one_line_naming_the_variable(raw):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"COMET_LEDGER_LAKE_URL": raw})
    assert str(err.value) == f"COMET_LEDGER_LAKE_URL={raw!r} is neither a folder nor an s3://bucket/prefix URL"


def test_the_lake_is_a_folder_or_the_cache_of_an_object_store(tmp_path: Path):
    home = tmp_path / "home"
    assert load_settings(env={"COMET_LEDGER_HOME": str(home)}).lake == home / "lake"
    assert load_settings(env={"COMET_LEDGER_HOME": str(home), "COMET_LEDGER_LAKE_URL": str(tmp_path / "elsewhere")}
                         ).lake == tmp_path / "elsewhere"
    settings = load_settings(env={"COMET_LEDGER_HOME": str(home), "COMET_LEDGER_LAKE_URL": "s3://ledger/lake/"})
    assert settings.lake_url == "s3://ledger/lake" and settings.lake == home / "lake_cache"


def test_the_lake_is_attached_by_loading_the_settings_not_by_computing_a_path(tmp_path: Path):
    from pipelines.lib import lake
    from pipelines.lib.settings import lake_path

    home = tmp_path / "home"
    assert lake_path(home, "s3://ledger/computed") == home / "lake_cache"
    assert lake.object_lake(home / "lake_cache") is None
    settings = load_settings(env={"COMET_LEDGER_HOME": str(home), "COMET_LEDGER_LAKE_URL": "s3://ledger/loaded"})
    assert lake.object_lake(settings.lake).url == "s3://ledger/loaded"
