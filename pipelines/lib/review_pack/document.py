"""The pack's words and tables, as a small document model that both renderers (Markdown, HTML)
draw from, so the two files always say the same thing.

Formatting rules: money is USD with 6 decimals (DECIMAL figures exactly as the warehouse holds
them; DOUBLE estimates rounded half-even); a total row is the warehouse's own sum; n/a marks a
figure nobody knows (never 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

MICRO = Decimal("0.000001")
NA = "n/a"


# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: tuple[str, ...] | None = None
    numeric: frozenset[int] = frozenset()  # right-aligned columns
    empty: str = "No rows."
    prose: frozenset[int] = frozenset()  # sentences: kept wide enough to read, never a word per line
    # Columns of long unbroken evidence (lists of ids): shortened in the table, whole in `full_text_in`
    # (a file of the pack) and, in HTML, in a collapsible block.
    long_text: frozenset[int] = frozenset()
    full_text_in: str | None = None


@dataclass(frozen=True)
class Image:
    file: str
    alt: str


Block = Paragraph | Bullets | Table | Image


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]
    level: int = 2


@dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...] = field(default_factory=tuple)


# --- formatting --------------------------------------------------------------------------------


def usd(value: Decimal | float | int | None) -> str:
    """6 decimals; a DOUBLE goes through its shortest repr, so the text never depends on float noise."""
    if value is None:
        return NA
    amount = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    rounded = amount.quantize(MICRO, rounding=ROUND_HALF_EVEN)
    return f"{rounded.copy_abs() if rounded.is_zero() else rounded:f}"


def dollars(value: Decimal | float | int | None) -> str:
    text = usd(value)
    if text == NA:
        return NA
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def count(value: int | None) -> str:
    return NA if value is None else f"{int(value):,}"


def pct(value: float | Decimal | None) -> str:
    return NA if value is None else f"{float(value):.2f} %"


def share(part: Decimal | float | None, whole: Decimal | float | None) -> str:
    if part is None or not whole:
        return NA
    return pct(100 * float(part) / float(whole))


SHORT_TEXT = 40  # characters of a long_text cell shown before it is cut


def shortened(value: str) -> str:
    """The start of a long cell (a list of ids), cut at SHORT_TEXT characters."""
    return value if len(value) <= SHORT_TEXT else value[:SHORT_TEXT].rstrip(",; ") + "…"


def day(value: date | None) -> str:
    return NA if value is None else value.isoformat()


def instant(value: datetime | None) -> str:
    """UTC, to the second: `2026-11-27 03:31:42 UTC`."""
    if value is None:
        return NA
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def text(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, Decimal):
        return usd(value)
    if isinstance(value, float):
        return usd(value)
    if isinstance(value, datetime):
        return instant(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
