"""The simulated gateway's price list, in new-api's own terms (ratios) and as an effective-dated CSV.

new-api bills a token-priced call as

    units = round((uncached + cache_read * cache_ratio + cache_write * cache_creation_ratio
                   + completion * completion_ratio) * model_ratio * group_ratio)

(the `× 2 / 1e6 × 500 000` of the USD formula cancels out: model_ratio 1 is $2 per 1M input tokens and
500 000 units are 1 USD), and a per-call model as `round(model_price * group_ratio * 500 000)` units.
Every ratio here is exact in decimal, so `prices_csv()` can state prices with at most six decimals
that reproduce the billed amount to the unit, before rounding.

`glm-4.6` is billed by the gateway but deliberately missing from `prices_csv()`: the model a real
price table forgot. `gpt-4o-mini` gets cheaper in the middle of the simulated period.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal

from pipelines.lib.prices.tables import PRICE_COLUMNS

UNITS_PER_USD = 500_000
GROUP = "default"
GROUP_RATIO = Decimal("0.8")  # CometAPI's default 20 % discount
FIRST_EFFECTIVE = date(2024, 1, 1)
UNPRICED_MODEL = "glm-4.6"
PRICE_CHANGE_MODEL = "gpt-4o-mini"
PRICE_CHANGE_NEW_RATIO = Decimal("0.06")

# The simulator's price list is a prices CSV in the project's own format.
PRICE_CSV_COLUMNS = PRICE_COLUMNS

# Integer scales that make every ratio product exact (asserted in ModelPrice.__post_init__).
_TOKEN_SCALE = 10_000  # applied to the per-token weights (cache_ratio, completion_ratio, ...)
_MULT_SCALE = 1_000_000  # applied to model_ratio * group_ratio
_DENOM = _TOKEN_SCALE * _MULT_SCALE


@dataclass(frozen=True)
class ModelPrice:
    """One model as new-api prices it. `model_price` is set only for per-call models."""

    model: str
    endpoint: str
    response_model: str  # what the upstream answers with in `model` (often a dated snapshot)
    model_ratio: Decimal = Decimal(0)
    completion_ratio: Decimal = Decimal(0)
    cache_ratio: Decimal = Decimal(0)
    cache_creation_ratio: Decimal = Decimal(1)
    model_price: Decimal | None = None
    anthropic: bool = False
    reasoning: bool = False

    def __post_init__(self) -> None:
        if self.per_call:
            return
        for ratio in (self.cache_ratio, self.cache_creation_ratio, self.completion_ratio):
            if (ratio * _TOKEN_SCALE) % 1:
                raise ValueError(f"{self.model}: ratio {ratio} is not exact at scale {_TOKEN_SCALE}")
        if (self.model_ratio * GROUP_RATIO * _MULT_SCALE) % 1:
            raise ValueError(f"{self.model}: model_ratio {self.model_ratio} is not exact at scale {_MULT_SCALE}")

    @property
    def per_call(self) -> bool:
        return self.model_price is not None

    @property
    def billing_category(self) -> str:
        return "per_call" if self.per_call else "token"

    # --- integer billing -------------------------------------------------------------------
    @property
    def weights(self) -> tuple[int, int, int, int]:
        """Scaled weights of (uncached prompt, cache read, cache write, completion) tokens."""
        return (
            _TOKEN_SCALE,
            int(self.cache_ratio * _TOKEN_SCALE),
            int(self.cache_creation_ratio * _TOKEN_SCALE),
            int(self.completion_ratio * _TOKEN_SCALE),
        )

    @property
    def multiplier(self) -> int:
        return int(self.model_ratio * GROUP_RATIO * _MULT_SCALE)

    def token_units(self, uncached, cache_read, cache_write, completion):
        """Billed units, round half up, at least 1. Works on ints and on int64 numpy arrays alike."""
        w_in, w_read, w_write, w_out = self.weights
        weighted = uncached * w_in + cache_read * w_read + cache_write * w_write + completion * w_out
        numerator = weighted * self.multiplier
        units = (2 * numerator + _DENOM) // (2 * _DENOM)
        if isinstance(units, int):
            return max(1, units)
        return units.clip(min=1)

    def call_units(self) -> int:
        return int((self.model_price * GROUP_RATIO * UNITS_PER_USD).to_integral_value())

    # --- USD per 1M tokens, before the group ratio (what a price table states) -----------------
    @property
    def input_usd_per_mtok(self) -> Decimal:
        return self.model_ratio * 2

    @property
    def output_usd_per_mtok(self) -> Decimal:
        return self.input_usd_per_mtok * self.completion_ratio

    @property
    def cache_read_usd_per_mtok(self) -> Decimal:
        return self.input_usd_per_mtok * self.cache_ratio

    @property
    def cache_write_usd_per_mtok(self) -> Decimal:
        return self.input_usd_per_mtok * self.cache_creation_ratio

    def other(self) -> dict:
        """The ratio part of the gateway ledger's `other` field."""
        if self.per_call:
            return {
                "model_ratio": 0,
                "group_ratio": json_number(GROUP_RATIO),
                "completion_ratio": 0,
                "model_price": json_number(self.model_price),
            }
        other = {
            "model_ratio": json_number(self.model_ratio),
            "group_ratio": json_number(GROUP_RATIO),
            "completion_ratio": json_number(self.completion_ratio),
            "cache_tokens": 0,
            "cache_ratio": json_number(self.cache_ratio),
            "model_price": -1,
        }
        if self.anthropic:
            other["cache_creation_tokens"] = 0
            other["cache_creation_ratio"] = json_number(self.cache_creation_ratio)
            other["usage_semantic"] = "anthropic"
        return other


