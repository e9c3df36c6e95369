"""CometAPI's public model catalog (`GET /api/models`) → daily snapshots in the lake.

The catalog states list prices (`pricing.input` / `output` in USD per 1M tokens, `per_request`,
`per_second`) with no dates and no cache prices, so the only
way to know when a price changed is to keep what it said each day. One snapshot a reporting day:

- `catalog_snapshots/snapshot_date=D/models.parquet`: one row per usable entry (`CATALOG_SNAPSHOTS`);
- `catalog_rejects/snapshot_date=D/rejects.parquet`: one row per entry that was not usable, with the
  reason (the `rejects` table reads it; source `catalog`).

Both are replaced whole, atomically (temp file + rename), when the day is pulled again: the last pull
of a day is that day's snapshot. `sql/core/prices.sql` turns consecutive snapshots with the same
prices into one price version with `source = 'catalog'`; a change between two snapshots starts a new one.

An entry is usable when it has an `id` and its prices are JSON numbers, >= 0 and below
`ABSURD_USD` (a price of $1e9 is a typo or a placeholder, never a rate): a token entry needs `input`
and `output`; a per-call entry `per_request`. `per_second` alone is not priced here (the ledger bills
such models per call). Optional `cache_read` / `cache_write` / `group_ratio` (the simulator states its
prices before the group ratio and says so; the real catalog does not: then the ratio is 1) must be valid
when present. Reasons: `not_an_object`, `missing_id`, `missing_price`, `bad_price_type`,
`negative_price`, `absurd_price`, `duplicate_id`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from pipelines.lib import lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.prices.tables import MONEY
from pipelines.lib.redact import redact

ABSURD_USD = Decimal(100_000)  # per 1M tokens or per call: no real rate comes near it
CATALOG_SNAPSHOTS = pa.schema(
    [
        ("snapshot_date", pa.date32()),
        ("model", pa.string()),
        ("billing_category", pa.string()),
        ("input_usd_per_mtok", MONEY),
        ("output_usd_per_mtok", MONEY),
        ("cache_read_usd_per_mtok", MONEY),
        ("cache_write_usd_per_mtok", MONEY),
        ("per_call_usd", MONEY),
        ("gateway_ratio", MONEY),
    ]
)
_QUANTUM = Decimal("0.000001")


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Snapshot:
    day: date
    rows: list[dict]
    rejects: list[dict]


def parse_catalog(day: date, entries: list) -> Snapshot:
    """Usable entries as CATALOG_SNAPSHOTS rows, the others as `rejects` rows (source `catalog`)."""
    rows: list[dict] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        try:
            row = _row(day, entry)
            if row["model"] in seen:
                raise _Rejected("duplicate_id", f"model {row['model']!r} is listed twice; the first entry is kept")
            seen.add(row["model"])
            rows.append(row)
        except _Rejected as bad:
            raw = json.dumps(entry, sort_keys=True, default=str)[:2000]
            rejects.append({"source": "catalog", "file": f"/api/models {day.isoformat()}", "line": index,
                            "reason": bad.reason, "detail": redact(bad.detail), "raw": redact(raw)})
    return Snapshot(day, rows, rejects)


def land(lake_root: Path, snapshot: Snapshot) -> tuple[Path, Path | None]:
    """Write the day's snapshot (and its rejects, or remove an earlier pull's) atomically."""
    models = lake_datasets.CATALOG_SNAPSHOTS.write(lake_root, snapshot.day,
                                                   pa.Table.from_pylist(snapshot.rows, schema=CATALOG_SNAPSHOTS))
    rejects_path = lake_datasets.CATALOG_REJECTS.path(lake_root, snapshot.day)
    if snapshot.rejects:
        return models, lake_datasets.CATALOG_REJECTS.write(
            lake_root, snapshot.day, pa.Table.from_pylist(snapshot.rejects, schema=lake.REJECTS))
    rejects_path.unlink(missing_ok=True)  # a re-pull of the day that found nothing wrong
    return models, None


def snapshot_params(lake_root: Path) -> dict:
    """SQL parameters: every snapshot and every reject file (a schema-only file stands in for none)."""
    return {
        "catalog_snapshot_files": lake_datasets.CATALOG_SNAPSHOTS.files_and_empty(lake_root),
        "catalog_reject_files": lake_datasets.CATALOG_REJECTS.files_and_empty(lake_root),
    }


# --- one entry ------------------------------------------------------------------------------------


def _row(day: date, entry: object) -> dict:
    if not isinstance(entry, dict):
        raise _Rejected("not_an_object", f"a catalog entry is a JSON object, not {type(entry).__name__}")
    model = entry.get("id")
    if not isinstance(model, str) or not model.strip():
        raise _Rejected("missing_id", "the entry has no model id")
    pricing = entry.get("pricing")
    if not isinstance(pricing, dict):
        raise _Rejected("missing_price", f"{model}: no pricing object")
    price = {name: _price(model, pricing, name) for name in
             ("input", "output", "cache_read", "cache_write", "per_request", "group_ratio")}
    ratio = price["group_ratio"] if price["group_ratio"] is not None else Decimal(1)
    if price["input"] is not None and price["output"] is not None:
        return {"snapshot_date": day, "model": model, "billing_category": "token",
                "input_usd_per_mtok": price["input"], "output_usd_per_mtok": price["output"],
                "cache_read_usd_per_mtok": price["cache_read"], "cache_write_usd_per_mtok": price["cache_write"],
                "per_call_usd": None, "gateway_ratio": ratio}
    if price["per_request"] is not None:
        return {"snapshot_date": day, "model": model, "billing_category": "per_call",
                "input_usd_per_mtok": None, "output_usd_per_mtok": None, "cache_read_usd_per_mtok": None,
                "cache_write_usd_per_mtok": None, "per_call_usd": price["per_request"], "gateway_ratio": ratio}
    raise _Rejected("missing_price", f"{model}: neither input and output nor per_request prices")


def _price(model: str, pricing: dict, name: str) -> Decimal | None:
    value = pricing.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Rejected("bad_price_type", f"{model}: pricing.{name} is {json.dumps(value, default=str)[:80]}, "
                                          "not a number")
    if value < 0:
        raise _Rejected("negative_price", f"{model}: pricing.{name} is {value}, negative")
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if amount >= ABSURD_USD:
        raise _Rejected("absurd_price", f"{model}: pricing.{name} is {value}, not a plausible rate "
                                        f"(at least {ABSURD_USD})")
    return amount.quantize(_QUANTUM)
