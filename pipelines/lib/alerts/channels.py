"""One notification to one channel, retried with backoff: Slack-compatible webhook, JSON webhook, e-mail.

- `slack`: an incoming webhook (Slack, Mattermost, Rocket.Chat and others take the same body):
  `POST {"text": "..."}` as JSON.
- `webhook`: `POST` of the notification as a JSON object (`Message.payload()`: event, alert_id,
  kind, scope, severity, summary, detail, period, threshold, times, and `text`).
- `email`: SMTP, upgraded with STARTTLS unless switched off, login when a user is set, one message
  to every recipient.

Retries: `tenacity` (exponential backoff with jitter), on what may pass: no answer, a timeout, a
dropped connection, HTTP 429 and 5xx, SMTP 4xx replies. Not on what will not: HTTP 4xx, SMTP 5xx
(a refused login or recipient), a certificate the server cannot prove. `send()` never raises: it
returns a `Delivery` whose `error` is one line that names the channel, never its URL or password
(a webhook URL is its own credential); the URLs are also masked in the HTTP library's log records.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import httpx
import tenacity

from pipelines.lib import clock
from pipelines.lib.alerts.config import AlertSettings, SmtpSettings
from pipelines.lib.cometapi.http import USER_AGENT, protect_secrets
from pipelines.lib.redact import redact

LABELS = {"slack": "Slack webhook", "webhook": "JSON webhook", "email": "e-mail"}


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard one evaluation tries one note on one channel."""

    attempts: int = 3
    initial_delay_s: float = 2.0
    max_delay_s: float = 30.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"DeliveryPolicy.attempts must be at least 1, got {self.attempts}")
        if min(self.initial_delay_s, self.max_delay_s) < 0 or self.timeout_s <= 0:
            raise ValueError("DeliveryPolicy delays must not be negative, and the timeout must be positive")


@dataclass(frozen=True)
class Message:
    """What a note says; `event` is opened, resolved or test."""

    event: str
    summary: str
    detail: str
    severity: str = "info"
    alert_id: str | None = None
    kind: str | None = None
    scope: str | None = None
    period_start: date | None = None
    period_end: date | None = None
    threshold_pct: float | None = None
    opened_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def title(self) -> str:
        tag = {"opened": self.severity.upper(), "resolved": "RESOLVED", "test": "TEST"}.get(self.event, self.event)
        return f"[{tag}] {self.summary}"

    @property
    def text(self) -> str:
        lines = [self.title, "", self.detail]
        if self.alert_id:
            period = str(self.period_start) + ("" if self.period_end in (None, self.period_start)
                                               else f" .. {self.period_end}")
            lines += ["", f"alert {self.alert_id} | {self.kind} | {self.scope} | period {period}"]
        return "\n".join(lines)

    def payload(self) -> dict:
        """The generic webhook's JSON object."""
        def iso(value):
            return None if value is None else value.isoformat()

        return {"source": "comet-ledger", "event": self.event, "alert_id": self.alert_id, "kind": self.kind,
                "scope": self.scope, "severity": self.severity, "summary": self.summary, "detail": self.detail,
                "period_start": iso(self.period_start), "period_end": iso(self.period_end),
                "threshold_pct": self.threshold_pct, "opened_at": iso(self.opened_at),
                "resolved_at": iso(self.resolved_at), "text": self.text}

    def slack_payload(self) -> dict:
        return {"text": f"*{self.title}*\n{self.detail}" + (f"\n_alert {self.alert_id}_" if self.alert_id else "")}


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None


class DeliveryError(Exception):
    """A failed try; `retriable` says whether another could pass. str() is one line without secrets."""

    def __init__(self, message: str, retriable: bool):
        super().__init__(message)
        self.retriable = retriable