def json_number(value: Decimal) -> int | float:
    """4 rather than 4.0, as new-api's JSON shows integral ratios."""
    return int(value) if value == value.to_integral_value() else float(value)


D = Decimal
CATALOG: dict[str, ModelPrice] = {
    m.model: m
    for m in (
        ModelPrice("gpt-4o", "/v1/chat/completions", "gpt-4o-2024-08-06", D("1.25"), D(4), D("0.5")),
        ModelPrice("gpt-4o-mini", "/v1/chat/completions", "gpt-4o-mini-2024-07-18", D("0.075"), D(4), D("0.5")),
        ModelPrice("gpt-4.1-nano", "/v1/chat/completions", "gpt-4.1-nano-2025-04-14", D("0.05"), D(4), D("0.25")),
        ModelPrice("o4-mini", "/v1/responses", "o4-mini-2025-04-16", D("0.55"), D(4), D("0.25"), reasoning=True),
        ModelPrice(
            "claude-sonnet-4-20250514",
            "/v1/messages",
            "claude-sonnet-4-20250514",
            D("1.5"),
            D(5),
            D("0.1"),
            cache_creation_ratio=D("1.25"),
            anthropic=True,
        ),
        ModelPrice(UNPRICED_MODEL, "/v1/chat/completions", UNPRICED_MODEL, D("0.3"), D(4), D("0.2")),
        ModelPrice("mj_imagine", "/mj/submit/imagine", "mj_imagine", model_price=D("0.05")),
        ModelPrice("suno_music", "/suno/submit/music", "suno_music", model_price=D("0.10")),
        ModelPrice("kling_video", "/kling/v1/videos/text2video", "kling_video", model_price=D("0.35")),
    )
}


def price_change_date(start: date, days: int) -> date:
    """First reporting day on which gpt-4o-mini's new, lower model_ratio applies."""
    return start + timedelta(days=days // 2)


def price_at(model: str, day: date, start: date, days: int) -> ModelPrice:
    """The price in force on reporting `day` for a simulation of `days` days from `start`."""
    price = CATALOG[model]
    if model == PRICE_CHANGE_MODEL and day >= price_change_date(start, days):
        return replace(price, model_ratio=PRICE_CHANGE_NEW_RATIO)
    return price


def current_catalog(start: date, days: int) -> dict[str, ModelPrice]:
    """Every model at the latest price version (what /api/models shows)."""
    last = start + timedelta(days=max(days - 1, 0))
    return {model: price_at(model, max(last, price_change_date(start, days)), start, days) for model in CATALOG}


def price_versions(start: date, days: int) -> list[dict]:
    """The simulator's own price table: one dict per version, keyed by PRICE_CSV_COLUMNS.

    Prices are Decimal USD before the group ratio; `gateway_ratio` is the group ratio;
    `effective_to` is exclusive, None when open. glm-4.6 is left out on purpose.
    """
    first = min(FIRST_EFFECTIVE, start)
    change = price_change_date(start, days)
    rows = []
    for model in CATALOG:
        if model == UNPRICED_MODEL:
            continue
        spans = [(first, None)]
        if model == PRICE_CHANGE_MODEL:
            spans = [(first, change), (change, None)]
        for effective_from, effective_to in spans:
            rows.append(_version_row(price_at(model, effective_from, start, days), effective_from, effective_to))
    return rows


def _version_row(price: ModelPrice, effective_from: date, effective_to: date | None) -> dict:
    token = not price.per_call
    return {
        "model": price.model,
        "billing_category": price.billing_category,
        "input_usd_per_mtok": price.input_usd_per_mtok if token else None,
        "output_usd_per_mtok": price.output_usd_per_mtok if token else None,
        "cache_read_usd_per_mtok": price.cache_read_usd_per_mtok if token else None,
        "cache_write_usd_per_mtok": price.cache_write_usd_per_mtok if token else None,
        "per_call_usd": None if token else price.model_price,
        "gateway_ratio": GROUP_RATIO,
        "effective_from": effective_from,
        "effective_to": effective_to,
        "source": "simulator",
    }


def prices_csv(start: date, days: int) -> str:
    """`price_versions()` as CSV text with the header of config/prices.csv."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PRICE_CSV_COLUMNS)
    for row in price_versions(start, days):
        writer.writerow([_csv_cell(row[column]) for column in PRICE_CSV_COLUMNS])
    return out.getvalue()


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.quantize(Decimal("0.000001")).normalize(), "f")
        return text
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
