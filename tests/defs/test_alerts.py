"""Budgets and alerts through real runs: the daily job builds budget_status from the simulator's figures,
and the alert sensors, evaluated after a run as the daemon would, send to real loopback receivers:
a budget crossed, the daily run failing (and its resolved note once a run succeeds), a failed smoke
test. A receiver that is down costs its retries and a record, never the run."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import dagster as dg
import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days, table_rows
from pipelines.definitions import build_definitions
from pipelines.defs.alerts.resources import AlertChannels
from pipelines.defs.alerts.sensors import ALERT_FAILURE_SENSOR, ALERT_SENSOR
from receivers import SmtpReceiver, WebhookReceiver, free_port

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
FIRST = LAST - timedelta(days=1)
BUDGETS = ("scope,name,period,amount_usd,thresholds_pct,effective_from,effective_to\n"
           "account,,day,0.01,50;100,2026-10-01,\n"  # every simulated day spends more than a cent
           "team,media,month,1000,80;100,2026-10-01,\n")  # never near


def dagster_dir(tmp_path) -> str:
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return str(tmp_path / "dagster")


def channels(hook: WebhookReceiver, mail: SmtpReceiver | None = None, **changes) -> AlertChannels:
    smtp = dict(smtp_host="127.0.0.1", smtp_port=mail.port, smtp_starttls=False, smtp_from="ledger@example.org",
                smtp_to=["finance@example.org"]) if mail else {}
    return AlertChannels(**{"slack_url": hook.url("/services/T0/B0/slack"), "webhook_url": hook.url("/hook"),
                            "attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02, "timeout_s": 2.0,
                            **smtp, **changes})


def after_run(settings, instance, result, alert_channels: AlertChannels) -> str:
    """Evaluate the sensor the daemon would run after `result`'s run ended."""
    defs = build_definitions(settings)
    name = ALERT_SENSOR if result.success else ALERT_FAILURE_SENSOR
    wanted = dg.DagsterEventType.RUN_SUCCESS if result.success else dg.DagsterEventType.RUN_FAILURE
    [event] = [e for e in result.all_events if e.event_type == wanted]
    context = dg.build_run_status_sensor_context(
        sensor_name=name, dagster_event=event, dagster_instance=instance, dagster_run=result.dagster_run,
        resources={"ledger": defs.resources["ledger"], "alert_channels": alert_channels})
    if not result.success:
        context = context.for_run_failure()
    outcome = defs.resolve_sensor_def(name)(context)
    return outcome.skip_message


@pytest.fixture
def home(tmp_path, sim, monkeypatch):
    (tmp_path / "budgets.csv").write_text(BUDGETS)
    monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
    return make_settings(tmp_path / "home", sim, COMET_LEDGER_BUDGETS=str(tmp_path / "budgets.csv"))


def test_budget_status_follows_the_reported_figures_and_its_crossing_is_sent_once(home, tmp_path):
    with dg.instance_for_test(temp_dir=dagster_dir(tmp_path)) as instance, WebhookReceiver() as hook, \
            SmtpReceiver() as mail:
        result = materialize_days(home, FIRST, LAST, instance=instance)
        assert result.success
        [(day, spend, status, crossed)] = table_rows(
            home, "SELECT period_start, spend_usd, status, crossed_pct FROM budget_status "
                  "WHERE budget_id = 'account/day' AND is_current")
        [(reported,)] = table_rows(home, "SELECT sum(reported_cost_usd) FROM quota_daily WHERE usage_date = $d",
                                   {"d": LAST})
        assert (day, spend, status, crossed) == (LAST, reported, "exceeded", [50.0, 100.0])
        assert table_rows(home, "SELECT count(*) FROM budget_status WHERE budget_id = 'account/day'") == [(2,)]
        [(month_spend,)] = table_rows(home, "SELECT spend_usd FROM budget_status WHERE budget_id = 'team:media/month'")
        [(media,)] = table_rows(home, "SELECT sum(reported_cost_usd) FROM recon_key_daily WHERE team = 'media'")
        assert month_spend == media > Decimal(0)

        summary = after_run(home, instance, result, channels(hook, mail))
        again = after_run(home, instance, result, channels(hook, mail))  # a second tick, or another run's
    budget = [p.body for p in hook.posts if p.path == "/hook" and p.body["kind"] == "budget_spend"]
    assert sorted(b["threshold_pct"] for b in budget) == [50.0, 100.0]
    assert {b["period_start"] for b in budget} == {LAST.isoformat()}
    opened = table_rows(home, "SELECT count(*) FROM alerts")[0][0]
    assert summary.startswith(f"{opened} alert(s) opened, 0 resolved") and summary.endswith("0 failed")
    assert again == "0 alert(s) opened, 0 resolved, 0 expired; 0 note(s) sent, 0 failed"
    assert sum(p.path == "/services/T0/B0/slack" for p in hook.posts) == sum(p.path == "/hook" for p in hook.posts) \
        == len(mail.mails) == opened


