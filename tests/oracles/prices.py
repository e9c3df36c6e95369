"""The price snapshot rule, for one model name: the oracle for `sql/core/requests.sql`, where the rule
is (`config_tables.SNAPSHOT_SUFFIX_REGEX` is its pattern)."""

from __future__ import annotations

import re
from collections.abc import Collection

from pipelines.lib.prices.tables import SNAPSHOT_SUFFIX_REGEX

_SNAPSHOT = re.compile(r"^(?P<base>.+)" + SNAPSHOT_SUFFIX_REGEX)


def base_model(name: str) -> str | None:
    """`name` without its one trailing snapshot suffix (-YYYY-MM-DD or -YYYYMMDD); None if it has none."""
    match = _SNAPSHOT.match(name)
    return match.group("base") if match else None


def priced_model(name: str, price_models: Collection[str]) -> str | None:
    """The price-table model a request for `name` is priced as: exact, else its base model, else None."""
    if name in price_models:
        return name
    base = base_model(name)
    return base if base is not None and base in price_models else None
