from datetime import date
from pathlib import Path

import pytest

from pipelines.lib.settings import ConfigError, load_settings


def test_defaults_follow_the_contract(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert s.home == tmp_path / "data"
    assert s.inbox == tmp_path / "data" / "inbox"
    assert s.query_url == "https://query.cometapi.com"
    assert s.api_url == "https://api.cometapi.com"
    assert s.timezone == "UTC"
    assert s.start_date == date(2025, 1, 1)
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
    s = load_settings(env={"COMETAPI_KEY": "sk-REPRCANARY123456", "COMETAPI_ACCESS_TOKEN": "tok-REPRCANARY"})
    assert "REPRCANARY" not in repr(s)
    assert s.secrets() == ["sk-REPRCANARY123456", "tok-REPRCANARY"]


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch):
    (tmp_path / ".env").write_text("COMET_LEDGER_TIMEZONE=Asia/Shanghai\nCOMET_LEDGER_START_DATE=2026-01-01\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-02-01")
    monkeypatch.delenv("COMET_LEDGER_TIMEZONE", raising=False)
    s = load_settings()
    assert s.timezone == "Asia/Shanghai"
    assert s.start_date == date(2026, 2, 1)
