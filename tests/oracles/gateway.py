"""The gateway ledger's rules over many records, row by row: the oracle for `gateway_ledger`'s table
functions (`number_repeats`, `dedupe_sorted`) and for what the warehouse sums per key-day."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from pipelines.lib.gateway.ledger import MONEY_TYPES, GatewayRecord


def number_repeats(records: Iterable[GatewayRecord]) -> list[GatewayRecord]:
    """Rows without a request id that look exactly alike, told apart: the 2nd, 3rd... get `-2`, `-3`...

    Rows of one source, in the order they came; rows with a request id are returned as they are.
    """
    seen: Counter[str] = Counter()
    out = []
    for record in records:
        if not record.has_request_id:
            seen[record.request_id] += 1
            if seen[record.request_id] > 1:
                record = replace(record, request_id=f"{record.request_id}-{seen[record.request_id]}")
        out.append(record)
    return out


def dedup_key(record: GatewayRecord) -> tuple:
    """A ledger row's identity: a consume row and its refund, or a task and its correction, may share a
    request_id and are distinct; the same row seen twice (paging overlap, a re-pull, the API and the
    CSV export) is one, whatever its `id` or `source`."""
    return (record.request_id, record.log_type, record.created_at, record.quota_units)


def dedupe(records: Iterable[GatewayRecord]) -> tuple[list[GatewayRecord], list[GatewayRecord]]:
    """(kept, duplicates), first occurrence kept, order preserved."""
    seen: set[tuple] = set()
    kept: list[GatewayRecord] = []
    duplicates: list[GatewayRecord] = []
    for record in records:
        key = dedup_key(record)
        (duplicates if key in seen else kept).append(record)
        seen.add(key)
    return kept, duplicates


class KeyDayTotal(NamedTuple):
    billed_usd: Decimal
    requests: int


def summarise(records: Iterable[GatewayRecord], zone: str = "UTC") -> dict[tuple[date, str | None], KeyDayTotal]:
    """Per (day in `zone`, key_name): what the query service's `daily_quota` should say for it, when
    the service's days are days in `zone`.

    `billed_usd` sums the money rows (consume incl. corrections, minus refunds; `billed_usd`
    already carries the sign); `requests` counts consume rows that are not corrections (a refunded
    call still counts; errors never do). Each row counts on its own day, so a refund on a later day
    lowers that day. Key-days without a money row are absent, as in `daily_quota`. Pass
    deduplicated records (`dedupe`).
    """
    tz = ZoneInfo(zone)
    totals: dict[tuple[date, str | None], KeyDayTotal] = {}
    for r in records:
        if r.log_type not in MONEY_TYPES:
            continue
        key = (r.created_at.astimezone(tz).date(), r.key_name)
        usd, count = totals.get(key, (Decimal("0.000000"), 0))
        totals[key] = KeyDayTotal(usd + r.billed_usd, count + r.is_request)
    return totals
