"""The query key is in the URL; it must appear nowhere the pipeline writes or prints."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days, secrets_found
from pipelines.simulator.server import SimulatorServer

CANARY_KEY = "sk-LEAKCANARY-7f3a9c2e5b1d4068"
CANARY_PART = "LEAKCANARY"
LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
FIRST = LAST - timedelta(days=3)  # every failure path is the same for 4 days as for 30

FAILURES = [
    ("bad_key", None),
    ("status", {"codes": [500] * 10}),
    ("maintenance", {}),
    ("html_redirect", {}),
    ("error_body_200", {}),
    ("truncated_json", {}),
    ("reset", {}),
    ("slow", {"delay": 1.5}),
    ("renamed_field", {"from_": "token_name", "to": "label"}),
]


def dagster_home(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").touch()
    return str(home)


def scan(root, needle: str = CANARY_PART) -> list[str]:
    """Files under `root` holding `needle`, their contents decoded (Parquet values, DuckDB rows, gzip):
    a secret inside a compressed page does not show in the raw bytes."""
    return [hit.rsplit(": ", 1)[0] for hit in secrets_found([root], [needle])]


@pytest.mark.parametrize("failure, opts", FAILURES, ids=[f for f, _ in FAILURES])
def test_no_failure_path_leaks_the_key(tmp_path, traffic, capfd, caplog, failure, opts):
    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY) as sim:
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY)
        if failure == "bad_key":
            settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY + "-wrong")
        else:
            sim.faults.add(failure, times=None, **opts)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            result = materialize_days(settings, FIRST, LAST, raise_on_error=False, instance=instance,
                                      timeout_s=1.0, max_attempts=2)
            assert not result.success
            errors = [str(e.event_specific_data.error) for e in result.all_events
                      if e.is_step_failure and e.event_specific_data.error]
            assert errors, "the failing step should report an error"
            assert not any(CANARY_PART in e for e in errors)
            stored = "\n".join(str(r.dagster_event) + str(r.user_message) for r in instance.all_logs(result.run_id))
            assert CANARY_PART not in stored
    out, err = capfd.readouterr()
    assert CANARY_PART not in out + err
    assert not [r for r in caplog.records if CANARY_PART in r.getMessage()]
    assert scan(tmp_path) == []


def test_happy_path_leaks_nothing_either(tmp_path, traffic, capfd, caplog):
    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY) as sim:
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            assert materialize_days(settings, FIRST, LAST, instance=instance).success
    out, err = capfd.readouterr()
    assert CANARY_PART not in out + err
    assert not [r for r in caplog.records if CANARY_PART in r.getMessage()]
    assert scan(tmp_path) == []


CANARY_TOKEN = "tok-TOKENCANARY-51c0ffee"
LEDGER_FAILURES = [("bad_token", None), ("status", {"codes": [503] * 10}), ("html_redirect", {}),
                   ("truncated_json", {}), ("reset", {})]


@pytest.mark.parametrize("failure, opts", LEDGER_FAILURES, ids=[f for f, _ in LEDGER_FAILURES])
def test_no_ledger_failure_leaks_the_access_token(tmp_path, traffic, capfd, caplog, failure, opts):
    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY, access_token=CANARY_TOKEN) as sim:
        token = CANARY_TOKEN + "-wrong" if failure == "bad_token" else CANARY_TOKEN
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY, COMETAPI_ACCESS_TOKEN=token)
        if failure != "bad_token":
            sim.faults.add(failure, times=None, paths=["/api/log/self"], **opts)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            result = materialize_days(settings, FIRST, LAST, raise_on_error=False, instance=instance,
                                      timeout_s=1.0, max_attempts=2)
            failed = [e for e in result.all_events if e.is_step_failure]
            assert [e.step_key for e in failed] == ["lake__gateway_logs"]
            stored = "\n".join(str(r.dagster_event) + str(r.user_message) for r in instance.all_logs(result.run_id))
            assert "TOKENCANARY" not in stored and CANARY_PART not in stored
    out, err = capfd.readouterr()
    assert "TOKENCANARY" not in out + err
    assert not [r for r in caplog.records if "TOKENCANARY" in r.getMessage()]
    assert scan(tmp_path, "TOKENCANARY") == []


# --- the alert channels: their URLs and the SMTP password are secrets too ----------------------------

SLACK_CANARY, HOOK_CANARY, SMTP_CANARY = "SLACKCANARY-5e1f", "HOOKCANARY-77aa", "SMTPCANARY-0b9c"
ALERT_CANARIES = ("SLACKCANARY", "HOOKCANARY", "SMTPCANARY")


def test_no_alert_path_leaks_a_webhook_url_or_the_smtp_password(tmp_path, traffic, capfd, caplog, monkeypatch):
    """A failing run, then its alert sent to a Slack webhook answering 500, a JSON webhook that is down
    and an SMTP server refusing the login; then `comet-ledger alerts test` and `alerts check` with the
    same channels: no canary in any output, log record, file, Dagster event or warehouse row."""
    import duckdb

    from pipelines.cli import main
    from pipelines.defs.alerts.resources import AlertChannels
    from receivers import SmtpReceiver, WebhookReceiver, free_port
    from test_alerts import after_run

    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY) as sim, WebhookReceiver(answers=[500] * 100) as slack, \
            SmtpReceiver(login=("ledger", "the-real-password")) as mail:
        env = {"COMET_LEDGER_ALERT_SLACK_URL": slack.url(f"/services/T0/B0/{SLACK_CANARY}"),
               "COMET_LEDGER_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook/{HOOK_CANARY}",
               "COMET_LEDGER_ALERT_SMTP_HOST": "127.0.0.1", "COMET_LEDGER_ALERT_SMTP_PORT": str(mail.port),
               "COMET_LEDGER_ALERT_SMTP_STARTTLS": "false", "COMET_LEDGER_ALERT_SMTP_USER": "ledger",
               "COMET_LEDGER_ALERT_SMTP_PASSWORD": SMTP_CANARY, "COMET_LEDGER_ALERT_SMTP_FROM": "a@example.org",
               "COMET_LEDGER_ALERT_SMTP_TO": "b@example.org"}
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY, **env)
        assert settings.secrets()[-3:] == [env["COMET_LEDGER_ALERT_SLACK_URL"], env["COMET_LEDGER_ALERT_WEBHOOK_URL"],
                                           SMTP_CANARY]
        channels = AlertChannels(slack_url=env["COMET_LEDGER_ALERT_SLACK_URL"],
                                 webhook_url=env["COMET_LEDGER_ALERT_WEBHOOK_URL"], smtp_host="127.0.0.1",
                                 smtp_port=mail.port, smtp_starttls=False, smtp_user="ledger", smtp_password=SMTP_CANARY,
                                 smtp_from="a@example.org", smtp_to=["b@example.org"], attempts=2,
                                 initial_delay_s=0.01, max_delay_s=0.02, timeout_s=2.0)
        sim.faults.add("status", times=None, codes=[500] * 10)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            result = materialize_days(settings, LAST, LAST, raise_on_error=False, instance=instance,
                                      timeout_s=1.0, max_attempts=1)
            assert not result.success
            summary = after_run(settings, instance, result, channels)
            stored = "\n".join(str(r.dagster_event) + str(r.user_message) for r in instance.all_logs(result.run_id))
        assert summary.startswith("1 alert(s) opened") and summary.endswith("0 note(s) sent, 3 failed")
        for name, value in {**env, "COMETAPI_KEY": CANARY_KEY, "COMET_LEDGER_HOME": str(tmp_path / "home"),
                            "DAGSTER_HOME": dagster_home(tmp_path)}.items():  # the instance of the failed run
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("COMETAPI_QUERY_URL", sim.url)
        monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-09-01")
        assert main(["alerts", "test"]) == 1
        assert main(["alerts", "check"]) == 1
        monkeypatch.setenv("COMET_LEDGER_ALERT_WEBHOOK_URL", f"not a url {HOOK_CANARY}")
        assert main(["alerts", "test"]) == 2
    out, err = capfd.readouterr()
    assert "Slack webhook: FAILED after 3 attempt(s): Slack webhook: HTTP 500" in out
    assert "e-mail: FAILED after 1 attempt(s): e-mail: the server answered 535" in out
    assert "COMET_LEDGER_ALERT_WEBHOOK_URL is not an http(s) URL" in err
    for canary in ALERT_CANARIES:
        assert canary not in out + err + stored
        assert not [r for r in caplog.records if canary in r.getMessage()]
        assert not [str(p) for p in tmp_path.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        text = repr(con.execute("SELECT * FROM alerts").fetchall() + con.execute("SELECT * FROM alert_deliveries")
                    .fetchall())
    assert "FAILED" not in text and "HTTP 500" in text and not any(c in text for c in ALERT_CANARIES)
