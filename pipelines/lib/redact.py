"""Keep secrets out of every text the pipeline emits.

The query service takes the API key as a URL parameter (`?key=sk-...`), so any URL, exception
or log line may carry it. `redact()` is applied to every message that leaves `lib/cometapi`,
and `Redactor` wraps known secret values for everything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# key=..., token=..., access_token=... in a URL or a message, whatever the secret looks like.
_PARAM = re.compile(r"(?i)\b(key|api_key|token|access_token)=([^&\s'\"<>]+)")
# Authorization headers quoted in a message.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# Things that look like CometAPI / OpenAI style keys even without a label.
_SK = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")

MASK = "***"


def mask(secret: str) -> str:
    """`sk-…abcd`: enough to tell two keys apart, not enough to use one."""
    if len(secret) <= 8:
        return MASK
    prefix = "sk-" if secret.startswith("sk-") else ""
    return f"{prefix}…{secret[-4:]}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secret values and anything shaped like a credential from `text`."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _SK.sub(MASK, text)
