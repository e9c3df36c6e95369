"""The alert channels as a Dagster resource: the webhook URLs and the SMTP password arrive as `EnvVar`
(they are secrets), the rest from the validated settings (`pipelines/lib/alerts/config.py`)."""

from __future__ import annotations

import dagster as dg

from pipelines.lib.alerts.channels import DeliveryPolicy, Sender
from pipelines.lib.alerts.config import SLACK_URL, SMTP_PASSWORD, WEBHOOK_URL, AlertSettings, SmtpSettings
from pipelines.lib.settings import Settings


class AlertChannels(dg.ConfigurableResource):
    """Where alerts go: none, some or all of a Slack-compatible webhook, a JSON webhook, e-mail."""

    slack_url: str | None = None
    webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_ca_file: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    smtp_to: list[str] = []
    attempts: int = 3
    initial_delay_s: float = 2.0
    max_delay_s: float = 30.0
    timeout_s: float = 10.0

    def alert_settings(self) -> AlertSettings:
        smtp = None
        if self.smtp_host:
            smtp = SmtpSettings(host=self.smtp_host, port=self.smtp_port, sender=self.smtp_from or "",
                                recipients=tuple(self.smtp_to), starttls=self.smtp_starttls, ca_file=self.smtp_ca_file,
                                user=self.smtp_user, password=self.smtp_password)
        return AlertSettings(slack_url=self.slack_url or None, webhook_url=self.webhook_url or None, smtp=smtp)

    def sender(self) -> Sender:
        return Sender(self.alert_settings(), DeliveryPolicy(attempts=self.attempts, initial_delay_s=self.initial_delay_s,
                                                            max_delay_s=self.max_delay_s, timeout_s=self.timeout_s))


def alert_channels(settings: Settings) -> AlertChannels:
    """The resource for `settings`: each secret as the `EnvVar` it came from, when it is set."""
    alerts, smtp = settings.alerts, settings.alerts.smtp
    return AlertChannels(
        slack_url=dg.EnvVar(SLACK_URL) if alerts.slack_url else None,
        webhook_url=dg.EnvVar(WEBHOOK_URL) if alerts.webhook_url else None,
        smtp_host=smtp.host if smtp else None,
        smtp_port=smtp.port if smtp else 587,
        smtp_starttls=smtp.starttls if smtp else True,
        smtp_ca_file=smtp.ca_file if smtp else None,
        smtp_user=smtp.user if smtp else None,
        smtp_password=dg.EnvVar(SMTP_PASSWORD) if smtp and smtp.password else None,
        smtp_from=smtp.sender if smtp else None,
        smtp_to=list(smtp.recipients) if smtp else [],
    )
