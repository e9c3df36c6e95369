"""The alert channels, from the environment: which are configured, and how to reach them.

| variable | default | meaning |
|---|---|---|
| `COMET_LEDGER_ALERT_SLACK_URL` | (none) | Slack-compatible incoming webhook URL (secret) |
| `COMET_LEDGER_ALERT_WEBHOOK_URL` | (none) | generic JSON webhook URL (secret) |
| `COMET_LEDGER_ALERT_SMTP_HOST` | (none) | SMTP server; set it to send e-mail |
| `COMET_LEDGER_ALERT_SMTP_PORT` | `587` | its port |
| `COMET_LEDGER_ALERT_SMTP_STARTTLS` | `true` | upgrade the connection with STARTTLS before logging in (`false`: plain) |
| `COMET_LEDGER_ALERT_SMTP_CA_FILE` | (system CAs) | PEM file of the CA that signed the server's certificate |
| `COMET_LEDGER_ALERT_SMTP_USER` | (none) | login name; no login when unset |
| `COMET_LEDGER_ALERT_SMTP_PASSWORD` | (none) | its password (secret); required with a user |
| `COMET_LEDGER_ALERT_SMTP_FROM` | (none) | sender address; required with a host |
| `COMET_LEDGER_ALERT_SMTP_TO` | (none) | recipients, comma-separated; required with a host |

A malformed value raises `ConfigError` naming the variable; a URL or password is never part of the
message (they are secrets: a webhook URL is its own credential).

The values are read, with every other variable, by pipelines/lib/settings.py (pydantic-settings);
the checks stay here, written by hand: most tie variables to each other (a host needs a sender and
recipients, a user a password, any of them a host) and name the one to fix in a fixed order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.lib.redact import held

SLACK_URL = "COMET_LEDGER_ALERT_SLACK_URL"
WEBHOOK_URL = "COMET_LEDGER_ALERT_WEBHOOK_URL"
SMTP_HOST = "COMET_LEDGER_ALERT_SMTP_HOST"
SMTP_PORT = "COMET_LEDGER_ALERT_SMTP_PORT"
SMTP_STARTTLS = "COMET_LEDGER_ALERT_SMTP_STARTTLS"
SMTP_CA_FILE = "COMET_LEDGER_ALERT_SMTP_CA_FILE"
SMTP_USER = "COMET_LEDGER_ALERT_SMTP_USER"
SMTP_PASSWORD = "COMET_LEDGER_ALERT_SMTP_PASSWORD"
SMTP_FROM = "COMET_LEDGER_ALERT_SMTP_FROM"
SMTP_TO = "COMET_LEDGER_ALERT_SMTP_TO"
# The channels' secrets: variable -> where AlertSettings keeps its value. pipelines/lib/settings.py
# folds them into SECRET_VARIABLES, the one list of secrets every redaction reads.
SECRET_VARIABLES = {SLACK_URL: "slack_url", WEBHOOK_URL: "webhook_url", SMTP_PASSWORD: "smtp.password"}
DEFAULT_SMTP_PORT = 587

_ADDRESS = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = True
    ca_file: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AlertSettings:
    """The configured channels; none configured is a valid state (alerts are recorded, not sent)."""

    slack_url: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    smtp: SmtpSettings | None = None

    @property
    def channels(self) -> list[str]:
        """The configured channel names, in delivery order."""
        return [name for name, on in (("slack", self.slack_url), ("webhook", self.webhook_url),
                                      ("email", self.smtp)) if on]

    def secrets(self) -> list[str]:
        return held(self, SECRET_VARIABLES.values())


def load_alert_settings(get: Callable[[str], str | None]) -> AlertSettings:
    """The channels from `get(variable)` (None when unset or blank); `ConfigError` on a bad value."""
    return AlertSettings(slack_url=_webhook(SLACK_URL, get(SLACK_URL)), webhook_url=_webhook(WEBHOOK_URL, get(WEBHOOK_URL)),
                         smtp=_smtp(get))


def _error(message: str) -> Exception:
    from pipelines.lib.settings import ConfigError

    return ConfigError(message)


def _webhook(name: str, raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in raw)):
        raise _error(f"{name} is not an http(s) URL with a host, like https://hooks.example.com/services/...; "
                     "the value is a secret and is not shown")
    return raw


def _smtp(get: Callable[[str], str | None]) -> SmtpSettings | None:
    host = get(SMTP_HOST)
    others = [n for n in (SMTP_PORT, SMTP_STARTTLS, SMTP_CA_FILE, SMTP_USER, SMTP_PASSWORD, SMTP_FROM, SMTP_TO) if get(n)]
    if host is None:
        if others:
            raise _error(f"{others[0]} is set but {SMTP_HOST} is not: set the SMTP server too, or unset the "
                         f"{SMTP_HOST.rsplit('_', 1)[0]}_* variables")
        return None
    if any(c.isspace() or c in "/@" for c in host):
        raise _error(f"{SMTP_HOST}={host!r} is not a host name or address")
    port_raw = get(SMTP_PORT) or str(DEFAULT_SMTP_PORT)
    if not (port_raw.isascii() and port_raw.isdigit() and 1 <= int(port_raw) <= 65535):
        raise _error(f"{SMTP_PORT}={port_raw!r} must be a port number from 1 to 65535")
    starttls_raw = (get(SMTP_STARTTLS) or "true").lower()
    if starttls_raw not in _TRUE + _FALSE:
        raise _error(f"{SMTP_STARTTLS}={starttls_raw!r} must be true or false")
    ca_file = get(SMTP_CA_FILE)
    if ca_file is not None and not Path(ca_file).expanduser().is_file():
        raise _error(f"{SMTP_CA_FILE}={ca_file!r} is not a file")
    sender = get(SMTP_FROM)
    if sender is None or not _ADDRESS.match(sender):
        raise _error(f"{SMTP_FROM}={sender!r} must be one e-mail address (required with {SMTP_HOST})"
                     if sender else f"{SMTP_FROM} is required with {SMTP_HOST}: the sender's e-mail address")
    to_raw = get(SMTP_TO)
    recipients = tuple(a.strip() for a in (to_raw or "").split(",") if a.strip())
    if not recipients:
        raise _error(f"{SMTP_TO} is required with {SMTP_HOST}: the recipients' addresses, comma-separated")
    for address in recipients:
        if not _ADDRESS.match(address):
            raise _error(f"{SMTP_TO}: {address!r} is not an e-mail address")
    user, password = get(SMTP_USER), get(SMTP_PASSWORD)
    if password is not None and user is None:
        raise _error(f"{SMTP_PASSWORD} is set but {SMTP_USER} is not: set the login name too")
    if user is not None and password is None:
        raise _error(f"{SMTP_USER} is set but {SMTP_PASSWORD} is not: set the password too")
    return SmtpSettings(host=host, port=int(port_raw), sender=sender, recipients=recipients,
                        starttls=starttls_raw in _TRUE, ca_file=str(Path(ca_file).expanduser().absolute()) if ca_file else None,
                        user=user, password=password)