@dataclass
class Sender:
    """Sends notes to the configured channels of `settings` under `policy`; `sleep` is injectable."""

    settings: AlertSettings
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        protect_secrets(*(u for u in (self.settings.slack_url, self.settings.webhook_url) if u))

    @property
    def channels(self) -> list[str]:
        return self.settings.channels

    def send(self, channel: str, message: Message) -> Delivery:
        """Deliver `message` on `channel`, retrying with backoff; never raises."""
        attempt = {"n": 0}

        def once() -> None:
            attempt["n"] += 1
            self._once(channel, message)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.attempts),
            wait=tenacity.wait_exponential(multiplier=self.policy.initial_delay_s, max=self.policy.max_delay_s)
            + tenacity.wait_random(0, self.policy.initial_delay_s),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.retriable),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            retrying(once)
        except DeliveryError as exc:
            return Delivery(channel, False, attempt["n"], self._clean(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a note must never take the caller down
            return Delivery(channel, False, attempt["n"], self._clean(f"{LABELS.get(channel, channel)}: "
                                                                       f"{type(exc).__name__}"))
        return Delivery(channel, True, attempt["n"])

    def _once(self, channel: str, message: Message) -> None:
        if channel == "slack" and self.settings.slack_url:
            _post_json(LABELS[channel], self.settings.slack_url, message.slack_payload(), self.policy.timeout_s)
        elif channel == "webhook" and self.settings.webhook_url:
            _post_json(LABELS[channel], self.settings.webhook_url, message.payload(), self.policy.timeout_s)
        elif channel == "email" and self.settings.smtp:
            _send_mail(self.settings.smtp, message, self.policy.timeout_s)
        else:
            raise DeliveryError(f"{channel}: the channel is not configured", retriable=False)

    def _clean(self, text: str) -> str:
        return " ".join(redact(text, self.settings.secrets()).split())


def _post_json(label: str, url: str, body: dict, timeout_s: float) -> None:
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                          headers={"User-Agent": USER_AGENT}) as client:
            response = client.post(url, json=body)
    except httpx.TimeoutException:
        raise DeliveryError(f"{label}: no answer within {timeout_s:g} s", retriable=True) from None
    except httpx.TransportError as exc:
        raise DeliveryError(f"{label}: could not reach the server ({type(exc).__name__})", retriable=True) from None
    if 200 <= response.status_code < 300:
        return
    said = " ".join(response.text[:120].split())
    raise DeliveryError(f"{label}: HTTP {response.status_code}" + (f": {said}" if said else ""),
                        retriable=response.status_code == 429 or response.status_code >= 500)


def _send_mail(smtp: SmtpSettings, message: Message, timeout_s: float) -> None:
    mail = EmailMessage()
    mail["Subject"] = f"comet-ledger: {message.title}"
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(smtp.recipients)
    mail["Date"] = format_datetime(clock.now())
    mail["Message-ID"] = make_msgid(domain="comet-ledger")
    mail.set_content(message.text)
    label = LABELS["email"]
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s, local_hostname="comet-ledger") as server:
            server.ehlo()
            if smtp.starttls:
                server.starttls(context=ssl.create_default_context(cafile=smtp.ca_file))
                server.ehlo()
            if smtp.user:
                server.login(smtp.user, smtp.password or "")
            server.send_message(mail)
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryError(f"{label}: the server refused every recipient", retriable=False) from None
    except smtplib.SMTPResponseException as exc:
        said = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise DeliveryError(f"{label}: the server answered {exc.smtp_code} {' '.join(said.split())[:120]}",
                            retriable=400 <= exc.smtp_code < 500) from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryError(f"{label}: the server does not offer STARTTLS (set COMET_LEDGER_ALERT_SMTP_STARTTLS=false "
                            "only for a server on a trusted network)", retriable=False) from None
    except smtplib.SMTPServerDisconnected:
        raise DeliveryError(f"{label}: the server closed the connection", retriable=True) from None
    except smtplib.SMTPException as exc:
        raise DeliveryError(f"{label}: {type(exc).__name__}", retriable=False) from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"{label}: TLS failed ({exc.reason or type(exc).__name__})", retriable=False) from None
    except TimeoutError:
        raise DeliveryError(f"{label}: no answer within {timeout_s:g} s", retriable=True) from None
    except OSError as exc:
        raise DeliveryError(f"{label}: could not reach the server ({type(exc).__name__})", retriable=True) from None


def probe_message(host: str | None = None) -> Message:
    """What `comet-ledger alerts test` sends."""
    return Message(event="test", severity="info", summary="comet-ledger alerts reach this channel",
                   detail=f"A test message from comet-ledger{' on ' + host if host else ''}, sent at "
                          f"{clock.now():%Y-%m-%d %H:%M:%S} UTC. Budget, anomaly, run-failure, stale-data and "
                          "smoke-test alerts will arrive here.")


def send_test(sender: Sender, host: str | None = None) -> list[Delivery]:
    message = probe_message(host)
    return [sender.send(channel, message) for channel in sender.channels]