def test_a_failed_daily_run_is_sent_once_and_resolved_by_the_next_success(home, tmp_path, sim):
    home = make_settings(home.home, sim, COMET_LEDGER_BUDGETS=str(tmp_path / "none.csv"))  # no budgets
    (tmp_path / "none.csv").write_text("scope,name,period,amount_usd,thresholds_pct,effective_from,effective_to\n")
    with dg.instance_for_test(temp_dir=dagster_dir(tmp_path)) as instance, WebhookReceiver() as hook:
        sim.faults.add("status", times=None, codes=[500] * 10)
        failed = materialize_days(home, FIRST, LAST, raise_on_error=False, instance=instance, max_attempts=1)
        assert not failed.success
        after_run(home, instance, failed, channels(hook))
        after_run(home, instance, failed, channels(hook))
        [note] = [p.body for p in hook.posts if p.path == "/hook"]
        assert (note["kind"], note["event"], note["period_start"]) == ("run_failed", "opened", LAST.isoformat())
        assert note["summary"] == f"The daily run failed: reporting days up to {LAST} are not updated (the latest run)"
        assert f"Run {failed.run_id} for {FIRST} .. {LAST}: lake__quota_daily: " in note["detail"]
        assert "HTTP 500" in note["detail"] and sim.api_key not in note["detail"]
        sim.faults.clear()
        fixed = materialize_days(home, FIRST, LAST, instance=instance)
        after_run(home, instance, fixed, channels(hook))
    events = [(p.body["kind"], p.body["event"]) for p in hook.posts if p.path == "/hook"]
    assert events == [("run_failed", "opened"), ("run_failed", "resolved")]
    assert table_rows(home, "SELECT kind, status, period_start FROM alerts") == [("run_failed", "resolved", LAST)]


def test_a_failed_smoke_test_opens_an_alert_and_a_dead_receiver_never_fails_anything(home, tmp_path, sim):
    from pipelines.lib.smoke_test import record, run_smoke_test
    from pipelines.lib.cometapi.http import RetryPolicy

    dead = AlertChannels(webhook_url=f"http://127.0.0.1:{free_port()}/hook", attempts=2, initial_delay_s=0.01,
                         max_delay_s=0.02, timeout_s=1.0)
    with dg.instance_for_test(temp_dir=dagster_dir(tmp_path)) as instance:
        result = materialize_days(home, LAST, LAST, instance=instance)
        sim.faults.add("accept_malformed_dates", times=None)
        smoke = run_smoke_test(sim.url, sim.url, sim.api_key, known_active_range=None, reviewer=None, today=LAST,
                               policy=RetryPolicy(max_attempts=1, base_delay=0.0), timeout=5.0)
        assert not smoke.passed
        record(home.warehouse_path, smoke)
        summary = after_run(home, instance, result, dead)
    [(opened,)] = table_rows(home, "SELECT count(*) FROM alerts")
    assert summary == f"{opened} alert(s) opened, 0 resolved, 0 expired; 0 note(s) sent, {opened} failed"
    assert table_rows(home, "SELECT kind, severity FROM alerts WHERE kind = 'smoke_test_failed'") == [
        ("smoke_test_failed", "critical")]
    assert table_rows(home, "SELECT DISTINCT status, last_error FROM alert_deliveries WHERE rounds = 1") == [
        ("pending", "JSON webhook: could not reach the server (ConnectError)")]
