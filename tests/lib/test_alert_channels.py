"""The alert channels against real receivers on 127.0.0.1: what arrives, how often, and what a failing
receiver (down, HTTP 500, too slow, a refused login) costs: retries with backoff, then a recorded
failure, never an exception."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.lib.alerts.channels import DeliveryPolicy, Message, Sender, send_test
from pipelines.lib.alerts.config import AlertSettings, SmtpSettings, load_alert_settings
from pipelines.lib.settings import ConfigError
from receivers import SmtpReceiver, WebhookReceiver, free_port

FAST = DeliveryPolicy(attempts=3, initial_delay_s=0.01, max_delay_s=0.05, timeout_s=2.0)
MESSAGE = Message(event="opened", severity="critical", summary="Budget team team-a (month) exceeded",
                  detail="Spend $120.00 of $100.00.", alert_id="0123456789abcdef", kind="budget_spend",
                  scope="team:team-a/month", period_start=date(2026, 11, 1), period_end=date(2026, 11, 30),
                  threshold_pct=100.0)


def smtp(receiver: SmtpReceiver, **changes) -> SmtpSettings:
    return SmtpSettings(**{"host": "127.0.0.1", "port": receiver.port, "sender": "ledger@example.org",
                           "recipients": ("finance@example.org", "ops@example.org"), "starttls": False, **changes})


def test_every_channel_receives_the_note_once_with_its_content():
    with WebhookReceiver() as slack, WebhookReceiver() as hook, SmtpReceiver() as mail:
        sender = Sender(AlertSettings(slack_url=slack.url("/services/T0/B0/x"), webhook_url=hook.url("/hook"),
                                      smtp=smtp(mail)), FAST)
        results = [sender.send(channel, MESSAGE) for channel in sender.channels]
    assert [(d.channel, d.ok, d.attempts) for d in results] == [("slack", True, 1), ("webhook", True, 1),
                                                               ("email", True, 1)]
    [post] = slack.posts
    assert post.path == "/services/T0/B0/x" and set(post.body) == {"text"}
    assert post.body["text"].startswith("*[CRITICAL] Budget team team-a (month) exceeded*\nSpend $120.00 of $100.00.")
    [post] = hook.posts
    assert post.headers["Content-Type"] == "application/json"
    assert {k: post.body[k] for k in ("source", "event", "alert_id", "kind", "scope", "severity", "period_start",
                                      "period_end", "threshold_pct")} == {
        "source": "comet-ledger", "event": "opened", "alert_id": "0123456789abcdef", "kind": "budget_spend",
        "scope": "team:team-a/month", "severity": "critical", "period_start": "2026-11-01",
        "period_end": "2026-11-30", "threshold_pct": 100.0}
    [received] = mail.mails
    assert received.sender == "ledger@example.org"
    assert received.recipients == ["finance@example.org", "ops@example.org"]
    assert received.subject == "comet-ledger: [CRITICAL] Budget team team-a (month) exceeded"
    assert "Spend $120.00 of $100.00." in received.body and "alert 0123456789abcdef" in received.body


def test_mail_over_starttls_with_a_login(tmp_path):
    trustme = pytest.importorskip("trustme")  # a dev dependency: always there under `make test`
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with SmtpReceiver(tls=(tmp_path / "server.pem", tmp_path / "server.pem"), login=("ledger", "s3cret-pw")) as mail:
        good = Sender(AlertSettings(smtp=smtp(mail, starttls=True, ca_file=str(tmp_path / "ca.pem"), user="ledger",
                                              password="s3cret-pw")), FAST)
        assert good.send("email", MESSAGE).ok
        wrong = Sender(AlertSettings(smtp=smtp(mail, starttls=True, ca_file=str(tmp_path / "ca.pem"), user="ledger",
                                               password="wrong-pw")), FAST)
        refused = wrong.send("email", MESSAGE)
        plain = Sender(AlertSettings(smtp=smtp(mail, starttls=False, user="ledger", password="s3cret-pw")), FAST)
        untls = plain.send("email", MESSAGE)
        untrusted = Sender(AlertSettings(smtp=smtp(mail, starttls=True)), FAST).send("email", MESSAGE)
    assert len(mail.mails) == 1
    # a refused login is not retried, and says so without the password
    assert (refused.ok, refused.attempts) == (False, 1)
    assert refused.error.startswith("e-mail: the server answered 535") and "pw" not in refused.error
    assert not untls.ok and untls.attempts == 1  # the server requires STARTTLS: refused, not retried
    assert (untrusted.ok, untrusted.attempts) == (False, 1) and untrusted.error.startswith("e-mail: TLS failed")


def test_a_failing_receiver_is_retried_with_backoff_then_succeeds():
    waits: list[float] = []
    with WebhookReceiver(answers=[500, 503]) as hook:
        sender = Sender(AlertSettings(webhook_url=hook.url("/hook")), FAST, sleep=waits.append)
        delivery = sender.send("webhook", MESSAGE)
    assert (delivery.ok, delivery.attempts, hook.requests, len(hook.posts)) == (True, 3, 3, 1)
    assert len(waits) == 2 and all(0 < w <= FAST.max_delay_s + FAST.initial_delay_s for w in waits)


@pytest.mark.parametrize("case", ["http_500", "down", "timeout", "http_404"])
def test_a_receiver_that_keeps_failing_gives_a_one_line_failure_and_no_exception(case):
    waits: list[float] = []
    policy = DeliveryPolicy(attempts=3, initial_delay_s=0.01, max_delay_s=0.05, timeout_s=0.3)
    if case == "down":
        url = f"http://127.0.0.1:{free_port()}/services/T0/B0/SECRETPART"
        delivery = Sender(AlertSettings(slack_url=url), policy, sleep=waits.append).send("slack", MESSAGE)
        requests = None
    else:
        answers = {"http_500": [500] * 5, "timeout": [], "http_404": [404]}[case]
        with WebhookReceiver(answers=answers, delay_s=1.0 if case == "timeout" else 0.0) as hook:
            url = hook.url("/services/T0/B0/SECRETPART")
            delivery = Sender(AlertSettings(slack_url=url), policy, sleep=waits.append).send("slack", MESSAGE)
            requests = hook.requests
    expected = {"http_500": "Slack webhook: HTTP 500: server error", "down": "Slack webhook: could not reach the "
                "server (ConnectError)", "timeout": "Slack webhook: no answer within 0.3 s",
                "http_404": "Slack webhook: HTTP 404"}[case]
    assert not delivery.ok and delivery.error.startswith(expected), delivery.error
    assert "SECRETPART" not in delivery.error and "127.0.0.1" not in delivery.error
    if case == "http_404":  # a client error will not pass on a retry
        assert delivery.attempts == 1 and requests == 1 and waits == []
    else:
        assert delivery.attempts == 3 and len(waits) == 2
        assert requests in (None, 3)


def test_the_test_message_goes_to_every_configured_channel_and_none_without_them():
    with WebhookReceiver() as slack, SmtpReceiver() as mail:
        results = send_test(Sender(AlertSettings(slack_url=slack.url("/s"), smtp=smtp(mail)), FAST), host="ops-1")
    assert [(d.channel, d.ok) for d in results] == [("slack", True), ("email", True)]
    assert slack.posts[0].body["text"].startswith("*[TEST] comet-ledger alerts reach this channel*")
    assert "from comet-ledger on ops-1" in mail.mails[0].body
    assert send_test(Sender(AlertSettings(), FAST)) == []


# --- configuration ---------------------------------------------------------------------------------

def settings(**env: str) -> AlertSettings:
    return load_alert_settings(lambda name: env.get(name))


def test_channels_from_the_environment():
    got = settings(COMET_LEDGER_ALERT_SLACK_URL="https://hooks.example.com/services/T/B/X",
                   COMET_LEDGER_ALERT_SMTP_HOST="smtp.example.com", COMET_LEDGER_ALERT_SMTP_FROM="a@example.com",
                   COMET_LEDGER_ALERT_SMTP_TO="b@example.com, c@example.com", COMET_LEDGER_ALERT_SMTP_USER="a",
                   COMET_LEDGER_ALERT_SMTP_PASSWORD="pw-123")
    assert got.channels == ["slack", "email"]
    assert (got.smtp.port, got.smtp.starttls, got.smtp.recipients) == (587, True, ("b@example.com", "c@example.com"))
    assert got.secrets() == ["https://hooks.example.com/services/T/B/X", "pw-123"]
    assert "pw-123" not in repr(got) and "hooks.example.com" not in repr(got)
    assert settings().channels == []


BAD_SETTINGS = [
    ({"COMET_LEDGER_ALERT_SLACK_URL": "hooks.example.com/services/T/B/SECRETX"}, "COMET_LEDGER_ALERT_SLACK_URL is not"),
    ({"COMET_LEDGER_ALERT_WEBHOOK_URL": "ftp://example.com/SECRETX"}, "COMET_LEDGER_ALERT_WEBHOOK_URL is not"),
    ({"COMET_LEDGER_ALERT_WEBHOOK_URL": "https://example.com:port/SECRETX"}, "COMET_LEDGER_ALERT_WEBHOOK_URL is not"),
    ({"COMET_LEDGER_ALERT_SMTP_TO": "a@example.com"}, "COMET_LEDGER_ALERT_SMTP_TO is set but COMET_LEDGER_ALERT_SMTP_HOST"),
    ({"COMET_LEDGER_ALERT_SMTP_HOST": "smtp.example.com", "COMET_LEDGER_ALERT_SMTP_TO": "a@example.com"},
     "COMET_LEDGER_ALERT_SMTP_FROM is required"),
    ({"COMET_LEDGER_ALERT_SMTP_HOST": "smtp.example.com", "COMET_LEDGER_ALERT_SMTP_FROM": "a@example.com",
      "COMET_LEDGER_ALERT_SMTP_TO": "a@example.com", "COMET_LEDGER_ALERT_SMTP_PORT": "99999"},
     "COMET_LEDGER_ALERT_SMTP_PORT='99999' must be a port number"),
    ({"COMET_LEDGER_ALERT_SMTP_HOST": "smtp.example.com", "COMET_LEDGER_ALERT_SMTP_FROM": "a@example.com",
      "COMET_LEDGER_ALERT_SMTP_TO": "a@example.com", "COMET_LEDGER_ALERT_SMTP_PASSWORD": "SECRETX"},
     "COMET_LEDGER_ALERT_SMTP_PASSWORD is set but COMET_LEDGER_ALERT_SMTP_USER is not"),
    ({"COMET_LEDGER_ALERT_SMTP_HOST": "smtp.example.com", "COMET_LEDGER_ALERT_SMTP_FROM": "a@example.com",
      "COMET_LEDGER_ALERT_SMTP_TO": "not-an-address"}, "COMET_LEDGER_ALERT_SMTP_TO: 'not-an-address' is not"),
]


@pytest.mark.parametrize("env, says", BAD_SETTINGS, ids=[s for _, s in BAD_SETTINGS])
def test_a_bad_channel_setting_is_one_line_naming_the_variable_never_the_secret(env, says):
    with pytest.raises(ConfigError) as err:
        settings(**env)
    assert str(err.value).startswith(says) and "\n" not in str(err.value)
    assert "SECRETX" not in str(err.value)
