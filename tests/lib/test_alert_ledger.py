"""The alert evaluation (pipelines/lib/alerts/ledger.py) on a small warehouse, with real receivers: one
note per condition and period, one resolved note when it clears, periods that end expire silently,
failed deliveries are recorded and tried again, a crash between claim and record loses nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib.alerts import ledger
from pipelines.lib.alerts.channels import DeliveryPolicy, Sender
from pipelines.lib.alerts.conditions import Condition, Judgement
from pipelines.lib.alerts.config import AlertSettings, SmtpSettings
from pipelines.lib.reconciliation.budgets import build_status
from pipelines.lib.warehouse import publish
from receivers import SmtpReceiver, WebhookReceiver, free_port

FAST = DeliveryPolicy(attempts=2, initial_delay_s=0.01, max_delay_s=0.02, timeout_s=2.0)
NOW = datetime(2026, 11, 5, 6, 30, tzinfo=UTC)
START = date(2026, 10, 1)
BUDGETS = "\n".join(["scope,name,period,amount_usd,thresholds_pct,effective_from,effective_to",
                     "team,team-a,month,30,50;100,2026-10-01,",  # Nov: $4 spent, forecast $30: 100 % forecast
                     "key,k1,day,0.8,100,2026-10-01,"]) + "\n"  # $1 a day: 125 %, every day
ANOMALY_COLUMNS = "usage_date DATE, key_name VARCHAR, kind VARCHAR, severity VARCHAR, amount_usd DOUBLE, " \
                  "detail VARCHAR, evidence VARCHAR, action VARCHAR"


def add_days(con, first: int, last: int) -> None:
    for i in range(first, last + 1):
        day = START + timedelta(days=i)
        con.execute("INSERT INTO recon_key_daily VALUES (?, 'k1', 'team-a', 1, false), (?, 'k2', 'team-b', 0.25, false)",
                    [day, day])


@pytest.fixture
def home(tmp_path) -> Path:
    """A warehouse holding 2026-10-01 .. 11-04, its budgets, findings and smoke tests."""
    (tmp_path / "budgets.csv").write_text(BUDGETS)
    path = tmp_path / "warehouse.duckdb"
    with publish(path) as con:
        con.execute("CREATE TABLE recon_key_daily (usage_date DATE, key_name VARCHAR, team VARCHAR, "
                    "reported_cost_usd DECIMAL(18, 6), is_partial_day BOOLEAN)")
        add_days(con, 0, 34)
        build_status(con, tmp_path / "budgets.csv")
        con.execute(f"CREATE TABLE anomalies ({ANOMALY_COLUMNS})")
        con.executemany("INSERT INTO anomalies VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            (date(2026, 11, 3), "k2", "unlogged_gateway_requests", "critical", 0.5, "7 calls not in your logs.",
             "request_ids=a,b", "Rotate the key."),
            (date(2026, 11, 4), "k1", "new_source_ip", "critical", 0.2, "k1 used from 198.51.100.9.",
             "ip=198.51.100.9", "Check the address."),
            (date(2026, 11, 4), "k2", "new_source_ip", "critical", 0.0, "no spend", "ip=x", "none"),  # no spend
            (date(2026, 11, 4), "k2", "new_source_ip", "warning", 0.3, "some logged", "ip=y", "none"),  # not critical
            (date(2026, 10, 1), "k2", "unlogged_gateway_requests", "critical", 9.0, "old", "ids", "none"),  # too old
            (date(2026, 11, 4), "k1", "spend_spike", "warning", 3.0, "spike", "x", "none"),  # not a leak kind
        ])
        con.execute("CREATE TABLE smoke_tests (smoke_test_date DATE, passed BOOLEAN, failures VARCHAR, "
                    "checked_at TIMESTAMPTZ)")
        con.executemany("INSERT INTO smoke_tests VALUES (?, ?, ?, ?)", [
            (date(2026, 11, 1), True, None, datetime(2026, 11, 1, 9, tzinfo=UTC)),
            (date(2026, 11, 3), False, "error path: the malformed date was accepted", datetime(2026, 11, 3, 9, tzinfo=UTC)),
            (date(2026, 11, 4), False, "totals: HTTP 503", datetime(2026, 11, 4, 9, tzinfo=UTC))])
    return tmp_path


def rows(home: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def smtp(mail: SmtpReceiver) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=mail.port, sender="ledger@example.org",
                        recipients=("finance@example.org",), starttls=False)


EXPECTED = {
    ("budget_forecast", "team:team-a/month", 100.0, date(2026, 11, 1), "warning"),
    ("budget_spend", "key:k1/day", 100.0, date(2026, 11, 4), "critical"),
    ("unlogged_gateway_requests", "key:k2", None, date(2026, 11, 3), "critical"),
    ("new_source_ip", "key:k1", None, date(2026, 11, 4), "critical"),
    ("smoke_test_failed", "smoke_test", None, date(2026, 11, 3), "critical"),
}


def test_one_note_per_condition_then_resolved_and_expired_as_the_data_moves_on(home):
    with WebhookReceiver() as hook, SmtpReceiver() as mail:
        sender = Sender(AlertSettings(webhook_url=hook.url("/hook"), smtp=smtp(mail)), FAST)
        first = ledger.evaluate(home / "warehouse.duckdb", sender, NOW)
        assert {(a.kind, a.scope, a.threshold_pct, a.period_start, a.severity) for a in first.opened} == EXPECTED
        assert len(hook.posts) == len(mail.mails) == 5 and not first.failed
        assert {p.body["kind"] for p in hook.posts} == {k for k, *_ in EXPECTED}
        assert all(p.body["event"] == "opened" for p in hook.posts)
        spend = next(p.body for p in hook.posts if p.body["kind"] == "budget_spend")
        assert spend["summary"] == "Budget key k1 (day) exceeded 125.0 % for 2026-11-04 (100 % threshold)"
        assert spend["detail"].startswith("Spend $1.00 of $0.80 (125.0 %) from 2026-11-04 to 2026-11-04")
        forecast = next(m for m in mail.mails if "forecast" in m.subject)
        assert forecast.subject == ("comet-ledger: [WARNING] Budget team team-a (month) forecast to reach 100.0 % by "
                                    "2026-11-30 (100 % threshold)")
        smoke = next(p.body for p in hook.posts if p.body["kind"] == "smoke_test_failed")
        assert smoke["summary"] == "The CometAPI smoke test failed on 2026-11-04 (2 failures since 2026-11-03)"
        assert smoke["detail"].startswith("totals: HTTP 503.")

        # The same state again: nothing sent, nothing written.
        before = (home / "warehouse.duckdb").stat().st_mtime_ns
        again = ledger.evaluate(home / "warehouse.duckdb", sender, NOW + timedelta(hours=1))
        assert (again.opened, again.resolved, again.deliveries) == ([], [], [])
        assert (home / "warehouse.duckdb").stat().st_mtime_ns == before
        assert len(hook.posts) == len(mail.mails) == 5

        # The smoke test passes, late logs explain the unlogged calls, and 11-05 arrives: two conditions
        # clear (a resolved note each), the key's day budget of 11-04 is over (expired, no note) and
        # that of 11-05 is a new period (a new alert).
        with publish(home / "warehouse.duckdb") as con:
            con.execute("INSERT INTO smoke_tests VALUES ('2026-11-05', true, NULL, '2026-11-05 06:00:00+00')")
            con.execute("DELETE FROM anomalies WHERE kind = 'unlogged_gateway_requests' AND usage_date = '2026-11-03'")
            add_days(con, 35, 35)
            build_status(con, home / "budgets.csv")
        third = ledger.evaluate(home / "warehouse.duckdb", sender, NOW + timedelta(days=1))
    assert [(a.kind, a.period_start) for a in third.opened] == [("budget_spend", date(2026, 11, 5))]
    assert sorted(a.kind for a in third.resolved) == ["smoke_test_failed", "unlogged_gateway_requests"]
    assert [(a.kind, a.period_start) for a in third.expired] == [("budget_spend", date(2026, 11, 4))]
    assert len(hook.posts) == len(mail.mails) == 5 + 1 + 2
    resolved = [p.body for p in hook.posts if p.body["event"] == "resolved"]
    assert sorted(b["kind"] for b in resolved) == ["smoke_test_failed", "unlogged_gateway_requests"]
    assert sum(m.subject.startswith("comet-ledger: [RESOLVED] ") for m in mail.mails) == 2
    assert rows(home, "SELECT status, count(*) FROM alerts GROUP BY ALL ORDER BY ALL") == [
        ("expired", 1), ("open", 3), ("resolved", 2)]
    assert rows(home, "SELECT count(*) FROM alerts WHERE first_sent_at IS NULL") == [(0,)]
    assert rows(home, "SELECT count(*) FROM alerts WHERE status = 'resolved' AND resolved_sent_at IS NULL") == [(0,)]
    assert rows(home, "SELECT note, status, count(*) FROM alert_deliveries GROUP BY ALL ORDER BY ALL") == [
        ("opened", "sent", 12), ("resolved", "sent", 4)]


def test_a_failing_channel_is_recorded_tried_again_and_never_fails_the_evaluation(home):
    port = free_port()  # nothing listens there: the webhook is down
    with SmtpReceiver() as mail:
        down = Sender(AlertSettings(webhook_url=f"http://127.0.0.1:{port}/hook/SECRETPART", smtp=smtp(mail)), FAST)
        first = ledger.evaluate(home / "warehouse.duckdb", down, NOW)
        assert len(first.opened) == 5 and len(mail.mails) == 5  # e-mail is not held up by the webhook
        failed = first.failed
        assert len(failed) == 5 and [d.attempts for _, _, d in failed] == [2, 0, 0, 0, 0]
        assert failed[0][2].error == "JSON webhook: could not reach the server (ConnectError)"
        assert rows(home, "SELECT status, rounds, count(*) FROM alert_deliveries WHERE channel = 'webhook' "
                          "GROUP BY ALL ORDER BY ALL") == [("pending", 0, 4), ("pending", 1, 1)]
        errors = rows(home, "SELECT DISTINCT last_error FROM alert_deliveries WHERE channel = 'webhook'")
        assert not any("SECRETPART" in e for (e,) in errors)
        # The webhook is back: the five notes go out, the mails are not sent twice.
        with WebhookReceiver() as hook:
            up = Sender(AlertSettings(webhook_url=hook.url("/hook/SECRETPART"), smtp=smtp(mail)), FAST)
            second = ledger.evaluate(home / "warehouse.duckdb", up, NOW + timedelta(minutes=5))
        assert (second.opened, len(second.deliveries), len(hook.posts), len(mail.mails)) == ([], 5, 5, 5)
        assert rows(home, "SELECT status, count(*) FROM alert_deliveries GROUP BY ALL") == [("sent", 10)]


def test_a_channel_down_for_three_evaluations_is_given_up_with_its_error(home):
    down = Sender(AlertSettings(webhook_url=f"http://127.0.0.1:{free_port()}/hook"),
                  DeliveryPolicy(attempts=1, initial_delay_s=0, max_delay_s=0, timeout_s=1.0))
    for minutes in range(ledger.MAX_ROUNDS):
        ledger.evaluate(home / "warehouse.duckdb", down, NOW + timedelta(minutes=minutes))
    # the first note was tried in each evaluation, then given up; the others were held back each time
    # (a channel that fails one note is not tried for the rest of that evaluation)
    statuses = rows(home, "SELECT status, rounds, attempts, last_error FROM alert_deliveries ORDER BY ALL")
    error = "JSON webhook: could not reach the server (ConnectError)"
    assert statuses == [("failed", ledger.MAX_ROUNDS, ledger.MAX_ROUNDS, error)] + [("pending", 0, 0, f"not tried: {error}")] * 4


def test_a_crash_between_claim_and_record_sends_the_claimed_notes_once_the_claim_is_stale(home):
    with WebhookReceiver() as hook:
        sender = Sender(AlertSettings(webhook_url=hook.url("/hook")), FAST)
        with publish(home / "warehouse.duckdb") as con:  # steps 1-2 of an evaluation that then died
            con.execute(open(Path(ledger.__file__).parents[3] / "sql" / "core" / "alerts.sql").read())
            from pipelines.lib.alerts.conditions import warehouse_conditions

            ledger.apply(con, ledger.plan(con, warehouse_conditions(con), ["webhook"], NOW), "dead", NOW)
        assert ledger.evaluate(home / "warehouse.duckdb", sender, NOW + timedelta(minutes=5)).deliveries == []
        assert hook.posts == []  # its claims are fresh: the dead one might still be sending
        later = ledger.evaluate(home / "warehouse.duckdb", sender, NOW + ledger.CLAIM_TTL + timedelta(minutes=1))
    assert len(later.deliveries) == len(hook.posts) == 5 and later.opened == []


def test_an_incident_is_one_alert_until_it_clears_and_only_judged_kinds_clear(home):
    def failed(day: date) -> Judgement:
        return Judgement([Condition("run_failed", "job:daily_ledger", day, "critical", f"failed {day}", "why")],
                         frozenset({"run_failed"}))

    with WebhookReceiver() as hook:
        sender = Sender(AlertSettings(webhook_url=hook.url("/hook")), FAST)
        first = ledger.evaluate(home / "warehouse.duckdb", sender, NOW, failed(date(2026, 11, 4)))
        assert "run_failed" in {a.kind for a in first.opened}
        # the next day's run fails too: the same incident, no second alert
        assert ledger.evaluate(home / "warehouse.duckdb", sender, NOW + timedelta(days=1),
                               failed(date(2026, 11, 5))).opened == []
        # an evaluation that did not look at runs leaves it open
        assert ledger.evaluate(home / "warehouse.duckdb", sender, NOW + timedelta(days=1)).resolved == []
        cleared = ledger.evaluate(home / "warehouse.duckdb", sender, NOW + timedelta(days=1, hours=1),
                                  Judgement(judged=frozenset({"run_failed"})))
    assert [a.kind for a in cleared.resolved] == ["run_failed"]
    assert [p.body["event"] for p in hook.posts if p.body["kind"] == "run_failed"] == ["opened", "resolved"]
    assert rows(home, "SELECT period_start, status FROM alerts WHERE kind = 'run_failed'") == [
        (date(2026, 11, 4), "resolved")]


def test_without_channels_alerts_are_recorded_and_a_channel_added_later_hears_of_the_open_ones(home):
    quiet = ledger.evaluate(home / "warehouse.duckdb", Sender(AlertSettings(), FAST), NOW)
    assert len(quiet.opened) == 5 and quiet.deliveries == []
    assert rows(home, "SELECT count(*), count(first_sent_at) FROM alerts") == [(5, 0)]
    with WebhookReceiver() as hook:
        ledger.evaluate(home / "warehouse.duckdb", Sender(AlertSettings(webhook_url=hook.url("/h")), FAST),
                        NOW + timedelta(minutes=1))
    assert len(hook.posts) == 5 and rows(home, "SELECT count(first_sent_at) FROM alerts") == [(5,)]


def test_the_budget_alert_amount_is_the_one_in_the_table(home):
    assert rows(home, "SELECT spend_usd FROM budget_status WHERE budget_id = 'key:k1/day' AND is_current") == [
        (Decimal(1),)]
