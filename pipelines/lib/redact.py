"""Keep secrets out of every text the pipeline emits.

The query service takes the API key as a URL parameter (`?key=sk-...`), so any URL, exception
or log line may carry it. `redact()` is applied to every message that leaves `lib/cometapi`,
and `Redactor` wraps known secret values for everything else.

Every configured secret is known to every redaction, whatever its shape: `remember()` records the
values this process was configured with (`settings.load_settings`, the Dagster resources and the
API clients call it), and `redact()` always masks them besides the ones it is given and the
credential-shaped patterns. So the query client masks the access token, the gateway client the
API key, and the raw text kept of a rejected line masks both even when they do not look like
`sk-...`. A value shorter than `MIN_SECRET_LENGTH` is not remembered: masking it would rewrite
ordinary words (the settings refuse such a credential).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

# key=..., token=..., access_token=... in a URL or a message, whatever the secret looks like.
_PARAM = re.compile(r"(?i)\b(key|api_key|token|access_token)=([^&\s'\"<>]+)")
# Authorization headers quoted in a message.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# Things that look like CometAPI / OpenAI style keys even without a label.
_SK = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")

MASK = "***"
MIN_SECRET_LENGTH = 8


def mask(secret: str) -> str:
    """`sk-…abcd`: enough to tell two keys apart, not enough to use one."""
    if len(secret) <= 8:
        return MASK
    prefix = "sk-" if secret.startswith("sk-") else ""
    return f"{prefix}…{secret[-4:]}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove the given and the remembered secret values, and anything shaped like a credential, from `text`."""
    for secret in sorted({s for s in secrets if s} | _REMEMBERED.values(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _SK.sub(MASK, text)


class _Remembered:
    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        if new - self._values:
            with self._lock:
                self._values = self._values | new

    def values(self) -> frozenset[str]:
        return self._values


_REMEMBERED = _Remembered()


def remember(*secrets: str | None) -> None:
    """Mask these values in every later `redact()` of this process (configured credentials)."""
    _REMEMBERED.add(s for s in secrets if s)


def held(holder: object, places: Iterable[str]) -> list[str]:
    """The values set at these attribute paths of `holder` (`alerts.smtp.password`), in order; a path
    through an unset part (no SMTP configured) holds nothing."""
    values = []
    for place in places:
        value = holder
        for name in place.split("."):
            value = getattr(value, name) if value is not None else None
        if value:
            values.append(value)
    return values


def remembered() -> tuple[str, ...]:
    """The remembered secrets, for a worker process to `remember()` them too."""
    return tuple(sorted(_REMEMBERED.values()))


class Redactor:
    """Known secret values plus the generic patterns, as one callable; its repr never shows them."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = {s for s in secrets if s}
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = tuple(self._secrets)
        return redact(text, secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message (and traceback text) through a `Redactor`.

    Attach it to the logger that creates the records (filters are not inherited by child loggers):
    third-party loggers such as `httpx` format full URLs, query string included, into their messages.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep its template, drop the arguments
            message = str(record.msg)
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


def install_log_filter(logger_names: Iterable[str], log_filter: logging.Filter) -> None:
    """Attach `log_filter` to each named logger once (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)
